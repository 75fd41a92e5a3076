"""Training losses.

Phase 1 (CoarseNet), :class:`CoarseLoss`, summed over the iterations ``k = 1..K``::

    L = sum_k  w_geo   * mean_v |V(a_k) - V(a*)|^2 / sigma_v^2          (model-space vertices)
             + w_proj  * mean_v |P(a_k, pose_k, t_k) - P(a*, pose*, t*)|^2 / (0.1 * size)^2
             + w_pose  * mean |pose_k - pose*|^2                        (normalised units)
             + w_cam   * mean |c_k - c*|^2                              (normalised units)
             + w_param * mean |alpha_k - alpha*|^2                      (std units, optional)
             + w_alb   * mean |beta_k - beta*|^2 + w_sh * mean |sh_k - sh*|^2  (optional heads)

* ``V(a)`` are the model-space vertices (pose removed) of the identity/expression coefficients on
  a fixed vertex subset (the face region when the model has one, at most ``max_vertices``
  evenly strided): each coefficient costs exactly what it moves the surface, in mm. The
  ground truth uses *all* the sample's coefficients, the prediction only the first ``n_id`` /
  ``n_exp`` (the truncation error is a constant offset that does not bias the gradient).
  ``sigma_v^2`` is the prior's expected squared vertex displacement (mean over the subset of
  ``sum_k std_k^2 |b_k,v|^2`` over identity and expression), so the term is ~1 for a mean-face
  guess and dimensionless.
* ``P`` projects the same vertices to pixels with each sample's known intrinsics: the image
  alignment term, which couples shape, pose and camera; normalised by 10 % of the image width.
* pose / camera: squared error of the normalised parameters (``(x - mean) / std`` of the
  training prior, see :class:`train.params.ParamStats`; the camera vector is the translation
  as the image shows it, :func:`train.params.translation_to_cam`).

All terms are computed in float32 outside autocast.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from synth import camera

from .params import MIN_DEPTH_MM, ParamLayout, ParamStats, decode_params, encode_params

__all__ = ["LossWeights", "LossOutput", "CoarseLoss", "prior_vertex_variance"]


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the CoarseNet loss terms (see the module docstring); field ``x`` is the job
    config's ``w_x`` (``--w-x``), whose default it takes through :meth:`from_config`."""

    geo: float
    proj: float
    pose: float
    cam: float
    param: float
    alb: float
    sh: float

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"--w-{f.name} must be finite and >= 0, got {v}")

    @classmethod
    def from_config(cls, config: Any) -> "LossWeights":
        """The weights of a job config (fields ``w_geo``, ``w_proj``, ...)."""
        return cls(**{f.name: getattr(config, "w_" + f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class LossOutput:
    """Total loss (scalar with grad), the detached terms summed over iterations, and the
    detached total of each iteration."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    per_iter: list[torch.Tensor]


def prior_vertex_variance(id_basis: np.ndarray, id_std: np.ndarray, exp_basis: np.ndarray, exp_std: np.ndarray) -> float:
    """Mean over vertices of the prior's expected squared displacement ``E|dv|^2`` (mm^2).

    Bases ``(3M, K)`` (rows x0, y0, z0, ...), std ``(K,)``; with coefficients ~ N(0, I),
    ``E|dv|^2 = sum_k std_k^2 (bx^2 + by^2 + bz^2)`` at each vertex; averaged over M vertices.
    """
    total = 0.0
    m = id_basis.shape[0] // 3
    for basis, std in ((id_basis, id_std), (exp_basis, exp_std)):
        if basis.shape[1]:
            # (3M, K)^2 * (K,) -> sum over K and rows -> scalar
            total += float(((basis.astype(np.float64) ** 2) * (std.astype(np.float64) ** 2)).sum())
    return total / max(m, 1)


def _pixels(vertices: torch.Tensor, pose: torch.Tensor, translation: torch.Tensor, intrinsics: torch.Tensor,
            projection: str) -> torch.Tensor:
    """Model-space ``vertices (B, M, 3)`` posed by ``pose (B, 3)``, ``translation (B, 3)`` -> pixels
    ``(B, M, 2)`` with ``intrinsics (B, 3, 3)`` (:mod:`synth.camera`)."""
    cam = camera.to_camera(vertices, camera.rotation_matrix(pose), translation)  # (B, M, 3)
    return camera.project(cam, intrinsics, projection, min_depth=MIN_DEPTH_MM)[0]


class CoarseLoss(nn.Module):
    """The phase-1 loss (module docstring). ``forward(estimates, batch) -> LossOutput`` with
    ``estimates`` the list of normalised ``(B, dim)`` vectors after each iteration."""

    def __init__(self, model, layout: ParamLayout, stats: ParamStats, weights: LossWeights,
                 projection: str = "perspective", max_vertices: int = 2000):
        super().__init__()
        self.layout, self.stats, self.weights, self.projection = layout, stats, weights, projection
        n = model.n_vertices
        idx = np.flatnonzero(model.face_region) if model.face_region is not None else np.arange(n)
        if idx.size == 0:
            idx = np.arange(n)
        idx = idx[:: max(1, int(np.ceil(idx.size / max_vertices)))]
        rows = (3 * idx[:, None] + np.arange(3)).reshape(-1)  # (3M,) rows x, y, z of each vertex
        id_b = np.asarray(model.id_basis)[rows] * np.asarray(model.id_std)  # (3M, Kid) scaled by std
        exp_b = np.asarray(model.exp_basis)[rows] * np.asarray(model.exp_std)  # (3M, Kexp)
        var = prior_vertex_variance(np.asarray(model.id_basis)[rows], np.asarray(model.id_std),
                                    np.asarray(model.exp_basis)[rows], np.asarray(model.exp_std))
        self.sigma_v2 = max(var, 1e-12)
        self.register_buffer("mean", torch.as_tensor(np.asarray(model.mean_shape)[idx].reshape(-1), dtype=torch.float32), persistent=False)
        self.register_buffer("id_basis", torch.as_tensor(id_b, dtype=torch.float32), persistent=False)
        self.register_buffer("exp_basis", torch.as_tensor(exp_b, dtype=torch.float32), persistent=False)
        self.n_sub = idx.size

    def subset_vertices(self, alpha_id: torch.Tensor, alpha_exp: torch.Tensor) -> torch.Tensor:
        """Model-space vertices ``(B, M, 3)`` of the loss subset; fewer coefficients = truncated."""
        ki, ke = alpha_id.shape[1], alpha_exp.shape[1]
        # (B, k) @ (3M, k)^T -> (B, 3M)
        flat = self.mean + alpha_id.float() @ self.id_basis[:, :ki].T
        if ke:
            flat = flat + alpha_exp.float() @ self.exp_basis[:, :ke].T
        return flat.reshape(flat.shape[0], -1, 3)  # (B, 3M) -> (B, M, 3)

    def forward(self, estimates: list[torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        w, lay = self.weights, self.layout
        dev = estimates[0].device
        with torch.autocast(device_type=dev.type, enabled=False):
            target = encode_params(batch, lay, self.stats, self.projection)  # (B, dim)
            s = lay.slices()
            v_gt = self.subset_vertices(batch["alpha_id"], batch["alpha_exp"])  # (B, M, 3)
            k = batch["intrinsics"].float()
            size = tuple(batch["image"].shape[-2:])
            width = size[1]
            uv_gt = _pixels(v_gt, batch["pose"].float(), batch["translation"].float(), k, self.projection)
            proj_norm2 = (0.1 * width) ** 2
            terms: dict[str, torch.Tensor] = {}
            per_iter, total = [], None
            for est in estimates:
                est = est.float()
                p = decode_params(est, lay, self.stats, k, size, self.projection)
                v = self.subset_vertices(p.alpha_id, p.alpha_exp)
                it = {
                    "geo": ((v - v_gt) ** 2).sum(-1).mean() / self.sigma_v2,
                    "pose": ((est[:, s["pose"]] - target[:, s["pose"]]) ** 2).mean(),
                    "cam": ((est[:, s["cam"]] - target[:, s["cam"]]) ** 2).mean(),
                }
                if w.proj:
                    uv = _pixels(v, p.pose, p.translation, k, self.projection)
                    it["proj"] = ((uv - uv_gt) ** 2).sum(-1).mean() / proj_norm2
                if w.param:
                    sl = slice(0, lay.n_id + lay.n_exp)
                    it["param"] = ((est[:, sl] - target[:, sl]) ** 2).mean()
                if lay.n_albedo:
                    it["alb"] = ((est[:, s["beta"]] - target[:, s["beta"]]) ** 2).mean()
                if lay.n_sh:
                    it["sh"] = ((est[:, s["sh"]] - target[:, s["sh"]]) ** 2).mean()
                it_total = sum(getattr(w, name) * val for name, val in it.items())
                total = it_total if total is None else total + it_total
                per_iter.append(it_total.detach())
                for name, val in it.items():
                    terms[name] = terms.get(name, 0.0) + val.detach()
        return LossOutput(total=total, terms=terms, per_iter=per_iter)
