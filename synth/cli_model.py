"""``synth-cli model ...``: inspect a morphable model and export meshes of it.

The group is added to ``synth-cli`` by ``synth/cli.py``::

    synth-cli model info [--model PATH] [--json]
    synth-cli model export --out DIR [--samples N] [--seed S] [--model PATH] [--format obj|ply]
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from .sampling import sample_rng

_MODEL_HELP = "model file: BFM2017/2019 .h5 or BFM2009 .mat (default: the built-in model)"


def _load(model_path: Path | None, landmarks: Path | None = None):
    from morphable_model import ModelFileError, load_model

    try:
        return load_model(model_path, landmarks=landmarks)
    except ModelFileError as e:
        hint = "--landmarks" if landmarks is not None and str(landmarks) in str(e) else "--model"
        raise click.BadParameter(str(e), param_hint=hint) from e


@click.group("model")
def model() -> None:
    """Inspect the morphable model and export meshes of it."""


@model.command("info")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=_MODEL_HELP)
@click.option("--landmarks", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="(68,) iBUG landmark vertex ids (.npy or .txt), overriding the file's")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of text")
def info(model_path: Path | None, landmarks: Path | None, as_json: bool) -> None:
    """Print vertex/triangle/component counts, unit, source and fingerprint."""
    m = _load(model_path, landmarks)
    extent = m.mean_shape.max(axis=0) - m.mean_shape.min(axis=0)  # (3,) mm
    facts = {
        "vertices": m.n_vertices,
        "triangles": m.n_triangles,
        "n_id": m.n_id,
        "n_exp": m.n_exp,
        "n_albedo": m.n_albedo,
        "landmarks": 0 if m.landmarks is None else int(m.landmarks.shape[0]),
        "face_region": None if m.face_region is None else int(m.face_region.sum()),
        "unit": m.unit,
        "extent_mm": [round(float(x), 2) for x in extent],
        "source": m.source,
        "fingerprint": m.fingerprint,
    }
    if as_json:
        click.echo(json.dumps(facts))
        return
    click.echo(f"vertices:    {facts['vertices']}")
    click.echo(f"triangles:   {facts['triangles']}")
    click.echo(f"components:  id={m.n_id} exp={m.n_exp} albedo={m.n_albedo}")
    click.echo(f"landmarks:   {'68 (iBUG 300-W)' if m.landmarks is not None else 'none'}")
    if m.face_region is not None:
        click.echo(f"face region: {facts['face_region']} vertices")
    click.echo(f"unit:        {m.unit}")
    click.echo("extent:      " + " x ".join(f"{x:.1f}" for x in extent) + f" {m.unit} (x, y, z)")
    click.echo(f"source:      {m.source}")
    click.echo(f"fingerprint: {m.fingerprint}")


@model.command("export")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="output folder (created if missing)")
@click.option("--samples", type=int, default=4, show_default=True, help="number of random faces besides the mean")
@click.option("--seed", type=int, default=0, show_default=True, help="sample i uses default_rng([seed, 0, i])")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=_MODEL_HELP)
@click.option("--format", "fmt", type=click.Choice(["obj", "ply"]), default="ply", show_default=True,
              help="mesh file format (both keep per-vertex colours)")
@click.option("--scale", type=float, default=1.0, show_default=True, help="prior scale: coefficients ~ N(0, scale^2)")
@click.option("--truncation", type=float, default=3.0, show_default=True,
              help="clip coefficients to +-truncation std (<= 0: no clipping)")
@click.option("--no-expression", is_flag=True, help="neutral expression (alpha_exp = 0) for the samples")
def export(out_dir: Path, samples: int, seed: int, model_path: Path | None, fmt: str, scale: float,
           truncation: float, no_expression: bool) -> None:
    """Write the mean face and N prior samples as meshes with vertex colours (albedo).

    Files: mean.<fmt>, sample-0000.<fmt>, ... and coefficients.npz (alpha_id, alpha_exp, beta
    of the samples, shape (N, K) each, std units).
    """
    import trimesh
    from tqdm import tqdm

    if samples < 0:
        raise click.BadParameter(f"must be >= 0, got {samples}", param_hint="--samples")
    if not (np.isfinite(scale) and scale >= 0):
        raise click.BadParameter(f"must be finite and >= 0, got {scale}", param_hint="--scale")
    if seed < 0:
        raise click.BadParameter(f"must be >= 0, got {seed}", param_hint="--seed")
    if out_dir.exists() and not out_dir.is_dir():
        raise click.BadParameter(f"{out_dir} exists and is not a folder", param_hint="--out")
    m = _load(model_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    trunc = truncation if truncation > 0 else None

    def write(name: str, vertices: np.ndarray, albedo: np.ndarray) -> None:
        colours = np.concatenate([np.round(albedo * 255), np.full((len(albedo), 1), 255)], 1).astype(np.uint8)
        mesh = trimesh.Trimesh(vertices=vertices, faces=m.triangles, vertex_colors=colours, process=False)
        mesh.export(out_dir / f"{name}.{fmt}")

    write("mean", m.mean_shape, np.clip(m.albedo_mean, 0, 1))
    drawn = [m.sample(sample_rng(seed, "coefficients", i), 1, scale=scale, truncation=trunc)
             for i in range(samples)]
    coef = {
        key: np.concatenate([getattr(s, key) for s in drawn]) if drawn else np.zeros((0, k), np.float32)
        for key, k in (("alpha_id", m.n_id), ("alpha_exp", m.n_exp), ("beta", m.n_albedo))
    }
    if no_expression:
        coef["alpha_exp"][:] = 0
    for i in tqdm(range(samples), desc="export", unit="mesh", disable=samples < 2):
        v = m.shape(coef["alpha_id"][i], coef["alpha_exp"][i])
        write(f"sample-{i:04d}", v, m.albedo(coef["beta"][i]))
    np.savez(out_dir / "coefficients.npz", seed=seed, model_fingerprint=m.fingerprint, **coef)
    click.echo(f"wrote mean + {samples} samples ({fmt}) to {out_dir}")
