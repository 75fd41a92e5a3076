"""Job configs: one dataclass per ``train-cli`` command, one field per flag (``--batch-size`` ->
``batch_size``), validated in ``__post_init__`` with errors naming the flag."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

__all__ = ["CoarseConfig"]

DEVICES = ("auto", "cpu", "cuda")


@dataclasses.dataclass
class CoarseConfig:
    """``train-cli coarse``: phase 1, CoarseNet on synthetic shards."""

    data: str
    """--data: directory of training shards (shard-*.h5)."""
    out: str
    """--out: run directory (checkpoints, logs, curves)."""
    model: str | None = None
    """--model: morphable model file (.h5 BFM2017/2019, .mat BFM2009); default: the built-in model."""
    val_data: str | None = None
    """--val-data: directory of validation shards (no validation when omitted)."""
    iters: int = 4
    """--iters: CoarseNet iterations (feedback renderings) per image."""
    size: int = 224
    """--size: network input size in pixels (images are resized from the shard size)."""
    batch_size: int = 32
    """--batch-size: images per step per process."""
    steps: int | None = None
    """--steps: optimisation steps (exclusive with --epochs; 10000 when neither is given)."""
    epochs: float | None = None
    """--epochs: passes over the (per-process) training samples, converted to steps."""
    lr: float = 1e-3
    """--lr: peak AdamW learning rate."""
    weight_decay: float = 0.01
    """--weight-decay: AdamW decoupled weight decay (conv/linear weights only)."""
    warmup: float = 0.03
    """--warmup: linear warm-up, as a fraction of the steps; cosine decay afterwards."""
    min_lr: float = 0.01
    """--min-lr: final learning rate as a fraction of --lr."""
    grad_clip: float = 1.0
    """--grad-clip: clip the global gradient norm to this (0 = off)."""
    device: str = "auto"
    """--device: auto | cpu | cuda (auto = cuda when available)."""
    amp: bool = True
    """--amp/--no-amp: bf16 autocast for the network on CUDA (rendering and losses stay float32)."""
    threads: int = 0
    """--threads: torch CPU threads per process (0 = torch's default)."""
    workers: int | None = None
    """--workers: DataLoader worker processes per training process (default: min(8, CPUs - 1);
    the loader benchmark needs >= 4 to feed an H200 at 128^2)."""
    seed: int = 0
    """--seed: seeds initialisation, shuffling and augmentation."""
    width_mult: float = 1.0
    """--width-mult: scales all CoarseNet widths (tiny configs for tests)."""
    n_id: int = 80
    """--n-id: identity coefficients predicted (first components; capped at the model's count)."""
    n_exp: int | None = None
    """--n-exp: expression coefficients predicted (default: all of the model's)."""
    n_albedo: int = 0
    """--n-albedo: albedo coefficients predicted by an extra head (0 = none)."""
    predict_sh: bool = False
    """--predict-sh/--no-predict-sh: also predict the 9x3 SH lighting."""
    feedback_cell: float = 0.0
    """--feedback-cell: rasterize the feedback maps from a vertex-clustered mesh with this cell
    size in mm (0 = the full mesh; 1.5-2 mm is ~2-3x cheaper to rasterize at 128^2)."""
    mask_input: bool = True
    """--mask-input/--no-mask-input: multiply the input image by the face mask."""
    color_jitter: float = 0.1
    """--color-jitter: colour augmentation strength (0 = off)."""
    crop_jitter: float = 0.02
    """--crop-jitter: random shift, fraction of the image size (0 = off)."""
    photo_aug: bool = True
    """--photo-aug/--no-photo-aug: photo-like degradations of the training images in the loader
    workers (train.augment: white balance, blur, sensor noise, gamma, contrast, JPEG)."""
    photo_p: float = 0.5
    """--photo-p: probability of each photo degradation, independently."""
    photo_gamma: float = 0.25
    """--photo-gamma: gamma exp(U(-g, g)) on the sRGB values (0 = off)."""
    photo_contrast: float = 0.25
    """--photo-contrast: contrast factor U(1 - c, 1 + c) about the image mean (0 = off)."""
    photo_white_balance: float = 0.15
    """--photo-white-balance: per-channel linear gains exp(U(-w, w)), luminance kept (0 = off)."""
    photo_noise: float = 0.04
    """--photo-noise: largest sensor-noise level s, std s * sqrt(x + 0.01) in linear light (0 = off)."""
    photo_blur: float = 1.2
    """--photo-blur: largest Gaussian blur sigma in pixels, a third of blurs are motion blurs (0 = off)."""
    photo_jpeg: int = 30
    """--photo-jpeg: lowest JPEG re-compression quality, quality ~ U(q, 95) (0 = off)."""
    w_geo: float = 1.0
    """--w-geo: weight of the model-space vertex loss."""
    w_proj: float = 1.0
    """--w-proj: weight of the projected (2D) vertex loss."""
    w_pose: float = 1.0
    """--w-pose: weight of the normalised pose loss."""
    w_cam: float = 1.0
    """--w-cam: weight of the normalised camera (translation) loss."""
    w_param: float = 0.0
    """--w-param: weight of a plain coefficient L2 loss (std units)."""
    w_alb: float = 1.0
    """--w-alb: weight of the albedo-coefficient loss (with --n-albedo)."""
    w_sh: float = 1.0
    """--w-sh: weight of the SH loss (with --predict-sh)."""
    val_every: int = 1000
    """--val-every: validate every this many steps (and at the end)."""
    val_samples: int = 512
    """--val-samples: validation samples used (the first ones of --val-data)."""
    log_every: int = 10
    """--log-every: write a training log row every this many steps."""
    ckpt_every: int = 1000
    """--ckpt-every: write checkpoints/last.pt every this many steps (and at the end)."""
    stats_samples: int = 2000
    """--stats-samples: samples read to estimate the pose/camera normalisation."""
    stop_at: int = 0
    """--stop-at: stop (with a checkpoint) after this step, the schedule still following --steps;
    continue later with --resume (time-limited jobs). 0 = off."""
    resume: bool = False
    """--resume: continue from OUT/checkpoints/last.pt."""
    progress: bool = True
    """--progress/--no-progress: show a tqdm progress bar."""

    def __post_init__(self) -> None:
        def need(cond: bool, flag: str, rule: str, value: Any) -> None:
            if not cond:
                raise ValueError(f"{flag} must be {rule}, got {value!r}")

        need(bool(self.data), "--data", "a directory", self.data)
        need(bool(self.out), "--out", "a directory", self.out)
        need(self.iters >= 1, "--iters", ">= 1", self.iters)
        need(self.size >= 16, "--size", ">= 16", self.size)
        need(self.batch_size >= 1, "--batch-size", ">= 1", self.batch_size)
        if self.steps is not None and self.epochs is not None:
            raise ValueError(f"--steps and --epochs are exclusive, got --steps {self.steps} and --epochs {self.epochs}")
        if self.steps is not None:
            need(self.steps >= 1, "--steps", ">= 1", self.steps)
        if self.epochs is not None:
            need(self.epochs > 0 and math.isfinite(self.epochs), "--epochs", "> 0", self.epochs)
        need(self.lr > 0 and math.isfinite(self.lr), "--lr", "> 0", self.lr)
        need(self.weight_decay >= 0, "--weight-decay", ">= 0", self.weight_decay)
        need(0 <= self.warmup < 1, "--warmup", "in [0, 1)", self.warmup)
        need(0 <= self.min_lr <= 1, "--min-lr", "in [0, 1]", self.min_lr)
        need(self.grad_clip >= 0, "--grad-clip", ">= 0", self.grad_clip)
        need(self.device in DEVICES, "--device", f"one of {', '.join(DEVICES)}", self.device)
        need(self.threads >= 0, "--threads", ">= 0", self.threads)
        if self.workers is None:
            self.workers = max(0, min(8, (os.cpu_count() or 1) - 1))
        need(self.workers >= 0, "--workers", ">= 0", self.workers)
        need(self.width_mult > 0, "--width-mult", "> 0", self.width_mult)
        need(self.n_id >= 1, "--n-id", ">= 1", self.n_id)
        if self.n_exp is not None:
            need(self.n_exp >= 0, "--n-exp", ">= 0", self.n_exp)
        need(self.n_albedo >= 0, "--n-albedo", ">= 0", self.n_albedo)
        need(self.feedback_cell >= 0, "--feedback-cell", ">= 0", self.feedback_cell)
        need(0 <= self.color_jitter < 1, "--color-jitter", "in [0, 1)", self.color_jitter)
        need(0 <= self.crop_jitter <= 0.25, "--crop-jitter", "in [0, 0.25]", self.crop_jitter)
        from .augment import PhotoAugment

        PhotoAugment(**{f.name: getattr(self, "photo_" + f.name) for f in dataclasses.fields(PhotoAugment)})
        for name in ("w_geo", "w_proj", "w_pose", "w_cam", "w_param", "w_alb", "w_sh"):
            v = getattr(self, name)
            need(v >= 0 and math.isfinite(v), "--" + name.replace("_", "-"), ">= 0", v)
        need(self.stop_at >= 0, "--stop-at", ">= 0", self.stop_at)
        for name in ("val_every", "val_samples", "log_every", "ckpt_every", "stats_samples"):
            need(getattr(self, name) >= 1, "--" + name.replace("_", "-"), ">= 1", getattr(self, name))

    def total_steps(self, samples_per_process: int) -> int:
        """--steps, or --epochs converted with the per-process sample count (default 10000)."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * samples_per_process / self.batch_size))
        return 10000

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # fields that change the network or its targets: a resumed run must keep them
    ARCH_FIELDS = ("iters", "size", "width_mult", "n_id", "n_exp", "n_albedo", "predict_sh", "mask_input")
