"""Does FineNet turn dark lines without geometry (glasses, brows, strands) into relief?

Two shard folders rendered with the same seed, one with ``--line-occluders 1`` and one without:
their samples are identical except for the painted lines (``synth.sampling`` draws them from their
own stream), so any difference between FineNet's refined depths on a pair is caused by the lines.
FineNet refines the shards' ground-truth coarse depth (no CoarseNet: nothing else differs).
Per FineNet checkpoint it prints, over the refined pixels where the two images differ (the lines):

* ``false relief``: mean |refined depth with lines - without| in mm, and its 99th percentile;
* the true detail there for scale: mean |depth - depth_coarse| (mm) on the same pixels;
* ``detail_recovered`` pooled on each folder (`train-cli evaluate --fine-gt-coarse`'s metric).

    synth-cli render --out lines_on  --n 256 --size 128 --seed 26 --line-occluders 1
    synth-cli render --out lines_off --n 256 --size 128 --seed 26
    python benchmarks/line_occluders.py --on lines_on --off lines_off \\
        --fine train/weights/fine.safetensors runs/fine_lines/checkpoints/last.pt

The same for facial hair (or anything else painted without geometry from its own stream): render
``--on`` with ``--facial-hair 1`` instead; the pixels measured are those where the images differ.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def refined_depths(fine: str, data: str, samples: int, batch_size: int):
    """Per batch: (refined depth, refine mask, images, ground-truth depth and coarse depth) as numpy,
    FineNet ``fine`` refining the shards' ground-truth coarse depth."""
    import torch

    from morphable_model.builtin import builtin_model
    from train.checkpoint import load_inference_checkpoint
    from train.config import FineConfig
    from train.data import DetailShardDataset, make_eval_loader
    from train.fine_task import FineRows, FineTask, GroundTruthRegion, build_fine_model
    from train.losses import FineLossWeights

    model = builtin_model()
    ck = load_inference_checkpoint(fine, fingerprint=model, task="fine")
    run = FineConfig.from_dict(ck["config"])
    fmodel = build_fine_model(model, ck["task_state"], None)
    fmodel.load_state_dict(ck["model"])
    task = FineTask(model, fmodel, FineLossWeights.from_config(run), run.smooth_on)
    fmodel.eval()
    ds = DetailShardDataset(data, fingerprint=model, size=run.size)
    rows = FineRows(ds, False, model.n_id, model.n_exp, GroundTruthRegion(model, ds.projection))
    device = torch.device("cpu")
    with torch.no_grad():
        for batch in make_eval_loader(rows, batch_size, samples, 0):
            batch = task.prepare_batch(batch, device)
            out = task.forward(fmodel, batch)
            metrics = task.metrics(out, batch)
            yield ({k: out[k].numpy() for k in ("depth", "refine")},
                   {k: batch[k].numpy() for k in ("image", "depth", "depth_coarse")},
                   {k: metrics[k].numpy() for k in ("detail_error_energy", "detail_energy")})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--on", required=True, help="shards rendered with --line-occluders 1 (or --facial-hair 1)")
    ap.add_argument("--off", required=True, help="the same seed and settings without them")
    ap.add_argument("--fine", nargs="+", default=["train/weights/fine.safetensors"], help="FineNet checkpoints")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    for flag, folder in (("--on", args.on), ("--off", args.off)):
        path = Path(folder) / "dataset.json"
        manifest = json.loads(path.read_text()) if path.is_file() else {}
        if manifest.get("image_quality"):  # a lossy image differs in whole blocks, not only under the lines
            raise SystemExit(f"{flag} {folder!r} was rendered with --image-codec jpeg; render both folders lossless")
    print(f"{'FineNet':<48} {'false relief mean / p99 mm':>27} {'true detail there mm':>21} "
          f"{'detail_recovered pooled on / off':>33}")
    for fine in args.fine:
        diffs, truth, pooled = [], [], {"on": [0.0, 0.0], "off": [0.0, 0.0]}
        pairs = zip(refined_depths(fine, args.on, args.samples, args.batch_size),
                    refined_depths(fine, args.off, args.samples, args.batch_size), strict=True)
        for (o_on, b_on, m_on), (o_off, b_off, m_off) in pairs:
            if not np.array_equal(b_on["depth"], b_off["depth"]):
                raise SystemExit(f"--on {args.on!r} and --off {args.off!r} hold different samples "
                                 "(render both with the same seed, size and settings)")
            lines = (b_on["image"] != b_off["image"]).any(axis=1) & o_on["refine"] & o_off["refine"]
            diffs.append(np.abs(o_on["depth"] - o_off["depth"])[lines])
            truth.append(np.abs(b_on["depth"] - b_on["depth_coarse"])[lines])
            for key, m in (("on", m_on), ("off", m_off)):
                ok = np.isfinite(m["detail_error_energy"]) & np.isfinite(m["detail_energy"])
                pooled[key][0] += float(m["detail_error_energy"][ok].sum())
                pooled[key][1] += float(m["detail_energy"][ok].sum())
        d, t = np.concatenate(diffs), np.concatenate(truth)
        if not d.size:
            raise SystemExit("no refined pixel lies under a painted pixel: render --on with --line-occluders 1 "
                             "or --facial-hair 1")
        rec = {k: 1.0 - e / n if n > 0 else float("nan") for k, (e, n) in pooled.items()}
        print(f"{fine:<48} {d.mean():>13.4f} / {np.percentile(d, 99):<11.4f} {t.mean():>21.4f} "
              f"{rec['on']:>16.3f} / {rec['off']:<.3f}   ({d.size} painted pixels)")


if __name__ == "__main__":
    main()
