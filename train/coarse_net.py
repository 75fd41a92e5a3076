"""CoarseNet: an iterative ResNet regressing morphable-model parameters (Richardson et al. 2017).

Each iteration sees the image crop (background included: nothing a photo does not give)
concatenated with the PNCC and normal maps rendered from the previous estimate (the mean face at
the mean pose before the first iteration) and predicts an *update* to the parameter vector
(:mod:`train.params`). The feedback rendering is
not back-propagated through (as in the paper); the estimate itself is the running sum of the
updates, so the loss of iteration k also reaches the updates of iterations < k through that sum.
One set of convolution weights serves every iteration; the normalisation layers may differ per
iteration (``norm``: the inputs of iteration 1, fed the mean face, and of iteration 4, fed an
almost-right face, have different feature statistics).

With ``landmark_init`` the first pass also predicts the 68 landmarks (``LandmarkHead``: heatmaps
on a small feature pyramid, soft-argmax), and the iterations start from the morphable model fitted
to them (:mod:`train.landmark_fit`) instead of from the mean face at the mean pose.

Layout of this module: the vertex-clustering decimation of the feedback mesh
(``cluster_decimate``), the normalisation layers (``NORMS``, ``make_norm``,
``IterationBatchNorm2d``), the network blocks (``BasicBlock``, ``CoarseNet``, ``LandmarkHead``,
``soft_argmax``), the feedback
renderer and the iterative model (``FeedbackRenderer``, ``IterativeCoarseNet``). Training lives
in :mod:`train.coarse_task`, inference (``reconstruct``, ``load_coarse``) in :mod:`train.inference`.
"""

from __future__ import annotations

import logging
import re
from typing import Any, get_args

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from morphable_model.geometry import vertex_normals
from morphable_model.landmarks import mirror_permutation
from morphable_model.torch_model import MorphableModelModule
from synth import camera

from . import depth_render
from .checkpoint import CheckpointError
from .config import Norm
from .landmark_fit import fit_landmarks
from .params import CoarseParams, ParamLayout, ParamStats, decode_params, translation_to_cam

__all__ = [
    "cluster_decimate",
    "NORMS",
    "make_norm",
    "IterationBatchNorm2d",
    "BasicBlock",
    "CoarseNet",
    "LandmarkHead",
    "soft_argmax",
    "mirror_points",
    "FeedbackRenderer",
    "refuse_oracle_input",
    "IterativeCoarseNet",
    "HYPERPARAMETER_DEFAULTS",
]

log = logging.getLogger(__name__)

HYPERPARAMETER_DEFAULTS = {"feedback_cell": 0.0, "norm": "batch", "landmark_init": False}
"""What :meth:`IterativeCoarseNet.from_hyperparameters` assumes for the keys older checkpoints lack
(written before ``--feedback-cell``, ``--norm`` and ``--landmark-init`` existed)."""
FIT_CLAMP = 6.0
"""Bound (prior stds) on each entry of a landmark-fitted estimate (:meth:`IterativeCoarseNet.fit_estimate`)."""
FIT_SIGMA = 0.02
"""The landmark noise (fraction of the image width) the landmark fit assumes (its ridge weight,
:func:`train.landmark_fit.fit_landmarks`): on held-out renders with 2 % noise added to the true
landmarks, 0.02-0.05 fit best."""
DETECTOR_FIT_WEIGHTS = tuple(0.1 if k < 17 else 1.0 for k in range(68))
"""Weight of each iBUG point when a face detector's points (``fit_points``, :mod:`train.detector`)
are fitted: the jaw (0-16) counts a tenth. The detector's jaw follows the visible outline of the
face, as iBUG defines it, while the model's jaw points are fixed vertices: on renders the two lie
up to half an outer-eye distance apart (``benchmarks/landmark_convention.py``), and fitting them
as much as the inner points pulls the whole face. On four photos with hand-placed points the
reconstruction's NME51 against them fell from 0.074 to 0.065 (mean; weight 0: 0.063, but the jaw
itself drifts, median NME68 0.102 -> 0.122; 0.1 keeps it at 0.103; chosen on these four faces among
0, 0.1 and 0.3): docs/experiments.md, "Fitting a detector's points, weighted". The landmark head's
own points are the model's: all count alike."""


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


