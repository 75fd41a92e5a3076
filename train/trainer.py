"""One training loop for every phase; the phase lives in a *task* object.

A task provides (see :class:`train.coarse_task.CoarseTask`)::

    task.name                          "coarse" | "fine" ...
    task.model                         the nn.Module to optimise (one forward per step)
    task.curve_metrics                 validation metric names plotted in curves.png (optional)
    task.to(device)
    task.prepare_batch(batch, device)  -> batch on the device (with an "image" (B, ...) entry)
    task.forward(model, batch)         -> model output (model may be the DDP wrapper)
    task.loss(out, batch)              -> train.losses.LossOutput (total, terms, per_iter)
    task.metrics(out, batch)           -> {name: (B,) tensor} per-sample validation metrics
    task.summarize(means)              -> {name: float} set-level metrics from their means (optional)
    task.median_metrics                names of metrics also reported as their median (optional)
    task.extra_state()                 -> dict stored in checkpoints (to rebuild the model)

:class:`Trainer` does the rest: device and DistributedDataParallel (``torchrun``; gloo on CPU,
nccl on CUDA), AdamW with decoupled weight decay on weights only, linear warm-up then cosine
decay, gradient clipping, bf16 autocast on CUDA, tqdm (loss, img/s), a CSV + JSON-lines log,
validation every K steps, atomic checkpoints with RNG states, exact resume, and PNG curves.
:meth:`Trainer.fit` reads as its four parts: restore (or start), step, log, validate and
checkpoint.

Nothing here changes global state beyond the run: on CUDA, ``torch.backends.cudnn.benchmark``
is switched on for the duration of :meth:`Trainer.fit` only (fixed input sizes: the fastest
kernels are picked once) and restored afterwards. The run directory's logs and curves are
written by :mod:`train.logs`.

Phase 1 is wired together in :mod:`train.coarse_task`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist

from morphable_model.model import MorphableModel, fingerprint_of

from .checkpoint import CheckpointError, load_checkpoint, remove_stale_temporaries, rng_state, save_checkpoint, set_rng_state
from .logs import RunLog, plot_curves, truncate_logs

__all__ = ["resume_state_for", "LoopConfig", "DistInfo", "init_distributed", "distributed", "resolve_device", "Trainer",
           "TrainResult", "cosine_lambda", "cudnn_benchmark", "validate"]

log = logging.getLogger(__name__)


def resume_state_for(config, fingerprint: MorphableModel | str, old_defaults: dict[str, Any] | None = None,
                     check: Callable[[dict[str, Any], str], None] | None = None) -> dict[str, Any] | None:
    """The checkpoint a run continues from: ``OUT/checkpoints/last.pt`` with ``config.resume``
    (safe loader, ``fingerprint`` checked), None for a new run. ``config`` is a job config with
    ``out``, ``resume`` and ``ARCH_FIELDS``. ``check(state, what)`` may refuse the checkpoint
    first (e.g. an oracle input); ``old_defaults`` fill settings older runs did not record.
    ``CheckpointError`` when an architecture setting differs from the checkpoint's (then ``check``
    runs); ``ValueError`` when a new run would overwrite one or ``--out`` is a file."""
    if os.path.exists(config.out) and not os.path.isdir(config.out):  # said before any data is loaded
        raise ValueError(f"--out {config.out} is a file, expected a run folder")
    path = Path(config.out) / "checkpoints" / "last.pt"
    if not config.resume:
        if path.exists():
            raise ValueError(f"--out {config.out} already holds a run ({path}); pass --resume or choose a new --out")
        return None
    state = load_checkpoint(path, map_location="cpu", fingerprint=fingerprint)
    old = {**(old_defaults or {}), **state["config"]}
    diff = {k: (old.get(k), getattr(config, k)) for k in config.ARCH_FIELDS if old.get(k) != getattr(config, k)}
    if diff:
        raise CheckpointError(f"checkpoint {path} was trained with other settings {diff}; use the same flags or a new --out")
    if check is not None:
        check(state, f"checkpoint {path}")
    for flag, key in (("--lr", "lr"), ("--weight-decay", "weight_decay")):
        if key in state["config"] and state["config"][key] != getattr(config, key, state["config"][key]):
            log.warning("resuming with %s %s (the checkpoint's run had %s): the new value applies from step %d",
                        flag, getattr(config, key), state["config"][key], int(state["step"]))
    return state


@dataclasses.dataclass
class LoopConfig:
    """What the loop needs from a job config (phase-independent). Every field but
    ``total_steps`` is the job config's field of the same name (and flag), whose default it
    takes through :meth:`from_config`."""

    out: str
    """run directory (checkpoints, logs, curves)."""
    total_steps: int
    """length of the learning-rate schedule (the job config's --steps or --epochs, resolved)."""
    lr: float
    """peak AdamW learning rate."""
    weight_decay: float
    """AdamW decoupled weight decay (weights with ndim >= 2 only)."""
    warmup: float
    """linear warm-up, as a fraction of total_steps; cosine decay afterwards."""
    min_lr: float
    """final learning rate as a fraction of lr."""
    grad_clip: float
    """clip the global gradient norm to this (0 = off)."""
    amp: bool
    """bf16 autocast on CUDA."""
    log_every: int
    """write a training log row every this many steps."""
    val_every: int
    """validate every this many steps (and at the end)."""
    ckpt_every: int
    """write checkpoints/last.pt every this many steps (and at the end)."""
    progress: bool
    """show a tqdm progress bar."""
    stop_at: int
    """stop (with a checkpoint) after this step although the schedule runs to total_steps (0 = off)."""

    @classmethod
    def from_config(cls, config: Any, total_steps: int) -> "LoopConfig":
        """The loop settings of a job config (any object with the fields above but total_steps)."""
        return cls(total_steps=total_steps,
                   **{f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if f.name != "total_steps"})


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


@contextlib.contextmanager
def distributed(device_name: str) -> Iterator[DistInfo]:
    """:func:`init_distributed` for one job, leaving the process group it joined when the job
    ends. Left alive, gloo's threads meet the interpreter's exit unjoined and a rank can abort there
    ("terminate called without an active exception") after its work is done. Only a job that ended
    normally leaves it: a failing rank that tore the group down while the others wait in a
    collective could hang them (NCCL); torchrun ends those ranks instead."""
    joined = not dist.is_initialized()
    info = init_distributed(device_name)
    yield info
    if joined and dist.is_initialized():
        dist.destroy_process_group()


def cosine_lambda(total: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier at step s: linear warm-up to 1 over ``warmup_steps``, then cosine to ``min_ratio``."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return f


def _apply_lr_flags(opt: torch.optim.Optimizer, sched, loop: "LoopConfig", step: int) -> None:
    """After a resume: the optimizer and schedule states restored from the checkpoint carry the
    old run's --lr and --weight-decay; this run's flags (recorded in its config) take over, as
    --warmup, --min-lr and --steps do through the rebuilt schedule."""
    sched.base_lrs = [loop.lr for _ in opt.param_groups]
    factor = sched.lr_lambdas[0](step)
    for g in opt.param_groups:
        g["initial_lr"] = loop.lr
        g["lr"] = loop.lr * factor
    opt.param_groups[0]["weight_decay"] = loop.weight_decay  # the decayed group (see _param_groups)
    sched._last_lr = [g["lr"] for g in opt.param_groups]


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark = True`` inside the block when ``enabled``; the previous
    value is restored on exit (also on an exception)."""
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = old or enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def _autocast(amp: bool):
    """bf16 autocast on CUDA when ``amp``, else nothing."""
    if amp:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def validate(task, model: torch.nn.Module, loader: Iterable, device: torch.device, amp: bool = False) -> dict[str, float]:
    """Mean of every per-sample metric of ``task.metrics`` over ``loader`` (NaNs skipped), the
    median (``<name>_median``) of those named in ``task.median_metrics`` (optional), what
    ``task.summarize(means)`` derives from the means when the task has it, plus ``n`` (the number
    of samples); ``model`` is left in the mode it was in. ``amp``: bf16
    autocast for the forward (CUDA only)."""
    was = model.training
    model.eval()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in getattr(task, "median_metrics", ())}
    n = 0
    for batch in loader:
        batch = task.prepare_batch(batch, device)
        with _autocast(amp and device.type == "cuda"):
            out = task.forward(model, batch)
        for name, v in task.metrics(out, batch).items():
            v = v.float()
            ok = torch.isfinite(v)
            sums[name] = sums.get(name, 0.0) + float(v[ok].sum())
            counts[name] = counts.get(name, 0) + int(ok.sum())
            if name in kept:
                kept[name].append(v[ok].cpu())
        n += int(batch["image"].shape[0])
    model.train(was)
    res = {k: sums[k] / counts[k] if counts[k] else float("nan") for k in sums}
    for name, parts in kept.items():  # torch's median of an even count is the lower middle: use numpy's
        values = torch.cat(parts).double().numpy() if parts else np.zeros(0)
        res[f"{name}_median"] = float(np.median(values)) if values.size else float("nan")
    if hasattr(task, "summarize"):  # set-level metrics derived from the means
        res.update(task.summarize(res))
    res["n"] = float(n)
    return res


@dataclasses.dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns."""

    step: int
    losses: list[tuple[int, float]]
    """(step, mean training loss over the log interval) rows written by this process's run."""
    val: dict[str, float]
    """last validation metrics (empty without validation)."""
    checkpoint: Path | None
    summary: str = ""
    """one line about the data the job used (e.g. the photos used and skipped), set by the job."""


@dataclasses.dataclass
class _Run:
    """The state one :meth:`Trainer.fit` carries from step to step."""

    module: torch.nn.Module
    """the task's model (what is checkpointed)."""
    model: torch.nn.Module
    """the same, or its DistributedDataParallel wrapper (what runs the forward)."""
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    step: int = 0
    result: TrainResult = dataclasses.field(default_factory=lambda: TrainResult(0, [], {}, None))


class _LossMeter:
    """Sums the losses of the steps since the last log row, on the device (no host
    synchronisation until a row is written), and the images seen for img/s."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss, self.terms, self.steps, self.images = 0.0, {}, 0, 0
        self.restart_clock()

    def restart_clock(self) -> None:
        """img/s counts training time only: restarted after validation and checkpoints."""
        self.t0 = time.perf_counter()

    def add(self, lo, images: int) -> None:
        self.loss = self.loss + lo.total.detach().double()
        for k, v in lo.terms.items():
            self.terms[k] = self.terms.get(k, 0.0) + v.double()
        for i, v in enumerate(lo.per_iter, start=1):  # loss of each iteration: it1 vs itK
            self.terms[f"it{i}"] = self.terms.get(f"it{i}", 0.0) + v.double()
        self.steps += 1
        self.images += images

    def means(self) -> tuple[list[str], torch.Tensor]:
        """Term names (``loss`` first, then the terms, iterations last) and their means ``(1 + T,)`` float64."""
        names = sorted(self.terms, key=lambda k: (k.startswith("it"), len(k), k))
        return names, torch.stack([self.loss] + [self.terms[k] for k in names]).double() / self.steps


class Trainer:
    """The shared loop (module docstring). ``train_loader_fn(start_step)`` returns an iterable of
    batches for steps ``start_step .. total_steps - 1``; ``val_loader`` is iterated on rank 0."""

    def __init__(self, task, loop: LoopConfig, train_loader_fn: Callable[[int], Iterable], val_loader: Iterable | None,
                 device: torch.device, run_config: dict[str, Any], fingerprint: MorphableModel | str,
                 dist_info: DistInfo = DistInfo(),
                 resume_state: dict[str, Any] | None = None):
        self.task, self.loop, self.device, self.dist = task, loop, device, dist_info
        self.train_loader_fn, self.val_loader = train_loader_fn, val_loader
        self.run_config, self.fingerprint, self.resume_state = run_config, fingerprint, resume_state
        self.out = Path(loop.out)
        self.ckpt_path = self.out / "checkpoints" / "last.pt"
        self.amp = loop.amp and device.type == "cuda"

    # ------------------------------------------------------------------ helpers
    def _mean_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        if self.dist.enabled:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.dist.world
        return values

    def _barrier(self) -> None:
        if self.dist.enabled:
            dist.barrier()

    def _save(self, run: _Run) -> Path:
        return save_checkpoint(self.ckpt_path, {
            "task": self.task.name, "step": run.step, "model": run.module.state_dict(),
            "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(), "config": self.run_config,
            "task_state": self.task.extra_state(), "model_fingerprint": fingerprint_of(self.fingerprint),
            **({"model_sketch": self.fingerprint.sketch} if isinstance(self.fingerprint, MorphableModel) else {}),
            "rng": rng_state(),
        })

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        """:func:`validate` of the task on the validation loader."""
        return validate(self.task, model, self.val_loader, self.device, self.amp)

    # ------------------------------------------------------------------ the four parts of fit
    def _start(self) -> _Run:
        """Model on the device (DDP-wrapped when distributed), optimizer and schedule; restored
        from the resume state when there is one (weights, optimizer, schedule, step, RNG)."""
        loop, device = self.loop, self.device
        self.task.to(device)
        module = self.task.model
        model = module
        if self.dist.enabled:
            model = torch.nn.parallel.DistributedDataParallel(
                module, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
        opt = torch.optim.AdamW(_param_groups(module, loop.weight_decay), lr=loop.lr, betas=(0.9, 0.999),
                                fused=device.type == "cuda")
        warm = int(round(loop.warmup * loop.total_steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(loop.total_steps, warm, loop.min_lr))
        run = _Run(module=module, model=model, opt=opt, sched=sched)
        if self.resume_state is not None:
            ck = self.resume_state
            try:
                module.load_state_dict(ck["model"])
            except RuntimeError as e:  # names or shapes differ: a setting ARCH_FIELDS does not cover
                raise CheckpointError(f"checkpoint {self.ckpt_path} does not fit this network ("
                                      f"{' '.join(str(e).split())[:300]}); use the same flags or a new --out") from None
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            run.step = int(ck["step"])
            set_rng_state(ck["rng"])
            _apply_lr_flags(opt, sched, loop, run.step)
            log.info("resumed from %s at step %d", self.ckpt_path, run.step)
            if 0 < loop.stop_at <= run.step:
                raise ValueError(f"--stop-at {loop.stop_at} is not after the step the run resumes from ({run.step})")
        if self.dist.is_main:
            truncate_logs(self.out, run.step)
            remove_stale_temporaries(self.ckpt_path)  # a checkpoint write cut short by a kill
        if run.step >= loop.total_steps:
            log.info("nothing to do: step %d >= --steps %d", run.step, loop.total_steps)
        run.result.step = run.step
        return run

    def _train_step(self, run: _Run, batch: Any) -> tuple[Any, torch.Tensor, int]:
        """One optimisation step; returns the task's loss output, the gradient norm and the
        number of images the step trained on (all ranks)."""
        batch = self.task.prepare_batch(batch, self.device)
        with _autocast(self.amp):
            out = self.task.forward(run.model, batch)
        lo = self.task.loss(out, batch)
        run.opt.zero_grad(set_to_none=True)
        lo.total.backward()
        clip = self.loop.grad_clip if self.loop.grad_clip > 0 else float("inf")
        gnorm = torch.nn.utils.clip_grad_norm_(run.module.parameters(), clip)
        run.opt.step()
        run.sched.step()
        run.step += 1
        return lo, gnorm, int(batch["image"].shape[0]) * self.dist.world

    def _log(self, run: _Run, meter: _LossMeter, gnorm: torch.Tensor, writer: RunLog, bar) -> None:
        """Write the mean losses since the last row (averaged over ranks) to the logs; stop with
        a clear error on a non-finite loss."""
        names, vals = meter.means()
        vals = self._mean_over_ranks(vals).cpu()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - meter.t0
        row = {"step": run.step, "loss": float(vals[0]),
               **{f"loss_{k}": float(v) for k, v in zip(names, vals[1:])},
               "lr": run.sched.get_last_lr()[0],
               "grad_norm": float(gnorm), "img_per_s": meter.images / max(dt, 1e-9)}
        writer.train_row(row)
        run.result.losses.append((run.step, row["loss"]))
        if not math.isfinite(row["loss"]):
            raise FloatingPointError(
                f"training loss is {row['loss']} at step {run.step}; the last good checkpoint is {self.ckpt_path} "
                "(try a lower --lr or --grad-clip)")
        if not math.isfinite(row["grad_norm"]):  # a finite loss with a NaN gradient: the weights are NaN now
            raise FloatingPointError(
                f"gradient norm is {row['grad_norm']} at step {run.step}; the last good checkpoint is "
                f"{self.ckpt_path} (try a lower --lr or --grad-clip)")
        if bar is not None:
            bar.set_postfix(loss=f"{row['loss']:.4g}", img_s=f"{row['img_per_s']:.1f}")
        meter.reset()

    def _validate_and_checkpoint(self, run: _Run, last: bool, meter: _LossMeter, writer: RunLog) -> None:
        """Validation (rank 0) every --val-every steps and checkpoint every --ckpt-every steps,
        both at the last step; the other ranks wait at a barrier."""
        loop, main = self.loop, self.dist.is_main
        if self.val_loader is not None and (run.step % loop.val_every == 0 or last):
            if main:
                run.result.val = self.validate(run.module)
                writer.val_row({"step": run.step, **run.result.val})
                log.info("step %d validation: %s", run.step, _short(run.result.val))
            self._barrier()
            meter.restart_clock()
        if run.step % loop.ckpt_every == 0 or last:
            if main:
                run.result.checkpoint = self._save(run)
            self._barrier()
            meter.restart_clock()

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        """Train from the start or the resume state to ``total_steps`` (or ``stop_at``)."""
        loop, main = self.loop, self.dist.is_main
        if main:
            try:
                (self.out / "checkpoints").mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ValueError(f"--out {self.out}: cannot create the run folder ({e.strerror or e})") from None
        with cudnn_benchmark(self.device.type == "cuda"):
            run = self._start()
            if main:  # after the resume state was accepted: a refused resume leaves the old config
                (self.out / "config.json").write_text(json.dumps(self.run_config, indent=2, default=str))
            loader = self.train_loader_fn(run.step)
            writer = RunLog(self.out, main)
            bar = None
            if main and loop.progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=loop.total_steps, initial=run.step, desc=self.task.name, dynamic_ncols=True)
            meter = _LossMeter()
            run.model.train()
            try:
                for batch in loader:
                    lo, gnorm, images = self._train_step(run, batch)
                    meter.add(lo, images)
                    run.result.step = run.step
                    last = run.step == loop.total_steps or run.step == loop.stop_at
                    # a checkpoint step logs too: a non-finite loss stops the run before it is saved
                    if run.step % loop.log_every == 0 or run.step % loop.ckpt_every == 0 or last:
                        self._log(run, meter, gnorm, writer, bar)
                    if bar is not None:
                        bar.update(1)
                    self._validate_and_checkpoint(run, last, meter, writer)
                    if run.step == loop.stop_at:
                        log.info("stopping at step %d (--stop-at); continue with --resume", run.step)
                        break
            finally:
                if bar is not None:
                    bar.close()
                writer.close()
        if main:
            try:
                plot_curves(self.out, getattr(self.task, "curve_metrics", None))
            except Exception as e:  # plotting must never lose a finished run
                log.warning("could not plot curves: %s", e)
        return run.result


def _short(d: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in d.items())
