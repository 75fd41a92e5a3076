"""Benchmark: one CoarseNet training step (img/s) vs a plain ResNet of equal FLOPs, same run.

CoarseNet's step = ``iters`` x (feedback rendering [no grad] + CNN forward) + loss + backward +
AdamW. The baseline is the same ResNet family (7x7 stem, 2 basic blocks at each of 4 widths, 3x3
head conv, GAP, 3 FC) applied once to an RGB image, its widths scaled until its forward FLOPs
equal CoarseNet's forward FLOPs summed over the iterations (counted with
``torch.utils.flop_counter``), trained with an MSE loss on the parameter vector. The ratio shows
what the iterative feedback scheme (rendering, loss, glue) costs beyond its convolutions.
Also prints the split of a CoarseNet step: rendering / CNN forward+backward / rest.

    python benchmarks/train_step.py [--device auto] [--size 128] [--batch 64|8] [--iters 4]
                                    [--width-mult 1] [--steps 5|2] [--model PATH] [--threads 0]
                                    [--feedback-cell 0]

Default model: the built-in face model (52k vertices, ~103k triangles). Images are random (speed
does not depend on content); parameters are drawn by ``synth.sampling`` like real shards.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from train.coarse_net import CoarseNet
from train.coarse_task import build_task
from train.config import CoarseConfig
from train.params import ParamStats, decode_params, encode_params
from train.trainer import cudnn_benchmark


def fake_batch(model, size: int, batch: int, device) -> dict[str, torch.Tensor]:
    from synth.sampling import SamplingConfig, sample_params

    ps = [sample_params(model, SamplingConfig(), size, 0, i) for i in range(batch)]
    b = {k: torch.tensor(np.stack([getattr(p, k) for p in ps])) for k in
         ("alpha_id", "alpha_exp", "beta", "sh", "pose", "translation", "intrinsics")}
    g = torch.Generator().manual_seed(0)
    b["image"] = torch.rand(batch, 3, size, size, generator=g)
    b["mask"] = (torch.rand(batch, size, size, generator=g) > 0.3).float()
    return {k: v.to(device) for k, v in b.items()}


def forward_flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, steps: int, device, warmup: int = 2) -> float:
    """Seconds per call (median of ``steps`` after ``warmup``)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=None, help="default: 64 on CUDA, 8 on CPU")
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 5 on CUDA, 2 on CPU)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--feedback-cell", type=float, default=0.0, help="vertex-clustering cell (mm) for the feedback mesh")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    amp = device.type == "cuda"
    args.batch = args.batch or (64 if amp else 8)
    args.steps = args.steps or (5 if amp else 2)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext

    from morphable_model import load_model

    model = load_model(args.model)
    b = fake_batch(model, args.size, args.batch, device)
    size = (args.size, args.size)
    stats = ParamStats.from_samples(b["pose"].cpu(), b["translation"].cpu(), b["intrinsics"].cpu(), size)
    torch.manual_seed(0)
    # the task train-cli coarse builds with default flags but these
    config = CoarseConfig(data="-", out="-", iters=args.iters, width_mult=args.width_mult,
                          feedback_cell=args.feedback_cell)
    task = build_task(config, model, stats, "perspective").to(device)
    layout = task.layout
    net = task.model
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def coarse_step():
        with autocast():
            out = task.forward(net, b)
        loss = task.loss(out, b).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # split: rendering of all iterations, and the CNN alone (fwd + bwd) on iters x B inputs
    p0 = decode_params(torch.zeros(args.batch, layout.dim, device=device), layout, stats, b["intrinsics"], size)

    def render_all():
        for _ in range(args.iters):
            net.render(p0, b["intrinsics"], size)

    x9 = torch.randn(args.batch, 9, *size, device=device)
    if device.type == "cuda":
        x9 = x9.contiguous(memory_format=torch.channels_last)

    def cnn_only():
        with autocast():
            y = sum(net.net(x9).float().sum() for _ in range(args.iters))
        y.backward()

    with torch.no_grad():
        cnn_flops = forward_flops(lambda: net.net(x9[:1])) * args.iters  # per image, all iterations

    # plain ResNet with matched forward FLOPs: bisection on the width multiplier
    lo, hi = args.width_mult * 0.5, args.width_mult * 4.0
    x3 = torch.randn(1, 3, *size, device=device)
    for _ in range(18):
        mid = (lo + hi) / 2
        with torch.no_grad():
            f = forward_flops(lambda: CoarseNet(3, layout.dim, width_mult=mid).to(device)(x3))
        lo, hi = (mid, hi) if f < cnn_flops else (lo, mid)
    plain_mult = (lo + hi) / 2
    torch.manual_seed(0)
    plain = CoarseNet(3, layout.dim, width_mult=plain_mult).to(device)
    if device.type == "cuda":  # the same NHWC layout CoarseTask.to uses
        plain.to(memory_format=torch.channels_last)
        b["image_nhwc"] = b["image"].contiguous(memory_format=torch.channels_last)
    else:
        b["image_nhwc"] = b["image"]
    with torch.no_grad():
        plain_flops = forward_flops(lambda: plain(x3))
    popt = torch.optim.AdamW(plain.parameters(), lr=1e-4)
    target = encode_params(b, layout, stats)

    def plain_step():
        with autocast():
            y = plain(b["image_nhwc"])
        loss = F.mse_loss(y.float(), target)
        popt.zero_grad(set_to_none=True)
        loss.backward()
        popt.step()

    t_coarse = timed(coarse_step, args.steps, device)
    t_plain = timed(plain_step, args.steps, device)
    t_render = timed(render_all, args.steps, device)
    t_cnn = timed(cnn_only, args.steps, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}, bf16 autocast {amp}; model {model.n_vertices} vertices / {model.n_triangles} triangles; "
          f"batch {args.batch} at {args.size}^2, {args.iters} iterations, width x{args.width_mult}, "
          f"feedback mesh {task.model.render.render_faces.shape[0]} triangles (--feedback-cell {args.feedback_cell})")
    print(f"{'':34s}{'GFLOP/img fwd':>14s}{'s/step':>10s}{'img/s':>10s}")
    print(f"{'CoarseNet step (render+CNN+loss)':34s}{cnn_flops / 1e9:14.3f}{t_coarse:10.4f}{args.batch / t_coarse:10.1f}")
    print(f"{f'plain ResNet, width x{plain_mult:.3f}':34s}{plain_flops / 1e9:14.3f}{t_plain:10.4f}{args.batch / t_plain:10.1f}")
    print(f"ratio CoarseNet / plain ResNet step time: {t_coarse / t_plain:.2f}x "
          f"(FLOPs ratio {cnn_flops / plain_flops:.3f})")
    print(f"split of a CoarseNet step: feedback rendering {t_render:.4f} s ({100 * t_render / t_coarse:.0f} %), "
          f"CNN fwd+bwd {t_cnn:.4f} s ({100 * t_cnn / t_coarse:.0f} %), "
          f"rest (loss, glue, optimizer) {max(0.0, t_coarse - t_render - t_cnn):.4f} s")


if __name__ == "__main__":
    with cudnn_benchmark(torch.cuda.is_available()):  # as the trainer does on CUDA
        main()
