"""HDF5 shard layout: writer (atomic), reader (decodes to the arrays of docs/DESIGN.md), verifier.

One file ``shard-00007.h5`` holds global samples ``[7 * S, min(8 * S, N))`` (S = shard size).
Every per-sample dataset has shape ``(n, ...)``, one sample per chunk, fletcher32 checksums and
gzip-1 + shuffle (default) or lzf compression (small parameter arrays are only checksummed). Maps
are stored compactly and decoded by :meth:`ShardReader.read`. ``image``, ``depth``, ``normals`` and
``pncc`` are stored *2-D difference coded* (``encoding`` attribute ``delta2d``): the stored array
``d`` is decoded by ``a = cumsum(cumsum(d, axis=0), axis=1)`` in the stored integer dtype
(wrapping), before the decoding in the table:

==================  =====================  ===================================================
stored dataset      dtype / shape          decoded key
==================  =====================  ===================================================
image *            uint8 (n,H,W,3)        image (H,W,3) uint8, linear RGB     (* = delta2d coded)
depth *             uint16 (n,H,W)         detail off: depth (H,W) f32 mm = offset + (q-1)*step, 0 at q=0
depth_coarse *      uint16 (n,H,W)         detail on: depth_coarse, same quantisation as depth above
depth_detail        int16 (n,H,W)          detail on: depth = depth_coarse + d * DETAIL_STEP_MM (mask)
depth_offset/step   float32 (n,)           (per-sample quantisation of depth / depth_coarse)
normals *           int8 (n,H,W,2)         normals (H,W,3) f32 unit, octahedral encoding, 0 off-face
pncc *              uint8 (n,H,W,3)        pncc (H,W,3) f32 = q / 255
albedo              uint8 (n,H,W,3)        albedo (H,W,3) f32 = q / 255
(none)                                     mask (H,W) bool = depth > 0
landmarks           float32 (n,68,2)       landmarks, pixel (u, v)
landmarks_visible   uint8 (n,68)           landmarks_visible bool
alpha_id/alpha_exp/beta, sh (n,9,3), pose (n,3), translation (n,3), intrinsics (n,3,3) float32
detail_weights      float32 (n,F)          amplitudes (mm) of the detail bank fields (detail on)
index               int64 (n,)             global sample index
==================  =====================  ===================================================

File attributes: ``layout_version``, ``model_fingerprint``, ``model_source``, ``projection``,
``size``, ``seed``, ``shard_index``, ``shard_size``, ``n_total``, ``start_index``, ``n_samples``,
``detail``, ``generator_config`` (JSON) and ``keys`` (JSON: per stored dataset its dtype, unit and
encoding). Each dataset also carries ``unit``/``encoding``/``description`` attributes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

LAYOUT_VERSION = 1
SHARD_PATTERN = re.compile(r"^shard-(\d{5,})\.h5$")
TEMP_PREFIX = ".tmp-"
DEPTH_STEP_MM = 1.0 / 128.0  # depth / coarse-depth quantisation step (coarser if the span needs it)
DETAIL_STEP_MM = 1.0 / 128.0  # quantisation of depth - depth_coarse (the fine detail)
COMPRESSIONS = ("gzip", "lzf")

# name: (unit, encoding, description) of every stored dataset
DATASETS: dict[str, tuple[str, str, str]] = {
    "image": ("linear RGB / 255", "delta2d", "rendered image over the background"),
    "depth": ("mm", "delta2d of q uint16: 0 = off-face, depth = depth_offset + (q - 1) * depth_step",
              "camera-space depth -p_z of the (detailed) surface"),
    "depth_offset": ("mm", "raw", "depth of q = 1"),
    "depth_step": ("mm", "raw", "depth per quantisation step"),
    "depth_coarse": ("mm", "delta2d of q uint16, as depth", "camera-space depth of the model-only (coarse) surface"),
    "depth_detail": ("mm / 128", "int16: depth = depth_coarse + d / 128 on the mask",
                     "detailed minus coarse depth (the fine detail)"),
    "normals": ("unit", "delta2d of octahedral int8 (x, y) / 127", "camera-frame unit normals"),
    "pncc": ("[0, 1] * 255", "delta2d of uint8", "normalised mean-shape coordinates"),
    "albedo": ("[0, 1] * 255", "uint8", "per-pixel albedo, linear RGB"),
    "landmarks": ("pixel", "raw", "68 projected landmarks (u, v), iBUG order"),
    "landmarks_visible": ("bool", "uint8 0/1", "landmark not self-occluded and inside the image"),
    "alpha_id": ("std", "raw", "identity coefficients"),
    "alpha_exp": ("std", "raw", "expression coefficients"),
    "beta": ("std", "raw", "albedo coefficients"),
    "sh": ("irradiance", "raw", "(9, 3) SH lighting, synth.lighting.sh_basis order"),
    "pose": ("rad", "raw", "yaw, pitch, roll; R = Rz(roll) Rx(pitch) Ry(yaw)"),
    "translation": ("mm", "raw", "t in p = R v + t"),
    "intrinsics": ("pixel", "raw", "[[fx,0,cx],[0,fy,cy],[0,0,1]] (weak perspective: fx = fy = s px/mm)"),
    "detail_weights": ("mm", "raw", "amplitudes of the synth.detail bank fields"),
    "index": ("", "raw", "global sample index"),
}
MAP_DATASETS = ("image", "depth", "depth_coarse", "depth_detail", "normals", "pncc", "albedo")


def shard_name(k: int) -> str:
    """``shard-00007.h5`` for shard ``k``."""
    return f"shard-{int(k):05d}.h5"


def shard_count(n: int, shard_size: int) -> int:
    return math.ceil(n / shard_size)


def shard_bounds(k: int, n: int, shard_size: int) -> tuple[int, int]:
    """Global sample range ``[start, stop)`` of shard ``k``."""
    return k * shard_size, min((k + 1) * shard_size, n)


# ---------------------------------------------------------------------------------- encodings
def octahedral_encode(n: np.ndarray) -> np.ndarray:
    """Unit vectors ``(..., 3)`` -> int8 ``(..., 2)`` (octahedral map; zero vectors -> (0, 0))."""
    n = np.asarray(n, np.float32)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    ax, ay = np.abs(x), np.abs(y)
    s = ax + ay + np.abs(z)  # L1 norm
    inv = np.divide(np.float32(1.0), s, out=np.zeros_like(s), where=s > 0)
    out = np.empty(n.shape[:-1] + (2,), np.float32)
    ox, oy = out[..., 0], out[..., 1]
    np.multiply(x, inv, out=ox)  # x / |n|_1
    np.multiply(y, inv, out=oy)
    neg = z < 0
    if neg.any():  # lower hemisphere: fold over the diagonals
        px, py = ox[neg], oy[neg]
        ox[neg] = (1 - np.abs(py)) * np.where(px >= 0, 1.0, -1.0)
        oy[neg] = (1 - np.abs(px)) * np.where(py >= 0, 1.0, -1.0)
    out *= 127.0
    np.round(out, out=out)
    np.clip(out, -127, 127, out=out)
    return out.astype(np.int8)


def octahedral_decode(e: np.ndarray) -> np.ndarray:
    """int8 ``(..., 2)`` -> unit vectors ``(..., 3)`` float32 (inverse of :func:`octahedral_encode`)."""
    f = np.asarray(e, np.float32) / 127.0
    x, y = f[..., 0], f[..., 1]
    z = 1.0 - np.abs(x) - np.abs(y)
    t = np.clip(-z, 0.0, None)
    x = x - np.where(x >= 0, t, -t)
    y = y - np.where(y >= 0, t, -t)
    v = np.stack([x, y, z], axis=-1)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def delta2d_encode(a: np.ndarray) -> np.ndarray:
    """2-D difference (along width, then height; wrapping integer arithmetic) of ``(H, W, ...)``:
    smooth maps become mostly small numbers that compress well. Inverse: :func:`delta2d_decode`."""
    x = np.diff(a, axis=1, prepend=np.zeros_like(a[:, :1]))
    return np.diff(x, axis=0, prepend=np.zeros_like(x[:1]))


def delta2d_decode(d: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`delta2d_encode`: ``cumsum(cumsum(d, axis=0), axis=1)`` in ``d.dtype``."""
    return np.cumsum(np.cumsum(d, axis=0, dtype=d.dtype), axis=1, dtype=d.dtype)


