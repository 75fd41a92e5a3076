"""Reference points for CoarseNet's validation metrics on a shard set.

Prints the metrics of two estimates that need no network, next to a checkpoint's if one is given:
- ``mean face, true pose``: identity/expression coefficients zero, pose and camera from the ground
  truth — the error left by shape alone (what a perfect pose regressor with no shape would get);
- ``iteration 0``: the network's starting point (mean face at the mean pose/camera).

    python benchmarks/coarse_baselines.py --ckpt runs/coarse/checkpoints/last.pt --data val/
"""

from __future__ import annotations

import argparse
import json

import torch

from train.coarse_task import build_task_from_state, evaluate_checkpoint
from train.config import CoarseConfig, EvaluateConfig
from train.data import ShardDataset, make_eval_loader
from train.inference import load_checkpoint_and_model
from train.params import encode_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="checkpoint, .pt or .safetensors (its layout, stats and input size are used)")
    ap.add_argument("--data", required=True, help="validation shards")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ck, model = load_checkpoint_and_model(args.ckpt)
    task = build_task_from_state(model, ck["task_state"], CoarseConfig.from_dict(ck["config"]))
    s = task.layout.slices()
    ds = ShardDataset(args.data, fingerprint=model.fingerprint, size=int(ck["config"]["size"]))
    sums: dict[str, dict[str, float]] = {"mean face, true pose": {}, "iteration 0": {}}
    n = 0
    with torch.no_grad():
        for raw in make_eval_loader(ds, 32, args.samples, 0):
            batch = task.prepare_batch(raw, torch.device("cpu"))
            gt = encode_params(batch, task.layout, task.stats, task.projection)  # (B, dim)
            mean_face = gt.clone()
            mean_face[:, s["alpha_id"]] = 0
            mean_face[:, s["alpha_exp"]] = 0
            start = torch.zeros_like(gt)
            for name, est in (("mean face, true pose", mean_face), ("iteration 0", start)):
                m = task.metrics([est], batch)
                for k, v in m.items():
                    sums[name][k.split("/")[0]] = sums[name].get(k.split("/")[0], 0.0) + float(v.sum())
            n += gt.shape[0]
    rows = {name: {k: v / n for k, v in d.items()} for name, d in sums.items()}
    trained = evaluate_checkpoint(EvaluateConfig(ckpt=args.ckpt, data=args.data, samples=args.samples, device="cpu"),
                                  model=model)
    iters = sorted({int(k.split("/it")[1]) for k in trained if "/it" in k})
    for it in iters:
        rows[f"CoarseNet iteration {it}"] = {k.split("/")[0]: v for k, v in trained.items() if k.endswith(f"/it{it}")}
    keys = ["depth_err_mean_pct", "depth_err_median_pct", "vertex_rmse_mm", "landmark_nme", "depth_coverage"]
    print(f"{n} samples of {args.data}")
    print(f"{'estimate':26s}" + "".join(f"{k:>22s}" for k in keys))
    for name, r in rows.items():
        print(f"{name:26s}" + "".join(f"{r.get(k, float('nan')):22.3f}" for k in keys))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
