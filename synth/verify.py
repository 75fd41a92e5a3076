"""Shard verification: every file opens, has the layout's attributes and datasets, holds the samples
its name and the dataset manifest say, and every chunk passes its checksum and decodes to sane
values (``synth-cli verify``)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .codecs import decode_sample
from .shards import READABLE_LAYOUTS, SHARD_PATTERN, list_shards, plain_attr, shard_bounds, shard_count, shard_name

__all__ = ["ShardReport", "verify_shard", "verify_dir"]


@dataclasses.dataclass
class ShardReport:
    """Outcome of :func:`verify_shard` (``ok`` when ``problems`` is empty)."""

    name: str
    n_samples: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_shard(path: str | os.PathLike, expected: dict[str, Any] | None = None) -> ShardReport:
    """Check a shard: opens, layout, counts, indices, checksums (every chunk read), NaNs, value ranges.

    Every readable layout (:data:`synth.codecs.READABLE_LAYOUTS`) is checked with its own datasets
    (layout 2 adds ``specular``: strength >= 0, shininess >= 1); another layout is a problem.

    ``expected`` (optional): ``{"n_total", "shard_size", "size", "seed", "model_fingerprint"}`` from the
    dataset manifest, to check the shard belongs to it.
    """
    import h5py

    path = Path(path)
    problems: list[str] = []
    n = 0
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        return ShardReport(path.name, 0, [f"cannot open as HDF5: {e}"])
    with f:
        a = f.attrs
        try:
            layout = int(a.get("layout_version", -1))
            if layout not in READABLE_LAYOUTS:
                problems.append(f"layout_version {a.get('layout_version')} is not one of {READABLE_LAYOUTS}")
            if not bool(a.get("complete", False)):
                problems.append("not marked complete")
            n = int(a["n_samples"])
            k, s, total = int(a["shard_index"]), int(a["shard_size"]), int(a["n_total"])
        except (KeyError, ValueError, TypeError) as e:
            return ShardReport(path.name, n, problems + [f"missing/bad attribute: {e}"])
        m = SHARD_PATTERN.match(path.name)
        if m and int(m.group(1)) != k:
            problems.append(f"file name says shard {int(m.group(1))}, attribute shard_index = {k}")
        start, stop = shard_bounds(k, total, s)
        if stop - start != n:
            problems.append(f"holds {n} samples, shard {k} of N={total}, S={s} must hold {stop - start}")
        if expected:
            for key in ("n_total", "shard_size", "size", "seed", "model_fingerprint"):
                if key in expected and plain_attr(a.get(key)) != expected[key]:
                    problems.append(f"attribute {key}={plain_attr(a.get(key))!r}, dataset manifest says {expected[key]!r}")
        required = ["image", "depth_offset", "depth_step", "normals", "pncc", "albedo", "landmarks",
                    "landmarks_visible", "alpha_id", "alpha_exp", "beta", "sh", "pose", "translation",
                    "intrinsics", "index"] + (["specular"] if layout >= 2 else [])
        if bool(a.get("detail", False)):
            required += ["depth_coarse", "depth_detail", "detail_weights"]
        else:
            required += ["depth"]
        try:
            missing = [r for r in required if r not in f]
            if missing:
                return ShardReport(path.name, n, problems + [f"missing datasets: {', '.join(missing)}"])
            for name in required:
                if f[name].shape[0] != n:
                    problems.append(f"{name} has {f[name].shape[0]} rows, expected {n}")
        except (OSError, RuntimeError) as e:  # h5py: a corrupt object header or link table (bad checksum)
            return ShardReport(path.name, n, problems + [f"corrupt HDF5 structure ({str(e).splitlines()[0]})"])
        if problems:
            return ShardReport(path.name, n, problems)
        size = int(a["size"])
        for i in range(n):
            try:
                raw = {name: f[name][i] for name in f.keys()}
            except (OSError, RuntimeError) as e:  # fletcher32 mismatch / broken compressed chunk
                problems.append(f"sample {i}: unreadable chunk ({str(e).splitlines()[0]})")
                if len(problems) >= 10:
                    break
                continue
            problems += [f"sample {i}: {p}" for p in _check_sample(raw, start + i, size, layout)]
            if len(problems) >= 10:
                problems.append("... (stopped after 10 problems)")
                break
    return ShardReport(path.name, n, problems)


def _check_sample(raw: dict[str, np.ndarray], expected_index: int, size: int, layout: int) -> list[str]:
    out = []
    if int(raw["index"]) != expected_index:
        out.append(f"index {int(raw['index'])} != expected {expected_index}")
    if raw["image"].shape != (size, size, 3):
        out.append(f"image shape {raw['image'].shape} != {(size, size, 3)}")
    for key, value in raw.items():
        if np.issubdtype(np.asarray(value).dtype, np.floating) and not np.all(np.isfinite(value)):
            out.append(f"{key} has NaN/inf")
    if out:
        return out
    d = decode_sample(raw, layout=layout)
    if not d["mask"].any():
        out.append("face mask is empty")
    if not (float(raw["depth_step"]) > 0 and float(raw["depth_offset"]) >= 0):
        out.append(f"bad depth quantisation offset={raw['depth_offset']} step={raw['depth_step']}")
    elif d["mask"].any() and d["depth"][d["mask"]].min() <= 0:
        out.append("non-positive depth on the face")
    if "depth_coarse" in d and d["mask"].any() and d["depth_coarse"][d["mask"]].min() <= 0:
        out.append("non-positive coarse depth on the face")
    nrm = np.linalg.norm(d["normals"][d["mask"]], axis=-1)
    if nrm.size and np.abs(nrm - 1).max() > 1e-3:
        out.append("normals are not unit length")
    k = raw["intrinsics"]
    if not (k[0, 0] > 0 and k[1, 1] > 0 and k[2, 2] == 1):
        out.append(f"bad intrinsics {k.tolist()}")
    if np.abs(raw["pose"]).max() > math.pi:
        out.append(f"pose out of range {raw['pose'].tolist()}")
    if raw["landmarks_visible"].max(initial=0) > 1:
        out.append("landmarks_visible not 0/1")
    if "specular" in raw and not (raw["specular"].shape == (2,) and raw["specular"][0] >= 0 and raw["specular"][1] >= 1):
        out.append(f"bad specular (strength, shininess) {raw['specular'].tolist()}")
    return out


def verify_dir(directory: str | os.PathLike) -> tuple[list[ShardReport], list[str]]:
    """Verify every shard in ``directory`` against its ``dataset.json`` manifest (when present).

    Returns (per-shard reports, dataset-level problems such as missing shards).
    """
    d = Path(directory)
    if not d.is_dir():
        raise ValueError(f"DIR {str(d)!r} is not a directory")
    manifest_path = d / "dataset.json"
    expected = None
    dataset_problems: list[str] = []
    shards = list_shards(d)
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
            expected = {k: manifest[k] for k in ("n_total", "shard_size", "size", "seed", "model_fingerprint")}
        except (ValueError, KeyError) as e:
            dataset_problems.append(f"dataset.json unreadable: {e}")
    reports = [verify_shard(p, expected) for p in shards]
    if expected is not None:
        n_shards = shard_count(expected["n_total"], expected["shard_size"])
        present = {int(SHARD_PATTERN.match(p.name).group(1)) for p in shards}
        missing = sorted(set(range(n_shards)) - present)
        extra = sorted(present - set(range(n_shards)))
        if missing:
            dataset_problems.append(f"{len(missing)} of {n_shards} shards missing: "
                                    + ", ".join(shard_name(k) for k in missing[:10]) + (" ..." if len(missing) > 10 else ""))
        if extra:
            dataset_problems.append("unexpected shards: " + ", ".join(shard_name(k) for k in extra[:10]))
    elif not shards:
        dataset_problems.append("no shards and no dataset.json")
    return reports, dataset_problems
