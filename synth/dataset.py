"""Render a synthetic dataset into HDF5 shards: validation, sharding, worker processes, resume.

- Everything that can fail on bad input (config, model file, output folder, an existing dataset
  with another configuration) is checked before anything is written.
- ``OUT/dataset.json`` (the manifest: generator config, model fingerprint, N, shard size) is written
  atomically first; a rerun with a different configuration is refused.
- Shard ``k`` holds samples ``[k S, min((k+1) S, N))``. It is written to a temporary name and
  renamed into place when complete (:class:`synth.shards.ShardWriter`), so a finished shard is
  exactly a file named ``shard-*.h5``. A rerun skips finished shards and deletes stale temporary
  files of the shards it renders: killing a run at any moment and rerunning it gives exactly N
  valid samples.
- Sample ``i`` depends only on (seed, i) (see :mod:`synth.sampling`), so the sample arrays are the
  same for any worker count, shard order, machine or ``shard_range`` split.
- Workers are ``spawn`` processes, each owning one renderer; shards are handed out one at a time;
  progress (samples) flows back through a queue to the ``progress`` callback.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import shards as sh
from .codecs import encode_sample
from .detail import N_FIELDS
from .sampling import SamplingConfig, face_framing, sample_params

log = logging.getLogger(__name__)

# fields of the manifest that must match for a rerun to resume into the same folder
_IDENTITY_KEYS = ("n_total", "shard_size", "size", "seed", "model_fingerprint", "sampling", "layout_version",
                  "platform")


@dataclasses.dataclass
class DatasetConfig:
    """One ``synth-cli render`` job (one field per flag)."""

    out: str  # --out: output folder
    n: int  # --n: total number of samples N
    size: int = 224  # --size: image side in pixels
    seed: int = 0  # --seed: global seed
    shard_size: int = 1000  # --shard-size: samples per shard
    workers: int = 1  # --workers: worker processes (0 = render in this process)
    compression: str = "zstd"  # --compression: zstd (level 1) | gzip (level 1 + shuffle) | lzf
    platform: str = "cpu"  # --platform: cpu (compiled rasterizer) | osmesa | egl (OpenGL id pass)
    model: str | None = None  # --model: BFM file (None = built-in model)
    shard_range: tuple[int, int | None] | None = None  # --shard-range a:b (None: all, or SLURM array split)
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        if isinstance(self.sampling, dict):
            self.sampling = SamplingConfig(**self.sampling)
        if not isinstance(self.n, (int, np.integer)) or self.n <= 0:
            raise ValueError(f"--n must be a positive integer, got {self.n!r}")
        if not isinstance(self.size, (int, np.integer)) or not 8 <= self.size <= 4096:
            raise ValueError(f"--size must be an integer in [8, 4096], got {self.size!r}")
        if not isinstance(self.shard_size, (int, np.integer)) or self.shard_size <= 0:
            raise ValueError(f"--shard-size must be a positive integer, got {self.shard_size!r}")
        if not isinstance(self.workers, (int, np.integer)) or self.workers < 0:
            raise ValueError(f"--workers must be an integer >= 0, got {self.workers!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"--seed must be an integer >= 0, got {self.seed!r}")
        if self.compression not in sh.COMPRESSIONS:
            raise ValueError(f"--compression must be one of {', '.join(sh.COMPRESSIONS)}, got {self.compression!r}")
        if self.platform not in ("cpu", "osmesa", "egl"):
            raise ValueError(f"--platform must be cpu, osmesa or egl, got {self.platform!r}")

    @property
    def n_shards(self) -> int:
        return sh.shard_count(self.n, self.shard_size)


def parse_shard_range(text: str) -> tuple[int, int | None]:
    """``"a:b"`` -> (a, b); ``"a:"`` -> (a, None); ``"a"`` -> (a, a + 1)."""
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            return int(a), (int(b) if b.strip() else None)
        a = int(text)
        return a, a + 1
    except ValueError:
        raise ValueError(f"--shard-range must look like a:b (shard numbers), got {text!r}") from None


def assigned_shards(config: DatasetConfig, environ: dict | None = None) -> list[int]:
    """Shards this job renders: ``--shard-range a:b`` -> ``a..b-1``; otherwise, inside a SLURM job
    array (``SLURM_ARRAY_TASK_ID`` set), task t of T (``SLURM_ARRAY_TASK_COUNT`` or MAX - MIN + 1)
    renders shards ``k`` with ``k % T == t - MIN``; otherwise all shards."""
    env = os.environ if environ is None else environ
    total = config.n_shards
    if config.shard_range is not None:
        a, b = config.shard_range
        b = total if b is None else b
        if not 0 <= a < b <= total:
            raise ValueError(f"--shard-range {a}:{b} must satisfy 0 <= a < b <= {total} (the number of shards)")
        return list(range(a, b))
    if env.get("SLURM_ARRAY_TASK_ID") not in (None, ""):
        try:
            task = int(env["SLURM_ARRAY_TASK_ID"])
            lo = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            if env.get("SLURM_ARRAY_TASK_COUNT"):
                count = int(env["SLURM_ARRAY_TASK_COUNT"])
            else:
                count = int(env["SLURM_ARRAY_TASK_MAX"]) - lo + 1
        except (KeyError, ValueError) as e:
            raise ValueError(f"SLURM_ARRAY_TASK_* variables unusable for sharding: {e}") from None
        if not 0 <= task - lo < count:
            raise ValueError(f"SLURM_ARRAY_TASK_ID={task} outside the array (min {lo}, count {count})")
        return [k for k in range(total) if k % count == task - lo]
    return list(range(total))


@dataclasses.dataclass
class RenderSummary:
    """What :func:`render_dataset` did."""

    out: Path
    n_total: int
    shards_assigned: int
    shards_rendered: int
    shards_skipped: int
    samples_rendered: int
    seconds: float
    timings: dict[str, float]  # wall seconds summed over workers: sampling, geometry, render, post, write;
    # cpu: CPU seconds of the rendering processes


def _load(model):
    from morphable_model import load_model

    if model is None or isinstance(model, (str, os.PathLike)):
        return load_model(model)
    return model


def manifest_for(config: DatasetConfig, model) -> dict[str, Any]:
    """The ``dataset.json`` content of a job."""
    return {
        "layout_version": sh.LAYOUT_VERSION,
        "n_total": int(config.n),
        "shard_size": int(config.shard_size),
        "n_shards": config.n_shards,
        "size": int(config.size),
        "seed": int(config.seed),
        "model_fingerprint": model.fingerprint,
        "model_source": str(getattr(model, "source", "")),
        "model_counts": {"n_vertices": model.n_vertices, "n_id": model.n_id, "n_exp": model.n_exp,
                         "n_albedo": model.n_albedo},
        "projection": config.sampling.projection,
        "sampling": config.sampling.to_dict(),
        "compression": config.compression,
        # the rasterizers agree on all but edge pixels (a pixel centre on a shared edge, docs/rendering.md):
        # a dataset is rendered on one platform
        "platform": config.platform,
    }


def _check_output_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a directory")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {str(out)!r} cannot be created: {str(existing)!r} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {str(out)!r} is not writable (no write permission on {str(existing)!r})")


def prepare(config: DatasetConfig, model=None):
    """Validate a job without writing anything; returns (model, manifest, shards to render, skipped)."""
    out = Path(config.out)
    _check_output_dir(out)
    if config.sampling.background == "images":
        from .backgrounds import ImageFolder

        ImageFolder(config.sampling.background_dir)  # raises ValueError on a bad folder
    model = _load(config.model if model is None else model)
    if model.landmarks is None:
        log.warning("model %s has no landmarks: landmarks are stored as zeros, all invisible", model.source)
    manifest = manifest_for(config, model)
    mpath = out / "dataset.json"
    if mpath.exists():
        try:
            old = json.loads(mpath.read_text())
        except ValueError as e:
            raise ValueError(f"{mpath} is not valid JSON ({e}); remove it or use another --out") from None
        diff = [k for k in _IDENTITY_KEYS if old.get(k) != json.loads(json.dumps(manifest[k]))]
        if diff:
            raise ValueError(f"--out {str(out)!r} already holds a dataset with another configuration "
                             f"(differs in: {', '.join(diff)}); use a new --out or remove it")
    elif out.exists() and sh.list_shards(out):
        raise ValueError(f"--out {str(out)!r} holds shards but no dataset.json; use a new --out")
    todo, skipped = [], []
    for k in assigned_shards(config):
        path = out / sh.shard_name(k)
        if path.exists():
            skipped.append(k)
        else:
            todo.append(k)
    return model, manifest, todo, skipped


# ---------------------------------------------------------------------------------- per process
class _ShardRenderer:
    """Per-process state: model, renderer, framing constants."""

    def __init__(self, config: DatasetConfig, model):
        from .render import FaceRenderer

        self.config = config
        self.model = model
        self.frame = face_framing(model)
        self.renderer = FaceRenderer(model, config.size, platform=config.platform,
                                     background_dir=config.sampling.background_dir)
        self.renderer.warm_up(detail=config.sampling.detail)  # set-up cost outside the per-sample timings
        if config.sampling.background == "photos" or config.sampling.occluders > 0:
            from .backgrounds import default_bank

            default_bank().load()  # the bundled photos, decoded once per process

    def render_shard(self, k: int, manifest: dict, progress: Callable[[int], None] | None = None) -> dict[str, float]:
        c = self.config
        out = Path(c.out)
        start, stop = sh.shard_bounds(k, c.n, c.shard_size)
        timings = {"sampling": 0.0, "geometry": 0.0, "render": 0.0, "post": 0.0, "write": 0.0}
        before = dict(self.renderer.timings)
        cpu0 = time.process_time()
        attrs = {
            "model_fingerprint": manifest["model_fingerprint"], "model_source": manifest["model_source"],
            "projection": c.sampling.projection, "size": c.size, "seed": c.seed, "shard_index": k,
            "shard_size": c.shard_size, "n_total": c.n, "start_index": start,
            "generator_config": json.dumps(manifest["sampling"], sort_keys=True),
            "lights": c.sampling.lights,
        }
        dims = {"alpha_id": self.model.n_id, "alpha_exp": self.model.n_exp, "beta": self.model.n_albedo,
                "detail_weights": N_FIELDS}
        for stale in out.glob(f"{sh.TEMP_PREFIX}{sh.shard_name(k)}.*"):
            stale.unlink(missing_ok=True)  # left by a killed run
        pending = 0
        with sh.ShardWriter(out / sh.shard_name(k), stop - start, c.size, dims, c.sampling.detail, attrs,
                            c.compression) as writer:
            batch: dict[int, tuple] = {}
            for j, index in enumerate(range(start, stop)):
                if index not in batch:  # parameters and model arrays of the next aligned block
                    batch = self._model_batch(index, timings)
                params, arrays = batch.pop(index)
                t1 = time.perf_counter()
                result = self.renderer.render(params, arrays, maps=False)  # layout 3 stores no maps
                t2 = time.perf_counter()
                writer.write(j, encode_sample(params, result))
                t3 = time.perf_counter()
                timings["write"] += t3 - t2
                pending += 1
                if progress is not None and (pending >= 8 or j == stop - start - 1):
                    progress(pending)
                    pending = 0
            t0 = time.perf_counter()
            writer.commit()
            timings["write"] += time.perf_counter() - t0
        for key in ("geometry", "render", "post"):
            timings[key] += self.renderer.timings[key] - before[key]
        timings["cpu"] = time.process_time() - cpu0  # this process's CPU seconds for the shard
        return timings

    def _model_batch(self, index: int, timings: dict[str, float]) -> dict[int, tuple]:
        """``{i: (params, model arrays)}`` for the aligned block of ``GEOMETRY_BATCH`` global indices
        holding ``index``. Blocks ignore shard bounds (a boundary block is evaluated whole by both
        shards), so a sample's values never depend on the shard size."""
        from .render import GEOMETRY_BATCH

        c = self.config
        first = index - index % GEOMETRY_BATCH
        t0 = time.perf_counter()
        params = [sample_params(self.model, c.sampling, c.size, c.seed, i, self.frame)
                  for i in range(first, first + GEOMETRY_BATCH)]
        t1 = time.perf_counter()
        arrays = self.renderer.model_arrays(params)
        timings["sampling"] += t1 - t0
        timings["geometry"] += time.perf_counter() - t1
        return {p.index: (p, a) for p, a in zip(params, arrays)}

    def close(self) -> None:
        self.renderer.close()


