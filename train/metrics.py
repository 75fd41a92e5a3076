"""Validation metrics of CoarseNet, and the reference points printed beside them.

Plain per-sample functions on tensors first:

* :func:`umeyama` — the least-squares similarity (scale, rotation, translation) taking one point
  set onto another (Umeyama 1991), as a :class:`Similarity`;
* :func:`shape_error_aligned` — mean per-vertex distance (mm) after that alignment, on the inner
  face; :func:`view_depth_range` — the ground truth's extent along the camera's viewing axis,
  which turns it into a percentage;
* :func:`depth_error` — rendered depth maps compared pixel by pixel (median offset removed), in %
  of the ground truth's depth range;
* :func:`landmark_nme` — 2D landmark error over the outer-eye-corner distance, on any subset of
  the 68 iBUG points (all 68, the 51 inner points :data:`INNER_51`);
* :func:`vertex_rmse` — model-space vertex RMS distance, no alignment.

Then :func:`coarse_metrics` combines them for CoarseNet's estimate after every iteration (keys
``"<metric>/it<k>"``) and for two estimates that need no network (the reference points): the
mean face with the *true* pose and camera (``mean_face_true_pose/<metric>``), and the mean face
with the pose and camera the network predicted at iteration k (``mean_face_pred_pose/<metric>/it<k>``).
A metric that the mean face matches says nothing about shape. :func:`metrics_report` arranges the
flat, sample-averaged dict as ``train-cli evaluate`` writes it; :func:`metrics_table` prints it.
Every definition is in ``docs/training.md`` ("Metrics").
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import numpy as np
import torch

from synth import camera

from . import depth_render
from .coarse_net import IterativeCoarseNet
from .params import MIN_DEPTH_MM, decode_params

__all__ = [
    "IBUG_OUTER_EYE_CORNERS",
    "INNER_51",
    "Similarity",
    "umeyama",
    "landmark_head_metrics",
    "shape_error_aligned",
    "view_depth_range",
    "vertex_rmse",
    "DepthError",
    "depth_error",
    "landmark_nme",
    "project_landmarks",
    "region_pixels",
    "coarse_metrics",
    "HEADLINE",
    "BASELINES",
    "metrics_report",
    "metrics_table",
    "masked_gaussian_blur",
    "high_pass",
    "detail_recovered",
    "detail_energies",
    "detail_share",
    "detail_depth_errors",
]

IBUG_OUTER_EYE_CORNERS = (36, 45)  # 0-based iBUG 300-W indices (right eye outer, left eye outer)
INNER_51 = tuple(range(17, 68))
"""The 51 inner iBUG points (eyebrows, nose, eyes, mouth: 17-67, 0-based), without the jaw line
(0-16), whose position along the face outline is ill-defined."""


# ---------------------------------------------------------------------------- alignment
@dataclasses.dataclass
class Similarity:
    """A batch of similarity transforms ``p -> scale * rotation @ p + translation``."""

    scale: torch.Tensor
    """(B,)"""
    rotation: torch.Tensor
    """(B, 3, 3), proper (det +1)."""
    translation: torch.Tensor
    """(B, 3)"""

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """``(B, N, 3)`` -> ``(B, N, 3)`` in the dtype of ``points``."""
        s, r, t = (x.to(points.dtype) for x in (self.scale, self.rotation, self.translation))
        # (B, N, 3) x (B, 3, 3)^T -> (B, N, 3)
        return s[:, None, None] * torch.einsum("bij,bnj->bni", r, points) + t[:, None, :]


def umeyama(src: torch.Tensor, dst: torch.Tensor) -> Similarity:
    """The similarity ``T`` minimising ``sum_n |T(src_n) - dst_n|^2`` for ``src``, ``dst``
    ``(B, N, 3)`` (Umeyama, "Least-squares estimation of transformation parameters between two
    point patterns", PAMI 1991), computed in float64.

    With centred points ``x = src - mean(src)``, ``y = dst - mean(dst)``, the covariance
    ``C = y^T x / N = U D V^T`` (SVD): ``R = U S V^T`` with ``S = diag(1, 1, det(U V^T))`` (a
    rotation, never a reflection), ``scale = tr(D S) / (|x|^2 / N)``,
    ``t = mean(dst) - scale R mean(src)``. A degenerate ``src`` (all points equal) gets scale 0.
    """
    if src.shape != dst.shape or src.ndim != 3 or src.shape[-1] != 3 or src.shape[1] < 1:
        raise ValueError(f"src and dst must both be (B, N, 3) with N >= 1, got {tuple(src.shape)} and {tuple(dst.shape)}")
    x, y = src.double(), dst.double()
    mx, my = x.mean(1), y.mean(1)  # (B, 3)
    xc, yc = x - mx[:, None], y - my[:, None]
    cov = torch.einsum("bni,bnj->bij", yc, xc) / x.shape[1]  # (B, N, 3) x (B, N, 3) -> (B, 3, 3)
    u, d, vt = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(u @ vt))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    s_diag = torch.ones_like(d)
    s_diag[:, 2] = sign
    rot = u @ torch.diag_embed(s_diag) @ vt  # (B, 3, 3)
    var_x = (xc ** 2).sum(-1).mean(1)  # (B,)
    scale = (d * s_diag).sum(1) / var_x.clamp_min(1e-300)
    scale = torch.where(var_x > 0, scale, torch.zeros_like(scale))
    trans = my - scale[:, None] * torch.einsum("bij,bj->bi", rot, mx)  # (B, 3)
    return Similarity(scale=scale, rotation=rot, translation=trans)


def _region(region, n: int, device) -> torch.Tensor | None:
    if region is None:
        return None
    r = region.to(device).bool() if torch.is_tensor(region) else torch.tensor(np.array(region, bool), device=device)
    if r.shape != (n,):
        raise ValueError(f"region must be ({n},) bool, got {tuple(r.shape)}")
    if not bool(r.any()):
        raise ValueError("region must select at least one vertex, got none")
    return r


def shape_error_aligned(pred: torch.Tensor, gt: torch.Tensor, region=None) -> tuple[torch.Tensor, Similarity]:
    """Per-sample shape error ``(B,)`` (the unit of the vertices, mm) and the alignment used.

    ``pred`` is aligned to ``gt`` (both ``(B, N, 3)``, in corresponding vertex order) by the
    similarity :func:`umeyama` fitted on the vertices where ``region (N,)`` is True (all when
    None); the error is the mean Euclidean distance between aligned predicted and ground-truth
    vertices over the same region. Invariant to any similarity of ``pred``: it measures shape
    only, not pose, position or size."""
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"pred and gt must both be (B, N, 3), got {tuple(pred.shape)} and {tuple(gt.shape)}")
    r = _region(region, pred.shape[1], pred.device)
    p, g = (pred, gt) if r is None else (pred[:, r], gt[:, r])
    sim = umeyama(p, g)
    err = (sim.apply(p.double()) - g.double()).norm(dim=-1).mean(1)
    return err.to(pred.dtype), sim


def view_depth_range(gt_cam: torch.Tensor, region=None) -> torch.Tensor:
    """Extent ``(B,)`` of the ground-truth vertices ``gt_cam (B, N, 3)`` (camera frame) along the
    camera's viewing axis (``max z - min z``) over ``region (N,)`` (all when None): the depth
    range that turns :func:`shape_error_aligned` into a percentage."""
    if gt_cam.ndim != 3 or gt_cam.shape[-1] != 3:
        raise ValueError(f"gt_cam must be (B, N, 3), got {tuple(gt_cam.shape)}")
    r = _region(region, gt_cam.shape[1], gt_cam.device)
    z = gt_cam[..., 2] if r is None else gt_cam[:, r, 2]
    return z.max(1).values - z.min(1).values


def vertex_rmse(pred: torch.Tensor, gt: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample RMS vertex distance ``(B,)`` between ``pred`` and ``gt`` ``(B, N, 3)`` (mm),
    over the vertices where ``region (N,)`` is True (all when None). No alignment."""
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"pred and gt must both be (B, N, 3), got {tuple(pred.shape)} and {tuple(gt.shape)}")
    d2 = ((pred - gt) ** 2).sum(-1)  # (B, N)
    if region is not None:
        d2 = d2[:, region]
    return d2.mean(1).sqrt()


