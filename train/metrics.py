"""Validation metrics: vertex RMSE (mm), depth error (% of the face's depth range), landmark NME.

Plain per-sample functions on tensors first; :func:`coarse_metrics` combines them for
CoarseNet's estimates at every iteration (keys ``"<metric>/it<k>"``), so a run can compare
iteration 1 with iteration K.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from synth import camera

from . import depth_render
from .coarse_net import IterativeCoarseNet
from .params import MIN_DEPTH_MM, decode_params

__all__ = ["vertex_rmse", "DepthError", "depth_error", "landmark_nme", "coarse_metrics", "IBUG_OUTER_EYE_CORNERS"]

IBUG_OUTER_EYE_CORNERS = (36, 45)  # 0-based iBUG 300-W indices (right eye outer, left eye outer)


def vertex_rmse(pred: torch.Tensor, gt: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample RMS vertex distance ``(B,)`` between ``pred`` and ``gt`` ``(B, N, 3)`` (mm),
    over the vertices where ``region (N,)`` is True (all when None). No alignment."""
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"pred and gt must both be (B, N, 3), got {tuple(pred.shape)} and {tuple(gt.shape)}")
    d2 = ((pred - gt) ** 2).sum(-1)  # (B, N)
    if region is not None:
        d2 = d2[:, region]
    return d2.mean(1).sqrt()


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


def landmark_nme(pred: torch.Tensor, gt: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample 2D landmark NME ``(B,)``: mean over visible landmarks of the pixel distance,
    divided by the ground-truth outer-eye-corner distance (300-W "inter-ocular" normalisation)."""
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[1:] != (68, 2):
        raise ValueError(f"pred and gt must both be (B, 68, 2), got {tuple(pred.shape)} and {tuple(gt.shape)}")
    d = (pred - gt).norm(dim=-1)  # (B, 68)
    a, c = IBUG_OUTER_EYE_CORNERS
    iod = (gt[:, a] - gt[:, c]).norm(dim=-1).clamp_min(1e-6)  # (B,)
    if visible is None:
        visible = torch.ones_like(d, dtype=torch.bool)
    vis = visible.bool().float()
    return (d * vis).sum(1) / vis.sum(1).clamp_min(1.0) / iod


@torch.no_grad()
def coarse_metrics(net: IterativeCoarseNet, estimates: list[torch.Tensor], batch: dict[str, Any],
                   region: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Per-sample metrics of CoarseNet estimates at every iteration: ``vertex_rmse_mm/it<k>``,
    ``depth_err_mean_pct/it<k>``, ``depth_err_median_pct/it<k>``, ``depth_coverage/it<k>``,
    ``landmark_nme/it<k>`` (when the model has landmarks), each ``(B,)``.

    ``net`` is the (unwrapped) network that made the estimates: its layout, statistics and
    feedback renderer decode and render them; ``region (N,)`` bool restricts the vertex RMSE (the
    morphable model's ``face_region``; all vertices when None) and the depth metrics to the
    ground-truth pixels on triangles of that region (not the head, neck, ears or mouth interior of
    the built-in model v3). The ground-truth depth is rendered from the sample's full ground-truth
    parameters with the same rasterizer and intrinsics (so both maps share resolution and mesh).
    """
    render = net.render
    if region is not None:
        region = torch.tensor(np.asarray(region), device=estimates[0].device)
    k = batch["intrinsics"].float()
    size = tuple(batch["image"].shape[-2:])
    with torch.autocast(device_type=k.device.type, enabled=False):
        v_gt = render.vertices(batch["alpha_id"], batch["alpha_exp"])  # (B, N, 3)
        cam_gt = camera.to_camera(v_gt, camera.rotation_matrix(batch["pose"].float()), batch["translation"].float())
        fr_gt = depth_render.rasterize(cam_gt, render.triangles, k, size, projection=render.projection)
        gt_mask = fr_gt.mask
        if region is not None:
            face_tri = region[render.triangles.long()].all(dim=1)  # (T,) triangles of the inner face
            gt_mask = gt_mask & face_tri[fr_gt.tri_id.clamp_min(0)]
        out: dict[str, torch.Tensor] = {}
        has_lm = render.landmarks.numel() == 68 and "landmarks" in batch
        for it, est in enumerate(estimates, start=1):
            p = decode_params(est.float(), net.layout, net.stats, k, size, render.projection)
            v = render.vertices(p.alpha_id, p.alpha_exp)
            out[f"vertex_rmse_mm/it{it}"] = vertex_rmse(v, v_gt, region)
            cam = camera.to_camera(v, camera.rotation_matrix(p.pose), p.translation)  # (B, N, 3)
            fr_p = depth_render.rasterize(cam, render.triangles, k, size, projection=render.projection)
            de = depth_error(fr_p.depth, fr_gt.depth, gt_mask, fr_p.mask)
            out[f"depth_err_mean_pct/it{it}"] = de.mean_pct
            out[f"depth_err_median_pct/it{it}"] = de.median_pct
            out[f"depth_coverage/it{it}"] = de.coverage
            if has_lm:
                uv = camera.project(cam[:, render.landmarks], k, render.projection, min_depth=MIN_DEPTH_MM)[0]
                vis = batch.get("landmarks_visible")
                out[f"landmark_nme/it{it}"] = landmark_nme(uv, batch["landmarks"].float(), vis)
    return out
