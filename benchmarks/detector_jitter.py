"""The detector's framing jitter: the photo pipeline's crop rule applied to the detector's landmarks
(and to its box) versus the same rule on the true landmarks, on renders of the built-in model.

    python benchmarks/detector_jitter.py [--n 200] [--size 256] [--seed 0]

Renders are made with ``--framing-jitter 0``, so the rule on the true landmarks gives exactly the
image frame: centre (size/2, size/2), side = size. For each render the detector
(:class:`train.detector.FaceDetector`) runs on the image; ``synth.framing.crop_from_landmarks`` on
its 68 points gives the crop a photo would get. Printed: the centre offset / side (u, v) and
log(side ratio), mean and standard deviation (robust: 1.4826 x MAD, so a rare failed mesh does not
dominate), overall and per |yaw| bin, plus the detection rate; and the calibration of the box rule
(``synth.framing.BOX_CENTER_SHIFT``, ``BOX_SCALE``): where the crop of the detector's landmarks lies
below the box centre, in box heights, and its side over the box's larger side (medians).
These numbers are the ``DETECTOR_*`` constants of ``synth.sampling``.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import numpy as np  # noqa: E402


def robust(x: np.ndarray) -> tuple[float, float]:
    """(median, 1.4826 x median absolute deviation) along axis 0."""
    med = np.median(x, axis=0)
    return med, 1.4826 * np.median(np.abs(x - med), axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from morphable_model import load_model
    from synth import framing
    from synth.render import FaceRenderer
    from synth.sampling import SamplingConfig, face_framing, sample_params
    from train.detector import FaceDetector

    model = load_model(None)
    cfg = SamplingConfig(framing_jitter=0.0)
    frame = face_framing(model)
    s = args.size
    rows = []  # yaw, du, dv, dlog, box_shift, box_scale (nan where missing)
    with FaceRenderer(model, size=s) as r, FaceDetector(max_faces=1) as det:
        for i in range(args.n):
            p = sample_params(model, cfg, s, args.seed, i, frame)
            out = r.render(p)
            yaw = abs(float(np.degrees(p.pose[0])))
            faces = det.detect(out.image)
            if not faces:
                rows.append([yaw] + [np.nan] * 5)
                continue
            f = faces[0]
            box = np.asarray(f.box, np.float64)
            bw, bh = box[2] - box[0], box[3] - box[1]
            if f.landmarks is None:
                rows.append([yaw] + [np.nan] * 5)
                continue
            c = framing.crop_from_landmarks(f.landmarks)
            # the box rule should give the crop of the detector's own landmarks (photos without landmarks
            # are framed like the others): its centre below the box centre in box heights, side / box side
            shift = (c.center[1] - (box[1] + box[3]) / 2) / bh
            scale = c.side / max(bw, bh)
            rows.append([yaw, (c.center[0] - s / 2) / s, (c.center[1] - s / 2) / s, np.log(c.side / s), shift, scale])
    a = np.array(rows)
    n = len(a)
    found = with_lm = ~np.isnan(a[:, 1])
    print(f"{n} renders at {s} px (seed {args.seed}, default priors, --framing-jitter 0)")
    print(f"  detected with landmarks: {with_lm.mean():.1%}")
    bins = [(0, 30), (30, 50), (50, 65), (65, 91)]
    for name, sel in [("all", with_lm)] + [(f"|yaw| {lo}-{hi}", with_lm & (a[:, 0] >= lo) & (a[:, 0] < hi))
                                           for lo, hi in bins]:
        if sel.sum() < 3:
            continue
        med, sd = robust(a[sel, 1:4])
        mean, std = a[sel, 1:4].mean(axis=0), a[sel, 1:4].std(axis=0)
        print(f"  {name:>12} (n={sel.sum():3d}): centre u {med[0]:+.4f} +- {sd[0]:.4f}, v {med[1]:+.4f} +- {sd[1]:.4f}, "
              f"log side {med[2]:+.4f} +- {sd[2]:.4f}   [mean/std: u {mean[0]:+.4f}/{std[0]:.4f}, "
              f"v {mean[1]:+.4f}/{std[1]:.4f}, log side {mean[2]:+.4f}/{std[2]:.4f}]")
    if found.sum() >= 3:
        med, sd = robust(a[found, 4:6])
        print(f"  box rule: BOX_CENTER_SHIFT {med[0]:.4f} (+- {sd[0]:.4f}), BOX_SCALE {med[1]:.4f} (+- {sd[1]:.4f})")
        lo = found & (a[:, 0] < 30)
        if lo.sum() >= 3:
            med, sd = robust(a[lo, 4:6])
            print(f"     |yaw| < 30: shift {med[0]:.4f} (+- {sd[0]:.4f}), scale {med[1]:.4f} (+- {sd[1]:.4f})")


if __name__ == "__main__":
    main()