# ---------------------------------------------------------------------------- normalisation
NORMS = get_args(Norm)
"""The normalisations (:data:`train.config.Norm`, the ``--norm`` choices): ``batch``: one BatchNorm shared by every iteration; ``iter_batch``: one BatchNorm per iteration
(:class:`IterationBatchNorm2d`); ``group``: GroupNorm (no batch statistics at all)."""


class IterationBatchNorm2d(nn.Module):
    """One ``BatchNorm2d`` per CoarseNet iteration: ``forward(x, iteration)`` normalises with the
    statistics and affine parameters of ``iteration`` (0-based; iterations past the last trained
    one use the last)."""

    def __init__(self, num_features: int, iters: int):
        super().__init__()
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        self.bns = nn.ModuleList(nn.BatchNorm2d(num_features) for _ in range(iters))

    def forward(self, x: torch.Tensor, iteration: int = 0) -> torch.Tensor:
        return self.bns[min(iteration, len(self.bns) - 1)](x)

    # a tensor of this layer in a state dict: <layer>.bns.<iteration>.<name>
    STATE_KEY = re.compile(r"(?P<layer>.+)\.bns\.(?P<it>\d+)\.(?P<name>[^.]+)$")

    @classmethod
    def norms_for_extra_iterations(cls, own: dict[str, torch.Tensor],
                                   theirs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """For a network's state dict ``own`` with more iterations than the checkpoint's ``theirs``
        (``--init`` a 2-iteration run into ``--iters 3``): the per-iteration norm tensors ``theirs``
        lacks, copied from its last iteration's, which is what the checkpoint itself runs for the
        extra iterations (:meth:`forward`)."""
        last: dict[str, int] = {}
        for k in theirs:
            m = cls.STATE_KEY.match(k)
            if m:
                last[m["layer"]] = max(last.get(m["layer"], -1), int(m["it"]))
        extra = {}
        for k, v in own.items():
            m = cls.STATE_KEY.match(k)
            if m and k not in theirs and m["layer"] in last and int(m["it"]) > last[m["layer"]]:
                src = theirs.get(f"{m['layer']}.bns.{last[m['layer']]}.{m['name']}")
                if src is not None and tuple(src.shape) == tuple(v.shape):
                    extra[k] = src
        return extra


def group_count(channels: int, max_groups: int = 16) -> int:
    """GroupNorm groups for ``channels``: the largest divisor of ``channels`` <= ``max_groups``."""
    return max(g for g in range(1, max_groups + 1) if channels % g == 0)


def make_norm(kind: str, channels: int, iters: int = 1) -> nn.Module:
    """The normalisation layer ``kind`` (one of :data:`NORMS`) for ``channels`` channels."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "iter_batch":
        return IterationBatchNorm2d(channels, iters)
    if kind == "group":
        return nn.GroupNorm(group_count(channels), channels)
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")


def _norm(layer: nn.Module, x: torch.Tensor, iteration: int) -> torch.Tensor:
    return layer(x, iteration) if isinstance(layer, IterationBatchNorm2d) else layer(x)


def _zero_gamma(layer: nn.Module) -> None:
    """Zero the scale of a normalisation layer (each residual block starts as the identity,
    Goyal et al. 2017)."""
    for m in layer.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.zeros_(m.weight)


# ---------------------------------------------------------------------------- network
class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-norm-ReLU-conv3x3-norm + (projected) shortcut, ReLU.
    ``forward(x, iteration)``: the iteration selects per-iteration norms (:func:`make_norm`)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, norm: str = "batch", iters: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = make_norm(norm, cout, iters)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = make_norm(norm, cout, iters)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), make_norm(norm, cout, iters))
        _zero_gamma(self.bn2)

    def forward(self, x: torch.Tensor, iteration: int = 0) -> torch.Tensor:
        y = F.relu(_norm(self.bn1, self.conv1(x), iteration), inplace=True)
        y = _norm(self.bn2, self.conv2(y), iteration)
        s = x if isinstance(self.shortcut, nn.Identity) else _norm(self.shortcut[1], self.shortcut[0](x), iteration)
        return F.relu(y + s, inplace=True)


class CoarseNet(nn.Module):
    """The CoarseNet CNN: ``(B, in_channels, H, W)`` -> parameter update ``(B, out_dim)``.

    7x7 conv (32, stride 2) -> 2 basic blocks at each of the widths 32, 64, 128, 256 (stride 2
    on the first block of the last three) -> 3x3 conv to ``out_dim`` channels -> global average
    pooling -> three fully connected layers. ``width_mult`` scales every width (tiny tests);
    ``norm`` picks the normalisation layers (:data:`NORMS`; ``iter_batch`` keeps ``iters`` sets).
    The last FC layer starts at zero so the first update of an untrained net is 0.
    """

    def __init__(self, in_channels: int, out_dim: int, width_mult: float = 1.0, fc_width: int | None = None,
                 norm: str = "batch", iters: int = 1):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        widths = [max(4, int(round(w * width_mult))) for w in (32, 64, 128, 256)]
        fc_width = fc_width or max(32, 2 * widths[-1])
        # Sequential containers keep the state-dict keys of the shared-BatchNorm network
        # (stem.0 conv, stem.1 norm; head_conv.0 conv, head_conv.1 norm); forward calls their parts
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False), make_norm(norm, widths[0], iters), nn.ReLU(inplace=True)
        )
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks += [BasicBlock(cin, w, 1 if i == 0 else 2, norm, iters), BasicBlock(w, w, 1, norm, iters)]
            cin = w
        self.blocks = nn.ModuleList(blocks)
        self.head_conv = nn.Sequential(nn.Conv2d(cin, out_dim, 3, 1, 1, bias=False), make_norm(norm, out_dim, iters),
                                       nn.ReLU(inplace=True))
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
        self.in_channels, self.out_dim, self.norm = in_channels, out_dim, norm

    def forward(self, x: torch.Tensor, iteration: int = 0, features: bool = False):
        """``iteration`` (0-based) selects the per-iteration norms of ``norm="iter_batch"``.
        Returns the update ``(B, out_dim)``; with ``features``, ``(update, [the output of each of
        the 4 stages])`` (strides 2, 4, 8, 16 of the input) for :class:`LandmarkHead`."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        y = F.relu(_norm(self.stem[1], self.stem[0](x), iteration), inplace=True)
        stages = []
        for i, block in enumerate(self.blocks):
            y = block(y, iteration)
            if i % 2 == 1:
                stages.append(y)
        y = F.relu(_norm(self.head_conv[1], self.head_conv[0](y), iteration), inplace=True)  # (B, out_dim, h, w)
        update = self.fc(y.mean(dim=(2, 3)))  # GAP -> (B, out_dim) -> FC x3
        return (update, stages) if features else update

    @property
    def widths(self) -> list[int]:
        """Channels of the 4 stages."""
        return [self.blocks[2 * i].conv2.out_channels for i in range(4)]


class LandmarkHead(nn.Module):
    """The 68 landmarks as heatmaps on CoarseNet's features, read out by a soft-argmax.

    A small feature pyramid (Lin et al. 2017) over the outputs of stages 2-4 (strides 4, 8, 16):
    1x1 lateral convolutions to ``channels``, top-down nearest upsampling and addition, a 3x3
    convolution, normalisation, ReLU and a 1x1 convolution to one heatmap per point at stride 4.
    Each heatmap's softmax over the pixels weights the pixel centres (integral regression, Sun et
    al. 2018): ``(B, n_points, 2)`` image points in pixels (u right, v down, pixel centres at
    ``j + 0.5``), differentiable, sub-cell precise.
    """

    def __init__(self, widths: list[int], channels: int, n_points: int = 68, norm: str = "batch"):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(w, channels, 1) for w in widths[1:])
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.norm = make_norm("batch" if norm == "iter_batch" else norm, channels)
        self.out = nn.Conv2d(channels, n_points, 1)
        self.n_points = n_points

    def forward(self, stages: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        feats = [lat(f) for lat, f in zip(self.lateral, stages[1:])]  # strides 4, 8, 16
        y = feats[-1]
        for f in reversed(feats[:-1]):
            y = f + F.interpolate(y, size=f.shape[-2:], mode="nearest")
        y = F.relu(self.norm(self.conv(y)), inplace=True)
        return soft_argmax(self.out(y).float(), size)


def soft_argmax(heat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Heatmap logits ``(B, P, h, w)`` over an image of ``size`` (H, W) -> the expected pixel
    ``(B, P, 2)`` (u, v) under each map's softmax, each cell standing for its centre (the
    project's pixel convention: pixel ``j`` covers ``[j, j + 1)``, centre ``j + 0.5``)."""
    b, p, hh, ww = heat.shape
    prob = torch.softmax(heat.reshape(b, p, -1), dim=-1).reshape(b, p, hh, ww)
    h, w = size
    xs = (torch.arange(ww, device=heat.device, dtype=heat.dtype) + 0.5) * (w / ww)  # cell centres, pixels
    ys = (torch.arange(hh, device=heat.device, dtype=heat.dtype) + 0.5) * (h / hh)
    u = (prob.sum(2) * xs).sum(-1)  # (B, P): marginal over rows, then the expectation
    v = (prob.sum(3) * ys).sum(-1)
    return torch.stack([u, v], dim=-1)


def mirror_points(points: torch.Tensor, width: float, partner: torch.Tensor) -> torch.Tensor:
    """Image points ``(B, P, 2)`` (pixels, u right) of a face -> those of its mirror image in an
    image ``width`` pixels wide: ``u -> width - u`` (pixel ``j`` covers ``[j, j + 1)``) and each
    point swapped with its mirror partner (``partner[i]``, an involution such as
    :func:`morphable_model.landmarks.mirror_permutation`)."""
    return torch.stack([width - points[..., 0], points[..., 1]], dim=-1)[:, partner]


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


def refuse_oracle_input(hp: dict[str, Any], source: str = "the checkpoint") -> None:
    """``CheckpointError`` when ``hp`` (a checkpoint's ``task_state``) describes a network trained
    with the ground-truth face mask multiplied into its input image (the removed ``mask_input``
    option): its weights expect an input no photo provides."""
    if hp.get("mask_input"):
        raise CheckpointError(f"{source} was trained with an oracle input (the ground-truth face mask multiplied "
                              "into the image, mask_input=True), which no photo provides; retrain it")


class IterativeCoarseNet(nn.Module):
    """CoarseNet applied ``iters`` times with feedback maps; one forward = all iterations
    (so DistributedDataParallel sees a single forward per step).

    ``forward(image (B,3,H,W) in [0,1], intrinsics (B,3,3) at this size)`` returns the list of
    normalised estimates after each iteration, ``[(B, dim)] * iters``. The input is the image
    crop as a photo gives it and the feedback maps of the network's own estimate; no ground
    truth (masks, depth, parameters) enters it.

    :meth:`hyperparameters` is what a checkpoint stores next to the weights (``task_state``) and
    :meth:`from_hyperparameters` rebuilds the same network from it and the morphable model.
    """

    def __init__(self, model, layout: ParamLayout, stats: ParamStats, *, iters: int, width_mult: float = 1.0,
                 projection: str = "perspective", feedback_cell: float = 0.0, norm: str = "batch",
                 landmark_init: bool = False, flip_test: bool = False):
        super().__init__()
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        self.layout, self.stats, self.iters = layout, stats, iters
        self.width_mult = width_mult
        self.net = CoarseNet(in_channels=9, out_dim=layout.dim, width_mult=width_mult, norm=norm, iters=iters)
        self.render = FeedbackRenderer(model, projection=projection, cell_mm=feedback_cell)
        self.landmark_head: LandmarkHead | None = None
        self.flip_test = flip_test
        """In eval mode, average the landmark head's points with those of the mirrored image
        (:meth:`mirrored_points`); an inference setting, not a hyperparameter of the weights."""
        if landmark_init:
            if model.landmarks is None or len(model.landmarks) != 68:
                n = 0 if model.landmarks is None else len(model.landmarks)
                raise ValueError(f"--landmark-init needs a morphable model with 68 landmark vertices, this one has {n} "
                                 "(give the model a landmark file, or train with --no-landmark-init)")
            self.landmark_head = LandmarkHead(self.net.widths, max(16, self.net.widths[2]), 68, norm)
            # the landmark vertices of the mean and of the bases (mm per std unit) for the fit
            m, lm = self.render.morph, self.render.morph.landmarks
            self.register_buffer("fit_mean", m.mean_shape[lm].clone(), persistent=False)
            self.register_buffer("fit_id", (m.id_basis[:, :layout.n_id] * m.id_std[:layout.n_id])
                                 .reshape(-1, 3, layout.n_id)[lm].clone(), persistent=False)
            self.register_buffer("fit_exp", (m.exp_basis[:, :layout.n_exp] * m.exp_std[:layout.n_exp])
                                 .reshape(-1, 3, layout.n_exp)[lm].clone(), persistent=False)
            self.register_buffer("mirror", torch.from_numpy(mirror_permutation()), persistent=False)

    def hyperparameters(self) -> dict[str, Any]:
        """Everything besides the weights and the morphable model that defines this network."""
        return {"layout": self.layout.to_dict(), "stats": self.stats.to_dict(), "iters": self.iters,
                "projection": self.render.projection, "width_mult": self.width_mult,
                "feedback_cell": self.render.cell_mm, "norm": self.net.norm,
                "landmark_init": self.landmark_head is not None}

    @classmethod
    def from_hyperparameters(cls, model, hp: dict[str, Any], source: str = "the checkpoint") -> "IterativeCoarseNet":
        """The network :meth:`hyperparameters` describes (untrained: load the weights after);
        ``CheckpointError`` naming ``source`` for a network trained with an oracle input
        (:func:`refuse_oracle_input`)."""
        refuse_oracle_input(hp, source)
        hp = {**HYPERPARAMETER_DEFAULTS, **hp}
        return cls(model, ParamLayout.from_dict(hp["layout"]), ParamStats.from_dict(hp["stats"]),
                   iters=int(hp["iters"]), width_mult=float(hp["width_mult"]), projection=hp["projection"],
                   feedback_cell=float(hp["feedback_cell"]), norm=str(hp["norm"]),
                   landmark_init=bool(hp["landmark_init"]))

    @torch.no_grad()
    def fit_estimate(self, points: torch.Tensor, intrinsics: torch.Tensor, size: tuple[int, int],
                     weights: torch.Tensor | None = None) -> torch.Tensor:
        """The normalised estimate ``(B, dim)`` of the morphable model fitted to the image points
        ``(B, 68, 2)`` (:func:`train.landmark_fit.fit_landmarks`, with the points' ``weights (B,
        68)`` when given; albedo and lighting slots 0). Clamped to +-:data:`FIT_CLAMP` prior stds so
        that points far from any face (an untrained head) give a finite estimate."""
        lay, st, dev = self.layout, self.stats, points.device
        with torch.autocast(device_type=dev.type, enabled=False):
            fit = fit_landmarks(points.float(), intrinsics.float(), self.fit_mean, self.fit_id, self.fit_exp,
                                projection=self.render.projection, sigma=FIT_SIGMA, weights=weights)
            cam = translation_to_cam(fit.translation, intrinsics.double(), size, self.render.projection)
            parts = [fit.alpha_id, fit.alpha_exp, (fit.pose - st.pose_mean.to(dev)) / st.pose_std.to(dev),
                     (cam - st.cam_mean.to(dev)) / st.cam_std.to(dev),
                     points.new_zeros(points.shape[0], lay.n_albedo + lay.n_sh, dtype=torch.float64)]
            vec = torch.cat(parts, dim=1).float()
            return torch.nan_to_num(vec, nan=0.0).clamp(-FIT_CLAMP, FIT_CLAMP)

    def mirrored_points(self, image: torch.Tensor, intrinsics: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
        """The landmark head's points ``(B, 68, 2)`` read off the mirrored image (test-time
        augmentation, ``flip_test``): the head sees ``image`` flipped left-right with the feedback
        maps of the first iteration's estimate ``est`` under the mirrored camera (principal point
        ``c_x -> W - c_x``), and its points are mirrored back (``u -> W - u``, each landmark
        swapped with its mirror partner, :func:`morphable_model.landmarks.mirror_permutation`)."""
        _, _, h, w = image.shape
        k = intrinsics.clone()
        k[:, 0, 2] = w - k[:, 0, 2]
        _, stages = self.net(self._input(image.flip(-1), k, est), 0, features=True)
        return mirror_points(self.landmark_head(stages, (h, w)), w, self.mirror)

    def _input(self, image: torch.Tensor, intrinsics: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
        """The network input ``(B, 9, H, W)``: the image and the feedback maps of ``est``."""
        size = tuple(image.shape[-2:])
        p = decode_params(est, self.layout, self.stats, intrinsics.float(), size, self.render.projection)
        x = torch.cat([image, self.render(p, intrinsics, size).to(image.dtype)], dim=1)
        return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x

    def forward(self, image: torch.Tensor, intrinsics: torch.Tensor, iters: int | None = None,
                return_landmarks: bool = False, fit_points: torch.Tensor | None = None):
        """The estimates after each iteration; with ``return_landmarks``, ``(estimates,
        landmarks)``: the landmark head's points ``(B, 68, 2)`` in pixels (None without a head).

        With a landmark head (``landmark_init``), the first iteration's estimate of shape, pose
        and camera is the morphable model fitted to the head's points (:meth:`fit_estimate`, no
        gradient through the fit: the head learns from its own landmark loss), its update
        supplies only albedo and lighting; the later iterations refine as usual. ``fit_points``
        ``(B, 68, 2)`` (pixels of ``image``: a face detector's on a photo) are fitted instead of the
        head's, with :data:`DETECTOR_FIT_WEIGHTS` (the jaw down-weighted), and the head's points are
        still returned; a row of NaN falls back to the head's points, all fitted (the mirrored
        reading of ``flip_test`` is then skipped unless some row needs it)."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
        b, _, h, w = image.shape
        if intrinsics.shape != (b, 3, 3):
            raise ValueError(f"intrinsics must be ({b}, 3, 3), got {tuple(intrinsics.shape)}")
        if fit_points is not None and self.landmark_head is None:
            raise ValueError("fit_points need a network with a landmark head (trained with --landmark-init)")
        if fit_points is not None and fit_points.shape != (b, 68, 2):
            raise ValueError(f"fit_points must be ({b}, 68, 2), got {tuple(fit_points.shape)}")
        est = image.new_zeros(b, self.layout.dim, dtype=torch.float32)  # iteration 0: mean face, mean pose
        out, points = [], None
        for it in range(iters or self.iters):
            x = self._input(image, intrinsics, est)  # (B, 9, H, W): image + PNCC and normals of est
            if it == 0 and self.landmark_head is not None:
                delta, stages = self.net(x, it, features=True)
                points = self.landmark_head(stages, (h, w))  # (B, 68, 2)
                fit = None if fit_points is None else fit_points.to(points)
                given = None if fit is None else torch.isfinite(fit).all(-1).all(-1)  # (B,) rows given
                if self.flip_test and not self.training and (given is None or not bool(given.all())):
                    points = 0.5 * (points + self.mirrored_points(image, intrinsics, est))
                keep = torch.zeros(self.layout.dim, device=est.device)  # the update's albedo and SH slots
                keep[self.layout.n_id + self.layout.n_exp + 6:] = 1.0
                fitted, weights = points.detach(), None
                if given is not None:
                    fitted = torch.where(given[:, None, None], torch.nan_to_num(fit), fitted)
                    if bool(given.any()):
                        det_w = torch.tensor(DETECTOR_FIT_WEIGHTS, dtype=torch.float64, device=est.device)
                        weights = torch.where(given[:, None], det_w, torch.ones_like(det_w))  # (B, 68)
                est = self.fit_estimate(fitted, intrinsics, (h, w), weights) + delta.float() * keep
            else:
                est = est + self.net(x, it).float()
            out.append(est)
        return (out, points) if return_landmarks else out
