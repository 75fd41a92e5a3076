"""Checkpoints that cannot run code: training checkpoints (``.pt``) and inference weights
(``.safetensors``), both written atomically.

Training checkpoint (``FORMAT_VERSION`` 2), a ``torch.save`` file read back with
``torch.load(..., weights_only=True)``::

    {"format_version": 2, "task": "coarse", "step": int, "model": state_dict,
     "optimizer": state_dict, "scheduler": state_dict, "config": dict (the job config),
     "task_state": dict (layout, normalisation stats, ... to rebuild the network),
     "model_fingerprint": str (sha256 of the morphable model),
     "model_sketch": str (optional, written since stop 26: the model's round-off-tolerant summary),
     "rng": {"python": {"version": int, "internal": int64 tensor (625,), "gauss_next": float | None},
             "numpy": {"bit_generator": "MT19937", "key": int64 tensor (624,), "pos": int,
                       "has_gauss": int, "cached_gaussian": float},
             "torch": uint8 tensor, "cuda": [uint8 tensor, ...] (when CUDA is available)}}

Every value is a tensor, number, string, bool, None, list, tuple or dict: what the safe loader
accepts. ``save_checkpoint`` refuses anything else (naming the key), so a checkpoint this code
writes always loads safely. A file the safe loader refuses is reported in one line
(:class:`UnsafeCheckpointError`) and nothing in it runs. Format 1 (before this version) pickled
the numpy RNG state; :func:`convert_checkpoint` (``train-cli convert-checkpoint OLD NEW
--i-trust-this-file``) reads such a file with the full unpickler — only on the user's explicit
request, for files they trust — and writes format 2.

Inference weights (``train-cli export``): a safetensors file holding the network's state dict
(tensors only, no pickle) with string metadata ``format = "detailface-inference"``,
``format_version``, ``task``, ``step``, ``model_fingerprint`` (and ``model_sketch`` when known)
and ``config`` / ``task_state`` as JSON. :func:`load_inference_checkpoint` reads either kind and
returns the same dict.

Writes go to ``path.tmp-<pid>`` in the same directory, fsync, rename over ``path`` (atomic on
POSIX): a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import pickletools
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from morphable_model.model import MorphableModel, fingerprint_of, model_matches

__all__ = [
    "FORMAT_VERSION", "INFERENCE_FORMAT", "CheckpointError", "UnsafeCheckpointError", "save_checkpoint",
    "load_checkpoint", "load_inference_checkpoint", "export_inference", "write_inference", "convert_checkpoint",
    "remove_stale_temporaries", "rng_state", "set_rng_state",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
INFERENCE_FORMAT = "detailface-inference"
"""``format`` metadata value of an exported safetensors file."""
_REQUIRED = ("format_version", "step", "model", "config", "model_fingerprint")
_INFERENCE_KEYS = ("format_version", "task", "step", "model", "config", "task_state", "model_fingerprint")
# written since stop 26: the model's round-off-tolerant summary (morphable_model.MorphableModel.sketch)
_OPTIONAL_KEYS = ("model_sketch",)
_PLAIN = (torch.Tensor, str, int, float, bool, type(None))  # leaves the safe loader accepts
_CONVERT_HINT = "train-cli convert-checkpoint {path} NEW.pt --i-trust-this-file"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not match the run."""


class UnsafeCheckpointError(CheckpointError):
    """The safe loader refused a checkpoint: it holds Python objects that could run code. Nothing
    in it was executed."""


