"""Render a preview grid of the built-in face model into docs/builtin_preview.png.

Row 1: the mean face (mean albedo) frontal, 3/4 view (yaw 40 deg), profile (yaw 80 deg), and
frontal with a darker / lighter skin (melanin -2 / +2 std).
Row 2: identity samples: face height +2 std, face width -2 std, nose protrusion +2 std (yaw 60),
and two random identity + albedo samples (coefficients N(0, 1) clipped to +-2).
Row 3: expression samples: jaw open, smile, brow raise, eye close, pucker at +2 std.

Headless rendering with pyrender + OSMesa, one directional light plus ambient, albedo as vertex
colours. Usage: ``python scripts/make_model_preview.py [--grid-mm 1.0] [--out docs/builtin_preview.png]``.
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


def _rot(yaw_deg: float, pitch_deg: float = 0.0) -> np.ndarray:
    y, p = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return rx @ ry


def render_view(renderer, verts, triangles, colours, yaw_deg=0.0, pitch_deg=0.0, fov_deg=17.0) -> np.ndarray:
    """(S, S, 3) uint8 image of the mesh turned by yaw/pitch, seen from +z at 700 mm."""
    centre = np.array([0.0, -30.0, 40.0])
    v = (verts - centre) @ _rot(yaw_deg, pitch_deg).T  # (N, 3) @ (3, 3) -> (N, 3)
    rgba = (np.clip(colours, 0, 1) * 255).astype(np.uint8)
    mesh = trimesh.Trimesh(v, triangles, vertex_colors=rgba, process=False)
    scene = pyrender.Scene(ambient_light=[0.35, 0.35, 0.35], bg_color=[0.93, 0.93, 0.95, 1.0])
    scene.add(pyrender.Mesh.from_trimesh(mesh, smooth=True))
    cam = np.eye(4)
    cam[2, 3] = 700.0
    scene.add(pyrender.PerspectiveCamera(yfov=np.deg2rad(fov_deg)), pose=cam)
    light = np.eye(4)
    light[:3, :3] = _rot(20.0, -25.0)
    scene.add(pyrender.DirectionalLight(intensity=2.6), pose=light)
    colour, _ = renderer.render(scene)
    return colour


def _draw_landmarks(tile: np.ndarray, points: np.ndarray, size: int, fov_deg: float = 17.0) -> None:
    """Mark landmark points (68, 3) on a frontal tile rendered by :func:`render_view` (in place)."""
    centre = np.array([0.0, -30.0, 40.0])
    p = points - centre
    f = 0.5 * size / np.tan(np.deg2rad(fov_deg) / 2)
    d = 700.0 - p[:, 2]  # depth along the camera axis
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
    add(mean, mean_alb, "mean + 68 landmarks")
    _draw_landmarks(tiles[-1], mean[m.landmarks], args.size)
    add(mean, mean_alb, "mean, yaw 40", 40)
    add(mean, mean_alb, "mean, yaw 80", 80)
    add(mean, m.albedo(alb_named("melanin", -2.0)), "melanin -2sd (lighter)")
    add(mean, m.albedo(alb_named("melanin", 2.0)), "melanin +2sd (darker)", -30)
    rng = np.random.default_rng([args.seed, 7, 0])
    for name, sgn, yaw in (("face_height", 2, 0), ("face_width", -2, 0), ("nose_protrusion", 2, 60)):
        a = zero_id.copy()
        a[built.id_names.index(name)] = sgn
        add(m.shape(a), mean_alb, f"id {name} {sgn:+d}sd", yaw)
    for i, yaw in enumerate((25, -30)):
        a = np.clip(rng.standard_normal(m.n_id), -2, 2).astype(np.float32)
        b = np.clip(rng.standard_normal(m.n_albedo), -2, 2).astype(np.float32)
        add(m.shape(a), m.albedo(b), f"random id + albedo #{i + 1}", yaw)
    for name in ("jaw_open", "smile", "brow_raise", "eye_close", "pucker"):
        add(m.shape(zero_id, exp_named(name, 2.0)), mean_alb, f"exp {name} +2sd", 20 if name == "pucker" else 0)
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
