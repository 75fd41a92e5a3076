"""Benchmark: train.depth_render (pure torch) vs pyrender (OpenGL via OSMesa), depth maps.

Renders the same B = 32 frames (the face model under 32 head poses at 500 mm) at 128^2 and
224^2 and prints milliseconds per batch: torch forward, torch forward + backward (d(sum
depth)/d(vertices)), and pyrender depth-only, plus the ratios, measured side by side in this run.
Also checks that the two depth maps agree on pixels both call foreground.

    python benchmarks/rasterizer.py [--batch 32] [--sizes 128,224] [--repeats 3] [--device cpu] [--threads 1]

Uses ``morphable_model.load_model()`` (the built-in face model); when that is not available it
falls back to a ~35k-vertex half-ellipsoid grid and says so.
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from train.depth_render import rasterize  # noqa: E402

if not hasattr(np, "infty"):
    np.infty = np.inf  # pyrender 0.1.45 uses np.infty (removed in numpy 2)


def ellipsoid_grid(n_u: int = 180, n_v: int = 195) -> tuple[np.ndarray, np.ndarray]:
    """Front half of an ellipsoid (radii 75, 95, 60 mm) as a grid: 35,100 vertices."""
    th = np.linspace(-0.45 * math.pi, 0.45 * math.pi, n_u)
    ph = np.linspace(-0.45 * math.pi, 0.45 * math.pi, n_v)
    T, P = np.meshgrid(th, ph, indexing="ij")
    verts = np.stack([75 * np.sin(T) * np.cos(P), 95 * np.sin(P), 60 * np.cos(T) * np.cos(P)], -1)
    idx = np.arange(n_u * n_v).reshape(n_u, n_v)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return verts.reshape(-1, 3), faces


def load_mesh() -> tuple[np.ndarray, np.ndarray, str]:
    try:
        import morphable_model

        model = morphable_model.load_model()
        verts = np.asarray(model.mean_shape, dtype=np.float64)
        verts = verts - verts.mean(0)
        return verts, np.asarray(model.triangles, dtype=np.int64), f"face model ({model.source})"
    except Exception as exc:  # the built-in model may not exist yet in this checkout
        verts, faces = ellipsoid_grid()
        return verts, faces, f"half-ellipsoid grid (face model unavailable: {type(exc).__name__}: {exc})"


def poses(batch: int, seed: int = 0) -> np.ndarray:
    """(B, 4, 4) model-to-camera transforms: yaw/pitch/roll up to 0.5/0.3/0.2 rad at 500 mm."""
    rng = np.random.default_rng(seed)
    out = np.zeros((batch, 4, 4))
    for i in range(batch):
        yaw, pitch, roll = rng.uniform(-1, 1, 3) * np.array([0.5, 0.3, 0.2])
        cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        out[i, :3, :3] = rz @ rx @ ry
        out[i, :3, 3] = [rng.uniform(-5, 5), rng.uniform(-5, 5), -500.0]
        out[i, 3, 3] = 1.0
    return out


def time_call(fn, repeats: int, sync) -> float:
    """Best of ``repeats`` wall-clock seconds after one warm-up call."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def pyrender_depths(verts_cam: np.ndarray, faces: np.ndarray, fx: float, size: int) -> tuple[np.ndarray, float]:
    """Depth maps (B, S, S) of camera-frame meshes, a new mesh per frame (shapes differ per
    sample in training); returns the maps and the seconds for the whole batch."""
    import pyrender
    import trimesh

    renderer = pyrender.OffscreenRenderer(size, size)
    camera = pyrender.IntrinsicsCamera(fx, fx, size / 2, size / 2, znear=100.0, zfar=2000.0)
    try:

        def run():
            maps = []
            for v in verts_cam:
                scene = pyrender.Scene()
                scene.add(pyrender.Mesh.from_trimesh(trimesh.Trimesh(v, faces, process=False), smooth=False))
                scene.add(camera, pose=np.eye(4))
                maps.append(renderer.render(scene, flags=pyrender.RenderFlags.DEPTH_ONLY))
            return np.stack(maps)

        run()  # warm-up (GL context, shader compilation)
        t0 = time.perf_counter()
        maps = run()
        return maps, time.perf_counter() - t0
    finally:
        renderer.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sizes", default="128,224")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default); on a shared machine 1 is steadier"
    )
    parser.add_argument("--no-pyrender", action="store_true", help="skip the pyrender column")
    args = parser.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    verts, faces, mesh_name = load_mesh()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rt = poses(args.batch)
    verts_cam = np.einsum("bij,nj->bni", rt[:, :3, :3], verts) + rt[:, None, :3, 3]  # (B, N, 3)
    v_t = torch.from_numpy(verts_cam).float().to(device)
    f_t = torch.from_numpy(faces).to(device)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"mesh: {mesh_name}: {verts.shape[0]} vertices, {faces.shape[0]} triangles")
    print(f"batch {args.batch}, torch {torch.__version__} on {dev_name}; pyrender: OSMesa, one frame at a time")
    header = f"{'size':>5} {'torch fwd':>10} {'fwd+bwd':>10} {'pyrender':>10} {'pyr/fwd':>8} {'pyr/f+b':>8} {'|dz| mm':>9} {'cover':>6}"
    print(header)
    print("-" * len(header))
    for size in (int(s) for s in args.sizes.split(",")):
        fx = 2.0 * size  # a 250 mm tall head at 500 mm fills the image
        k = torch.tensor([[fx, 0, size / 2], [0, fx, size / 2], [0, 0, 1.0]], device=device)

        def fwd():
            return rasterize(v_t, f_t, k, (size, size))

        v_grad = v_t.clone().requires_grad_(True)

        def fwd_bwd():
            rasterize(v_grad, f_t, k, (size, size)).depth.sum().backward()

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t_fwd = time_call(fwd, args.repeats, sync)
        t_fb = time_call(fwd_bwd, args.repeats, sync)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**20
            print(f"  ({size}^2: peak CUDA memory {peak:.0f} MiB over fwd and fwd+bwd)")
        ours = fwd().depth.cpu().numpy()
        cover = (ours > 0).mean()
        if args.no_pyrender:
            print(f"{size:>5} {t_fwd * 1e3:>8.1f}ms {t_fb * 1e3:>8.1f}ms {'-':>10}")
            continue
        gl, t_gl = pyrender_depths(verts_cam, faces, fx, size)
        both = (gl > 0) & (ours > 0)
        diff = np.abs(gl[both] - ours[both]).mean()
        print(
            f"{size:>5} {t_fwd * 1e3:>8.1f}ms {t_fb * 1e3:>8.1f}ms {t_gl * 1e3:>8.1f}ms "
            f"{t_gl / t_fwd:>7.2f}x {t_gl / t_fb:>7.2f}x {diff:>9.5f} {cover:>6.3f}"
        )
    print("pyr/fwd > 1: the torch rasterizer is faster than pyrender for the same frames.")


if __name__ == "__main__":
    main()
