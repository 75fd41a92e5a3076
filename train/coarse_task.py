"""Phase 1 for the shared trainer: the CoarseNet training task and the jobs built on it.

* :class:`CoarseTask`: what :class:`train.trainer.Trainer` drives (network, batch preparation,
  :class:`train.losses.CoarseLoss`, :func:`train.metrics.coarse_metrics`, checkpoint state);
* :func:`build_task` (from a job config) and :func:`build_task_from_state` (from a checkpoint);
* :func:`train_coarse`: ``train-cli coarse`` (a :class:`train.config.CoarseConfig`);
* :func:`evaluate_checkpoint`: ``train-cli evaluate`` (a :class:`train.config.EvaluateConfig`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from morphable_model import load_model

from .checkpoint import CheckpointError, load_checkpoint
from .coarse_net import IterativeCoarseNet
from .config import CoarseConfig, EvaluateConfig
from .data import Augment, ShardDataset, image_to_float, make_eval_loader, make_train_loader, rank_indices
from .fine_task import evaluate_fine
from .inference import load_checkpoint_and_model
from .losses import CoarseLoss, LossOutput, LossWeights
from .metrics import coarse_metrics
from .params import N_SH, ParamLayout, ParamStats
from .trainer import LoopConfig, Trainer, TrainResult, init_distributed, resolve_device, validate

__all__ = ["CoarseTask", "build_task", "build_task_from_state", "train_coarse", "evaluate_checkpoint"]

log = logging.getLogger(__name__)


class CoarseTask:
    """What the shared trainer needs for phase 1: model, batch preparation, loss, metrics.

    ``model`` is the :class:`IterativeCoarseNet` ``net``; ``loss(model_out, batch)`` returns a
    :class:`train.losses.LossOutput`; ``metrics(model_out, batch)`` returns per-sample metric
    tensors (averaged by the trainer over the validation set).
    """

    name = "coarse"
    curve_metrics = ("vertex_rmse_mm", "depth_err_mean_pct", "landmark_nme")

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

    def forward(self, model: nn.Module, batch: dict[str, Any]) -> list[torch.Tensor]:
        return model(batch["image"], batch["intrinsics"], batch.get("mask"))

    def loss(self, out: list[torch.Tensor], batch: dict[str, Any]) -> LossOutput:
        return self.criterion(out, batch)

    @torch.no_grad()
    def metrics(self, out: list[torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return coarse_metrics(self.model, out, batch, self.morph_model.face_region)

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
                             projection=projection, mask_input=config.mask_input, feedback_cell=config.feedback_cell)
    return CoarseTask(morph_model, net, LossWeights.from_config(config))


def build_task_from_state(morph_model, task_state: dict[str, Any], config: CoarseConfig) -> CoarseTask:
    """Rebuild the :class:`CoarseTask` a checkpoint's ``task_state`` describes, with the loss
    weights of ``config`` (the checkpoint's, :meth:`CoarseConfig.from_dict`)."""
    net = IterativeCoarseNet.from_hyperparameters(morph_model, task_state)
    return CoarseTask(morph_model, net, LossWeights.from_config(config))


def train_coarse(config: CoarseConfig, model=None) -> TrainResult:
    """Train CoarseNet as configured by a :class:`train.config.CoarseConfig`.

    ``model`` (a ``MorphableModel``) overrides ``config.model`` (tests pass the tiny model).
    Launch under ``torchrun --nproc-per-node N`` for DistributedDataParallel.
    """
    dinfo = init_distributed(config.device)
    device = resolve_device(config.device, dinfo.local_rank)
    if config.threads:
        torch.set_num_threads(config.threads)
    if model is None:
        model = load_model(config.model)
    fp = model.fingerprint
    resume_state = None
    ckpt_path = Path(config.out) / "checkpoints" / "last.pt"
    if config.resume:
        resume_state = load_checkpoint(ckpt_path, map_location="cpu", fingerprint=fp)
        old = resume_state["config"]
        diff = {k: (old.get(k), getattr(config, k)) for k in config.ARCH_FIELDS if old.get(k) != getattr(config, k)}
        if diff:
            raise CheckpointError(f"checkpoint {ckpt_path} was trained with other settings {diff}; "
                                  "use the same flags or a new --out")
    elif ckpt_path.exists():
        raise ValueError(f"--out {config.out} already holds a run ({ckpt_path}); pass --resume or choose a new --out")

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


def evaluate_checkpoint(config: EvaluateConfig, model=None) -> dict[str, float]:
    """Validation metrics (means over ``config.samples`` samples of ``config.data``) of a
    CoarseNet checkpoint, plus the detail metrics of a FineNet checkpoint with ``--fine``
    (:func:`train.fine_task.evaluate_fine`). ``model`` overrides ``config.model`` and the
    checkpoint's model."""
    ck, model = load_checkpoint_and_model(config.ckpt, model, config.model)
    run = CoarseConfig.from_dict(ck["config"])
    device = resolve_device(config.device)
    task = build_task_from_state(model, ck["task_state"], run)
    task.model.load_state_dict(ck["model"])
    task.to(device)
    ds = ShardDataset(config.data, fingerprint=model.fingerprint, size=run.size)
    loader = make_eval_loader(ds, config.batch_size, config.samples, config.workers)
    res = validate(task, task.model, loader, device, amp=run.amp)
    if config.fine:
        res.update(evaluate_fine(config, model, task.model, device, coarse_size=run.size))
    return res
