"""Training losses.

Phase 1 (CoarseNet), :class:`CoarseLoss`, summed over the iterations ``k = 1..K``::

    L = sum_k  w_geo   * mean_v |V(a_k) - V(a*)|^2 / sigma_v^2          (model-space vertices)
             + w_proj  * mean_v |P(a_k, pose_k, t_k) - P(a*, pose*, t*)|^2 / (0.1 * size)^2
             + w_pose  * mean |pose_k - pose*|^2                        (normalised units)
             + w_cam   * mean |c_k - c*|^2                              (normalised units)
             + w_param * mean |alpha_k - alpha*|^2                      (std units, optional)
             + w_alb   * mean |beta_k - beta*|^2 + w_sh * mean |sh_k - sh*|^2  (optional heads)
    + w_lmk * mean_l |q_l - q*_l| / (0.1 * size)       (landmark head, with --landmark-init)

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
* ``q_l`` are the landmark head's 68 image points (:class:`train.coarse_net.LandmarkHead`), ``q*``
  the ground-truth landmarks of the sample (the projected landmark vertices, occluded or not);
  the mean distance (not squared: its gradient does not fade as the points get close), once per
  image, counted with iteration 1 whose pass computes the points.
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
from synth.lighting import fit_sh, sh_basis

from .depth_geometry import depth_normals, depth_to_points, erode_mask
from .params import MIN_DEPTH_MM, ParamLayout, ParamStats, decode_params, encode_params

__all__ = [
    "LossWeights", "LossOutput", "CoarseLoss", "prior_vertex_variance", "LAPLACIAN_KERNEL", "SH_LEVELS",
    "SMOOTH_ON", "FineLossWeights", "pixel_size_mm", "laplacian", "robust_penalty", "fidelity_loss",
    "smoothness_loss", "shade_sh", "shading_loss", "landmark_exclusion_mask", "shading_mask", "refine_mask",
    "FineTargets", "fine_targets", "FineLoss"
]


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
    lmk: float = 0.0

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

    def forward(self, estimates: list[torch.Tensor], batch: dict[str, Any],
                landmarks: torch.Tensor | None = None) -> LossOutput:
        """``landmarks (B, 68, 2)``: the landmark head's points (pixels), when the network has one."""
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
            for i, est in enumerate(estimates):
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
                if i == 0 and landmarks is not None:
                    it["lmk"] = (landmarks.float() - batch["landmarks"].float()).norm(dim=-1).mean() / (0.1 * width)
                it_total = sum(getattr(w, name) * val for name, val in it.items())
                total = it_total if total is None else total + it_total
                per_iter.append(it_total.detach())
                for name, val in it.items():
                    terms[name] = terms.get(name, 0.0) + val.detach()
        return LossOutput(total=total, terms=terms, per_iter=per_iter)


