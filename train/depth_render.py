"""Pure-torch batched triangle rasterizer (differentiable rendering layer).

Renders depth, barycentrics and interpolated vertex attributes (PNCC, normals, ...) of meshes given
in the camera frame, on CPU or CUDA, with no compiled extension.

Conventions (docs/DESIGN.md): camera frame x right, y up, looking along -z; depth ``d = -p_z``;
perspective ``u = cx + fx * p_x / d``, ``v = cy - fy * p_y / d``; weak perspective
``u = cx + fx * p_x``, ``v = cy - fy * p_y`` (the scale ``s`` is stored in ``fx`` and ``fy``).
Pixel (row i, col j) has its centre at ``(u, v) = (j + 0.5, i + 0.5)``.

Algorithm, in two passes:

1. Visibility (no gradient). Vertices are projected, each triangle's pixel bounding box is
   enumerated exactly (``repeat_interleave`` over per-triangle pixel counts, chunked so memory is
   bounded), candidate pixels are tested with barycentric edge functions (a pixel centre on an edge
   belongs to both triangles), and the nearest triangle per pixel wins through one
   ``scatter_reduce(amin)`` over int64 keys ``(depth as order-preserving float32 bits) << 32 | tri``:
   nearest depth first, ties go to the smallest triangle id, deterministic on CPU and CUDA.
2. Shading (differentiable). For every covered pixel the winning triangle's three vertices are
   gathered and projected again with torch ops, and the barycentrics of the pixel centre are
   computed from them, so depth and interpolated attributes carry exact gradients w.r.t. the
   vertices through the barycentrics. Which triangle wins is a discrete choice and is not
   differentiated (no silhouette gradients).

Barycentrics are perspective-correct: for perspective projection the screen-space weights ``l_i``
become ``b_i = (l_i / d_i) / sum_j (l_j / d_j)`` and the depth is ``1 / sum_j (l_j / d_j)`` (1/z is
linear in screen space); for weak perspective ``b_i = l_i`` and the depth is ``sum_i l_i d_i``.

Triangles with a vertex at depth ``<= znear`` are dropped under perspective projection (there is
no near-plane clipping).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from synth import camera
from synth.raster import rasterize_reference as _rasterize_reference_np

# Packed visibility key of an empty pixel (larger than every real key).
_EMPTY_KEY = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF


@dataclass
class Fragments:
    """Per-pixel rasterization result for a batch of B images of size (H, W).

    tri_id: (B, H, W) long, index into ``triangles`` of the visible triangle, -1 off-mesh.
    bary: (B, H, W, 3) perspective-correct barycentrics of the pixel centre, 0 off-mesh.
    depth: (B, H, W) depth ``-p_z`` of the visible surface (same units as the vertices), 0 off-mesh.
    mask: (B, H, W) bool, True where a triangle covers the pixel centre.
    """

    tri_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _check_verts(verts_cam: torch.Tensor) -> None:
    if not isinstance(verts_cam, torch.Tensor):
        raise ValueError(f"verts_cam must be a torch.Tensor, got {type(verts_cam).__name__}")
    if verts_cam.ndim != 3 or verts_cam.shape[-1] != 3:
        raise ValueError(f"verts_cam must be (B, N, 3), got {tuple(verts_cam.shape)}")
    if not verts_cam.is_floating_point():
        raise ValueError(f"verts_cam must be a floating point tensor, got {verts_cam.dtype}")


def _check_triangles(triangles: torch.Tensor, n_verts: int, device: torch.device) -> torch.Tensor:
    if not isinstance(triangles, torch.Tensor):
        triangles = torch.from_numpy(np.array(triangles))  # copy: model arrays are read-only
    if triangles.ndim != 2 or triangles.shape[1] != 3:
        raise ValueError(f"triangles must be (T, 3), got {tuple(triangles.shape)}")
    if triangles.is_floating_point() or triangles.dtype == torch.bool:
        raise ValueError(f"triangles must be an integer tensor, got {triangles.dtype}")
    triangles = triangles.to(device=device, dtype=torch.long)
    if triangles.numel() and (int(triangles.min()) < 0 or int(triangles.max()) >= n_verts):
        raise ValueError(
            f"triangles must index vertices in [0, {n_verts}), got range "
            f"[{int(triangles.min())}, {int(triangles.max())}]"
        )
    return triangles


def _check_intrinsics(intrinsics: torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Return intrinsics as (B, 3, 3) in ``like``'s dtype and device."""
    if not isinstance(intrinsics, torch.Tensor):
        intrinsics = torch.from_numpy(np.array(intrinsics, dtype=np.float64))
    if intrinsics.shape == (3, 3):
        intrinsics = intrinsics.expand(batch, 3, 3)
    elif intrinsics.ndim != 3 or intrinsics.shape[1:] != (3, 3) or intrinsics.shape[0] != batch:
        raise ValueError(
            f"intrinsics must be (3, 3) or ({batch}, 3, 3), got {tuple(intrinsics.shape)}"
        )
    return intrinsics.to(device=like.device, dtype=like.dtype)


