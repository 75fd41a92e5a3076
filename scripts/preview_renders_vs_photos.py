"""A dozen renders beside the real photo crops, framed by the same rule: ``docs/renders_vs_photos.png``.

The renders are the first samples of a shard folder (as the network sees them: sRGB, background,
occluders; no augmentation). The photos go through the photo pipeline the networks use
(``train.photos``: decode, detect, 68 landmarks, crop by ``synth.framing``) at the same size. The
offline photos are the public-domain faces that ship in registry packages: scikit-image's
``astronaut.png`` and ``camera.png``, matplotlib's ``grace_hopper.jpg``; pass more with ``--photos``.

    python scripts/preview_renders_vs_photos.py --data shards/val --out docs/renders_vs_photos.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def offline_photos() -> list[Path]:
    """The public-domain face photos bundled with scikit-image and matplotlib."""
    import matplotlib.cbook
    import skimage

    data = Path(skimage.__file__).parent / "data"
    return [data / "astronaut.png", data / "camera.png",
            Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="shard folder (shard-*.h5), e.g. held-out renders")
    ap.add_argument("--out", default="docs/renders_vs_photos.png")
    ap.add_argument("--n", type=int, default=12, help="renders shown")
    ap.add_argument("--size", type=int, default=128, help="crop side, pixels (renders are resized to it)")
    ap.add_argument("--photos", nargs="*", default=None, help="photo files or folders (default: the offline ones)")
    args = ap.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from synth.shards import ShardReader
    from train.photos import PhotoConfig, prepare_photos

    renders = []
    for path in sorted(Path(args.data).glob("shard-*.h5")):
        with ShardReader(path) as r:
            for i in range(len(r)):
                renders.append(r.read(i, keys=("image",))["image"])
                if len(renders) == args.n:
                    break
        if len(renders) == args.n:
            break
    if not renders:
        print(f"--data {args.data}: no shard-*.h5 with samples", file=sys.stderr)
        return 2
    renders = [np.asarray(Image.fromarray(im).resize((args.size, args.size), Image.BILINEAR)) for im in renders]
    run = prepare_photos(args.photos or offline_photos(), PhotoConfig(size=args.size))
    crops = [(f.path.stem, f.image) for f in run.faces]
    print(run.summary())

    cols = 6
    rows_r = -(-len(renders) // cols)
    rows_p = max(1, -(-len(crops) // cols))
    fig, axes = plt.subplots(rows_r + rows_p, cols, figsize=(2 * cols, 2.15 * (rows_r + rows_p)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, im in enumerate(renders):
        ax = axes[k // cols, k % cols]
        ax.imshow(im)
        ax.set_title(f"render {k}", fontsize=8)
    for k, (name, im) in enumerate(crops):
        ax = axes[rows_r + k // cols, k % cols]
        ax.imshow(im)
        ax.set_title(f"photo: {name}", fontsize=8)
    fig.suptitle(f"top: {len(renders)} renders ({Path(args.data).name}); bottom: real photos through the photo pipeline, "
                 f"same framing rule, {args.size} px", fontsize=9)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
