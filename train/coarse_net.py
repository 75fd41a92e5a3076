"""CoarseNet: an iterative ResNet regressing morphable-model parameters (Richardson et al. 2017).

Each iteration sees the (masked) image concatenated with the PNCC and normal maps rendered
from the previous estimate (the mean face at the mean pose before the first iteration) and
predicts an *update* to the parameter vector (:mod:`train.params`). The feedback rendering is
not back-propagated through (as in the paper); the estimate itself is the running sum of the
updates, so the loss of iteration k also reaches the updates of iterations < k through that sum.
One set of weights serves every iteration.

Layout of this module: the vertex-clustering decimation of the feedback mesh
(``cluster_decimate``), the network blocks (``BasicBlock``, ``CoarseNet``), the feedback
renderer and the iterative model (``FeedbackRenderer``, ``IterativeCoarseNet``). Training lives
in :mod:`train.coarse_task`, inference (``reconstruct``, ``load_coarse``) in :mod:`train.inference`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from morphable_model.geometry import vertex_normals
from morphable_model.torch_model import MorphableModelModule
from synth import camera

from . import depth_render
from .params import CoarseParams, ParamLayout, ParamStats, decode_params

__all__ = [
    "cluster_decimate",
    "BasicBlock",
    "CoarseNet",
    "FeedbackRenderer",
    "IterativeCoarseNet",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- feedback mesh
def cluster_decimate(vertices: np.ndarray, triangles: np.ndarray, cell_mm: float) -> np.ndarray:
    """Vertex-clustering decimation (Rossignac & Borrel 1993) for cheap feedback rendering.

    Vertices ``(N, 3)`` (the mean shape) are grouped by a ``cell_mm`` grid; every vertex is replaced
    by the first vertex of its cell; triangles that collapse are dropped and duplicates removed.
    Returns triangles ``(T', 3)`` int64 indexing the *original* vertices (so the model's coefficients,
    normals and PNCC colours apply unchanged), corner order (winding) preserved.
    ``cell_mm <= 0`` returns the triangles unchanged.
    """
    triangles = np.asarray(triangles, np.int64)
    if cell_mm <= 0:
        return triangles
    keys = np.floor(np.asarray(vertices, np.float64) / cell_mm).astype(np.int64)  # (N, 3) cell of each vertex
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    rep = first[inverse.reshape(-1)]  # (N,) representative (first) vertex of each vertex's cell
    f = rep[triangles]  # (T, 3)
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
    keep only network weights) plus the triangles and PNCC colours; ``cell_mm > 0`` rasterizes a
    vertex-clustered mesh (:func:`cluster_decimate`). ``vertices(alpha_id, alpha_exp)``
    reconstructs model-space vertices from (truncated) coefficients; ``forward(params,
    intrinsics, size)`` returns ``(B, 6, H, W)``: PNCC (3, in [0, 1]) then camera-frame normals
    (3, unit, 0 off the mesh).
    """

    def __init__(self, model, projection: str = "perspective", cell_mm: float = 0.0):
        super().__init__()
        self.morph = MorphableModelModule(model)
        self.register_buffer("triangles", torch.tensor(np.array(model.triangles, np.int64)), persistent=False)
        # the feedback maps may be rasterized from a decimated mesh (cell_mm > 0): same surface
        # within ~cell_mm, fewer triangles (and cheaper normals, computed on the same mesh)
        self.register_buffer("render_triangles", torch.tensor(cluster_decimate(model.mean_shape, model.triangles, cell_mm)),
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
        dev_type = intrinsics.device.type
        with torch.autocast(device_type=dev_type, enabled=False):
            verts = self.vertices(params.alpha_id.detach(), params.alpha_exp.detach())  # (B, N, 3)
            pose, trans = params.pose.detach().float(), params.translation.detach().float()
            rot = camera.rotation_matrix(pose)  # (B, 3, 3)
            cam = camera.to_camera(verts, rot, trans)  # (B, N, 3)
            normals = vertex_normals(verts, self.render_triangles)  # model frame (B, N, 3), rendered mesh
            normals = torch.einsum("bnj,bij->bni", normals, rot)  # (B, N, 3) x (B, 3, 3)^T: camera frame
            frags = depth_render.rasterize(cam, self.render_triangles, intrinsics.float(), size, projection=self.projection)
            b = verts.shape[0]
            attrs = torch.cat([self.pncc.expand(b, -1, -1), normals], dim=-1)  # (B, N, 6)
            maps = depth_render.interpolate(attrs, self.render_triangles, frags)  # (B, H, W, 6)
            mask = frags.mask[..., None].to(maps.dtype)  # (B, H, W, 1)
            pncc = maps[..., :3] * mask
            nrm = F.normalize(maps[..., 3:], dim=-1, eps=1e-8) * mask
            return torch.cat([pncc, nrm], dim=-1).permute(0, 3, 1, 2).contiguous()  # (B, 6, H, W)


class IterativeCoarseNet(nn.Module):
    """CoarseNet applied ``iters`` times with feedback maps; one forward = all iterations
    (so DistributedDataParallel sees a single forward per step).

    ``forward(image (B,3,H,W) in [0,1], intrinsics (B,3,3) at this size, mask (B,H,W) or None)``
    returns the list of normalised estimates after each iteration, ``[(B, dim)] * iters``.

    :meth:`hyperparameters` is what a checkpoint stores next to the weights (``task_state``) and
    :meth:`from_hyperparameters` rebuilds the same network from it and the morphable model.
    """

    def __init__(self, model, layout: ParamLayout, stats: ParamStats, *, iters: int, width_mult: float = 1.0,
                 projection: str = "perspective", mask_input: bool = True, feedback_cell: float = 0.0):
        super().__init__()
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        self.layout, self.stats, self.iters, self.mask_input = layout, stats, iters, mask_input
        self.width_mult = width_mult
        self.net = CoarseNet(in_channels=9, out_dim=layout.dim, width_mult=width_mult)
        self.render = FeedbackRenderer(model, projection=projection, cell_mm=feedback_cell)

    def hyperparameters(self) -> dict[str, Any]:
        """Everything besides the weights and the morphable model that defines this network."""
        return {"layout": self.layout.to_dict(), "stats": self.stats.to_dict(), "iters": self.iters,
                "projection": self.render.projection, "width_mult": self.width_mult,
                "mask_input": self.mask_input, "feedback_cell": self.render.cell_mm}

    @classmethod
    def from_hyperparameters(cls, model, hp: dict[str, Any]) -> "IterativeCoarseNet":
        """The network :meth:`hyperparameters` describes (untrained: load the weights after)."""
        return cls(model, ParamLayout.from_dict(hp["layout"]), ParamStats.from_dict(hp["stats"]),
                   iters=int(hp["iters"]), width_mult=float(hp["width_mult"]), projection=hp["projection"],
                   mask_input=bool(hp["mask_input"]), feedback_cell=float(hp.get("feedback_cell", 0.0)))

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
