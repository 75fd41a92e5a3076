"""How real do the renders look to a model trained only on real photos?

Renders ``--n`` samples with ``synth-cli render`` at its default flags (what a user gets), runs
mediapipe 0.10.14 on every image (:class:`train.detector.FaceDetector`: BlazeFace full-range +
468-point face mesh mapped to the 68 iBUG points) and prints, per |yaw| bucket (0-30, 30-60,
60-75 deg):

* detection rate: a face with landmarks found (BlazeFace box, or the face mesh's own detector on
  the whole image when BlazeFace finds none) and, separately, the BlazeFace-box rate;
* NME51: mean distance of the 51 inner iBUG points (17-67) to the rendered ground truth, divided
  by the ground-truth outer-eye-corner distance (points 36-45), median and mean over detections;
* beside it a trivial baseline: the mean ground-truth shape in detector-box coordinates placed
  into each detection box (what the box alone tells; mediapipe must beat it to say anything).

Usage: ``python benchmarks/render_realism.py [--n 96] [--seed 0] [--preview docs/render_realism.png]``;
``--encode srgb`` (a diagnostic for renders stored as linear RGB) applies the sRGB transfer
function before detection, as a photo would store the image.
The script only uses the CLI, the documented shard layout (h5py) and ``train.detector``, so it
runs unchanged on older commits (the before/after numbers in the README).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

BUCKETS = ((0.0, 30.0), (30.0, 60.0), (60.0, 75.0))
INNER = np.arange(17, 68)  # the 51 inner iBUG points


def render(out: Path, n: int, seed: int, size: int, workers: int) -> None:
    """``synth-cli render`` with default flags (the CLI of the checkout on ``sys.path``)."""
    cmd = [sys.executable, "-c", "from synth.cli import main; main()", "render", "--out", str(out), "--n", str(n),
           "--seed", str(seed), "--size", str(size), "--workers", str(workers), "--shard-size", str(n)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def read_shards(folder: Path) -> dict[str, np.ndarray]:
    """Images, landmarks, poses and indices of every sample (h5py alone: the README's shard layout)."""
    from synth.shards import register_filters

    register_filters()  # the Zstandard filter of the default shards (hdf5plugin, when installed)
    out: dict[str, list] = {"image": [], "landmarks": [], "pose": [], "index": []}
    for path in sorted(folder.glob("shard-*.h5")):
        with h5py.File(path, "r") as f:
            if int(f.attrs.get("layout_version", 0)) in (5, 7):  # JPEG bytes, sample i at image[span[i,0]:span[i,1]]
                data = f["image"][...]
                out["image"].append(np.stack([np.asarray(Image.open(io.BytesIO(data[a:b].tobytes())).convert("RGB"))
                                              for a, b in f["image_span"][...]]))
                for k in ("landmarks", "pose", "index"):
                    out[k].append(f[k][...])
                continue
            d = f["image"][...]
            if str(f["image"].attrs.get("encoding", "")).startswith("delta2d"):  # a = cumsum(cumsum(d, 0), 1), wrapping
                d = np.cumsum(np.cumsum(d, axis=1, dtype=np.uint8), axis=2, dtype=np.uint8)
            if int(f.attrs.get("layout_version", 0)) >= 4:  # stored (G, R - G, B - G) modulo 256 (docs/shards.md)
                g = d[..., 0]
                d = np.stack([d[..., 1] + g, g, d[..., 2] + g], axis=-1)
            out["image"].append(d)
            for k in ("landmarks", "pose", "index"):
                out[k].append(f[k][...])
    return {k: np.concatenate(v) for k, v in out.items()}


def nme51(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean point error over the 51 inner points / ground-truth outer-eye-corner distance."""
    iod = np.linalg.norm(gt[36] - gt[45])
    return float(np.linalg.norm(pred[INNER] - gt[INNER], axis=1).mean() / max(iod, 1e-6))


def srgb_encode(linear_u8: np.ndarray) -> np.ndarray:
    """The sRGB transfer function applied to linear uint8 images (what a photo stores)."""
    c = linear_u8.astype(np.float64) / 255.0
    out = np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)
    return np.round(out * 255.0).astype(np.uint8)


def evaluate(data: dict[str, np.ndarray]) -> list[dict]:
    from train.detector import FaceDetector

    rows = []
    with FaceDetector(max_faces=4) as det:
        for img, gt, pose, idx in zip(data["image"], data["landmarks"], data["pose"], data["index"]):
            faces = det.detect(img)
            face = next((f for f in faces if f.landmarks is not None), None)
            rows.append({
                "index": int(idx), "yaw": float(np.degrees(abs(pose[0]))), "gt": gt.astype(np.float64),
                "found": face is not None, "blazeface": bool(faces) and faces[0].score > 0,
                "box": None if face is None else face.box.astype(np.float64),
                "pred": None if face is None else face.landmarks.astype(np.float64),
            })
    # trivial baseline: mean ground-truth shape in detector-box coordinates, placed into each box
    found = [r for r in rows if r["found"]]
    if found:
        norm = np.stack([(r["gt"] - r["box"][:2]) / (r["box"][2:] - r["box"][:2]) for r in found])
        mean_shape = norm.mean(0)  # (68, 2)
        for r in found:
            r["base"] = r["box"][:2] + mean_shape * (r["box"][2:] - r["box"][:2])
    return rows


def report(rows: list[dict], label: str) -> dict:
    lines = [f"render realism ({label}): {len(rows)} renders, mediapipe 0.10.14",
             f"{'|yaw| deg':>10} {'n':>4} {'detected':>9} {'BlazeFace':>10} {'NME51 med':>10} {'mean':>7} "
             f"{'box-mean baseline med':>22}"]
    summary = {}
    for lo, hi in BUCKETS + ((0.0, 75.0),):
        sel = [r for r in rows if lo <= r["yaw"] < hi or (hi == 75.0 and r["yaw"] == 75.0)]
        if not sel:
            continue
        det = [r for r in sel if r["found"]]
        e = np.array([nme51(r["pred"], r["gt"]) for r in det]) if det else np.zeros(0)
        b = np.array([nme51(r["base"], r["gt"]) for r in det]) if det else np.zeros(0)
        rate = len(det) / len(sel)
        blaze = sum(r["blazeface"] for r in sel) / len(sel)
        name = f"{lo:g}-{hi:g}" if (lo, hi) != (0.0, 75.0) else "all"
        med = float(np.median(e)) if e.size else math.nan
        lines.append(f"{name:>10} {len(sel):>4} {100 * rate:>8.1f}% {100 * blaze:>9.1f}% {med:>10.3f} "
                     f"{(e.mean() if e.size else math.nan):>7.3f} {(np.median(b) if b.size else math.nan):>22.3f}")
        summary[name] = {"n": len(sel), "detected": rate, "blazeface": blaze, "nme51_median": med,
                         "nme51_mean": float(e.mean()) if e.size else None,
                         "baseline_median": float(np.median(b)) if b.size else None}
    print("\n".join(lines))
    return summary


def preview(data: dict[str, np.ndarray], rows: list[dict], path: Path, count: int = 12, cols: int = 4) -> None:
    """A grid of the first ``count`` renders (as rendered), labelled with |yaw| and whether a face was found."""
    from PIL import ImageDraw

    tiles = []
    for img, r in zip(data["image"][:count], rows[:count]):
        im = Image.fromarray(img)
        ImageDraw.Draw(im).text((4, 2), f"yaw {r['yaw']:.0f}{'' if r['found'] else ' (missed)'}", fill=(255, 255, 255))
        tiles.append(np.asarray(im))
    rows_img = [np.concatenate(tiles[k:k + cols], axis=1) for k in range(0, len(tiles), cols)]
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = Image.fromarray(np.concatenate(rows_img, axis=0))
    grid.quantize(colors=255, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=96, help="renders (default flags)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shards", type=Path, default=None, help="read these shards instead of rendering")
    ap.add_argument("--preview", type=Path, default=None, help="write a grid of 12 renders here")
    ap.add_argument("--json", type=Path, default=None, help="write the summary here")
    ap.add_argument("--label", default="this checkout")
    ap.add_argument("--encode", choices=("as-rendered", "srgb"), default="as-rendered",
                    help="diagnostic: sRGB-encode renders stored as linear RGB before detection")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.shards
        if folder is None:
            folder = Path(tmp) / "shards"
            render(folder, args.n, args.seed, args.size, args.workers)
        t1 = time.perf_counter()
        data = read_shards(folder)
    if args.encode == "srgb":
        data["image"] = srgb_encode(data["image"])
    rows = evaluate(data)
    t2 = time.perf_counter()
    summary = report(rows, args.label)
    print(f"render {t1 - t0:.0f} s, detection {t2 - t1:.0f} s ({os.cpu_count()} cores)")
    if args.preview is not None:
        preview(data, rows, args.preview)
    if args.json is not None:
        args.json.write_text(json.dumps({"label": args.label, "n": len(rows), "seed": args.seed, "buckets": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
