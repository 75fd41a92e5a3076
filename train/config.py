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

__all__ = ["CoarseConfig", "EvaluateConfig", "ReconstructConfig", "field_docs", "DEVICES", "SINGLE_FLAG"]

Device = Literal["auto", "cpu", "cuda"]
DEVICES = get_args(Device)

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


@dataclasses.dataclass
class CoarseConfig:
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
    mask_input: bool = True
    """multiply the input image by the face mask."""
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
        _need(self.n_id >= 1, "--n-id", ">= 1", self.n_id)
        if self.n_exp is not None:
            _need(self.n_exp >= 0, "--n-exp", ">= 0", self.n_exp)
        _need(self.n_albedo >= 0, "--n-albedo", ">= 0", self.n_albedo)
        _need(self.feedback_cell >= 0, "--feedback-cell", ">= 0", self.feedback_cell)
        _need(0 <= self.color_jitter < 1, "--color-jitter", "in [0, 1)", self.color_jitter)
        _need(0 <= self.crop_jitter <= 0.25, "--crop-jitter", "in [0, 0.25]", self.crop_jitter)
        from .augment import PhotoAugment  # validates the --photo-* values, naming the flag

        PhotoAugment(**{f.name: getattr(self, "photo_" + f.name) for f in dataclasses.fields(PhotoAugment)})
        for name in ("w_geo", "w_proj", "w_pose", "w_cam", "w_param", "w_alb", "w_sh"):
            v = getattr(self, name)
            _need(v >= 0 and math.isfinite(v), "--" + name.replace("_", "-"), ">= 0", v)
        _need(self.stop_at >= 0, "--stop-at", ">= 0", self.stop_at)
        for name in ("val_every", "val_samples", "log_every", "ckpt_every", "stats_samples"):
            _need(getattr(self, name) >= 1, "--" + name.replace("_", "-"), ">= 1", getattr(self, name))

    def total_steps(self, samples_per_process: int) -> int:
        """--steps, or --epochs converted with the per-process sample count (default 10000)."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * samples_per_process / self.batch_size))
        return 10000

    def loader_workers(self) -> int:
        """--workers, or when it is None (automatic) min(8, CPUs - 1) of this machine."""
        return self.workers if self.workers is not None else max(0, min(8, (os.cpu_count() or 1) - 1))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CoarseConfig":
        """A config saved by :meth:`to_dict` (keys of fields since removed are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    # fields that change the network or its targets: a resumed run must keep them
    ARCH_FIELDS = ("iters", "size", "width_mult", "n_id", "n_exp", "n_albedo", "predict_sh", "mask_input")


@dataclasses.dataclass
class EvaluateConfig:
    """``train-cli evaluate``: validation metrics of a checkpoint on shards, per iteration."""

    ckpt: str
    """checkpoint to evaluate: a run's .pt or exported .safetensors."""
    data: str
    """directory of shards to evaluate on."""
    model: str | None = None
    """morphable model file; default: the one named in the checkpoint's config (the built-in model when none)."""
    samples: int = 512
    """samples evaluated (the first ones)."""
    batch_size: int = 32
    """images per batch."""
    device: Device = "auto"
    """where to run: cuda when available (auto), cpu or cuda."""
    workers: int = 0
    """DataLoader worker processes."""
    json_out: str | None = None
    """also write the metrics to this JSON file."""

    def __post_init__(self) -> None:
        _need(bool(self.ckpt), "--ckpt", "a checkpoint file", self.ckpt)
        _need(bool(self.data), "--data", "a directory", self.data)
        _need(self.samples >= 1, "--samples", ">= 1", self.samples)
        _need(self.batch_size >= 1, "--batch-size", ">= 1", self.batch_size)
        _need(self.device in DEVICES, "--device", f"one of {', '.join(DEVICES)}", self.device)
        _need(self.workers >= 0, "--workers", ">= 0", self.workers)


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
        _need(self.batch_size >= 1, "--batch-size", ">= 1", self.batch_size)
        _need(self.threads >= 0, "--threads", ">= 0", self.threads)
        _need(self.view_size >= 32, "--view-size", ">= 32", self.view_size)
        _need(self.turntable_frames >= 4, "--turntable-frames", ">= 4", self.turntable_frames)
        _need(self.overlay_max_side >= 64, "--overlay-max-side", ">= 64", self.overlay_max_side)
        if self.no_fine and self.fine is not None:
            raise ValueError(f"--fine and --no-fine are exclusive, got --fine {self.fine} and --no-fine")
