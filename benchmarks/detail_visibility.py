"""Can a network see the synthetic fine detail? Its effect on the rendered 8-bit image.

FineNet learns the detail (``depth - depth_coarse`` of the shards) from the image alone, so the
detail must change the image. For ``--n`` samples of the default sampling (seed ``--seed``) this
renders each one with its detail weights times each of ``--scales`` (0 = no detail; 1 = what
``synth-cli render`` writes; ``--detail-scale`` multiplies them the same way) and prints, over the
face pixels, how far the sRGB 8-bit image moves from the detail-free render: mean and 99th
percentile of the per-pixel mean absolute difference of the three channels, in 8-bit levels,
next to the detail's own size (mean and max |depth - depth_coarse|, mm). Occluders and the
specular highlight are switched off (they hide or mimic detail, and are not what is measured).

A change well under one 8-bit level is below the image's quantisation: no image-to-depth
network can recover it, whatever its training.

    python benchmarks/detail_visibility.py [--n 12] [--size 128] [--scales 1,3,10] [--seed 2]
    [--save docs/detail_visibility.png]   # the renders at each scale and |diff| x 8, per sample
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--scales", default="1,3,10", help="detail-weight multipliers compared with 0 (no detail)")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--save", default=None, help="PNG of the first 3 samples: renders at each scale, |diff| x 8")
    args = ap.parse_args()
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    from morphable_model.builtin import builtin_model
    from synth.render import FaceRenderer
    from synth.sampling import SamplingConfig, face_framing, sample_params

    scales = [float(s) for s in args.scales.split(",")]
    model = builtin_model()
    cfg = dataclasses.replace(SamplingConfig(), occluders=0.0)
    framing = face_framing(model)
    stats = {s: {"mean": [], "p99": [], "detail_mean": [], "detail_max": [], "crease_px": [], "crease_mean": []} for s in scales}
    tiles = []
    with FaceRenderer(model, args.size, platform="cpu") as r:
        for i in range(args.n):
            p = dataclasses.replace(sample_params(model, cfg, args.size, args.seed, i, framing), specular_strength=0.0)
            base = r.render(dataclasses.replace(p, detail_weights=p.detail_weights * 0.0))
            row = [base.image]
            for s in scales:
                o = r.render(dataclasses.replace(p, detail_weights=p.detail_weights * s))
                face = o.mask & base.mask
                diff = np.abs(o.image.astype(np.float32) - base.image.astype(np.float32)).mean(axis=-1)
                detail = np.abs(o.depth - o.depth_coarse)[face]
                st = stats[s]
                crease = detail > 0.1
                st["crease_px"].append(float(crease.mean() * 100))
                st["crease_mean"].append(float(diff[face][crease].mean()) if crease.any() else 0.0)
                st["mean"].append(float(diff[face].mean()))
                st["p99"].append(float(np.percentile(diff[face], 99)))
                st["detail_mean"].append(float(detail.mean()))
                st["detail_max"].append(float(detail.max()))
                row += [o.image, np.repeat(np.clip(diff * 8, 0, 255)[..., None], 3, axis=2).astype(np.uint8)]
            if i < 3:
                tiles.append(np.concatenate(row, axis=1))
    print(f"{args.n} renders at {args.size} px (seed {args.seed}), face pixels, no occluders or specular; "
          "image change vs the detail-free render in 8-bit sRGB levels (median over samples)")
    print(f"{'detail scale':>12} | {'mean |diff|':>11} | {'p99 |diff|':>10} | {'detail mean mm':>14} | {'detail max mm':>13} | {'crease % face':>13} | {'crease |diff|':>13}")
    for s in scales:
        st = {k: float(np.median(v)) for k, v in stats[s].items()}
        print(f"{s:>12g} | {st['mean']:>11.2f} | {st['p99']:>10.2f} | {st['detail_mean']:>14.3f} | {st['detail_max']:>13.2f} | {st['crease_px']:>13.1f} | {st['crease_mean']:>13.2f}")
    if args.save:
        from PIL import Image

        Image.fromarray(np.concatenate(tiles, axis=0)).save(args.save)
        print(f"wrote {args.save}")


if __name__ == "__main__":
    main()
