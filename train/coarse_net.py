"""CoarseNet: an iterative ResNet regressing morphable-model parameters (Richardson et al. 2017).

Each iteration sees the (masked) image concatenated with the PNCC and normal maps rendered
from the previous estimate (the mean face at the mean pose before the first iteration) and
predicts an *update* to the parameter vector. The feedback rendering is not back-propagated
through (as in the paper); the estimate itself is the running sum of the updates, so the loss of
iteration k also reaches the updates of iterations < k through that sum. One set of weights
serves every iteration.

The parameter vector is predicted in normalised units (:class:`ParamLayout`):

``[alpha_id (n_id) | alpha_exp (n_exp) | pose (3) | cam (3) | beta (n_alb) | sh (27)]``

* ``alpha_id``, ``alpha_exp``, ``beta``: already in prior-std units (prior N(0, I));
* ``pose`` (yaw, pitch, roll, radians): ``(x - mean) / std`` with the mean and std of the
  training set's sampling prior (:class:`ParamStats`, estimated from the shards and stored in
  every checkpoint);
* ``cam``: the translation in the form the image shows it (:func:`translation_to_cam`: where the
  model origin lands in the image, as a fraction of the size, and the log apparent scale),
  normalised the same way; converted back to millimetres with each sample's known intrinsics;
* ``sh``: ``(sh - mean) / std`` likewise (only with ``n_sh > 0``).

Zero in normalised units is therefore the mean face at the mean pose: the iteration-0 estimate.

Layout of this module: plain functions on tensors first (``to_camera``, ``project``: thin
wrappers of :mod:`synth.camera`; ``rotation_matrix`` and ``vertex_normals`` are re-exported from
``synth.camera`` and ``morphable_model.geometry``), then the network blocks (``BasicBlock``, ``CoarseNet``), the feedback
renderer and the iterative model (``FeedbackRenderer``, ``IterativeCoarseNet``), then the
training task (``CoarseTask``) the shared :mod:`train.trainer` loop drives, and ``reconstruct``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from morphable_model.geometry import vertex_normals
from morphable_model.torch_model import MorphableModelModule
from synth import camera
from synth.camera import rotation_matrix

__all__ = [
    "ParamLayout",
    "ParamStats",
    "CoarseParams",
    "rotation_matrix",
    "project",
    "vertex_normals",
    "to_camera",
    "BasicBlock",
    "CoarseNet",
    "FeedbackRenderer",
    "IterativeCoarseNet",
    "CoarseTask",
    "Reconstruction",
    "reconstruct",
    "load_coarse",
    "build_task_from_state",
    "translation_to_cam",
    "cam_to_translation",
    "cluster_decimate",
    "encode_params",
    "decode_params",
]

log = logging.getLogger(__name__)

N_SH = 27  # 9 SH coefficients x RGB


# ---------------------------------------------------------------------------- parameter vector
@dataclasses.dataclass(frozen=True)
class ParamLayout:
    """Where each parameter group lives in the normalised parameter vector."""

    n_id: int
    """number of identity coefficients predicted (the first components of the model)."""
    n_exp: int
    """number of expression coefficients predicted."""
    n_alb: int = 0
    """number of albedo coefficients predicted (0 = no albedo head)."""
    n_sh: int = 0
    """27 to predict the SH lighting (9 x RGB), 0 = no SH head."""

    def __post_init__(self) -> None:
        for name in ("n_id", "n_exp", "n_alb"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.n_sh not in (0, N_SH):
            raise ValueError(f"n_sh must be 0 or {N_SH}, got {self.n_sh}")

    @property
    def dim(self) -> int:
        return self.n_id + self.n_exp + 6 + self.n_alb + self.n_sh

    def slices(self) -> dict[str, slice]:
        """Name -> slice into the ``(B, dim)`` vector, in vector order."""
        out, start = {}, 0
        for name, n in (("alpha_id", self.n_id), ("alpha_exp", self.n_exp), ("pose", 3),
                        ("cam", 3), ("beta", self.n_alb), ("sh", self.n_sh)):
            out[name] = slice(start, start + n)
            start += n
        return out


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
    beta: torch.Tensor | None = None  # (B, n_alb)
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
        translation=trans, beta=vec[:, s["beta"]] if layout.n_alb else None, sh=sh,
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
    if layout.n_alb:
        parts.append(_take(batch["beta"], layout.n_alb, "beta"))
    if layout.n_sh:
        sh = batch["sh"].reshape(-1, N_SH)
        parts.append((sh - stats.sh_mean.to(dev)) / stats.sh_std.to(dev))
    return torch.cat([p.float() for p in parts], dim=1)


def _take(x: torch.Tensor, k: int, name: str) -> torch.Tensor:
    if x.shape[1] < k:
        raise ValueError(f"{name} must have at least {k} coefficients, got {tuple(x.shape)}")
    return x[:, :k]


# ---------------------------------------------------------------------------- geometry (torch)
# rotation_matrix ((B, 3) pose -> (B, 3, 3)) and vertex_normals are synth.camera's and
# morphable_model.geometry's (one implementation each, numpy and torch), imported above.
def to_camera(vertices: torch.Tensor, pose: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Model-space ``vertices (B, N, 3)`` -> camera frame ``R v + t`` ``(B, N, 3)`` (:func:`synth.camera.to_camera`)."""
    if pose.ndim != 2 or pose.shape[1] != 3:
        raise ValueError(f"pose must be (B, 3), got {tuple(pose.shape)}")
    return camera.to_camera(vertices, rotation_matrix(pose), translation)


