"""Job configs: one dataclass per ``train-cli`` command, one field per flag.

These dataclasses are the one place where the flags, their types, defaults and help live:
``train-cli`` builds its click options from them (:func:`train.cli.options_from`: field
``batch_size`` -> ``--batch-size``, the annotation gives the type, a ``bool`` gives an
``--x/--no-x`` pair, a ``Literal`` a choice, the default is the field's, the help its docstring),
and the smaller dataclasses of the code (``LoopConfig``, ``LossWeights``, ``Augment``) take
their values from a job config instead of holding defaults of their own. Each config validates
itself in ``__post_init__`` with errors naming the flag.

A saved config (``OUT/config.json``, every checkpoint) does not depend on the machine: values
that do (``workers``) stay ``None`` = automatic and are resolved when the run starts.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import os
import textwrap
from typing import Any, Literal, get_args

__all__ = ["CoarseConfig", "FineConfig", "EvaluateConfig", "ReconstructConfig", "field_docs", "DEVICES", "Norm",
           "FitLandmarks", "FIT_LANDMARKS", "SINGLE_FLAG"]

Device = Literal["auto", "cpu", "cuda"]
DEVICES = get_args(Device)
Norm = Literal["batch", "iter_batch", "group"]
"""CoarseNet's normalisation layers (``--norm``; built by ``train.coarse_net.make_norm``)."""
FitLandmarks = Literal["detector", "head"]
"""Whose 68 points CoarseNet's first fit uses on a photo (``--fit-landmarks``)."""
FIT_LANDMARKS = get_args(FitLandmarks)

SINGLE_FLAG = {"single_flag": True}
"""Field metadata for a ``bool`` field that is one flag named like the field (``no_fine`` ->
``--no-fine``, default False) instead of an ``--x/--no-x`` pair."""


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its docstring (the string literal under the field in the class body),
    whitespace collapsed to one line; ``ValueError`` naming a field that has none."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in docs]
    if missing:
        raise ValueError(f"{cls.__name__} fields {missing} have no docstring (the --help text of their flag)")
    return docs


def _need(cond: bool, flag: str, rule: str, value: Any) -> None:
    if not cond:
        raise ValueError(f"{flag} must be {rule}, got {value!r}")


