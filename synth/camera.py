"""The camera: the one home of rotation, the model-to-camera transform and projection (docs/DESIGN.md).

Camera frame (OpenGL): x right, y up, the camera looks along -z. A model vertex ``v`` goes to
``p = R @ v + t``; depth ``d = -p_z > 0`` in millimetres.

- perspective: ``u = cx + fx * p_x / d``, ``v = cy - fy * p_y / d``
- weak perspective (scaled orthographic): ``u = cx + s * p_x``, ``v = cy - s * p_y``; the scale
  ``s`` (pixels per millimetre) is stored in the intrinsics matrix in place of ``fx``/``fy``.

Intrinsics are a ``(3, 3)`` matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels. Pixel
coordinates have their origin at the image's top-left corner, x right, y down; the centre of
pixel (row i, col j) is (u, v) = (j + 0.5, i + 0.5).

Pose: yaw (about y), pitch (about x), roll (about z), radians, ``R = Rz(roll) @ Rx(pitch) @ Ry(yaw)``;
positive yaw turns the face toward the image's right.

:func:`rotation_matrix`, :func:`to_camera` and :func:`project` take numpy arrays or torch tensors
(autograd-friendly, any device; torch is never imported here, a tensor brings its own functions),
batched or not; the renderer (numpy), the training code and the differentiable rasterizer (torch)
all call them. :func:`intrinsics_matrix` and :func:`pixel_rays` are numpy helpers.
"""
from __future__ import annotations

import numpy as np

PROJECTIONS = ("perspective", "weak_perspective")


def check_projection(projection: str) -> str:
    """``projection`` if it is one of :data:`PROJECTIONS`, else ``ValueError`` naming it."""
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    return projection


def _is_torch(x) -> bool:
    return type(x).__module__.split(".", 1)[0] == "torch"


def rotation_matrix(pose, pitch=None, roll=None):
    """``R = Rz(roll) @ Rx(pitch) @ Ry(yaw)`` for angles in radians.

    Two forms:

    * ``rotation_matrix(yaw, pitch, roll)`` with three scalars -> ``(3, 3)`` float64 numpy;
    * ``rotation_matrix(pose)`` with ``pose (..., 3)`` = (yaw, pitch, roll), a numpy array
      (computed in float64) or a torch tensor (its dtype and device, differentiable)
      -> ``(..., 3, 3)``; e.g. ``(B, 3)`` -> ``(B, 3, 3)``.
    """
    if pitch is not None or roll is not None:
        if pitch is None or roll is None:
            raise ValueError("rotation_matrix takes (yaw, pitch, roll) scalars or one (..., 3) pose")
        pose = np.array([float(pose), float(pitch), float(roll)])
    torch_in = _is_torch(pose)
    p = pose if torch_in else np.asarray(pose, dtype=np.float64)
    if p.ndim < 1 or p.shape[-1] != 3:
        raise ValueError(f"pose must be (..., 3) = (yaw, pitch, roll), got {tuple(p.shape)}")
    yaw, pitch_, roll_ = p[..., 0], p[..., 1], p[..., 2]
    if torch_in:
        import torch  # the caller already has it: a tensor came in

        cos, sin, ones, zeros, stack = torch.cos, torch.sin, torch.ones_like, torch.zeros_like, torch.stack
    else:
        cos, sin, ones, zeros, stack = np.cos, np.sin, np.ones_like, np.zeros_like, np.stack
    one, zero = ones(yaw), zeros(yaw)  # same type / dtype / device / batch shape as the angles
    cy, sy, cp, sp, cr, sr = cos(yaw), sin(yaw), cos(pitch_), sin(pitch_), cos(roll_), sin(roll_)
    shape = tuple(p.shape[:-1]) + (3, 3)
    # (..., 9) -> (..., 3, 3), row-major
    ry = stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(shape)
    rx = stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(shape)
    rz = stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(shape)
    return rz @ rx @ ry


