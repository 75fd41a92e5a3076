"""How much detail FineNet adds on renders and on real photos, as ``train-cli reconstruct`` runs it.

Held-out renders of a shard folder (with detail) are saved as PNG files and go through the same
pipeline as the photos (face detection, crop, CoarseNet, FineNet); per face the 99th percentile of
|refined - coarse depth| over the refined pixels is printed, with the renders' ground-truth detail
(|depth - depth_coarse| on the face, same percentile) beside it. ``--sharpen`` also runs the photos
with their crops sharpened (unsharp mask, radius 2 px, the given percents): does the added detail
follow the photo's local contrast?

    python benchmarks/detail_gap.py --data shards/val [--n 24] [--fine CKPT] [--photos DIR] [--sharpen 100,200]

Photos: ``--photos DIR`` or, by default, the offline three (scikit-image's astronaut and cameraman,
matplotlib's Grace Hopper).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np


def offline_photos(folder: Path) -> Path:
    from train.photos import write_sample_photos

    write_sample_photos(folder)
    return folder


def added_detail_p99(stages, faces, sharpen: int = 0) -> list[float]:
    from PIL import Image, ImageFilter

    from train.reconstruct import run_networks

    out = []
    for face in faces:
        original = face.image
        if sharpen:
            face.image = np.asarray(Image.fromarray(original).filter(
                ImageFilter.UnsharpMask(radius=2, percent=sharpen, threshold=0)))
        r = run_networks(stages, [face])[0]
        face.image = original
        d = (r.depth - r.depth_coarse)[r.mask & (r.depth > 0)]
        out.append(float(np.percentile(np.abs(d), 99)) if d.size else float("nan"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="shard folder rendered with detail on (held-out renders)")
    ap.add_argument("--n", type=int, default=24, help="renders to reconstruct")
    ap.add_argument("--fine", default=None, help="FineNet checkpoint (default: the shipped one)")
    ap.add_argument("--photos", default=None, help="folder of photos (default: the three offline ones)")
    ap.add_argument("--sharpen", default="", help="unsharp-mask percents to also run the photos with, e.g. 100,200")
    args = ap.parse_args()
    import torch
    from PIL import Image

    from synth.shards import ShardReader, list_shards
    from train.photos import PhotoConfig, prepare_photos
    from train.reconstruct import ReconstructConfig, load_stages

    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="detail-gap-"))
    try:
        renders = tmp / "renders"
        renders.mkdir()
        truth = []
        for path in list_shards(Path(args.data)):
            with ShardReader(path) as r:
                if not r.detail:
                    raise SystemExit(f"--data: {path} was rendered without detail (no ground-truth detail)")
                for i in range(len(r)):
                    if len(truth) == args.n:
                        break
                    d = r.read(i, keys=("image", "depth", "depth_coarse", "mask"))
                    # upsampled so the detector and the crop see a photo-sized face
                    big = Image.fromarray(d["image"]).resize((256, 256), Image.BICUBIC)
                    big.save(renders / f"r{len(truth):03d}.png")
                    truth.append(float(np.percentile(np.abs(d["depth"] - d["depth_coarse"])[d["mask"]], 99)))
            if len(truth) == args.n:
                break
        photos = Path(args.photos) if args.photos else offline_photos(tmp / "photos")
        stages = load_stages(ReconstructConfig(out=str(tmp / "out"), **({"fine": args.fine} if args.fine else {})))
        print(f"FineNet: {stages.fine_path} (step {stages.fine_step}); 99th percentile of |refined - coarse depth|, mm")
        config = PhotoConfig(size=stages.size, cache_dir=str(tmp / "cache"))
        run = prepare_photos([renders], config)
        got = added_detail_p99(stages, run.faces)
        print(f"renders: {len(got)} of {len(truth)} faces found; added detail median {np.median(got):.3f} "
              f"(range {min(got):.3f}-{max(got):.3f}); ground truth of the {len(truth)} renders: median "
              f"{np.median(truth):.3f}")
        run = prepare_photos([photos], config)
        for pct in [0] + [int(v) for v in args.sharpen.split(",") if v.strip()]:
            got = added_detail_p99(stages, run.faces, pct)
            label = "photos" if pct == 0 else f"photos sharpened {pct} %"
            print(f"{label}: " + ", ".join(f"{f.path.stem} {v:.3f}" for f, v in zip(run.faces, got))
                  + f"; median {np.median(got):.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