# ---------------------------------------------------------------------------- writing
def _atomic_write(path: Path, write: Callable[[Any], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _check_plain(obj: Any, where: str) -> None:
    """``ValueError`` naming the key if ``obj`` holds anything the safe loader would refuse."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise ValueError(f"checkpoint key {where}[{k!r}] is a {type(k).__name__}; keys must be str or int")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise ValueError(f"checkpoint value {where} is a {type(obj).__module__}.{type(obj).__qualname__}; "
                         "store tensors, numbers, strings, bools, None, lists or dicts "
                         "(the safe loader refuses the rest)")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus ``format_version``) to ``path`` atomically; returns the path.
    ``ValueError`` naming the key if a value is not something the safe loader accepts."""
    path = Path(path)
    missing = [k for k in _REQUIRED if k != "format_version" and k not in state]
    if missing:
        raise ValueError(f"state is missing checkpoint keys {missing}")
    full = {**state, "format_version": FORMAT_VERSION}
    _check_plain(full, "state")
    _atomic_write(path, lambda f: torch.save(full, f))
    log.info("saved checkpoint %s (step %s)", path, state["step"])
    return path


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete ``path.tmp-*`` files: checkpoint writes of a process that was killed before its rename
    (call it when no other process writes ``path``). Returns the deleted paths."""
    path = Path(path)
    stale = sorted(path.parent.glob(f"{path.name}.tmp-*")) if path.parent.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
        log.info("removed %s (a checkpoint write cut short)", p)
    return stale


# ---------------------------------------------------------------------------- reading
def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with its header length (u64, little endian) and a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 0 < int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def _pickle_globals(path: Path) -> list[str] | None:
    """The Python objects a pickled checkpoint would import, read from its opcodes without running
    anything (for the error message only); ``None`` when the file is not a pickle at all."""
    if zipfile.is_zipfile(path):
        try:
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:
            return None
    names: list[str] = []
    recent: list[Any] = []  # arguments of the last opcodes (MEMOIZE skipped), for STACK_GLOBAL
    parsed = 0
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        try:  # legacy torch files are several pickles in a row, then raw tensor bytes
            while f.tell() < size:
                for op, arg, _ in pickletools.genops(f):
                    parsed += 1
                    if op.name == "GLOBAL":
                        names.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL":
                        ok = len(recent) >= 2 and all(isinstance(a, str) for a in recent[-2:])
                        names.append(".".join(recent[-2:]) if ok else "<a global built on the stack>")
                    if op.name != "MEMOIZE":
                        recent = (recent + [arg if "UNICODE" in op.name else None])[-2:]
        except Exception:
            pass
    if not names and parsed < 2:
        return None
    return sorted({n for n in names if not (n.startswith("torch.") or n == "collections.OrderedDict")})


def _refused(path: Path) -> CheckpointError:
    """The one-line error for a file the safe loader refused."""
    names = _pickle_globals(path)
    if names is None:
        return CheckpointError(f"checkpoint {path} is unreadable: not a PyTorch checkpoint")
    if names and all(n.startswith("numpy.") for n in names):
        return UnsafeCheckpointError(
            f"checkpoint {path} is in the old pickled format 1 (it stores numpy objects, a pickle that could also run "
            f"code) and was not loaded; if you trust where it came from, convert it once with: "
            f"{_CONVERT_HINT.format(path=path)}")
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "") if names else "objects"
    return UnsafeCheckpointError(
        f"checkpoint {path} may contain code and was not loaded (it would import {shown}, which the safe loader "
        f"refuses; nothing was executed); see `train-cli convert-checkpoint --help` only if you trust its source")


def _torch_load_safe(path: Path, map_location: Any) -> Any:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses anyway: keep one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # what the weights-only unpickler raises for anything it refuses
        raise _refused(path) from e
    except Exception as e:  # a truncated zip, an empty file, ...: torch's first line, the rest chained
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"checkpoint {path} is unreadable: {type(e).__name__}: {first}") from e


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def _check_version(version: Any, path: Path) -> None:
    if version == FORMAT_VERSION:
        return
    if version == 1:
        raise CheckpointError(f"checkpoint {path} has format_version 1; if you trust it, convert it with: "
                              f"{_CONVERT_HINT.format(path=path)}")
    raise CheckpointError(f"checkpoint {path} has format_version {version!r}, expected {FORMAT_VERSION} "
                          "(written by another detailface version?)")


def _check_fingerprint(ckpt: dict[str, Any], path: Path, fingerprint: MorphableModel | str | None) -> None:
    """``fingerprint``: the morphable model in use (exact fingerprint or, failing that, the
    checkpoint's ``model_sketch``: :meth:`morphable_model.MorphableModel.matches`) or its
    fingerprint string (exact), or None (no check)."""
    if fingerprint is not None and not model_matches(fingerprint, ckpt["model_fingerprint"], ckpt.get("model_sketch"),
                                                     f"checkpoint {path}"):
        raise CheckpointError(
            f"checkpoint {path} was trained with morphable model {ckpt['model_fingerprint'][:12]}..., "
            f"the model in use is {fingerprint_of(fingerprint)[:12]}..."
        )


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu",
                    fingerprint: "MorphableModel | str | None" = None) -> dict[str, Any]:
    """Read a training checkpoint with the safe loader; ``CheckpointError`` naming the file if it
    is missing, unreadable, refused by the safe loader (:class:`UnsafeCheckpointError`), of another
    format, or (with ``fingerprint``: the model in use, or its fingerprint string for an exact
    check only) made for another morphable model."""
    path = _existing(path)
    if _is_safetensors(path):
        raise CheckpointError(f"checkpoint {path} is exported inference weights (safetensors): they hold no optimizer "
                              "state, so training cannot resume from them; use the run's checkpoints/last.pt")
    ckpt = _torch_load_safe(path, map_location)
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in _REQUIRED):
        have = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"checkpoint {path} must hold keys {list(_REQUIRED)}, got {have}")
    _check_version(ckpt["format_version"], path)
    _check_fingerprint(ckpt, path, fingerprint)
    return ckpt


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # SafetensorError for a bad header or truncated data
        raise CheckpointError(f"checkpoint {path} is unreadable: {type(e).__name__}: {e}") from e
    if meta.get("format") != INFERENCE_FORMAT:
        raise CheckpointError(f"checkpoint {path} is a safetensors file without detailface metadata "
                              f"(format = {meta.get('format')!r}, expected {INFERENCE_FORMAT!r}); "
                              "write it with train-cli export")
    missing = [k for k in _INFERENCE_KEYS if k != "model" and k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint {path} metadata is missing keys {missing}")
    try:
        out = {"format_version": int(meta["format_version"]), "task": meta["task"], "step": int(meta["step"]),
               "model": weights, "config": json.loads(meta["config"]), "task_state": json.loads(meta["task_state"]),
               "model_fingerprint": meta["model_fingerprint"],
               **({"model_sketch": meta["model_sketch"]} if meta.get("model_sketch") else {})}
    except ValueError as e:  # int() or JSON
        raise CheckpointError(f"checkpoint {path} has malformed metadata ({e})") from e
    return out


def load_inference_checkpoint(path: str | os.PathLike, fingerprint: "MorphableModel | str | None" = None,
                              task: str | None = None) -> dict[str, Any]:
    """What inference needs from a training checkpoint (``.pt``, safe loader) or exported weights
    (``.safetensors``; recognised by content, not name): a dict with ``format_version``, ``task``,
    ``step``, ``model`` (state dict on the CPU), ``config``, ``task_state``, ``model_fingerprint``.
    ``CheckpointError`` naming the file as :func:`load_checkpoint`, or if it belongs to another
    ``task`` (e.g. ``"coarse"``) or morphable model (``fingerprint``)."""
    path = _existing(path)
    if _is_safetensors(path):
        ckpt = _read_safetensors(path)
    else:
        ckpt = load_checkpoint(path, map_location="cpu")
        missing = [k for k in _INFERENCE_KEYS if k not in ckpt]
        if missing:
            raise CheckpointError(f"checkpoint {path} lacks {missing}, needed to rebuild the network")
        ckpt = {k: ckpt[k] for k in _INFERENCE_KEYS + _OPTIONAL_KEYS if k in ckpt}
    _check_version(ckpt["format_version"], path)
    if task is not None and ckpt["task"] != task:
        raise CheckpointError(f"checkpoint {path} holds a {ckpt['task']!r} network, expected {task!r}")
    _check_fingerprint(ckpt, path, fingerprint)
    return ckpt


# ---------------------------------------------------------------------------- export / convert
def export_inference(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write the network weights of checkpoint ``src`` (either kind) to ``dst`` as safetensors,
    with config, task_state, fingerprint, task, step and format version as JSON/string metadata."""
    ckpt = load_inference_checkpoint(src)
    path = write_inference(ckpt, dst, source=f"checkpoint {src}")
    log.info("exported %s (step %s, %d tensors) to %s", src, ckpt["step"], len(ckpt["model"]), path)
    return path


def write_inference(ckpt: dict[str, Any], dst: str | os.PathLike, source: str = "the weights",
                    extra: dict[str, str] | None = None) -> Path:
    """Write an inference checkpoint dict (:func:`load_inference_checkpoint`'s keys) to ``dst`` as
    safetensors (what :func:`export_inference` writes); ``extra``: more string metadata (e.g. where
    the weights came from; not the keys above), ignored by the loader. ``source`` names the weights
    in errors."""
    from safetensors.torch import save as st_save

    tensors = {}
    for k, v in ckpt["model"].items():
        if not torch.is_tensor(v):
            raise CheckpointError(f"{source}: model entry {k!r} is a {type(v).__name__}, not a tensor")
        tensors[k] = v.detach().to("cpu", copy=True).contiguous()  # own storage: safetensors refuses shared ones
    meta = {"format": INFERENCE_FORMAT, "format_version": str(FORMAT_VERSION), "task": str(ckpt["task"]),
            "step": str(int(ckpt["step"])), "model_fingerprint": str(ckpt["model_fingerprint"]),
            **({"model_sketch": str(ckpt["model_sketch"])} if ckpt.get("model_sketch") else {}),
            "config": json.dumps(ckpt["config"], sort_keys=True),
            "task_state": json.dumps(ckpt["task_state"], sort_keys=True)}
    clash = sorted(set(extra or {}) & set(meta))
    if clash:
        raise ValueError(f"extra metadata may not replace {clash}")
    meta.update(extra or {})
    data = st_save(tensors, metadata=meta)
    return _atomic_write(Path(dst), lambda f: f.write(data))


def _rng_to_plain(state: dict[str, Any]) -> dict[str, Any]:
    """The format-2 RNG layout (module docstring) from ``random.getstate()`` and
    ``np.random.get_state()`` tuples plus the torch/CUDA byte tensors."""
    version, internal, gauss_next = state["python"]
    name, key, pos, has_gauss, cached = state["numpy"]
    out = {
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),  # 625 ints < 2**32
                   "gauss_next": gauss_next},
        "numpy": {"bit_generator": str(name), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": state["torch"],
    }
    if "cuda" in state:
        out["cuda"] = list(state["cuda"])
    return out


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA when available) RNG states, as tensors/numbers/strings."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(legacy=True), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return _rng_to_plain(state)


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py, npy = state["python"], state["numpy"]
    random.setstate((int(py["version"]), tuple(int(x) for x in py["internal"].tolist()), py["gauss_next"]))
    np.random.set_state((npy["bit_generator"], npy["key"].numpy().astype(np.uint32), int(npy["pos"]),
                         int(npy["has_gauss"]), float(npy["cached_gaussian"])))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, trust: bool = False) -> Path:
    """Rewrite a format-1 (pickled) checkpoint as format 2.

    This runs the full unpickler on ``src``, which executes whatever code the file holds: it does
    so only with ``trust=True`` (``--i-trust-this-file``), for files from a source the user trusts.
    The result is checked by loading it back with the safe loader.
    """
    src_p, dst_p = _existing(src), Path(dst)
    if not trust:
        raise CheckpointError(f"converting {src_p} unpickles it, which runs any code it holds: pass "
                              "--i-trust-this-file (trust=True) only for a file from a source you trust")
    if _is_safetensors(src_p):
        raise CheckpointError(f"checkpoint {src_p} is exported safetensors weights: nothing to convert")
    try:
        old = torch.load(src_p, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"checkpoint {src_p} is unreadable: {type(e).__name__}: {e}") from e
    if not isinstance(old, dict) or any(k not in old for k in _REQUIRED):
        have = sorted(old) if isinstance(old, dict) else type(old).__name__
        raise CheckpointError(f"checkpoint {src_p} must hold keys {list(_REQUIRED)}, got {have}")
    version = old["format_version"]
    if version not in (1, FORMAT_VERSION):
        raise CheckpointError(f"checkpoint {src_p} has format_version {version!r}; "
                              f"convert reads 1 and {FORMAT_VERSION}")
    new = {k: v for k, v in old.items() if k != "format_version"}
    if version == 1 and "rng" in new:
        new["rng"] = _rng_to_plain(new["rng"])
    try:
        save_checkpoint(dst_p, new)
    except ValueError as e:
        raise CheckpointError(f"checkpoint {src_p} cannot be converted: {e}") from e
    load_checkpoint(dst_p)  # proves the safe loader accepts the result
    log.info("converted %s (format %s) to %s (format %d)", src_p, version, dst_p, FORMAT_VERSION)
    return dst_p