def rotation_to_pose(rotation):
    """The inverse of :func:`rotation_matrix`: ``(..., 3, 3)`` rotation -> ``(..., 3)`` (yaw,
    pitch, roll) radians, with pitch in [-pi/2, pi/2] (numpy, or torch: differentiable away from
    pitch = +-pi/2). From ``R = Rz(roll) Rx(pitch) Ry(yaw)``: ``R[2] = (-cos p sin y, sin p,
    cos p cos y)``, ``R[0, 1] = -sin r cos p``, ``R[1, 1] = cos r cos p``.
    """
    r = rotation
    if r.ndim < 2 or tuple(r.shape[-2:]) != (3, 3):
        raise ValueError(f"rotation must be (..., 3, 3), got {tuple(r.shape)}")
    if _is_torch(r):
        import torch

        atan2, asin, stack = torch.atan2, lambda x: torch.asin(x.clamp(-1.0, 1.0)), torch.stack
    else:
        r = np.asarray(r, dtype=np.float64)
        atan2, asin, stack = np.arctan2, lambda x: np.arcsin(np.clip(x, -1.0, 1.0)), np.stack
    yaw = atan2(-r[..., 2, 0], r[..., 2, 2])
    pitch = asin(r[..., 2, 1])
    roll = atan2(-r[..., 0, 1], r[..., 1, 1])
    return stack([yaw, pitch, roll], -1)


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` float32 (for weak perspective fx = fy = s)."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float32)


def to_camera(vertices, rotation, translation):
    """``p = R @ v + t``: model-space ``vertices (..., N, 3)`` -> camera frame ``(..., N, 3)``.

    ``rotation`` is ``(3, 3)`` or batched ``(..., 3, 3)`` (e.g. :func:`rotation_matrix` of a
    ``(B, 3)`` pose for vertices ``(B, N, 3)``), ``translation`` ``(3,)`` or ``(..., 3)`` matching.
    numpy (computed in the vertices' dtype) or torch (differentiable).
    """
    if tuple(vertices.shape[-1:]) != (3,) or vertices.ndim < 2:
        raise ValueError(f"vertices must be (..., N, 3), got {tuple(vertices.shape)}")
    if rotation.ndim < 2 or tuple(rotation.shape[-2:]) != (3, 3):
        raise ValueError(f"rotation must be (3, 3) or (..., 3, 3), got {tuple(rotation.shape)}")
    if tuple(translation.shape[-1:]) != (3,) or tuple(translation.shape[:-1]) != tuple(rotation.shape[:-2]):
        raise ValueError(f"translation must be {tuple(rotation.shape[:-2]) + (3,)} to match rotation "
                         f"{tuple(rotation.shape)}, got {tuple(translation.shape)}")
    if _is_torch(vertices):
        import torch

        if rotation.ndim == 2:
            return vertices @ rotation.T + translation  # (..., N, 3) @ (3, 3)^T + (3,)
        # (..., N, 3) x (..., 3, 3)^T -> (..., N, 3); + (..., 1, 3)
        return torch.einsum("...nj,...ij->...ni", vertices, rotation) + translation[..., None, :]
    v = np.asarray(vertices)
    r = np.asarray(rotation, dtype=v.dtype)
    t = np.asarray(translation, dtype=v.dtype)
    if r.ndim == 2:
        return v @ r.T + t  # (..., N, 3) @ (3, 3)^T + (3,)
    return v @ np.swapaxes(r, -1, -2) + t[..., None, :]  # (..., N, 3) @ (..., 3, 3)^T + (..., 1, 3)


def project(points_cam, intrinsics, projection: str = "perspective", min_depth: float | None = None):
    """Pixel coordinates ``(..., N, 2)`` (u, v) and depth ``(..., N)`` of camera-frame points ``(..., N, 3)``.

    Returns ``(uv, depth)``. ``intrinsics`` is ``(3, 3)`` (shared) or ``(..., 3, 3)`` with the
    points' leading dimensions (one camera per ``(N, 3)`` point set: ``(B, 3, 3)`` for
    ``(B, N, 3)``). numpy or torch (differentiable; a tensor pair is computed in their promoted
    dtype). Depth is not clamped by default: points behind the camera give negative depths.
    ``min_depth`` (perspective only): the depth is clamped to at least this before the division
    (and returned clamped), so estimates that put points behind the camera stay finite — what
    training losses on predicted poses need.
    """
    check_projection(projection)
    if tuple(points_cam.shape[-1:]) != (3,):
        raise ValueError(f"points_cam must be (..., 3), got {tuple(points_cam.shape)}")
    if intrinsics.ndim < 2 or tuple(intrinsics.shape[-2:]) != (3, 3):
        raise ValueError(f"intrinsics must be (3, 3) or (..., 3, 3), got {tuple(intrinsics.shape)}")
    torch_in = _is_torch(points_cam)
    k = intrinsics
    if torch_in:
        import torch

        if not _is_torch(k):
            k = torch.as_tensor(np.asarray(k), device=points_cam.device)
        dtype = torch.promote_types(points_cam.dtype, k.dtype)
        points_cam, k = points_cam.to(dtype), k.to(device=points_cam.device, dtype=dtype)
    if k.ndim > 2:  # (..., 3, 3) -> (..., 1) per entry, to broadcast over (..., N)
        if points_cam.ndim < 2 or tuple(k.shape[:-2]) != tuple(points_cam.shape[:-2]):
            raise ValueError(f"intrinsics {tuple(k.shape)} must be (3, 3) or match the leading dimensions "
                             f"of points_cam {tuple(points_cam.shape)}")
        fx, fy, cx, cy = (k[..., 0, 0][..., None], k[..., 1, 1][..., None], k[..., 0, 2][..., None],
                          k[..., 1, 2][..., None])
    else:
        fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    x, y = points_cam[..., 0], points_cam[..., 1]
    depth = -points_cam[..., 2]
    if min_depth is not None and projection == "perspective":
        depth = depth.clamp_min(min_depth) if torch_in else np.maximum(depth, min_depth)
    if projection == "perspective":
        u = cx + fx * x / depth
        v = cy - fy * y / depth
    else:
        u = cx + fx * x
        v = cy - fy * y
    if torch_in:
        return torch.stack([u, v], dim=-1), depth
    return np.stack([u, v], axis=-1), depth


def unproject(uv, depth, intrinsics, projection: str = "perspective"):
    """Camera-frame points ``(..., N, 3)`` at pixel coordinates ``uv (..., N, 2)`` and depth
    ``(..., N)`` (``-p_z``): the inverse of :func:`project`.

    ``uv`` broadcasts against ``depth`` (e.g. one ``(N, 2)`` pixel grid for a ``(B, N)`` batch of
    depths); ``intrinsics`` is ``(3, 3)`` or ``(..., 3, 3)`` with the depth's leading dimensions.
    Perspective ``p = d ((u - cx) / fx, -(v - cy) / fy, -1)``; weak perspective
    ``p = ((u - cx) / fx, -(v - cy) / fy, -d)``. numpy or torch (differentiable).
    """
    check_projection(projection)
    if tuple(uv.shape[-1:]) != (2,):
        raise ValueError(f"uv must be (..., 2), got {tuple(uv.shape)}")
    if intrinsics.ndim < 2 or tuple(intrinsics.shape[-2:]) != (3, 3):
        raise ValueError(f"intrinsics must be (3, 3) or (..., 3, 3), got {tuple(intrinsics.shape)}")
    k = intrinsics
    if k.ndim > 2:  # (..., 3, 3) -> (..., 1) per entry, to broadcast over (..., N)
        if tuple(k.shape[:-2]) != tuple(depth.shape[:-1]):
            raise ValueError(f"intrinsics {tuple(k.shape)} must be (3, 3) or match the leading dimensions "
                             f"of depth {tuple(depth.shape)}")
        fx, fy, cx, cy = (k[..., 0, 0][..., None], k[..., 1, 1][..., None], k[..., 0, 2][..., None],
                          k[..., 1, 2][..., None])
    else:
        fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    x = (uv[..., 0] - cx) / fx
    y = -(uv[..., 1] - cy) / fy
    if projection == "perspective":
        x, y = x * depth, y * depth
    else:
        x, y = x + 0 * depth, y + 0 * depth  # broadcast to the depth's shape
    if _is_torch(depth):
        import torch

        return torch.stack([x, y, -depth], dim=-1)
    return np.stack([x, y, -np.asarray(depth)], axis=-1)


def pixel_rays(size: int, intrinsics: np.ndarray, projection: str = "perspective") -> tuple[np.ndarray, np.ndarray]:
    """Ray origins and directions ``(size, size, 3)`` through the pixel centres (camera frame).

    Perspective: origin 0, direction ``((u-cx)/fx, -(v-cy)/fy, -1)`` (unit depth per step).
    Weak perspective: origin ``((u-cx)/s, -(v-cy)/s, 0)``, direction ``(0, 0, -1)``.
    A point at depth d along a ray is ``origin + d * direction``.
    """
    check_projection(projection)
    k = np.asarray(intrinsics, dtype=np.float64)
    c = np.arange(size) + 0.5
    uu, vv = np.meshgrid(c, c)  # (H, W): uu = column centre, vv = row centre
    x = (uu - k[0, 2]) / k[0, 0]
    y = -(vv - k[1, 2]) / k[1, 1]
    ones = np.ones_like(x)
    if projection == "perspective":
        return np.zeros((size, size, 3)), np.stack([x, y, -ones], axis=-1)
    return np.stack([x, y, 0 * ones], axis=-1), np.stack([0 * x, 0 * y, -ones], axis=-1)
