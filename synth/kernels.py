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
  triangle order, same normalisation);
* :func:`vertex_normals_at` — :func:`vertex_normals` at the corners of some triangles only (the face
  pixels'), rotated into the camera frame;
* :func:`camera_project` — :func:`synth.camera.to_camera` (float32, up to BLAS rounding) then exactly
  :func:`synth.camera.project`, in one pass;
* :func:`unit_and_clip` — the normalisation and clipping of interpolated normals, albedo and PNCC;
* :func:`linear_combination` — the model evaluation ``coef @ basis + mean`` of a block of samples,
  each row summed in a fixed order (a BLAS GEMM's rounding depends on the row's position, the
  thread count and the CPU); twin of the numpy expression up to float32 rounding;
* :func:`srgb_encode_u8` — linear float32 to sRGB uint8 by the exact thresholds of
  :func:`synth.color.encode_thresholds` (the implementation of :func:`synth.color.linear_to_srgb_u8`);
* :func:`lookup_channels` — a per-channel 256-entry table applied to a uint8 image of any strides
  (:func:`synth.color.srgb_u8_to_linear_gained`: decoding, gains and clipping in one look-up);
* :func:`shade_pixels` — the renderer's per-pixel radiance ``clip(albedo * (sh_basis(n) @ sh) *
  occlusion + specular, 0, 1)`` written into the image; twin of :func:`synth.lighting.shade`,
  :func:`synth.lighting.blinn_phong` and :func:`synth.lighting.view_directions` (float64 inside,
  so it differs from the float32 numpy formula by float32 rounding only: images within one level).

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

from .camera import check_projection
from .lighting import C0, C1, C2, C3, C4  # the SH constants of synth.lighting.sh_basis

__all__ = ["rasterize", "rasterize_stable", "interpolate", "plane_depth", "vertex_normals", "vertex_normals_at",
           "camera_project", "unit_and_clip", "shade_pixels",
           "linear_combination", "srgb_encode_u8", "lookup_channels"]

_ZNEAR = 1e-6  # perspective: triangles with a corner this close to the camera plane are skipped (reference)


@njit(cache=True, inline="always")
def _ray_depth(x, y, p0x, p0y, abx, aby, acx, acy, den, d0, d1, d2, perspective):
    """Depth where the ray of pixel point ``(x, y)`` meets the plane of a triangle (corner 0 at
    ``(p0x, p0y)``, edges ``ab``, ``ac``, ``den`` their cross product, corner depths ``d0..d2``):
    the float64 operations of :func:`synth.raster.barycentrics` with ``clip=False``."""
    apx, apy = x - p0x, y - p0y
    l1 = (apx * acy - apy * acx) / den
    l2 = (abx * apy - aby * apx) / den
    l0 = 1.0 - l1 - l2
    if perspective:
        w = l0 / d0 + l1 / d1 + l2 / d2
        if abs(w) > 1e-9:
            return 1.0 / w
        return min(max(l0, 0.0), 1.0) * d0 + min(max(l1, 0.0), 1.0) * d1 + min(max(l2, 0.0), 1.0) * d2
    return l0 * d0 + l1 * d1 + l2 * d2


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
                z = _ray_depth(x, y, p0x, p0y, abx, aby, acx, acy, den, d0, d1, d2, perspective)
                if z < zbuf[i, j]:
                    zbuf[i, j] = z
                    tri_id[i, j] = t


def _mesh_args(uv, depth, triangles, size):
    """``(H, W, u, v, depth, triangles)`` for the rasterizer kernels: the image size (an int: square),
    contiguous float64 coordinates and depths, int64 triangles; ``ValueError`` naming a bad shape."""
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
    return h, w, np.ascontiguousarray(uv[:, 0]), np.ascontiguousarray(uv[:, 1]), d, tris


def rasterize(uv: np.ndarray, depth: np.ndarray, triangles: np.ndarray, size, projection: str = "perspective",
              cull_backfaces: bool = True) -> np.ndarray:
    """Triangle-id image ``(H, W)`` int32 (-1 off-mesh) of a projected mesh.

    ``uv (N, 2)`` pixel coordinates and ``depth (N,)`` of the vertices (:func:`synth.camera.project`,
    float64), ``triangles (T, 3)``, ``size`` an int (square) or ``(H, W)``. Same rules as
    :func:`synth.raster.rasterize_reference` (pixel centres inside or on the edges, back faces culled
    when ``cull_backfaces``, strictly nearer wins so ties keep the smaller id), and the same ids.
    """
    h, w, u, v, d, tris = _mesh_args(uv, depth, triangles, size)
    tri_id = np.full((h, w), -1, np.int32)
    zbuf = np.full((h, w), np.inf)
    _rasterize(u, v, d, tris, h, w, projection == "perspective", bool(cull_backfaces), tri_id, zbuf)
    return tri_id


# the tolerances of :func:`unstable_pixels` (the shard layout that recomputes the ids on read)
UNSTABLE_EPS_PX = 1e-3
UNSTABLE_EPS_MM = 1e-3


