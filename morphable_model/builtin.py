"""The project's own face model, built deterministically in code (no download needed).

The Basel Face Model cannot be redistributed, so detailface builds a Basel-style model itself:

* **shape**: a cylindrical range map ``r(theta, h)`` (Blanz & Vetter) — a smooth head plus
  anthropometrically placed features (brow ridge, eye sockets with eyeballs and lids, nose with
  bridge / tip / alae / nostrils, lips with a mouth line, chin, cheeks, jaw) — sampled on a regular
  grid (``grid_mm`` spacing) and trimmed by a face outline that wraps round toward the ears. A
  slit of removed triangles on the mouth line lets the jaw part the lips.
  See :mod:`morphable_model._face_geometry`.
* **bases** (orthonormal columns, std decreasing): identity and expression start with
  hand-designed semantic modes (nose length, jaw width, ...; jaw open, smile, ...), then smooth
  random fields fill up the counts; see :mod:`morphable_model._face_bases`.
* **albedo**: skin tones from light to dark (a dominant melanin mode), lips, brows, eyes, and
  small colour modes; see :mod:`morphable_model._face_albedo`.
* **landmarks**: the 68 iBUG 300-W points as vertex ids; ``face_region`` marks the inner face.

:func:`build_face_model` builds it at any resolution (``grid_mm=8`` gives a few hundred
vertices in a fraction of a second, for tests). :func:`builtin_model` builds the full-resolution
model once and caches it as a BFM2017-layout h5 under ``$DETAILFACE_CACHE`` (default
``~/.cache/detailface``); the file name carries :data:`MODEL_VERSION`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from . import _face_albedo as fa
from . import _face_bases as fb
from . import _face_geometry as fg
from . import _face_head as fh
from .geometry import vertex_normals
from .io_bfm import ModelFileError, load_bfm2017, save_bfm2017
from .landmarks import MIDLINE, mirror_permutation
from .model import MorphableModel

__all__ = [
    "MODEL_VERSION",
    "DEFAULT_GRID_MM",
    "BuiltFace",
    "build_face",
    "build_face_model",
    "builtin_model",
    "cache_path",
    "default_cache_dir",
]

log = logging.getLogger(__name__)

MODEL_VERSION = 3  # 3: head, ears, neck, hair, mouth interior, skin range; 2: single-threaded BLAS
"""Bump whenever the geometry, bases or albedo change: it is part of the cache file name."""

DEFAULT_GRID_MM = 1.0
"""Grid spacing (mm) of the full-resolution built-in model."""

N_ID, N_EXP, N_ALBEDO = 80, 40, 80
"""Default component counts (identity, expression, albedo)."""

_ID_FIELD_RMS = 1.6  # mm, RMS displacement of a degree-1 random identity field (decays 1/degree)
_EXP_FIELD_RMS = 0.6  # mm, same for the (masked) random expression fields
_ALB_FIELD_RMS = 0.0015  # albedo units, degree-1 random colour blotch (small: additive, they would dominate dark skin)
FADE_ID_MM = 35.0  # face identity modes, random fields and face-local albedo modes fade out over this on the
# head (the crown, 46 mm above the face, is past it: radial fields are singular at the crown's pole)
FADE_EXP_MM = 35.0  # expression modes likewise
FADE_BELOW_MM = 60.0  # ... but over this below the jaw line: a wider jaw or an open jaw carries the upper neck
HEAD_NEAR_MM = 4.0  # the ear modes start this far from the face (the ears' front edge is ~4 mm behind it)


@dataclasses.dataclass(frozen=True)
class BuiltFace:
    """A built model plus what the build knows beyond the BFM layout."""

    model: MorphableModel
    id_names: tuple[str, ...]
    """name of each identity column (semantic name, or ``random_id_k`` for random fields)."""
    exp_names: tuple[str, ...]
    albedo_names: tuple[str, ...]
    slit_upper: np.ndarray
    """vertex ids on the upper edge of the mouth slit (upper lip's inner border)."""
    slit_lower: np.ndarray
    """vertex ids on the lower edge of the mouth slit."""
    mirror: np.ndarray
    """(N,) vertex id of each vertex's mirror image across x = 0."""
    n_face: int
    """the first ``n_face`` vertices are the face grid (then the head, then the mouth interior)."""
    seconds: float
    """build time."""


def _check_args(grid_mm, seed, n_id, n_exp, n_albedo) -> None:
    if not (np.isfinite(grid_mm) and 0.5 <= grid_mm <= 16.0):
        raise ValueError(f"grid_mm must be in [0.5, 16] mm, got {grid_mm!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    for name, k in (("n_id", n_id), ("n_exp", n_exp), ("n_albedo", n_albedo)):
        if int(k) != k or not 1 <= k <= 400:
            raise ValueError(f"{name} must be an integer in [1, 400], got {k!r}")


def build_face(
    grid_mm: float = DEFAULT_GRID_MM, seed: int = 0, n_id: int = N_ID, n_exp: int = N_EXP, n_albedo: int = N_ALBEDO
) -> BuiltFace:
    """Build the face model at grid spacing ``grid_mm`` (mm); see the module doc.

    ``seed`` only drives the random fields that fill the bases after the semantic modes (same
    seed, same arrays, bit for bit). Returns a :class:`BuiltFace` (model + mode names).
    """
    _check_args(grid_mm, seed, n_id, n_exp, n_albedo)
    # Multi-threaded BLAS/LAPACK (the QR of the bases) rounds differently with each thread count;
    # one thread makes the arrays independent of it. They can still differ by an ulp between
    # processors (numpy's and OpenBLAS's kernels are chosen per CPU): MorphableModel.sketch.
    with threadpool_limits(limits=1):
        return _build_face(grid_mm, seed, n_id, n_exp, n_albedo)


def head_spacing(grid_mm: float) -> float:
    """Spacing (mm) of the head around the face for a face grid of ``grid_mm``: 4 mm at full
    resolution, coarser for coarse test models (so the head never outweighs the face)."""
    return 4.0 * max(1.0, grid_mm / 2.0)


def _build_face(grid_mm: float, seed: int, n_id: int, n_exp: int, n_albedo: int) -> BuiltFace:
    t0 = time.perf_counter()
    grid = fg.make_grid(grid_mm)
    r = fg.face_radius(grid.theta, grid.h)
    face_verts = fg.grid_vertices(grid.theta, grid.h, r)  # (Nf, 3) mm
    n_face = face_verts.shape[0]
    head = fh.build_head(grid, face_verts, head_spacing(grid_mm))
    verts = np.concatenate([face_verts, head.verts])  # (N, 3): face, head, mouth interior
    triangles = np.concatenate([grid.triangles, head.triangles]).astype(np.int32)
    n = verts.shape[0]
    theta = np.concatenate([grid.theta, head.theta])
    h = np.concatenate([grid.h, head.h])
    on_head = np.zeros(n, bool)
    on_head[n_face : n_face + head.n_head] = True
    on_face = np.zeros(n, bool)
    on_face[:n_face] = True
    y = verts[:, 1]

    def outside(length: float, length_below: float | None = None) -> np.ndarray:  # 0 on the face and mouth,
        w = np.zeros(n)  # rising on the head
        w[on_head] = 1.0 - fh.fade(theta[on_head], y[on_head], length, length_below)
        return w

    def pad(values: np.ndarray) -> np.ndarray:  # per head/mouth vertex -> per vertex (0 on the face)
        return np.concatenate([np.zeros((n_face,) + values.shape[1:], values.dtype), values])

    ear_a, ear_b = fh.ear_coords(theta, y)
    frame = fb.FaceFrame(
        u=fg.R0 * theta,
        h=h,
        theta=theta,
        verts=verts,
        radial=np.concatenate([fg.radial_dir(grid.theta), head.radial]),
        mouth_offset=np.concatenate([(grid.row + 0.5) * grid.step, head.mouth_offset]),
        fade_id=1.0 - outside(FADE_ID_MM, FADE_BELOW_MM),
        fade_exp=1.0 - outside(FADE_EXP_MM, FADE_BELOW_MM),
        head_near=outside(HEAD_NEAR_MM),
        head_far=outside(FADE_ID_MM),
        ear=pad(head.ear),
        ear_height=pad(head.ear_height),
        ear_a=np.where(on_head, ear_a, -100.0),
        ear_b=np.where(on_head, ear_b, 0.0),
        hair=np.concatenate([fh.hair_mask(grid.theta, grid.h), head.hair]),
        normals=vertex_normals(verts, triangles),
        bag_depth=pad(head.bag_depth),
        bag_part=pad(head.bag_part),
    )

    # ---- identity: semantic modes (face modes faded on the head), then random smooth fields on
    # the face (std ~ 1 / degree), faded on the head
    sem = fb.identity_fields(frame)
    n_rand = max(n_id - len(sem), 0)
    rand, deg = fb.random_fields(frame, n_rand, seed, fb.STREAM_ID_FIELDS, mask=frame.fade_id * frame.soft_tissue,
                                 norm=on_face)
    rand = rand * (_ID_FIELD_RMS / deg)[:, None, None]
    id_basis = fb.orthonormal_basis(
        np.concatenate([sem, rand]), list(fb.ID_MODES) + [f"random_id_{k}" for k in range(n_rand)]
    )

    # ---- expression: semantic (localised) modes, then masked random fields
    sem = fb.expression_fields(frame)
    n_rand = max(n_exp - len(sem), 0)
    mob = fb.mobility_mask(frame) * frame.fade_exp * frame.soft_tissue
    rand, deg = fb.random_fields(frame, n_rand, seed, fb.STREAM_EXP_FIELDS, mask=mob, norm=on_face)
    rand = rand * (_EXP_FIELD_RMS / deg)[:, None, None] * np.sqrt(np.mean(mob[:n_face] ** 2))
    exp_basis = fb.orthonormal_basis(
        np.concatenate([sem, rand]), list(fb.EXP_MODES) + [f"random_exp_{k}" for k in range(n_rand)]
    )

    # ---- albedo
    alb_mean = fa.albedo_mean(frame)
    named = fa.albedo_modes(frame)
    n_rand = max(n_albedo - len(named), 0)
    blot = _colour_blotches(frame, n_rand, seed)
    alb_basis = fb.orthonormal_basis(
        np.concatenate([np.stack(list(named.values())), blot]), list(named) + [f"random_albedo_{k}" for k in range(n_rand)]
    )

    landmarks = find_landmarks(grid, face_verts)
    face_region = np.zeros(n, bool)
    inner = (grid.u / 68.0) ** 2 + ((grid.h + 35.0) / 88.0) ** 2 <= 1.0
    face_region[:n_face] = inner & (fg.outline_distance(grid.theta, grid.h) > 4.0)
    regions = np.concatenate([np.full(n_face, fh.REGION["face"], np.uint8), head.regions])
    regions[:n_face][fg.fissure_mask(grid.u, grid.h) >= 0.5] = fh.REGION["eyes"]
    regions[:n_face][frame.hair[:n_face] >= 0.5] = fh.REGION["scalp"]  # the hairline is on the face grid
    model = MorphableModel(
        mean_shape=verts,
        id_basis=id_basis.basis[:, :n_id],
        id_std=id_basis.std[:n_id],
        exp_basis=exp_basis.basis[:, :n_exp],
        exp_std=exp_basis.std[:n_exp],
        albedo_mean=alb_mean,
        albedo_basis=alb_basis.basis[:, :n_albedo],
        albedo_std=alb_basis.std[:n_albedo],
        triangles=triangles,
        landmarks=landmarks,
        unit="mm",
        source=f"builtin:v{MODEL_VERSION}:grid{grid_mm:g}:seed{seed}",
        face_region=face_region,
        regions=regions,
        region_names=fh.REGION_NAMES,
    )
    seconds = time.perf_counter() - t0
    log.info(
        "built face model grid %.3g mm: %d vertices (face %d), %d triangles (face %d), K = %d/%d/%d in %.2f s",
        grid_mm, n, n_face, triangles.shape[0], grid.triangles.shape[0], model.n_id, model.n_exp, model.n_albedo,
        seconds,
    )
    return BuiltFace(
        model=model,
        id_names=id_basis.names[:n_id],
        exp_names=exp_basis.names[:n_exp],
        albedo_names=alb_basis.names[:n_albedo],
        slit_upper=grid.slit_upper,
        slit_lower=grid.slit_lower,
        mirror=np.concatenate([grid.mirror, head.mirror]),
        n_face=n_face,
        seconds=seconds,
    )


def build_face_model(
    grid_mm: float = DEFAULT_GRID_MM, seed: int = 0, n_id: int = N_ID, n_exp: int = N_EXP, n_albedo: int = N_ALBEDO
) -> MorphableModel:
    """The built-in face model at grid spacing ``grid_mm`` (mm) as a :class:`MorphableModel`.

    ``grid_mm=1`` is the full model (~50k vertices, mean edge ~1.2 mm); ``grid_mm=4..8`` give a
    few thousand to a few hundred vertices in well under a second (what tests use).
    """
    return build_face(grid_mm, seed, n_id, n_exp, n_albedo).model


def _colour_blotches(f: fb.FaceFrame, count: int, seed: int) -> np.ndarray:
    """``(count, N, 3)`` smooth skin-colour variations: a scalar random field times a random
    colour direction (mostly brightness-like), masked to the skin (fading out on the head), std
    decaying with degree."""
    if count <= 0:
        return np.zeros((0, f.u.shape[0], 3))
    scal, deg = fb.random_fields(f, count, seed, fb.STREAM_ALB_FIELDS, tangential=0.0, norm=(f.fade_id >= 1.0) & (f.bag_part == 0))
    field = np.einsum("knc,nc->kn", scal, f.radial)  # (K, N, 3) . (N, 3) -> (K, N): the radial part
    skin = fa.skin_mask(f) * f.fade_id
    out = np.empty((count, f.u.shape[0], 3))
    for k in range(count):
        rng = np.random.default_rng([seed, fb.STREAM_ALB_FIELDS, 10_000 + k])
        colour = fa.SKIN / np.linalg.norm(fa.SKIN) + 0.06 * rng.standard_normal(3)  # mostly lighter / darker skin
        colour /= np.linalg.norm(colour)
        out[k] = (field[k] * skin)[:, None] * colour[None, :]
    return out * (_ALB_FIELD_RMS / np.sqrt(deg))[:, None, None]


# ---------------------------------------------------------------------------------------------
# landmarks
# ---------------------------------------------------------------------------------------------
def _nearest(grid: fg.FaceGrid, u: float, h: float, candidates: np.ndarray | None = None) -> int:
    idx = np.arange(grid.theta.shape[0]) if candidates is None else np.asarray(candidates)
    d2 = (grid.u[idx] - u) ** 2 + (grid.h[idx] - h) ** 2
    return int(idx[np.argmin(d2)])


def landmark_targets() -> dict[int, tuple[float, float]]:
    """(u, h) target positions (mm) of the landmarks on the subject's right side (u < 0) and the
    midline, except the jaw contour and the inner lips (found on the mesh)."""
    t: dict[int, tuple[float, float]] = {}
    # right brow, outer -> inner (17..21), on the brow hair band
    for i, tt in enumerate((0.9, 0.7, 0.48, 0.26, 0.05)):
        t[17 + i] = (-(fa.BROW_START + tt * fa.BROW_LENGTH), float(fa.brow_centre(np.array(tt))))
    # nose bridge (27..29) and base (31..33)
    t[27], t[28], t[29] = (0.0, 0.0), (0.0, -13.0), (0.0, -26.0)
    t[31], t[32], t[33] = (-10.5, -50.0), (-5.0, -51.5), (0.0, -53.0)
    # right eye: 36 outer corner, 37-38 upper lid, 39 inner corner, 40-41 lower lid

    def lid(lu: float, upper: bool) -> float:
        up, lo = fg.lid_curves(np.array(lu - fg.EYE_U))
        return float(up if upper else lo)

    e0, w = fg.EYE_U, fg.EYE_HALF_WIDTH
    t[36] = (-(e0 + w - 0.5), lid(e0 + w, True))
    t[37] = (-(e0 + w / 3), lid(e0 + w / 3, True))
    t[38] = (-(e0 - w / 3), lid(e0 - w / 3, True))
    t[39] = (-(e0 - w + 0.5), lid(e0 - w, True))
    t[40] = (-(e0 - w / 3), lid(e0 - w / 3, False))
    t[41] = (-(e0 + w / 3), lid(e0 + w / 3, False))
    # outer lips: 48 right corner, 49-51 upper vermilion border, 57-59 lower border
    m = fg.MOUTH_HALF_WIDTH
    t[48] = (-m, fg.MOUTH_Y)
    t[49] = (-15.0, fg.MOUTH_Y + 6.5)
    t[50] = (-6.0, fg.MOUTH_Y + 8.8)
    t[51] = (0.0, fg.MOUTH_Y + 7.0)
    t[57] = (0.0, fg.MOUTH_Y - 10.5)
    t[58] = (-6.0, fg.MOUTH_Y - 10.0)
    t[59] = (-15.0, fg.MOUTH_Y - 7.5)
    return t


def find_landmarks(grid: fg.FaceGrid, verts: np.ndarray) -> np.ndarray:
    """The 68 iBUG landmark vertex ids on the mean face (exactly mirror-symmetric)."""
    lm = -np.ones(68, dtype=np.int64)
    midline = np.nonzero(grid.col == 0)[0]
    for i, (uu, hh) in landmark_targets().items():
        lm[i] = _nearest(grid, uu, hh, midline if i in MIDLINE else None)
    # nose tip: the most forward midline vertex
    nose_zone = midline[(grid.h[midline] < -20) & (grid.h[midline] > -60)]
    lm[30] = int(nose_zone[np.argmax(verts[nose_zone, 2])])
    # inner lips on the slit edges
    up, lo = grid.slit_upper, grid.slit_lower
    lm[60] = _nearest(grid, -fg.MOUTH_HALF_WIDTH, fg.MOUTH_Y, up)
    lm[61] = _nearest(grid, -8.0, fg.MOUTH_Y, up)
    lm[62] = _nearest(grid, 0.0, fg.MOUTH_Y, up)
    lm[66] = _nearest(grid, 0.0, fg.MOUTH_Y, lo)
    lm[67] = _nearest(grid, -8.0, fg.MOUTH_Y, lo)
    # jaw contour 0..8: frontal-view contour (support points along rays from the face centre,
    # among vertices facing the viewer enough to be on the visible face)
    normals = vertex_normals(verts, grid.triangles)
    facing = np.nonzero(normals[:, 2] > 0.25)[0]
    centre = np.array([0.0, -30.0])
    for k in range(9):
        ang = np.deg2rad(188.0 + (270.0 - 188.0) * k / 8.0)
        d = np.array([np.cos(ang), np.sin(ang)])
        cand = midline[normals[midline, 2] > 0.25] if k == 8 else facing
        rel = verts[cand, :2] - centre
        along = rel @ d
        perp = np.abs(rel @ np.array([-d[1], d[0]]))
        lm[k] = int(cand[np.argmax(along - 3.0 * perp)])
    # the left side is the mirror image of the right side
    perm = mirror_permutation()
    for i in range(68):
        j = perm[i]
        if j != i and lm[i] >= 0 and lm[j] < 0:
            lm[j] = grid.mirror[lm[i]]
    if np.any(lm < 0):
        raise RuntimeError(f"landmarks not placed: {np.nonzero(lm < 0)[0].tolist()}")  # programming error
    return lm


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$DETAILFACE_CACHE`` or ``~/.cache/detailface``."""
    env = os.environ.get("DETAILFACE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "detailface"


def cache_path(cache_dir: str | os.PathLike | None = None, grid_mm: float = DEFAULT_GRID_MM, seed: int = 0) -> Path:
    """Where :func:`builtin_model` keeps the model for these arguments."""
    d = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return d / f"builtin_face_v{MODEL_VERSION}_grid{grid_mm:g}mm_seed{seed}.h5"


def builtin_model(
    cache_dir: str | os.PathLike | None = None, grid_mm: float = DEFAULT_GRID_MM, seed: int = 0, rebuild: bool = False
) -> MorphableModel:
    """The built-in model: loaded from the cache, or built and cached (BFM2017 h5 layout).

    The cache file is written atomically (temporary file, then rename), so concurrent callers
    never read a half-written file. An unreadable cache file is rebuilt (with a warning).
    """
    _check_args(grid_mm, seed, N_ID, N_EXP, N_ALBEDO)
    path = cache_path(cache_dir, grid_mm, seed)
    if path.exists() and not rebuild:
        t0 = time.perf_counter()
        try:
            model = load_bfm2017(path)
        except ModelFileError as e:
            log.warning("cached built-in model %s is unreadable (%s); rebuilding", path, e)
        else:
            log.info("loaded built-in model from %s in %.2f s", path, time.perf_counter() - t0)
            return model.replace(source=f"builtin:v{MODEL_VERSION}:grid{grid_mm:g}:seed{seed}")
    model = build_face_model(grid_mm, seed)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.h5")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_bfm2017(model, tmp)
        os.replace(tmp, path)  # atomic: readers see the old file or the complete new one
    except OSError as e:
        log.warning("could not cache the built-in model at %s (%s); using it uncached", path, e)
        return model
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info("cached built-in model at %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return model
