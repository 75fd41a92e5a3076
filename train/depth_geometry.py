"""Geometry of depth maps: back-projection to camera-frame points, and surface normals.

Mesh normals (per vertex, per triangle) live in :mod:`morphable_model.geometry`; this module is the
one home of normals computed from a *depth map* (FineNet's output, the rasterized coarse depth),
differentiable and batched, in torch.

Conventions (docs/DESIGN.md): camera frame x right, y up, looking along -z; depth ``d = -p_z > 0``
in millimetres; pixel (row i, col j) has its centre at ``(u, v) = (j + 0.5, i + 0.5)``, rows go
down while camera y goes up.

- perspective: ``p = d * ((u - cx) / fx, -(v - cy) / fy, -1)``
- weak perspective (scale ``s`` stored in ``fx``/``fy``): ``p = ((u - cx) / fx, -(v - cy) / fy, -d)``

(:func:`synth.camera.unproject`, the camera's one home).

Normals are ``(B, H, W, 3)`` (channels last, like the shards' ``normals``, the rasterizer's
``interpolate`` and :func:`synth.lighting.sh_basis`), unit length, in the camera frame, pointing
toward the camera. At pixel ``(i, j)`` the normal is ``cross(P[i+1, j] - P[i-1, j], P[i, j+1] -
P[i, j-1])`` normalised (central differences of the back-projected points): the row direction
points to camera -y and the column direction to +x, so a fronto-parallel plane gets ``+z``, and for
any surface seen through the image the vector points to the viewer's side (``n . (-p) > 0`` in
the continuum limit). A normal is valid where the pixel and its 4 neighbours are on the surface
(and, optionally, no neighbour differs in depth by more than ``max_jump``); invalid pixels get 0.
"""

from __future__ import annotations

import dataclasses

import torch

from synth.camera import PROJECTIONS, check_projection, unproject

__all__ = ["PROJECTIONS", "DepthNormals", "depth_to_points", "depth_normals", "erode_mask"]


@dataclasses.dataclass
class DepthNormals:
    """Normals of a batch of depth maps."""

    normals: torch.Tensor
    """(B, H, W, 3) unit camera-frame normals toward the camera, 0 where ``mask`` is False."""
    mask: torch.Tensor
    """(B, H, W) bool: the pixel and its 4 neighbours are on the surface (normal defined)."""


def _check_depth(depth: torch.Tensor) -> None:
    if not isinstance(depth, torch.Tensor):
        raise ValueError(f"depth must be a torch.Tensor, got {type(depth).__name__}")
    if depth.ndim != 3:
        raise ValueError(f"depth must be (B, H, W), got {tuple(depth.shape)}")
    if not depth.is_floating_point():
        raise ValueError(f"depth must be a floating point tensor, got {depth.dtype}")


def _intrinsics(intrinsics, depth: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) intrinsics in the depth's dtype/device from (3, 3) or (B, 3, 3)."""
    k = torch.as_tensor(intrinsics)
    b = depth.shape[0]
    if k.shape == (3, 3):
        k = k.expand(b, 3, 3)
    if k.shape != (b, 3, 3):
        raise ValueError(f"intrinsics must be (3, 3) or ({b}, 3, 3), got {tuple(k.shape)}")
    return k.to(device=depth.device, dtype=depth.dtype)


def depth_to_points(depth: torch.Tensor, intrinsics, projection: str = "perspective") -> torch.Tensor:
    """Camera-frame points ``(B, H, W, 3)`` of the pixel centres at ``depth (B, H, W)`` (mm).

    :func:`synth.camera.unproject` (the inverse of its ``project``) at the pixel centres; pixels with
    depth 0 map to the camera centre (perspective) or to the image plane (weak perspective).
    Differentiable w.r.t. ``depth`` and ``intrinsics``.
    """
    _check_depth(depth)
    check_projection(projection)
    k = _intrinsics(intrinsics, depth)
    b, h, w = depth.shape
    u = torch.arange(w, device=depth.device, dtype=depth.dtype) + 0.5  # (W,) column centres
    v = torch.arange(h, device=depth.device, dtype=depth.dtype) + 0.5  # (H,) row centres
    uv = torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1).reshape(h * w, 2)  # (H*W, 2) = (u, v)
    # (H*W, 2) with (B, H*W) depths and (B, 3, 3) cameras -> (B, H*W, 3) -> (B, H, W, 3)
    return unproject(uv, depth.reshape(b, h * w), k, projection).reshape(b, h, w, 3)


