"""Can a network see the synthetic fine detail? Its effect on the rendered 8-bit image.

FineNet learns the detail (``depth - depth_coarse`` of the shards) from the image alone, so the
detail must change the image. For ``--n`` samples of the default sampling (seed ``--seed``) this
renders each one without detail and with it, in each of ``--variants`` — ``bank:cavity:scale``:
the :mod:`synth.detail` bank version, the crease darkening (``--cavity`` of ``synth-cli render``)
and a multiplier of the sampled detail amplitudes (``--detail-scale``) — and prints, over the face
pixels, how far the sRGB 8-bit image moves from the detail-free render: mean and 99th percentile of
the per-pixel mean absolute difference of the three channels, in 8-bit levels; the same mean over
the *crease pixels* only (|detail| > 0.1 mm) and their share of the face; and the detail's own size
(mean and max |depth - depth_coarse|, mm). Occluders and the specular highlight are switched off
(they hide or mimic detail, and are not what is measured).

The default variants are what the shards held before (bank 1 at half today's amplitudes, no
darkening), the wider folds of bank 2 alone, and what ``synth-cli render`` writes now (bank 2,
cavity 0.4). A change well under one 8-bit level is below the image's quantisation: no
image-to-depth network can recover it, whatever its training.

    python benchmarks/detail_visibility.py [--n 12] [--size 128] [--seed 2]
    [--variants 1:0:0.5,2:0:1,2:0.4:1] [--save docs/detail_visibility.png]
    # --save: the first 3 samples, detail-free render then each variant's render and |diff| x 8
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import numpy as np


def _variants(text: str) -> list[tuple[int, float, float]]:
    out = []
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) != 3:
            raise SystemExit(f"--variants: expected bank:cavity:scale items, got {item!r}")
        out.append((int(parts[0]), float(parts[1]), float(parts[2])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--variants", default="1:0:0.5,2:0:1,2:0.4:1",
                    help="bank:cavity:scale items (detail bank version, crease darkening, amplitude multiplier)")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--save", default=None, help="PNG of the first 3 samples: renders of each variant, |diff| x 8")
    args = ap.parse_args()
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    from morphable_model.builtin import builtin_model
    from synth.render import FaceRenderer
    from synth.sampling import SamplingConfig, face_framing, sample_params

    variants = _variants(args.variants)
    model = builtin_model()
    cfg = dataclasses.replace(SamplingConfig(), occluders=0.0)
    framing = face_framing(model)
    keys = ("mean", "p99", "crease_mean", "crease_px", "detail_mean", "detail_max")
    stats = {v: {k: [] for k in keys} for v in variants}
    renderers = {b: FaceRenderer(model, args.size, platform="cpu", detail_version=b) for b, _, _ in variants}
    rows = []
    for i in range(args.n):
        p = dataclasses.replace(sample_params(model, cfg, args.size, args.seed, i, framing), specular_strength=0.0)
        base = next(iter(renderers.values())).render(dataclasses.replace(p, detail_weights=p.detail_weights * 0.0))
        row = [base.image]
        for v in variants:
            bank, cavity, scale = v
            o = renderers[bank].render(dataclasses.replace(p, detail_weights=p.detail_weights * scale, cavity=cavity))
            face = o.mask & base.mask
            diff = np.abs(o.image.astype(np.float32) - base.image.astype(np.float32)).mean(axis=-1)
            detail = np.abs(o.depth - o.depth_coarse)[face]
            crease = detail > 0.1
            st = stats[v]
            st["mean"].append(float(diff[face].mean()))
            st["p99"].append(float(np.percentile(diff[face], 99)))
            st["crease_mean"].append(float(diff[face][crease].mean()) if crease.any() else 0.0)
            st["crease_px"].append(float(crease.mean() * 100))
            st["detail_mean"].append(float(detail.mean()))
            st["detail_max"].append(float(detail.max()))
            row += [o.image, np.repeat(np.clip(diff * 8, 0, 255)[..., None], 3, axis=2).astype(np.uint8)]
        if i < 3:
            rows.append(np.concatenate(row, axis=1))
    for r in renderers.values():
        r.close()
    print(f"{args.n} renders at {args.size} px (seed {args.seed}), face pixels, no occluders or specular; "
          "image change vs the detail-free render in 8-bit sRGB levels (median over samples)")
    print(f"{'bank:cavity:scale':>17} | {'mean |diff|':>11} | {'p99 |diff|':>10} | {'crease |diff|':>13} | "
          f"{'crease % face':>13} | {'detail mean mm':>14} | {'detail max mm':>13}")
    for v in variants:
        st = {k: float(np.median(x)) for k, x in stats[v].items()}
        name = f"{v[0]}:{v[1]:g}:{v[2]:g}"
        print(f"{name:>17} | {st['mean']:>11.2f} | {st['p99']:>10.2f} | {st['crease_mean']:>13.2f} | "
              f"{st['crease_px']:>13.1f} | {st['detail_mean']:>14.3f} | {st['detail_max']:>13.2f}")
    if args.save:
        from PIL import Image

        Image.fromarray(np.concatenate(rows, axis=0)).save(args.save)
        print(f"wrote {args.save}")


if __name__ == "__main__":
    main()
