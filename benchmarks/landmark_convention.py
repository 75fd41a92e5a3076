"""Where do the photo landmark errors come from? The detector's 68 points, the built-in model's 68
landmark vertices and a human's 68 points, compared group by group.

The photo figure of issue 10 (NME51 of the reconstruction against mediapipe's points mapped to the
68 iBUG points, :mod:`train.detector`) mixes three things: how far the model's landmark vertices
and the mapped mediapipe points mean different places on a face (a convention gap), how well the
detector finds its points, and how well the reconstruction fits them. This script separates them:

1. **Renders** (``--data``: shards with their stored 68 points, the model's vertices projected):
   the detector's mapped points against that truth, NME51 per landmark group, and a constant
   offset per point expressed in the face's own frame (a similarity of the detector's mapped 3-D
   points to their mean shape) fitted on the first half of the renders and applied to the second:
   how much of the detector-vs-model error is a fixed convention gap.
2. **Photos with hand-placed points** (``--photos``: ``<stem>.pts`` beside each photo, see
   ``benchmarks/annotated_photos.py``): the detector against the human points, as mapped and with
   the render-fitted offsets added (moved to the model's convention): which convention is nearer
   a human's, group by group;
3. with ``--reconstructions`` (a ``train-cli reconstruct`` output folder of the same photos): the
   reconstruction's points against the human's, per group, and the mean offset of each group
   from the human's, along the eye line and down the face.

NME: mean point distance over the outer-eye-corner distance (points 36 and 45) of the reference
(the rendered truth or the human's points).

    python benchmarks/landmark_convention.py --data val128[,val128f] [--max 1600] \
        --photos photos --reconstructions rec
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from morphable_model.landmarks import GROUPS as LANDMARK_GROUPS
from synth.shards import ShardReader, list_shards
from train.detector import FaceDetector, mesh_to_ibug68
from train.metrics import umeyama
from train.photos import load_photo, photo_annotation

GROUPS = {**LANDMARK_GROUPS, "inner51": range(17, 68)}  # jaw, brows, nose, eyes, mouth + the 51 inner points
INNER = np.arange(17, 68)
YAW_BUCKETS = ((0, 30), (30, 60), (60, 90))


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """``s, R, t`` with ``dst ~ s R src + t`` in the least-squares sense, ``(L, 3)`` each
    (:func:`train.metrics.umeyama`)."""
    t = umeyama(torch.from_numpy(src[None]), torch.from_numpy(dst[None]))
    return float(t.scale[0]), t.rotation[0].numpy(), t.translation[0].numpy()


def group_nme(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Per-group mean distance over the reference's outer-eye-corner distance."""
    err = np.linalg.norm(pred - ref, axis=1) / np.linalg.norm(ref[45] - ref[36])
    return {g: float(err[list(r)].mean()) for g, r in GROUPS.items()}


def detect_renders(dirs: list[str], limit: int) -> list[dict]:
    rows = []
    with FaceDetector() as det:
        for d in dirs:
            for path in list_shards(d):
                with ShardReader(path) as reader:
                    for i in range(len(reader)):
                        s = reader.read(i, keys=("image", "landmarks", "landmarks_visible", "pose"))
                        faces = det.detect(s["image"])
                        if faces and faces[0].landmarks is not None:
                            rows.append({"det3": mesh_to_ibug68(faces[0].mesh.astype(np.float64)),
                                         "truth": s["landmarks"].astype(np.float64),
                                         "visible": s["landmarks_visible"],
                                         "yaw": abs(float(np.degrees(s["pose"][0])))})
                        if len(rows) >= limit:
                            return rows
    return rows


class Offsets:
    """A constant offset per iBUG point in the face frame of the detector's mapped 3-D points:
    ``point_k + s R[:2] b_k`` (``s, R``: similarity of the 51 inner points to their mean shape)."""

    def __init__(self, rows: list[dict]):
        ref = rows[0]["det3"].copy()
        for _ in range(5):  # generalised Procrustes mean of the inner points
            aligned = []
            for r in rows:
                s, rot, t = similarity(r["det3"][INNER], ref[INNER])
                aligned.append(s * r["det3"] @ rot.T + t)
            ref = np.mean(aligned, 0)
            ref = (ref - ref[INNER].mean(0)) / np.linalg.norm(ref[45] - ref[36])
        self.ref = ref
        self.offset = np.zeros((68, 3))
        frames = [self.frame(r["det3"]) for r in rows]
        for k in range(68):
            a = [s * rot[:2] for (s, rot), r in zip(frames, rows) if r["visible"][k]]
            y = [r["truth"][k] - r["det3"][k, :2] for r in rows if r["visible"][k]]
            if not a:  # never visible: no offset
                continue
            a, y = np.concatenate(a), np.concatenate(y)
            self.offset[k] = np.linalg.solve(a.T @ a + 1e-3 * len(y) * np.eye(3), a.T @ y)

    def frame(self, det3: np.ndarray) -> tuple[float, np.ndarray]:
        s, rot, _ = similarity(self.ref[INNER], det3[INNER])
        return s, rot

    def apply(self, det3: np.ndarray) -> np.ndarray:
        s, rot = self.frame(det3)
        return det3[:, :2] + s * self.offset @ rot[:2].T