def _check_projection(projection: str) -> None:
    camera.check_projection(projection)


def _check_size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (size, size)
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (H, W), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"size must be two positive ints (H, W), got {size!r}")
    return h, w


# --------------------------------------------------------------------------------------------
# Projection
# --------------------------------------------------------------------------------------------


def project(
    verts_cam: torch.Tensor, intrinsics: torch.Tensor, projection: str = "perspective"
) -> torch.Tensor:
    """Project camera-frame vertices to pixels: (B, N, 3) -> (B, N, 3) = (u, v, depth).

    ``intrinsics`` is (B, 3, 3) or (3, 3) ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``; for
    ``weak_perspective`` fx and fy hold the scale s (pixels per mm). The arithmetic is
    :func:`synth.camera.project`'s.
    """
    _check_verts(verts_cam)
    _check_projection(projection)
    k = _check_intrinsics(intrinsics, verts_cam.shape[0], verts_cam)
    uv, depth = camera.project(verts_cam, k, projection)  # (B, N, 2), (B, N)
    return torch.cat([uv, depth[..., None]], dim=-1)


# --------------------------------------------------------------------------------------------
# Fast rasterizer
# --------------------------------------------------------------------------------------------


def _orderable_float_bits(x: torch.Tensor) -> torch.Tensor:
    """Map float32 values to int64 keys with the same ordering (negative values included)."""
    i = x.to(torch.float32).contiguous().view(torch.int32)
    i = i ^ ((i >> 31) & 0x7FFFFFFF)  # flip magnitude bits of negatives so ints order like floats
    return i.to(torch.int64)