def project(points_cam: torch.Tensor, intrinsics: torch.Tensor, projection: str = "perspective") -> torch.Tensor:
    """Camera-frame points ``(B, N, 3)`` -> pixel ``(u, v)`` ``(B, N, 2)`` (docs/DESIGN.md).

    :func:`synth.camera.project` in the promoted dtype of ``points_cam`` and ``intrinsics``, with
    the perspective depth ``d = -p_z`` clamped to at least 1e-6 mm (points behind the camera stay
    finite).
    """
    if points_cam.ndim != 3 or points_cam.shape[-1] != 3:
        raise ValueError(f"points_cam must be (B, N, 3), got {tuple(points_cam.shape)}")
    if intrinsics.shape != (points_cam.shape[0], 3, 3):
        raise ValueError(f"intrinsics must be ({points_cam.shape[0]}, 3, 3), got {tuple(intrinsics.shape)}")
    camera.check_projection(projection)
    p = points_cam.to(torch.promote_types(points_cam.dtype, intrinsics.dtype))
    if projection == "perspective":  # d = -p_z >= 1e-6  <=>  p_z <= -1e-6
        p = torch.cat([p[..., :2], p[..., 2:].clamp_max(-1e-6)], dim=-1)
    return camera.project(p, intrinsics, projection)[0]


def cluster_decimate(vertices: np.ndarray, faces: np.ndarray, cell_mm: float) -> np.ndarray:
    """Vertex-clustering decimation (Rossignac & Borrel 1993) for cheap feedback rendering.

    Vertices ``(N, 3)`` (the mean shape) are grouped by a ``cell_mm`` grid; every vertex is replaced
    by the first vertex of its cell; triangles that collapse are dropped and duplicates removed.
    Returns faces ``(T', 3)`` int64 indexing the *original* vertices (so the model's coefficients,
    normals and PNCC colours apply unchanged), corner order (winding) preserved.
    ``cell_mm <= 0`` returns the faces unchanged.
    """
    faces = np.asarray(faces, np.int64)
    if cell_mm <= 0:
        return faces
    keys = np.floor(np.asarray(vertices, np.float64) / cell_mm).astype(np.int64)  # (N, 3) cell of each vertex
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    rep = first[inverse.reshape(-1)]  # (N,) representative (first) vertex of each vertex's cell
    f = rep[faces]  # (T, 3)
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    f = f[keep]
    _, first_tri = np.unique(np.sort(f, axis=1), axis=0, return_index=True)  # same triangle twice
    return f[np.sort(first_tri)]


# ---------------------------------------------------------------------------- network
class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN + (projected) shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        nn.init.zeros_(self.bn2.weight)  # each block starts as the identity (Goyal et al. 2017)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x), inplace=True)


