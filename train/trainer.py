"""One training loop for both phases; the phase lives in a *task* object.

A task provides (see :class:`train.coarse_net.CoarseTask`)::

    task.name                          "coarse" | "fine" ...
    task.model                         the nn.Module to optimise (one forward per step)
    task.to(device)
    task.prepare_batch(batch, device)  -> batch on the device
    task.forward(model, batch)         -> model output (model may be the DDP wrapper)
    task.loss(out, batch)              -> train.losses.LossOutput (total, terms, per_iter)
    task.metrics(out, batch)           -> {name: (B,) tensor} per-sample validation metrics
    task.extra_state()                 -> dict stored in checkpoints (to rebuild the model)

:class:`Trainer` does the rest: device and DistributedDataParallel (``torchrun``; gloo on CPU,
nccl on CUDA), AdamW with decoupled weight decay on weights only, linear warm-up then cosine
decay, gradient clipping, bf16 autocast on CUDA, tqdm (loss, img/s), a CSV + JSON-lines log,
validation every K steps, atomic checkpoints with RNG states, exact resume, and PNG curves.

:func:`train_coarse` wires phase 1 together from a :class:`train.config.CoarseConfig`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist

from .checkpoint import (CheckpointError, load_checkpoint, load_inference_checkpoint, rng_state, save_checkpoint,
                         set_rng_state)

__all__ = ["LoopConfig", "DistInfo", "init_distributed", "resolve_device", "Trainer", "TrainResult",
           "cosine_lambda", "train_coarse", "plot_curves"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LoopConfig:
    """What the loop needs from a job config (phase-independent)."""

    out: str
    total_steps: int
    batch_size: int
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.03
    min_lr: float = 0.01
    grad_clip: float = 1.0
    amp: bool = True
    log_every: int = 10
    val_every: int = 1000
    ckpt_every: int = 1000
    progress: bool = True
    stop_at: int = 0
    """stop (with a checkpoint) after this step although the schedule runs to total_steps (0 = off)."""


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` -> this process's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was requested but torch.cuda.is_available() is False")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name != "cpu":
        raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


def init_distributed(device_name: str) -> DistInfo:
    """Join the process group set up by ``torchrun`` (env ``WORLD_SIZE`` > 1), else single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        device = resolve_device(device_name, local)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        log.info("rank %d/%d joined the %s process group", rank, world, backend)
    return DistInfo(rank=rank, world=world, local_rank=local)