_WORKER: dict[str, Any] = {}  # per worker process: set once by _init_worker


def _init_worker(config_dict: dict, model, manifest: dict, progress_queue) -> None:
    try:  # die with the parent (Linux), so a killed run leaves no orphan writing shards
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    _WORKER["manifest"] = manifest
    _WORKER["queue"] = progress_queue
    try:
        config = DatasetConfig(**config_dict)
        _WORKER["state"] = _ShardRenderer(config, _load(model))
    except Exception as e:  # reported by the first task instead of a silently respawning pool
        _WORKER["error"] = e


def _worker_render(k: int) -> dict[str, float]:
    if "error" in _WORKER:
        raise _WORKER["error"]
    q = _WORKER["queue"]
    return _WORKER["state"].render_shard(k, _WORKER["manifest"], progress=q.put)


def _config_dict(config: DatasetConfig) -> dict:
    d = dataclasses.asdict(config)
    d["sampling"] = config.sampling.to_dict()
    return d


def render_dataset(config: DatasetConfig, model=None, progress: Callable[[int], None] | None = None,
                   on_start: Callable[[int, int], None] | None = None) -> RenderSummary:
    """Render the shards of ``config`` that are not finished yet.

    ``model``: a ``MorphableModel`` (overrides ``config.model``) or None (load ``config.model``).
    ``progress(k)`` is called as k more samples are done; ``on_start(samples_todo, samples_skipped)``
    once before rendering. Raises ``ValueError`` on bad input before writing anything.
    """
    t_start = time.perf_counter()
    # what workers load: the caller's model object (pickled), else the file path / None = built-in
    worker_model = model if model is not None else config.model
    model, manifest, todo, skipped = prepare(config, model)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    probe = out / f"{sh.TEMP_PREFIX}probe.{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"--out {str(out)!r} is not writable: {e}") from None
    if not (out / "dataset.json").exists():
        sh.write_json_atomic(out / "dataset.json", manifest)

    def n_in(k: int) -> int:
        a, b = sh.shard_bounds(k, config.n, config.shard_size)
        return b - a

    n_todo = sum(n_in(k) for k in todo)
    if on_start is not None:
        on_start(n_todo, sum(n_in(k) for k in skipped))
    if skipped:
        log.info("skipping %d finished shards", len(skipped))
    timings = {"sampling": 0.0, "geometry": 0.0, "render": 0.0, "post": 0.0, "write": 0.0, "cpu": 0.0}
    if todo and config.workers <= 1:
        _render_in_process(config, model, manifest, todo, progress, timings)
    elif todo:
        _render_with_pool(config, worker_model, manifest, todo, progress, timings)
    return RenderSummary(out=out, n_total=config.n, shards_assigned=len(todo) + len(skipped),
                         shards_rendered=len(todo), shards_skipped=len(skipped), samples_rendered=n_todo,
                         seconds=time.perf_counter() - t_start, timings=timings)


