"""Where does FineNet put relief on real photos: on the skin, or on facial hair?

Per photo and FineNet checkpoint, as ``train-cli reconstruct`` runs them (the shipped CoarseNet, the
detector's landmarks fitted): the mean |refined depth - coarse depth| (mm) over three regions of the
depth map, placed by the detector's 68 landmarks with the polygons that ``synth-cli render
--facial-hair`` paints (:func:`synth.backgrounds.facial_hair_polygons`):

* ``moustache``: nose base to upper lip;
* ``beard``: the jaw up to the nose's base and the cheeks, lips excluded (moustache included);
* ``rest``: the rest of the refined pixels (forehead, nose, upper cheeks).

Only the pixels FineNet refines count (its refinement mask: the coarse face eroded, facing the
camera, within the face region; elsewhere the depth is the coarse one).

A network that reads hair texture as relief puts more there on a bearded face (Einstein's
moustache, Walter White's goatee in breakingbad) than on a shaven one; ``moustache / rest`` and
``beard / rest`` are the ratios. Photos without facial hair show what they are for skin alone (the
folds beside the nose and mouth lie in the beard region: above 1 on shaven faces too). No ground
truth: a comparison of checkpoints on the same crops, not a score.

    python benchmarks/photo_relief.py --photos photos/annotated \\
        --fine train/weights/fine.safetensors runs/fine_hair/checkpoints/last.pt
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def region_masks(landmarks_crop: np.ndarray, crop_size: int, depth_size: int, face: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean ``(D, D)`` masks of the regions above, from the crop's landmarks ``(68, 2)``."""
    from synth.backgrounds import facial_hair_polygons, region_coverage

    lm = np.asarray(landmarks_crop, np.float64) * (depth_size / crop_size)
    uu, vv = np.meshgrid(np.arange(depth_size) + 0.5, np.arange(depth_size) + 0.5)  # pixel centres

    def inside(kind: str) -> np.ndarray:
        return region_coverage(uu, vv, *facial_hair_polygons(kind, lm)) > 0.5

    beard = inside("beard")
    return {"moustache": inside("moustache") & face, "beard": beard & face, "rest": face & ~beard}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", nargs="+", required=True, help="photo files or folders")
    ap.add_argument("--fine", nargs="+", default=["train/weights/fine.safetensors"], help="FineNet checkpoints")
    ap.add_argument("--coarse", default=None, help="CoarseNet checkpoint (default: the shipped one)")
    args = ap.parse_args()

    from train.config import ReconstructConfig
    from train.photos import PhotoConfig, prepare_photos
    from train.reconstruct import load_stages, run_networks

    rows: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        faces_by_size: dict[int, list] = {}  # crops per input size (checkpoints may differ)
        for fine in args.fine:
            stages = load_stages(ReconstructConfig(out=tmp, coarse=args.coarse, fine=fine))
            if stages.size not in faces_by_size:
                run = prepare_photos(args.photos, PhotoConfig(size=stages.size, cache_dir=tmp))
                faces_by_size[stages.size] = [f for f in run.faces if f.landmarks is not None]
            faces = faces_by_size[stages.size]
            if not faces:
                raise SystemExit(f"no face with landmarks found in {' '.join(args.photos)}")
            seen = {}  # FineModel's outputs of the last call: its refinement mask
            stages.fine.model.register_forward_hook(lambda module, inputs, out: seen.update(out))
            for face in faces:
                (res,) = run_networks(stages, [face])
                refined = seen["refine"][0].cpu().numpy().astype(bool)
                if refined.shape != res.depth.shape:
                    raise SystemExit(f"FineNet's refinement mask is {refined.shape}, its depth {res.depth.shape}")
                relief = np.abs(res.depth - res.depth_coarse)
                masks = region_masks(face.landmarks_crop, face.size, res.depth.shape[0], res.mask & refined)
                rows.setdefault(str(face.path) if face.face_index == 0 else f"{face.path}#{face.face_index}", {})[fine] = {
                    k: float(relief[m].mean()) if m.any() else float("nan") for k, m in masks.items()}
    ratio = lambda a, b: a / b if b > 0 else float("nan")  # noqa: E731
    print(f"{'photo':<16} {'FineNet':<48} {'moustache':>10} {'beard':>8} {'rest':>8} {'moustache/rest':>15} "
          f"{'beard/rest':>11}  (mean |relief| mm)")
    for name, per in rows.items():
        for fine, r in per.items():
            print(f"{Path(name).name[-16:]:<16} {fine[-48:]:<48} {r['moustache']:>10.4f} {r['beard']:>8.4f} "
                  f"{r['rest']:>8.4f} {ratio(r['moustache'], r['rest']):>15.2f} {ratio(r['beard'], r['rest']):>11.2f}")


if __name__ == "__main__":
    main()