def cosine_lambda(total: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier at step s: linear warm-up to 1 over ``warmup_steps``, then cosine to ``min_ratio``."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return f


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclasses.dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    step: int
    losses: list[tuple[int, float]]
    """(step, mean training loss over the log interval) rows written by this process's run."""
    val: dict[str, float]
    """last validation metrics (empty without validation)."""
    checkpoint: Path | None


class Trainer:
    """The shared loop (module docstring). ``train_loader_fn(start_step)`` returns an iterable of
    batches for steps ``start_step .. total_steps - 1``; ``val_loader`` is iterated on rank 0."""

    def __init__(self, task, loop: LoopConfig, train_loader_fn: Callable[[int], Iterable], val_loader: Iterable | None,
                 device: torch.device, run_config: dict[str, Any], fingerprint: str, dist_info: DistInfo = DistInfo(),
                 resume_state: dict[str, Any] | None = None):
        self.task, self.loop, self.device, self.dist = task, loop, device, dist_info
        self.train_loader_fn, self.val_loader = train_loader_fn, val_loader
        self.run_config, self.fingerprint, self.resume_state = run_config, fingerprint, resume_state
        self.out = Path(loop.out)
        self.ckpt_path = self.out / "checkpoints" / "last.pt"
        self.amp = loop.amp and device.type == "cuda"

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _mean_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        if self.dist.enabled:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.dist.world
        return values

    def _save(self, step: int, model, opt, sched) -> Path:
        return save_checkpoint(self.ckpt_path, {
            "task": self.task.name, "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "config": self.run_config, "task_state": self.task.extra_state(),
            "model_fingerprint": self.fingerprint, "rng": rng_state(),
        })

    @torch.no_grad()
    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        """Mean of every per-sample metric over the validation set (NaNs skipped), plus ``n``."""
        was = model.training
        model.eval()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        n = 0
        for batch in self.val_loader:
            batch = self.task.prepare_batch(batch, self.device)
            with self._autocast():
                out = self.task.forward(model, batch)
            for name, v in self.task.metrics(out, batch).items():
                v = v.float()
                ok = torch.isfinite(v)
                sums[name] = sums.get(name, 0.0) + float(v[ok].sum())
                counts[name] = counts.get(name, 0) + int(ok.sum())
            n += int(batch["image"].shape[0])
        model.train(was)
        res = {k: sums[k] / counts[k] if counts[k] else float("nan") for k in sums}
        res["n"] = float(n)
        return res

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        loop, task, device = self.loop, self.task, self.device
        main = self.dist.is_main
        if main:
            (self.out / "checkpoints").mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(self.run_config, indent=2, default=str))
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels once
        task.to(device)
        module = task.model
        model = module
        if self.dist.enabled:
            model = torch.nn.parallel.DistributedDataParallel(
                module, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
        opt = torch.optim.AdamW(_param_groups(module, loop.weight_decay), lr=loop.lr, betas=(0.9, 0.999),
                                fused=device.type == "cuda")
        warm = int(round(loop.warmup * loop.total_steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(loop.total_steps, warm, loop.min_lr))
        start = 0
        if self.resume_state is not None:
            ck = self.resume_state
            module.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            start = int(ck["step"])
            set_rng_state(ck["rng"])
            log.info("resumed from %s at step %d", self.ckpt_path, start)
        if main:
            _truncate_logs(self.out, start)
        if start >= loop.total_steps:
            log.info("nothing to do: step %d >= --steps %d", start, loop.total_steps)
        loader = self.train_loader_fn(start)
        writer = _LogWriter(self.out, main)
        bar = None
        if main and loop.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=loop.total_steps, initial=start, desc=task.name, dynamic_ncols=True)
        losses: list[tuple[int, float]] = []
        val: dict[str, float] = {}
        ckpt: Path | None = None
        acc_loss, acc_terms, acc_n, acc_img = 0.0, {}, 0, 0
        t0 = time.perf_counter()
        step = start
        model.train()
        for batch in loader:
            batch = task.prepare_batch(batch, device)
            with self._autocast():
                out = task.forward(model, batch)
            lo = task.loss(out, batch)
            opt.zero_grad(set_to_none=True)
            lo.total.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(module.parameters(), loop.grad_clip if loop.grad_clip > 0 else float("inf"))
            opt.step()
            sched.step()
            step += 1
            # accumulate on the device: no host synchronisation until a log row is written
            acc_loss = acc_loss + lo.total.detach().double()
            for k, v in lo.terms.items():
                acc_terms[k] = acc_terms.get(k, 0.0) + v.double()
            for i, v in enumerate(lo.per_iter, start=1):  # loss of each iteration: it1 vs itK
                acc_terms[f"it{i}"] = acc_terms.get(f"it{i}", 0.0) + v.double()
            acc_n += 1
            acc_img += int(batch["image"].shape[0]) * self.dist.world
            last = step == loop.total_steps or step == loop.stop_at
            if step % loop.log_every == 0 or last:
                names = sorted(acc_terms, key=lambda k: (k.startswith("it"), len(k), k))
                vals = torch.stack([acc_loss] + [acc_terms[k] for k in names]).double() / acc_n
                vals = self._mean_over_ranks(vals).cpu()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                row = {"step": step, "loss": float(vals[0]),
                       **{f"loss_{k}": float(v) for k, v in zip(names, vals[1:])},
                       "lr": sched.get_last_lr()[0],
                       "grad_norm": float(gnorm), "img_per_s": acc_img / max(dt, 1e-9)}
                writer.train_row(row)
                losses.append((step, row["loss"]))
                if not math.isfinite(row["loss"]):
                    raise FloatingPointError(
                        f"training loss is {row['loss']} at step {step}; the last good checkpoint is {self.ckpt_path} "
                        "(try a lower --lr or --grad-clip)")
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4g}", img_s=f"{row['img_per_s']:.1f}")
                acc_loss, acc_terms, acc_n, acc_img = 0.0, {}, 0, 0
                t0 = time.perf_counter()
            if bar is not None:
                bar.update(1)
            if self.val_loader is not None and (step % loop.val_every == 0 or last):
                if main:
                    val = self.validate(module)
                    writer.val_row({"step": step, **val})
                    log.info("step %d validation: %s", step, _short(val))
                if self.dist.enabled:
                    dist.barrier()
                t0 = time.perf_counter()
            if step % loop.ckpt_every == 0 or last:
                if main:
                    ckpt = self._save(step, module, opt, sched)
                if self.dist.enabled:
                    dist.barrier()
                t0 = time.perf_counter()
            if step == loop.stop_at:
                log.info("stopping at step %d (--stop-at); continue with --resume", step)
                break
        if bar is not None:
            bar.close()
        writer.close()
        if main:
            try:
                plot_curves(self.out)
            except Exception as e:  # plotting must never lose a finished run
                log.warning("could not plot curves: %s", e)
        return TrainResult(step=step, losses=losses, val=val, checkpoint=ckpt)


