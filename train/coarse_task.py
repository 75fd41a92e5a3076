"""Phase 1 for the shared trainer: the CoarseNet training task and the jobs built on it.

* :class:`CoarseTask`: what :class:`train.trainer.Trainer` drives (network, batch preparation,
  :class:`train.losses.CoarseLoss`, :func:`train.metrics.coarse_metrics`, checkpoint state);
* :func:`build_task` (from a job config) and :func:`build_task_from_state` (from a checkpoint);
* :func:`train_coarse`: ``train-cli coarse`` (a :class:`train.config.CoarseConfig`).

``train-cli evaluate`` lives in :mod:`train.evaluate`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn as nn

from morphable_model import load_model

from .checkpoint import CheckpointError
from .coarse_net import HYPERPARAMETER_DEFAULTS, IterationBatchNorm2d, IterativeCoarseNet, refuse_oracle_input
from .config import CoarseConfig
from .data import Augment, ShardDataset, image_to_float, make_eval_loader, make_train_loader, rank_indices
from .inference import load_checkpoint_and_model
from .losses import CoarseLoss, LossOutput, LossWeights
from .metrics import coarse_metrics, landmark_head_metrics
from .params import N_SH, ParamLayout, ParamStats
from .trainer import DistInfo, LoopConfig, Trainer, TrainResult, distributed, resolve_device, resume_state_for

__all__ = ["CoarseTask", "build_task", "build_task_from_state", "load_initial_weights", "train_coarse"]

log = logging.getLogger(__name__)


class CoarseTask:
    """What the shared trainer needs for phase 1: model, batch preparation, loss, metrics.

    ``model`` is the :class:`IterativeCoarseNet` ``net``; ``forward`` gives it the image and the
    intrinsics only (never the ground-truth mask); ``loss(model_out, batch)`` returns a
    :class:`train.losses.LossOutput`; ``metrics(model_out, batch)`` returns per-sample metric
    tensors with their reference points (:func:`train.metrics.coarse_metrics`, averaged by the
    trainer over the validation set).
    """

    name = "coarse"
    curve_metrics = ("shape_err_aligned_pct", "depth_err_mean_pct", "depth_err_aligned_mean_pct", "landmark_nme51")

    def __init__(self, morph_model, net: IterativeCoarseNet, loss_weights: LossWeights):
        self.morph_model = morph_model
        self.model = net
        self.layout, self.stats, self.projection = net.layout, net.stats, net.render.projection
        self.criterion = CoarseLoss(morph_model, net.layout, net.stats, weights=loss_weights, projection=self.projection)
        self.iters = net.iters

    def to(self, device) -> "CoarseTask":
        self.model.to(device)
        if torch.device(device).type == "cuda":  # NHWC convolutions: faster with bf16 tensor cores
            self.model.net.to(memory_format=torch.channels_last)
        self.criterion.to(device)
        return self

    def prepare_batch(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """Move a loader batch to ``device``; uint8 images become float in [0, 1] with their
        colour jitter applied (:func:`train.data.image_to_float`)."""
        out = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        out["image"] = image_to_float(out["image"], out.pop("color", None))
        return out

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """``(estimates after each iteration, the landmark head's points or None)``."""
        return model(batch["image"], batch["intrinsics"], return_landmarks=True)

    def loss(self, out: tuple[list[torch.Tensor], torch.Tensor | None], batch: dict[str, Any]) -> LossOutput:
        return self.criterion(out[0], batch, out[1])

    @torch.no_grad()
    def metrics(self, out: tuple[list[torch.Tensor], torch.Tensor | None], batch: dict[str, Any]
                ) -> dict[str, torch.Tensor]:
        """:func:`train.metrics.coarse_metrics`, and the landmark head's own NME
        (``landmark_head_nme68`` / ``_nme51``) when the network has one."""
        out_m = coarse_metrics(self.model, out[0], batch, self.morph_model.face_region)
        if out[1] is not None:
            out_m.update(landmark_head_metrics(out[1], batch))
        return out_m

    def extra_state(self) -> dict[str, Any]:
        """Stored in checkpoints (``task_state``) so the network can be rebuilt."""
        return self.model.hyperparameters()


def build_task(config: CoarseConfig, morph_model, stats: ParamStats, projection: str) -> CoarseTask:
    """The task a job config describes, for shards of ``projection`` with normalisation ``stats``
    (coefficient counts capped at the morphable model's). Draws the initial weights from torch's
    global RNG: seed it first."""
    n_id = min(config.n_id, morph_model.n_id)
    n_exp = morph_model.n_exp if config.n_exp is None else min(config.n_exp, morph_model.n_exp)
    if n_id < config.n_id:
        log.info("--n-id %d capped at the model's %d identity components", config.n_id, n_id)
    layout = ParamLayout(n_id=n_id, n_exp=n_exp, n_albedo=min(config.n_albedo, morph_model.n_albedo),
                         n_sh=N_SH if config.predict_sh else 0)
    net = IterativeCoarseNet(morph_model, layout, stats, iters=config.iters, width_mult=config.width_mult,
                             projection=projection, feedback_cell=config.feedback_cell, norm=config.norm,
                             landmark_init=config.landmark_init)
    return CoarseTask(morph_model, net, LossWeights.from_config(config))


def load_initial_weights(net: IterativeCoarseNet, path: str, morph_model) -> list[str]:
    """``--init``: copy into ``net`` the tensors of the CoarseNet checkpoint ``path`` (a run's
    ``.pt`` or exported ``.safetensors``) whose names and shapes match; returns the names of
    ``net``'s tensors left as initialised. ``CheckpointError`` naming the file when it is not a
    CoarseNet checkpoint of this morphable model, was trained with an oracle input, or shares
    no tensor with ``net``."""
    ck, _ = load_checkpoint_and_model(path, morph_model)
    own = net.state_dict()
    take = {k: v for k, v in ck["model"].items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    extra = IterationBatchNorm2d.norms_for_extra_iterations(own, ck["model"])
    if extra:
        log.info("--init %s: %d per-iteration norm tensors of the iterations it lacks copied from its last "
                 "iteration's", path, len(extra))
    take.update(extra)
    if not any(v.ndim for v in take.values()):  # only BatchNorm step counters (scalars) in common
        raise CheckpointError(f"--init {path}: no tensor of the checkpoint matches this network (its architecture "
                              "differs: --width-mult, --n-id, --n-exp, ...)")
    net.load_state_dict(take, strict=False)
    fresh = [k for k in own if k not in take]
    log.info("--init %s: %d tensors loaded, %d start fresh%s", path, len(take), len(fresh),
             f" ({', '.join(sorted({k.rsplit('.', 2)[0] for k in fresh})[:6])}, ...)" if fresh else "")
    return fresh


def build_task_from_state(morph_model, task_state: dict[str, Any], config: CoarseConfig,
                          source: str = "the checkpoint") -> CoarseTask:
    """Rebuild the :class:`CoarseTask` a checkpoint's ``task_state`` describes, with the loss
    weights of ``config`` (the checkpoint's, :meth:`CoarseConfig.from_dict`); ``CheckpointError``
    naming ``source`` for a network trained with an oracle input."""
    net = IterativeCoarseNet.from_hyperparameters(morph_model, task_state, source)
    return CoarseTask(morph_model, net, LossWeights.from_config(config))


def task_from_checkpoint(morph_model, ckpt: dict[str, Any], source: str = "the checkpoint") -> CoarseTask:
    """The :class:`CoarseTask` of a loaded CoarseNet checkpoint dict (``task_state``, ``config``,
    ``model``: :func:`train.inference.load_checkpoint_and_model`) with its weights, on the CPU."""
    task = build_task_from_state(morph_model, ckpt["task_state"], CoarseConfig.from_dict(ckpt["config"]), source)
    task.model.load_state_dict(ckpt["model"])
    return task


def train_coarse(config: CoarseConfig, model=None) -> TrainResult:
    """Train CoarseNet as configured by a :class:`train.config.CoarseConfig`.

    ``model`` (a ``MorphableModel``) overrides ``config.model`` (tests pass the tiny model).
    Launch under ``torchrun --nproc-per-node N`` for DistributedDataParallel.
    """
    with distributed(config.device) as dinfo:
        return _train_coarse(config, model, dinfo)


def _train_coarse(config: CoarseConfig, model, dinfo: DistInfo) -> TrainResult:
    device = resolve_device(config.device, dinfo.local_rank)
    if config.threads:
        torch.set_num_threads(config.threads)
    if model is None:
        model = load_model(config.model)
    fp = model  # the checks below: its fingerprint, or its sketch for files written on another CPU
    resume_state = resume_state_for(  # runs before --norm existed used one shared BatchNorm
        config, fp, old_defaults=HYPERPARAMETER_DEFAULTS,
        check=lambda state, what: refuse_oracle_input(state.get("task_state", {}), what))

    workers = config.loader_workers()
    train_ds = ShardDataset(config.data, fingerprint=fp, size=config.size, augment=Augment.from_config(config),
                            seed=config.seed)
    indices = rank_indices(train_ds, dinfo.rank, dinfo.world)
    total = config.total_steps(len(indices))
    if resume_state is not None:
        stats = ParamStats.from_dict(resume_state["task_state"]["stats"])
    else:
        arr = train_ds.param_arrays(config.stats_samples)
        stats = ParamStats.from_samples(arr["pose"], arr["translation"], arr["intrinsics"], (config.size, config.size),
                                        train_ds.projection, arr["sh"])
    torch.manual_seed(config.seed)  # same initial weights on every rank (DDP also broadcasts them)
    task = build_task(config, model, stats, train_ds.projection)
    if config.init and resume_state is None:
        load_initial_weights(task.model, config.init, model)
    pin = device.type == "cuda"

    def loader_fn(start: int):
        return make_train_loader(train_ds, indices, config.batch_size, config.seed, total, start,
                                 workers=workers, pin_memory=pin)

    val_loader = None
    if config.val_data and not dinfo.is_main:
        val_loader = []  # validation runs on rank 0; the others only meet it at the barrier
    if config.val_data and dinfo.is_main:
        val_ds = ShardDataset(config.val_data, fingerprint=fp, size=config.size)
        if val_ds.projection != train_ds.projection:
            raise ValueError(f"--val-data uses {val_ds.projection} projection, --data uses {train_ds.projection}")
        val_loader = make_eval_loader(val_ds, config.batch_size, config.val_samples, workers=min(workers, 2),
                                      pin_memory=pin)
    log.info("coarse: %d training samples (%d on this rank), %d steps of %d x %d, layout %s, device %s",
             len(train_ds), len(indices), total, config.batch_size, dinfo.world, task.layout, device)
    trainer = Trainer(task, LoopConfig.from_config(config, total), loader_fn, val_loader, device, config.to_dict(),
                      fp, dinfo, resume_state)
    return trainer.fit()