# ---------------------------------------------------------------------------- depth maps
@dataclasses.dataclass
class DepthError:
    """Per-sample depth errors ``(B,)`` in % of the ground-truth face's depth range."""

    mean_pct: torch.Tensor
    """mean |d_pred - d_gt| over the compared pixels / (max - min of d_gt on its mask) * 100."""
    median_pct: torch.Tensor
    """median of the same per-pixel errors."""
    coverage: torch.Tensor
    """fraction of the GT mask also covered by the prediction (pixels compared)."""


def depth_error(pred: torch.Tensor, gt: torch.Tensor, gt_mask: torch.Tensor, pred_mask: torch.Tensor | None = None,
                align: bool = True) -> DepthError:
    """Depth error of ``pred`` vs ``gt`` depth maps ``(B, H, W)`` on ``gt_mask ∩ pred_mask``.

    ``align=True`` removes each image's median depth offset first (absolute distance to the camera
    is ambiguous with face size from one image; the metric compares the surface shape).
    Error per pixel ``|d_pred - d_gt| / range * 100`` with ``range = max - min`` of ``gt`` on
    ``gt_mask``. An image with no compared pixel gets NaN (excluded by ``nanmean`` callers).
    """
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"pred and gt must both be (B, H, W), got {tuple(pred.shape)} and {tuple(gt.shape)}")
    if gt_mask.shape != gt.shape:
        raise ValueError(f"gt_mask must be {tuple(gt.shape)}, got {tuple(gt_mask.shape)}")
    pm = (pred > 0) if pred_mask is None else pred_mask
    b = pred.shape[0]
    mean, median, cover = (torch.full((b,), float("nan"), device=pred.device) for _ in range(3))
    for i in range(b):
        g = gt_mask[i].bool()
        both = g & pm[i].bool()
        n_g = int(g.sum())
        if n_g == 0:
            continue
        cover[i] = both.sum().float() / n_g
        if not bool(both.any()):
            continue
        dg = gt[i][g]
        rng = (dg.max() - dg.min()).clamp_min(1e-6)
        diff = pred[i][both] - gt[i][both]
        if align:
            diff = diff - diff.median()
        err = diff.abs() / rng * 100.0
        mean[i], median[i] = err.mean(), err.median()
    return DepthError(mean_pct=mean, median_pct=median, coverage=cover)


