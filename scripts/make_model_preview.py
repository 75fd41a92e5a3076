"""Render a preview grid of the built-in head model into docs/builtin_preview.png.

Row 1: the mean head (mean albedo) frontal with its 68 landmarks, yaw 40, yaw 90 (profile: ear,
neck, hair), yaw 150 (back of the head) and from above.
Row 2: the skin range: melanin -3, -1.5, 0, +1.5, +3 std (very light to very dark skin).
Row 3: identity samples: head size +2 std, face width -2 std, skull length +2 std (profile), and
two random identity + albedo samples (coefficients N(0, 1) clipped to +-2).
Row 4: expression samples: jaw open (teeth, tongue, cavity), smile, brow raise, eye close, pucker.

Albedo is linear reflectance: each vertex is shaded in linear units (ambient + one directional
light) and sRGB-encoded, as a photo would show it; pyrender + OSMesa only rasterise (headless).
Usage: ``python scripts/make_model_preview.py [--grid-mm 1.0] [--out docs/builtin_preview.png]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
import numpy as np  # noqa: E402

np.infty = np.inf  # pyrender 0.1.45 uses np.infty, removed in numpy 2
import pyrender  # noqa: E402
import trimesh  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from morphable_model.builtin import build_face  # noqa: E402
from morphable_model.geometry import vertex_normals  # noqa: E402


def _rot(yaw_deg: float, pitch_deg: float = 0.0) -> np.ndarray:
    y, p = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return rx @ ry


CENTRE = np.array([0.0, -40.0, 0.0])
"""Point of the model at the centre of every tile (mm); the camera is 900 mm away."""
DISTANCE, FOV_DEG = 900.0, 24.0


def display(albedo: np.ndarray) -> np.ndarray:
    """sRGB-encoded display colours of linear albedo ``(N, 3)`` (the standard transfer function)."""
    c = np.clip(albedo, 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


LIGHT = np.array([0.45, 0.45, 0.77]) / np.linalg.norm([0.45, 0.45, 0.77])
"""Direction toward the key light in view space (upper right, in front)."""


def render_view(renderer, verts, triangles, albedo, yaw_deg=0.0, pitch_deg=0.0, fov_deg=FOV_DEG) -> np.ndarray:
    """(S, S, 3) uint8 image of the mesh turned by yaw/pitch, seen from +z at ``DISTANCE``.

    Shading is done here, in linear units: ``albedo * (0.4 + 0.8 max(0, n . light))`` per vertex,
    then sRGB-encoded; pyrender only rasterises (flat flag: no lighting of its own), interpolating
    the vertex colours."""
    v = (verts - CENTRE) @ _rot(yaw_deg, pitch_deg).T  # (N, 3) @ (3, 3) -> (N, 3)
    n = vertex_normals(v, triangles)
    colours = display(albedo * (0.4 + 0.8 * np.clip(n @ LIGHT, 0.0, None))[:, None])
    rgba = (np.clip(colours, 0, 1) * 255).astype(np.uint8)
    mesh = trimesh.Trimesh(v, triangles, vertex_colors=rgba, process=False)
    scene = pyrender.Scene(ambient_light=[1.0, 1.0, 1.0], bg_color=[0.93, 0.93, 0.95, 1.0])
    scene.add(pyrender.Mesh.from_trimesh(mesh, smooth=True))
    cam = np.eye(4)
    cam[2, 3] = DISTANCE
    scene.add(pyrender.PerspectiveCamera(yfov=np.deg2rad(fov_deg)), pose=cam)
    colour, _ = renderer.render(scene, flags=pyrender.RenderFlags.FLAT)
    return colour


def _draw_landmarks(tile: np.ndarray, points: np.ndarray, size: int, fov_deg: float = FOV_DEG) -> None:
    """Mark landmark points (68, 3) on a frontal tile rendered by :func:`render_view` (in place)."""
    p = points - CENTRE
    f = 0.5 * size / np.tan(np.deg2rad(fov_deg) / 2)
    d = DISTANCE - p[:, 2]  # depth along the camera axis
    u = 0.5 * size + f * p[:, 0] / d
    v = 0.5 * size - f * p[:, 1] / d
    for x, y in zip(np.round(u).astype(int), np.round(v).astype(int)):
        tile[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = (0, 160, 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid-mm", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256, help="tile size in pixels")
    ap.add_argument("--out", default="docs/builtin_preview.png")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    built = build_face(args.grid_mm, args.seed)
    m = built.model
    tri = m.triangles
    renderer = pyrender.OffscreenRenderer(args.size, args.size)
    mean_alb = m.albedo_mean
    zero_id = np.zeros(m.n_id, np.float32)

    def exp_named(name, value):
        a = np.zeros(m.n_exp, np.float32)
        a[built.exp_names.index(name)] = value
        return a

    def alb_named(name, value):
        b = np.zeros(m.n_albedo, np.float32)
        b[built.albedo_names.index(name)] = value
        return b

    tiles, labels = [], []

    def add(verts, colours, label, yaw=0.0, pitch=0.0):
        tiles.append(np.array(render_view(renderer, verts, tri, colours, yaw, pitch)))
        labels.append(label)

    mean = m.mean_shape
    shown = mean_alb
    add(mean, shown, "mean + 68 landmarks")
    _draw_landmarks(tiles[-1], mean[m.landmarks], args.size)
    add(mean, shown, "mean, yaw 40", 40)
    add(mean, shown, "mean, yaw 90", 90)
    add(mean, shown, "mean, yaw 150", 150)
    add(mean, shown, "mean, from above", 0, 60)
    for v in (-3.0, -1.5, 0.0, 1.5, 3.0):
        add(mean, m.albedo(alb_named("melanin", v)), f"melanin {v:+.1f}sd", 25)
    rng = np.random.default_rng([args.seed, 7, 0])
    for name, sgn, yaw in (("head_size", 2, 20), ("face_width", -2, 0), ("skull_length", 2, 90)):
        a = zero_id.copy()
        a[built.id_names.index(name)] = sgn
        add(m.shape(a), shown, f"id {name} {sgn:+d}sd", yaw)
    for i, yaw in enumerate((25, -30)):
        a = np.clip(rng.standard_normal(m.n_id), -2, 2).astype(np.float32)
        b = np.clip(rng.standard_normal(m.n_albedo), -2, 2).astype(np.float32)
        add(m.shape(a), m.albedo(b), f"random id + albedo #{i + 1}", yaw)
    for name in ("jaw_open", "smile", "brow_raise", "eye_close", "pucker"):
        add(m.shape(zero_id, exp_named(name, 2.0)), shown, f"exp {name} +2sd", 20 if name == "pucker" else 0)
    out = np.concatenate(
        [np.concatenate(tiles[i : i + 5], axis=1) for i in range(0, len(tiles), 5)], axis=0
    )
    img = Image.fromarray(out)
    draw = ImageDraw.Draw(img)
    for i, label in enumerate(labels):
        r, c = divmod(i, 5)
        draw.text((c * args.size + 6, r * args.size + 4), label, fill=(20, 20, 20))
    renderer.delete()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    img.quantize(colors=255, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    logging.info("wrote %s (%d kB) in %.1f s", args.out, os.path.getsize(args.out) // 1024, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