# ============================================================================================
# Phase 2 (FineNet): shape from shading, fidelity and smoothness
# ============================================================================================
#
#     L = w_sh * E_sh + w_fid * E_f + w_smooth * E_sm  (+ w_sup * E_sup on synthetic batches)
#
# * Depth unit. Our depth is in mm, the paper's is a height field on the pixel grid. Every depth
#   term here measures depth in *pixels*: ``z / u`` with ``u`` (mm per pixel) the footprint of one
#   pixel at the coarse face's median depth (``median(z_coarse) / f`` perspective, ``1 / s`` weak
#   perspective; :func:`pixel_size_mm`). A depth step of one pixel is then a 45-degree slope,
#   the same geometry the normals see, and the weights mean the same at every resolution,
#   distance and field of view.
# * Intensity unit. E_sh compares *linear* RGB intensities measured in 8-bit levels (the [0, 1]
#   residual times :data:`SH_LEVELS` = 255). Measured on synthetic renders (128 px, direct
#   per-pixel optimisation of the depth against a shading-consistent image): with intensities in
#   [0, 1], E_sh (~1e-5) is too small for the paper's weights to move the depth at all (detail
#   recovered ~0); in 8-bit levels, the defaults recover detail (0.44 of its high-pass energy).
# * E_sh: ``mean_{p, c} (rho(p, c) (Y(n_p) . l_c) - I(p, c))^2`` (or Huber), ``n`` the normals of
#   the refined depth (:func:`train.depth_geometry.depth_normals`),
#   ``l`` the per-image least-squares lighting (:func:`synth.lighting.fit_sh`) from the *coarse*
#   normals and the albedo estimate, a constant; averaged over the shading mask
#   (:func:`shading_mask`: eroded face, no clipped pixels, no eyes/brows/lips/nostrils).
# * E_f: ``mean_p ((z - z_coarse) / u)^2`` over the face mask.
# * E_sm: ``mean_p |Laplacian(z - z_coarse) / u|`` with the kernel [[.5, 1, .5], [1, -6, 1],
#   [.5, 1, .5]], over the pixels whose 3x3 neighbourhood is in the refinement mask: the
#   smoothness of the *added* detail. The paper's ``|Laplacian(z)|`` on the whole depth
#   (``smooth_on="depth"``) flattens the coarse face: with the default weights its L1 gradient
#   outweighs E_f everywhere the face is curved (direct optimisation on renders: depth error
#   0.02 % -> 0.11 % and detail recovered -26, against 0.045 % and +0.44 on the residual).
# * E_sup (optional, synthetic batches only): the added detail against the true detail,
#   ``mean_p (((z - z_coarse) - (z_gt - z_gt_coarse)) / u)^2`` over the refinement mask, with
#   ``z_gt_coarse`` the ground truth's model-only depth: independent of the coarse depth's own
#   errors (CoarseNet's misfit is not FineNet's to fix with a millimetre-scale residual); with the
#   ground-truth coarse depth as input it is ``((z - z_gt) / u)^2``.
#
# Every term is a per-image mean, then averaged over the images that have pixels for it.

LAPLACIAN_KERNEL = ((0.5, 1.0, 0.5), (1.0, -6.0, 1.0), (0.5, 1.0, 0.5))
"""The paper's discrete Laplacian (sums to zero; 8-neighbour, ``2 * (d2/dx2 + d2/dy2)`` on a
quadratic)."""

SH_LEVELS = 255.0
"""E_sh's intensity unit: residuals in linear [0, 1] are multiplied by this (8-bit levels)."""

SMOOTH_ON = ("residual", "depth")

# 0-based iBUG 68 indices of the regions E_sh ignores (albedo there is far from the model's:
# eyes, brows and lips; nostrils are dark holes the shading model cannot produce)
IBUG_RIGHT_EYE = tuple(range(36, 42))
IBUG_LEFT_EYE = tuple(range(42, 48))
IBUG_RIGHT_BROW = tuple(range(17, 22))
IBUG_LEFT_BROW = tuple(range(22, 27))
IBUG_OUTER_LIPS = tuple(range(48, 60))
IBUG_NOSTRILS = (31, 32, 33, 34, 35, 30)  # lower nose: wings, septum, back up to the tip