def region_pixels(frags: depth_render.Fragments, triangles: torch.Tensor, region: torch.Tensor | None) -> torch.Tensor:
    """``(B, H, W)`` bool: pixels of ``frags`` covered by a triangle whose three vertices are all
    in ``region (N,)`` (the inner face); ``frags.mask`` when ``region`` is None."""
    if region is None:
        return frags.mask
    inner = region[triangles.long()].all(dim=1)  # (T,) triangles of the region
    return frags.mask & inner[frags.tri_id.clamp_min(0)]


# ---------------------------------------------------------------------------- landmarks
def landmark_nme(pred: torch.Tensor, gt: torch.Tensor, visible: torch.Tensor | None = None,
                 points: Sequence[int] | None = None) -> torch.Tensor:
    """Per-sample 2D landmark NME ``(B,)``: mean pixel distance over the landmarks ``points``
    (all 68 when None; :data:`INNER_51` for the inner 51) that are ``visible`` (all when None),
    divided by the ground-truth outer-eye-corner distance (points 36-45, the 300-W
    "inter-ocular" normalisation). A sample with no such landmark gets NaN."""
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[1:] != (68, 2):
        raise ValueError(f"pred and gt must both be (B, 68, 2), got {tuple(pred.shape)} and {tuple(gt.shape)}")
    if visible is not None and visible.shape != pred.shape[:2]:
        raise ValueError(f"visible must be {tuple(pred.shape[:2])}, got {tuple(visible.shape)}")
    d = (pred - gt).norm(dim=-1)  # (B, 68)
    a, c = IBUG_OUTER_EYE_CORNERS
    iod = (gt[:, a] - gt[:, c]).norm(dim=-1).clamp_min(1e-6)  # (B,)
    sel = torch.ones_like(d, dtype=torch.bool) if visible is None else visible.bool().clone()
    if points is not None:
        keep = torch.zeros(68, dtype=torch.bool, device=d.device)
        keep[list(points)] = True
        sel &= keep
    w = sel.to(d.dtype)
    n = w.sum(1)
    out = (d * w).sum(1) / n.clamp_min(1.0) / iod
    return torch.where(n > 0, out, torch.full_like(out, float("nan")))