def fmt(d: dict[str, float]) -> str:
    return "  ".join(f"{g} {v:.3f}" for g, v in d.items())


def mean_dicts(ds: list[dict[str, float]]) -> dict[str, float]:
    return {g: float(np.mean([d[g] for d in ds])) for g in ds[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="render shard folders, comma-separated")
    ap.add_argument("--max", type=int, default=1600, help="at most this many detected renders")
    ap.add_argument("--photos", default=None, help="folder of photos with <stem>.pts beside them")
    ap.add_argument("--reconstructions", default=None, help="train-cli reconstruct output folder of those photos")
    args = ap.parse_args()

    rows = detect_renders(args.data.split(","), args.max)
    half = len(rows) // 2
    fit, held = rows[:half], rows[half:]
    print(f"renders: {len(rows)} with detector landmarks; offsets fitted on {len(fit)}, scored on {len(held)}")
    offsets = Offsets(fit)
    before = [group_nme(r["det3"][:, :2], r["truth"]) for r in held]
    after = [group_nme(offsets.apply(r["det3"]), r["truth"]) for r in held]
    print(f"  detector vs the model's points (mean):       {fmt(mean_dicts(before))}")
    print(f"  + the constant offsets (held-out, mean):     {fmt(mean_dicts(after))}")
    yaw = np.array([r["yaw"] for r in held])
    b51, a51 = np.array([d["inner51"] for d in before]), np.array([d["inner51"] for d in after])
    print(f"  NME51 median {np.median(b51):.4f} -> {np.median(a51):.4f}; by |yaw|: " + ", ".join(
        f"{lo}-{hi} deg (n={int(m.sum())}) {np.median(b51[m]):.4f} -> {np.median(a51[m]):.4f}"
        for lo, hi in YAW_BUCKETS for m in [(yaw >= lo) & (yaw < hi)] if m.any()))
    size = np.linalg.norm(offsets.offset[:, :2], axis=1)
    top = np.argsort(-size[INNER])[:8] + 17
    print("  largest inner offsets (outer-eye distances): " + ", ".join(f"{k} {size[k]:.3f}" for k in top))
    print("  jaw offsets 0-16: " + " ".join(f"{size[k]:.2f}" for k in range(17)))

    if not args.photos:
        return
    photos = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                    and p.with_suffix(".pts").is_file())
    recon = Path(args.reconstructions) if args.reconstructions else None
    table: dict[str, list[dict[str, float]]] = {}
    with FaceDetector() as det:
        for p in photos:
            human = photo_annotation(p)
            faces = [f for f in det.detect(load_photo(p)[0]) if f.landmarks is not None]
            if not faces:
                print(f"  {p.name}: no face with landmarks")
                continue
            centre = human.mean(0)
            face = min(faces, key=lambda f: np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre))
            det3 = mesh_to_ibug68(face.mesh.astype(np.float64))
            found = {"detector": det3[:, :2], "detector + offsets": offsets.apply(det3)}
            if recon is not None and (recon / f"{p.stem}.json").is_file():
                found["reconstruction"] = np.asarray(json.loads((recon / f"{p.stem}.json").read_text())["landmarks_68"])
            for name, pts in found.items():
                e = group_nme(pts, human)
                table.setdefault(name, []).append(e)
                print(f"  {p.stem:12s} {name:20s} vs human: {fmt(e)}")
            if "reconstruction" in found:
                x = (human[45] - human[36]) / np.linalg.norm(human[45] - human[36])
                y = np.array([-x[1], x[0]])  # along the eye line, and down the face
                off = (found["reconstruction"] - human) / np.linalg.norm(human[45] - human[36])
                print(f"  {p.stem:12s} reconstruction - human, (along, down) the eye line: " + "  ".join(
                    f"{g} ({(off[list(r)] @ x).mean():+.3f}, {(off[list(r)] @ y).mean():+.3f})"
                    for g, r in GROUPS.items() if g != "inner51"))
    for name, es in table.items():
        print(f"mean over {len(es)} photos, {name:20s} vs human: {fmt(mean_dicts(es))}")


if __name__ == "__main__":
    main()
