"""Benchmark: ``train-cli reconstruct`` per photo, split into its stages, on CPU with 1 and 2
threads (and CUDA when available), side by side in one run.

Runs the library behind the CLI (:func:`train.reconstruct.run_reconstruct`, default flags but
``--no-cache`` so detection is timed every time) on copies of the two offline photos
(scikit-image's astronaut, matplotlib's Grace Hopper), after one warm-up photo, and reads the
per-face timings from the ``<name>.json`` files it writes:

* decode, detect (mediapipe), crop — per photo;
* coarse — CoarseNet, all iterations (feedback rendering + CNN) and the final depth map, the
  face's share of its batch; fine — FineNet likewise;
* mesh — visibility, vertex colours, the detailed vertices; write — meshes (OBJ + PLY), depth
  PNG, JSON, and decoding the photo again for the colours; pictures — overlay, compare, turntable.

Goal (issue 13): coarse + fine < 100 ms per photo on CPU, detection and writing excluded. A
second table splits CoarseNet and FineNet into their parts on one batch (CNN forward per
iteration, feedback rendering per iteration, the final depth rasterization, FineNet) to show where
the time goes, as wall and process CPU time: on a shared machine the CPU time of the 1-thread
column is what the wall time would be on an idle one (the load average is printed).

Networks: the shipped weights (``train/weights/*.safetensors``) when present, else randomly
initialised networks of the default architecture (``train-cli coarse`` defaults: 224 px, 4
iterations, width x1, all of the built-in model's coefficients; said in the output) — speed does
not depend on the weights.

    python benchmarks/reconstruct.py [--photos 8] [--batch-size 8] [--threads 1,2] [--no-pictures]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from train import reconstruct as rc
from train.config import CoarseConfig, ReconstructConfig

STAGES = ("decode", "detect", "crop", "coarse", "fine", "mesh", "write", "pictures")


def offline_photos(folder: Path, n: int) -> list[Path]:
    """``n`` photo files: alternating copies of the astronaut and Grace Hopper."""
    from train.photos import write_sample_photos

    src = write_sample_photos(folder / "src", ("astronaut", "grace_hopper"))
    out = []
    for i in range(n):
        s = src[i % 2]
        p = folder / f"photo{i:03d}{s.suffix}"
        shutil.copy(s, p)
        out.append(p)
    return out


def random_coarse(tmp: Path, model) -> Path:
    """A randomly initialised CoarseNet of the default architecture, exported like shipped weights."""
    from synth.sampling import SamplingConfig, sample_params
    from train.checkpoint import export_inference, save_checkpoint
    from train.coarse_task import build_task
    from train.params import ParamStats

    cfg = CoarseConfig(data="-", out="-")
    ps = [sample_params(model, SamplingConfig(), cfg.size, 0, i) for i in range(64)]
    stats = ParamStats.from_samples(np.stack([p.pose for p in ps]), np.stack([p.translation for p in ps]),
                                    np.stack([p.intrinsics for p in ps]), (cfg.size, cfg.size))
    torch.manual_seed(0)
    net = build_task(cfg, model, stats, "perspective").model
    pt = save_checkpoint(tmp / "coarse.pt", {"task": "coarse", "step": 0, "model": net.state_dict(),
                                             "config": cfg.to_dict(), "task_state": net.hyperparameters(),
                                             "model_fingerprint": model.fingerprint})
    return export_inference(pt, tmp / "coarse.safetensors")


def random_fine(tmp: Path, model) -> Path | None:
    """A randomly initialised FineNet of the default architecture (``train-cli fine`` defaults),
    exported like shipped weights; None when this version has no FineNet."""
    try:
        from train.config import FineConfig
        from train.fine_net import FineNet
        from train.fine_task import FineModel
    except ImportError:
        return None
    from train.checkpoint import export_inference, save_checkpoint

    cfg = FineConfig(out="-", synthetic="-")
    torch.manual_seed(0)
    fine = FineNet(width_mult=cfg.width_mult, depth_scale_mm=cfg.depth_scale_mm, residual_scale_mm=cfg.residual_scale_mm)
    for m in fine.modules():  # the last layer starts at zero (no residual): give it weights so the work is real
        if isinstance(m, torch.nn.Conv2d) and m.out_channels == 1:
            torch.nn.init.normal_(m.weight, std=0.01)
    fm = FineModel(model, fine, None, projection="perspective", mask_erode=cfg.mask_erode, min_facing=cfg.min_facing)
    pt = save_checkpoint(tmp / "fine.pt", {"task": "fine", "step": 0, "model": fm.state_dict(), "config": cfg.to_dict(),
                                           "task_state": fm.hyperparameters(), "model_fingerprint": model.fingerprint})
    return export_inference(pt, tmp / "fine.safetensors")


def run_once(photos: list[Path], config: ReconstructConfig, stages, detector) -> dict[str, list[float]]:
    run = rc.run_reconstruct(photos, config, stages=stages, detector=detector)
    if run.skipped:
        raise RuntimeError(f"photos skipped: {run.skipped}")
    per: dict[str, list[float]] = {s: [] for s in STAGES}
    for w in run.written:
        t = json.loads(w.files["json"].read_text())["timings_ms"]
        for s in STAGES:
            per[s].append(t.get(s, 0.0) + (t.get("reload", 0.0) if s == "write" else 0.0))
    return per


@torch.no_grad()
def split_networks(stages, batch: int) -> dict[str, tuple[float, float]]:
    """ms per image of CoarseNet's parts (per iteration: CNN forward, feedback rendering; the final
    depth rasterization) and FineNet on one random batch at the default size."""
    from train import depth_render
    from train.params import decode_params

    net, size, dev = stages.coarse, stages.coarse_size, stages.device
    g = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 3, size, size, generator=g).to(dev)
    f = 1.2 * size
    k = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], dtype=torch.float32).expand(batch, 3, 3).to(dev)
    est = torch.zeros(batch, net.layout.dim, device=dev)
    p = decode_params(est, net.layout, net.stats, k, (size, size), net.render.projection)

    def ms(fn, reps: int = 3) -> tuple[float, float]:
        """(wall, process CPU) ms per image; on a shared machine the CPU time of a 1-thread run is
        what its wall time would be on an idle one."""
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(reps):
            fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return ((time.perf_counter() - t0) / reps / batch * 1000.0, (time.process_time() - c0) / reps / batch * 1000.0)

    fb = net.render(p, k, (size, size))
    x = torch.cat([image, fb], 1)
    out = {"CNN forward / iteration": ms(lambda: net.net(x)),
           "feedback rendering / iteration": ms(lambda: net.render(p, k, (size, size))),
           f"all {net.iters} iterations (reconstruct)": ms(lambda: net(image, k, None))}
    from synth import camera

    verts = net.render.vertices(p.alpha_id, p.alpha_exp)
    cam = camera.to_camera(verts, camera.rotation_matrix(p.pose), p.translation)
    out["final depth rasterization"] = ms(lambda: depth_render.rasterize(cam, net.render.triangles, k, (size, size)))
    if stages.fine is not None:
        fs = stages.fine.size
        kf = k.clone()
        kf[:, :2] *= fs / size
        img_f = torch.nn.functional.interpolate(image, size=(fs, fs), mode="bilinear", antialias=True)
        frags = depth_render.rasterize(cam, net.render.triangles, kf, (fs, fs))
        coarse = rc.CoarseEstimate(p, cam, frags.depth, frags.mask)
        out[f"coarse depth at FineNet's {fs} px"] = ms(lambda: depth_render.rasterize(cam, net.render.triangles, kf, (fs, fs)))
        out[f"FineNet ({fs} px, with its face-region mask)"] = ms(lambda: stages.fine.refine(img_f, kf, coarse))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=8, help="photos per timed run (copies of the two offline photos)")
    ap.add_argument("--batch-size", type=int, default=ReconstructConfig(out="-").batch_size)
    ap.add_argument("--threads", default="1,2", help="CPU thread counts, side by side")
    ap.add_argument("--no-pictures", action="store_true", help="skip overlay/compare/turntable")
    ap.add_argument("--no-cuda", action="store_true", help="CPU only even when CUDA is available")
    args = ap.parse_args()

    from morphable_model import load_model
    from train.detector import FaceDetector

    tmp = Path(tempfile.mkdtemp(prefix="bench_reconstruct_"))
    try:
        model = load_model(None)
        shipped = rc.DEFAULT_COARSE.is_file()
        coarse = rc.DEFAULT_COARSE if shipped else random_coarse(tmp, model)
        fine_shipped = rc.DEFAULT_FINE.is_file()
        fine = rc.DEFAULT_FINE if fine_shipped else random_fine(tmp, model)
        photos = offline_photos(tmp / "photos", args.photos)
        devices = [("cpu", int(t)) for t in args.threads.split(",")]
        if torch.cuda.is_available() and not args.no_cuda:
            devices.append(("cuda", max(int(t) for t in args.threads.split(","))))
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
              f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print(f"CoarseNet: {'shipped ' + str(coarse) if shipped else 'randomly initialised, default architecture'}; "
              f"FineNet: {'shipped' if fine_shipped else 'randomly initialised, default architecture' if fine else 'none in this version (the fine stage is skipped)'}")
        rows, splits = [], []
        with FaceDetector() as detector:
            for device, threads in devices:
                config = ReconstructConfig(out=str(tmp / f"out_{device}{threads}"), coarse=str(coarse),
                                           fine=None if fine is None else str(fine), no_fine=fine is None,
                                           device=device, threads=threads,
                                           batch_size=args.batch_size, pictures=not args.no_pictures, cache=False)
                torch.set_num_threads(threads)
                with threadpool_limits(threads):
                    stages = rc.load_stages(config, model=model)
                    run_once(photos[:1], config, stages, detector)  # warm-up (first calls, GL context, caches)
                    per = run_once(photos, config, stages, detector)
                    splits.append((f"{device} x{threads}", split_networks(stages, args.batch_size)))
                rows.append((f"{device}, {threads} thread{'s' * (threads != 1)}", stages.size,
                             {s: statistics.mean(v) for s, v in per.items()}))
        print(f"\nper photo (mean of {args.photos}, batch {args.batch_size}), ms:")
        print(f"| device | size | {' | '.join(STAGES)} | coarse + fine | goal < 100 |")
        print("|---" * (len(STAGES) + 4) + "|")
        for name, size, m in rows:
            net_ms = m["coarse"] + m["fine"]
            print(f"| {name} | {size} | " + " | ".join(f"{m[s]:.1f}" for s in STAGES)
                  + f" | {net_ms:.1f} | {'met' if net_ms < 100 else 'not met'} |")
        print(f"\nwhere the network time goes (one batch of {args.batch_size}, ms per image, wall / process CPU):")
        names = list(splits[0][1])
        print("| part | " + " | ".join(n for n, _ in splits) + " |")
        print("|---" * (len(splits) + 1) + "|")
        for part in names:
            print(f"| {part} | " + " | ".join(f"{s[part][0]:.1f} / {s[part][1]:.1f}" for _, s in splits) + " |")
        print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
              f"({os.cpu_count()} CPUs; above the CPU count, wall times are inflated by other jobs)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
