"""Render a synthetic dataset into HDF5 shards: validation, sharding, worker processes, resume.

- Everything that can fail on bad input (config, model file, output folder, an existing dataset
  with another configuration) is checked before anything is written.
- ``OUT/dataset.json`` (the manifest: generator config, model fingerprint, N, shard size and the
  rule that chose it) is written atomically first; a rerun with a different configuration is refused.
- Shard ``k`` holds samples ``[k S, min((k+1) S, N))``. It is written to a temporary name and
  renamed into place when complete (:class:`synth.shards.ShardWriter`), so a finished shard is
  exactly a file named ``shard-*.h5``. A rerun checks finished shards cheaply
  (:func:`synth.verify.quick_check_shard`) and skips them, renders a damaged one again (with a
  warning naming it), and deletes stale temporary files of the shards it renders: killing a run
  at any moment and rerunning it gives exactly N valid samples.
- The shard size S is ``--shard-size`` when given, else the existing dataset's (a rerun resumes),
  else chosen from N alone (:func:`default_shard_size`: at most 64 shards of 32..1000 samples), never
  from the worker count: the files are the same for any ``--workers``.
- Sample ``i`` depends only on (seed, i) (see :mod:`synth.sampling`), so the sample arrays are the
  same for any worker count, shard size, shard order, machine or ``shard_range`` split.
- W workers = the calling process plus W - 1 ``spawn`` processes, each owning one renderer and
  running one BLAS thread and one llvmpipe (OSMesa) thread, so W workers keep W cores busy. Each
  takes the next shard when it is free (a counter in shared memory); the calling process starts
  rendering as soon as a one-worker run would, the spawned ones join when they have started (so a
  second worker never makes a small job slower). Progress (samples) and finished shards' timings
  flow back through a queue to the ``progress`` callback; a worker's error stops the run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import multiprocessing as mp
import os
import pickle
import queue as queue_mod
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import shards as sh
from .codecs import DEFAULT_JPEG_QUALITY, JPEG_LAYOUT, encode_sample, ids_recomputed
from .detail import BANK_VERSION, N_FIELDS
from .sampling import SamplingConfig, face_framing, sample_params
from .verify import quick_check_shard

log = logging.getLogger(__name__)

# fields of the manifest that must match for a rerun to resume into the same folder
_IDENTITY_KEYS = ("n_total", "shard_size", "size", "seed", "model_fingerprint", "sampling", "layout_version",
                  "platform", "detail_bank_version", "image_quality")
IMAGE_CODECS = ("lossless", "jpeg")
"""``--image-codec``: lossless (layout 6, the default) or jpeg (layout 7, ``--jpeg-quality``)."""

SHARD_SIZE_RULE = "min(1000, max(32, 16 * ceil(N / 1024)))"


class WorkerDied(RuntimeError):
    """A render worker process ended without reporting an error (killed, out of memory); the
    shards finished so far are kept and a rerun resumes."""


def default_shard_size(n: int) -> int:
    """Samples per shard when ``--shard-size`` is not given: ``min(1000, max(32, 16 ceil(N / 1024)))``.

    43 to 64 shards for 2048 <= N <= 64000 (fewer, of 32 samples, below; 1000-sample shards from
    N ~ 63500 on), so up to dozens of workers all get shards for any N worth parallelising.
    Multiples of 16 (except the 1000 cap). Depends on N only: the files are identical for any
    worker count.
    """
    return min(1000, max(32, 16 * math.ceil(int(n) / 1024)))


@dataclasses.dataclass
class DatasetConfig:
    """One ``synth-cli render`` job (one field per flag)."""

    out: str  # --out: output folder
    n: int  # --n: total number of samples N
    size: int = 224  # --size: image side in pixels
    seed: int = 0  # --seed: global seed
    shard_size: int | None = None  # --shard-size: samples per shard (None: the existing dataset's, else
    # default_shard_size(n))
    workers: int = 1  # --workers: worker processes (0 = render in this process)
    compression: str = "zstd"  # --compression: zstd (level 1) | gzip (level 1 + shuffle) | lzf
    image_codec: str = "lossless"  # --image-codec: lossless (layout 6) | jpeg (layout 7, lossy image)
    jpeg_quality: int = DEFAULT_JPEG_QUALITY  # --jpeg-quality: JPEG quality of --image-codec jpeg
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
        if self.shard_size is not None and (not isinstance(self.shard_size, (int, np.integer)) or self.shard_size <= 0):
            raise ValueError(f"--shard-size must be a positive integer, got {self.shard_size!r}")
        if not isinstance(self.workers, (int, np.integer)) or self.workers < 0:
            raise ValueError(f"--workers must be an integer >= 0, got {self.workers!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"--seed must be an integer >= 0, got {self.seed!r}")
        if self.compression not in sh.COMPRESSIONS:
            raise ValueError(f"--compression must be one of {', '.join(sh.COMPRESSIONS)}, got {self.compression!r}")
        if self.compression == "zstd" and not sh.register_filters():
            raise ValueError("--compression zstd (the default) needs the package hdf5plugin (pip install "
                             "hdf5plugin); --compression gzip or lzf need only h5py")
        if self.image_codec not in IMAGE_CODECS:
            raise ValueError(f"--image-codec must be one of {', '.join(IMAGE_CODECS)}, got {self.image_codec!r}")
        if not isinstance(self.jpeg_quality, (int, np.integer)) or not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"--jpeg-quality must be an integer in [1, 100], got {self.jpeg_quality!r}")
        if self.platform not in ("cpu", "osmesa", "egl"):
            raise ValueError(f"--platform must be cpu, osmesa or egl, got {self.platform!r}")

    @property
    def layout(self) -> int:
        """The shard layout this job writes (6; 7 with ``--image-codec jpeg``)."""
        return JPEG_LAYOUT if self.image_codec == "jpeg" else sh.LAYOUT_VERSION

    @property
    def n_shards(self) -> int:
        return sh.shard_count(self.n, self.shard_size or default_shard_size(self.n))


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


def manifest_for(config: DatasetConfig, model, shard_size_rule: str = "--shard-size") -> dict[str, Any]:
    """The ``dataset.json`` content of a job (``config.shard_size`` resolved, see :func:`prepare`)."""
    return {
        "layout_version": config.layout,
        "image_codec": config.image_codec,
        # JPEG quality of the stored images (layouts 7 and 5); None: lossless
        "image_quality": int(config.jpeg_quality) if config.image_codec == "jpeg" else None,
        "n_total": int(config.n),
        "shard_size": int(config.shard_size),
        "shard_size_rule": shard_size_rule,
        "n_shards": config.n_shards,
        "size": int(config.size),
        "seed": int(config.seed),
        "model_fingerprint": model.fingerprint,
        "model_sketch": model.sketch,  # matches files written on another CPU (MorphableModel.matches)
        "model_source": str(getattr(model, "source", "")),
        "model_counts": {"n_vertices": model.n_vertices, "n_id": model.n_id, "n_exp": model.n_exp,
                         "n_albedo": model.n_albedo},
        "projection": config.sampling.projection,
        "sampling": config.sampling.to_dict(),
        "compression": config.compression,
        # the rasterizers agree on all but edge pixels (a pixel centre on a shared edge, docs/rendering.md):
        # a dataset is rendered on one platform
        "platform": config.platform,
        # synth.detail's bank (None: detail off); absent from manifests written before bank 2
        "detail_bank_version": BANK_VERSION if config.sampling.detail else None,
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


@dataclasses.dataclass
class Plan:
    """What :func:`prepare` decided: the job with its shard size resolved, and the shards to render."""

    config: DatasetConfig  # shard_size resolved
    model: Any  # the MorphableModel
    manifest: dict[str, Any]
    todo: list[int]  # shards to render (missing or damaged)
    skipped: list[int]  # finished shards that passed the quick check
    damaged: dict[int, str]  # finished shards that failed it: shard -> one-line reason (also in todo)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); remove it or use another --out") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not a synth-cli dataset manifest (a JSON {type(manifest).__name__}, "
                         "not an object); remove it or use another --out")
    return manifest


def prepare(config: DatasetConfig, model=None) -> Plan:
    """Validate a job without writing anything and decide what to render.

    The shard size is ``config.shard_size`` when given, else the one of the dataset already in
    ``config.out`` (so rerunning the same command resumes it), else :func:`default_shard_size`.
    Finished shards get :func:`synth.verify.quick_check_shard`; a damaged one is rendered again.
    """
    out = Path(config.out)
    _check_output_dir(out)
    if config.sampling.background == "images":
        from .backgrounds import ImageFolder

        ImageFolder(config.sampling.background_dir).check()  # ValueError on a bad folder or image
    elif config.sampling.background_dir:
        log.warning("--background-dir %s is not used: --background is %s (not images)",
                    config.sampling.background_dir, config.sampling.background)
    model = _load(config.model if model is None else model)
    if model.landmarks is None:
        log.warning("model %s has no landmarks: landmarks are stored as zeros, all invisible", model.source)
    mpath = out / "dataset.json"
    old = _read_manifest(mpath)
    rule = "--shard-size"
    if config.shard_size is None:
        if old is not None and old.get("n_total") == config.n and isinstance(old.get("shard_size"), int):
            config = dataclasses.replace(config, shard_size=old["shard_size"])
            rule = str(old.get("shard_size_rule", "--shard-size"))
        else:
            config = dataclasses.replace(config, shard_size=default_shard_size(config.n))
            rule = f"from N: {SHARD_SIZE_RULE}"
    manifest = manifest_for(config, model, rule)
    if (old is not None and old.get("model_fingerprint") != manifest["model_fingerprint"]
            and model.matches(old.get("model_fingerprint"), old.get("model_sketch"), f"dataset {mpath}")):
        # the same model built on another CPU (round-off): the dataset keeps the identity it has
        manifest.update(model_fingerprint=old["model_fingerprint"], model_sketch=old["model_sketch"])
    if old is not None:
        diff = [k for k in _IDENTITY_KEYS if old.get(k) != json.loads(json.dumps(manifest[k]))]
        if diff:
            why = ""  # the differences that come from a newer synth-cli, explained
            if "detail_bank_version" in diff and config.sampling.detail:
                why = (f"; it was rendered with detail bank {old.get('detail_bank_version') or 1}, this synth-cli "
                       f"writes bank {BANK_VERSION}")
            if "layout_version" in diff or "image_quality" in diff:
                def image(q):
                    return f"JPEG quality {q}" if q else "lossless"

                why += (f"; its shards are layout {old.get('layout_version')} "
                        f"(image {image(old.get('image_quality'))}), this job writes layout {config.layout} "
                        f"(image {image(manifest['image_quality'])}); a dataset is written in one layout and image codec")
                if old.get("layout_version", sh.LAYOUT_VERSION) < sh.LAYOUT_VERSION:
                    why += " (older layouts are read, not extended)"
            raise ValueError(f"--out {str(out)!r} already holds a dataset with another configuration "
                             f"(differs in: {', '.join(diff)}{why}); use a new --out or remove it")
    elif out.exists() and sh.list_shards(out):
        raise ValueError(f"--out {str(out)!r} holds shards but no dataset.json; use a new --out")
    expected = {k: manifest[k] for k in ("n_total", "shard_size", "size", "seed", "model_fingerprint", "layout_version",
                                         "image_quality")}
    expected["generator_config"] = sh.sampling_json(manifest["sampling"])
    todo, skipped, damaged = [], [], {}
    for k in assigned_shards(config):
        path = out / sh.shard_name(k)
        if not path.exists():
            todo.append(k)
            continue
        problem = quick_check_shard(path, expected)
        if problem is None:
            skipped.append(k)
        else:
            damaged[k] = problem
            todo.append(k)
    return Plan(config=config, model=model, manifest=manifest, todo=todo, skipped=skipped, damaged=damaged)


# ---------------------------------------------------------------------------------- per process
class _ShardRenderer:
    """Per-process state: model, renderer, framing constants."""

    def __init__(self, config: DatasetConfig, model):
        from .render import FaceRenderer

        self.config = config
        self.model = model
        self.frame = face_framing(model)
        images = config.sampling.background_dir if config.sampling.background == "images" else None
        self.renderer = FaceRenderer(model, config.size, platform=config.platform, background_dir=images)
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
            "model_fingerprint": manifest["model_fingerprint"], "model_sketch": manifest["model_sketch"],
            "model_source": manifest["model_source"],
            "projection": c.sampling.projection, "size": c.size, "seed": c.seed, "shard_index": k,
            "shard_size": c.shard_size, "n_total": c.n, "start_index": start,
            "generator_config": sh.sampling_json(manifest["sampling"]),
            "lights": c.sampling.lights,
        }
        if c.sampling.detail:
            attrs["detail_bank_version"] = self.renderer.detail_version
        dims = {"alpha_id": self.model.n_id, "alpha_exp": self.model.n_exp, "beta": self.model.n_albedo,
                "detail_weights": N_FIELDS}
        for stale in out.glob(f"{sh.TEMP_PREFIX}{sh.shard_name(k)}.*"):
            stale.unlink(missing_ok=True)  # left by a killed run
        pending = 0
        with sh.ShardWriter(out / sh.shard_name(k), stop - start, c.size, dims, c.sampling.detail, attrs,
                            c.compression, layout=c.layout, image_quality=c.jpeg_quality) as writer:
            batch: dict[int, tuple] = {}
            for j, index in enumerate(range(start, stop)):
                if index not in batch:  # parameters and model arrays of the next block
                    batch = self._model_batch(index, stop, timings)
                params, arrays = batch.pop(index)
                t1 = time.perf_counter()
                # layouts 3 to 7 store no maps; 6 and 7 the ids of the unstable pixels only
                result = self.renderer.render(params, arrays, maps=False, stable=ids_recomputed(c.layout))
                t2 = time.perf_counter()
                writer.write(j, encode_sample(params, result, c.layout, c.jpeg_quality))
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

    def _model_batch(self, index: int, stop: int, timings: dict[str, float]) -> dict[int, tuple]:
        """``{i: (params, model arrays)}`` for the next ``GEOMETRY_BATCH`` global indices from
        ``index`` (fewer at the shard's ``stop``). A sample's values do not depend on the batch it
        is evaluated in (:meth:`~synth.render.FaceRenderer.model_arrays`), so blocks need no
        alignment and the values never depend on the shard size."""
        from .render import GEOMETRY_BATCH

        c = self.config
        last = min(index + GEOMETRY_BATCH, stop)
        t0 = time.perf_counter()
        params = [sample_params(self.model, c.sampling, c.size, c.seed, i, self.frame) for i in range(index, last)]
        t1 = time.perf_counter()
        arrays = self.renderer.model_arrays(params)
        timings["sampling"] += t1 - t0
        timings["geometry"] += time.perf_counter() - t1
        return {p.index: (p, a) for p, a in zip(params, arrays)}

    def close(self) -> None:
        self.renderer.close()


# One thread per process: rendering parallelism comes from worker processes, and the small BLAS
# products and llvmpipe's tile threads only add contention between the processes.
_BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _one_thread():
    """While inside: one BLAS/OpenMP thread (threadpoolctl, for the libraries already loaded) and
    ``LP_NUM_THREADS=1`` (unless set) for OpenGL contexts created meanwhile. llvmpipe reads it when a
    process creates its first context, so a renderer created inside keeps one thread for good."""
    from threadpoolctl import threadpool_limits

    saved = os.environ.get("LP_NUM_THREADS")
    os.environ.setdefault("LP_NUM_THREADS", "1")
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        if saved is None:
            os.environ.pop("LP_NUM_THREADS", None)


def _pin_worker_threads() -> None:
    """A worker process, for its whole life: one BLAS/OpenMP thread and one llvmpipe thread. The
    spawn environment (:func:`_spawn_environment`) already asked for it before numpy loaded; this
    also holds when a library ignored the variables."""
    from threadpoolctl import threadpool_limits

    os.environ.setdefault("LP_NUM_THREADS", "1")  # before the worker creates its OpenGL context
    threadpool_limits(limits=1)  # not used as a context manager: never restored


@contextlib.contextmanager
def _spawn_environment(platform: str):
    """The environment handed to spawned workers (restored afterwards): one BLAS/OpenMP thread,
    read by those libraries when the worker first imports numpy, before any code of ours runs;
    one llvmpipe thread unless the user set ``LP_NUM_THREADS``; the requested OpenGL platform."""
    keys = _BLAS_ENV + ("PYOPENGL_PLATFORM", "LP_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in _BLAS_ENV})
    if platform != "cpu":  # the compiled rasterizer needs no OpenGL platform
        os.environ["PYOPENGL_PLATFORM"] = platform
    os.environ.setdefault("LP_NUM_THREADS", "1")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _thread_counts() -> dict[str, int]:
    """This process's BLAS threads and llvmpipe threads: ``{"blas": n, "llvmpipe": n}``."""
    from threadpoolctl import threadpool_info

    blas = max((p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"), default=0)
    names = [Path(t, "comm").read_text().strip() for t in Path("/proc/self/task").iterdir()]
    return {"blas": blas, "llvmpipe": sum(n.startswith("llvmpipe") for n in names)}


class _Shards:
    """The shards to render, taken one at a time by the calling process and the spawned workers
    (a counter in shared memory): whoever is free takes the next one. ``todo`` is set per process
    once the job is known (:class:`_Workers` sends it)."""

    def __init__(self, ctx):
        self.todo: list[int] = []
        self.next = ctx.Value("i", 0)

    def take(self) -> int | None:
        with self.next.get_lock():
            i = self.next.value
            if i >= len(self.todo):
                return None
            self.next.value = i + 1
        return self.todo[i]


def _worker_main(config_dict: dict, model, shards: _Shards, jobs, results) -> None:
    """A spawned worker: sets up its renderer, waits for the job (``(resolved config, manifest,
    todo)`` or ``None``), then renders the shards it takes until none are left. Messages to the
    parent: ``("progress", n)``, ``("done", k, timings)``, ``("exit", thread counts)`` or
    ``("error", exc)``."""
    try:  # die with the parent (Linux), so a killed run leaves no orphan writing shards
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    _pin_worker_threads()
    state = None
    try:
        model = _load(model)  # a path or None (the built-in model's cache file): no 100 MB pickle
        # the renderer depends on size, platform, detail and backgrounds only, not on the shard size
        state = _ShardRenderer(DatasetConfig(**config_dict), model)
        job = jobs.get()
        if job is not None:
            config_dict, manifest, shards.todo = job
            state.config = DatasetConfig(**config_dict)  # the shard size resolved by prepare()
            if not model.matches(manifest["model_fingerprint"], manifest.get("model_sketch")):
                raise ValueError(f"morphable model {state.config.model or 'built-in'} changed while rendering "
                                 f"({model.fingerprint[:12]}... != {manifest['model_fingerprint'][:12]}...)")
            while (k := shards.take()) is not None:
                timings = state.render_shard(k, manifest, progress=lambda n: results.put(("progress", n)))
                results.put(("done", k, timings))
        results.put(("exit", _thread_counts()))
    except BaseException as e:  # reported by the parent, which stops the run
        try:
            pickle.dumps(e)
        except Exception:
            e = RuntimeError(f"{type(e).__name__}: {e}")
        results.put(("error", e))
    finally:
        if state is not None:
            state.close()


def _config_dict(config: DatasetConfig) -> dict:
    d = dataclasses.asdict(config)
    d["sampling"] = config.sampling.to_dict()
    return d


class _Workers:
    """``n`` spawned rendering processes (:func:`_worker_main`). They are started before the job is
    validated (their imports, model loading and renderer set-up, ~3 s, overlap the caller's), and
    wait for :meth:`begin`; :meth:`stop` ends them."""

    def __init__(self, config: DatasetConfig, model, n: int):
        ctx = mp.get_context("spawn")
        self.shards = _Shards(ctx)
        self.jobs, self.results = ctx.Queue(), ctx.Queue()
        self.procs = [ctx.Process(target=_worker_main, name=f"synth-worker-{i}", daemon=True,
                                  args=(_config_dict(config), model, self.shards, self.jobs, self.results))
                      for i in range(n)]
        with _spawn_environment(config.platform):
            for p in self.procs:
                p.start()

    def begin(self, config: DatasetConfig, manifest: dict, todo: list[int]) -> None:
        """Hand the job to the workers; ``todo`` is shared with the caller (same order, same counter)."""
        self.shards.todo = list(todo)
        for _ in self.procs:
            self.jobs.put((_config_dict(config), manifest, list(todo)))

    def stop(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()  # idle or failing: nothing of a finished shard is lost
        for p in self.procs:
            p.join()


def _model_is_cheap_to_load(config: DatasetConfig, model) -> bool:
    """Whether workers can get the model without building it: the caller's object, a file, or the
    built-in model's cache file (on the very first run the caller builds and caches it first)."""
    if model is not None or config.model is not None:
        return True
    from morphable_model.builtin import cache_path

    return cache_path().exists()


def render_dataset(config: DatasetConfig, model=None, progress: Callable[[int], None] | None = None,
                   on_start: Callable[[int, int], None] | None = None) -> RenderSummary:
    """Render the shards of ``config`` that are not finished yet.

    ``model``: a ``MorphableModel`` (overrides ``config.model``) or None (load ``config.model``).
    ``progress(k)`` is called as k more samples are done; ``on_start(samples_todo, samples_skipped)``
    once before rendering. Raises ``ValueError`` on bad input before writing anything. A finished
    shard that fails :func:`synth.verify.quick_check_shard` is logged (one warning line naming it)
    and rendered again.

    ``config.workers`` W > 1: this process renders too, beside W - 1 spawned workers, so it starts
    as soon as a single-process run would and each worker adds its core once it is ready.
    """
    t_start = time.perf_counter()
    # what spawned workers load: the caller's model object (pickled), else the file path / None =
    # built-in (its cache file; cheaper than a 100 MB pickle per worker)
    worker_model = model if model is not None else config.model
    n_spawn = max(0, min(config.workers, config.n_shards) - 1)
    workers = None
    if n_spawn and _model_is_cheap_to_load(config, model):
        workers = _Workers(config, worker_model, n_spawn)  # set up while this process validates the job
    try:
        plan = prepare(config, model)
        config, todo, skipped = plan.config, plan.todo, plan.skipped
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f"{sh.TEMP_PREFIX}probe.{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise ValueError(f"--out {str(out)!r} is not writable: {e}") from None
        if not (out / "dataset.json").exists():
            sh.write_json_atomic(out / "dataset.json", plan.manifest)
        for k, problem in plan.damaged.items():
            log.warning("%s is damaged (%s): rendering it again", out / sh.shard_name(k), problem)

        def n_in(k: int) -> int:
            a, b = sh.shard_bounds(k, config.n, config.shard_size)
            return b - a

        n_todo = sum(n_in(k) for k in todo)
        if on_start is not None:
            on_start(n_todo, sum(n_in(k) for k in skipped))
        if skipped:
            log.info("skipping %d finished shards", len(skipped))
        timings = {"sampling": 0.0, "geometry": 0.0, "render": 0.0, "post": 0.0, "write": 0.0, "cpu": 0.0}
        if todo:
            if workers is None and n_spawn and len(todo) > 1:
                workers = _Workers(config, worker_model, min(n_spawn, len(todo) - 1))
            _render(config, plan.model, plan.manifest, todo, workers, progress, timings)
    finally:
        if workers is not None:
            workers.stop()
    return RenderSummary(out=out, n_total=config.n, shards_assigned=len(todo) + len(skipped),
                         shards_rendered=len(todo), shards_skipped=len(skipped), samples_rendered=n_todo,
                         seconds=time.perf_counter() - t_start, timings=timings)


def _add(total: dict, part: dict) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0.0) + v


def _render(config, model, manifest, todo, workers: _Workers | None, progress, timings) -> None:
    """Render ``todo`` in this process and in ``workers`` (None: this process alone); returns when
    every shard is finished (the workers are then idle: the caller stops them)."""
    if workers is not None:
        workers.begin(config, manifest, todo)
        shards, results, procs = workers.shards, workers.results, workers.procs
    else:  # this process takes every shard
        shards, results, procs = _Shards(mp.get_context("spawn")), None, []
        shards.todo = list(todo)
    remaining = set(todo)

    def poll(timeout: float | None = None) -> None:
        """Handle the workers' messages (waiting up to ``timeout`` for the first); raise a worker's error."""
        while results is not None:
            try:
                msg = results.get(timeout=timeout) if timeout else results.get_nowait()
            except queue_mod.Empty:
                return
            timeout = None
            if msg[0] == "progress":
                if progress is not None:
                    progress(msg[1])
            elif msg[0] == "done":
                _add(timings, msg[2])
                remaining.discard(msg[1])
            elif msg[0] == "exit":
                log.debug("a worker finished; its threads: %s", msg[1])
            else:
                raise msg[1]

    def own_progress(n: int) -> None:
        if progress is not None:
            progress(n)
        poll()  # the workers' progress, between this process's samples

    with _one_thread():
        state = _ShardRenderer(config, model)
        try:
            while (k := shards.take()) is not None:
                _add(timings, state.render_shard(k, manifest, own_progress))
                remaining.discard(k)
        finally:
            state.close()
    while remaining:
        poll(timeout=0.2)
        dead = [p for p in procs if p.exitcode not in (None, 0)]
        if dead and remaining:
            poll()  # its error message may still be in the queue
            raise WorkerDied(f"a render worker died (exit code {dead[0].exitcode}); rerun to resume")
    poll()
