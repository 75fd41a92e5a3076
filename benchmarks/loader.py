"""Benchmark: ShardDataset loader throughput vs CoarseNet training consumption (img/s), same run.

The loader must deliver at least 5x what training consumes, so the GPU (or CPU) never waits for
data. Measures, side by side:

* loader img/s (DataLoader over ``make_train_loader``, with augmentation, resizing to ``--size``)
  for each worker count in ``--workers``, in the steady state (after the start-up prefetch), with
  the photo degradations of ``train-cli coarse``'s defaults (``train.augment.PhotoAugment``) on and off;
* the loader's CPU cost per sample in this process (``ds[(i, epoch)]``: read, decode, resize,
  augment) with the photo degradations on and off, and their difference;
* training consumption img/s: full CoarseNet steps (feedback rendering, CNN, loss, backward,
  AdamW; bf16 autocast on CUDA) on batches already in memory;
* the ratio loader / training for each worker count.

    python benchmarks/loader.py [--data DIR] [--n 256] [--native 128] [--size 128] [--batch 64|16]
                                [--workers 0,1,2] [--batches 30] [--device auto] [--iters 4]
                                [--width-mult 1] [--train-steps 5|1] [--feedback-cell 0]

Without ``--data`` it renders ``--n`` samples at ``--native`` px with the built-in model into a
temporary folder first (synth; a few seconds per hundred samples).
"""

from __future__ import annotations

import argparse
import dataclasses
import contextlib
import os
import tempfile
import time

import numpy as np
import torch


def render_tmp(n: int, size: int, out: str) -> str:
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    from synth.dataset import DatasetConfig, render_dataset
    from synth.shards import register_filters

    # the default Zstandard shards; gzip (plain h5py) where hdf5plugin is missing (a lent GPU machine)
    compression = "zstd" if register_filters() else "gzip"
    render_dataset(DatasetConfig(out=out, n=n, size=size, seed=0, shard_size=max(1, n // 4), workers=0,
                                 compression=compression))
    return out


def loader_rate(ds, batch: int, workers: int, batches: int) -> float:
    from train.data import make_train_loader

    idx = np.arange(len(ds))
    # start-up (worker spawn, file opening) and the batches prefetched meanwhile (prefetch_factor 4
    # per worker) are not throughput: measure the steady state after them
    skip = 2 + 4 * workers
    loader = make_train_loader(ds, idx, batch, seed=0, total_steps=skip + batches, workers=workers)
    it = iter(loader)
    for _ in range(skip):
        next(it)
    t = time.perf_counter()
    n = sum(int(b["image"].shape[0]) for b in it)
    return n / (time.perf_counter() - t)


def sample_ms(ds, n: int) -> float:
    """Milliseconds per ``ds[(i, 1)]`` in this process (``n`` samples, after a warm-up of 20 that
    opens the files and fills the readers' caches)."""
    for i in range(min(20, n)):
        ds[(i % len(ds), 0)]
    t = time.perf_counter()
    for i in range(n):
        ds[(i % len(ds), 1)]
    return (time.perf_counter() - t) / n * 1e3


def train_rate(ds, args, device) -> float:
    from morphable_model import load_model

    from train.coarse_task import build_task
    from train.config import CoarseConfig
    from train.params import ParamStats

    model = load_model(args.model)  # speed only: the shards' model is not enforced here
    arr = ds.param_arrays(256)
    stats = ParamStats.from_samples(arr["pose"], arr["translation"], arr["intrinsics"], (ds.size, ds.size), ds.projection)
    # the task train-cli coarse builds with default flags but these
    config = CoarseConfig(data="-", out="-", iters=args.iters, width_mult=args.width_mult,
                          feedback_cell=args.feedback_cell)
    task = build_task(config, model, stats, ds.projection).to(device)
    opt = torch.optim.AdamW(task.model.parameters(), lr=1e-4)
    batch = torch.utils.data.default_collate([ds[(i % len(ds), 0)] for i in range(args.batch)])
    batch = task.prepare_batch(batch, device)
    amp = device.type == "cuda"
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext

    def step():
        with ctx():
            out = task.forward(task.model, batch)
        loss = task.loss(out, batch).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(args.train_steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.train_steps * args.batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--model", default=None, help="model trained for the consumption figure (default: built-in)")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--native", type=int, default=128)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=None, help="default: 64 on CUDA, 16 on CPU")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--batches", type=int, default=30, help="batches timed per worker count (steady state)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--train-steps", type=int, default=None, help="default: 5 on CUDA, 1 on CPU")
    ap.add_argument("--feedback-cell", type=float, default=0.0, help="as train-cli coarse --feedback-cell")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    args.batch = args.batch or (64 if device.type == "cuda" else 16)
    args.train_steps = args.train_steps or (5 if device.type == "cuda" else 1)
    from train.config import CoarseConfig
    from train.data import Augment, ShardDataset

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            t = time.perf_counter()
            data = render_tmp(args.n, args.native, os.path.join(tmp, "shards"))
            print(f"rendered {args.n} samples at {args.native}^2 in {time.perf_counter() - t:.1f} s")
        # a throughput benchmark: any shards will do, so the model fingerprint is not checked
        augment = Augment.from_config(CoarseConfig(data="-", out="-"))  # train-cli coarse's defaults
        sets = {"photo-aug on ": ShardDataset(data, size=args.size, augment=augment),
                "photo-aug off": ShardDataset(data, size=args.size, augment=dataclasses.replace(augment, photo=None))}
        ds = sets["photo-aug on "]
        costs = {name: sample_ms(d, min(len(d), 200)) for name, d in sets.items()}
        rates = {(name, w): loader_rate(d, args.batch, w, args.batches)
                 for w in (int(x) for x in args.workers.split(",")) for name, d in sets.items()}
        consume = train_rate(ds, args, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"shards {ds.native_size}^2 -> input {args.size}^2, batch {args.batch}, {len(ds)} samples; "
          f"training on {name}, {args.iters} iterations, width x{args.width_mult}, --feedback-cell "
          f"{args.feedback_cell}; {os.cpu_count()} CPU cores")
    print(f"training consumes {consume:10.1f} img/s")
    for name, ms in costs.items():
        print(f"loader CPU per sample, {name}: {ms:6.2f} ms")
    on, off = costs["photo-aug on "], costs["photo-aug off"]
    print(f"photo degradations cost {on - off:6.2f} ms/sample (x{on / off:.2f} the loader without them)")
    for (name, w), r in rates.items():
        verdict = "ok" if r >= 5 * consume else "below the 5x target"
        print(f"loader, {name}, {w} workers {r:10.1f} img/s   = {r / consume:6.1f}x training ({verdict})")


if __name__ == "__main__":
    main()