@njit(cache=True)
def _rasterize_stable(u, v, d, tris, height, width, perspective, cull_backfaces, eps, eps_z, tri_id, zbuf,
                      zwin, tolwin, lo):
    for t in range(tris.shape[0]):
        a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
        p0x, p0y, p1x, p1y, p2x, p2y = u[a], v[a], u[b], v[b], u[c], v[c]
        d0, d1, d2 = d[a], d[b], d[c]
        if perspective and min(d0, min(d1, d2)) <= _ZNEAR:
            continue  # (as _rasterize; the scenes drawn keep every corner far in front of the camera)
        area2 = (p1x - p0x) * (p2y - p0y) - (p1y - p0y) * (p2x - p0x)
        if not np.isfinite(area2):
            continue
        q0 = (p2x - p1x) ** 2 + (p2y - p1y) ** 2  # squared length of the edge opposite corner 0
        q1 = (p0x - p2x) ** 2 + (p0y - p2y) ** 2
        q2 = (p1x - p0x) ** 2 + (p1y - p0y) ** 2
        qmax = max(q0, max(q1, q2))
        if qmax == 0.0:
            continue  # three corners on one point: covers nothing, on any machine
        # a sliver (smallest altitude |area2| / longest edge below 2 eps): its orientation (culling) or
        # coverage may flip, so it is never a certain fragment
        sliver = area2 * area2 < 4.0 * eps * eps * qmax
        drawn = area2 != 0.0 and not (cull_backfaces and area2 > 0.0)  # what _rasterize draws
        if not drawn and not sliver:
            continue  # a back face on any machine
        minx, maxx = min(p0x, min(p1x, p2x)), max(p0x, max(p1x, p2x))
        miny, maxy = min(p0y, min(p1y, p2y)), max(p0y, max(p1y, p2y))
        # _rasterize's box, and the box grown by eps
        j0x = max(int(np.ceil(minx - 0.5)), 0)
        j1x = min(int(np.floor(maxx - 0.5)), width - 1)
        i0x = max(int(np.ceil(miny - 0.5)), 0)
        i1x = min(int(np.floor(maxy - 0.5)), height - 1)
        j0 = max(int(np.ceil(minx - eps - 0.5)), 0)
        j1 = min(int(np.floor(maxx + eps - 0.5)), width - 1)
        i0 = max(int(np.ceil(miny - eps - 0.5)), 0)
        i1 = min(int(np.floor(maxy + eps - 0.5)), height - 1)
        if j0 > j1 or i0 > i1:
            continue  # most triangles (~0.3 pixel centres each at 224 px): the set-up below is skipped
        abx, aby = p1x - p0x, p1y - p0y
        acx, acy = p2x - p0x, p2y - p0y
        den = abx * acy - aby * acx
        if not abs(den) > 1e-12:
            den = 1e-12
        l0e, l1e, l2e = np.sqrt(q0), np.sqrt(q1), np.sqrt(q2)
        h = abs(area2) / np.sqrt(qmax)  # the smallest altitude
        sgn = 1.0 if area2 > 0.0 else -1.0
        i0n, i1n, i2n = sgn / max(l0e, 1e-300), sgn / max(l1e, 1e-300), sgn / max(l2e, 1e-300)
        # how far a covered fragment's depth may move when the corners move by eps pixels
        dmin = min(d0, min(d1, d2))
        tol = eps_z + (max(d0, max(d1, d2)) - dmin) * min(1.0, 2.0 * eps / max(h, 1e-300))
        for i in range(i0, i1 + 1):
            y = i + 0.5
            for j in range(j0, j1 + 1):
                x = j + 0.5
                # the edge functions of _rasterize (the edge opposite each corner)
                e0 = (p2x - p1x) * (y - p1y) - (p2y - p1y) * (x - p1x)
                e1 = (p0x - p2x) * (y - p2y) - (p0y - p2y) * (x - p2x)
                e2 = (p1x - p0x) * (y - p0y) - (p1y - p0y) * (x - p0x)
                m = min(e0 * i0n, min(e1 * i1n, e2 * i2n))  # signed distance to the nearest edge, px
                if m < -eps:
                    continue  # outside by more than eps: out on any machine
                z = _ray_depth(x, y, p0x, p0y, abx, aby, acx, acy, den, d0, d1, d2, perspective)
                # the z-buffer of _rasterize, bit for bit: same box, same depth, and m >= 0 is its inside
                # test (each e_k / area2 >= 0: the sign of e_k * sgn, which scaling by 1 / length keeps)
                if drawn and m >= 0.0 and i0x <= i <= i1x and j0x <= j <= j1x and z < zbuf[i, j]:
                    zbuf[i, j] = z
                    tri_id[i, j] = t
                # stability: the nearest certain fragment against everything else within eps
                if m >= eps and not sliver and z < zwin[i, j]:
                    if zwin[i, j] < np.inf:
                        lo[i, j] = min(lo[i, j], zwin[i, j] - tolwin[i, j])
                    zwin[i, j] = z
                    tolwin[i, j] = tol
                elif m >= eps and not sliver:  # a farther certain fragment: its depth moves by tol at most
                    lo[i, j] = min(lo[i, j], z - tol)
                else:  # one that may or may not cover the pixel: z may be extrapolated (a sliver's by far), but
                    # wherever it covers, its depth lies within its corners' depths
                    lo[i, j] = min(lo[i, j], dmin - eps_z)


