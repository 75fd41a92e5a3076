"""The CoarseNet parameter vector: layout, normalisation, encoding and decoding.

The network predicts one vector per image in normalised units (:class:`ParamLayout`):

``[alpha_id (n_id) | alpha_exp (n_exp) | pose (3) | cam (3) | beta (n_albedo) | sh (27)]``

* ``alpha_id``, ``alpha_exp``, ``beta``: already in prior-std units (prior N(0, I));
* ``pose`` (yaw, pitch, roll, radians): ``(x - mean) / std`` with the mean and std of the
  training set's sampling prior (:class:`ParamStats`, estimated from the shards and stored in
  every checkpoint);
* ``cam``: the translation in the form the image shows it (:func:`translation_to_cam`: where the
  model origin lands in the image, as a fraction of the size, and the log apparent scale),
  normalised the same way; converted back to millimetres with each sample's known intrinsics;
* ``sh``: ``(sh - mean) / std`` likewise (only with ``n_sh > 0``).

Zero in normalised units is therefore the mean face at the mean pose: the iteration-0 estimate.
:func:`encode_params` turns a ground-truth batch into the vector (the loss target),
:func:`decode_params` turns a vector back into physical :class:`CoarseParams`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch

__all__ = [
    "N_SH",
    "MIN_DEPTH_MM",
    "ParamLayout",
    "ParamStats",
    "CoarseParams",
    "translation_to_cam",
    "cam_to_translation",
    "encode_params",
    "decode_params",
]

N_SH = 27  # 9 SH coefficients x RGB
MIN_DEPTH_MM = 1e-6
"""Perspective depth floor for projecting decoded estimates (``synth.camera.project(...,
min_depth=MIN_DEPTH_MM)``): a predicted pose may put vertices behind the camera, whose pixels must
stay finite in the losses and metrics."""


@dataclasses.dataclass(frozen=True)
class ParamLayout:
    """Where each parameter group lives in the normalised parameter vector."""

    n_id: int
    """number of identity coefficients predicted (the first components of the model)."""
    n_exp: int
    """number of expression coefficients predicted."""
    n_albedo: int = 0
    """number of albedo coefficients predicted (0 = no albedo head)."""
    n_sh: int = 0
    """27 to predict the SH lighting (9 x RGB), 0 = no SH head."""

    def __post_init__(self) -> None:
        for name in ("n_id", "n_exp", "n_albedo"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.n_sh not in (0, N_SH):
            raise ValueError(f"n_sh must be 0 or {N_SH}, got {self.n_sh}")

    @property
    def dim(self) -> int:
        return self.n_id + self.n_exp + 6 + self.n_albedo + self.n_sh

    def slices(self) -> dict[str, slice]:
        """Name -> slice into the ``(B, dim)`` vector, in vector order."""
        out, start = {}, 0
        for name, n in (("alpha_id", self.n_id), ("alpha_exp", self.n_exp), ("pose", 3),
                        ("cam", 3), ("beta", self.n_albedo), ("sh", self.n_sh)):
            out[name] = slice(start, start + n)
            start += n
        return out

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ParamLayout":
        """Inverse of :meth:`to_dict`; checkpoints written before the field was renamed store
        ``n_albedo`` as ``n_alb``."""
        d = dict(d)
        if "n_alb" in d:
            d["n_albedo"] = d.pop("n_alb")
        return cls(**d)


# The camera part of the vector is what the image shows, not the raw translation (mm): the
# network never sees the intrinsics, and the distance of a face is only observable through its
# size in pixels. ``cam = (u0 / W, v0 / H, log(fx / (d W)))`` with ``(u0, v0)`` the pixel where the
# model origin projects, ``d = -t_z`` its depth and ``fx / (d W)`` the image fraction per mm (the
# apparent scale); all three are invariant to resizing the image. Weak perspective stores its
# scale in ``fx`` (known), so there ``log(1 / d)`` fills the third slot (it only moves the depth
# offset, which the image does not show).
def translation_to_cam(translation: torch.Tensor, intrinsics: torch.Tensor, size: tuple[int, int],
                       projection: str = "perspective") -> torch.Tensor:
    """Translation ``(B, 3)`` mm -> camera vector ``(B, 3)`` (see above)."""
    h, w = size
    fx, fy = intrinsics[:, 0, 0], intrinsics[:, 1, 1]
    cx, cy = intrinsics[:, 0, 2], intrinsics[:, 1, 2]
    d = (-translation[:, 2]).clamp_min(1e-6)
    if projection == "perspective":
        u0, v0 = cx + fx * translation[:, 0] / d, cy - fy * translation[:, 1] / d
        ls = torch.log(fx / (d * w))
    elif projection == "weak_perspective":
        u0, v0 = cx + fx * translation[:, 0], cy - fy * translation[:, 1]
        ls = -torch.log(d)
    else:
        raise ValueError(f"projection must be 'perspective' or 'weak_perspective', got {projection!r}")
    return torch.stack([u0 / w, v0 / h, ls], dim=1)


def cam_to_translation(cam: torch.Tensor, intrinsics: torch.Tensor, size: tuple[int, int],
                       projection: str = "perspective") -> torch.Tensor:
    """Inverse of :func:`translation_to_cam`: ``(B, 3)`` camera vector -> translation mm."""
    h, w = size
    fx, fy = intrinsics[:, 0, 0], intrinsics[:, 1, 1]
    cx, cy = intrinsics[:, 0, 2], intrinsics[:, 1, 2]
    u0, v0 = cam[:, 0] * w, cam[:, 1] * h
    if projection == "perspective":
        d = fx / (torch.exp(cam[:, 2]) * w)
        tx, ty = (u0 - cx) * d / fx, -(v0 - cy) * d / fy
    elif projection == "weak_perspective":
        d = torch.exp(-cam[:, 2])
        tx, ty = (u0 - cx) / fx, -(v0 - cy) / fy
    else:
        raise ValueError(f"projection must be 'perspective' or 'weak_perspective', got {projection!r}")
    return torch.stack([tx, ty, -d], dim=1)


@dataclasses.dataclass
class ParamStats:
    """Mean and std of the pose / camera / SH sampling prior, for normalisation.

    Estimated from the training shards (:meth:`from_samples`); components the generator kept
    fixed (std ~ 0) get std 1 so they are predicted as offsets in their natural unit.
    """

    pose_mean: torch.Tensor  # (3,) rad
    pose_std: torch.Tensor  # (3,) rad
    cam_mean: torch.Tensor  # (3,) camera vector (translation_to_cam)
    cam_std: torch.Tensor  # (3,)
    sh_mean: torch.Tensor  # (27,)
    sh_std: torch.Tensor  # (27,)

    @classmethod
    def from_samples(cls, pose, translation, intrinsics, size: tuple[int, int], projection: str = "perspective",
                     sh=None) -> "ParamStats":
        """Statistics of ``pose (M, 3)``, ``translation (M, 3)`` with ``intrinsics (M, 3, 3)`` at
        image ``size``, and ``sh (M, 9, 3)`` (optional) samples."""
        pose = np.asarray(pose, np.float64).reshape(-1, 3)
        if pose.shape[0] == 0:
            raise ValueError("pose must hold at least one sample, got 0")
        cam = translation_to_cam(torch.as_tensor(np.asarray(translation, np.float64).reshape(-1, 3)),
                                 torch.as_tensor(np.asarray(intrinsics, np.float64).reshape(-1, 3, 3)),
                                 size, projection).numpy()
        sh = np.zeros((1, N_SH)) if sh is None else np.asarray(sh, np.float64).reshape(-1, N_SH)

        def std(x: np.ndarray, floor: float) -> torch.Tensor:
            s = x.std(axis=0) if x.shape[0] > 1 else np.zeros(x.shape[1])
            return torch.tensor(np.where(s > floor, s, 1.0), dtype=torch.float32)

        return cls(
            pose_mean=torch.tensor(pose.mean(0), dtype=torch.float32),
            pose_std=std(pose, 1e-4),  # < 0.006 degree spread = fixed
            cam_mean=torch.tensor(cam.mean(0), dtype=torch.float32),
            cam_std=std(cam, 1e-5),
            sh_mean=torch.tensor(sh.mean(0), dtype=torch.float32),
            sh_std=std(sh, 1e-6),
        )

    def to_dict(self) -> dict[str, list[float]]:
        return {f.name: getattr(self, f.name).tolist() for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Sequence[float]]) -> "ParamStats":
        return cls(**{f.name: torch.tensor(d[f.name], dtype=torch.float32) for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class CoarseParams:
    """Physical parameters of a batch (torch). ``beta``/``sh`` are None without those heads."""

    alpha_id: torch.Tensor  # (B, n_id) std units
    alpha_exp: torch.Tensor  # (B, n_exp) std units
    pose: torch.Tensor  # (B, 3) yaw, pitch, roll rad
    translation: torch.Tensor  # (B, 3) mm
    beta: torch.Tensor | None = None  # (B, n_albedo)
    sh: torch.Tensor | None = None  # (B, 9, 3)


def decode_params(vec: torch.Tensor, layout: ParamLayout, stats: ParamStats, intrinsics: torch.Tensor,
                  size: tuple[int, int], projection: str = "perspective") -> CoarseParams:
    """Normalised ``(B, dim)`` vector -> physical :class:`CoarseParams` for images of ``size``
    with ``intrinsics (B, 3, 3)``."""
    if vec.ndim != 2 or vec.shape[1] != layout.dim:
        raise ValueError(f"vec must be (B, {layout.dim}), got {tuple(vec.shape)}")
    s = layout.slices()
    dev = vec.device
    pose = vec[:, s["pose"]] * stats.pose_std.to(dev) + stats.pose_mean.to(dev)
    cam = vec[:, s["cam"]] * stats.cam_std.to(dev) + stats.cam_mean.to(dev)
    trans = cam_to_translation(cam, intrinsics.to(vec.dtype), size, projection)
    sh = None
    if layout.n_sh:
        sh = (vec[:, s["sh"]] * stats.sh_std.to(dev) + stats.sh_mean.to(dev)).reshape(-1, 9, 3)
    return CoarseParams(
        alpha_id=vec[:, s["alpha_id"]], alpha_exp=vec[:, s["alpha_exp"]], pose=pose,
        translation=trans, beta=vec[:, s["beta"]] if layout.n_albedo else None, sh=sh,
    )


def encode_params(batch: dict[str, torch.Tensor], layout: ParamLayout, stats: ParamStats,
                  projection: str = "perspective") -> torch.Tensor:
    """Ground-truth batch (keys ``alpha_id``, ``alpha_exp``, ``pose``, ``translation``,
    ``intrinsics``, ``image`` (for its size) and ``beta``/``sh`` when the layout has those heads)
    -> normalised ``(B, dim)`` vector. Coefficients beyond the layout's counts are dropped."""
    dev = batch["pose"].device
    size = tuple(batch["image"].shape[-2:])
    cam = translation_to_cam(batch["translation"].float(), batch["intrinsics"].float(), size, projection)
    parts = [
        _take(batch["alpha_id"], layout.n_id, "alpha_id"),
        _take(batch["alpha_exp"], layout.n_exp, "alpha_exp"),
        (batch["pose"] - stats.pose_mean.to(dev)) / stats.pose_std.to(dev),
        (cam - stats.cam_mean.to(dev)) / stats.cam_std.to(dev),
    ]
    if layout.n_albedo:
        parts.append(_take(batch["beta"], layout.n_albedo, "beta"))
    if layout.n_sh:
        sh = batch["sh"].reshape(-1, N_SH)
        parts.append((sh - stats.sh_mean.to(dev)) / stats.sh_std.to(dev))
    return torch.cat([p.float() for p in parts], dim=1)


def _take(x: torch.Tensor, k: int, name: str) -> torch.Tensor:
    if x.shape[1] < k:
        raise ValueError(f"{name} must have at least {k} coefficients, got {tuple(x.shape)}")
    return x[:, :k]
