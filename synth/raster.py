"""Numpy raster math: barycentrics of pixel centres in projected triangles, and the slow reference
z-buffer rasterizer that the GL triangle-id pass (:mod:`synth.render`) and the torch rasterizer
(:mod:`train.depth_render`) are tested against.

Conventions (docs/DESIGN.md): camera frame x right, y up, looking along -z, depth ``d = -p_z``;
pixel (row i, col j) has its centre at ``(u, v) = (j + 0.5, i + 0.5)``; projection by
:func:`synth.camera.project`. A triangle that is counter-clockwise seen from the camera (its front,
for the outward winding of docs/DESIGN.md) is clockwise in ``(u, v)`` (v points down), i.e. has a
negative signed area ``(u1 - u0) (v2 - v0) - (v1 - v0) (u2 - u0)``.

Back faces: the reference can cull them or not (``cull_backfaces``). The renderer's GL pass culls
them (a pixel whose nearest surface is the inside of the mesh, e.g. looking into the open back of
a face mask, shows what lies behind it, as in a photo), so its tests call the reference with
``cull_backfaces=True``. The torch rasterizer does not cull by default (the feedback maps of an
estimate are drawn from whatever surface is nearest; culling there would punch holes wherever an
estimate folds over), so its tests call the reference with its own setting. The default here is
no culling: the plainest z-buffer.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .camera import check_projection, project

__all__ = ["barycentrics", "RasterReference", "rasterize_reference"]


def barycentrics(points: np.ndarray, tri_uv: np.ndarray, tri_depth: np.ndarray, projection: str,
                 clip: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """3-D barycentric weights ``(..., 3)`` and depth ``(...)`` of pixel points in triangles.

    ``points (..., 2)`` are pixel positions (u, v), ``tri_uv (..., 3, 2)`` the projected corners of
    each point's triangle and ``tri_depth (..., 3)`` their depths. The screen-space weights ``l``
    (degenerate triangles: signed area clamped to 1e-12) are, for perspective, corrected to
    ``w_k = (l_k / d_k) / sum_j (l_j / d_j)`` with depth ``1 / sum_j (l_j / d_j)`` (1/z is linear in
    the image: this equals intersecting the pixel ray with the 3-D triangle); for weak perspective
    the screen weights are already the 3-D weights and depth is ``sum_k l_k d_k``.

    ``clip=True`` (a pixel the triangle owns): ``l`` is clipped to [0, 1] and renormalised first,
    as the GPU and numpy may disagree by a hair on which triangle owns an edge pixel.
    ``clip=False``: where the pixel ray meets the triangle's *plane* (weights may leave [0, 1]); a
    plane seen edge-on (``|sum_j l_j / d_j| <= 1e-9``) falls back to the clipped interpolation.
    """
    u, v = points[..., 0], points[..., 1]
    ax, ay = tri_uv[..., 0, 0], tri_uv[..., 0, 1]
    abx, aby = tri_uv[..., 1, 0] - ax, tri_uv[..., 1, 1] - ay  # b - a
    acx, acy = tri_uv[..., 2, 0] - ax, tri_uv[..., 2, 1] - ay  # c - a
    apx, apy = u - ax, v - ay  # p - a
    den = abx * acy - aby * acx  # twice the signed area
    den = np.where(np.abs(den) > 1e-12, den, 1e-12)
    l1 = (apx * acy - apy * acx) / den
    l2 = (abx * apy - aby * apx) / den
    l0 = 1.0 - l1 - l2
    d0, d1, d2 = tri_depth[..., 0], tri_depth[..., 1], tri_depth[..., 2]
    if clip:
        l0, l1, l2 = np.clip(l0, 0, 1), np.clip(l1, 0, 1), np.clip(l2, 0, 1)
        s = l0 + l1 + l2
        l0, l1, l2 = l0 / s, l1 / s, l2 / s
    if projection != "perspective":
        check_projection(projection)
        return np.stack([l0, l1, l2], axis=-1), l0 * d0 + l1 * d1 + l2 * d2
    w0, w1, w2 = l0 / d0, l1 / d1, l2 / d2
    w = w0 + w1 + w2
    if clip:
        depth = 1.0 / w
        return np.stack([w0 * depth, w1 * depth, w2 * depth], axis=-1), depth
    safe = np.abs(w) > 1e-9
    c0, c1, c2 = np.clip(l0, 0, 1), np.clip(l1, 0, 1), np.clip(l2, 0, 1)
    depth = np.where(safe, 1.0 / np.where(safe, w, 1.0), c0 * d0 + c1 * d1 + c2 * d2)
    weights = np.where(safe[..., None], np.stack([w0, w1, w2], axis=-1) * depth[..., None],
                       np.stack([c0, c1, c2], axis=-1))
    return weights, depth


@dataclasses.dataclass
class RasterReference:
    """What :func:`rasterize_reference` sees at each pixel centre of an ``(H, W)`` image."""

    tri_id: np.ndarray  # (H, W) int64 index of the visible triangle, -1 off-mesh
    bary: np.ndarray  # (H, W, 3) float64 3-D barycentrics of the pixel centre, 0 off-mesh
    depth: np.ndarray  # (H, W) float64 depth -p_z of the visible surface, 0 off-mesh

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool, pixels covered by the mesh."""
        return self.tri_id >= 0