def depth_normals(depth: torch.Tensor, intrinsics, mask: torch.Tensor | None = None,
                  projection: str = "perspective", max_jump: float | None = None) -> DepthNormals:
    """Unit camera-frame normals of depth maps (module docstring for the formula).

    Args:
        depth: (B, H, W) depth in mm (``-p_z``).
        intrinsics: (B, 3, 3) or (3, 3) ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``.
        mask: (B, H, W) bool, the pixels on the surface; default ``depth > 0``.
        projection: "perspective" or "weak_perspective".
        max_jump: also drop pixels where a neighbour's depth differs by more than this (mm) —
            depth discontinuities at self-occlusions (None = off).

    Returns:
        :class:`DepthNormals`; ``normals`` are differentiable w.r.t. ``depth`` (and intrinsics).
    """
    _check_depth(depth)
    if mask is None:
        mask = depth > 0
    elif tuple(mask.shape) != tuple(depth.shape):
        raise ValueError(f"mask must be {tuple(depth.shape)} like depth, got {tuple(mask.shape)}")
    mask = mask.bool()
    b, h, w = depth.shape
    pts = depth_to_points(depth, intrinsics, projection)  # (B, H, W, 3)
    # central differences on the interior (B, H-2, W-2, 3): along rows (down) and columns (right)
    d_row = pts[:, 2:, 1:-1] - pts[:, :-2, 1:-1]
    d_col = pts[:, 1:-1, 2:] - pts[:, 1:-1, :-2]
    n = torch.cross(d_row, d_col, dim=-1)  # (-y) x (+x) = +z: toward the camera
    ok = (mask[:, 1:-1, 1:-1] & mask[:, :-2, 1:-1] & mask[:, 2:, 1:-1]
          & mask[:, 1:-1, :-2] & mask[:, 1:-1, 2:])  # (B, H-2, W-2)
    if max_jump is not None:
        c = depth[:, 1:-1, 1:-1]
        for nb in (depth[:, :-2, 1:-1], depth[:, 2:, 1:-1], depth[:, 1:-1, :-2], depth[:, 1:-1, 2:]):
            ok = ok & ((nb - c).abs() <= max_jump)
    norm = n.norm(dim=-1, keepdim=True)  # (B, H-2, W-2, 1)
    ok = ok & (norm[..., 0] > 0)
    safe = torch.where(ok[..., None], norm, torch.ones_like(norm))
    unit = torch.where(ok[..., None], n / safe, torch.zeros_like(n))
    normals = depth.new_zeros(b, h, w, 3)
    valid = torch.zeros_like(mask)
    if h > 2 and w > 2:
        normals = torch.nn.functional.pad(unit.permute(0, 3, 1, 2), (1, 1, 1, 1)).permute(0, 2, 3, 1)
        valid = torch.nn.functional.pad(ok, (1, 1, 1, 1))
    return DepthNormals(normals=normals, mask=valid)


def erode_mask(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary erosion of ``mask (B, H, W)`` with a ``(2r+1) x (2r+1)`` square; pixels outside the
    image count as off (so the image border erodes too). ``radius = 0`` returns the mask."""
    if mask.ndim != 3:
        raise ValueError(f"mask must be (B, H, W), got {tuple(mask.shape)}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    m = mask.bool()
    if radius == 0:
        return m
    off = (~m).float()[:, None]  # (B, 1, H, W)
    grown = torch.nn.functional.max_pool2d(off, 2 * radius + 1, stride=1, padding=radius)
    # max_pool pads with -inf: the image border is not "off" there; add it explicitly
    border = torch.ones_like(off)
    border[..., radius:-radius or None, radius:-radius or None] = 0.0
    return ((grown[:, 0] + border[:, 0]) == 0)