@torch.no_grad()
def _visibility(
    uvd: torch.Tensor,
    triangles: torch.Tensor,
    size: tuple[int, int],
    projection: str,
    cull_backfaces: bool,
    znear: float,
    max_candidates: int,
) -> torch.Tensor:
    """Visible triangle per pixel. uvd (3, B, N) projected vertex planes (u, v, depth) ->
    (B*H*W,) long triangle index, -1 where empty."""
    _, B, N = uvd.shape
    T = triangles.shape[0]
    H, W = size
    device = uvd.device
    zbuf = torch.full((B * H * W,), _EMPTY_KEY, dtype=torch.int64, device=device)
    if T == 0 or B == 0:
        return torch.full_like(zbuf, -1)

    # Per-vertex validity, then per-triangle corners. All per-triangle and per-candidate
    # quantities are kept as rows of 1-D contiguous tensors: elementwise ops on them are fast.
    vert_ok = torch.isfinite(uvd).all(dim=0)  # (B, N)
    if projection == "perspective":
        vert_ok &= uvd[2] > znear
    # Unusable vertices get u = NaN, which makes the area of their triangles NaN (rejected below).
    uvd = torch.cat([torch.where(vert_ok, uvd[0], float("nan"))[None], uvd[1:]])
    triangles_t = triangles.t().reshape(-1)  # (3T,) = corner 0 of all triangles, corner 1, corner 2
    if uvd.is_cuda:
        corners = uvd.index_select(2, triangles_t)
    else:
        # On CPU a 1-D gather per (coord, batch) row is ~8x faster than index_select(dim=2).
        rows = uvd.reshape(3 * B, N)
        corners = uvd.new_empty(3 * B, 3 * T)
        for r in range(3 * B):
            torch.index_select(rows[r], 0, triangles_t, out=corners[r])
    corners = corners.view(3, B, 3, T)  # [coord, batch, corner, tri]
    u0, u1, u2 = corners[0].unbind(1)  # each (B, T)
    v0, v1, v2 = corners[1].unbind(1)
    # Twice the signed area in pixel coordinates; front faces (CCW seen from the camera in a y-up
    # frame) have a negative area here because v points down.
    area2 = (u1 - u0) * (v2 - v0) - (v1 - v0) * (u2 - u0)  # (B, T)
    valid = torch.isfinite(area2) & (area2 != 0)
    if cull_backfaces:
        valid &= area2 < 0

    # Inclusive pixel ranges whose centres (j + 0.5) fall in the bounding box.
    big = float(max(H, W) + 2)
    umin = torch.minimum(torch.minimum(u0, u1), u2).clamp_(-big, big)
    umax = torch.maximum(torch.maximum(u0, u1), u2).clamp_(-big, big)
    vmin = torch.minimum(torch.minimum(v0, v1), v2).clamp_(-big, big)
    vmax = torch.maximum(torch.maximum(v0, v1), v2).clamp_(-big, big)
    x0 = torch.ceil(umin.sub_(0.5)).long().clamp_(min=0)
    x1 = torch.floor(umax.sub_(0.5)).long().clamp_(max=W - 1)
    y0 = torch.ceil(vmin.sub_(0.5)).long().clamp_(min=0)
    y1 = torch.floor(vmax.sub_(0.5)).long().clamp_(max=H - 1)
    bw = x1 - x0 + 1
    bh = y1 - y0 + 1
    valid &= (bw > 0) & (bh > 0)
    # Compact to the triangles whose box holds at least one pixel centre; most triangles of a
    # dense mesh hold none.
    sel = torch.nonzero(valid.reshape(-1)).squeeze(1)  # (M,) flat index b*T + t, ascending
    if sel.numel() == 0:
        return torch.full_like(zbuf, -1)
    b_of = torch.div(sel, T, rounding_mode="floor")
    tri_local = sel - b_of * T  # (M,)
    # (1-D index_select per row is several times faster than gathering 2-D rows on CPU.)
    bw, bh, x0, y0 = (x.reshape(-1).index_select(0, sel) for x in (bw, bh, x0, y0))  # (M,)
    # Corner values of the selected triangles, each (M,): u0 u1 u2 v0 v1 v2 d0 d1 d2.
    corner_idx = b_of * (3 * T) + tri_local  # into corners[coord].reshape(-1), corner 0
    u0, u1, u2, v0, v1, v2, d0, d1, d2 = (
        corners[c].reshape(-1).index_select(0, corner_idx + i * T) for c in range(3) for i in range(3)
    )

    # Barycentric planes relative to the first pixel centre of the box:
    # l_i(dx, dy) = c_i + a_i * dx + b_i * dy, with l_i = edge function opposite vertex i / area2.
    inv_area = ((u1 - u0) * (v2 - v0) - (v1 - v0) * (u2 - u0)).reciprocal_()
    px = x0.to(uvd.dtype) + 0.5  # (M,)
    py = y0.to(uvd.dtype) + 0.5
    rows = []
    for (un, vn), (up, vp) in (((u1, v1), (u2, v2)), ((u2, v2), (u0, v0)), ((u0, v0), (u1, v1))):
        a = (vn - vp) * inv_area  # d l_i / du for the corner opposite edge (n, p)
        b = (up - un) * inv_area  # d l_i / dv
        rows.append((a, b, a * (px - un) + b * (py - vn)))
    if projection == "perspective":
        zval = (d0.reciprocal(), d1.reciprocal(), d2.reciprocal())  # 1/z is linear in screen
    else:
        zval = (d0, d1, d2)  # depth is linear in screen space
    # 12 rows (M,): (a0, a1, a2, a_z), (b0, b1, b2, b_z), (c0, c1, c2, c_z).
    planes = [
        x
        for j in range(3)
        for x in (rows[0][j], rows[1][j], rows[2][j], sum(rows[i][j] * zval[i] for i in range(3)))
    ]
    counts = bw * bh
    base_key = b_of * (H * W) + y0 * W + x0  # flat pixel index of the box's first pixel

    cum = counts.cumsum(0)
    total = int(cum[-1])
    start = cum - counts  # exclusive prefix sum, (M,)
    max_candidates = max(int(max_candidates), H * W)
    n_chunks = (total + max_candidates - 1) // max_candidates
    targets = torch.arange(1, n_chunks, device=device, dtype=torch.int64) * max_candidates
    ends = torch.searchsorted(cum, targets, right=True).tolist() + [sel.numel()]
    t_begin = 0
    for t_end in ends:
        if t_end <= t_begin:
            continue
        c_begin = int(start[t_begin])
        c_end = int(cum[t_end - 1])
        n_cand = c_end - c_begin
        tri_idx = torch.repeat_interleave(
            torch.arange(t_begin, t_end, device=device), counts[t_begin:t_end], output_size=n_cand
        )  # (n_cand,) index into the compacted triangles
        c_start, c_bw, c_base, c_tri = (
            x.index_select(0, tri_idx) for x in (start, bw, base_key, tri_local)
        )  # (n_cand,) each
        off = torch.arange(c_begin, c_end, device=device) - c_start
        dy = torch.div(off, c_bw, rounding_mode="floor")
        dx = off - dy * c_bw
        p = [x.index_select(0, tri_idx) for x in planes]  # 12 x (n_cand,)
        dxf = dx.to(uvd.dtype)
        dyf = dy.to(uvd.dtype)
        # value = c + a * dx + b * dy for the three barycentrics and the depth value.
        l0, l1, l2, z = (torch.addcmul(torch.addcmul(p[8 + i], p[i], dxf), p[4 + i], dyf) for i in range(4))
        inside = (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
        if projection == "perspective":
            z = z.reciprocal_()
        key = (_orderable_float_bits(z) << 32) + c_tri
        key = torch.where(inside, key, _EMPTY_KEY)
        pix = c_base + dy * W + dx
        zbuf.scatter_reduce_(0, pix, key, reduce="amin")
        t_begin = t_end

    empty = zbuf == _EMPTY_KEY
    return zbuf.bitwise_and_(_LOW32).masked_fill_(empty, -1)


def _shade(
    verts_cam: torch.Tensor,
    triangles: torch.Tensor,
    k: torch.Tensor,
    tri_flat: torch.Tensor,
    size: tuple[int, int],
    projection: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable barycentrics and depth of the covered pixels.

    tri_flat (B*H*W,) long visible triangle per pixel (-1 empty). Returns dense
    bary (B, H, W, 3) and depth (B, H, W), zeros off-mesh.
    """
    B, N = verts_cam.shape[:2]
    H, W = size
    pix = torch.nonzero(tri_flat >= 0).squeeze(1)  # (P,) flat pixel index b*H*W + i*W + j
    tri = tri_flat.index_select(0, pix)
    b_idx = torch.div(pix, H * W, rounding_mode="floor")
    rem = pix - b_idx * (H * W)
    row = torch.div(rem, W, rounding_mode="floor")
    x = (rem - row * W).to(verts_cam.dtype) + 0.5  # (P,) pixel centre u
    y = row.to(verts_cam.dtype) + 0.5  # (P,) pixel centre v
    # Camera-frame corners gathered as 1-D rows (P,): 1-D index_select (and its index_add
    # backward) is the fast gather on CPU; then each pixel's three corners are projected with its
    # image's intrinsics.
    vflat = verts_cam.reshape(B * N, 3)
    coords = [vflat[:, c] for c in range(3)]  # 3 x (B*N,)
    corners = []
    for i in range(3):
        vid = triangles[:, i].index_select(0, tri) + b_idx * N  # (P,) flat vertex index of corner i
        corners.append(torch.stack([c.index_select(0, vid) for c in coords], dim=-1))  # (P, 3)
    # (P, 3 corners, 3) with (P, 3, 3) intrinsics -> uv (P, 3, 2), depth (P, 3)
    uv, dep = camera.project(torch.stack(corners, dim=1), k.index_select(0, b_idx), projection)
    u = [uv[:, i, 0] for i in range(3)]
    v = [uv[:, i, 1] for i in range(3)]
    d = [dep[:, i] for i in range(3)]
    inv_area = 1.0 / ((u[1] - u[0]) * (v[2] - v[0]) - (v[1] - v[0]) * (u[2] - u[0]))  # (P,)
    # Screen-space barycentric of corner i: edge function of the opposite edge (n, p) at the
    # pixel centre over twice the signed area.
    lam = [
        ((u[p_] - u[n_]) * (y - v[n_]) - (v[p_] - v[n_]) * (x - u[n_])) * inv_area
        for n_, p_ in ((1, 2), (2, 0), (0, 1))
    ]
    if projection == "perspective":
        w = [lam[i] / d[i] for i in range(3)]
        inv_depth = w[0] + w[1] + w[2]
        depth = 1.0 / inv_depth
        bary = torch.stack([wi * depth for wi in w], dim=-1)  # (P, 3)
    else:
        bary = torch.stack(lam, dim=-1)
        depth = lam[0] * d[0] + lam[1] * d[1] + lam[2] * d[2]
    bary_full = verts_cam.new_zeros(B * H * W, 3).index_put((pix,), bary)
    depth_full = verts_cam.new_zeros(B * H * W).index_put((pix,), depth)
    return bary_full.reshape(B, H, W, 3), depth_full.reshape(B, H, W)


def rasterize(
    verts_cam: torch.Tensor,
    triangles: torch.Tensor,
    intrinsics: torch.Tensor,
    size: tuple[int, int],
    projection: str = "perspective",
    cull_backfaces: bool = False,
    znear: float = 1e-6,
    max_candidates: int = 1 << 22,
) -> Fragments:
    """Rasterize a batch of meshes given in the camera frame.

    Args:
        verts_cam: (B, N, 3) float vertices in the camera frame (looking along -z).
        triangles: (T, 3) integer vertex indices, shared by the batch.
        intrinsics: (B, 3, 3) or (3, 3); for weak perspective fx, fy hold the scale.
        size: (H, W) image size in pixels (an int means square).
        projection: "perspective" or "weak_perspective".
        cull_backfaces: drop triangles that are clockwise in the image (back-facing for the
            DESIGN.md winding); off by default, the nearest surface wins.
        znear: perspective only: triangles with a vertex at depth <= znear are dropped.
        max_candidates: candidate pixels processed at once (bounds memory, ~200 bytes each).

    Returns:
        Fragments; ``bary`` and ``depth`` are differentiable w.r.t. ``verts_cam`` and
        ``intrinsics`` through the barycentrics (visibility is not differentiated).
    """
    _check_verts(verts_cam)
    _check_projection(projection)
    H, W = _check_size(size)
    B, N = verts_cam.shape[:2]
    triangles = _check_triangles(triangles, N, verts_cam.device)
    k = _check_intrinsics(intrinsics, B, verts_cam)
    with torch.no_grad():
        uv, depth = camera.project(verts_cam.detach(), k.detach(), projection)  # (B, N, 2), (B, N)
        # (B, N, 3) -> (3, B, N) planes u, v, depth
        uvd = torch.cat([uv, depth[..., None]], dim=-1).permute(2, 0, 1).contiguous()
    tri_flat = _visibility(
        uvd, triangles, (H, W), projection, cull_backfaces, znear, max_candidates
    )  # (B*H*W,)
    bary, depth = _shade(verts_cam, triangles, k, tri_flat, (H, W), projection)
    tri_id = tri_flat.reshape(B, H, W)
    return Fragments(tri_id=tri_id, bary=bary, depth=depth, mask=tri_id >= 0)


def interpolate(attrs: torch.Tensor, triangles: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """Interpolate per-vertex attributes with the fragments' barycentrics.

    attrs (B, N, C) or (N, C) -> (B, H, W, C), 0 off-mesh. Differentiable w.r.t. ``attrs`` and
    (through ``fragments.bary``) w.r.t. the vertices.
    """
    if not isinstance(attrs, torch.Tensor):
        raise ValueError(f"attrs must be a torch.Tensor, got {type(attrs).__name__}")
    B, H, W = fragments.tri_id.shape
    if attrs.ndim == 2:
        attrs = attrs.unsqueeze(0).expand(B, -1, -1)
    if attrs.ndim != 3 or attrs.shape[0] != B:
        raise ValueError(f"attrs must be (N, C) or ({B}, N, C), got {tuple(attrs.shape)}")
    N, C = attrs.shape[1:]
    triangles = _check_triangles(triangles, N, attrs.device)
    tri = fragments.tri_id.clamp(min=0)  # (B, H, W)
    vid = triangles[tri]  # (B, H, W, 3)
    batch = torch.arange(B, device=attrs.device)[:, None, None, None]  # (B, 1, 1, 1)
    corner = attrs[batch, vid]  # (B, N, C) indexed -> (B, H, W, 3, C)
    bary = fragments.bary.to(attrs.dtype) if attrs.is_floating_point() else fragments.bary
    out = (bary[..., None] * corner).sum(-2)  # (B, H, W, 3, 1) * (B, H, W, 3, C) -> (B, H, W, C)
    return out * fragments.mask[..., None].to(out.dtype)


def render_depth(
    verts_cam: torch.Tensor,
    triangles: torch.Tensor,
    intrinsics: torch.Tensor,
    size: tuple[int, int],
    projection: str = "perspective",
    **kwargs,
) -> torch.Tensor:
    """Depth map (B, H, W), 0 off-mesh; see :func:`rasterize` (keyword options pass through)."""
    return rasterize(verts_cam, triangles, intrinsics, size, projection, **kwargs).depth


# --------------------------------------------------------------------------------------------
# Slow reference (tiny meshes only)
# --------------------------------------------------------------------------------------------


def rasterize_reference(
    verts_cam,
    triangles,
    intrinsics,
    size: tuple[int, int],
    projection: str = "perspective",
    cull_backfaces: bool = False,
    znear: float = 1e-6,
) -> Fragments:
    """The slow float64 reference :func:`synth.raster.rasterize_reference` (the project's one loop
    z-buffer) run on each mesh of a batch, as :class:`Fragments` of tensors; same conventions and
    options as :func:`rasterize` (ties in depth keep the smaller triangle id). Tiny meshes only; no
    gradients.
    """
    verts = np.asarray(torch.as_tensor(verts_cam).detach().cpu(), dtype=np.float64)
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts_cam must be (B, N, 3), got {verts.shape}")
    triangles_np = np.asarray(torch.as_tensor(triangles).cpu(), dtype=np.int64)
    K = np.asarray(torch.as_tensor(intrinsics).detach().cpu(), dtype=np.float64)
    _check_projection(projection)
    H, W = _check_size(size)
    B = verts.shape[0]
    if K.shape == (3, 3):
        K = np.broadcast_to(K, (B, 3, 3))
    refs = [_rasterize_reference_np(verts[b], triangles_np, K[b], (H, W), projection, cull_backfaces, znear)
            for b in range(B)]
    tri_t = torch.from_numpy(np.stack([r.tri_id for r in refs]))  # (B, H, W)
    return Fragments(
        tri_id=tri_t,
        bary=torch.from_numpy(np.stack([r.bary for r in refs])),
        depth=torch.from_numpy(np.stack([r.depth for r in refs])),
        mask=tri_t >= 0,
    )
