"""Fitting the morphable model to 2-D landmarks: pose, camera and shape from 68 image points.

The classic landmark fit of 3DMM work (e.g. Blanz & Vetter 2003; Zhu et al. 2016, 3DDFA), in
torch and batched, used by CoarseNet's landmark initialisation (:mod:`train.coarse_net`,
``--landmark-init``): the network predicts the 68 points as heatmaps, this module turns them into
an estimate the iterations then refine. No learning here, no ground truth: points in, parameters
out.

Alternation (``rounds`` times), each step a closed-form least-squares solve:

1. **pose** under scaled orthography: with the current shape's landmark vertices ``X_i`` and the
   image points ``q_i = (u_i, -v_i)`` (camera y goes up, rows go down), the affine map
   ``M`` (2 x 3) minimising ``sum w_i |M (X_i - X) - (q_i - q)|^2`` (bars: means, weighted by the
   points' weights ``w_i`` when given, else 1); its SVD gives the scale ``s`` (mean singular
   value) and the first two rows of the rotation (``U V^T``; the third row is their cross
   product, so the rotation is proper);
2. **perspective correction** (as in POSIT, DeMenthon & Davis 1995): each point is moved to where a
   weak-perspective camera at the depth ``d`` of the landmarks' centroid would see it,
   ``u' = c + (u - c) d_i / d`` with ``c`` the principal point, using the depths ``d_i`` of the
   current estimate (perspective cameras only);
3. **shape** given the pose: the points are linear in the coefficients, ``q_i = c + s P R (m_i +
   B_i alpha)``, solved as ridge regression with the prior ``alpha ~ N(0, I)`` and a landmark noise
   of ``sigma`` (a fraction of the image width): ``(A^T Wt A + (sigma W)^2 I) alpha = A^T Wt b``
   (``Wt``: the points' weights).

The translation follows from the last pose step: the model origin's image point is ``s t_xy``, and
``d = f_x / s`` is the depth of the landmarks' (weighted) centroid (weak perspective has no depth:
the centroid is put at 1 mm).
"""

from __future__ import annotations

import dataclasses

import torch

from synth import camera

from .params import CoarseParams

__all__ = ["LandmarkFit", "fit_landmarks"]


@dataclasses.dataclass
class LandmarkFit(CoarseParams):
    """Result of :func:`fit_landmarks` (a batch): the physical parameters of
    :class:`train.params.CoarseParams` (``alpha_id``, ``alpha_exp``, ``pose``, ``translation``;
    no albedo or lighting) and how well they explain the points."""

    residual_px: torch.Tensor | None = None  # (B,) RMS distance (weighted) of the fitted landmarks to the points, px