def project_landmarks(render, verts: torch.Tensor, pose: torch.Tensor, translation: torch.Tensor,
                      intrinsics: torch.Tensor) -> torch.Tensor:
    """The model's 68 landmark vertices of ``verts (B, N, 3)`` (model space) posed by ``pose (B, 3)``,
    ``translation (B, 3)`` and projected with ``intrinsics (B, 3, 3)`` -> pixels ``(B, 68, 2)``
    (``render``: a :class:`train.coarse_net.FeedbackRenderer`, for the landmark indices and the
    projection)."""
    lm = camera.to_camera(verts[:, render.landmarks], camera.rotation_matrix(pose), translation)  # (B, 68, 3)
    return camera.project(lm, intrinsics.float(), render.projection, min_depth=MIN_DEPTH_MM)[0]


# ---------------------------------------------------------------------------- CoarseNet
class _Truth:
    """The ground truth of a batch, computed once: vertices, rendered depth and its inner-face
    pixels, depth range, landmarks."""

    def __init__(self, net: IterativeCoarseNet, batch: dict[str, Any], region: torch.Tensor | None):
        render = net.render
        self.render, self.region = render, region
        self.k = batch["intrinsics"].float()
        self.size = tuple(batch["image"].shape[-2:])
        self.pose, self.translation = batch["pose"].float(), batch["translation"].float()
        self.verts = render.vertices(batch["alpha_id"], batch["alpha_exp"])  # (B, N, 3) model space
        self.cam = camera.to_camera(self.verts, camera.rotation_matrix(self.pose), self.translation)  # (B, N, 3)
        frags = self.rasterize(self.cam)
        self.depth, self.mask = frags.depth, region_pixels(frags, render.triangles, region)
        self.depth_range = view_depth_range(self.cam, region)  # (B,)
        self.has_landmarks = render.landmarks.numel() == 68 and "landmarks" in batch
        if self.has_landmarks:
            self.landmarks = batch["landmarks"].float()
            self.visible = batch.get("landmarks_visible")

    def rasterize(self, cam: torch.Tensor) -> depth_render.Fragments:
        return depth_render.rasterize(cam, self.render.triangles, self.k, self.size, projection=self.render.projection)

    def posed_metrics(self, verts: torch.Tensor, pose: torch.Tensor, translation: torch.Tensor) -> dict[str, torch.Tensor]:
        """Metrics that depend on the estimate's pose and camera: offset-aligned depth error and
        landmark NME (the estimate rendered and projected with its own pose and camera)."""
        cam = camera.to_camera(verts, camera.rotation_matrix(pose), translation)  # (B, N, 3)
        fr = self.rasterize(cam)
        de = depth_error(fr.depth, self.depth, self.mask, fr.mask)
        out = {"depth_err_mean_pct": de.mean_pct, "depth_err_median_pct": de.median_pct, "depth_coverage": de.coverage}
        if self.has_landmarks:
            uv = project_landmarks(self.render, verts, pose, translation, self.k)
            out["landmark_nme68"] = landmark_nme(uv, self.landmarks, self.visible)
            out["landmark_nme51"] = landmark_nme(uv, self.landmarks, self.visible, INNER_51)
        return out

    def shape_metrics(self, verts: torch.Tensor) -> dict[str, torch.Tensor]:
        """Metrics of the shape alone: shape error after similarity alignment (mm, % of the depth
        range) and the depth error of the aligned shape rendered with the true pose and camera."""
        err, sim = shape_error_aligned(verts, self.verts, self.region)
        aligned = sim.apply(verts.double()).float()  # (B, N, 3) in the ground truth's model frame
        cam = camera.to_camera(aligned, camera.rotation_matrix(self.pose), self.translation)
        fr = self.rasterize(cam)
        de = depth_error(fr.depth, self.depth, self.mask, fr.mask)
        return {
            "shape_err_aligned_mm": err,
            "shape_err_aligned_pct": err / self.depth_range.clamp_min(1e-6) * 100.0,
            "depth_err_aligned_mean_pct": de.mean_pct,
            "depth_err_aligned_median_pct": de.median_pct,
            "vertex_rmse_mm": vertex_rmse(verts, self.verts, self.region),
        }


