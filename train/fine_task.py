"""Phase 2 for the shared trainer: FineNet on real photos (unsupervised) and synthetic shards.

* :func:`coarse_maps`: a CoarseNet estimate -> the rasterized coarse depth, its face mask and an
  albedo estimate, differentiable w.r.t. the estimate (so image -> CoarseNet -> depth -> FineNet
  trains end to end when asked);
* :class:`FineModel`: the module the trainer optimises: FineNet, plus CoarseNet when it is trained
  end to end (a frozen CoarseNet is held outside the module: not optimised, not in its state);
* :class:`FineTask`: batch preparation, :class:`train.losses.FineLoss`, the detail metrics and
  the checkpoint state, for :class:`train.trainer.Trainer`;
* :func:`train_fine` (``train-cli fine``) and :func:`evaluate_fine` (``train-cli evaluate --fine``).

Batches. Each step takes ``--batch-size`` photo crops (:class:`train.data.PhotoDataset`) and
``--synthetic-batch-size`` shard samples (:class:`train.data.DetailShardDataset`), either part
possibly absent, as one batch of rows with per-row flags:

* photo rows: the crop (sRGB), its intrinsics (assumed field of view), the detector's landmarks
  (NaN when it gave none); their coarse depth, mask and albedo estimate come from CoarseNet;
* synthetic rows: the render, its intrinsics and landmarks, and the ground truth: the detailed
  depth (E_sup, metrics) and — with ``--gt-coarse`` or without ``--coarse`` — the shards' coarse
  depth and mask, refined instead of CoarseNet's, with the shards' albedo for the lighting fit.

The network input holds only the image and the coarse estimate; ground truth reaches the losses
and the metrics only. Albedo estimate (``--albedo``): the model's mean albedo on the coarse mesh,
or CoarseNet's albedo head when it has one (``auto``: the head when present).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from morphable_model import load_model
from morphable_model.torch_model import MorphableModelModule
from synth import camera
from synth.color import srgb_to_linear

from . import depth_render
from .checkpoint import CheckpointError, load_inference_checkpoint
from .coarse_net import IterativeCoarseNet
from .config import EvaluateConfig, FineConfig
from .data import DetailShardDataset, EpochIndexed, PhotoDataset, image_to_float, make_eval_loader, make_train_loader
from .fine_net import FineNet
from .inference import load_coarse_checkpoint
from .losses import FineLoss, FineLossWeights, FineTargets, LossOutput, fine_targets, refine_mask
from .metrics import detail_depth_errors, detail_energies, detail_recovered, detail_share
from .params import decode_params
from .trainer import DistInfo, LoopConfig, Trainer, TrainResult, distributed, resolve_device, resume_state_for, validate

__all__ = ["CoarseMaps", "coarse_maps", "refinable_triangles", "refinable_pixels", "FineModel", "FineTask", "FineRows", "train_fine", "evaluate_fine",
           "build_fine_model"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- coarse depth
@dataclasses.dataclass
class CoarseMaps:
    """CoarseNet's estimate rendered at the network size."""

    depth: torch.Tensor
    """(B, H, W) mm, 0 off the face."""
    mask: torch.Tensor
    """(B, H, W) bool, pixels the coarse mesh covers."""
    albedo: torch.Tensor
    """(B, H, W, 3) linear albedo estimate, 0 off the face."""
    region: torch.Tensor
    """(B, H, W) bool, pixels on triangles FineNet refines (:func:`refinable_triangles`)."""


def refinable_triangles(model) -> np.ndarray:
    """``(T,)`` bool: triangles whose three vertices lie in the model's ``face_region`` (all
    vertices when it has none) and, with region labels, outside the eyes: where detail lives and
    the Lambertian shading model holds (not the scalp, ears, neck, mouth interior of the built-in
    model v3)."""
    v = np.ones(model.n_vertices, bool) if model.face_region is None else np.asarray(model.face_region, bool).copy()
    if model.regions is not None and "eyes" in model.region_names:
        v &= ~model.region_mask("eyes")
    return v[np.asarray(model.triangles)].all(axis=1)


def refinable_pixels(morph, refinable: torch.Tensor, alpha_id: torch.Tensor, alpha_exp: torch.Tensor, pose: torch.Tensor,
                  translation: torch.Tensor, intrinsics: torch.Tensor, size: tuple[int, int], projection: str
                  ) -> torch.Tensor:
    """``(B, H, W)`` bool: pixels of a mesh (coefficients, pose, translation; e.g. a sample's ground
    truth) that lie on ``refinable`` triangles (no gradient)."""
    with torch.no_grad(), torch.autocast(device_type=intrinsics.device.type, enabled=False):
        verts = morph(alpha_id.float(), alpha_exp.float())  # (B, N, 3)
        cam = camera.to_camera(verts, camera.rotation_matrix(pose.float()), translation.float())
        frags = depth_render.rasterize(cam, morph.triangles, intrinsics.float(), size, projection=projection)
        return frags.mask & refinable[frags.tri_id.clamp_min(0)]


