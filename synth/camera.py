"""Camera convention shared by the renderer and the training code (docs/DESIGN.md).

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

The functions accept numpy arrays; :func:`project` also accepts torch tensors.
"""
from __future__ import annotations

import numpy as np

PROJECTIONS = ("perspective", "weak_perspective")


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``R = Rz(roll) @ Rx(pitch) @ Ry(yaw)`` ``(3, 3)`` float64 for angles in radians."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    rz = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return rz @ rx @ ry


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` float32 (for weak perspective fx = fy = s)."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float32)


def to_camera(vertices: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """``p = R @ v + t`` for vertices ``(..., N, 3)`` -> ``(..., N, 3)``."""
    v = np.asarray(vertices)
    if v.shape[-1:] != (3,):
        raise ValueError(f"vertices must be (..., N, 3), got {v.shape}")
    if np.shape(rotation) != (3, 3):
        raise ValueError(f"rotation must be (3, 3), got {np.shape(rotation)}")
    if np.shape(translation) != (3,):
        raise ValueError(f"translation must be (3,), got {np.shape(translation)}")
    # (..., N, 3) @ (3, 3)^T -> (..., N, 3)
    return v @ np.asarray(rotation, dtype=v.dtype).T + np.asarray(translation, dtype=v.dtype)


def project(points_cam, intrinsics, kind: str = "perspective"):
    """Pixel coordinates ``(..., 2)`` (u, v) and depth ``(...)`` of camera-frame points ``(..., 3)``.

    Returns ``(uv, depth)``. ``intrinsics`` is ``(3, 3)`` or batched ``(B, 3, 3)`` matching a
    leading batch dimension of ``points_cam`` ``(B, N, 3)``. numpy or torch.
    """
    if kind not in PROJECTIONS:
        raise ValueError(f"kind must be one of {PROJECTIONS}, got {kind!r}")
    if points_cam.shape[-1:] != (3,):
        raise ValueError(f"points_cam must be (..., 3), got {tuple(points_cam.shape)}")
    if tuple(intrinsics.shape[-2:]) != (3, 3):
        raise ValueError(f"intrinsics must be (..., 3, 3), got {tuple(intrinsics.shape)}")
    k = intrinsics
    if k.ndim == 3:  # (B, 3, 3) -> (B, 1, ...) to broadcast over (B, N)
        fx, fy, cx, cy = (k[:, 0, 0][:, None], k[:, 1, 1][:, None], k[:, 0, 2][:, None], k[:, 1, 2][:, None])
    else:
        fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    x, y = points_cam[..., 0], points_cam[..., 1]
    depth = -points_cam[..., 2]
    if kind == "perspective":
        u = cx + fx * x / depth
        v = cy - fy * y / depth
    else:
        u = cx + fx * x
        v = cy - fy * y
    if isinstance(u, np.ndarray):
        return np.stack([u, v], axis=-1), depth
    import torch

    return torch.stack([u, v], dim=-1), depth


def pixel_rays(size: int, intrinsics: np.ndarray, kind: str = "perspective") -> tuple[np.ndarray, np.ndarray]:
    """Ray origins and directions ``(size, size, 3)`` through the pixel centres (camera frame).

    Perspective: origin 0, direction ``((u-cx)/fx, -(v-cy)/fy, -1)`` (unit depth per step).
    Weak perspective: origin ``((u-cx)/s, -(v-cy)/s, 0)``, direction ``(0, 0, -1)``.
    A point at depth d along a ray is ``origin + d * direction``.
    """
    k = np.asarray(intrinsics, dtype=np.float64)
    c = np.arange(size) + 0.5
    uu, vv = np.meshgrid(c, c)  # (H, W): uu = column centre, vv = row centre
    x = (uu - k[0, 2]) / k[0, 0]
    y = -(vv - k[1, 2]) / k[1, 1]
    ones = np.ones_like(x)
    if kind == "perspective":
        return np.zeros((size, size, 3)), np.stack([x, y, -ones], axis=-1)
    if kind == "weak_perspective":
        return np.stack([x, y, 0 * ones], axis=-1), np.stack([0 * x, 0 * y, -ones], axis=-1)
    raise ValueError(f"kind must be one of {PROJECTIONS}, got {kind!r}")