@dataclasses.dataclass(frozen=True)
class FineLossWeights:
    """Weights of the FineNet loss terms (comment above) and E_sh's robust penalty; field ``x`` is
    the job config's ``w_x`` (``--w-x``; ``huber`` is ``--sh-huber``), whose default it takes
    through :meth:`from_config` (:class:`train.config.FineConfig`: sh 1, fid 5e-2, smooth 1, the
    paper's, in the units above)."""

    sh: float
    fid: float
    smooth: float
    sup: float = 0.0
    huber: float = 0.0
    """Huber threshold of E_sh in 8-bit levels of linear intensity (0 = plain squares): residuals
    beyond it (specular highlights, hair, shadows the model lacks) count linearly."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not (np.isfinite(v) and v >= 0):
                flag = "--sh-huber" if f.name == "huber" else f"--w-{f.name}"
                raise ValueError(f"{flag} must be finite and >= 0, got {v}")

    @classmethod
    def from_config(cls, config: Any) -> "FineLossWeights":
        """The weights of a job config (fields ``w_sh``, ``w_fid``, ``w_smooth``, ``w_sup``, ``sh_huber``)."""
        return cls(sh=config.w_sh, fid=config.w_fid, smooth=config.w_smooth, sup=config.w_sup, huber=config.sh_huber)


def _check_maps(depth: torch.Tensor, **maps: torch.Tensor) -> None:
    if depth.ndim != 3:
        raise ValueError(f"depth must be (B, H, W), got {tuple(depth.shape)}")
    for name, m in maps.items():
        if m is not None and tuple(m.shape[:3]) != tuple(depth.shape):
            raise ValueError(f"{name} must start with {tuple(depth.shape)} like depth, got {tuple(m.shape)}")


def pixel_size_mm(depth: torch.Tensor, mask: torch.Tensor, intrinsics: torch.Tensor,
                  projection: str = "perspective") -> torch.Tensor:
    """Millimetres per pixel ``(B,)`` at each image's median depth on ``mask`` (no gradient).

    Perspective ``median(depth) / f`` with ``f = (fx + fy) / 2``; weak perspective ``2 / (fx + fy)``
    (fx, fy hold the scale). An image with an empty mask gets 1.
    """
    _check_maps(depth, mask=mask)
    k = intrinsics.detach().to(depth.dtype)
    if k.shape == (3, 3):
        k = k.expand(depth.shape[0], 3, 3)
    f = 0.5 * (k[:, 0, 0] + k[:, 1, 1])  # (B,)
    if projection == "weak_perspective":
        return 1.0 / f
    out = torch.ones_like(f)
    d = depth.detach()
    for i in range(d.shape[0]):
        sel = d[i][mask[i].bool()]
        if sel.numel():
            out[i] = sel.median() / f[i]
    return out


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the images that have pixels of each image's masked mean; values (B, H, W)."""
    m = mask.to(values.dtype)
    n = m.flatten(1).sum(1)  # (B,)
    per_image = (values * m).flatten(1).sum(1) / n.clamp_min(1)
    has = n > 0
    if not bool(has.any()):
        return values.sum() * 0.0  # keeps the graph; no pixel to compare
    return per_image[has].mean()


def laplacian(z: torch.Tensor) -> torch.Tensor:
    """Discrete Laplacian (:data:`LAPLACIAN_KERNEL`) of ``z (B, H, W)`` -> ``(B, H, W)``, zero on
    the one-pixel image border (where the 3x3 stencil does not fit)."""
    if z.ndim != 3:
        raise ValueError(f"z must be (B, H, W), got {tuple(z.shape)}")
    k = torch.tensor(LAPLACIAN_KERNEL, dtype=z.dtype, device=z.device)[None, None]  # (1, 1, 3, 3)
    out = torch.nn.functional.conv2d(z[:, None], k)[:, 0]  # (B, H-2, W-2)
    return torch.nn.functional.pad(out, (1, 1, 1, 1))


def robust_penalty(r: torch.Tensor, huber: float = 0.0) -> torch.Tensor:
    """``r^2`` (``huber = 0``) or the Huber function scaled to match it near 0:
    ``r^2`` for ``|r| <= huber``, ``2 huber |r| - huber^2`` beyond (continuous, C1)."""
    if huber <= 0:
        return r * r
    a = r.abs()
    return torch.where(a <= huber, r * r, 2.0 * huber * a - huber * huber)