class GroundTruthRegion:
    """The refinable pixels of shard rows' ground-truth meshes (:func:`refinable_pixels`),
    computed by the data loader (:class:`FineRows`) rather than in the training step: the
    rasterization of the whole mesh is about half a CPU step of FineNet on patches, and loader
    workers do it on another core. On a GPU the training step does it (``region_gt`` absent)."""

    def __init__(self, morph_model, projection: str):
        self.model, self.projection = morph_model, projection
        self._morph = self._refinable = None  # built on first use, in the process that uses them

    def __getstate__(self) -> dict[str, Any]:  # workers started by spawn receive the model, not its tensors
        return {**self.__dict__, "_morph": None, "_refinable": None}

    def __call__(self, rows: list[dict[str, Any]]) -> torch.Tensor:
        """``(B, H, W)`` bool for rows holding ``alpha_id``, ``alpha_exp``, ``pose``, ``translation``,
        ``intrinsics`` and ``image (3, H, W)``."""
        if self._morph is None:
            self._morph = MorphableModelModule(self.model)
            self._refinable = torch.tensor(refinable_triangles(self.model))
        x = {k: torch.stack([r[k] for r in rows]) for k in ("alpha_id", "alpha_exp", "pose", "translation", "intrinsics")}
        size = tuple(rows[0]["image"].shape[-2:])
        return refinable_pixels(self._morph, self._refinable, x["alpha_id"], x["alpha_exp"], x["pose"], x["translation"],
                                x["intrinsics"], size, self.projection)


def coarse_maps(net: IterativeCoarseNet, estimate: torch.Tensor, intrinsics: torch.Tensor, size: tuple[int, int],
                predicted_albedo: bool = False, refinable: torch.Tensor | None = None) -> CoarseMaps:
    """Render a normalised CoarseNet ``estimate (B, dim)``: the mesh of its coefficients in its
    pose through :func:`train.depth_render.rasterize` (float32), with the model's mean albedo
    interpolated on it, or the albedo head's (``predicted_albedo``, needs ``n_albedo > 0``), and
    the pixels on ``refinable (T,)`` triangles (all covered pixels when None).
    Differentiable w.r.t. ``estimate`` through the depth's barycentrics and the vertices."""
    with torch.autocast(device_type=estimate.device.type, enabled=False):
        k = intrinsics.float()
        p = decode_params(estimate.float(), net.layout, net.stats, k, size, net.render.projection)
        verts = net.render.vertices(p.alpha_id, p.alpha_exp)  # (B, N, 3) model space
        cam = camera.to_camera(verts, camera.rotation_matrix(p.pose), p.translation)  # (B, N, 3)
        frags = depth_render.rasterize(cam, net.render.triangles, k, size, projection=net.render.projection)
        morph = net.render.morph
        if predicted_albedo:
            if p.beta is None:
                raise ValueError("--albedo predicted needs a CoarseNet with an albedo head (n_albedo > 0)")
            alb_v = morph.albedo(p.beta)  # (B, N, 3); fewer coefficients = truncated
        else:
            alb_v = morph.albedo(estimate.new_zeros(1, morph.n_albedo))[0]  # (N, 3) the mean albedo
        albedo = depth_render.interpolate(alb_v, net.render.triangles, frags)  # (B, H, W, 3)
        region = frags.mask if refinable is None else frags.mask & refinable[frags.tri_id.clamp_min(0)]
    return CoarseMaps(depth=frags.depth, mask=frags.mask, albedo=albedo, region=region)