BASELINES = {
    "mean_face_true_pose": "mean face, true pose and camera",
    "mean_face_pred_pose": "mean face, the network's pose and camera",
}
"""Reference estimates computed beside the network's (key prefix -> description)."""


@torch.no_grad()
def coarse_metrics(net: IterativeCoarseNet, estimates: list[torch.Tensor], batch: dict[str, Any],
                   region: np.ndarray | None = None, baselines: bool = True) -> dict[str, torch.Tensor]:
    """Per-sample metrics ``(B,)`` of CoarseNet estimates at every iteration and of the reference
    estimates (module docstring).

    Keys ``<metric>/it<k>`` for the network after iteration k, with ``<metric>`` one of
    ``shape_err_aligned_mm``, ``shape_err_aligned_pct``, ``depth_err_aligned_mean_pct``,
    ``depth_err_aligned_median_pct``, ``vertex_rmse_mm``, ``depth_err_mean_pct``,
    ``depth_err_median_pct``, ``depth_coverage``, ``landmark_nme68``, ``landmark_nme51`` (the
    last two when the model has 68 landmarks); with ``baselines``, ``mean_face_true_pose/<metric>``
    (every metric) and ``mean_face_pred_pose/<metric>/it<k>`` (the pose-dependent ones: the
    others equal the true-pose baseline's).

    ``net`` is the (unwrapped) network that made the estimates: its layout, statistics and
    renderer decode and render them. ``region (N,)`` bool (the morphable model's
    ``face_region``; all vertices when None) selects the inner face: the vertices of the shape
    error and its alignment, and the pixels of the depth errors (ground-truth pixels on
    triangles of the region: not the head, neck, ears or mouth interior of the built-in model
    v3). The ground-truth depth is rendered from the sample's full
    ground-truth parameters with the same rasterizer and intrinsics as the estimates.
    """
    dev = estimates[0].device
    r = None if region is None else _region(region, net.render.pncc.shape[0], dev)  # (N,) one PNCC colour per vertex
    k = batch["intrinsics"].float()
    size = tuple(batch["image"].shape[-2:])
    with torch.autocast(device_type=dev.type, enabled=False):
        truth = _Truth(net, batch, r)
        out: dict[str, torch.Tensor] = {}
        mean_verts = None
        if baselines:
            b = k.shape[0]
            zeros = estimates[0].new_zeros
            mean_verts = net.render.vertices(zeros(b, net.layout.n_id), zeros(b, net.layout.n_exp))  # (B, N, 3)
            ref = {**truth.shape_metrics(mean_verts), **truth.posed_metrics(mean_verts, truth.pose, truth.translation)}
            out.update({f"mean_face_true_pose/{name}": v for name, v in ref.items()})
        for it, est in enumerate(estimates, start=1):
            p = decode_params(est.float(), net.layout, net.stats, k, size, net.render.projection)
            v = net.render.vertices(p.alpha_id, p.alpha_exp)
            m = {**truth.shape_metrics(v), **truth.posed_metrics(v, p.pose, p.translation)}
            out.update({f"{name}/it{it}": val for name, val in m.items()})
            if mean_verts is not None:
                ref = truth.posed_metrics(mean_verts, p.pose, p.translation)
                out.update({f"mean_face_pred_pose/{name}/it{it}": val for name, val in ref.items()})
    return out


