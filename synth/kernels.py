"""Compiled (numba) per-triangle and per-pixel kernels of the CPU renderer.

Each kernel is the fast twin of a plain numpy function that stays the reference and is tested
against it (bit for bit where the arithmetic is the same, see each docstring):

* :func:`rasterize` — z-buffer triangle-id image; twin of :func:`synth.raster.rasterize_reference`
  (same edge test, same depth formula, same tie rule: the first triangle at the nearest depth);
* :func:`interpolate` — perspective-correct barycentrics of the pixel centres in their triangles and
  the interpolated per-vertex attributes; twin of :func:`synth.raster.barycentrics` (``clip=True``)
  followed by ``sum_k w_k * attrs[corner_k]`` in float32;
* :func:`plane_depth` — depth where each pixel ray meets its triangle's plane; twin of
  :func:`synth.raster.barycentrics` with ``clip=False``, clamped to within ``margin_mm`` of the
  triangle's corner depths (only runaway cuts of nearly edge-on triangles differ);
* :func:`vertex_normals` — area-weighted unit vertex normals; twin of
  :func:`morphable_model.geometry.vertex_normals` (same float32 cross products, float64 sums in
  triangle order, same normalisation).

Why: the triangles of the built-in model cover ~0.3 pixel centres each at 224 px, so the cost of a
rasterizer is its per-triangle set-up; a plain loop over triangles (projection done once per
vertex in numpy) does that ~3x faster than llvmpipe's general pipeline, and fusing the per-pixel
gathers and weighted sums avoids numpy's temporaries. Everything is float64 (float32 for the
attribute sums, like the numpy path) without fast-math, so results do not depend on the machine's
vector width. Functions compile on first use (``cache=True``: once per installation).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from morphable_model.geometry import _normalize  # the normalisation of vertex_normals (same bits)

__all__ = ["rasterize", "interpolate", "plane_depth", "vertex_normals"]

_ZNEAR = 1e-6  # perspective: triangles with a corner this close to the camera plane are skipped (reference)


@njit(cache=True)
def _rasterize(u, v, d, tris, height, width, perspective, cull_backfaces, tri_id, zbuf):
    for t in range(tris.shape[0]):
        a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
        p0x, p0y, p1x, p1y, p2x, p2y = u[a], v[a], u[b], v[b], u[c], v[c]
        d0, d1, d2 = d[a], d[b], d[c]
        if perspective and min(d0, min(d1, d2)) <= _ZNEAR:
            continue
        area2 = (p1x - p0x) * (p2y - p0y) - (p1y - p0y) * (p2x - p0x)
        if area2 == 0.0 or not np.isfinite(area2) or (cull_backfaces and area2 > 0.0):
            continue
        j0 = max(int(np.ceil(min(p0x, min(p1x, p2x)) - 0.5)), 0)
        j1 = min(int(np.floor(max(p0x, max(p1x, p2x)) - 0.5)), width - 1)
        i0 = max(int(np.ceil(min(p0y, min(p1y, p2y)) - 0.5)), 0)
        i1 = min(int(np.floor(max(p0y, max(p1y, p2y)) - 0.5)), height - 1)
        if j0 > j1 or i0 > i1:
            continue
        abx, aby = p1x - p0x, p1y - p0y
        acx, acy = p2x - p0x, p2y - p0y
        den = abx * acy - aby * acx
        if not abs(den) > 1e-12:
            den = 1e-12
        for i in range(i0, i1 + 1):
            y = i + 0.5
            for j in range(j0, j1 + 1):
                x = j + 0.5
                # edge function of the edge opposite each corner, over the signed area: >= 0 inside
                if ((p2x - p1x) * (y - p1y) - (p2y - p1y) * (x - p1x)) / area2 < 0.0:
                    continue
                if ((p0x - p2x) * (y - p2y) - (p0y - p2y) * (x - p2x)) / area2 < 0.0:
                    continue
                if ((p1x - p0x) * (y - p0y) - (p1y - p0y) * (x - p0x)) / area2 < 0.0:
                    continue
                # depth of the pixel ray on the triangle's plane (synth.raster.barycentrics, clip=False)
                apx, apy = x - p0x, y - p0y
                l1 = (apx * acy - apy * acx) / den
                l2 = (abx * apy - aby * apx) / den
                l0 = 1.0 - l1 - l2
                if perspective:
                    w = l0 / d0 + l1 / d1 + l2 / d2
                    if abs(w) > 1e-9:
                        z = 1.0 / w
                    else:
                        z = min(max(l0, 0.0), 1.0) * d0 + min(max(l1, 0.0), 1.0) * d1 + min(max(l2, 0.0), 1.0) * d2
                else:
                    z = l0 * d0 + l1 * d1 + l2 * d2
                if z < zbuf[i, j]:
                    zbuf[i, j] = z
                    tri_id[i, j] = t


def rasterize(uv: np.ndarray, depth: np.ndarray, triangles: np.ndarray, size, projection: str = "perspective",
              cull_backfaces: bool = True) -> np.ndarray:
    """Triangle-id image ``(H, W)`` int32 (-1 off-mesh) of a projected mesh.

    ``uv (N, 2)`` pixel coordinates and ``depth (N,)`` of the vertices (:func:`synth.camera.project`,
    float64), ``triangles (T, 3)``, ``size`` an int (square) or ``(H, W)``. Same rules as
    :func:`synth.raster.rasterize_reference` (pixel centres inside or on the edges, back faces culled
    when ``cull_backfaces``, strictly nearer wins so ties keep the smaller id), and the same ids.
    """
    h, w = (int(size), int(size)) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))
    uv = np.asarray(uv, np.float64)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise ValueError(f"uv must be (N, 2), got {uv.shape}")
    d = np.ascontiguousarray(depth, np.float64)
    if d.shape != (uv.shape[0],):
        raise ValueError(f"depth must be ({uv.shape[0]},), got {d.shape}")
    tris = np.ascontiguousarray(triangles, np.int64)
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(f"triangles must be (T, 3), got {tris.shape}")
    tri_id = np.full((h, w), -1, np.int32)
    zbuf = np.full((h, w), np.inf)
    _rasterize(np.ascontiguousarray(uv[:, 0]), np.ascontiguousarray(uv[:, 1]), d, tris, h, w,
               projection == "perspective", bool(cull_backfaces), tri_id, zbuf)
    return tri_id


@njit(cache=True, inline="always")
def _screen_barycentrics(pixel, width, u, v, a, b, c):
    """Unclipped screen-space barycentrics ``(l0, l1, l2)`` of the centre of flat pixel ``pixel``
    in triangle ``(a, b, c)`` (the float64 operations of :func:`synth.raster.barycentrics`)."""
    x = (pixel % width) + 0.5
    y = (pixel // width) + 0.5
    ax, ay = u[a], v[a]
    abx, aby = u[b] - ax, v[b] - ay
    acx, acy = u[c] - ax, v[c] - ay
    apx, apy = x - ax, y - ay
    den = abx * acy - aby * acx
    if not abs(den) > 1e-12:
        den = 1e-12
    l1 = (apx * acy - apy * acx) / den
    l2 = (abx * apy - aby * apx) / den
    return 1.0 - l1 - l2, l1, l2


@njit(cache=True)
def _interpolate(pix, tid, width, u, v, d, tris, attrs, perspective, out, depth):
    n_attr = attrs.shape[1]
    for p in range(pix.shape[0]):
        t = tid[p]
        a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
        l0, l1, l2 = _screen_barycentrics(pix[p], width, u, v, a, b, c)
        l0, l1, l2 = min(max(l0, 0.0), 1.0), min(max(l1, 0.0), 1.0), min(max(l2, 0.0), 1.0)
        s = l0 + l1 + l2
        l0, l1, l2 = l0 / s, l1 / s, l2 / s
        if perspective:
            w0, w1, w2 = l0 / d[a], l1 / d[b], l2 / d[c]
            z = 1.0 / (w0 + w1 + w2)
            l0, l1, l2 = w0 * z, w1 * z, w2 * z
        else:
            z = l0 * d[a] + l1 * d[b] + l2 * d[c]
        depth[p] = z
        f0, f1, f2 = np.float32(l0), np.float32(l1), np.float32(l2)
        for k in range(n_attr):
            out[p, k] = (attrs[a, k] * f0 + attrs[b, k] * f1) + attrs[c, k] * f2


def interpolate(pix: np.ndarray, tri: np.ndarray, width: int, uv: np.ndarray, depth: np.ndarray,
                triangles: np.ndarray, attrs: np.ndarray, projection: str = "perspective"):
    """``(values (P, C) float32, depth (P,) float64)`` at the pixel centres ``pix (P,)`` (flat indices
    ``i * width + j``) owned by triangles ``tri (P,)``: perspective-correct barycentrics exactly as
    :func:`synth.raster.barycentrics` with ``clip=True`` (same float64 operations), then
    ``sum_k w_k * attrs[corner_k]`` in float32 (``attrs (N, C)``), summed in corner order."""
    attrs = np.ascontiguousarray(attrs, np.float32)
    pix = np.ascontiguousarray(pix, np.int64)
    tri = np.ascontiguousarray(tri, np.int64)
    if tri.shape != pix.shape:
        raise ValueError(f"tri must be {pix.shape} like pix, got {tri.shape}")
    out = np.empty((pix.shape[0], attrs.shape[1]), np.float32)
    z = np.empty(pix.shape[0], np.float64)
    _interpolate(pix, tri, int(width), np.ascontiguousarray(uv[:, 0], np.float64),
                 np.ascontiguousarray(uv[:, 1], np.float64), np.ascontiguousarray(depth, np.float64),
                 np.ascontiguousarray(triangles, np.int64), attrs, projection == "perspective", out, z)
    return out, z


# plane_depth's default clamp: above the deepest synth.detail fold (2.4 mm x --detail-scale, up to
# ~13), far below the runaway cuts of nearly edge-on triangles (hundreds of mm)
PLANE_DEPTH_MARGIN_MM = 32.0


@njit(cache=True)
def _plane_depth(pix, tid, width, u, v, d, tris, perspective, margin, depth):
    for p in range(pix.shape[0]):
        t = tid[p]
        a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
        l0, l1, l2 = _screen_barycentrics(pix[p], width, u, v, a, b, c)
        if perspective:
            w = l0 / d[a] + l1 / d[b] + l2 / d[c]
            if abs(w) > 1e-9:
                depth[p] = 1.0 / w
            else:
                depth[p] = (min(max(l0, 0.0), 1.0) * d[a] + min(max(l1, 0.0), 1.0) * d[b]
                            + min(max(l2, 0.0), 1.0) * d[c])
        else:
            depth[p] = l0 * d[a] + l1 * d[b] + l2 * d[c]
        # a nearly edge-on triangle's plane can meet the ray hundreds of mm away: keep the cut within
        # margin of the triangle's own depth range
        lo = min(d[a], min(d[b], d[c])) - margin
        hi = max(d[a], max(d[b], d[c])) + margin
        depth[p] = min(max(depth[p], lo), hi)


def plane_depth(pix: np.ndarray, tri: np.ndarray, width: int, uv: np.ndarray, depth: np.ndarray,
                triangles: np.ndarray, projection: str = "perspective",
                margin_mm: float = PLANE_DEPTH_MARGIN_MM) -> np.ndarray:
    """Depth ``(P,)`` float64 where the ray of each pixel centre ``pix`` meets the *plane* of its
    triangle ``tri`` (weights not clipped): :func:`synth.raster.barycentrics` with ``clip=False``,
    then clamped to the triangle's corner depths +- ``margin_mm``. Used for the coarse depth, cut
    by the ray through the pixel of the detailed surface."""
    pix = np.ascontiguousarray(pix, np.int64)
    z = np.empty(pix.shape[0], np.float64)
    _plane_depth(pix, np.ascontiguousarray(tri, np.int64), int(width), np.ascontiguousarray(uv[:, 0], np.float64),
                 np.ascontiguousarray(uv[:, 1], np.float64), np.ascontiguousarray(depth, np.float64),
                 np.ascontiguousarray(triangles, np.int64), projection == "perspective", float(margin_mm), z)
    return z


@njit(cache=True)
def _vertex_normals(x, y, z, tris, acc):
    for t in range(tris.shape[0]):
        i0, i1, i2 = tris[t, 0], tris[t, 1], tris[t, 2]
        ax, ay, az = x[i1] - x[i0], y[i1] - y[i0], z[i1] - z[i0]  # v1 - v0 (input precision)
        bx, by, bz = x[i2] - x[i0], y[i2] - y[i0], z[i2] - z[i0]  # v2 - v0
        nx = np.float64(ay * bz - az * by)
        ny = np.float64(az * bx - ax * bz)
        nz = np.float64(ax * by - ay * bx)
        for i in (i0, i1, i2):
            acc[i, 0] += nx
            acc[i, 1] += ny
            acc[i, 2] += nz


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``(N, 3)`` (dtype of ``vertices (N, 3)``; zero where no
    triangle contributes): the result of :func:`morphable_model.geometry.vertex_normals` — cross
    products in the input precision, summed in float64 per vertex in triangle order, normalised."""
    v = np.asarray(vertices)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (N, 3), got {v.shape}")
    acc = np.zeros(v.shape, np.float64)
    _vertex_normals(np.ascontiguousarray(v[:, 0]), np.ascontiguousarray(v[:, 1]), np.ascontiguousarray(v[:, 2]),
                    np.ascontiguousarray(triangles, np.int64), acc)
    return _normalize(acc).astype(v.dtype, copy=False)