def rasterize_stable(uv: np.ndarray, depth: np.ndarray, triangles: np.ndarray, size, projection: str = "perspective",
                     cull_backfaces: bool = True, eps_px: float = UNSTABLE_EPS_PX,
                     eps_mm: float = UNSTABLE_EPS_MM) -> tuple[np.ndarray, np.ndarray]:
    """``(tri_id, unstable)``: :func:`rasterize`'s triangle-id image (the same ids, bit for bit) and
    the pixels ``(H, W)`` bool whose id could change if the projected corners moved by up to
    ``eps_px`` pixels (and the depths by ``eps_mm``), in one pass over the triangles.

    A pixel is stable when the nearest triangle that covers its centre by at least ``eps_px`` (and
    is no sliver thinner than ``2 eps_px``) is nearer, by more than its tolerance, than every other
    triangle that covers it by that much (less that one's tolerance) and than the nearest corner
    (less ``eps_mm``) of every triangle that comes within ``eps_px`` of it or is a sliver; a
    tolerance is ``eps_mm`` plus the triangle's depth span times ``2 eps_px`` over its smallest
    altitude (how far its depth at the pixel can move). Off-mesh pixels with no triangle within
    ``eps_px`` are stable.

    The covering margins are exact (a centre whose ``eps_px``-disc lies inside a triangle stays
    inside it); the depth tolerances are first-order: for perspective they assume the corner depths
    of a triangle differ by a small factor (faces hundreds of mm away: a few %), so the rule is for
    moves well below ``eps_px`` and ``eps_mm`` — what it is for — rather than a worst-case bound at
    ``eps_px`` itself.

    What it is for: a reader that recomputes the ids from the same parameters on another machine
    (model arrays and float rounding an ulp apart: ~1e-5 px here, 1 % of the default tolerance)
    gets the writer's id at every stable pixel, so a shard stores the ids of the unstable ones only
    (shard layout 6); a CRC of all the ids (:func:`synth.codecs.restore_ids`) turns any miss into
    an error rather than a wrong id."""
    h, w, u, v, d, tris = _mesh_args(uv, depth, triangles, size)
    if not (eps_px > 0 and eps_mm > 0):
        raise ValueError(f"eps_px and eps_mm must be > 0, got {eps_px}, {eps_mm}")
    tri_id = np.full((h, w), -1, np.int32)
    zbuf = np.full((h, w), np.inf)
    zwin = np.full((h, w), np.inf)
    tolwin = np.zeros((h, w))
    lo = np.full((h, w), np.inf)
    _rasterize_stable(u, v, d, tris, h, w, projection == "perspective", bool(cull_backfaces), float(eps_px),
                      float(eps_mm), tri_id, zbuf, zwin, tolwin, lo)
    return tri_id, (lo < np.inf) & (lo <= zwin + tolwin)


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
        col = 0
        for arr in attrs:  # the attribute arrays side by side: columns col .. col + C_i - 1
            for k in range(arr.shape[1]):
                out[p, col] = (arr[a, k] * f0 + arr[b, k] * f1) + arr[c, k] * f2
                col += 1


def interpolate(pix: np.ndarray, tri: np.ndarray, width: int, uv: np.ndarray, depth: np.ndarray,
                triangles: np.ndarray, attrs, projection: str = "perspective"):
    """``(values (P, C) float32, depth (P,) float64)`` at the pixel centres ``pix (P,)`` (flat indices
    ``i * width + j``) owned by triangles ``tri (P,)``: perspective-correct barycentrics exactly as
    :func:`synth.raster.barycentrics` with ``clip=True`` (same float64 operations), then
    ``sum_k w_k * attrs[corner_k]`` in float32, summed in corner order. ``attrs``: an ``(N, C)``
    array, or a sequence of ``(N, C_i)`` / ``(N,)`` arrays whose values come out side by side
    (``C = sum C_i``; no packed copy is made)."""
    parts = [attrs] if isinstance(attrs, np.ndarray) else list(attrs)
    parts = tuple(np.ascontiguousarray(a, np.float32).reshape(a.shape[0], -1) for a in parts)
    # one array type for the compiled loop over the tuple (a read-only input is copied)
    parts = tuple(a if a.flags.writeable else a.copy() for a in parts)
    if not parts or any(a.shape[0] != parts[0].shape[0] for a in parts):
        raise ValueError(f"attrs must be (N, C) arrays with one N, got {[a.shape for a in parts]}")
    pix = np.ascontiguousarray(pix, np.int64)
    tri = np.ascontiguousarray(tri, np.int64)
    if tri.shape != pix.shape:
        raise ValueError(f"tri must be {pix.shape} like pix, got {tri.shape}")
    out = np.empty((pix.shape[0], sum(a.shape[1] for a in parts)), np.float32)
    z = np.empty(pix.shape[0], np.float64)
    _interpolate(pix, tri, int(width), np.ascontiguousarray(uv[:, 0], np.float64),
                 np.ascontiguousarray(uv[:, 1], np.float64), np.ascontiguousarray(depth, np.float64),
                 np.ascontiguousarray(triangles, np.int64), parts, projection == "perspective", out, z)
    return out, z


@njit(cache=True)
def _unit_and_clip(values, clip_from, clip_to, clip2_from, clip2_to):
    for p in range(values.shape[0]):
        x, y, z = values[p, 0], values[p, 1], values[p, 2]
        norm = np.sqrt((x * x + y * y) + z * z)  # float32, as the rows' dtype
        norm = max(norm, np.float32(1e-12))
        values[p, 0], values[p, 1], values[p, 2] = x / norm, y / norm, z / norm
        for c in range(clip_from, clip_to):
            values[p, c] = min(max(values[p, c], np.float32(0.0)), np.float32(1.0))
        for c in range(clip2_from, clip2_to):
            values[p, c] = min(max(values[p, c], np.float32(0.0)), np.float32(1.0))