def landmark_head_metrics(points: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Per-sample NME ``(B,)`` of the landmark head's points ``(B, 68, 2)`` (pixels) against the
    sample's landmarks, all 68 and the inner 51, on the visible ones like the estimates' NME:
    ``landmark_head_nme68``, ``landmark_head_nme51``."""
    gt, vis = batch["landmarks"].float(), batch.get("landmarks_visible")
    return {"landmark_head_nme68": landmark_nme(points.float(), gt, vis),
            "landmark_head_nme51": landmark_nme(points.float(), gt, vis, INNER_51)}


# ---------------------------------------------------------------------------- reports
HEADLINE = ("shape_err_aligned_mm", "shape_err_aligned_pct", "depth_err_mean_pct", "depth_err_median_pct",
            "depth_err_aligned_mean_pct", "depth_err_aligned_median_pct", "landmark_nme68", "landmark_nme51",
            "vertex_rmse_mm", "depth_coverage")
"""The metrics of a report, in the order they are printed."""

_IT = re.compile(r"^(?:(?P<base>[a-z_]+)/)?(?P<metric>[a-z0-9_]+)/it(?P<it>\d+)$")


def metrics_report(flat: dict[str, float]) -> dict[str, Any]:
    """Arrange the sample-averaged output of :func:`coarse_metrics` (as ``train.trainer.validate``
    returns it, with ``n`` the sample count) as ``train-cli evaluate`` writes it::

        {"n_samples": n, "iterations_run": K, <metric>: value at iteration K, ...,
         "iterations": [{"iteration": 1, <metric>: ...}, ...],
         "baselines": {"mean_face_true_pose": {<metric>: ...},
                       "mean_face_pred_pose": {<metric>: value with the pose of iteration K, ...,
                                               "iterations": [{"iteration": 1, ...}, ...]}}}
    """
    per_it: dict[int, dict[str, float]] = {}
    pred_pose: dict[int, dict[str, float]] = {}
    true_pose: dict[str, float] = {}
    head: dict[str, float] = {}
    for key, v in flat.items():
        m = _IT.match(key)
        if m and m["base"] is None:
            per_it.setdefault(int(m["it"]), {})[m["metric"]] = v
        elif m and m["base"] == "mean_face_pred_pose":
            pred_pose.setdefault(int(m["it"]), {})[m["metric"]] = v
        elif key.startswith("mean_face_true_pose/"):
            true_pose[key.split("/", 1)[1]] = v
        elif key.startswith("landmark_head_"):
            head[key[len("landmark_head_"):]] = float(v)

    def ordered(d: dict[str, float]) -> dict[str, float]:
        return {k: float(d[k]) for k in sorted(d, key=lambda k: (HEADLINE.index(k) if k in HEADLINE else len(HEADLINE), k))}

    its = sorted(per_it)
    report: dict[str, Any] = {"n_samples": int(flat.get("n", 0)), "iterations_run": its[-1] if its else 0}
    if its:
        report.update(ordered(per_it[its[-1]]))
    report["iterations"] = [{"iteration": i, **ordered(per_it[i])} for i in its]
    base: dict[str, Any] = {}
    if true_pose:
        base["mean_face_true_pose"] = ordered(true_pose)
    if pred_pose:
        last = max(pred_pose)
        base["mean_face_pred_pose"] = {**ordered(pred_pose[last]),
                                       "iterations": [{"iteration": i, **ordered(pred_pose[i])} for i in sorted(pred_pose)]}
    report["baselines"] = base
    if head:
        report["landmark_head"] = head
    return report


def metrics_table(report: dict[str, Any]) -> str:
    """A :func:`metrics_report` as a text table: one row per iteration and per reference
    estimate (the pose-dependent baseline per iteration), one column per metric."""
    cols = [c for c in HEADLINE if any(c in r for r in report["iterations"])]
    short = {"shape_err_aligned_mm": "shape mm", "shape_err_aligned_pct": "shape %", "depth_err_mean_pct": "depth %",
             "depth_err_median_pct": "depth med %", "depth_err_aligned_mean_pct": "al.depth %",
             "depth_err_aligned_median_pct": "al.depth med %", "landmark_nme68": "NME68", "landmark_nme51": "NME51",
             "vertex_rmse_mm": "vert.rmse mm", "depth_coverage": "coverage"}
    width = 38
    lines = [f"{report['n_samples']} samples".ljust(width) + "".join(f"{short[c]:>15s}" for c in cols)]

    def row(name: str, d: dict[str, Any]) -> str:
        return name.ljust(width) + "".join(f"{d[c]:15.4f}" if c in d else f"{'=':>15s}" for c in cols)

    base = report.get("baselines", {})
    if "mean_face_true_pose" in base:
        lines.append(row(BASELINES["mean_face_true_pose"], base["mean_face_true_pose"]))
    pred = {r["iteration"]: r for r in base.get("mean_face_pred_pose", {}).get("iterations", [])}
    true_ref = base.get("mean_face_true_pose", {})
    for r in report["iterations"]:
        lines.append(row(f"CoarseNet iteration {r['iteration']}", r))
        if r["iteration"] in pred:  # '=' marks a metric equal to the true-pose baseline's (shape only)
            lines.append(row(f"  mean face, pose of iteration {r['iteration']}", pred[r["iteration"]]))
    if true_ref and pred:
        lines.append("('=': same as the mean face with the true pose: shape metrics do not depend on the pose)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- fine detail (phase 2)
def masked_gaussian_blur(x: torch.Tensor, mask: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Normalised Gaussian blur of ``x (B, H, W)`` over ``mask (B, H, W)``: ``G*(x m) / G*m``
    (separable, ``sigma`` pixels, truncated at 3 sigma), so values off the mask never leak in;
    0 off the mask."""
    if x.ndim != 3 or mask.shape != x.shape:
        raise ValueError(f"x and mask must both be (B, H, W), got {tuple(x.shape)} and {tuple(mask.shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = max(1, int(np.ceil(3.0 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    m = mask.to(x.dtype)[:, None]  # (B, 1, H, W)

    def blur(a: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W), zero padding
        a = torch.nn.functional.conv2d(a, g.view(1, 1, 1, -1), padding=(0, r))
        return torch.nn.functional.conv2d(a, g.view(1, 1, -1, 1), padding=(r, 0))

    num, den = blur(x[:, None] * m), blur(m)
    out = num / den.clamp_min(1e-12)
    return (out * m)[:, 0]


def high_pass(x: torch.Tensor, mask: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """``hp(x) = x - masked_gaussian_blur(x)`` on ``mask``, 0 off it; ``(B, H, W)``."""
    return (x - masked_gaussian_blur(x, mask, sigma)) * mask.to(x.dtype)


def detail_recovered(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, sigma: float = 2.0,
                     pred_base: torch.Tensor | None = None, gt_base: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample share of the ground truth's fine detail a depth map reproduces, ``(B,)``:

        ``1 - |hp(pred - pred_base) - hp(gt - gt_base)|^2 / |hp(gt - gt_base)|^2``

    over ``mask``, with :func:`high_pass` (Gaussian ``sigma`` px, masked). With the bases — the
    coarse depth FineNet refined and the ground truth's coarse (model-only) depth — it compares
    the detail *added* with the detail that exists: 1 = all of it, 0 = none added (the coarse depth
    itself scores exactly 0), negative = invented detail. Without bases (both None) it is the plain
    ``1 - |hp(pred) - hp(gt)|^2 / |hp(gt)|^2``, in which the coarse face's own curvature dominates
    ``hp(gt)`` (on 128 px renders the coarse depth alone already scores 0.995), so prefer the
    bases. NaN for an image with an empty mask. No alignment: an offset or a smooth error has no
    high-pass content."""
    if pred.shape != gt.shape or pred.ndim != 3 or mask.shape != gt.shape:
        raise ValueError(f"pred, gt and mask must all be (B, H, W), got {tuple(pred.shape)}, {tuple(gt.shape)}, "
                         f"{tuple(mask.shape)}")
    return detail_share(*detail_energies(pred, gt, mask, sigma, pred_base, gt_base), mask)


def detail_share(error: torch.Tensor, energy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1 - error / energy`` per image ``(B,)`` from :func:`detail_energies`, NaN where ``mask``
    (``(B, H, W)``) is empty: :func:`detail_recovered` when the energies are already computed."""
    out = 1.0 - error / energy.clamp_min(1e-30)
    return torch.where(mask.bool().flatten(1).any(1), out, torch.full_like(out, float("nan")))


def detail_energies(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, sigma: float = 2.0,
                    pred_base: torch.Tensor | None = None,
                    gt_base: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(|hp(pred - pred_base) - hp(gt - gt_base)|^2, |hp(gt - gt_base)|^2)``, each ``(B,)`` mm^2
    summed over ``mask``: the error and the true detail's energy of :func:`detail_recovered`
    (same arguments). Summed over a set, ``1 - sum(error) / sum(energy)`` is the *pooled* share of
    detail recovered, which weighs each image by how much detail it has — the per-image mean is
    dominated by images with almost none (a face turned away, creases absent), where any added
    detail is a large negative ratio."""
    if (pred_base is None) != (gt_base is None):
        raise ValueError("pass both pred_base and gt_base, or neither")
    if pred_base is not None:
        for name, base in (("pred_base", pred_base), ("gt_base", gt_base)):
            if base.shape != gt.shape:
                raise ValueError(f"{name} must be {tuple(gt.shape)}, got {tuple(base.shape)}")
        pred, gt = pred - pred_base, gt - gt_base
    m = mask.bool()
    hp_p, hp_g = high_pass(pred, m, sigma), high_pass(gt, m, sigma)
    return ((hp_p - hp_g) ** 2).flatten(1).sum(1), (hp_g ** 2).flatten(1).sum(1)


def detail_depth_errors(coarse: torch.Tensor, fine: torch.Tensor, gt: torch.Tensor, gt_mask: torch.Tensor,
                        pred_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``depth_err_detail_coarse_pct`` and ``depth_err_detail_fine_pct`` ``(B,)``: :func:`depth_error`
    (mean, % of the range, median-offset aligned) of the coarse and the refined depth against the
    *detailed* ground-truth depth, on the same pixels (``gt_mask`` and ``pred_mask``, the coarse
    prediction's coverage by default)."""
    pm = (coarse > 0) if pred_mask is None else pred_mask.bool()
    return {
        "depth_err_detail_coarse_pct": depth_error(coarse, gt, gt_mask, pm).mean_pct,
        "depth_err_detail_fine_pct": depth_error(fine, gt, gt_mask, pm).mean_pct,
    }