def _add(total: dict, part: dict) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0.0) + v


def _render_in_process(config, model, manifest, todo, progress, timings) -> None:
    state = _ShardRenderer(config, model)
    try:
        for k in todo:
            _add(timings, state.render_shard(k, manifest, progress))
    finally:
        state.close()


_SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _render_with_pool(config, worker_model, manifest, todo, progress, timings) -> None:
    ctx = mp.get_context("spawn")
    # workers: one BLAS thread each, the requested OpenGL platform (inherited at spawn)
    saved = {k: os.environ.get(k) for k in _SINGLE_THREAD_ENV + ("PYOPENGL_PLATFORM", "LP_NUM_THREADS")}
    for k in _SINGLE_THREAD_ENV:
        os.environ[k] = "1"
    if config.platform != "cpu":
        os.environ["PYOPENGL_PLATFORM"] = config.platform
    if saved["LP_NUM_THREADS"] is None:
        os.environ["LP_NUM_THREADS"] = "1"  # one llvmpipe (OSMesa) thread per worker process
    q = ctx.Queue()
    try:
        pool = ctx.Pool(min(config.workers, len(todo)), initializer=_init_worker,
                        initargs=(_config_dict(config), worker_model, manifest, q))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        results = [pool.apply_async(_worker_render, (k,)) for k in todo]
        pending = list(results)
        while pending:
            try:
                n = q.get(timeout=0.2)
                if progress is not None:
                    progress(n)
            except queue_mod.Empty:
                pass
            still = []
            for r in pending:
                if r.ready():
                    _add(timings, r.get())  # re-raises a worker's exception
                else:
                    still.append(r)
            pending = still
        while True:  # drain the last progress messages
            try:
                n = q.get_nowait()
            except queue_mod.Empty:
                break
            if progress is not None:
                progress(n)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