class CoarseNet(nn.Module):
    """The CoarseNet CNN: ``(B, in_channels, H, W)`` -> parameter update ``(B, out_dim)``.

    7x7 conv (32, stride 2) -> 2 basic blocks at each of the widths 32, 64, 128, 256 (stride 2
    on the first block of the last three) -> 3x3 conv to ``out_dim`` channels -> global average
    pooling -> three fully connected layers. ``width_mult`` scales every width (tiny tests).
    The last FC layer starts at zero so the first update of an untrained net is 0.
    """

    def __init__(self, in_channels: int, out_dim: int, width_mult: float = 1.0, fc_width: int | None = None):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        widths = [max(4, int(round(w * width_mult))) for w in (32, 64, 128, 256)]
        fc_width = fc_width or max(32, 2 * widths[-1])
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks += [BasicBlock(cin, w, stride=1 if i == 0 else 2), BasicBlock(w, w)]
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.head_conv = nn.Sequential(nn.Conv2d(cin, out_dim, 3, 1, 1, bias=False), nn.BatchNorm2d(out_dim), nn.ReLU(inplace=True))
        self.fc = nn.Sequential(
            nn.Linear(out_dim, fc_width), nn.ReLU(inplace=True),
            nn.Linear(fc_width, fc_width), nn.ReLU(inplace=True),
            nn.Linear(fc_width, out_dim),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.fc[-1].weight)
        nn.init.zeros_(self.fc[-1].bias)
        self.in_channels, self.out_dim = in_channels, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        y = self.head_conv(self.blocks(self.stem(x)))  # (B, out_dim, h, w)
        return self.fc(y.mean(dim=(2, 3)))  # GAP -> (B, out_dim) -> FC x3