class _TrainJob:
    """What the training jobs (:class:`CoarseConfig`, :class:`FineConfig`) share besides their
    fields (each declares its own, with its own help): the checks of the trainer's flags, the
    loader's worker count, and saving / loading."""

    def _check_trainer(self) -> None:
        """The trainer's flags (length, optimiser, schedule, device, bookkeeping)."""
        _need(self.batch_size >= 1, "--batch-size", ">= 1", self.batch_size)
        if self.steps is not None and self.epochs is not None:
            raise ValueError(f"--steps and --epochs are exclusive, got --steps {self.steps} and --epochs {self.epochs}")
        if self.steps is not None:
            _need(self.steps >= 1, "--steps", ">= 1", self.steps)
        if self.epochs is not None:
            _need(self.epochs > 0 and math.isfinite(self.epochs), "--epochs", "> 0", self.epochs)
        _need(self.lr > 0 and math.isfinite(self.lr), "--lr", "> 0", self.lr)
        _need(self.weight_decay >= 0, "--weight-decay", ">= 0", self.weight_decay)
        _need(0 <= self.warmup < 1, "--warmup", "in [0, 1)", self.warmup)
        _need(0 <= self.min_lr <= 1, "--min-lr", "in [0, 1]", self.min_lr)
        _need(self.grad_clip >= 0, "--grad-clip", ">= 0", self.grad_clip)
        _need(self.device in DEVICES, "--device", f"one of {', '.join(DEVICES)}", self.device)
        _need(self.threads >= 0, "--threads", ">= 0", self.threads)
        if self.workers is not None:
            _need(self.workers >= 0, "--workers", ">= 0", self.workers)
        _need(self.width_mult > 0, "--width-mult", "> 0", self.width_mult)
        _need(self.stop_at >= 0, "--stop-at", ">= 0", self.stop_at)
        for name in ("val_every", "val_samples", "log_every", "ckpt_every"):
            _need(getattr(self, name) >= 1, "--" + name.replace("_", "-"), ">= 1", getattr(self, name))

    def loader_workers(self) -> int:
        """--workers, or when it is None (automatic) min(8, CPUs - 1) of this machine."""
        return self.workers if self.workers is not None else max(0, min(8, (os.cpu_count() or 1) - 1))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """A config saved by :meth:`to_dict` (keys of fields since removed are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclasses.dataclass
class CoarseConfig(_TrainJob):
    """``train-cli coarse``: phase 1, CoarseNet on synthetic shards."""

    data: str
    """directory of training shards (shard-*.h5)."""
    out: str
    """run directory (checkpoints, logs, curves)."""
    model: str | None = None
    """morphable model file (.h5 BFM2017/2019, .mat BFM2009); default: the built-in model."""
    val_data: str | None = None
    """directory of validation shards (no validation when omitted)."""
    iters: int = 4
    """CoarseNet iterations (feedback renderings) per image."""
    size: int = 224
    """network input size in pixels (images are resized from the shard size)."""
    batch_size: int = 32
    """images per step per process."""
    steps: int | None = None
    """optimisation steps (exclusive with --epochs; 10000 when neither is given)."""
    epochs: float | None = None
    """passes over the (per-process) training samples, converted to steps."""
    lr: float = 1e-3
    """peak AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay (conv/linear weights only)."""
    warmup: float = 0.03
    """linear warm-up, as a fraction of the steps; cosine decay afterwards."""
    min_lr: float = 0.01
    """final learning rate as a fraction of --lr."""
    grad_clip: float = 1.0
    """clip the global gradient norm to this (0 = off)."""
    device: Device = "auto"
    """where to train: cuda when available (auto), cpu or cuda."""
    amp: bool = True
    """bf16 autocast for the network on CUDA (rendering and losses stay float32)."""
    threads: int = 0
    """torch CPU threads per process (0 = torch's default)."""
    workers: int | None = None
    """DataLoader worker processes per training process (default: min(8, CPUs - 1), resolved
    when the run starts; the loader benchmark needs >= 4 to feed an H200 at 128^2)."""
    seed: int = 0
    """seeds initialisation, shuffling and augmentation."""
    width_mult: float = 1.0
    """scales all CoarseNet widths (tiny configs for tests)."""
    n_id: int = 80
    """identity coefficients predicted (first components; capped at the model's count)."""
    n_exp: int | None = None
    """expression coefficients predicted (default: all of the model's)."""
    n_albedo: int = 0
    """albedo coefficients predicted by an extra head (0 = none)."""
    predict_sh: bool = False
    """also predict the 9x3 SH lighting."""
    feedback_cell: float = 0.0
    """rasterize the feedback maps from a vertex-clustered mesh with this cell
    size in mm (0 = the full mesh; 1.5-2 mm is ~2-3x cheaper to rasterize at 128^2)."""
    norm: Norm = "batch"
    """normalisation layers: batch (one BatchNorm shared by the iterations), iter_batch (one
    BatchNorm per iteration), group (GroupNorm)."""
    landmark_init: bool = False
    """predict the 68 landmarks as heatmaps and start the iterations from the morphable model
    fitted to them (instead of the mean face at the mean pose)."""
    init: str | None = None
    """start from the network weights of this checkpoint (.pt or .safetensors, e.g. the shipped
    CoarseNet): tensors whose names and shapes match are loaded, new parts (the landmark head)
    start fresh, the norms of iterations the checkpoint lacks (more --iters, --norm iter_batch)
    start as its last iteration's; the optimiser and schedule start fresh (not with --resume)."""
    color_jitter: float = 0.1
    """colour augmentation strength (0 = off)."""
    crop_jitter: float = 0.02
    """random shift, fraction of the image size (0 = off)."""
    photo_aug: bool = True
    """photo-like degradations of the training images in the loader workers (train.augment: white
    balance, blur, sensor noise, gamma, contrast, JPEG)."""
    photo_p: float = 0.5
    """probability of each photo degradation, independently."""
    photo_gamma: float = 0.25
    """gamma exp(U(-g, g)) on the sRGB values (0 = off)."""
    photo_contrast: float = 0.25
    """contrast factor U(1 - c, 1 + c) about the image mean (0 = off)."""
    photo_white_balance: float = 0.15
    """per-channel linear gains exp(U(-w, w)), luminance kept (0 = off)."""
    photo_noise: float = 0.04
    """largest sensor-noise level s, std s * sqrt(x + 0.01) in linear light (0 = off)."""
    photo_blur: float = 1.2
    """largest Gaussian blur sigma in pixels; a third of the blurs are motion blurs (0 = off)."""
    photo_jpeg: int = 30
    """lowest JPEG re-compression quality, quality ~ U(q, 95) (0 = off)."""
    w_geo: float = 1.0
    """weight of the model-space vertex loss."""
    w_proj: float = 1.0
    """weight of the projected (2D) vertex loss."""
    w_pose: float = 1.0
    """weight of the normalised pose loss."""
    w_cam: float = 1.0
    """weight of the normalised camera (translation) loss."""
    w_param: float = 0.0
    """weight of a plain coefficient L2 loss (std units)."""
    w_alb: float = 1.0
    """weight of the albedo-coefficient loss (with --n-albedo)."""
    w_sh: float = 1.0
    """weight of the SH loss (with --predict-sh)."""
    w_lmk: float = 1.0
    """weight of the landmark-head loss (with --landmark-init)."""
    val_every: int = 1000
    """validate every this many steps (and at the end)."""
    val_samples: int = 512
    """validation samples used (the first ones of --val-data)."""
    log_every: int = 10
    """write a training log row every this many steps."""
    ckpt_every: int = 1000
    """write checkpoints/last.pt every this many steps (and at the end)."""
    stats_samples: int = 2000
    """samples read to estimate the pose/camera normalisation."""
    stop_at: int = 0
    """stop (with a checkpoint) after this step, the schedule still following --steps;
    continue later with --resume (time-limited jobs). 0 = off."""
    resume: bool = False
    """continue from OUT/checkpoints/last.pt."""
    progress: bool = True
    """show a tqdm progress bar."""

    def __post_init__(self) -> None:
        _need(bool(self.data), "--data", "a directory", self.data)
        _need(bool(self.out), "--out", "a directory", self.out)
        _need(self.iters >= 1, "--iters", ">= 1", self.iters)
        _need(self.size >= 16, "--size", ">= 16", self.size)
        self._check_trainer()
        _need(self.n_id >= 1, "--n-id", ">= 1", self.n_id)
        if self.n_exp is not None:
            _need(self.n_exp >= 0, "--n-exp", ">= 0", self.n_exp)
        _need(self.n_albedo >= 0, "--n-albedo", ">= 0", self.n_albedo)
        _need(self.feedback_cell >= 0, "--feedback-cell", ">= 0", self.feedback_cell)
        _need(self.norm in get_args(Norm), "--norm", f"one of {', '.join(get_args(Norm))}", self.norm)
        _need(0 <= self.color_jitter < 1, "--color-jitter", "in [0, 1)", self.color_jitter)
        _need(0 <= self.crop_jitter <= 0.25, "--crop-jitter", "in [0, 0.25]", self.crop_jitter)
        from .augment import PhotoAugment  # validates the --photo-* values, naming the flag

        PhotoAugment(**{f.name: getattr(self, "photo_" + f.name) for f in dataclasses.fields(PhotoAugment)})
        for name in ("w_geo", "w_proj", "w_pose", "w_cam", "w_param", "w_alb", "w_sh", "w_lmk"):
            v = getattr(self, name)
            _need(v >= 0 and math.isfinite(v), "--" + name.replace("_", "-"), ">= 0", v)
        _need(self.stats_samples >= 1, "--stats-samples", ">= 1", self.stats_samples)

    def total_steps(self, samples_per_process: int) -> int:
        """--steps, or --epochs converted with the per-process sample count (default 10000)."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * samples_per_process / self.batch_size))
        return 10000

    # fields that change the network or its targets: a resumed run must keep them
    ARCH_FIELDS = ("iters", "size", "width_mult", "n_id", "n_exp", "n_albedo", "predict_sh", "norm", "feedback_cell",
                   "landmark_init")


@dataclasses.dataclass
class FineConfig(_TrainJob):
    """``train-cli fine``: phase 2, FineNet on real photos (unsupervised shape from shading),
    optionally with supervised batches of synthetic shards that carry fine detail."""

    out: str
    """run directory (checkpoints, logs, curves)."""
    photos: str | None = None
    """folder (or file) of photos, JPEG/PNG/...: detected, cropped and cached (train.photos);
    unusable files are skipped with their reason. Needs --coarse."""
    coarse: str | None = None
    """CoarseNet checkpoint (.pt or .safetensors) giving the coarse depth FineNet refines. Without it
    only --synthetic can train, on the shards' ground-truth coarse depth."""
    synthetic: str | None = None
    """directory of synthetic shards rendered at --size with detail: supervised batches mixed with
    the photo batches (ground-truth detailed depth vs the coarse one)."""
    val_data: str | None = None
    """directory of held-out shards (rendered at --size, detail on) for the detail metrics."""
    model: str | None = None
    """morphable model file; default: the one of the --coarse checkpoint (the built-in model when none)."""
    size: int = 128
    """network input size in pixels (photo crops are cut at it; shards must be rendered at it)."""
    patch: int = 0
    """train FineNet on one random PATCH x PATCH crop of each image, centred on a refined pixel (it
    is fully convolutional; validation and inference see the whole image): ~(size/patch)^2 less
    compute per sample at the same pixel scale. 0 = the whole image."""
    batch_size: int = 8
    """photos per step per process."""
    synthetic_batch_size: int | None = None
    """synthetic samples per step per process (default: --batch-size; 0 = none)."""
    gt_coarse: bool = False
    """refine the shards' ground-truth coarse depth on synthetic batches and in validation, even
    with --coarse (isolates FineNet from CoarseNet's errors; always the case without --coarse)."""
    end_to_end: bool = False
    """also train CoarseNet through the rasterized depth (default: CoarseNet frozen)."""
    fit_landmarks: FitLandmarks = "detector"
    """on photo rows, the 68 points the first fit of a --coarse trained with --landmark-init uses, as
    train-cli reconstruct: the face detector's (as the photos' crops were found) or the network's
    own head's; synthetic rows always fit the head's (their stored landmarks are ground truth)."""
    init: str | None = None
    """start FineNet from the weights of this FineNet checkpoint (.pt or .safetensors, e.g. the shipped
    train/weights/fine.safetensors, to train it further on a photo folder); its --width-mult,
    --depth-scale-mm and --residual-scale-mm must be this run's; the optimiser and schedule start
    fresh (not with --resume)."""
    steps: int | None = None
    """optimisation steps (exclusive with --epochs; 2000 when neither is given)."""
    epochs: float | None = None
    """passes over the photos (over the synthetic samples without photos), converted to steps."""
    lr: float = 1e-3
    """peak AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay (conv weights only)."""
    warmup: float = 0.03
    """linear warm-up, as a fraction of the steps; cosine decay afterwards."""
    min_lr: float = 0.01
    """final learning rate as a fraction of --lr."""
    grad_clip: float = 1.0
    """clip the global gradient norm to this (0 = off)."""
    device: Device = "auto"
    """where to train: cuda when available (auto), cpu or cuda."""
    amp: bool = True
    """bf16 autocast for the networks on CUDA (rendering and losses stay float32)."""
    threads: int = 0
    """torch CPU threads per process (0 = torch's default)."""
    workers: int | None = None
    """DataLoader worker processes per training process (default: min(8, CPUs - 1), resolved when
    the run starts)."""
    seed: int = 0
    """seeds initialisation and shuffling."""
    width_mult: float = 1.0
    """scales all FineNet widths (tiny configs for tests)."""
    depth_scale_mm: float = 50.0
    """FineNet input: the coarse depth minus its median, divided by this (mm)."""
    residual_scale_mm: float = 1.0
    """FineNet output: its last layer times this is the residual depth (mm)."""
    w_sh: float = 1.0
    """weight of E_sh, the shape-from-shading term (linear intensity in 8-bit levels, squared)."""
    w_fid: float = 0.05
    """weight of E_f, the fidelity to the coarse depth (depth in pixel units, squared)."""
    w_smooth: float = 1.0
    """weight of E_sm, the L1 Laplacian of the added detail (pixel units)."""
    w_sup: float = 100.0
    """weight of E_sup on synthetic batches, the squared error of the added detail to the true
    detail (pixel units; 100 puts the true detail's E_sup gain near its E_sh gain on 128 px renders)."""
    sh_huber: float = 10.0
    """Huber threshold of E_sh in 8-bit levels (0 = plain squares): larger residuals (specular
    highlights, hair, shadows) count linearly."""
    smooth_on: Literal["residual", "depth"] = "residual"
    """E_sm on the added detail (residual) or, as in the paper, on the whole refined depth."""
    mask_erode: int = 2
    """pixels eroded from the coarse face mask before refining (the outline is left to the coarse depth)."""
    min_facing: float = 0.3
    """refine only where the coarse normal faces the camera at least this much (cosine)."""
    albedo: Literal["auto", "mean", "predicted"] = "auto"
    """albedo estimate for the least-squares lighting: the model's mean albedo on the coarse mesh,
    CoarseNet's albedo head (predicted), or auto = predicted when CoarseNet has the head."""
    fov: float = 50.0
    """assumed field of view of the photos on their longer side, degrees (train.photos)."""
    photo_cache: str | None = None
    """folder of the photos' detection cache (default: $DETAILFACE_CACHE/detections)."""
    val_every: int = 500
    """validate every this many steps (and at the end)."""
    val_samples: int = 256
    """validation samples used (the first ones of --val-data)."""
    log_every: int = 10
    """write a training log row every this many steps."""
    ckpt_every: int = 500
    """write checkpoints/last.pt every this many steps (and at the end)."""
    stop_at: int = 0
    """stop (with a checkpoint) after this step, the schedule still following --steps;
    continue later with --resume (time-limited jobs). 0 = off."""
    resume: bool = False
    """continue from OUT/checkpoints/last.pt."""
    progress: bool = True
    """show a tqdm progress bar."""

    def __post_init__(self) -> None:
        _need(bool(self.out), "--out", "a directory", self.out)
        if not self.photos and not self.synthetic:
            raise ValueError("train-cli fine needs --photos (with --coarse) and/or --synthetic, got neither")
        if self.photos and not self.coarse:
            raise ValueError(f"--photos {self.photos} needs --coarse CKPT (the coarse depth of a photo comes from CoarseNet)")
        if self.end_to_end and not self.coarse:
            raise ValueError("--end-to-end needs --coarse CKPT (the CoarseNet to train)")
        if not self.photos and self.synthetic_batch_size == 0:
            raise ValueError("--synthetic-batch-size 0 without --photos leaves nothing to train on")
        if self.end_to_end and self.gt_coarse and not self.photos:
            raise ValueError("--end-to-end with --gt-coarse needs --photos (no row would use CoarseNet)")
        _need(self.size >= 16, "--size", ">= 16", self.size)
        _need(self.patch == 0 or 16 <= self.patch <= self.size, "--patch", f"0 or in [16, --size {self.size}]", self.patch)
        self._check_trainer()
        if self.synthetic_batch_size is not None:
            _need(self.synthetic_batch_size >= 0, "--synthetic-batch-size", ">= 0", self.synthetic_batch_size)
        _need(self.depth_scale_mm > 0, "--depth-scale-mm", "> 0", self.depth_scale_mm)
        _need(self.residual_scale_mm > 0, "--residual-scale-mm", "> 0", self.residual_scale_mm)
        for name in ("w_sh", "w_fid", "w_smooth", "w_sup", "sh_huber"):
            v = getattr(self, name)
            _need(v >= 0 and math.isfinite(v), "--" + name.replace("_", "-"), ">= 0", v)
        _need(self.smooth_on in ("residual", "depth"), "--smooth-on", "residual or depth", self.smooth_on)
        _need(self.mask_erode >= 0, "--mask-erode", ">= 0", self.mask_erode)
        _need(-1 <= self.min_facing < 1, "--min-facing", "in [-1, 1)", self.min_facing)
        _need(self.albedo in ("auto", "mean", "predicted"), "--albedo", "auto, mean or predicted", self.albedo)
        _need(self.fit_landmarks in FIT_LANDMARKS, "--fit-landmarks", f"one of {', '.join(FIT_LANDMARKS)}",
              self.fit_landmarks)
        _need(math.isfinite(self.fov) and 1 <= self.fov <= 170, "--fov", "in [1, 170] degrees", self.fov)

    @property
    def synthetic_per_step(self) -> int:
        """Synthetic samples per step (0 without --synthetic)."""
        if not self.synthetic:
            return 0
        return self.batch_size if self.synthetic_batch_size is None else self.synthetic_batch_size

    def total_steps(self, photos_per_process: int, synthetic_per_process: int) -> int:
        """--steps, or --epochs over the photos (the synthetic samples when there are no photos);
        2000 when neither is given."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            n, per_step = ((photos_per_process, self.batch_size) if photos_per_process
                           else (synthetic_per_process, max(1, self.synthetic_per_step)))
            return max(1, math.ceil(self.epochs * n / per_step))
        return 2000

    # fields that change the networks or their inputs: a resumed run must keep them
    ARCH_FIELDS = ("size", "width_mult", "depth_scale_mm", "residual_scale_mm", "coarse", "end_to_end", "gt_coarse",
                   "mask_erode", "min_facing", "albedo")


@dataclasses.dataclass
class EvaluateConfig:
    """``train-cli evaluate``: the metrics of a checkpoint per iteration, with their reference
    points, on synthetic shards (``--data``) and / or real photos (``--photos``)."""

    checkpoint: str | None = None
    """checkpoint to evaluate: a run's .pt or an exported .safetensors; default: the shipped
    checkpoint (train/weights/coarse.safetensors)."""
    data: str | None = None
    """directory of shards to evaluate on (held-out: rendered with their own --seed)."""
    photos: tuple[str, ...] = ()
    """photo files or folders (repeat the flag): landmark NME of the network against the face
    detector's landmarks in each crop."""
    json: str | None = None
    """also write the metrics to this JSON file."""
    model: str | None = None
    """morphable model file; default: the one named in the checkpoint's config (the built-in model when none)."""
    samples: int = 512
    """shard samples evaluated (the first ones)."""
    iters: int | None = None
    """CoarseNet iterations to run (default: the checkpoint's; more than it was trained with reuse
    the last iteration's normalisation statistics)."""
    flip_test: bool = True
    """as train-cli reconstruct: the landmark head also reads the mirrored crop when its points are
    fitted (networks trained with --landmark-init: the shards, and photos with --fit-landmarks head;
    --no-flip-test: one reading)."""
    fit_landmarks: FitLandmarks = "detector"
    """as train-cli reconstruct, on --photos: the landmarks CoarseNet's first fit uses, the face
    detector's (then no independent reference for the detector figures: see the hand-placed ones)
    or its own landmark head's (networks trained with --landmark-init)."""
    batch_size: int = 32
    """images per batch."""
    device: Device = "auto"
    """where to run: cuda when available (auto), cpu or cuda."""
    workers: int = 0
    """DataLoader worker processes."""
    cache_dir: str | None = None
    """face-detection cache for --photos (default: $DETAILFACE_CACHE/detections)."""
    fine: str | None = None
    """FineNet checkpoint (train-cli fine): also refine the coarse depth and report the detail
    metrics (the shards must be rendered at its size, with detail)."""
    fine_gt_coarse: bool = False
    """with --fine: refine the shards' ground-truth coarse depth instead of CoarseNet's (FineNet alone)."""

    def __post_init__(self) -> None:
        self.photos = tuple(self.photos)
        _need(bool(self.data) or bool(self.photos), "--data or --photos", "given", None)
        if self.fine is not None or self.fine_gt_coarse:
            _need(bool(self.fine), "--fine", "a FineNet checkpoint file", self.fine)
            _need(bool(self.data), "--data", "a directory of detail shards (with --fine)", self.data)
        if self.checkpoint is not None:
            _need(bool(self.checkpoint), "--checkpoint", "a checkpoint file", self.checkpoint)
        _need(self.samples >= 1, "--samples", ">= 1", self.samples)
        if self.iters is not None:
            _need(self.iters >= 1, "--iters", ">= 1", self.iters)
        _need(self.batch_size >= 1, "--batch-size", ">= 1", self.batch_size)
        _need(self.device in DEVICES, "--device", f"one of {', '.join(DEVICES)}", self.device)
        _need(self.fit_landmarks in FIT_LANDMARKS, "--fit-landmarks", f"one of {', '.join(FIT_LANDMARKS)}",
              self.fit_landmarks)
        _need(self.workers >= 0, "--workers", ">= 0", self.workers)
        if self.json is not None:  # checked before the work, which the file would otherwise lose
            _need(bool(self.json) and not os.path.isdir(self.json), "--json", "a file name, not a folder", self.json)
            parent = os.path.dirname(os.path.abspath(self.json))
            _need(os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK), "--json",
                  "a file in an existing, writable folder", self.json)


