"""Checkpoints: one dict per file, written atomically.

Contents (``FORMAT_VERSION`` 1)::

    {"format_version": 1, "task": "coarse", "step": int, "model": state_dict,
     "optimizer": state_dict, "scheduler": state_dict, "config": dict (the job config),
     "task_state": dict (layout, normalisation stats, ... to rebuild the network),
     "model_fingerprint": str (sha256 of the morphable model), "rng": {...}}

``save_checkpoint`` writes ``path.tmp-<pid>`` in the same directory, fsyncs it and renames it
over ``path`` (atomic on POSIX), so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["FORMAT_VERSION", "CheckpointError", "save_checkpoint", "load_checkpoint", "remove_stale_temporaries",
           "rng_state", "set_rng_state"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_REQUIRED = ("format_version", "step", "model", "config", "model_fingerprint")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not match the run."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus ``format_version``) to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    missing = [k for k in _REQUIRED if k != "format_version" and k not in state]
    if missing:
        raise ValueError(f"state is missing checkpoint keys {missing}")
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
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


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", fingerprint: str | None = None) -> dict[str, Any]:
    """Read a checkpoint; ``CheckpointError`` naming the file if it is missing, unreadable, of
    another format, or (with ``fingerprint``) made for another morphable model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f"checkpoint {path} is unreadable: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in _REQUIRED):
        have = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"checkpoint {path} must hold keys {list(_REQUIRED)}, got {have}")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format_version {ckpt['format_version']}, expected {FORMAT_VERSION}")
    if fingerprint is not None and ckpt["model_fingerprint"] != fingerprint:
        raise CheckpointError(
            f"checkpoint {path} was trained with morphable model {ckpt['model_fingerprint'][:12]}..., "
            f"the model in use is {fingerprint[:12]}..."
        )
    return ckpt


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA when available) RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