DELTA2D = ("image", "depth", "depth_coarse", "normals", "pncc")  # stored 2-D-difference coded


def encode_depth(depth: np.ndarray) -> tuple[np.ndarray, float, float]:
    """float depth (0 off-face) -> (uint16 q, offset, step); q = 0 off-face."""
    on = depth > 0
    if not on.any():
        return np.zeros(depth.shape, np.uint16), 0.0, DEPTH_STEP_MM
    lo, hi = float(depth[on].min()), float(depth[on].max())
    step = max(DEPTH_STEP_MM, (hi - lo) / 65000.0)
    q = np.zeros(depth.shape, np.uint16)
    q[on] = 1 + np.round((depth[on] - lo) / step).astype(np.uint16)
    return q, lo, step


def decode_depth(q: np.ndarray, offset: float, step: float) -> np.ndarray:
    return np.where(q > 0, np.float32(offset) + (q.astype(np.float32) - 1.0) * np.float32(step), 0.0).astype(np.float32)


def encode_sample(params, out) -> dict[str, np.ndarray]:
    """Stored arrays of one sample from :class:`~synth.sampling.SampleParams` and
    :class:`~synth.render.RenderOutput`."""
    detail = out.depth_coarse is not None
    # detail on: the smooth coarse depth compresses well; the detail is stored once, as a difference
    q, offset, step = encode_depth(out.depth_coarse if detail else out.depth)
    enc = {
        "image": out.image,
        ("depth_coarse" if detail else "depth"): q,
        "depth_offset": np.float32(offset),
        "depth_step": np.float32(step),
        "normals": octahedral_encode(out.normals),
        "pncc": np.round(out.pncc * 255.0).astype(np.uint8),
        "albedo": np.round(out.albedo * 255.0).astype(np.uint8),
        "landmarks": out.landmarks.astype(np.float32),
        "landmarks_visible": out.landmarks_visible.astype(np.uint8),
        "alpha_id": params.alpha_id.astype(np.float32),
        "alpha_exp": params.alpha_exp.astype(np.float32),
        "beta": params.beta.astype(np.float32),
        "sh": np.asarray(params.sh, np.float32),
        "pose": np.asarray(params.pose, np.float32),
        "translation": np.asarray(params.translation, np.float32),
        "intrinsics": np.asarray(params.intrinsics, np.float32),
        "index": np.int64(params.index),
    }
    if detail:
        # relative to the *decoded* coarse depth so that decoding reproduces depth to DETAIL_STEP_MM / 2
        dq = decode_depth(q, offset, step)
        delta = np.where(out.mask, np.round((out.depth - dq) / DETAIL_STEP_MM), 0)
        enc["depth_detail"] = np.clip(delta, -32767, 32767).astype(np.int16)
        enc["detail_weights"] = np.asarray(params.detail_weights, np.float32)
    for key in DELTA2D:
        if key in enc:
            enc[key] = delta2d_encode(enc[key])
    return enc


