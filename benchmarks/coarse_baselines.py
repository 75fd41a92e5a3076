"""Reference points for CoarseNet's validation metrics on a shard set, beside a checkpoint's.

Prints, on the same samples and with the same metrics (``train.metrics``, defined in
docs/training.md):

- ``iteration 0``: the network's starting point (the mean face at the mean pose and camera);
- ``mean face, true pose and camera``: identity/expression coefficients zero, pose and camera from
  the ground truth — the error left by shape alone (what a perfect pose regressor that learned no
  shape would get);
- the checkpoint's iterations, each followed by ``mean face, pose of iteration k``: the mean face
  placed with the pose and camera the network predicted. The network has learned shape only where
  it beats this row; the shape metrics (aligned shape error, aligned depth error) do not depend on
  the pose, so that row repeats the true-pose reference there ('=').

    python benchmarks/coarse_baselines.py --checkpoint runs/coarse/checkpoints/last.pt --data val/
"""

from __future__ import annotations

import argparse
import json

import torch

from train.data import ShardDataset, make_eval_loader
from train.evaluate import evaluate_shards, load_task
from train.metrics import coarse_metrics, metrics_report, metrics_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True,
                    help="checkpoint, .pt or .safetensors (its layout, stats and input size are used)")
    ap.add_argument("--data", required=True, help="held-out shards")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    task, ck = load_task(args.checkpoint)
    size = int(ck["config"]["size"])
    # iteration 0: the all-zero normalised estimate, through the same metrics
    ds = ShardDataset(args.data, fingerprint=task.morph_model, size=size)
    sums: dict[str, float] = {}
    n = 0
    with torch.no_grad():
        for raw in make_eval_loader(ds, 32, args.samples, 0):
            batch = task.prepare_batch(raw, torch.device("cpu"))
            zero = torch.zeros(batch["image"].shape[0], task.layout.dim)
            for k, v in coarse_metrics(task.model, [zero], batch, task.morph_model.face_region, baselines=False).items():
                ok = torch.isfinite(v)
                sums[k] = sums.get(k, 0.0) + float(v[ok].sum())
            n += zero.shape[0]
    start = metrics_report({**{k: v / n for k, v in sums.items()}, "n": n})["iterations"][0]
    report = metrics_report(evaluate_shards(task, args.data, size, args.samples))
    table = metrics_table(report).splitlines()
    cols = [c for c in ("shape_err_aligned_mm", "shape_err_aligned_pct", "depth_err_mean_pct", "depth_err_median_pct",
                        "depth_err_aligned_mean_pct", "depth_err_aligned_median_pct", "landmark_nme68",
                        "landmark_nme51", "vertex_rmse_mm", "depth_coverage") if c in start]
    table.insert(1, "iteration 0 (mean face, mean pose)".ljust(38) + "".join(f"{start[c]:15.4f}" for c in cols))
    print(f"{args.checkpoint} (step {ck['step']}) on {args.data}")
    print("\n".join(table))
    print(json.dumps({"iteration_0": start, **report}))


if __name__ == "__main__":
    main()