def rasterize_reference(verts_cam: np.ndarray, triangles: np.ndarray, intrinsics: np.ndarray, size,
                        projection: str = "perspective", cull_backfaces: bool = False,
                        znear: float = 1e-6) -> RasterReference:
    """Slow, obvious float64 z-buffer rasterizer of one mesh, for tests.

    ``verts_cam (N, 3)`` camera frame, ``triangles (T, 3)``, ``intrinsics (3, 3)``, ``size`` an int
    (square) or ``(H, W)``. For each triangle in order: project the corners, skip it if degenerate
    (zero area), back-facing when ``cull_backfaces``, or (perspective) with a corner at depth
    ``<= znear``; then every pixel centre of its bounding box that lies inside or on its edges
    (the three edge functions over the signed area all >= 0) takes the triangle if it is strictly
    nearer than what the pixel holds, so ties keep the smaller triangle id.
    """
    check_projection(projection)
    h, w = (int(size), int(size)) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))
    v = np.asarray(verts_cam, np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"verts_cam must be (N, 3), got {v.shape}")
    tris = np.asarray(triangles, np.int64)
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(f"triangles must be (T, 3), got {tris.shape}")
    uv, d = project(v, np.asarray(intrinsics, np.float64), projection)  # (N, 2), (N,)
    tri_id = np.full((h, w), -1, np.int64)
    bary = np.zeros((h, w, 3))
    zbuf = np.full((h, w), np.inf)
    for t, corners in enumerate(tris):
        p, dc = uv[corners], d[corners]  # (3, 2), (3,)
        if projection == "perspective" and dc.min() <= znear:
            continue
        area2 = (p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[1, 1] - p[0, 1]) * (p[2, 0] - p[0, 0])
        if area2 == 0 or not np.isfinite(area2) or (cull_backfaces and area2 > 0):
            continue
        # pixel centres j + 0.5 inside [min u, max u] and i + 0.5 inside [min v, max v]
        j0, j1 = max(int(np.ceil(p[:, 0].min() - 0.5)), 0), min(int(np.floor(p[:, 0].max() - 0.5)), w - 1)
        i0, i1 = max(int(np.ceil(p[:, 1].min() - 0.5)), 0), min(int(np.floor(p[:, 1].max() - 0.5)), h - 1)
        if j0 > j1 or i0 > i1:
            continue
        ii, jj = np.mgrid[i0:i1 + 1, j0:j1 + 1]  # (h', w') rows, columns of the box
        x, y = jj + 0.5, ii + 0.5
        # edge function of the edge opposite each corner, over the signed area: >= 0 inside
        inside = np.ones(x.shape, bool)
        for n, m in ((1, 2), (2, 0), (0, 1)):
            e = (p[m, 0] - p[n, 0]) * (y - p[n, 1]) - (p[m, 1] - p[n, 1]) * (x - p[n, 0])
            inside &= e / area2 >= 0
        ii, jj = ii[inside], jj[inside]  # (P,) pixels of this triangle
        pts = np.stack([jj + 0.5, ii + 0.5], axis=-1)  # (P, 2)
        lam, z = barycentrics(pts, np.broadcast_to(p, (len(pts), 3, 2)), np.broadcast_to(dc, (len(pts), 3)),
                              projection, clip=False)
        nearer = z < zbuf[ii, jj]
        ii, jj = ii[nearer], jj[nearer]
        zbuf[ii, jj] = z[nearer]
        tri_id[ii, jj] = t
        bary[ii, jj] = lam[nearer]
    depth = np.where(tri_id >= 0, zbuf, 0.0)
    return RasterReference(tri_id=tri_id, bary=bary, depth=depth)