def decode_sample(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Decoded arrays (docs/DESIGN.md keys) from the stored arrays of one sample."""
    raw = dict(raw)
    for key in DELTA2D:
        if key in raw:
            raw[key] = delta2d_decode(raw[key])
    detail = "depth_coarse" in raw
    q = raw["depth_coarse" if detail else "depth"]
    mask = q > 0
    depth = decode_depth(q, float(raw["depth_offset"]), float(raw["depth_step"]))
    if detail:
        depth_coarse = depth
        depth = np.where(mask, depth_coarse + raw["depth_detail"].astype(np.float32) * np.float32(DETAIL_STEP_MM),
                         0.0).astype(np.float32)
    normals = octahedral_decode(raw["normals"])
    normals[~mask] = 0.0
    out = {
        "image": raw["image"],
        "depth": depth,
        "normals": normals,
        "pncc": raw["pncc"].astype(np.float32) / 255.0,
        "albedo": raw["albedo"].astype(np.float32) / 255.0,
        "mask": mask,
        "landmarks": raw["landmarks"],
        "landmarks_visible": raw["landmarks_visible"].astype(bool),
    }
    if detail:
        out["depth_coarse"] = depth_coarse
    for key in ("alpha_id", "alpha_exp", "beta", "sh", "pose", "translation", "intrinsics", "detail_weights"):
        if key in raw:
            out[key] = raw[key]
    out["index"] = np.int64(raw["index"])
    return out


# ---------------------------------------------------------------------------------- writing
class ShardWriter:
    """Writes one shard to a temporary name; :meth:`commit` flushes, fsyncs and renames it into place.

    Use as a context manager: leaving the block without :meth:`commit` (an exception) deletes the
    temporary file, so a final ``shard-*.h5`` always holds a complete, checksummed shard.
    """

    def __init__(self, path: str | os.PathLike, n_samples: int, size: int, dims: dict[str, int], detail: bool,
                 attrs: dict[str, Any], compression: str = "gzip"):
        import h5py

        if compression not in COMPRESSIONS:
            raise ValueError(f"--compression must be one of {COMPRESSIONS}, got {compression!r}")
        self.path = Path(path)
        self.tmp = self.path.with_name(f"{TEMP_PREFIX}{self.path.name}.{os.getpid()}")
        self.n = int(n_samples)
        self._written = np.zeros(self.n, bool)
        self._f = h5py.File(self.tmp, "w", libver="latest")
        comp = {"compression": "lzf"} if compression == "lzf" else {"compression": "gzip", "compression_opts": 1}
        h, w = size, size
        shapes = {
            "image": ((h, w, 3), np.uint8), "depth_offset": ((), np.float32),
            "depth_step": ((), np.float32), "normals": ((h, w, 2), np.int8), "pncc": ((h, w, 3), np.uint8),
            "albedo": ((h, w, 3), np.uint8), "landmarks": ((68, 2), np.float32),
            "landmarks_visible": ((68,), np.uint8), "alpha_id": ((dims["alpha_id"],), np.float32),
            "alpha_exp": ((dims["alpha_exp"],), np.float32), "beta": ((dims["beta"],), np.float32),
            "sh": ((9, 3), np.float32), "pose": ((3,), np.float32), "translation": ((3,), np.float32),
            "intrinsics": ((3, 3), np.float32), "index": ((), np.int64),
        }
        if not detail:
            shapes["depth"] = ((h, w), np.uint16)
        else:
            shapes["depth_coarse"] = ((h, w), np.uint16)
            shapes["depth_detail"] = ((h, w), np.int16)
            shapes["detail_weights"] = ((dims["detail_weights"],), np.float32)
        self._ds = {}
        for name, (shape, dtype) in shapes.items():
            extra = comp if name in MAP_DATASETS else {}
            if name in MAP_DATASETS and compression == "gzip" and np.dtype(dtype).itemsize > 1:
                extra = dict(extra, shuffle=True)  # byte shuffle: a no-op (but a copy) for 1-byte types
            ds = self._f.create_dataset(name, shape=(self.n,) + shape, dtype=dtype, chunks=(1,) + shape,
                                        fletcher32=True, **extra)
            unit, encoding, description = DATASETS[name]
            ds.attrs.update({"unit": unit, "encoding": encoding, "description": description})
            self._ds[name] = ds
        # small per-sample arrays are kept here and written in one call per dataset by commit()
        self._small = {name: np.zeros((self.n,) + shape, dtype) for name, (shape, dtype) in shapes.items()
                       if name not in MAP_DATASETS}
        keys = {name: {"dtype": np.dtype(dt).str, "shape": list(s), "unit": DATASETS[name][0],
                       "encoding": DATASETS[name][1]} for name, (s, dt) in shapes.items()}
        self._f.attrs.update({k: v for k, v in attrs.items()})
        self._f.attrs.update({"layout_version": LAYOUT_VERSION, "n_samples": self.n, "detail": bool(detail),
                              "compression": compression, "keys": json.dumps(keys), "complete": False})

    def write(self, i: int, encoded: dict[str, np.ndarray]) -> None:
        """Store the encoded sample (:func:`encode_sample`) at position ``i`` of the shard."""
        for name, ds in self._ds.items():
            if name in self._small:
                self._small[name][i] = encoded[name]
            else:
                ds[i] = encoded[name]
        self._written[i] = True

    def commit(self) -> Path:
        """Flush, fsync, rename to the final name (atomic), fsync the directory."""
        if not self._written.all():
            raise ValueError(f"shard {self.path.name}: samples {np.flatnonzero(~self._written)[:5].tolist()}... "
                             "were never written")
        for name, values in self._small.items():
            self._ds[name][...] = values
        self._f.attrs["complete"] = True
        self._f.flush()
        self._f.close()
        self._f = None
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self.tmp.exists():
            self.tmp.unlink()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._f is not None or exc_type is not None:
            self.abort()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to ``path`` via a temporary file, fsync and rename."""
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


# ---------------------------------------------------------------------------------- reading
class ShardReader:
    """Read samples of one shard: ``len(r)``, ``r.read(i)`` -> dict of decoded arrays, ``r.attrs``.

    The HDF5 file is opened lazily and reopened after pickling (safe in DataLoader workers).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"shard {str(self.path)!r} does not exist")
        self._f = None
        f = self._file()
        version = int(f.attrs.get("layout_version", -1))
        if version != LAYOUT_VERSION:
            raise ValueError(f"shard {str(self.path)!r} has layout_version {version}, expected {LAYOUT_VERSION}")
        self._n = int(f.attrs["n_samples"])
        self.attrs: dict[str, Any] = {k: _plain(v) for k, v in f.attrs.items()}
        self.keys = tuple(f.keys())

    def _file(self):
        import h5py

        if self._f is None:
            self._f = h5py.File(self.path, "r")
        return self._f

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_f"] = None
        return state

    def __len__(self) -> int:
        return self._n

    def read_raw(self, i: int) -> dict[str, np.ndarray]:
        """Stored (encoded) arrays of sample ``i``."""
        if not -self._n <= i < self._n:
            raise IndexError(f"sample {i} out of range for shard {self.path.name} with {self._n} samples")
        i = i % self._n
        f = self._file()
        return {name: f[name][i] for name in self.keys}

    def read(self, i: int) -> dict[str, np.ndarray]:
        """Decoded arrays of sample ``i`` (keys and dtypes of docs/DESIGN.md)."""
        return decode_sample(self.read_raw(i))

    def __iter__(self):
        for i in range(self._n):
            yield self.read(i)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _plain(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


# ---------------------------------------------------------------------------------- verifying
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
            if int(a.get("layout_version", -1)) != LAYOUT_VERSION:
                problems.append(f"layout_version {a.get('layout_version')} != {LAYOUT_VERSION}")
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
                if key in expected and _plain(a.get(key)) != expected[key]:
                    problems.append(f"attribute {key}={_plain(a.get(key))!r}, dataset manifest says {expected[key]!r}")
        required = ["image", "depth_offset", "depth_step", "normals", "pncc", "albedo", "landmarks",
                    "landmarks_visible", "alpha_id", "alpha_exp", "beta", "sh", "pose", "translation",
                    "intrinsics", "index"]
        if bool(a.get("detail", False)):
            required += ["depth_coarse", "depth_detail", "detail_weights"]
        else:
            required += ["depth"]
        missing = [r for r in required if r not in f]
        if missing:
            return ShardReport(path.name, n, problems + [f"missing datasets: {', '.join(missing)}"])
        for name in required:
            if f[name].shape[0] != n:
                problems.append(f"{name} has {f[name].shape[0]} rows, expected {n}")
        if problems:
            return ShardReport(path.name, n, problems)
        size = int(a["size"])
        for i in range(n):
            try:
                raw = {name: f[name][i] for name in f.keys()}
            except OSError as e:  # fletcher32 mismatch / broken compressed chunk
                problems.append(f"sample {i}: unreadable chunk ({str(e).splitlines()[0]})")
                if len(problems) >= 10:
                    break
                continue
            problems += [f"sample {i}: {p}" for p in _check_sample(raw, start + i, size)]
            if len(problems) >= 10:
                problems.append("... (stopped after 10 problems)")
                break
    return ShardReport(path.name, n, problems)


SMALL_DATASETS = ("depth_offset", "depth_step", "landmarks", "landmarks_visible", "alpha_id", "alpha_exp", "beta",
                  "sh", "pose", "translation", "intrinsics", "detail_weights", "index")


def quick_check_shard(path: str | os.PathLike, expected: dict[str, Any]) -> str | None:
    """Cheap check of a finished shard that a rerun is about to skip; returns ``None`` when it looks
    sound, else a one-line reason.

    Checked (a few milliseconds per shard, independent of the image size): the file opens (HDF5
    records the end-of-file address in its checksummed superblock, so a truncated file fails
    here), its attributes (``complete``, layout version, shard index, sample count; ``n_total``,
    ``shard_size``, ``size``, ``seed`` and ``model_fingerprint`` of ``expected``, the dataset
    manifest), every dataset present with ``n`` rows and a readable chunk index holding ``n``
    chunks, and the small per-sample datasets read in full (every chunk fletcher32-checked),
    ``index`` equal to the shard's global range. Not checked: the contents of the map chunks
    (image, depth, ...): :func:`verify_shard` (``synth-cli verify``) decodes every sample.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            if int(a.get("layout_version", -1)) != LAYOUT_VERSION or not bool(a.get("complete", False)):
                return "not a complete shard of this layout version"
            n, k = int(a["n_samples"]), int(a["shard_index"])
            m = SHARD_PATTERN.match(path.name)
            if m and int(m.group(1)) != k:
                return f"attribute shard_index = {k}"
            for key in ("n_total", "shard_size", "size", "seed", "model_fingerprint"):
                if _plain(a.get(key)) != expected[key]:
                    return f"attribute {key} = {_plain(a.get(key))!r}, the dataset has {expected[key]!r}"
            start, stop = shard_bounds(k, int(a["n_total"]), int(a["shard_size"]))
            if stop - start != n:
                return f"holds {n} samples, expected {stop - start}"
            detail = bool(a.get("detail", False))
            names = [d for d in MAP_DATASETS if d not in (("depth",) if detail else ("depth_coarse", "depth_detail"))]
            names += [d for d in SMALL_DATASETS if detail or d != "detail_weights"]
            for name in names:
                if name not in f:
                    return f"dataset {name} is missing"
                ds = f[name]
                if ds.shape[0] != n or ds.id.get_num_chunks() != n:
                    return f"dataset {name} has {ds.shape[0]} rows / {ds.id.get_num_chunks()} chunks, expected {n}"
                if name in SMALL_DATASETS:
                    values = ds[...]  # every chunk is read: fletcher32 raises OSError on a mismatch
                    if name == "index" and not np.array_equal(values, np.arange(start, stop)):
                        return f"index is not {start}..{stop - 1}"
    except (OSError, KeyError, ValueError, TypeError) as e:  # unreadable, truncated, checksum, missing attribute
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
    return None


def _check_sample(raw: dict[str, np.ndarray], expected_index: int, size: int) -> list[str]:
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
    d = decode_sample(raw)
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
    return out


def list_shards(directory: str | os.PathLike) -> list[Path]:
    """Final shard files in ``directory``, sorted by shard number (temporary files excluded)."""
    d = Path(directory)
    return sorted((p for p in d.iterdir() if SHARD_PATTERN.match(p.name)), key=lambda p: int(SHARD_PATTERN.match(p.name).group(1)))


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


# ---------------------------------------------------------------------------------- preview
def preview_grid(shard: str | os.PathLike, out: str | os.PathLike, n_samples: int = 4) -> Path:
    """PNG grid: one row per sample, columns image (+ visible landmarks green, hidden red),
    depth, normals, PNCC, mask (and depth_coarse - depth when detail is on)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if n_samples < 1:
        raise ValueError(f"--samples must be >= 1, got {n_samples}")
    with ShardReader(shard) as r:
        rows = [r.read(i) for i in range(min(n_samples, len(r)))]
    if not rows:
        raise ValueError(f"shard {str(shard)!r} holds no samples")
    cols = ["image", "depth", "normals", "pncc", "mask"] + (["detail"] if "depth_coarse" in rows[0] else [])
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.2 * len(cols), 2.2 * len(rows)), squeeze=False)
    for i, s in enumerate(rows):
        m = s["mask"]
        for j, c in enumerate(cols):
            ax = axes[i, j]
            ax.set_axis_off()
            if c == "image":
                ax.imshow(s["image"])
                lm, vis = s["landmarks"], s["landmarks_visible"]
                ax.scatter(lm[vis, 0] - 0.5, lm[vis, 1] - 0.5, s=3, c="lime")
                ax.scatter(lm[~vis, 0] - 0.5, lm[~vis, 1] - 0.5, s=3, c="red")
                ax.set_title(f"#{int(s['index'])}", fontsize=7)
            elif c == "depth":
                d = np.where(m, s["depth"], np.nan)
                ax.imshow(d, cmap="viridis_r")
            elif c == "normals":
                ax.imshow(np.where(m[..., None], (s["normals"] + 1) / 2, 0))
            elif c == "pncc":
                ax.imshow(s["pncc"])
            elif c == "mask":
                ax.imshow(m, cmap="gray")
            else:
                ax.imshow(np.where(m, s["depth_coarse"] - s["depth"], np.nan), cmap="RdBu")
            if i == 0 and c != "image":
                ax.set_title(c, fontsize=7)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