@dataclasses.dataclass
class ReconstructConfig:
    """``train-cli reconstruct``: photos -> detailed 3-D faces (meshes, depth, JSON, pictures, a page)."""

    out: str
    """output folder (created; files of earlier runs with other names are kept)."""
    coarse: str | None = None
    """CoarseNet checkpoint (a run's .pt or an exported .safetensors); default: the shipped
    train/weights/coarse.safetensors."""
    fine: str | None = None
    """FineNet checkpoint (.pt or .safetensors); default: the shipped train/weights/fine.safetensors."""
    no_fine: bool = dataclasses.field(default=False, metadata=SINGLE_FLAG)
    """skip the fine stage: coarse meshes only (the depth written is the coarse one)."""
    model: str | None = None
    """morphable model file; default: the one named in the checkpoint (the built-in model when none)."""
    all_faces: bool = False
    """reconstruct every detected face (outputs <stem>_face<k> for all but the largest) instead of the largest only."""
    max_faces: int = 8
    """with --all-faces, at most this many faces per photo (largest first)."""
    min_score: float = 0.5
    """detector confidence below which a face is ignored."""
    fov: float = 50.0
    """assumed field of view of the photos on their longer side, degrees (a photo does not state it)."""
    flip_test: bool = True
    """when the landmark head's points are fitted (--fit-landmarks head, or a face framed from a box
    alone; networks trained with --landmark-init), the head also reads the mirrored crop and the two
    readings are averaged (--no-flip-test: one reading, ~1/3 less CoarseNet time)."""
    fit_landmarks: FitLandmarks = "detector"
    """the 68 landmarks CoarseNet's first iteration fits the model to (networks trained with
    --landmark-init): the face detector's, found on the photo anyway (closer to hand-placed points on
    real photos, docs/experiments.md), or the network's own landmark head's (with --flip-test);
    faces framed from a box alone use the head's."""
    device: Device = "auto"
    """where the networks run: cuda when available (auto), cpu or cuda."""
    batch_size: int = 8
    """faces per network batch."""
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    recursive: bool = False
    """also take photos from the sub-folders of the folders given."""
    pictures: bool = True
    """write the overlay, compare and turntable pictures (--no-pictures: meshes, depth and JSON only)."""
    view_size: int = 256
    """side of the compare panels and the turntable frames, pixels."""
    turntable_frames: int = 24
    """frames of the turntable GIF (one swing of yaw: 0, +60, 0, -60 degrees and back)."""
    overlay_max_side: int = 1024
    """the overlay is the photo scaled to at most this many pixels on its longer side."""
    cache: bool = True
    """cache face detections on disk, keyed by the file's content (--no-cache: always detect)."""
    cache_dir: str | None = None
    """detections cache folder; default: $DETAILFACE_CACHE/detections (~/.cache/detailface/detections)."""
    progress: bool = True
    """show a tqdm progress bar."""

    def __post_init__(self) -> None:
        _need(bool(self.out), "--out", "a directory", self.out)
        _need(self.max_faces >= 1, "--max-faces", ">= 1", self.max_faces)
        _need(0.0 <= self.min_score <= 1.0, "--min-score", "in [0, 1]", self.min_score)
        _need(math.isfinite(self.fov) and 1.0 <= self.fov <= 170.0, "--fov", "in [1, 170] degrees", self.fov)
        _need(self.device in DEVICES, "--device", f"one of {', '.join(DEVICES)}", self.device)
        _need(self.fit_landmarks in FIT_LANDMARKS, "--fit-landmarks", f"one of {', '.join(FIT_LANDMARKS)}",
              self.fit_landmarks)
        _need(self.batch_size >= 1, "--batch-size", ">= 1", self.batch_size)
        _need(self.threads >= 0, "--threads", ">= 0", self.threads)
        _need(self.view_size >= 32, "--view-size", ">= 32", self.view_size)
        _need(self.turntable_frames >= 4, "--turntable-frames", ">= 4", self.turntable_frames)
        _need(self.overlay_max_side >= 64, "--overlay-max-side", ">= 64", self.overlay_max_side)
        if self.no_fine and self.fine is not None:
            raise ValueError(f"--fine and --no-fine are exclusive, got --fine {self.fine} and --no-fine")