# ---------------------------------------------------------------------------- feedback rendering
class FeedbackRenderer(nn.Module):
    """Renders the PNCC and normal maps of a parameter estimate (no gradient, float32).

    Holds the morphable model as a ``MorphableModelModule`` (non-persistent buffers: checkpoints
    keep only network weights) plus the faces and PNCC colours; ``cell_mm > 0`` rasterizes a
    vertex-clustered mesh (:func:`cluster_decimate`). ``vertices(alpha_id, alpha_exp)``
    reconstructs model-space vertices from (truncated) coefficients; ``forward(params,
    intrinsics, size)`` returns ``(B, 6, H, W)``: PNCC (3, in [0, 1]) then camera-frame normals
    (3, unit, 0 off the mesh).
    """

    def __init__(self, model, projection: str = "perspective", cell_mm: float = 0.0):
        super().__init__()
        self.morph = MorphableModelModule(model)
        self.register_buffer("faces", torch.tensor(np.array(model.triangles, np.int64)), persistent=False)
        # the feedback maps may be rasterized from a decimated mesh (cell_mm > 0): same surface
        # within ~cell_mm, fewer triangles (and cheaper normals, computed on the same mesh)
        self.register_buffer("render_faces", torch.tensor(cluster_decimate(model.mean_shape, model.triangles, cell_mm)),
                             persistent=False)
        self.cell_mm = float(cell_mm)
        self.register_buffer("pncc", torch.tensor(np.array(model.pncc_colors, np.float32)), persistent=False)
        lm = model.landmarks if model.landmarks is not None else np.zeros(0, np.int64)
        self.register_buffer("landmarks", torch.tensor(np.array(lm, np.int64)), persistent=False)
        self.n_id_full, self.n_exp_full = model.n_id, model.n_exp
        self.projection = projection

    def vertices(self, alpha_id: torch.Tensor, alpha_exp: torch.Tensor) -> torch.Tensor:
        """Model-space vertices ``(B, N, 3)`` mm; missing (truncated) coefficients are 0."""
        b = alpha_id.shape[0]
        a_id = F.pad(alpha_id.float(), (0, self.n_id_full - alpha_id.shape[1]))
        a_exp = F.pad(alpha_exp.float(), (0, self.n_exp_full - alpha_exp.shape[1])) if self.n_exp_full else alpha_exp.new_zeros(b, 0)
        return self.morph(a_id, a_exp)

    @torch.no_grad()
    def forward(self, params: CoarseParams, intrinsics: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        from . import depth_render

        dev_type = intrinsics.device.type
        with torch.autocast(device_type=dev_type, enabled=False):
            verts = self.vertices(params.alpha_id.detach(), params.alpha_exp.detach())  # (B, N, 3)
            pose, trans = params.pose.detach().float(), params.translation.detach().float()
            cam = to_camera(verts, pose, trans)  # (B, N, 3)
            normals = vertex_normals(verts, self.render_faces)  # model frame (B, N, 3), rendered mesh
            normals = torch.einsum("bnj,bij->bni", normals, rotation_matrix(pose))  # camera frame
            frags = depth_render.rasterize(cam, self.render_faces, intrinsics.float(), size, projection=self.projection)
            b = verts.shape[0]
            attrs = torch.cat([self.pncc.expand(b, -1, -1), normals], dim=-1)  # (B, N, 6)
            maps = depth_render.interpolate(attrs, self.render_faces, frags)  # (B, H, W, 6)
            mask = frags.mask[..., None].to(maps.dtype)  # (B, H, W, 1)
            pncc = maps[..., :3] * mask
            nrm = F.normalize(maps[..., 3:], dim=-1, eps=1e-8) * mask
            return torch.cat([pncc, nrm], dim=-1).permute(0, 3, 1, 2).contiguous()  # (B, 6, H, W)


class IterativeCoarseNet(nn.Module):
    """CoarseNet applied ``iters`` times with feedback maps; one forward = all iterations
    (so DistributedDataParallel sees a single forward per step).

    ``forward(image (B,3,H,W) in [0,1], intrinsics (B,3,3) at this size, mask (B,H,W) or None)``
    returns the list of normalised estimates after each iteration, ``[(B, dim)] * iters``.
    """

    def __init__(self, model, layout: ParamLayout, stats: ParamStats, iters: int = 4,
                 width_mult: float = 1.0, projection: str = "perspective", mask_input: bool = True,
                 feedback_cell: float = 0.0):
        super().__init__()
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        self.layout, self.stats, self.iters, self.mask_input = layout, stats, iters, mask_input
        self.width_mult = width_mult
        self.net = CoarseNet(in_channels=9, out_dim=layout.dim, width_mult=width_mult)
        self.render = FeedbackRenderer(model, projection=projection, cell_mm=feedback_cell)

    def forward(self, image: torch.Tensor, intrinsics: torch.Tensor, mask: torch.Tensor | None = None,
                iters: int | None = None) -> list[torch.Tensor]:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
        b, _, h, w = image.shape
        if intrinsics.shape != (b, 3, 3):
            raise ValueError(f"intrinsics must be ({b}, 3, 3), got {tuple(intrinsics.shape)}")
        x_img = image if (mask is None or not self.mask_input) else image * mask[:, None].to(image.dtype)
        est = image.new_zeros(b, self.layout.dim, dtype=torch.float32)  # iteration 0: mean face, mean pose
        out = []
        for _ in range(iters or self.iters):
            p = decode_params(est, self.layout, self.stats, intrinsics.float(), (h, w), self.render.projection)
            fb = self.render(p, intrinsics, (h, w))  # (B, 6, H, W)
            x = torch.cat([x_img, fb.to(x_img.dtype)], dim=1)  # (B, 9, H, W)
            if x.is_cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            delta = self.net(x)
            est = est + delta.float()
            out.append(est)
        return out


# ---------------------------------------------------------------------------- task for the trainer
class CoarseTask:
    """What the shared trainer needs for phase 1: model, batch preparation, loss, metrics.

    ``model`` is an :class:`IterativeCoarseNet`; ``loss(model_out, batch)`` returns a
    :class:`train.losses.LossOutput`; ``metrics(model_out, batch)`` returns per-sample metric
    tensors (summed by the trainer over the validation set).
    """

    name = "coarse"

    def __init__(self, model, layout: ParamLayout, stats: ParamStats, iters: int = 4, width_mult: float = 1.0,
                 projection: str = "perspective", mask_input: bool = True, loss_weights=None,
                 feedback_cell: float = 0.0):
        from .losses import CoarseLoss, LossWeights

        self.morph_model = model
        self.layout, self.stats, self.projection = layout, stats, projection
        self.model = IterativeCoarseNet(model, layout, stats, iters=iters, width_mult=width_mult,
                                        projection=projection, mask_input=mask_input, feedback_cell=feedback_cell)
        self.criterion = CoarseLoss(model, layout, stats, weights=loss_weights or LossWeights(), projection=projection)
        self.iters = iters

    def to(self, device) -> "CoarseTask":
        self.model.to(device)
        if torch.device(device).type == "cuda":  # NHWC convolutions: faster with bf16 tensor cores
            self.model.net.to(memory_format=torch.channels_last)
        self.criterion.to(device)
        return self

    def prepare_batch(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """Move a loader batch to ``device``; uint8 images become float in [0, 1] with their
        colour jitter applied (:func:`train.data.image_to_float`)."""
        from .data import image_to_float

        out = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        out["image"] = image_to_float(out["image"], out.pop("color", None))
        return out

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> list[torch.Tensor]:
        return model(batch["image"], batch["intrinsics"], batch.get("mask"))

    def loss(self, out: list[torch.Tensor], batch: dict[str, Any]):
        return self.criterion(out, batch)

    @torch.no_grad()
    def metrics(self, out: list[torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        from .metrics import coarse_metrics

        return coarse_metrics(self, out, batch)

    def extra_state(self) -> dict[str, Any]:
        """Stored in checkpoints so ``reconstruct`` can rebuild the network."""
        return {"layout": dataclasses.asdict(self.layout), "stats": self.stats.to_dict(),
                "iters": self.model.iters, "projection": self.projection,
                "width_mult": self.model.width_mult, "mask_input": self.model.mask_input,
                "feedback_cell": self.model.render.cell_mm}


# ---------------------------------------------------------------------------- inference
@dataclasses.dataclass
class Reconstruction:
    """Output of :func:`reconstruct` for a batch of B images (all torch, on the model's device)."""

    params: list[CoarseParams]
    """physical parameters after each iteration (``len == iters``)."""
    vertices: torch.Tensor
    """(B, N, 3) model-space vertices (mm) of the final estimate."""
    vertices_cam: torch.Tensor
    """(B, N, 3) camera-frame vertices of the final estimate."""
    depth: torch.Tensor
    """(B, H, W) rendered depth (mm along the optical axis, 0 off the face)."""
    mask: torch.Tensor
    """(B, H, W) bool, where the face covers the image."""


@torch.no_grad()
def reconstruct(model: IterativeCoarseNet, image: torch.Tensor, intrinsics: torch.Tensor,
                mask: torch.Tensor | None = None, iters: int | None = None) -> Reconstruction:
    """Images ``(B, 3, H, W)`` in [0, 1] (at the network's input size) with their intrinsics
    ``(B, 3, 3)`` (at that size) -> parameters per iteration, vertices and a depth map."""
    from . import depth_render

    was_training = model.training
    model.eval()
    try:
        ests = model(image, intrinsics, mask, iters=iters)
    finally:
        model.train(was_training)
    size = tuple(image.shape[-2:])
    params = [decode_params(e, model.layout, model.stats, intrinsics.float(), size, model.render.projection) for e in ests]
    last = params[-1]
    verts = model.render.vertices(last.alpha_id, last.alpha_exp)
    cam = to_camera(verts, last.pose, last.translation)
    frags = depth_render.rasterize(cam, model.render.faces, intrinsics.float(), size,
                                   projection=model.render.projection)
    return Reconstruction(params=params, vertices=verts, vertices_cam=cam, depth=frags.depth, mask=frags.mask)


def build_task_from_state(model, task_state: dict[str, Any], loss_weights=None) -> CoarseTask:
    """Rebuild the :class:`CoarseTask` a checkpoint's ``task_state`` describes."""
    layout = ParamLayout(**task_state["layout"])
    stats = ParamStats.from_dict(task_state["stats"])
    return CoarseTask(model, layout, stats, iters=int(task_state["iters"]), width_mult=float(task_state["width_mult"]),
                      projection=task_state["projection"], mask_input=bool(task_state["mask_input"]),
                      loss_weights=loss_weights, feedback_cell=float(task_state.get("feedback_cell", 0.0)))


def load_coarse(path, model=None, device: str | torch.device = "cpu") -> IterativeCoarseNet:
    """An :class:`IterativeCoarseNet` loaded from a training checkpoint (``.pt``, safe loader) or
    exported weights (``.safetensors``), in eval mode, ready for :func:`reconstruct`. ``model``
    defaults to ``morphable_model.load_model(config['model'])``; its fingerprint must match the
    checkpoint's."""
    from .checkpoint import load_inference_checkpoint

    ck = load_inference_checkpoint(path, task="coarse")
    if model is None:
        from morphable_model import load_model

        model = load_model(ck["config"].get("model"))
    if model.fingerprint != ck["model_fingerprint"]:
        from .checkpoint import CheckpointError

        raise CheckpointError(f"checkpoint {path} was trained with morphable model {ck['model_fingerprint'][:12]}..., "
                              f"the model given is {model.fingerprint[:12]}...")
    task = build_task_from_state(model, ck["task_state"])
    task.model.load_state_dict(ck["model"])
    return task.model.to(device).eval()
