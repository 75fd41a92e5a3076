"""``train-cli evaluate``: a CoarseNet checkpoint's metrics on held-out shards and on real photos.

* **Shards** (``--data``): every metric of :func:`train.metrics.coarse_metrics` after each
  iteration, beside the reference estimates (the mean face with the true pose and camera, and with
  the network's own), averaged over the first ``--samples`` samples and arranged by
  :func:`train.metrics.metrics_report`.
* **Photos** (``--photos``): the photo pipeline (:mod:`train.photos`: decode, detect, frame,
  crop at the network's input size, assumed field of view) and the network on each crop; its 68
  landmark vertices, projected with the predicted pose and camera and the crop's intrinsics, are
  compared with the face detector's 68 points in the crop (:mod:`train.detector`, mediapipe's
  mesh mapped to iBUG-68): NME over the 51 inner points and over all 68, normalised by the
  detector's outer-eye-corner distance, per photo and as median / mean; beside it the mean face
  placed with the network's pose and camera. The detector is the reference here, not ground
  truth: its own error on renders is ``benchmarks/detector_jitter.py``'s.

Without ``--checkpoint`` the shipped weights are evaluated (:func:`train.inference.shipped_checkpoint`).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from .coarse_task import CoarseTask, task_from_checkpoint
from .config import FIT_LANDMARKS, EvaluateConfig
from .data import ShardDataset, image_to_float, make_eval_loader
from .inference import load_checkpoint_and_model, shipped_checkpoint
from .metrics import INNER_51, landmark_nme, metrics_report, project_landmarks
from .params import decode_params
from .trainer import resolve_device, validate

__all__ = ["load_task", "evaluate_shards", "evaluate_photos", "evaluate_checkpoint"]

log = logging.getLogger(__name__)


def load_task(path: str | os.PathLike | None, model=None, model_path: str | None = None,
              device: str | torch.device = "cpu", iters: int | None = None, flip_test: bool = True
              ) -> tuple[CoarseTask, dict[str, Any]]:
    """The :class:`train.coarse_task.CoarseTask` of a checkpoint (``None``: the shipped one) with its
    weights, on ``device`` in eval mode, and the checkpoint dict; ``iters`` overrides the number of
    iterations the network runs, ``flip_test`` is the network's (as ``reconstruct``'s)."""
    path = shipped_checkpoint() if path is None else path
    ck, model = load_checkpoint_and_model(path, model, model_path)
    task = task_from_checkpoint(model, ck, f"checkpoint {path}")
    if iters is not None:
        task.model.iters = task.iters = int(iters)
    task.model.flip_test = flip_test
    task.to(device)
    task.model.eval()
    return task, ck


Bars = Callable[[str, "int | None"], Callable[[int], None]]
"""A progress-bar factory: ``bars(description, total)`` -> ``update(k)`` (the CLI's tqdm bars)."""


def _counted(loader: Iterable[dict], update: Callable[[int], None]) -> Iterator[dict]:
    """``loader``'s batches, ``update(n)`` called with each batch's sample count once it is used."""
    for batch in loader:
        yield batch
        update(int(batch["image"].shape[0]))


def evaluate_shards(task: CoarseTask, data: str | os.PathLike, size: int, samples: int = 512, batch_size: int = 32,
                    workers: int = 0, amp: bool = False, bars: Bars | None = None) -> dict[str, float]:
    """Sample means of :func:`train.metrics.coarse_metrics` over the first ``samples`` samples of the
    shards in ``data`` at input ``size`` (flat keys, ``n`` = samples; :func:`train.trainer.validate`).
    ``bars``: a progress bar over the samples."""
    device = next(task.model.parameters()).device
    ds = ShardDataset(data, fingerprint=task.morph_model, size=size)
    loader = make_eval_loader(ds, batch_size, samples, workers)
    if bars is not None:
        loader = _counted(loader, bars("shards", min(samples, len(ds))))
    return validate(task, task.model, loader, device, amp=amp)


def _stats(values: list[float]) -> dict[str, float | None]:
    v = np.array([x for x in values if math.isfinite(x)], np.float64)
    if v.size == 0:
        return {"median": None, "mean": None}
    return {"median": float(np.median(v)), "mean": float(v.mean())}


@torch.no_grad()
def evaluate_photos(task: CoarseTask, inputs: Iterable[str | os.PathLike], size: int, batch_size: int = 32,
                    cache_dir: str | None = None, detector=None, progress: Callable[[int], None] | None = None,
                    fit_landmarks: str = "detector") -> dict[str, Any]:
    """Landmark NME of the network against the face detector on real photos (module docstring).

    ``fit_landmarks`` ("detector" or "head"), as ``reconstruct --fit-landmarks``: the points a
    network with a landmark head fits first, the detector's (the figures against the detector then
    measure the model's fit of them and the later iterations, not an independent error) or the
    head's; the report's ``"fit_landmarks"`` says which (None: no head, no fit).

    Returns ``{"n_photos", "n_faces", "landmark_nme51_median", "landmark_nme51_mean",
    "landmark_nme68_median", "landmark_nme68_mean", "iterations": [{"iteration", ...}],
    "baselines": {"mean_face_pred_pose": {...}}, "per_photo": [{"photo", "face",
    "landmark_nme51", "landmark_nme68", "mean_face_pred_pose_nme51"}], "skipped": [{"photo",
    "reason"}], "summary"}``; statistics are None when no face had detector landmarks. Faces
    framed from a box only (the detector gave no landmarks) are listed as skipped. A network with
    a landmark head (``--landmark-init``) adds ``"landmark_head": {"nme51_median",
    "nme68_median"}`` and per photo ``landmark_head_nme51`` / ``_nme68``: the head's own
    points against the detector's.

    **Hand-placed landmarks**: a photo with a ``<stem>.pts`` file beside it (68 iBUG points,
    :func:`train.photos.photo_annotation`) is also scored against them, normalised by *their*
    outer-eye-corner distance: ``"annotated": {"n_faces", "landmark_nme51_median", "_mean",
    "landmark_nme68_median", "detector_nme51_median", "_mean" (the detector's own points: how good
    the reference above is), "mean_face_pred_pose_nme51_median", ["landmark_head_nme51_median"],
    "skipped": [{"photo", "reason"}]}`` and per photo ``annotated_landmark_nme51``, ... The points
    go to the detected face (with detector landmarks) whose box holds their centre, the nearest
    one to them when several do; an unreadable file, points on no such face, or a photo whose faces
    all lack detector landmarks are listed under ``skipped`` (the photo is still scored against the
    detector where it can be). With ``fit_landmarks="detector"`` the head's own figures
    (``landmark_head``) are single readings: its mirrored reading (``flip_test``) only runs when its
    points are fitted.
    """
    from .photos import PhotoConfig, faces_to_arrays, prepare_photos

    if fit_landmarks not in FIT_LANDMARKS:
        raise ValueError(f"--fit-landmarks must be one of {', '.join(FIT_LANDMARKS)}, got {fit_landmarks!r}")
    net = task.model
    device = next(net.parameters()).device
    run = prepare_photos(inputs, PhotoConfig(size=size, cache_dir=cache_dir), detector=detector, progress=progress)
    faces = [f for f in run.faces if f.landmarks is not None]
    skipped = [{"photo": str(p), "reason": r} for p, r in run.skipped]
    skipped += [{"photo": str(f.path), "reason": "the detector gave a box but no landmarks"} for f in run.faces
                if f.landmarks is None]
    annotations, ann_skipped = _annotations(faces, sorted({f.path for f in run.faces}))
    fit = None if net.landmark_head is None else fit_landmarks
    per_it: dict[int, dict[str, list[float]]] = {}
    head_nme: dict[str, list[float]] = {}
    annotated: dict[str, list[float]] = {}
    rows: list[dict[str, Any]] = []
    was = net.training
    net.eval()
    try:
        for start in range(0, len(faces), batch_size):
            chunk = faces[start:start + batch_size]
            a = faces_to_arrays(chunk)
            img = image_to_float(torch.from_numpy(a["image"]).permute(0, 3, 1, 2).to(device))  # (F, S, S, 3) -> (F, 3, S, S)
            k = torch.from_numpy(a["intrinsics"]).to(device)
            ref = torch.from_numpy(a["landmarks"]).to(device)  # (F, 68, 2) detector, crop pixels
            hand = torch.from_numpy(np.stack(annotations[start:start + batch_size])).to(ref)  # NaN: none
            ests, points = net(img, k, return_landmarks=True, fit_points=ref if fit == "detector" else None)
            scored = {"detector_nme51": ref}
            if points is not None:  # the landmark head's own points (networks with --landmark-init)
                head = {"nme51": landmark_nme(points.float(), ref, points=INNER_51).tolist(),
                        "nme68": landmark_nme(points.float(), ref).tolist()}
                for name, v in head.items():
                    head_nme.setdefault(name, []).extend(v)
                scored["landmark_head_nme51"] = points.float()
            zeros = ests[0].new_zeros
            mean_verts = net.render.vertices(zeros(len(chunk), net.layout.n_id), zeros(len(chunk), net.layout.n_exp))
            for it, est in enumerate(ests, start=1):
                p = decode_params(est.float(), net.layout, net.stats, k, (size, size), net.render.projection)
                uv = project_landmarks(net.render, net.render.vertices(p.alpha_id, p.alpha_exp), p.pose, p.translation, k)
                uv_mean = project_landmarks(net.render, mean_verts, p.pose, p.translation, k)
                got = {"landmark_nme51": landmark_nme(uv, ref, points=INNER_51),
                       "landmark_nme68": landmark_nme(uv, ref),
                       "mean_face_pred_pose_nme51": landmark_nme(uv_mean, ref, points=INNER_51)}
                d = per_it.setdefault(it, {})
                for name, v in got.items():
                    d.setdefault(name, []).extend(v.tolist())
            scored.update({"landmark_nme51": uv, "landmark_nme68": uv, "mean_face_pred_pose_nme51": uv_mean})
            for name, pred in scored.items():  # the last iteration, against the hand-placed points
                annotated.setdefault(name, []).extend(
                    landmark_nme(pred, hand, points=None if name.endswith("68") else INNER_51).tolist())
            last = per_it[len(ests)]
            for j, f in enumerate(chunk):
                i = start + j
                rows.append({"photo": str(f.path), "face": f.name,
                             **{name: float(last[name][i]) for name in last},
                             **{f"landmark_head_{name}": float(v[i]) for name, v in head_nme.items()},
                             **({f"annotated_{name}": float(v[i]) for name, v in annotated.items()}
                                if math.isfinite(annotated["landmark_nme51"][i]) else {})})
    finally:
        net.train(was)
    iterations = []
    for it in sorted(per_it):
        s51, s68, sref = (_stats(per_it[it][n]) for n in ("landmark_nme51", "landmark_nme68", "mean_face_pred_pose_nme51"))
        iterations.append({"iteration": it, "landmark_nme51_median": s51["median"], "landmark_nme51_mean": s51["mean"],
                           "landmark_nme68_median": s68["median"], "landmark_nme68_mean": s68["mean"],
                           "mean_face_pred_pose_nme51_median": sref["median"]})
    last = iterations[-1] if iterations else {}
    return {
        "n_photos": len(run.used), "n_faces": len(rows), "fit_landmarks": fit,
        **{k: last.get(k) for k in ("landmark_nme51_median", "landmark_nme51_mean", "landmark_nme68_median",
                                     "landmark_nme68_mean")},
        "iterations": iterations,
        "baselines": {"mean_face_pred_pose": {"landmark_nme51_median": last.get("mean_face_pred_pose_nme51_median")}},
        **({"landmark_head": {f"{name}_median": _stats(v)["median"] for name, v in head_nme.items()}} if head_nme else {}),
        **({"annotated": _annotated_report(annotated, ann_skipped)}
           if any(math.isfinite(v) for v in annotated.get("landmark_nme51", [])) or ann_skipped else {}),
        "per_photo": rows, "skipped": skipped, "summary": run.summary(),
    }


def _annotations(faces, photos) -> tuple[list[np.ndarray], list[dict[str, str]]]:
    """Per face of ``faces`` (those with detector landmarks), the hand-placed points of its photo in
    crop pixels (all NaN when none), each photo's points given to the face whose detector box holds
    their centre (of several, the one whose detector landmarks are nearest to them); and the
    annotations of ``photos`` (every photo with a face) that could not be used, with their reason."""
    from .photos import ANNOTATION_SUFFIX, PhotoError, photo_annotation

    out = [np.full((68, 2), np.nan, np.float32) for _ in faces]
    skipped = []
    for path in photos:
        try:
            points = photo_annotation(path)
        except PhotoError as e:
            skipped.append({"photo": str(path), "reason": str(e)})
            continue
        if points is None:
            continue
        pts = Path(path).with_suffix(ANNOTATION_SUFFIX)
        idx = [i for i, f in enumerate(faces) if f.path == path]
        if not idx:
            skipped.append({"photo": str(path), "reason": f"{pts}: no face of the photo has detector landmarks"})
            continue
        cx, cy = points.mean(0)
        hits = [i for i in idx if faces[i].box[0] <= cx <= faces[i].box[2] and faces[i].box[1] <= cy <= faces[i].box[3]]
        if not hits:
            skipped.append({"photo": str(path), "reason": f"{pts}: its points lie on no detected face (their centre "
                                                          "is outside every detector box)"})
            continue
        best = min(hits, key=lambda i: float(np.linalg.norm(faces[i].landmarks - points, axis=1).mean()))
        out[best] = faces[best].crop.map_points(points, faces[best].size).astype(np.float32)
    return out, skipped


def _annotated_report(annotated: dict[str, list[float]], skipped: list[dict[str, str]]) -> dict[str, Any]:
    stats = {name: _stats(v) for name, v in annotated.items()}
    n = sum(math.isfinite(v) for v in annotated.get("landmark_nme51", []))
    out: dict[str, Any] = {"n_faces": n}
    for name in ("landmark_nme51", "detector_nme51"):
        st = stats.get(name, {"median": None, "mean": None})
        out[f"{name}_median"], out[f"{name}_mean"] = st["median"], st["mean"]
    for name in ("landmark_nme68", "mean_face_pred_pose_nme51", "landmark_head_nme51"):
        if name in stats:
            out[f"{name}_median"] = stats[name]["median"]
    out["skipped"] = skipped
    return out


def evaluate_checkpoint(config: EvaluateConfig, model=None, detector=None, bars: Bars | None = None) -> dict[str, Any]:
    """``train-cli evaluate``: the report of a checkpoint (``config.checkpoint``, default the shipped
    one) on ``config.data`` (:func:`train.metrics.metrics_report` keys at the top level) and / or
    ``config.photos`` (under ``"photos"``: :func:`evaluate_photos`); with ``config.fine`` the detail
    metrics of that FineNet on ``config.data`` under ``"fine"`` (:func:`train.fine_task.evaluate_fine`). ``model`` overrides the
    morphable model, ``detector`` the face detector (tests); ``bars`` makes the progress bars of
    the shards and the photos."""
    device = resolve_device(config.device)
    task, ck = load_task(config.checkpoint, model, config.model, device, config.iters, config.flip_test)
    path = config.checkpoint if config.checkpoint is not None else str(shipped_checkpoint())
    size = int(ck["config"]["size"])
    report: dict[str, Any] = {"checkpoint": str(Path(path)), "step": int(ck["step"])}
    if config.data:
        flat = evaluate_shards(task, config.data, size, config.samples, config.batch_size, config.workers,
                               amp=bool(ck["config"].get("amp", False)), bars=bars)
        report.update({"data": str(config.data), **metrics_report(flat)})
    if config.photos:
        report["photos"] = evaluate_photos(task, config.photos, size, config.batch_size, config.cache_dir, detector,
                                           progress=None if bars is None else bars("photos", None),
                                           fit_landmarks=config.fit_landmarks)
    if config.fine:
        from .fine_task import evaluate_fine

        report["fine"] = evaluate_fine(config, task.morph_model, task.model, device, coarse_size=size)
    return report