def unit_and_clip(values: np.ndarray, clip=(), clip2=()) -> None:
    """In place on interpolated values ``(P, C)`` float32: columns 0-2 scaled to unit length (``x /
    max(sqrt((x0^2 + x1^2) + x2^2), 1e-12)`` in float32), and the columns ``range(*clip)``
    and ``range(*clip2)`` clipped to [0, 1] — the normalised normals, clipped albedo and PNCC of the
    renderer's face pixels in one pass."""
    if values.dtype != np.float32 or values.ndim != 2 or not values.flags.c_contiguous:
        raise ValueError(f"values must be (P, C) C-contiguous float32, got {values.dtype} {values.shape}")
    if values.shape[1] < 3:
        raise ValueError(f"values need 3 normal columns first, got {values.shape[1]} columns")
    (a, b), (c, d) = (tuple(clip) or (0, 0)), (tuple(clip2) or (0, 0))
    if not (0 <= a <= b <= values.shape[1] and 0 <= c <= d <= values.shape[1]):
        raise ValueError(f"clip ranges must lie within the {values.shape[1]} columns, got {clip}, {clip2}")
    _unit_and_clip(values, a, b, c, d)


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
def _vertex_normals(x, y, z, tris, need, acc):
    # need: (N,) bool, the vertices asked for (a triangle with no such corner is skipped); empty: all
    some = need.shape[0] > 0
    for t in range(tris.shape[0]):
        i0, i1, i2 = tris[t, 0], tris[t, 1], tris[t, 2]
        if some and not (need[i0] or need[i1] or need[i2]):
            continue  # adds to no vertex asked for
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
    """Area-weighted unit vertex normals ``(N, 3)`` (dtype of ``vertices (N, 3)`` when float32/64, else
    float64; zero where no triangle contributes): the result of
    :func:`morphable_model.geometry.vertex_normals` — cross
    products in the input precision, summed in float64 per vertex in triangle order, normalised."""
    v = np.asarray(vertices)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (N, 3), got {v.shape}")
    acc = np.zeros(v.shape, np.float64)
    _vertex_normals(np.ascontiguousarray(v[:, 0]), np.ascontiguousarray(v[:, 1]), np.ascontiguousarray(v[:, 2]),
                    np.ascontiguousarray(triangles, np.int64), np.zeros(0, np.bool_), acc)
    out = np.empty(v.shape, v.dtype if v.dtype in (np.float32, np.float64) else np.float64)
    _normalize_rows(acc, out)
    return out


@njit(cache=True)
def _camera_project(v, normals, disp, rot, t, fx, fy, cx, cy, perspective, drawn, out, uv, depth):
    displace = disp.shape[0] > 0
    for i in range(v.shape[0]):
        x, y, z = v[i, 0], v[i, 1], v[i, 2]
        if displace:  # synth.detail.apply_detail: v + disp * n, in float32
            x, y, z = x + disp[i] * normals[i, 0], y + disp[i] * normals[i, 1], z + disp[i] * normals[i, 2]
            drawn[i, 0], drawn[i, 1], drawn[i, 2] = x, y, z
        for k in range(3):  # R v + t in float32, summed in column order
            out[i, k] = ((rot[k, 0] * x + rot[k, 1] * y) + rot[k, 2] * z) + t[k]
        px, py, d = np.float64(out[i, 0]), np.float64(out[i, 1]), -np.float64(out[i, 2])
        depth[i] = d
        if perspective:  # synth.camera.project's float64 operations, in its order
            uv[0, i] = cx + fx * px / d
            uv[1, i] = cy - fy * py / d
        else:
            uv[0, i] = cx + fx * px
            uv[1, i] = cy - fy * py


def camera_project(vertices: np.ndarray, rotation: np.ndarray, translation: np.ndarray, intrinsics: np.ndarray,
                   projection: str = "perspective", displace: tuple[np.ndarray, np.ndarray] | None = None):
    """``(verts_cam (N, 3) float32, uv (N, 2) float64, depth (N,) float64)`` of model-frame
    ``vertices (N, 3)`` float32: :func:`synth.camera.to_camera` (``R v + t`` in float32, each sum in
    column order, so it may differ from numpy's BLAS product by float32 rounding) and then exactly
    :func:`synth.camera.project` of ``verts_cam`` in float64, in one pass (no temporaries).

    ``displace = (normals (N, 3), disp (N,))`` float32: the vertices are first moved along the
    normals, exactly :func:`synth.detail.apply_detail`, and the moved model-frame vertices are
    returned first: ``(drawn, verts_cam, uv, depth)``."""
    v = np.asarray(vertices)
    if v.ndim != 2 or v.shape[1] != 3 or v.dtype != np.float32:
        raise ValueError(f"vertices must be (N, 3) float32, got {v.dtype} {v.shape}")
    if displace is None:
        normals, disp, drawn = np.zeros((1, 3), np.float32), np.zeros(0, np.float32), np.zeros((1, 3), np.float32)
    else:
        normals, disp = np.asarray(displace[0]), np.asarray(displace[1])
        if normals.shape != v.shape or disp.shape != v.shape[:1] or normals.dtype != np.float32 or disp.dtype != np.float32:
            raise ValueError(f"displace must be float32 normals {v.shape} and disp ({v.shape[0]},), got "
                             f"{normals.dtype} {normals.shape}, {disp.dtype} {disp.shape}")
        drawn = np.empty(v.shape, np.float32)
    rot = np.ascontiguousarray(rotation, np.float32)
    t = np.ascontiguousarray(translation, np.float32).reshape(-1)
    k = np.asarray(intrinsics, np.float64)
    if rot.shape != (3, 3) or t.shape != (3,) or k.shape != (3, 3):
        raise ValueError(f"rotation, translation, intrinsics must be (3, 3), (3,), (3, 3), got "
                         f"{rot.shape}, {t.shape}, {k.shape}")
    check_projection(projection)
    out = np.empty(v.shape, np.float32)
    uv = np.empty((2, v.shape[0]), np.float64)  # returned as its (N, 2) transpose: u and v each contiguous,
    # so the rasterizer and the interpolation take them without a copy
    depth = np.empty(v.shape[0], np.float64)
    _camera_project(v, normals, disp, rot, t, float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]),
                    projection == "perspective", drawn, out, uv, depth)
    return (out, uv.T, depth) if displace is None else (drawn, out, uv.T, depth)