def patch_corners(refine: torch.Tensor, patch: int, u: torch.Tensor) -> torch.Tensor:
    """Top-left corners ``(B, 2)`` (row, col) of square training patches of side ``patch``: each
    centred on the pixel at quantile ``u (B,)`` in [0, 1) of its row's ``refine (B, H, W)`` pixels
    in raster order (``u`` uniform: a pixel drawn uniformly; the image centre when the mask is
    empty), moved inside the image. ``u`` comes from the data (:class:`FineRows`: seeded by
    (seed, epoch, sample)), so runs, resumes and ranks draw the same patches."""
    b, h, w = refine.shape
    if not 0 < patch <= min(h, w):
        raise ValueError(f"--patch must be in 1..{min(h, w)} (the image side), got {patch}")
    cum = refine.reshape(b, -1).long().cumsum(dim=1)  # (B, H*W) non-decreasing
    count = cum[:, -1]
    nth = (u.to(torch.float64).clamp(0.0, 1.0 - 1e-12) * count).long() + 1  # 1..count
    pick = torch.searchsorted(cum, nth[:, None])[:, 0]  # the first pixel where the count reaches nth
    pick = torch.where(count > 0, pick, torch.full_like(pick, (h // 2) * w + w // 2))
    centre = torch.stack([pick // w, pick % w], dim=1)
    limit = torch.tensor([h - patch, w - patch], device=refine.device)
    return torch.minimum((centre - patch // 2).clamp(min=0), limit)


def crop_rows(x: torch.Tensor, corner: torch.Tensor, patch: int) -> torch.Tensor:
    """``x (B, H, W, ...)`` cut to ``(B, patch, patch, ...)`` at ``corner (B, 2)`` (row, col) per row."""
    ar = torch.arange(patch, device=x.device)
    rows = (corner[:, 0, None] + ar)[:, :, None]  # (B, P, 1)
    cols = (corner[:, 1, None] + ar)[:, None, :]  # (B, 1, P)
    return x[torch.arange(x.shape[0], device=x.device)[:, None, None], rows, cols]


def crop_targets(t: FineTargets, corner: torch.Tensor, patch: int) -> FineTargets:
    """Whole-image :class:`train.losses.FineTargets` cut to the training patches at ``corner``: the
    per-pixel maps cropped, the intrinsics moved; the lighting fitted on the whole face and the
    pixel size stay the image's (a patch alone would determine neither well). The losses treat the
    patch border as an image border (no neighbours outside it)."""
    cut = {name: crop_rows(getattr(t, name), corner, patch)
           for name in ("depth_coarse", "mask", "image_linear", "albedo", "sh_mask", "depth_gt", "depth_gt_coarse")
           if getattr(t, name) is not None}
    k = t.intrinsics.clone()
    k[:, :2, 2] -= corner.flip(1).to(k.dtype)
    return dataclasses.replace(t, intrinsics=k, **cut)


class _Frozen:
    """Holds a module without registering it (not optimised, not in ``state_dict``)."""

    def __init__(self, module: nn.Module | None):
        self.module = module


class FineModel(nn.Module):
    """FineNet on the coarse depth of CoarseNet or of the batch (one forward per step).

    ``forward(image, intrinsics, depth_coarse, mask, albedo, region, use_net)`` with ``image
    (B, 3, H, W)`` in [0, 1], ``intrinsics (B, 3, 3)``, the batch's coarse maps (depth, mesh mask,
    albedo ``(B, H, W, 3)``, refinable region; any values on rows taken from CoarseNet) and
    ``use_net (B,)`` bool (rows whose coarse maps CoarseNet computes, from the image alone) and
    optionally ``fit_points (B, 68, 2)`` (pixels of ``image``; NaN rows: none): landmarks a
    CoarseNet with a landmark head fits instead of its head's (a photo's detector points).
    Returns a dict of ``(B, H, W)`` tensors: ``depth`` (refined), ``residual``, ``depth_coarse``,
    ``mask`` (coarse mesh), ``refine`` (refined pixels: :func:`train.losses.refine_mask` within
    the refinable region; the losses' pixels too), ``albedo (B, H, W, 3)`` and ``coarse_normals
    (B, H, W, 3)`` (of the coarse depth, whole image: the lighting fit's); in training with
    :attr:`patch` set, the others are crops ``(B, patch, patch[, 3])`` at ``corner (B, 2)``
    (:func:`patch_corners`, drawn with ``patch_u (B,)``), and ``full_depth_coarse``, ``full_mask``,
    ``full_albedo``, ``full_refine`` keep the whole image's.

    CoarseNet (when given) always runs in eval mode (its batch-norm statistics stay those of
    phase 1), on the image resized to ``coarse_size`` (the size it was trained at; None = as
    given), its estimate then rendered at the image's size; with ``end_to_end`` it is a submodule
    (optimised, saved), else it is frozen.
    """

    def __init__(self, morph_model, fine: FineNet, coarse: IterativeCoarseNet | None = None, *,
                 end_to_end: bool = False, projection: str = "perspective", albedo: str = "auto", mask_erode: int = 2,
                 min_facing: float = 0.3, coarse_size: int | None = None):
        super().__init__()
        self.coarse_size = None if coarse_size is None else int(coarse_size)
        if end_to_end and coarse is None:
            raise ValueError("end_to_end needs a CoarseNet")
        if coarse is not None and coarse.render.projection != projection:
            raise ValueError(f"CoarseNet renders with {coarse.render.projection} projection, the data uses {projection}")
        self.fine = fine
        self.end_to_end = bool(end_to_end)
        if self.end_to_end:
            self.coarse = coarse.requires_grad_(True)
        else:
            self._frozen = _Frozen(coarse)
            if coarse is not None:
                coarse.requires_grad_(False)
        self.projection, self.mask_erode, self.min_facing = projection, int(mask_erode), float(min_facing)
        self.register_buffer("refinable", torch.tensor(refinable_triangles(morph_model)), persistent=False)
        if coarse is None:  # the model's mesh, for the region of ground-truth rows
            self.morph = MorphableModelModule(morph_model)
        else:  # CoarseNet's copy (moved with it)
            self._morph = _Frozen(coarse.render.morph)
        has_head = coarse is not None and coarse.layout.n_albedo > 0
        if albedo == "predicted" and coarse is not None and not has_head:
            raise ValueError("--albedo predicted needs a CoarseNet with an albedo head (n_albedo > 0)")
        self.predicted_albedo = albedo == "predicted" or (albedo == "auto" and has_head)
        self.patch = 0
        """training only (``--patch``): FineNet sees one random ``patch`` x ``patch`` crop per row
        (:func:`patch_corners`; output ``corner``); 0 or eval mode: the whole image."""

    @property
    def coarse_net(self) -> IterativeCoarseNet | None:
        return self.coarse if self.end_to_end else self._frozen.module

    @property
    def morph_module(self) -> MorphableModelModule:
        return self.morph if self.coarse_net is None else self._morph.module

    def region(self, alpha_id, alpha_exp, pose, translation, intrinsics, size) -> torch.Tensor:
        """:func:`refinable_pixels` of meshes given by their parameters (the ground truth's)."""
        return refinable_pixels(self.morph_module, self.refinable, alpha_id, alpha_exp, pose, translation, intrinsics,
                             size, self.projection)

    def train(self, mode: bool = True) -> "FineModel":
        super().train(mode)
        if self.coarse_net is not None:
            self.coarse_net.eval()
        return self

    def _apply(self, fn, *args, **kwargs):  # .to() / .cuda() also move the frozen CoarseNet
        out = super()._apply(fn, *args, **kwargs)
        if not self.end_to_end and self._frozen.module is not None:
            self._frozen.module._apply(fn, *args, **kwargs)  # its morphable model too
        return out

    def forward(self, image: torch.Tensor, intrinsics: torch.Tensor, depth_coarse: torch.Tensor, mask: torch.Tensor,
                albedo: torch.Tensor, region: torch.Tensor, use_net: torch.Tensor,
                patch_u: torch.Tensor | None = None, fit_points: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        size = tuple(image.shape[-2:])
        rows = torch.nonzero(use_net.bool()).squeeze(1)
        depth_coarse, mask, albedo, region = depth_coarse.float(), mask.bool(), albedo.float(), region.bool()
        if rows.numel():
            net = self.coarse_net
            if net is None:
                raise ValueError("rows need CoarseNet's coarse depth but no CoarseNet was given (--coarse)")
            with torch.set_grad_enabled(self.end_to_end and torch.is_grad_enabled()):
                img, k = image[rows], intrinsics[rows]
                points = None  # the landmarks to fit instead of the head's (NaN rows: the head's)
                if fit_points is not None and net.landmark_head is not None:
                    points = fit_points[rows].float()
                if self.coarse_size is not None and self.coarse_size != size[0]:  # at CoarseNet's own size
                    cs = self.coarse_size
                    img = F.interpolate(img, size=(cs, cs), mode="bilinear", align_corners=False, antialias=True)
                    k = torch.cat([k[:, :2] * (cs / size[0]), k[:, 2:]], dim=1)  # pixel centres scale exactly
                    points = None if points is None else points * (cs / size[0])
                # no mask: the image alone; the normalised estimate decodes at any size
                est = net(img, k, None, fit_points=points)[-1]
                maps = coarse_maps(net, est, intrinsics[rows], size, self.predicted_albedo, self.refinable)
            # out-of-place index_put keeps the graph to the estimate
            depth_coarse = depth_coarse.index_put((rows,), maps.depth.to(depth_coarse.dtype))
            mask = mask.index_put((rows,), maps.mask)
            albedo = albedo.index_put((rows,), maps.albedo.to(albedo.dtype))
            region = region.index_put((rows,), maps.region)
        with torch.autocast(device_type=image.device.type, enabled=False):
            refine, dn = refine_mask(depth_coarse, mask, intrinsics.float(), self.projection, self.mask_erode,
                                     self.min_facing)
            refine = refine & region
        crop = {}
        if self.training and 0 < self.patch < min(size):  # the coarse maps above stay full size
            if patch_u is None:
                raise ValueError("training on patches needs patch_u (B,), the rows' patch draws (FineRows)")
            p = self.patch
            corner = patch_corners(refine, p, patch_u)
            # the whole-image maps build the loss targets (crop_targets)
            crop = {"corner": corner, "full_depth_coarse": depth_coarse, "full_mask": mask, "full_albedo": albedo,
                    "full_refine": refine}
            image = crop_rows(image.permute(0, 2, 3, 1), corner, p).permute(0, 3, 1, 2)
            depth_coarse, mask, albedo, refine = (crop_rows(t, corner, p) for t in (depth_coarse, mask, albedo, refine))
        out = self.fine(image, depth_coarse, mask, refine)
        return {"depth": out.depth, "residual": out.residual, "depth_coarse": depth_coarse, "mask": mask,
                "refine": refine, "albedo": albedo, "coarse_normals": dn.normals, **crop}

    def hyperparameters(self) -> dict[str, Any]:
        """What rebuilds this model besides the weights (and the frozen CoarseNet's checkpoint)."""
        net = self.coarse_net
        return {"fine": self.fine.hyperparameters(), "projection": self.projection, "mask_erode": self.mask_erode,
                "min_facing": self.min_facing, "predicted_albedo": self.predicted_albedo,
                "end_to_end": self.end_to_end, "coarse": net.hyperparameters() if self.end_to_end else None,
                "coarse_size": self.coarse_size}


def build_fine_model(morph_model, state: dict[str, Any], coarse: IterativeCoarseNet | None,
                     coarse_size: int | None = None) -> FineModel:
    """The (untrained) :class:`FineModel` a checkpoint's ``task_state`` describes; ``coarse`` is the
    frozen CoarseNet to use, trained at ``coarse_size`` (both ignored when the checkpoint trained
    its own end to end)."""
    if state.get("end_to_end"):
        coarse = IterativeCoarseNet.from_hyperparameters(morph_model, state["coarse"])
        coarse_size = state.get("coarse_size")
    albedo = "predicted" if state.get("predicted_albedo") else "mean"
    if coarse is not None and albedo == "predicted" and coarse.layout.n_albedo == 0:
        albedo = "mean"
    return FineModel(morph_model, FineNet.from_hyperparameters(state["fine"]), coarse,
                     end_to_end=bool(state.get("end_to_end")),
                     projection=state["projection"], albedo=albedo, mask_erode=state["mask_erode"],
                     min_facing=state["min_facing"], coarse_size=coarse_size if coarse is not None else None)


# ---------------------------------------------------------------------------- data
class FineRows(torch.utils.data.Dataset):
    """Items of a :class:`PhotoDataset` or a :class:`DetailShardDataset` in the rows format of the
    fine stage (module docstring): ``image (3, S, S)`` uint8 sRGB (photos and shards alike),
    ``intrinsics``, ``landmarks (68, 2)``, ``use_net``, ``has_gt`` (bools), ``depth``, ``depth_coarse`` ``(S, S)``, ``mask (S, S)``,
    ``albedo (S, S, 3)`` and the ground-truth ``alpha_id (n_id,)``, ``alpha_exp (n_exp,)``,
    ``pose``, ``translation`` (zeros for photos), ``patch_u`` (float64, uniform in [0, 1) from
    (``seed``, epoch, index): where the training patch goes) and, with ``region``, ``region_gt
    (S, S)`` (the ground truth's refinable pixels; none on photos). Indexed by ``i`` or ``(i, epoch)``."""

    def __init__(self, dataset, use_net: bool, n_id: int, n_exp: int, region: GroundTruthRegion | None = None,
                 seed: int = 0):
        self.dataset, self.use_net = dataset, bool(use_net)
        self.n_id, self.n_exp = int(n_id), int(n_exp)
        self.region = region  # rows then carry region_gt (FineTask.prepare_batch computes it otherwise)
        self.seed = int(seed)
        self.photos = isinstance(dataset, PhotoDataset)
        if self.photos and not use_net:
            raise ValueError("photo rows need CoarseNet's coarse depth (use_net=True)")
        self._items = EpochIndexed(dataset) if self.photos else dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item) -> dict[str, Any]:
        return self.__getitems__([item])[0]

    def __getitems__(self, items) -> list[dict[str, Any]]:
        """A batch's rows, the shard samples read together (:meth:`train.data.ShardDataset.__getitems__`)."""
        many = getattr(self._items, "__getitems__", None)
        rows = [self._row(x) for x in (many(items) if many else [self._items[i] for i in items])]
        for item, row in zip(items, rows):  # the training patch's draw (FineModel.patch), seeded per sample
            i, epoch = (int(item[0]), int(item[1])) if isinstance(item, tuple) else (int(item), 0)
            row["patch_u"] = torch.tensor(np.random.default_rng([self.seed, 14, epoch, i]).random(), dtype=torch.float64)
        if self.region is not None and rows:
            s = rows[0]["image"].shape[-1]
            regions = torch.zeros(len(rows), s, s, dtype=torch.bool) if self.photos else self.region(rows)
            for row, region in zip(rows, regions):
                row["region_gt"] = region
        return rows

    def _row(self, x: dict[str, Any]) -> dict[str, Any]:
        s = x["image"].shape[-1]
        row = {"image": x["image"], "intrinsics": x["intrinsics"], "landmarks": x["landmarks"].float(),
               "use_net": torch.tensor(self.use_net),
               "has_gt": torch.tensor(not self.photos)}
        if self.photos:
            if not bool(x["landmarks_valid"]):
                row["landmarks"] = torch.full((68, 2), float("nan"))
            zeros = torch.zeros(s, s)
            row.update(depth=zeros, depth_coarse=zeros, mask=torch.zeros(s, s, dtype=torch.bool),
                       albedo=torch.zeros(s, s, 3), alpha_id=torch.zeros(self.n_id), alpha_exp=torch.zeros(self.n_exp),
                       pose=torch.zeros(3), translation=torch.zeros(3))
        else:
            row.update(depth=x["depth"], depth_coarse=x["depth_coarse"], mask=x["mask"], albedo=x["albedo"])
            row.update({k: x[k] for k in ("alpha_id", "alpha_exp", "pose", "translation")})
        return row


class _MixedLoader:
    """Zips the per-step batches of the photo and the synthetic loaders into one batch."""

    def __init__(self, loaders: list):
        self.loaders = loaders

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for parts in zip(*self.loaders):
            keys = set(parts[0])
            if any(set(p) != keys for p in parts[1:]):
                raise ValueError(f"photo and synthetic rows differ in their keys: {sorted(keys ^ set(parts[-1]))}")
            yield {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _rank_split(n: int, rank: int, world: int) -> np.ndarray:
    """This rank's positions of ``n`` items (all of them when there are fewer than ranks)."""
    idx = np.arange(n)
    return idx[rank::world] if n >= world else idx


# ---------------------------------------------------------------------------- task
class FineTask:
    """What the shared trainer needs for phase 2 (module docstring)."""

    name = "fine"
    curve_metrics = ("detail_recovered_pooled", "depth_err_detail_fine_pct")
    median_metrics = ("detail_recovered",)  # the per-image mean is dominated by images with no detail

    def __init__(self, morph_model, model: FineModel, weights: FineLossWeights, smooth_on: str = "residual",
                 fit_landmarks: str = "detector"):
        self.morph_model, self.model = morph_model, model
        self.criterion = FineLoss(weights, smooth_on=smooth_on)
        self.fit_landmarks = fit_landmarks  # photo rows: "detector" (their landmarks) or "head"

    def to(self, device) -> "FineTask":
        self.model.to(device)
        return self

    def prepare_batch(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """Move a rows batch to ``device``; the uint8 image becomes float in [0, 1], its
        linear-light version ``image_linear (B, H, W, 3)`` is added (:func:`synth.color.srgb_to_linear`), and
        ``region_gt (B, H, W)``: the refinable pixels of the ground-truth mesh (rows with ground
        truth; the coarse region of rows refining the ground-truth coarse depth, and the pixels of
        the detail metrics)."""
        out = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        out["image"] = image_to_float(out["image"])
        img = out["image"].permute(0, 2, 3, 1)  # (B, 3, H, W) -> (B, H, W, 3)
        out["image_linear"] = srgb_to_linear(img)
        region = out.get("region_gt")  # from the loader (FineRows with a GroundTruthRegion)
        if region is None:
            region = self.model.region(out["alpha_id"], out["alpha_exp"], out["pose"], out["translation"],
                                       out["intrinsics"], tuple(img.shape[1:3]))
        out["region_gt"] = region.bool() & out["has_gt"][:, None, None]
        return out

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        fit_points = None
        if self.fit_landmarks == "detector":  # photo rows' detector points; never a render's true ones
            photo = ~batch["has_gt"].bool()
            fit_points = torch.where(photo[:, None, None], batch["landmarks"].float(),
                                     torch.full_like(batch["landmarks"].float(), float("nan")))
        return model(batch["image"], batch["intrinsics"], batch["depth_coarse"], batch["mask"], batch["albedo"],
                     batch["region_gt"], batch["use_net"], batch.get("patch_u"), fit_points)

    def targets(self, out: dict[str, torch.Tensor], batch: dict[str, Any]):
        """:class:`train.losses.FineTargets` of a forward's output (lighting fitted per image)."""
        m = self.model
        has = batch["has_gt"][:, None, None]
        gt, gt_coarse = (torch.where(has, batch[k].float(), torch.zeros_like(batch[k].float()))
                         for k in ("depth", "depth_coarse"))
        corner = out.get("corner")
        full = "full_" if corner is not None else ""  # training patches: targets of the whole image, then cut
        t = fine_targets(batch["image_linear"], out[full + "depth_coarse"], out[full + "mask"], out[full + "albedo"],
                         batch["intrinsics"].float(), m.projection, batch["landmarks"], depth_gt=gt,
                         depth_gt_coarse=gt_coarse, refine=out[full + "refine"], normals=out["coarse_normals"])
        return t if corner is None else crop_targets(t, corner, out["depth"].shape[-1])

    def loss(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        return self.criterion(out["depth"], self.targets(out, batch))

    @torch.no_grad()
    def metrics(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-sample detail metrics on rows with ground truth (NaN elsewhere):
        ``detail_recovered`` (the detail added vs the true detail, :func:`train.metrics.detail_recovered`
        with bases), ``detail_recovered_hp`` and ``detail_recovered_hp_coarse`` (the plain
        high-pass form, refined and coarse), ``depth_err_detail_coarse_pct`` /
        ``depth_err_detail_fine_pct`` (:func:`train.metrics.detail_depth_errors`), and
        ``detail_error_energy`` / ``detail_energy`` (:func:`train.metrics.detail_energies`, for
        :meth:`summarize`), each ``(B,)``."""
        gt, gt_coarse = batch["depth"].float(), batch["depth_coarse"].float()
        gt_mask = batch["mask"].bool() & batch["region_gt"]  # the coarse metric's pixels: the inner face
        fine, coarse = out["depth"].float(), out["depth_coarse"].float()
        m = out["refine"] & gt_mask
        err, energy = detail_energies(fine, gt, m, pred_base=coarse, gt_base=gt_coarse)
        share = detail_share(err, energy, m)  # = detail_recovered(fine, gt, m, coarse, gt_coarse)
        both = torch.isfinite(err) & torch.isfinite(energy)  # summarize divides their means: same samples
        err, energy = (torch.where(both, x, torch.full_like(x, float("nan"))) for x in (err, energy))
        res = {"detail_recovered": share, "detail_error_energy": err, "detail_energy": energy,
               "detail_recovered_hp": detail_recovered(fine, gt, m),
               "detail_recovered_hp_coarse": detail_recovered(coarse, gt, m),
               **detail_depth_errors(coarse, fine, gt, gt_mask, out["mask"])}
        nan = torch.full_like(res["detail_recovered"], float("nan"))
        return {k: torch.where(batch["has_gt"], v, nan) for k, v in res.items()}

    @staticmethod
    def summarize(means: dict[str, float]) -> dict[str, float]:
        """Set-level metrics from the means of :meth:`metrics`: ``detail_recovered_pooled`` =
        1 - sum(error energy) / sum(true detail energy) over the set (each image weighted by its
        detail; the per-image mean ``detail_recovered`` is dominated by images with almost none)."""
        err, energy = means.get("detail_error_energy", float("nan")), means.get("detail_energy", float("nan"))
        return {"detail_recovered_pooled": 1.0 - err / energy if energy > 0 else float("nan")}

    def extra_state(self) -> dict[str, Any]:
        """Stored in checkpoints (``task_state``) so the model can be rebuilt, with the digest of the
        frozen CoarseNet's weights (a resumed run must refine the same network's depth)."""
        net = self.model.coarse_net
        digest = None if net is None or self.model.end_to_end else weights_digest(net)
        return {**self.model.hyperparameters(), "coarse_weights_sha256": digest}


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state (names, dtypes, shapes and values, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _same_coarse(coarse: IterativeCoarseNet | None, end_to_end: bool) -> Callable[[dict[str, Any], str], None]:
    """The resume check of ``train-cli fine``: the frozen CoarseNet of ``--coarse`` must be the one
    the checkpoint was trained on (its file may have changed since: a live run's last.pt)."""
    def check(state: dict[str, Any], what: str) -> None:
        saved = (state.get("task_state") or {}).get("coarse_weights_sha256")
        if saved is None or coarse is None or end_to_end:  # older checkpoints did not record it
            return
        if weights_digest(coarse) != saved:
            raise CheckpointError(f"{what} was trained on another CoarseNet than --coarse holds now (its weights "
                                  "changed); resume with the same weights or start a new --out")
    return check


# ---------------------------------------------------------------------------- jobs
def _load_coarse(config_coarse: str | None, model, model_path: str | None):
    """(CoarseNet or None, the size it was trained at or None, morphable model) for ``--coarse`` / ``--model``."""
    if config_coarse:
        net, ck, model = load_coarse_checkpoint(config_coarse, model, model_path=model_path)
        size = ck["config"].get("size")
        return net, (int(size) if size else None), model
    return None, None, (model if model is not None else load_model(model_path))


def load_initial_fine(fine: FineNet, path: str, fingerprint) -> None:
    """``--init``: copy into ``fine`` the FineNet weights of checkpoint ``path`` (a fine run's ``.pt`` or
    exported ``.safetensors``; a checkpoint trained end to end gives its FineNet only, CoarseNet is
    ``--coarse``'s). ``CheckpointError`` naming the file when it is not a FineNet checkpoint of this
    morphable model or its FineNet is built otherwise (the flags that differ, with both values)."""
    ck = load_inference_checkpoint(path, fingerprint=fingerprint, task="fine")
    theirs, ours = ck["task_state"]["fine"], fine.hyperparameters()
    differ = [f"--{k.replace('_', '-')} {theirs.get(k)} (this run: {v})" for k, v in ours.items()
              if float(theirs.get(k, float("nan"))) != float(v)]
    if differ:
        raise CheckpointError(f"--init {path}: its FineNet was built with {', '.join(differ)}")
    fine.load_state_dict({k[len("fine."):]: v for k, v in ck["model"].items() if k.startswith("fine.")})
    log.info("--init %s: FineNet weights of step %d loaded", path, int(ck["step"]))


def train_fine(config: FineConfig, model=None) -> TrainResult:
    """Train FineNet as configured by a :class:`train.config.FineConfig` (``model``, a
    ``MorphableModel``, overrides the one of ``--coarse`` / ``--model``; tests pass the tiny one).
    The photos' used/skipped summary is logged and returned in ``result.summary``.
    Launch under ``torchrun --nproc-per-node N`` for DistributedDataParallel."""
    with distributed(config.device) as dinfo:
        return _train_fine(config, model, dinfo)


def _train_fine(config: FineConfig, model, dinfo: DistInfo) -> TrainResult:
    device = resolve_device(config.device, dinfo.local_rank)
    if config.threads:
        torch.set_num_threads(config.threads)
    coarse, coarse_size, model = _load_coarse(config.coarse, model, config.model)
    fp = model  # the checks below: its fingerprint, or its sketch for files written on another CPU
    resume_state = resume_state_for(config, fp, old_defaults={"albedo": "auto"},
                                    check=_same_coarse(coarse, config.end_to_end))

    parts, summary = [], []
    photos = synthetic = None
    if config.photos:
        from .photos import PhotoConfig

        photos = PhotoDataset.from_photos([config.photos], PhotoConfig(size=config.size, fov_deg=config.fov,
                                                                       cache_dir=config.photo_cache))
        summary.append(photos.run.summary())
        log.info("photos: %s", summary[-1])
    if config.synthetic and config.synthetic_per_step:
        synthetic = DetailShardDataset(config.synthetic, fingerprint=fp, size=config.size)
    projection = coarse.render.projection if coarse is not None else synthetic.projection
    use_net_syn = coarse is not None and not config.gt_coarse
    region = GroundTruthRegion(model, projection) if device.type == "cpu" else None  # class docstring
    val_rows = None
    if config.val_data and dinfo.is_main:
        val_rows = FineRows(DetailShardDataset(config.val_data, fingerprint=fp, size=config.size), use_net_syn,
                            model.n_id, model.n_exp, region)
    for ds in (synthetic, val_rows.dataset if val_rows else None):
        if ds is not None and ds.projection != projection:
            raise ValueError(f"shards in {ds.root} use {ds.projection} projection, CoarseNet {projection}")

    photo_idx = _rank_split(len(photos), dinfo.rank, dinfo.world) if photos is not None else np.zeros(0, np.int64)
    syn_idx = _rank_split(len(synthetic), dinfo.rank, dinfo.world) if synthetic is not None else np.zeros(0, np.int64)
    total = config.total_steps(len(photo_idx), len(syn_idx))
    torch.manual_seed(config.seed)  # same initial weights on every rank (DDP also broadcasts them)
    fine = FineNet(config.width_mult, config.depth_scale_mm, config.residual_scale_mm)
    if config.init and resume_state is None:  # a resumed run continues from its own checkpoint
        load_initial_fine(fine, config.init, fp)
    fmodel = FineModel(model, fine, coarse, end_to_end=config.end_to_end, projection=projection, albedo=config.albedo,
                       mask_erode=config.mask_erode, min_facing=config.min_facing, coarse_size=coarse_size)
    fmodel.patch = config.patch
    task = FineTask(model, fmodel, FineLossWeights.from_config(config), config.smooth_on, config.fit_landmarks)
    workers, pin = config.loader_workers(), device.type == "cuda"
    if photos is not None:
        parts.append((FineRows(photos, True, model.n_id, model.n_exp, region, config.seed), photo_idx,
                      config.batch_size, config.seed))
    if synthetic is not None:
        parts.append((FineRows(synthetic, use_net_syn, model.n_id, model.n_exp, region, config.seed + 1), syn_idx,
                      config.synthetic_per_step,
                      config.seed + 1))

    def loader_fn(start: int):
        return _MixedLoader([make_train_loader(ds, idx, bs, seed, total, start, workers=workers, pin_memory=pin)
                             for ds, idx, bs, seed in parts])

    val_loader = None
    if config.val_data:
        val_loader = [] if not dinfo.is_main else make_eval_loader(val_rows, max(config.batch_size, 1),
                                                                   config.val_samples, workers=min(workers, 2),
                                                                   pin_memory=pin)
    log.info("fine: %d photos, %d synthetic samples (on this rank), %d steps of %d + %d x %d, device %s",
             len(photo_idx), len(syn_idx), total, config.batch_size if photos is not None else 0,
             config.synthetic_per_step if synthetic is not None else 0, dinfo.world, device)
    trainer = Trainer(task, LoopConfig.from_config(config, total), loader_fn, val_loader, device, config.to_dict(),
                      fp, dinfo, resume_state)
    result = trainer.fit()
    result.summary = "; ".join(summary)
    return result


def evaluate_fine(config: EvaluateConfig, model, coarse: IterativeCoarseNet | None, device: torch.device,
                  coarse_size: int | None = None) -> dict[str, float]:
    """The detail metrics of ``config.fine`` (a FineNet checkpoint) on ``config.data``: FineNet
    refines ``coarse``'s depth (the ``--ckpt`` CoarseNet; the checkpoint's own when it was
    trained end to end; ``coarse_size``: the size ``coarse`` was trained at), or the shards'
    ground-truth coarse depth with ``--fine-gt-coarse``.
    Means over the samples of :meth:`FineTask.metrics`, plus ``n_fine``."""
    ck = load_inference_checkpoint(config.fine, fingerprint=model, task="fine")
    run = FineConfig.from_dict(ck["config"])
    fmodel = build_fine_model(model, ck["task_state"], None if config.fine_gt_coarse else coarse, coarse_size)
    fmodel.load_state_dict(ck["model"])
    task = FineTask(model, fmodel, FineLossWeights.from_config(run), run.smooth_on).to(device)
    ds = DetailShardDataset(config.data, fingerprint=model, size=run.size)
    rows = FineRows(ds, fmodel.coarse_net is not None, model.n_id, model.n_exp,
                    GroundTruthRegion(model, ds.projection) if device.type == "cpu" else None)
    loader = make_eval_loader(rows, config.batch_size, config.samples, config.workers)
    res = validate(task, fmodel, loader, device, amp=run.amp)
    res["n_fine"] = res.pop("n")
    return res