def _mean(x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x (B, L, C)`` over the points -> ``(B, 1, C)``, weighted by ``w (B, L)`` when given."""
    if w is None:
        return x.mean(1, keepdim=True)
    return (x * w[..., None]).sum(1, keepdim=True) / w.sum(1)[:, None, None]


def _pose_step(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor | None = None, w: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scaled orthographic pose of model points ``x (B, L, 3)`` seen at ``q (B, L, 2)``:
    rotation ``(B, 3, 3)``, scale ``(B,)`` (``scale`` when given: weak perspective knows it) and
    the image point ``(B, 2)`` of the model origin. ``w (B, L)``: weighted least squares (weighted
    means; a point of weight 0 plays no part)."""
    xm, qm = _mean(x, w), _mean(q, w)
    xc, qc = x - xm, q - qm  # (B, L, 3), (B, L, 2)
    xw = xc if w is None else xc * w[..., None]
    gram = xw.transpose(1, 2) @ xc  # (B, 3, 3)
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    # M^T = (Xc^T W Xc)^-1 Xc^T W Qc: (B, 3, 2); tiny ridge for a degenerate (flat) point set
    mt = torch.linalg.solve(gram + 1e-6 * gram.diagonal(dim1=1, dim2=2).mean(-1)[:, None, None] * eye,
                            xw.transpose(1, 2) @ qc)
    u, sv, vh = torch.linalg.svd(mt.transpose(1, 2), full_matrices=False)  # (B,2,2), (B,2), (B,2,3)
    # a known scale (weak perspective) only moves the origin: the rotation is the affine fit's
    # (the orthographic Procrustes problem has no closed form)
    scale = sv.mean(-1) if scale is None else scale  # (B,)
    r12 = u @ vh  # (B, 2, 3): the closest pair of orthonormal rows
    r3 = torch.linalg.cross(r12[:, 0], r12[:, 1], dim=-1)  # (B, 3)
    rot = torch.cat([r12, r3[:, None]], dim=1)  # (B, 3, 3)
    origin = qm[:, 0] - scale[:, None] * torch.einsum("bj,bij->bi", xm[:, 0], r12)
    return rot, scale, origin


def fit_landmarks(points: torch.Tensor, intrinsics: torch.Tensor, lm_mean: torch.Tensor, lm_id: torch.Tensor,
                  lm_exp: torch.Tensor, *, projection: str = "perspective", rounds: int = 4,
                  sigma: float = 0.01, weights: torch.Tensor | None = None) -> LandmarkFit:
    """Fit pose, translation and shape coefficients to 2-D landmarks (module docstring).

    ``points (B, L, 2)`` pixels (u right, v down) in images described by ``intrinsics (B, 3, 3)``;
    ``lm_mean (L, 3)`` the mean shape's landmark vertices (mm), ``lm_id (L, 3, K_id)`` and
    ``lm_exp (L, 3, K_exp)`` the bases at those vertices already multiplied by their stds (mm per
    std unit; ``K`` = the coefficients to fit, may be 0). ``sigma``: the landmark noise as a
    fraction of the image width ``2 c_x`` (the ridge weight). ``weights (B, L)`` (optional, >= 0,
    some positive in each row) weight each point in every step — pose, perspective correction,
    shape and the reported residual — so a point of weight 0 is ignored (a detector's jaw counts
    a tenth: :data:`train.coarse_net.DETECTOR_FIT_WEIGHTS`); None: all points count alike (the
    centroid is then the points' mean). Their scale matters in the shape solve only, where weights
    trade against the ridge (all weights times c act like ``sigma / sqrt(c)``). Computed in
    float64; no gradient is needed (callers detach), but the operations are differentiable.
    """
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must be (B, L, 2), got {tuple(points.shape)}")
    b, n_lm, _ = points.shape
    if lm_mean.shape != (n_lm, 3):
        raise ValueError(f"lm_mean must be ({n_lm}, 3), got {tuple(lm_mean.shape)}")
    if n_lm < 4:
        raise ValueError(f"fitting needs at least 4 landmarks, got {n_lm}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    camera.check_projection(projection)
    f64 = dict(dtype=torch.float64, device=points.device)
    pts, k = points.to(**f64), intrinsics.to(**f64)
    mean, bid, bexp = lm_mean.to(**f64), lm_id.to(**f64), lm_exp.to(**f64)
    basis = torch.cat([bid, bexp], dim=-1)  # (L, 3, K)
    n_id, n_coef = bid.shape[-1], basis.shape[-1]
    fx, fy = k[:, 0, 0], k[:, 1, 1]
    cx, cy = k[:, 0, 2], k[:, 1, 2]
    # image points in the camera's orientation: (u - cx, -(v - cy)) / (fx, fy) * fx -> one scale
    q_obs = torch.stack([pts[..., 0] - cx[:, None], -(pts[..., 1] - cy[:, None]) * (fx / fy)[:, None]], -1)
    q = q_obs.clone()  # (B, L, 2), corrected for perspective in each round
    if weights is not None and tuple(weights.shape) != (b, n_lm):
        raise ValueError(f"weights must be ({b}, {n_lm}), got {tuple(weights.shape)}")
    pw = None if weights is None else weights.to(**f64).clamp_min(0.0)  # the pose's weights (None: plain means)
    if pw is not None and not bool((pw.sum(1) > 0).all()):
        raise ValueError("weights must give each row some positive weight")
    w = torch.ones(b, n_lm, **f64) if pw is None else pw
    alpha = torch.zeros(b, n_coef, **f64)
    ridge = (sigma * 2.0 * cx) ** 2  # (B,) px^2 per std unit^2
    known = None if projection == "perspective" else fx  # weak perspective: the scale is the intrinsics'
    eye = torch.eye(n_coef, **f64)
    for _ in range(rounds):
        x = mean + torch.einsum("ljk,bk->blj", basis, alpha)  # (B, L, 3)
        rot, scale, origin = _pose_step(x, q, known, pw)
        if n_coef:
            # q_i - origin = s (R (m_i + B_i a))_xy: A (B, L*2, K), rhs (B, L*2)
            a_mat = scale[:, None, None, None] * torch.einsum("bij,ljk->blik", rot[:, :2], basis)
            rhs = q - origin[:, None] - scale[:, None, None] * torch.einsum("bij,lj->bli", rot[:, :2], mean)
            wa = a_mat * w[:, :, None, None]
            a2, wa2, r2 = a_mat.reshape(b, -1, n_coef), wa.reshape(b, -1, n_coef), rhs.reshape(b, -1)
            alpha = torch.linalg.solve(wa2.transpose(1, 2) @ a2 + ridge[:, None, None] * eye,
                                       (wa2.transpose(1, 2) @ r2[..., None]))[..., 0]
            x = mean + torch.einsum("ljk,bk->blj", basis, alpha)
            rot, scale, origin = _pose_step(x, q, known, pw)
        if projection == "perspective":
            # depth of each landmark relative to the centroid's, for the weak-perspective points
            rx = torch.einsum("bij,blj->bli", rot, x)  # (B, L, 3) rotated, model origin at 0
            d_ref = fx / scale  # depth of the centroid
            z_rel = rx[..., 2] - _mean(rx[..., 2:], pw)[..., 0]  # (B, L) camera z relative to the centroid
            ratio = (d_ref[:, None] - z_rel) / d_ref[:, None]  # d_i / d (camera looks along -z)
            q = q_obs * ratio[..., None]  # where a weak-perspective camera at depth d sees them
    # translation: the model origin's image point is s t_xy; the landmarks' centroid is at depth
    # f_x / s (perspective; weak perspective has no depth: the centroid is put at 1 mm)
    cen_z = torch.einsum("bj,bj->b", rot[:, 2], _mean(x, pw)[:, 0])  # (B,) camera z of the centroid, origin at 0
    d = fx / scale if projection == "perspective" else torch.ones_like(fx)
    t = torch.stack([origin[:, 0] / scale, origin[:, 1] / scale, -d - cen_z], -1)
    pose = camera.rotation_to_pose(rot)
    # the residual of the final estimate under the real projection
    uv, _ = camera.project(camera.to_camera(x, rot, t), k, projection, min_depth=1e-6)
    res = _mean((uv - pts).square().sum(-1, keepdim=True), pw)[:, 0, 0].sqrt()
    return LandmarkFit(alpha_id=alpha[:, :n_id], alpha_exp=alpha[:, n_id:], pose=pose, translation=t,
                       residual_px=res)