@njit(cache=True)
def _mark_corners(tris, tid, need):
    last = -1
    for p in range(tid.shape[0]):
        t = tid[p]
        if t == last:
            continue  # neighbouring pixels of one triangle
        last = t
        need[tris[t, 0]] = True
        need[tris[t, 1]] = True
        need[tris[t, 2]] = True


@njit(cache=True)
def _vertex_normals_at(x, y, z, tris, rot, need, acc, out, pack):
    _vertex_normals(x, y, z, tris, need, acc)  # the sums of the vertices asked for, bit for bit
    for i in range(need.shape[0]):
        if not need[i]:
            continue
        nx, ny, nz = _unit(acc[i, 0], acc[i, 1], acc[i, 2])  # as _normalize_rows
        nx32, ny32, nz32 = np.float32(nx), np.float32(ny), np.float32(nz)
        for k in range(3):  # R n in float32, summed in column order
            out[i, k] = (rot[k, 0] * nx32 + rot[k, 1] * ny32) + rot[k, 2] * nz32
        col = 3
        for arr in pack:  # the packed attributes of this vertex, side by side
            for k in range(arr.shape[1]):
                out[i, col] = arr[i, k]
                col += 1


def vertex_normals_at(vertices: np.ndarray, triangles: np.ndarray, rotation: np.ndarray | None = None,
                      triangle_ids: np.ndarray | None = None, pack=()) -> np.ndarray:
    """Unit vertex normals of ``vertices (N, 3)`` float32 rotated by ``rotation (3, 3)`` (``R n`` in
    float32; None: not rotated), at the corners of the triangles ``triangle_ids`` only (every vertex
    when None), in columns 0-2 of an ``(N, C)`` float32 array whose other rows are 0.

    ``pack``: ``(N, C_i)`` / ``(N,)`` arrays copied beside the normals at the same rows (columns 3
    on, in order; ``C`` = 3 + their columns rounded up to a multiple of 4, so that a vertex's row
    fills half a cache line and an interpolation gathers one line per corner instead of one per
    array).

    Before the rotation the normals are :func:`vertex_normals`'s bit for bit: a vertex's sum runs
    over all its triangles in triangle order, and the triangles with no corner asked for are
    skipped (a renderer that interpolates normals at the face pixels alone skips ~60 % of the
    built-in model's triangles at 224 px)."""
    v = np.asarray(vertices)
    if v.ndim != 2 or v.shape[1] != 3 or v.dtype != np.float32:
        raise ValueError(f"vertices must be (N, 3) float32, got {v.dtype} {v.shape}")
    tris = np.ascontiguousarray(triangles, np.int64)
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise ValueError(f"triangles must be (T, 3), got {tris.shape}")
    rot = np.eye(3, dtype=np.float32) if rotation is None else np.ascontiguousarray(rotation, np.float32)
    if rot.shape != (3, 3):
        raise ValueError(f"rotation must be (3, 3), got {rot.shape}")
    parts = tuple(np.ascontiguousarray(a, np.float32).reshape(np.shape(a)[0], -1) for a in pack)
    # one array type for the compiled loop over the tuple (a read-only input is copied)
    parts = tuple(a if a.flags.writeable else a.copy() for a in parts)
    if any(a.shape[0] != v.shape[0] for a in parts):
        raise ValueError(f"pack must be ({v.shape[0]}, C) arrays, got {[a.shape for a in parts]}")
    if triangle_ids is None:
        need = np.ones(v.shape[0], np.bool_)
    else:
        tid = np.ascontiguousarray(triangle_ids, np.int64).reshape(-1)
        if tid.size and (tid.min() < 0 or tid.max() >= tris.shape[0]):
            raise ValueError(f"triangle_ids must index 0..{tris.shape[0] - 1}, got {tid.min()}..{tid.max()}")
        need = np.zeros(v.shape[0], np.bool_)
        _mark_corners(tris, tid, need)
    cols = 3 + sum(a.shape[1] for a in parts)
    out = np.zeros((v.shape[0], 3 if not parts else -(-cols // 4) * 4), np.float32)
    parts = parts or (np.zeros((v.shape[0], 0), np.float32),)  # (a compiled loop needs a typed tuple)
    _vertex_normals_at(np.ascontiguousarray(v[:, 0]), np.ascontiguousarray(v[:, 1]), np.ascontiguousarray(v[:, 2]),
                       tris, rot, need, np.zeros(v.shape, np.float64), out, parts)
    return out


@njit(cache=True, inline="always")
def _unit(x, y, z):
    # morphable_model.geometry._normalize: sqrt((x^2 + y^2) + z^2) in float64, a zero vector stays zero
    # (no fast-math: the same IEEE operations, the same bits)
    norm = np.sqrt((x * x + y * y) + z * z)
    if norm > 0.0:
        return x / norm, y / norm, z / norm
    return 0.0, 0.0, 0.0


@njit(cache=True)
def _normalize_rows(acc, out):
    # _unit of each row, then rounded to out's dtype
    for i in range(acc.shape[0]):
        out[i, 0], out[i, 1], out[i, 2] = _unit(acc[i, 0], acc[i, 1], acc[i, 2])


@njit(cache=True)
def _specular_lobes(pix, width, normals, light_dir, strength, shininess, fx, fy, cx, cy, perspective, lobe):
    # synth.lighting.view_directions (surface -> camera) and blinn_phong; a loop of its own (and the
    # power in a second one): the chains of divisions and square roots of many pixels then overlap
    for p in range(pix.shape[0]):
        x, y, z = np.float64(normals[p, 0]), np.float64(normals[p, 1]), np.float64(normals[p, 2])
        if perspective:
            vx, vy = (cx - ((pix[p] % width) + 0.5)) / fx, (((pix[p] // width) + 0.5) - cy) / fy
        else:
            vx, vy = 0.0, 0.0
        vn = np.sqrt(vx * vx + vy * vy + 1.0)
        hx, hy, hz = vx / vn + light_dir[0], vy / vn + light_dir[1], 1.0 / vn + light_dir[2]
        hn = max(np.sqrt(hx * hx + hy * hy + hz * hz), 1e-12)
        nh = max((x * hx + y * hy + z * hz) / hn, 0.0)
        lobe[p] = nh if x * light_dir[0] + y * light_dir[1] + z * light_dir[2] > 0.0 else -1.0  # -1: unlit
    for p in range(pix.shape[0]):
        nh = lobe[p]
        lobe[p] = nh ** shininess * strength if nh >= 0.0 else 0.0


@njit(cache=True)
def _shade_pixels(pix, width, normals, albedo, occlusion, sh, spec_on, light_dir, light_color, strength,
                  shininess, fx, fy, cx, cy, perspective, image, specular, lobes):
    if spec_on:
        _specular_lobes(pix, width, normals, light_dir, strength, shininess, fx, fy, cx, cy, perspective, lobes)
    for p in range(pix.shape[0]):
        x, y, z = np.float64(normals[p, 0]), np.float64(normals[p, 1]), np.float64(normals[p, 2])
        # synth.lighting.sh_basis, in its order
        b0, b1, b2, b3 = C0, C1 * y, C1 * z, C1 * x
        b4, b5, b6 = C2 * x * y, C2 * y * z, C3 * (3.0 * z * z - 1.0)
        b7, b8 = C2 * x * z, C4 * (x * x - y * y)
        occ = np.float64(occlusion[p]) if occlusion.shape[0] else 1.0
        lobe = lobes[p] if spec_on else 0.0
        for c in range(3):
            s = (b0 * sh[0, c] + b1 * sh[1, c] + b2 * sh[2, c] + b3 * sh[3, c] + b4 * sh[4, c] + b5 * sh[5, c]
                 + b6 * sh[6, c] + b7 * sh[7, c] + b8 * sh[8, c])
            v = albedo[p, c] * s * occ
            if spec_on:
                spec = lobe * light_color[c]
                specular[p, c] = spec
                v += spec
            image[pix[p], c] = min(max(v, 0.0), 1.0)


def shade_pixels(image: np.ndarray, pix: np.ndarray, normals: np.ndarray, albedo: np.ndarray, sh: np.ndarray,
                 occlusion: np.ndarray | None = None, specular: tuple | None = None,
                 intrinsics: np.ndarray | None = None, projection: str = "perspective") -> np.ndarray | None:
    """Shade the face pixels ``pix (P,)`` (flat indices into ``image (H, W, 3)`` float32, linear light,
    written in place) with ``clip(albedo * (sh_basis(normals) @ sh) * occlusion + spec, 0, 1)``.

    ``normals (P, 3)`` unit, ``albedo (P, 3)`` in [0, 1], ``sh (9, 3)``, ``occlusion (P,)`` (None = 1).
    ``specular``: ``(light_dir (3,), light_color (3,), strength, shininess)`` of
    :func:`synth.lighting.dominant_light` and the sample, or None for none; the view direction of
    each pixel centre comes from ``intrinsics (3, 3)`` and ``projection``
    (:func:`synth.lighting.view_directions`). Returns the specular radiance ``(P, 3)`` float32 (None
    without a highlight). One compiled pass instead of ~20 numpy passes; the same formulas as
    :func:`synth.lighting.shade` + :func:`synth.lighting.blinn_phong`, evaluated in float64."""
    if image.dtype != np.float32 or image.ndim != 3 or image.shape[2] != 3 or not image.flags.c_contiguous:
        raise ValueError(f"image must be a C-contiguous (H, W, 3) float32 array, got {image.dtype} {image.shape}")
    pix = np.ascontiguousarray(pix, np.int64)
    n_pix = pix.shape[0]
    if n_pix and (pix.min() < 0 or pix.max() >= image.shape[0] * image.shape[1]):
        raise ValueError(f"pix must index the {image.shape[0]} x {image.shape[1]} image, got "
                         f"[{pix.min()}, {pix.max()}]")
    if normals.shape != (n_pix, 3) or albedo.shape != (n_pix, 3):
        raise ValueError(f"normals and albedo must be ({n_pix}, 3), got {normals.shape}, {albedo.shape}")
    occ = np.zeros(0, np.float32) if occlusion is None else np.asarray(occlusion, np.float32)
    if occ.shape not in ((0,), (n_pix,)):
        raise ValueError(f"occlusion must be ({n_pix},), got {occ.shape}")
    sh = np.asarray(sh, np.float64)
    if sh.shape != (9, 3):
        raise ValueError(f"sh must be (9, 3), got {sh.shape}")
    spec_on = specular is not None
    if spec_on and intrinsics is None and projection == "perspective":
        raise ValueError("intrinsics are needed for the view directions of a perspective highlight")
    k = np.eye(3) if intrinsics is None else np.asarray(intrinsics, np.float64)
    if spec_on:
        light_dir, light_color, strength, shininess = specular
        spec = np.empty((n_pix, 3), np.float32)
    else:
        light_dir = light_color = np.zeros(3)
        strength = shininess = 0.0
        spec = np.empty((0, 3), np.float32)
    _shade_pixels(pix, image.shape[1], normals, albedo, occ, sh, spec_on, np.asarray(light_dir, np.float64),
                  np.asarray(light_color, np.float64), float(strength), float(shininess), float(k[0, 0]),
                  float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), projection == "perspective",
                  image.reshape(-1, 3), spec, np.empty(n_pix if spec_on else 0, np.float64))
    return spec if spec_on else None


@njit(cache=True)
def _axpy(c, x, y):
    for j in range(x.shape[0]):  # 1-D slices, j >= 0 provable: LLVM vectorises (no fast-math, no FMA)
        y[j] += c * x[j]


@njit(cache=True)
def _axpy4(c0, c1, c2, c3, x0, x1, x2, x3, y):
    # y += c0 x0, then + c1 x1, + c2 x2, + c3 x3: each product rounded, then added, in this order
    for j in range(x0.shape[0]):
        y[j] = (((y[j] + c0 * x0[j]) + c1 * x1[j]) + c2 * x2[j]) + c3 * x3[j]


@njit(cache=True)
def _axpy4x4(c, x0, x1, x2, x3, y0, y1, y2, y3):
    # _axpy4 for four rows at once: each basis value is loaded once for four rows, each output is
    # loaded and stored once per four terms (the plain axpy is bound by its stores)
    for j in range(x0.shape[0]):
        a0, a1, a2, a3 = x0[j], x1[j], x2[j], x3[j]
        y0[j] = (((y0[j] + c[0, 0] * a0) + c[0, 1] * a1) + c[0, 2] * a2) + c[0, 3] * a3
        y1[j] = (((y1[j] + c[1, 0] * a0) + c[1, 1] * a1) + c[1, 2] * a2) + c[1, 3] * a3
        y2[j] = (((y2[j] + c[2, 0] * a0) + c[2, 1] * a1) + c[2, 2] * a2) + c[2, 3] * a3
        y3[j] = (((y3[j] + c[3, 0] * a0) + c[3, 1] * a1) + c[3, 2] * a2) + c[3, 3] * a3


@njit(cache=True)
def _axpy8x4(c, x0, x1, x2, x3, x4, x5, x6, x7, y0, y1, y2, y3):
    # _axpy4x4 with eight terms: each output is loaded and stored once per eight terms (~20 % faster
    # than tiles of four on the built-in model; the same order, the same bits)
    for j in range(x0.shape[0]):
        a0, a1, a2, a3, a4, a5, a6, a7 = x0[j], x1[j], x2[j], x3[j], x4[j], x5[j], x6[j], x7[j]
        y0[j] = (((((((y0[j] + c[0, 0] * a0) + c[0, 1] * a1) + c[0, 2] * a2) + c[0, 3] * a3) + c[0, 4] * a4)
                   + c[0, 5] * a5) + c[0, 6] * a6) + c[0, 7] * a7
        y1[j] = (((((((y1[j] + c[1, 0] * a0) + c[1, 1] * a1) + c[1, 2] * a2) + c[1, 3] * a3) + c[1, 4] * a4)
                   + c[1, 5] * a5) + c[1, 6] * a6) + c[1, 7] * a7
        y2[j] = (((((((y2[j] + c[2, 0] * a0) + c[2, 1] * a1) + c[2, 2] * a2) + c[2, 3] * a3) + c[2, 4] * a4)
                   + c[2, 5] * a5) + c[2, 6] * a6) + c[2, 7] * a7
        y3[j] = (((((((y3[j] + c[3, 0] * a0) + c[3, 1] * a1) + c[3, 2] * a2) + c[3, 3] * a3) + c[3, 4] * a4)
                   + c[3, 5] * a5) + c[3, 6] * a6) + c[3, 7] * a7


@njit(cache=True)
def _linear_combination(coef, basis_t, mean, out, block):
    n_rows, n_coef = coef.shape
    m = basis_t.shape[1]
    k8, k4, r4 = n_coef - n_coef % 8, n_coef - n_coef % 4, n_rows - n_rows % 4
    c = np.empty((4, 8), np.float32)
    c4 = np.empty((4, 4), np.float32)
    for j0 in range(0, m, block):  # a block of columns of every row stays in L2 while the bases stream by
        j1 = min(j0 + block, m)
        out[:, j0:j1] = 0.0
        for k in range(0, k8, 8):  # every output sums its terms in the order k = 0, 1, ... (tiles of 8)
            x0, x1, x2, x3 = basis_t[k, j0:j1], basis_t[k + 1, j0:j1], basis_t[k + 2, j0:j1], basis_t[k + 3, j0:j1]
            x4, x5, x6, x7 = (basis_t[k + 4, j0:j1], basis_t[k + 5, j0:j1], basis_t[k + 6, j0:j1],
                              basis_t[k + 7, j0:j1])
            for b in range(0, r4, 4):
                for r in range(4):
                    for q in range(8):
                        c[r, q] = coef[b + r, k + q]
                _axpy8x4(c, x0, x1, x2, x3, x4, x5, x6, x7, out[b, j0:j1], out[b + 1, j0:j1], out[b + 2, j0:j1],
                         out[b + 3, j0:j1])
            for b in range(r4, n_rows):
                _axpy4(coef[b, k], coef[b, k + 1], coef[b, k + 2], coef[b, k + 3], x0, x1, x2, x3, out[b, j0:j1])
                _axpy4(coef[b, k + 4], coef[b, k + 5], coef[b, k + 6], coef[b, k + 7], x4, x5, x6, x7,
                       out[b, j0:j1])
        for k in range(k8, k4, 4):  # a tile of 4 left
            x0, x1, x2, x3 = basis_t[k, j0:j1], basis_t[k + 1, j0:j1], basis_t[k + 2, j0:j1], basis_t[k + 3, j0:j1]
            for b in range(0, r4, 4):
                for r in range(4):
                    for q in range(4):
                        c4[r, q] = coef[b + r, k + q]
                _axpy4x4(c4, x0, x1, x2, x3, out[b, j0:j1], out[b + 1, j0:j1], out[b + 2, j0:j1], out[b + 3, j0:j1])
            for b in range(r4, n_rows):
                _axpy4(coef[b, k], coef[b, k + 1], coef[b, k + 2], coef[b, k + 3], x0, x1, x2, x3, out[b, j0:j1])
        for k in range(k4, n_coef):  # the last K % 4 terms, still in order
            for b in range(n_rows):
                _axpy(coef[b, k], basis_t[k, j0:j1], out[b, j0:j1])
        for b in range(n_rows):
            _axpy(np.float32(1.0), mean[j0:j1], out[b, j0:j1])  # + mean (1 * x is exact)


def linear_combination(coef: np.ndarray, basis_t: np.ndarray, mean: np.ndarray, block: int = 8192) -> np.ndarray:
    """``coef (B, K) @ basis_t (K, M) + mean (M,)`` in float32 -> ``(B, M)``: each output is
    ``(sum_k coef[b, k] * basis_t[k, j]) + mean[j]``, the products rounded and summed in the order
    k = 0, 1, ... (no fused multiply-add), so a row's values depend on its own coefficients only —
    not on the other rows, its position, a thread count or the CPU. A BLAS GEMM splits and orders
    its sums by all of these (measured on an AMD EPYC with OpenBLAS: rows 6-15 of a 16-row product
    differ by an ulp from the same row alone, and 1 vs 2 threads differ too). Twin of
    ``(coef @ basis_t) + mean`` up to float32 rounding. Single-threaded, tiled by four rows and
    four terms (each basis value loaded once per four rows, each output stored once per four terms;
    the same sums in the same order, so the same bits as one row at a time, whatever ``block``):
    with the default ``block`` of 8192 columns (16 rows x 8192 x 4 B = 512 KiB of output, fastest of
    1024-16384 on an AMD EPYC), for 16 rows of the built-in model ~0.9x the time of a one-thread
    OpenBLAS GEMM, for one row ~0.25x of the GEMM padded to 16 rows (``benchmarks/kernels.py``)."""
    coef = np.ascontiguousarray(coef, np.float32)
    basis_t = np.ascontiguousarray(basis_t, np.float32)
    mean = np.ascontiguousarray(mean, np.float32)
    if coef.ndim != 2 or basis_t.ndim != 2 or coef.shape[1] != basis_t.shape[0] or mean.shape != (basis_t.shape[1],):
        raise ValueError(f"linear_combination: coef (B, K), basis_t (K, M), mean (M,) expected, got "
                         f"{coef.shape}, {basis_t.shape}, {mean.shape}")
    out = np.empty((coef.shape[0], basis_t.shape[1]), np.float32)
    _linear_combination(coef, basis_t, mean, out, int(block))
    return out


@njit(cache=True)
def srgb_encode_u8(x, thresholds, start_levels, shift, out):
    """``out[i]`` = the number of ``thresholds`` (255, ascending float32) ``<= x[i]``: the exact sRGB
    level of :func:`synth.color.linear_to_srgb_u8` (its argument checks and tables). ``x`` float32
    1-D, NaN and values <= 0 -> 0, >= 1 -> 255; ``start_levels`` the level of the first float32 of
    each bin ``bits >> shift`` (``synth.color._encode_start_levels``), from which the level steps up."""
    bits = x.view(np.uint32)
    top = np.uint32(0x3F800000)  # the bits of 1.0: larger patterns (> 1, negatives, NaN) are set below
    for i in range(x.shape[0]):
        v = x[i]
        level = np.int64(start_levels[min(bits[i], top) >> shift])
        # a bin holds at most one threshold (tested), so one step up at most: no branch to mispredict,
        # ~2x faster than stepping in a loop (the same levels for every float32 in [0, 1], checked)
        level += (level < 255) and (v >= thresholds[min(level, 254)])
        level = 255 if v >= 1.0 else level
        out[i] = level if v > 0.0 else 0


@njit(cache=True)
def lookup_channels(image, tables, out):
    """``out[i, j, c] = tables[c, image[i, j, c]]``: ``image (H, W, C)`` uint8 of any strides, ``tables
    (C, 256)`` float32, ``out (H, W, C)`` float32."""
    for c in range(image.shape[2]):
        table = tables[c]
        for i in range(image.shape[0]):
            for j in range(image.shape[1]):
                out[i, j, c] = table[image[i, j, c]]