def fidelity_loss(z: torch.Tensor, z_ref: torch.Tensor, mask: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """E_f: ``mean_p ((z - z_ref) / u)^2`` over ``mask``; ``unit (B,)`` mm per pixel (also E_sup's form)."""
    _check_maps(z, z_ref=z_ref, mask=mask)
    d = (z - z_ref) / unit[:, None, None]
    return _masked_mean(d * d, mask)


def smoothness_loss(z: torch.Tensor, mask: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """E_sm: ``mean_p |Laplacian(z) / u|`` over the pixels whose 3x3 neighbourhood is in ``mask``."""
    _check_maps(z, mask=mask)
    inner = erode_mask(mask.bool(), 1)
    return _masked_mean(laplacian(z).abs() / unit[:, None, None], inner)


def shade_sh(albedo: torch.Tensor, normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Unclipped Lambertian SH rendering ``albedo * (Y(n) @ sh)``: albedo, normals ``(B, H, W, 3)``,
    ``sh (B, 9, 3)`` -> ``(B, H, W, 3)`` (the formula of :func:`synth.lighting.shade`, batched
    lighting, no clipping so gradients never vanish)."""
    if sh.ndim != 3 or sh.shape[1:] != (9, 3):
        raise ValueError(f"sh must be (B, 9, 3), got {tuple(sh.shape)}")
    y = sh_basis(normals)  # (B, H, W, 9)
    shading = torch.einsum("bhwk,bkc->bhwc", y, sh.to(y.dtype))  # (B, H, W, 9) x (B, 9, 3) -> (B, H, W, 3)
    return albedo * shading


def shading_loss(depth: torch.Tensor, image_linear: torch.Tensor, albedo: torch.Tensor, sh: torch.Tensor,
                 mask: torch.Tensor, intrinsics: torch.Tensor, projection: str = "perspective",
                 huber: float = 0.0) -> torch.Tensor:
    """E_sh of a depth map: its normals shaded with ``albedo`` and lighting ``sh (B, 9, 3)``
    against ``image_linear (B, H, W, 3)`` (linear RGB in [0, 1]), residuals in 8-bit levels
    (:data:`SH_LEVELS`), mean over ``mask`` pixels where the normal is defined and over the 3
    channels, squared or Huber (:func:`robust_penalty`, ``huber`` in levels)."""
    _check_maps(depth, image_linear=image_linear, albedo=albedo, mask=mask)
    dn = depth_normals(depth, intrinsics, mask.bool(), projection)
    r = (shade_sh(albedo, dn.normals, sh) - image_linear) * SH_LEVELS  # (B, H, W, 3)
    return _masked_mean(robust_penalty(r, huber).mean(-1), dn.mask & mask.bool())


def _polygon_mask(poly: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Pixel centres inside polygons ``poly (B, K, 2)`` (u, v) by the even-odd rule -> (B, H, W)."""
    u = torch.arange(w, device=poly.device, dtype=poly.dtype) + 0.5
    v = torch.arange(h, device=poly.device, dtype=poly.dtype) + 0.5
    a = poly[:, :, None, None, :]  # (B, K, 1, 1, 2) edge starts
    b = poly.roll(-1, dims=1)[:, :, None, None, :]  # edge ends
    ay, by = a[..., 1], b[..., 1]
    vv = v[None, None, :, None]  # (1, 1, H, 1)
    crosses = (ay > vv) != (by > vv)  # (B, K, H, 1)
    dy = torch.where(by == ay, torch.ones_like(by), by - ay)
    x_at = a[..., 0] + (b[..., 0] - a[..., 0]) * (vv - ay) / dy  # (B, K, H, 1)
    hit = crosses & (u[None, None, None, :] < x_at)  # (B, K, H, W)
    return hit.sum(1) % 2 == 1


def _grow(poly: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Move each vertex of ``poly (B, K, 2)`` away from the centroid by ``margin (B,)`` pixels."""
    c = poly.mean(1, keepdim=True)
    d = poly - c
    n = d.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    return c + d * (1.0 + margin[:, None, None] / n)


def landmark_exclusion_mask(landmarks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Eyes, brows, lips and nostrils from 68 iBUG landmarks ``(B, 68, 2)`` (pixel u, v) as a
    ``(B, H, W)`` bool mask (True = excluded from E_sh).

    Polygons: each eye's 6 points grown by 0.08 d, the outer lips grown by 0.05 d, the lower
    nose (31-35, 30) grown by 0.03 d, each brow as a band of half-height 0.07 d around its 5 points
    grown by 0.04 d, with ``d`` the outer-eye-corner distance (36-45). An image whose landmarks
    hold a NaN (a photo where the detector gave none) excludes nothing.
    """
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (B, 68, 2), got {tuple(landmarks.shape)}")
    h, w = size
    lm = landmarks.detach().to(torch.float32)
    known = torch.isfinite(lm).flatten(1).all(1)  # (B,)
    lm = torch.where(known[:, None, None], lm, torch.zeros_like(lm))
    d = (lm[:, 36] - lm[:, 45]).norm(dim=-1)  # (B,) outer eye corners
    out = torch.zeros(lm.shape[0], h, w, dtype=torch.bool, device=lm.device)
    for idx, grow in ((IBUG_RIGHT_EYE, 0.08), (IBUG_LEFT_EYE, 0.08), (IBUG_OUTER_LIPS, 0.05), (IBUG_NOSTRILS, 0.03)):
        out |= _polygon_mask(_grow(lm[:, list(idx)], grow * d), h, w)
    for idx in (IBUG_RIGHT_BROW, IBUG_LEFT_BROW):
        pts = lm[:, list(idx)]  # (B, 5, 2)
        off = torch.zeros_like(pts)
        off[..., 1] = 0.07 * d[:, None]  # image v (down)
        band = torch.cat([pts - off, (pts + off).flip(1)], dim=1)  # (B, 10, 2): upper edge, lower edge back
        out |= _polygon_mask(_grow(band, 0.04 * d), h, w)
    return out & known[:, None, None]


def shading_mask(image_linear: torch.Tensor, mask: torch.Tensor, landmarks: torch.Tensor | None = None,
                 saturation: float = 0.98, dark: float = 0.004) -> torch.Tensor:
    """Pixels E_sh (and the lighting fit) use, ``(B, H, W)`` bool: ``mask`` (the refinement mask
    of :func:`refine_mask`) without clipped pixels (any channel >= ``saturation`` or all channels
    <= ``dark``, linear) and without the landmark regions (:func:`landmark_exclusion_mask`) when
    ``landmarks (B, 68, 2)`` are given."""
    _check_maps(mask, image_linear=image_linear)
    img = image_linear.detach()
    m = mask.bool() & ~(img >= saturation).any(-1) & ~(img <= dark).all(-1)
    if landmarks is not None:
        m &= ~landmark_exclusion_mask(landmarks, tuple(mask.shape[1:]))
    return m


def refine_mask(depth_coarse: torch.Tensor, mask: torch.Tensor, intrinsics: torch.Tensor,
                projection: str = "perspective", erode: int = 2, min_facing: float = 0.3):
    """Where FineNet refines and the losses look, ``(B, H, W)`` bool, and the coarse normals
    (:class:`train.depth_geometry.DepthNormals`): the coarse face ``mask`` eroded by ``erode`` pixels,
    where the coarse normal is defined and faces the camera, ``n . view >= min_facing`` (view =
    unit vector to the camera; 0.3 = surfaces tilted less than ~73 degrees). Nearly edge-on parts
    (the outline, the far side of the nose) are left to the coarse depth: a pixel there spans
    many millimetres of depth, which would dominate every depth term."""
    _check_maps(depth_coarse, mask=mask)
    with torch.no_grad():
        d = depth_coarse.detach()
        dn = depth_normals(d, intrinsics, mask.bool(), projection)
        if projection == "perspective":
            p = depth_to_points(d, intrinsics, projection)
            view = -p / p.norm(dim=-1, keepdim=True).clamp_min(1e-9)  # (B, H, W, 3) toward the camera
            facing = (dn.normals * view).sum(-1)
        else:
            facing = dn.normals[..., 2]
        out = erode_mask(mask.bool(), erode) & dn.mask & (facing >= min_facing)
    return out, dn


@dataclasses.dataclass
class FineTargets:
    """What the FineNet loss compares a refined depth with (all maps at the network's size)."""

    depth_coarse: torch.Tensor
    """(B, H, W) mm, the coarse depth FineNet refines (E_f's reference)."""
    mask: torch.Tensor
    """(B, H, W) bool, the refinement mask (:func:`refine_mask`): E_f, E_sm, E_sup."""
    image_linear: torch.Tensor
    """(B, H, W, 3) the photo in linear RGB."""
    albedo: torch.Tensor
    """(B, H, W, 3) linear albedo estimate."""
    sh: torch.Tensor
    """(B, 9, 3) least-squares lighting from the coarse normals (constant)."""
    sh_mask: torch.Tensor
    """(B, H, W) bool, pixels of E_sh (:func:`shading_mask`)."""
    intrinsics: torch.Tensor
    """(B, 3, 3)."""
    unit: torch.Tensor
    """(B,) mm per pixel (:func:`pixel_size_mm`)."""
    projection: str = "perspective"
    depth_gt: torch.Tensor | None = None
    """(B, H, W) mm ground-truth detailed depth (synthetic batches; E_sup), else None; 0 = none."""
    depth_gt_coarse: torch.Tensor | None = None
    """(B, H, W) mm the ground truth's coarse (model-only) depth along the same rays (E_sup)."""


def fine_targets(image_linear: torch.Tensor, depth_coarse: torch.Tensor, mask: torch.Tensor, albedo: torch.Tensor,
                 intrinsics: torch.Tensor, projection: str = "perspective", landmarks: torch.Tensor | None = None,
                 depth_gt: torch.Tensor | None = None, depth_gt_coarse: torch.Tensor | None = None, erode: int = 2,
                 min_facing: float = 0.3, refine: torch.Tensor | None = None,
                 normals: torch.Tensor | None = None) -> FineTargets:
    """Build :class:`FineTargets` from the coarse face ``mask``: the refinement mask
    (:func:`refine_mask`), the shading mask, the least-squares lighting on it from the coarse
    normals and ``albedo`` (:func:`synth.lighting.fit_sh`) and the pixel unit. ``refine (B, H, W)``
    and the coarse ``normals (B, H, W, 3)``, when the caller has them (:class:`train.fine_task.FineModel`
    computes both, its ``refine`` also restricted to the refinable region), replace the
    :func:`refine_mask` of ``mask`` (``erode`` and ``min_facing`` then unused): the losses look
    at the pixels FineNet refines. Nothing here has gradients except ``depth_coarse`` itself (for
    end-to-end training)."""
    _check_maps(depth_coarse, image_linear=image_linear, mask=mask, albedo=albedo, depth_gt=depth_gt,
                depth_gt_coarse=depth_gt_coarse, refine=refine, normals=normals)
    if (depth_gt is None) != (depth_gt_coarse is None):
        raise ValueError("pass both depth_gt and depth_gt_coarse, or neither")
    if (refine is None) != (normals is None):
        raise ValueError("pass both refine and normals, or neither")
    with torch.no_grad():
        if refine is None:
            refine, dn = refine_mask(depth_coarse, mask, intrinsics, projection, erode, min_facing)
            normals = dn.normals
        refine = refine.bool()
        sh_mask = shading_mask(image_linear, refine, landmarks)
        sh = fit_sh(image_linear.detach(), albedo.detach(), normals.detach(), sh_mask)  # (B, 9, 3)
        unit = pixel_size_mm(depth_coarse, mask.bool(), intrinsics, projection)
    return FineTargets(depth_coarse=depth_coarse, mask=refine, image_linear=image_linear, albedo=albedo, sh=sh,
                       sh_mask=sh_mask, intrinsics=intrinsics, unit=unit, projection=projection, depth_gt=depth_gt,
                       depth_gt_coarse=depth_gt_coarse)


class FineLoss(nn.Module):
    """The phase-2 loss (comment above): ``forward(depth, targets) -> LossOutput`` for a refined
    depth ``(B, H, W)`` mm; terms ``sh``, ``fid``, ``smooth`` (and ``sup`` with ground truth)."""

    def __init__(self, weights: FineLossWeights, smooth_on: str = "residual"):
        super().__init__()
        if smooth_on not in SMOOTH_ON:
            raise ValueError(f"--smooth-on must be one of {', '.join(SMOOTH_ON)}, got {smooth_on!r}")
        self.weights, self.smooth_on = weights, smooth_on

    def forward(self, depth: torch.Tensor, t: FineTargets) -> LossOutput:
        w = self.weights
        with torch.autocast(device_type=depth.device.type, enabled=False):
            z = depth.float() if depth.dtype in (torch.float16, torch.bfloat16) else depth
            terms = {
                "sh": shading_loss(z, t.image_linear, t.albedo, t.sh, t.sh_mask, t.intrinsics, t.projection, w.huber),
                "fid": fidelity_loss(z, t.depth_coarse, t.mask, t.unit),
                "smooth": smoothness_loss(z - t.depth_coarse if self.smooth_on == "residual" else z, t.mask, t.unit),
            }
            if t.depth_gt is not None and w.sup > 0:
                has = t.mask & (t.depth_gt > 0) & (t.depth_gt_coarse > 0)
                true_detail = torch.where(has, t.depth_gt - t.depth_gt_coarse, torch.zeros_like(t.depth_gt))
                terms["sup"] = fidelity_loss(z - t.depth_coarse, true_detail, has, t.unit)
            total = sum(getattr(w, k) * v for k, v in terms.items())
        return LossOutput(total=total, terms={k: v.detach() for k, v in terms.items()}, per_iter=[])
