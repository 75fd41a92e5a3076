"""Shared fixtures: a tiny morphable model, the same model saved as a BFM2017 h5 file, and tiny
shard sets rendered from it by synth (each rendered once per session)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from morphable_model import MorphableModel, save_bfm2017
from morphable_model.landmarks import frontal_template_mm

# Coarse grid for the built-in model in tests: 1 410 vertices (709 on the face grid, the rest the
# head and mouth at 16 mm), builds in ~0.25 s; 8 mm keeps 66 of
# the 68 landmarks on distinct vertices (12 mm: 363 vertices but only 53).
TINY_GRID_MM = 8.0


def make_ellipsoid_model(
    nx: int = 21, ny: int = 25, k_id: int = 10, k_exp: int = 6, k_alb: int = 8, seed: int = 0
) -> MorphableModel:
    """A deterministic, face-like-enough model: the front half of an ellipsoid on a regular grid.

    * vertices: grid x in [-75, 75] mm (nx columns), y in [-95, 95] mm (ny rows),
      z = 60 sqrt(1 - (x/85)^2 - (y/105)^2) (clamped at 0): a dome facing +z;
    * triangles counter-clockwise seen from +z (outward normals point to +z);
    * bases: smooth random fields (low-order polynomials in x, y per coordinate), orthonormalised
      with QR; std decreasing geometrically;
    * landmarks: the 68 points of :func:`frontal_template_mm` snapped to the nearest grid vertex
      (the grid is symmetric in x, so mirror pairs land on mirror vertices);
    * face_region: vertices within the ellipse (x/60)^2 + (y/80)^2 < 1.
    """
    rng = np.random.default_rng(seed)
    xs = np.linspace(-75.0, 75.0, nx)
    ys = np.linspace(-95.0, 95.0, ny)
    gx, gy = np.meshgrid(xs, ys)  # (ny, nx) each, row = y index
    gz = 60.0 * np.sqrt(np.clip(1.0 - (gx / 85.0) ** 2 - (gy / 105.0) ** 2, 0.0, None))
    mean = np.stack([gx, gy, gz], -1).reshape(-1, 3)  # (ny, nx, 3) -> (N, 3), vertex = row * nx + col
    n = mean.shape[0]

    idx = np.arange(n).reshape(ny, nx)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()  # (x0, y0), (x1, y0)
    c, d = idx[1:, 1:].ravel(), idx[1:, :-1].ravel()  # (x1, y1), (x0, y1)
    # ccw seen from +z: (x0,y0) -> (x1,y0) -> (x1,y1), and (x0,y0) -> (x1,y1) -> (x0,y1)
    triangles = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])

    u, v = mean[:, 0] / 75.0, mean[:, 1] / 95.0
    feats = np.stack([np.ones_like(u), u, v, u * v, u**2, v**2, u**2 * v, u * v**2, u**3, v**3], 1)  # (N, 10)

    def smooth_basis(k: int) -> np.ndarray:
        coef = rng.standard_normal((feats.shape[1], 3, k))  # (10, 3, k)
        fields = np.einsum("nf,fck->nck", feats, coef)  # (N, 10) x (10, 3, k) -> (N, 3, k)
        q, _ = np.linalg.qr(fields.reshape(3 * n, k))  # (N, 3, k) -> (3N, k), rows x0, y0, z0, ...
        return q

    id_basis = smooth_basis(k_id)
    exp_basis = smooth_basis(k_exp)
    alb_basis = smooth_basis(k_alb)
    # per-vertex displacement ~ std / sqrt(3N) (unit-norm columns): ~ 5 mm identity, ~ 2 mm expression
    root = np.sqrt(3 * n)
    id_std = 5.0 * root * 0.8 ** np.arange(k_id)
    exp_std = 2.0 * root * 0.8 ** np.arange(k_exp)
    alb_std = 0.05 * root * 0.8 ** np.arange(k_alb)
    albedo_mean = np.tile([0.78, 0.57, 0.47], (n, 1)) + 0.03 * np.stack([u, v, u * v], 1)

    tmpl = frontal_template_mm()  # (68, 2) mm, x right, y up
    d2 = ((mean[None, :, :2] - tmpl[:, None, :]) ** 2).sum(-1)  # (68, 1, 2) - (1, N, 2) -> (68, N)
    landmarks = d2.argmin(1)
    face_region = (mean[:, 0] / 60.0) ** 2 + (mean[:, 1] / 80.0) ** 2 < 1.0
    return MorphableModel(
        mean_shape=mean,
        id_basis=id_basis,
        id_std=id_std,
        exp_basis=exp_basis,
        exp_std=exp_std,
        albedo_mean=albedo_mean,
        albedo_basis=alb_basis,
        albedo_std=alb_std,
        triangles=triangles,
        landmarks=landmarks,
        unit="mm",
        source="tests.conftest:ellipsoid",
        face_region=face_region,
    )


@pytest.fixture(scope="session")
def tiny_model() -> MorphableModel:
    """A small valid model (a few hundred vertices, 68 landmarks), shared by the whole session."""
    from morphable_model.builtin import build_face_model

    return build_face_model(grid_mm=TINY_GRID_MM, seed=0)


def built_elsewhere(model: MorphableModel) -> MorphableModel:
    """``model`` as another CPU may build it: every other entry of each float32 array one ulp away
    (numpy's vectorised float64 functions and BLAS kernels differ per processor). Its exact
    fingerprint differs, its sketch does not (MorphableModel.matches)."""
    from morphable_model.model import _FLOAT_FIELDS

    moved = {}
    for name in _FLOAT_FIELDS:
        a = np.array(getattr(model, name))
        flat = a.reshape(-1)
        flat[::2] = np.nextafter(flat[::2], np.float32(np.inf))
        moved[name] = a
    return model.replace(**moved)


@pytest.fixture(scope="session")
def tiny_model_elsewhere(tiny_model) -> MorphableModel:
    """``tiny_model`` built on "another CPU" (:func:`built_elsewhere`)."""
    return built_elsewhere(tiny_model)


@pytest.fixture(scope="session")
def ellipsoid_model() -> MorphableModel:
    """The deterministic ellipsoid model (independent of builtin.py), for golden-value tests."""
    return make_ellipsoid_model()


@pytest.fixture(scope="session")
def tmp_model_h5(tiny_model, tmp_path_factory):
    """Path of ``tiny_model`` saved with :func:`save_bfm2017` (session-scoped, read-only use)."""
    path = tmp_path_factory.mktemp("model") / "tiny_model.h5"
    save_bfm2017(tiny_model, path)
    return path


@pytest.fixture(scope="session")
def tiny_shards(tiny_model, tmp_path_factory) -> Callable[..., Path]:
    """Factory ``tiny_shards(n, size, seed, shard_size=12) -> Path``: a directory of shards of
    ``tiny_model`` rendered by synth (pyrender, in-process), rendered once per session per
    ``(n, size, seed, shard_size)`` and shared by every test asking for the same key.

    The directory is shared: use it read-only. A test that modifies shards (corrupts, rewrites)
    must ``shutil.copytree`` it into its own ``tmp_path`` first.
    """
    cache: dict[tuple[int, int, int, int], Path] = {}

    def make(n: int, size: int, seed: int, shard_size: int = 12) -> Path:
        key = (n, size, seed, shard_size)
        if key not in cache:
            os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
            from synth.dataset import DatasetConfig, render_dataset

            out = tmp_path_factory.mktemp(f"shards_n{n}_size{size}_seed{seed}_per{shard_size}")
            config = DatasetConfig(out=str(out), n=n, size=size, seed=seed, shard_size=shard_size, workers=0)
            render_dataset(config, model=tiny_model)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture(scope="session")
def write_shard() -> Callable[..., list]:
    """``write_shard(model, path, n=3, size=32, detail=True, k=0, n_total=None, layout=6, compression="zstd",
    detail_version=None, cavity=None)``:
    render ``n`` samples of ``model`` (global indices ``k * n + j``, all maps) and write them as shard
    ``k`` at ``path`` with :class:`synth.shards.ShardWriter` in ``layout`` (6, what synth-cli writes;
    7 and 5: JPEG quality 95; 4, 3, 2 to test the older readers), detail bank ``detail_version`` (None: the current one, not written as an attribute, as
    the writer then records it), crease darkening ``cavity`` (None: the default); returns the ``(params, render output)`` pairs."""

    def write(model, path, n=3, size=32, detail=True, k=0, n_total=None, layout=6, compression="zstd",
              detail_version=None, cavity=None) -> list:
        import json

        from synth.codecs import encode_sample
        from synth.render import FaceRenderer
        from synth.sampling import SamplingConfig, sample_params
        from synth.shards import ShardWriter

        cfg = SamplingConfig(detail=detail) if cavity is None else SamplingConfig(detail=detail, cavity=cavity)
        attrs = {"model_fingerprint": model.fingerprint, "model_source": model.source, "projection": "perspective",
                 "size": size, "seed": 0, "shard_index": k, "shard_size": n, "n_total": n_total or n * (k + 1),
                 "start_index": k * n, "generator_config": json.dumps(cfg.to_dict())}
        if detail_version is not None:
            attrs["detail_bank_version"] = detail_version
        dims = {"alpha_id": model.n_id, "alpha_exp": model.n_exp, "beta": model.n_albedo, "detail_weights": 16}
        outs = []
        bank = {} if detail_version is None else {"detail_version": detail_version}
        quality = {"image_quality": 95} if layout in (5, 7) else {}
        with FaceRenderer(model, size, **bank) as r, ShardWriter(path, n, size, dims, detail, attrs, compression,
                                                         layout=layout, **quality) as w:
            for j in range(n):
                p = sample_params(model, cfg, size, 0, k * n + j)
                o = r.render(p, stable=layout >= 6)
                w.write(j, encode_sample(p, o, layout=layout, **quality))
                outs.append((p, o))
            w.commit()
        return outs

    return write


@pytest.fixture(scope="session")
def face_model_2mm() -> MorphableModel:
    """The built-in model at a 2 mm grid (~11k vertices, ~12 s to build): face-like enough for the
    real face detector (mediapipe) to find it in renders; built once per session."""
    from morphable_model.builtin import build_face_model

    return build_face_model(grid_mm=2.0, seed=0)


@pytest.fixture(scope="session")
def detail_shards(face_model_2mm, tmp_path_factory) -> Path:
    """3 samples of the 2 mm-grid built-in model rendered at 128 px (seed 0, detail on, Lambertian,
    no cavity): fine
    enough that the renders carry resolvable detail (the 8 mm tiny model's triangles are several
    pixels wide); for the fine-stage geometry, lighting and loss tests. Shared, read-only."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    from synth.dataset import DatasetConfig, render_dataset
    from synth.sampling import SamplingConfig

    out = tmp_path_factory.mktemp("detail_shards_128")
    # the Lambertian SH image formation alone (no specular highlight, no occluder, no crease
    # darkening): the losses' model of a photo, exactly
    sampling = SamplingConfig(specular=False, occluders=0.0, cavity=0.0)
    render_dataset(DatasetConfig(out=str(out), n=3, size=128, seed=0, shard_size=3, workers=0, sampling=sampling),
                   model=face_model_2mm)
    return out


@pytest.fixture(scope="session")
def tiny_coarse_weights(tiny_shards, tmp_model_h5, tmp_path_factory) -> Path:
    """A tiny CoarseNet (32 px, 2 iterations, width x0.125, no mask in its input) trained for 3
    steps on ``tiny_shards(24, 48, 4)`` with ``tmp_model_h5`` and exported as safetensors, as a
    user would (``train-cli coarse`` then ``train-cli export``); trained once per session."""
    from train.checkpoint import export_inference
    from train.coarse_task import train_coarse
    from train.config import CoarseConfig

    root = tmp_path_factory.mktemp("tiny_coarse")
    config = CoarseConfig(data=str(tiny_shards(n=24, size=48, seed=4)), out=str(root / "run"), model=str(tmp_model_h5),
                          iters=2, size=32, batch_size=6, steps=3, width_mult=0.125, workers=0, threads=1,
                          progress=False, val_every=1000, log_every=1)
    result = train_coarse(config)
    return export_inference(result.checkpoint, root / "coarse.safetensors")
