"""How renders are framed: the fraction of samples whose face mask touches the image border, the
fraction of landmarks outside the image, and the face's size in the image, with the default
``synth-cli render`` settings (built-in model).

    python benchmarks/framing_stats.py [--n 200] [--size 128] [--seed 0] [--projection perspective]
    # an older synth side by side:
    PYTHONPATH=/path/to/old/checkout python benchmarks/framing_stats.py

A face crop made by the photo pipeline holds the whole face with a margin, so the mask of a render
framed the same way should rarely touch the border (only where the face turns so far that the rule,
measured on the landmarks, leaves a cheek out) and no landmark should fall outside.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--projection", default="perspective")
    args = ap.parse_args()

    from morphable_model import load_model
    from synth.render import FaceRenderer
    from synth.sampling import SamplingConfig, face_framing, sample_params

    model = load_model(None)
    cfg = SamplingConfig(projection=args.projection, detail=False)
    frame = face_framing(model)
    touch = {"any": 0, "top/bottom": 0, "left/right": 0}
    outside, widths, heights, touch_yaw = [], [], [], []
    with FaceRenderer(model, size=args.size) as r:
        for i in range(args.n):
            p = sample_params(model, cfg, args.size, args.seed, i, frame)
            out = r.render(p)
            m = out.mask
            tb = bool(m[0].any() or m[-1].any())
            lr = bool(m[:, 0].any() or m[:, -1].any())
            touch["any"] += tb or lr
            touch["top/bottom"] += tb
            touch["left/right"] += lr
            touch_yaw.append((abs(float(np.degrees(p.pose[0]))), tb or lr))
            lm = out.landmarks
            outside.append(((lm < 0) | (lm >= args.size)).any(axis=1).mean())
            rows, cols = np.nonzero(m)
            if rows.size:
                heights.append((rows.max() - rows.min() + 1) / args.size)
                widths.append((cols.max() - cols.min() + 1) / args.size)
    n = args.n
    print(f"{n} samples at {args.size} px, projection {args.projection}, seed {args.seed}")
    for k, v in touch.items():
        print(f"  mask touches the border ({k}): {v / n:.1%}")
    ty = np.array(touch_yaw)
    for lo, hi in ((0, 50), (50, 65), (65, 91)):
        sel = (ty[:, 0] >= lo) & (ty[:, 0] < hi)
        if sel.any():
            print(f"    |yaw| {lo}-{hi} deg: {ty[sel, 1].mean():.1%} of {sel.sum()}")
    print(f"  landmarks outside the image: {np.mean(outside):.2%}")
    print(f"  mask height / image: median {np.median(heights):.2f}, 5-95% {np.percentile(heights, 5):.2f}-"
          f"{np.percentile(heights, 95):.2f}")
    print(f"  mask width / image:  median {np.median(widths):.2f}, 5-95% {np.percentile(widths, 5):.2f}-"
          f"{np.percentile(widths, 95):.2f}")


if __name__ == "__main__":
    main()