def _short(d: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in d.items() if not k.startswith("depth_coverage"))


class _LogWriter:
    """``train.csv`` / ``val.csv`` (header from the first row) and ``log.jsonl`` (every row)."""

    def __init__(self, out: Path, enabled: bool):
        self.out, self.enabled = out, enabled
        self._files: dict[str, Any] = {}
        self._writers: dict[str, csv.DictWriter] = {}
        self._jsonl = open(out / "log.jsonl", "a") if enabled else None

    def _row(self, kind: str, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        path = self.out / f"{kind}.csv"
        if kind not in self._writers:
            fields = list(row)
            if path.exists() and path.stat().st_size > 0:
                with open(path) as f:
                    fields = next(csv.reader(f))
            new = not path.exists() or path.stat().st_size == 0
            self._files[kind] = open(path, "a", newline="")
            self._writers[kind] = csv.DictWriter(self._files[kind], fieldnames=fields, extrasaction="ignore",
                                                 lineterminator="\n")
            if new:
                self._writers[kind].writeheader()
        self._writers[kind].writerow(row)
        self._files[kind].flush()
        self._jsonl.write(json.dumps({"kind": kind, **row}) + "\n")
        self._jsonl.flush()

    def train_row(self, row: dict[str, Any]) -> None:
        self._row("train", row)

    def val_row(self, row: dict[str, Any]) -> None:
        self._row("val", row)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        if self._jsonl is not None:
            self._jsonl.close()


def _truncate_logs(out: Path, step: int) -> None:
    """Drop log rows after ``step`` (written by a run that died after its last checkpoint)."""
    for name in ("train.csv", "val.csv"):
        path = out / name
        if not path.exists():
            continue
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            continue
        keep = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) <= step]
        with open(path, "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(keep)
    path = out / "log.jsonl"
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
        path.write_text("".join(ln + "\n" for ln in lines))


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Columns of a log CSV as float arrays (empty dict when the file is missing)."""
    if not Path(path).exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows]) for k in rows[0]}


def plot_curves(out: str | os.PathLike) -> Path:
    """``OUT/curves.png``: training loss (log scale) and per-iteration validation metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    tr, va = read_csv(out / "train.csv"), read_csv(out / "val.csv")
    metrics = ["vertex_rmse_mm", "depth_err_mean_pct", "landmark_nme"]
    fig, axes = plt.subplots(1, 1 + len(metrics), figsize=(5 * (1 + len(metrics)), 4))
    ax = axes[0]
    if tr:
        ax.plot(tr["step"], tr["loss"], label="total")
        for k in tr:
            if k.startswith("loss_") and not k.startswith("loss_it"):
                ax.plot(tr["step"], tr[k], label=k[5:], alpha=0.6)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel("step")
    ax.set_title("training loss")
    for ax, m in zip(axes[1:], metrics):
        cols = sorted((k for k in va if k.startswith(m + "/it")), key=lambda k: int(k.rsplit("it", 1)[1]))
        for k in cols:
            ax.plot(va["step"], va[k], marker="o", label=k.split("/")[1])
        ax.set_title(f"val {m}")
        ax.set_xlabel("step")
        if cols:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- phase 1 wiring
def train_coarse(config, model=None) -> TrainResult:
    """Train CoarseNet as configured by a :class:`train.config.CoarseConfig`.

    ``model`` (a ``MorphableModel``) overrides ``config.model`` (tests pass the tiny model).
    Launch under ``torchrun --nproc-per-node N`` for DistributedDataParallel.
    """
    from .coarse_net import CoarseTask, ParamLayout, ParamStats
    from .data import Augment, ShardDataset, make_eval_loader, make_train_loader, rank_indices
    from .losses import LossWeights

    dinfo = init_distributed(config.device)
    device = resolve_device(config.device, dinfo.local_rank)
    if config.threads:
        torch.set_num_threads(config.threads)
    if model is None:
        from morphable_model import load_model

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

    augment = Augment(color_jitter=config.color_jitter, crop_jitter=config.crop_jitter)
    train_ds = ShardDataset(config.data, fingerprint=fp, size=config.size, augment=augment, seed=config.seed)
    indices = rank_indices(train_ds, dinfo.rank, dinfo.world)
    total = config.total_steps(len(indices))
    if resume_state is not None:
        stats = ParamStats.from_dict(resume_state["task_state"]["stats"])
    else:
        arr = train_ds.param_arrays(config.stats_samples)
        stats = ParamStats.from_samples(arr["pose"], arr["translation"], arr["intrinsics"], (config.size, config.size),
                                        train_ds.projection, arr["sh"])
    n_id = min(config.n_id, model.n_id)
    n_exp = model.n_exp if config.n_exp is None else min(config.n_exp, model.n_exp)
    if n_id < config.n_id:
        log.info("--n-id %d capped at the model's %d identity components", config.n_id, n_id)
    layout = ParamLayout(n_id=n_id, n_exp=n_exp, n_alb=min(config.n_albedo, model.n_albedo),
                         n_sh=27 if config.predict_sh else 0)
    weights = LossWeights(geo=config.w_geo, proj=config.w_proj, pose=config.w_pose, cam=config.w_cam,
                          param=config.w_param, alb=config.w_alb, sh=config.w_sh)
    torch.manual_seed(config.seed)  # same initial weights on every rank (DDP also broadcasts them)
    task = CoarseTask(model, layout, stats, iters=config.iters, width_mult=config.width_mult,
                      projection=train_ds.projection, mask_input=config.mask_input, loss_weights=weights,
                      feedback_cell=config.feedback_cell)
    pin = device.type == "cuda"

    def loader_fn(start: int):
        return make_train_loader(train_ds, indices, config.batch_size, config.seed, total, start,
                                 workers=config.workers, pin_memory=pin)

    val_loader = None
    if config.val_data and not dinfo.is_main:
        val_loader = []  # validation runs on rank 0; the others only meet it at the barrier
    if config.val_data and dinfo.is_main:
        val_ds = ShardDataset(config.val_data, fingerprint=fp, size=config.size)
        if val_ds.projection != train_ds.projection:
            raise ValueError(f"--val-data uses {val_ds.projection} projection, --data uses {train_ds.projection}")
        val_loader = make_eval_loader(val_ds, config.batch_size, config.val_samples, workers=min(config.workers, 2),
                                      pin_memory=pin)
    loop = LoopConfig(out=config.out, total_steps=total, batch_size=config.batch_size, lr=config.lr,
                      weight_decay=config.weight_decay, warmup=config.warmup, min_lr=config.min_lr,
                      grad_clip=config.grad_clip, amp=config.amp, log_every=config.log_every,
                      val_every=config.val_every, ckpt_every=config.ckpt_every, progress=config.progress,
                      stop_at=config.stop_at)
    log.info("coarse: %d training samples (%d on this rank), %d steps of %d x %d, layout %s, device %s",
             len(train_ds), len(indices), total, config.batch_size, dinfo.world, layout, device)
    trainer = Trainer(task, loop, loader_fn, val_loader, device, config.to_dict(), fp, dinfo, resume_state)
    return trainer.fit()


def evaluate_checkpoint(ckpt_path, data: str, model_path: str | None = None, model=None, samples: int = 512,
                        batch_size: int = 32, device: str = "auto", workers: int = 0) -> dict[str, float]:
    """Validation metrics (means over ``samples`` samples of ``data``) of a CoarseNet checkpoint
    (``.pt`` or exported ``.safetensors``)."""
    from .coarse_net import build_task_from_state
    from .data import ShardDataset, make_eval_loader

    ck = load_inference_checkpoint(ckpt_path, task="coarse")
    if model is None:
        from morphable_model import load_model

        model = load_model(model_path if model_path is not None else ck["config"].get("model"))
    if model.fingerprint != ck["model_fingerprint"]:
        raise CheckpointError(f"checkpoint {ckpt_path} was trained with morphable model "
                              f"{ck['model_fingerprint'][:12]}..., the model given is {model.fingerprint[:12]}...")
    dev = resolve_device(device)
    task = build_task_from_state(model, ck["task_state"])
    task.model.load_state_dict(ck["model"])
    size = int(ck["config"]["size"])
    ds = ShardDataset(data, fingerprint=model.fingerprint, size=size)
    loop = LoopConfig(out=str(Path(ckpt_path).parent), total_steps=1, batch_size=batch_size)
    trainer = Trainer(task, loop, lambda s: [], make_eval_loader(ds, batch_size, samples, workers), dev,
                      ck["config"], model.fingerprint)
    task.to(dev)
    return trainer.validate(task.model)
