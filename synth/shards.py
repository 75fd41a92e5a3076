"""HDF5 shard layout: constants, the writer (atomic) and the reader (decodes to the arrays of docs/DESIGN.md).

The per-map encodings are in :mod:`synth.codecs`, the checks in :mod:`synth.verify`, the preview
grid in :mod:`synth.preview`; docs/shards.md describes the format for readers in other languages.

One file ``shard-00007.h5`` holds global samples ``[7 * S, min(8 * S, N))`` (S = shard size). Every
per-sample dataset has shape ``(n, ...)`` (but the JPEG bytes of layouts 5 and 7, below) and fletcher32
checksums; the maps (layouts 3 to 5: image, mask, triangle ids; 6 and 7: image, mask and the ids of
the unstable pixels, ``tri_fix``) have one sample per chunk and are compressed with
Zstandard level 1 (default; the ``hdf5plugin`` filter: ``import hdf5plugin`` before opening a shard with
h5py elsewhere), gzip-1 + shuffle or lzf (these two need only h5py); the small per-sample arrays are
one uncompressed chunk per dataset (read whole). :data:`DATASETS` lists every stored dataset with its unit, encoding and
description (also written as dataset attributes and the file's ``keys`` attribute); the full table of
stored datasets -> decoded keys and the file attributes are in docs/shards.md.

Layout 6 (the default) recomputes the triangle ids on read (:mod:`synth.codecs`: the parameters, the
model and the compiled rasterizer; the stored ``tri_fix`` and ``tri_crc`` make it exact).

Layouts 7 and 5 (opt-in, ``synth-cli render --image-codec jpeg``: 7, layout 6 with a JPEG image; 5,
layout 4 with one) store the image as JPEG: the JPEG bytes
of all the shard's samples back to back in one 1-D uint8 dataset ``image`` (uncompressed,
checksummed chunks of :data:`JPEG_CHUNK` bytes) and each sample's ``[start, stop)`` in the small
per-sample dataset ``image_span``; the file attributes ``image_codec`` (``"jpeg"``) and
``image_quality`` say how it was encoded.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .codecs import (JPEG_LAYOUT, LAYOUT_VERSION, READABLE_LAYOUTS, SURFACE_KEYS, decode_sample, ids_recomputed,
                     is_jpeg, stored_for)

__all__ = [
    "surface_renderer",
    "dataset_shapes",
    "sampling_json",
    "LAYOUT_VERSION",
    "READABLE_LAYOUTS",
    "JPEG_LAYOUT",
    "WRITTEN_LAYOUTS",
    "SHARD_PATTERN",
    "TEMP_PREFIX",
    "COMPRESSIONS",
    "DATASETS",
    "ENCODINGS_V4",
    "dataset_info",
    "MAP_DATASETS",
    "shard_name",
    "shard_count",
    "shard_bounds",
    "list_shards",
    "ShardWriter",
    "write_json_atomic",
    "ShardReader",
    "plain_attr",
]

SHARD_PATTERN = re.compile(r"^shard-(\d{5,})\.h5$")
TEMP_PREFIX = ".tmp-"
COMPRESSIONS = ("zstd", "gzip", "lzf")
WRITTEN_LAYOUTS = (2, 3, 4, 5, 6, 7)
"""Layouts :class:`ShardWriter` writes (6: the default; 7: JPEG image; 2 to 5 for tests of the older readers)."""
JPEG_CHUNK = 16384
"""Layouts 5 and 7: chunk size in bytes of the concatenated JPEG ``image`` dataset (a sample spans ~1-2 chunks)."""

# name: (unit, encoding, description) of every stored dataset
DATASETS: dict[str, tuple[str, str, str]] = {
    "image": ("sRGB / 255", "delta2d", "rendered image over the background, sRGB-encoded like a photo"),
    "depth": ("mm", "delta2d of q uint16: 0 = off-face, depth = depth_offset + (q - 1) * depth_step",
              "camera-space depth -p_z of the (detailed) surface"),
    "depth_offset": ("mm", "raw", "depth of q = 1"),
    "depth_step": ("mm", "raw", "depth per quantisation step"),
    "depth_coarse": ("mm", "delta2d of q uint16, as depth", "camera-space depth of the model-only (coarse) surface"),
    "depth_detail": ("mm / 128", "int16: depth = depth_coarse + d / 128 on the mask",
                     "detailed minus coarse depth (the fine detail)"),
    "normals": ("unit", "delta2d of octahedral int8 (x, y) / 127", "camera-frame unit normals"),
    "pncc": ("[0, 1] * 255", "delta2d of uint8", "normalised mean-shape coordinates"),
    "albedo": ("linear RGB [0, 1]", "uint8 sRGB-encoded: albedo = srgb_to_linear(q / 255)", "per-pixel albedo, linear RGB"),
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
    "specular": ("(x light irradiance, exponent)", "raw",
                 "Blinn-Phong (strength, shininess) of the highlight from the SH lighting's dominant light"),
    "index": ("", "raw", "global sample index"),
    "image_span": ("byte", "raw int64 [start, stop)", "where the sample's JPEG bytes lie in image (layouts 5, 7)"),
    "mask": ("bool", "uint8 0/1", "pixels covered by the face mesh"),
    "tri_id": ("triangle index", "delta2d of int32 tri_id + 1 (0 = off the face)",
               "index of the model triangle seen at each pixel centre; with the parameters and the model it gives "
               "depth, depth_coarse, normals, pncc and albedo (synth.render.FaceRenderer.surface_maps)"),
    "tri_fix": ("triangle index + 1", "uint32: tri_id + 1 at the unstable face pixels, 0 elsewhere",
                "the ids a reader recomputing them might not reproduce (synth.kernels.rasterize_stable); the others "
                "are recomputed from the parameters and the model (synth.codecs.restore_ids)"),
    "tri_crc": ("", "uint32 CRC-32 of tri_id as little-endian int32, row by row (synth.codecs.ids_crc)",
                "checks the recomputed triangle ids"),
}
MAP_DATASETS = ("image", "depth", "depth_coarse", "depth_detail", "normals", "pncc", "albedo", "mask", "tri_id",
                "tri_fix")
ENCODINGS_V4 = {
    "image": "delta2d of the uint8 (G, R - G, B - G) modulo 256 (synth.codecs.rct_encode)",
    "tri_id": "uint32 zigzag of (tri_id + 1) minus its left neighbour, per row (synth.codecs.row_delta_encode)",
}
"""The encodings layout 4 changed (every other dataset is stored as in layout 3, :data:`DATASETS`)."""
ENCODINGS_V5 = {
    "image": "JPEG (Pillow / libjpeg, 4:4:4, quality: the file's image_quality attribute) of the sRGB uint8 image; "
             "sample i is image[image_span[i, 0]:image_span[i, 1]] (all samples' bytes back to back)",
}
"""The encodings layouts 5 and 7 changed from layouts 4 and 6 (the image only)."""


def dataset_info(name: str, layout: int = LAYOUT_VERSION) -> tuple[str, str, str]:
    """``(unit, encoding, description)`` of stored dataset ``name`` in shards of ``layout``."""
    unit, encoding, description = DATASETS[name]
    if layout >= 4:
        encoding = ENCODINGS_V4.get(name, encoding)
    if is_jpeg(layout):
        encoding = ENCODINGS_V5.get(name, encoding)
    return unit, encoding, description


def shard_name(k: int) -> str:
    """``shard-00007.h5`` for shard ``k``."""
    return f"shard-{int(k):05d}.h5"


def shard_count(n: int, shard_size: int) -> int:
    """Number of shards of ``shard_size`` samples that hold ``n`` samples."""
    return math.ceil(n / shard_size)


def shard_bounds(k: int, n: int, shard_size: int) -> tuple[int, int]:
    """Global sample range ``[start, stop)`` of shard ``k``."""
    return k * shard_size, min((k + 1) * shard_size, n)


def list_shards(directory: str | os.PathLike) -> list[Path]:
    """Final shard files in ``directory``, sorted by shard number (temporary files excluded)."""
    d = Path(directory)
    return sorted((p for p in d.iterdir() if SHARD_PATTERN.match(p.name)), key=lambda p: int(SHARD_PATTERN.match(p.name).group(1)))


# ---------------------------------------------------------------------------------- writing
class ShardWriter:
    """Writes one shard to a temporary name; :meth:`commit` flushes, fsyncs and renames it into place.

    Use as a context manager: leaving the block without :meth:`commit` (an exception) deletes the
    temporary file, so a final ``shard-*.h5`` always holds a complete, checksummed shard.

    Layouts 5 and 7 (JPEG image): ``image_quality`` (required) is recorded as the file's attribute (the samples
    are encoded by :func:`synth.codecs.encode_sample` with the same quality); the JPEG bytes are kept in
    memory and written by :meth:`commit` (~9-25 kB per sample at 128-224 px).
    """

    def __init__(self, path: str | os.PathLike, n_samples: int, size: int, dims: dict[str, int], detail: bool,
                 attrs: dict[str, Any], compression: str = "zstd", layout: int = LAYOUT_VERSION,
                 image_quality: int | None = None):
        import h5py

        if compression not in COMPRESSIONS:
            raise ValueError(f"--compression must be one of {COMPRESSIONS}, got {compression!r}")
        if layout not in WRITTEN_LAYOUTS:
            raise ValueError(f"layout must be one of {WRITTEN_LAYOUTS} (the writer's), got {layout}")
        if is_jpeg(layout) and not (isinstance(image_quality, (int, np.integer)) and 1 <= image_quality <= 100):
            raise ValueError(f"--jpeg-quality must be an integer in [1, 100], got {image_quality!r}")
        self.path = Path(path)
        self.layout = layout
        self._jpeg: list[np.ndarray | None] = [None] * int(n_samples) if is_jpeg(layout) else []
        self.tmp = self.path.with_name(f"{TEMP_PREFIX}{self.path.name}.{os.getpid()}")
        self.n = int(n_samples)
        self._written = np.zeros(self.n, bool)
        comp = _compression(compression)  # before the file: a missing filter leaves nothing behind
        self._f = h5py.File(self.tmp, "w", libver="latest")
        shapes = dataset_shapes(layout, size, dims, detail)
        self._ds = {}
        keys = {}  # the file's "keys" attribute: dtype, shape, unit and encoding of every dataset
        for name, (shape, dtype) in shapes.items():
            if shape is None:  # the JPEG bytes (layouts 5, 7): created by commit(), once their length is known
                keys[name] = {"dtype": np.dtype(dtype).str, "shape": None, "unit": dataset_info(name, layout)[0],
                              "encoding": dataset_info(name, layout)[1]}
                continue
            if name in MAP_DATASETS:
                extra = dict(comp, chunks=(1,) + shape)
                if compression == "gzip" and np.dtype(dtype).itemsize > 1:
                    extra["shuffle"] = True  # byte shuffle: a no-op (but a copy) for 1-byte types
            else:  # small arrays: read whole by the reader, so one chunk (no per-sample chunk overhead)
                extra = {"chunks": (max(self.n, 1),) + shape} if layout >= 3 else {"chunks": (1,) + shape}
            ds = self._f.create_dataset(name, shape=(self.n,) + shape, dtype=dtype, fletcher32=True, **extra)
            unit, encoding, description = dataset_info(name, layout)
            ds.attrs.update({"unit": unit, "encoding": encoding, "description": description})
            keys[name] = {"dtype": np.dtype(dtype).str, "shape": list(shape), "unit": unit, "encoding": encoding}
            self._ds[name] = ds
        # small per-sample arrays are kept here and written in one call per dataset by commit()
        self._small = {name: np.zeros((self.n,) + shape, dtype) for name, (shape, dtype) in shapes.items()
                       if name not in MAP_DATASETS}
        if is_jpeg(layout):
            attrs = {**attrs, "image_codec": "jpeg", "image_quality": int(image_quality)}
        self._f.attrs.update({k: v for k, v in attrs.items()})
        if detail and "detail_bank_version" not in attrs:
            from .detail import BANK_VERSION

            self._f.attrs["detail_bank_version"] = BANK_VERSION  # the bank layout-3 maps are recomputed with
        self._f.attrs.update({"layout_version": layout, "n_samples": self.n, "detail": bool(detail),
                              "compression": compression, "keys": json.dumps(keys), "complete": False})

    def write(self, i: int, encoded: dict[str, np.ndarray]) -> None:
        """Store the encoded sample (:func:`synth.codecs.encode_sample`) at position ``i`` of the shard."""
        if is_jpeg(self.layout):
            data = np.asarray(encoded["image"])
            if data.dtype != np.uint8 or data.ndim != 1:
                raise ValueError(f"shard {self.path.name}: a layout-{self.layout} image is JPEG bytes (1-D uint8), got "
                                 f"{data.dtype} {data.shape} (encode_sample(..., layout={self.layout}))")
            self._jpeg[i] = data
        for name, ds in self._ds.items():
            if name == "image_span":
                continue  # layouts 5, 7: set by commit()
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
        if is_jpeg(self.layout):
            self._write_jpeg()
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

    def _write_jpeg(self) -> None:
        """Layouts 5 and 7: the samples' JPEG bytes back to back in ``image``, each one's range in ``image_span``."""
        lengths = np.array([len(b) for b in self._jpeg], np.int64)
        stops = np.cumsum(lengths)
        self._small["image_span"][:] = np.stack([stops - lengths, stops], axis=1)
        total = int(stops[-1]) if len(stops) else 0
        ds = self._f.create_dataset("image", shape=(total,), dtype=np.uint8, chunks=(max(1, min(JPEG_CHUNK, total)),),
                                    fletcher32=True)
        if total:
            ds[...] = np.concatenate(self._jpeg)
        unit, encoding, description = dataset_info("image", self.layout)
        ds.attrs.update({"unit": unit, "encoding": encoding, "description": description})
        self._jpeg = []

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


def _compression(name: str) -> dict:
    """h5py ``create_dataset`` keywords of a :data:`COMPRESSIONS` name."""
    if name == "lzf":
        return {"compression": "lzf"}
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 1}
    if not register_filters():
        raise ValueError("--compression zstd needs the package hdf5plugin (pip install hdf5plugin); "
                         "gzip and lzf need only h5py")
    import hdf5plugin

    return dict(hdf5plugin.Zstd(clevel=1))


ZSTD_FILTER = 32015  # the registered HDF5 filter id of Zstandard (hdf5plugin's)


def register_filters() -> bool:
    """Register hdf5plugin's filters with HDF5 when the package is installed (it is a dependency of
    this project; a machine without it still reads and writes gzip / lzf shards); returns whether it is."""
    try:
        import hdf5plugin  # noqa: F401  (registering is the import's side effect)
    except ImportError:
        return False
    return True


def missing_filter(f) -> str | None:
    """A one-line reason when a dataset of the open HDF5 file ``f`` is compressed with Zstandard and
    this HDF5 has no Zstandard filter (hdf5plugin not installed), else None."""
    import h5py

    if h5py.h5z.filter_avail(ZSTD_FILTER):
        return None
    for name, ds in f.items():
        if isinstance(ds, h5py.Dataset):
            plist = ds.id.get_create_plist()
            if any(plist.get_filter(i)[0] == ZSTD_FILTER for i in range(plist.get_nfilters())):
                return (f"dataset {name!r} is Zstandard-compressed and HDF5 has no Zstandard filter here: "
                        "pip install hdf5plugin (or render with --compression gzip)")
    return None


def dataset_shapes(layout: int, size: int, dims: dict[str, int], detail: bool) -> dict[str, tuple[tuple | None, type]]:
    """``{name: (per-sample shape, dtype)}`` of the datasets a shard of ``layout`` (2 to 7) stores; the
    ``image`` of layouts 5 and 7 (the JPEG bytes of all samples, 1-D) has shape ``None``."""
    h = w = size
    shapes = {
        "image": ((h, w, 3), np.uint8), "landmarks": ((68, 2), np.float32), "landmarks_visible": ((68,), np.uint8),
        "alpha_id": ((dims["alpha_id"],), np.float32), "alpha_exp": ((dims["alpha_exp"],), np.float32),
        "beta": ((dims["beta"],), np.float32), "sh": ((9, 3), np.float32), "pose": ((3,), np.float32),
        "translation": ((3,), np.float32), "intrinsics": ((3, 3), np.float32), "specular": ((2,), np.float32),
        "index": ((), np.int64),
    }
    if layout >= 3:
        shapes["mask"] = ((h, w), np.uint8)
        if ids_recomputed(layout):
            shapes.update({"tri_fix": ((h, w), np.uint32), "tri_crc": ((), np.uint32)})
        else:
            shapes["tri_id"] = ((h, w), np.uint32 if layout >= 4 else np.int32)
        if is_jpeg(layout):
            shapes.update({"image": (None, np.uint8), "image_span": ((2,), np.int64)})
    else:
        shapes.update({"depth_offset": ((), np.float32), "depth_step": ((), np.float32),
                       "normals": ((h, w, 2), np.int8), "pncc": ((h, w, 3), np.uint8), "albedo": ((h, w, 3), np.uint8)})
        if detail:
            shapes.update({"depth_coarse": ((h, w), np.uint16), "depth_detail": ((h, w), np.int16)})
        else:
            shapes["depth"] = ((h, w), np.uint16)
    if detail:
        shapes["detail_weights"] = ((dims["detail_weights"],), np.float32)
    return shapes


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

    ``r.read(i, keys=("image", "mask", ...))`` decodes only those keys and reads only the stored
    datasets they need (:func:`synth.codecs.stored_for`): a map costs one chunk read, and the small
    per-sample datasets (parameters, landmarks, depth quantisation) are read whole, once per reader,
    and then served from memory. The HDF5 file is opened lazily and reopened after pickling (safe in
    DataLoader workers); the cache is not pickled.

    Layout 3 recomputes ``depth``, ``depth_coarse``, ``normals``, ``pncc`` and ``albedo`` from the
    stored triangle ids with ``model`` (a :class:`~morphable_model.MorphableModel` whose fingerprint
    is the shard's; None: the built-in model, loaded on the first such read, when the shard was made
    with it). The recomputing renderer (its scaled bases: ~130 MB for the built-in model) is shared by
    the readers of a process (:func:`surface_renderer`). Reading only the other keys needs no model.
    """

    def __init__(self, path: str | os.PathLike, model=None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"shard {str(self.path)!r} does not exist")
        self._f = None
        self._columns: dict[str, np.ndarray] = {}  # small per-sample datasets, read whole
        self._maps: dict = {}  # h5py dataset objects of the maps (a lookup per read costs ~10x the read)
        self._plans: dict[tuple, tuple] = {}  # keys -> the stored datasets they need (checked once)
        f = self._file()
        version = int(f.attrs.get("layout_version", -1))
        if version not in READABLE_LAYOUTS:
            raise ValueError(f"shard {str(self.path)!r} has layout_version {version}; this reader needs one of "
                             f"{', '.join(map(str, READABLE_LAYOUTS))} (re-render it with this version's synth-cli)")
        self.layout = version
        self._n = int(f.attrs["n_samples"])
        self.attrs: dict[str, Any] = {k: plain_attr(v) for k, v in f.attrs.items()}
        self.keys = tuple(f.keys())
        self.detail = ("detail_weights" if version >= 3 else "depth_coarse") in self.keys
        self._model = model
        if model is not None and not model.matches(self.attrs.get("model_fingerprint"), self.attrs.get("model_sketch"),
                                                   f"shard {str(self.path)!r}"):
            raise ValueError(f"shard {str(self.path)!r} was rendered with model {self.attrs.get('model_fingerprint')}, "
                             f"got model {model.fingerprint} ({getattr(model, 'source', '?')})")

    def _file(self):
        import h5py

        if self._f is None:
            register_filters()  # the Zstandard filter of the default shards
            f = h5py.File(self.path, "r")
            try:
                missing = missing_filter(f)
            except BaseException:
                f.close()
                raise
            if missing:
                f.close()
                raise ValueError(f"shard {str(self.path)!r}: {missing}")
            self._f = f
        return self._f

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_f"] = None
        state["_columns"] = {}
        state["_maps"] = {}
        return state

    def __len__(self) -> int:
        return self._n

    def _index(self, i: int) -> int:
        if not -self._n <= i < self._n:
            raise IndexError(f"sample {i} out of range for shard {self.path.name} with {self._n} samples")
        return i % self._n

    def read_raw(self, i: int, names=None) -> dict[str, np.ndarray]:
        """Stored (encoded) arrays of sample ``i``: all datasets, or those in ``names``."""
        i = self._index(i)
        out = {}
        for name in self.keys if names is None else names:
            if name == "image" and is_jpeg(self.layout):  # the sample's JPEG bytes
                a, b = (int(v) for v in self._column("image_span")[i])
                out[name] = self._map(name)[a:b]
            elif name in MAP_DATASETS:
                out[name] = self._map(name)[i]
            else:  # small per-sample dataset: read whole once, then from memory
                out[name] = self._column(name)[i]
        return out

    def _map(self, name: str):
        """The h5py dataset of map ``name``, looked up once (a lookup per read costs ~10x the read)."""
        ds = self._maps.get(name)
        if ds is None:
            ds = self._maps[name] = self._file()[name]
        return ds

    def _column(self, name: str) -> np.ndarray:
        """Small per-sample dataset ``name``, read whole on first use and kept."""
        column = self._columns.get(name)
        if column is None:
            column = self._columns[name] = self._file()[name][()]
        return column

    def read(self, i: int, keys=None) -> dict[str, np.ndarray]:
        """Decoded arrays of sample ``i`` (keys and dtypes of docs/DESIGN.md): all of them, or only
        ``keys`` (``ValueError`` for a key this shard cannot have)."""
        keys = None if keys is None else tuple(keys)
        return decode_sample(self._raw_for(i, keys), keys, self.layout,
                             surface=self._surface if self.layout >= 3 else None)

    def read_many(self, indices, keys=None) -> list[dict[str, np.ndarray]]:
        """:meth:`read` of each sample in ``indices``, bit for bit, cheaper per sample when a layout-3
        shard recomputes maps: :func:`read_samples` of this shard's samples."""
        return read_samples([(self, int(i)) for i in indices], keys)

    def _raw_for(self, i: int, keys: tuple | None) -> dict[str, np.ndarray]:
        """The stored arrays :meth:`read` decodes ``keys`` of sample ``i`` from."""
        return self.read_raw(i) if keys is None else self.read_raw(i, self._plan(keys))

    def _plan(self, keys: tuple) -> tuple:
        """The stored datasets ``keys`` need (checked against the shard once per tuple of keys)."""
        need = self._plans.get(keys)
        if need is None:
            need = stored_for(keys, self.detail, self.layout)
            missing = [name for name in need if name not in self.keys]
            if missing:
                raise ValueError(f"shard {str(self.path)!r} lacks the datasets {missing} (needed for keys {list(keys)})")
            self._plans[keys] = need
        return need

    def _surface(self, raw: dict[str, np.ndarray], tri_id, maps: bool = True):
        """The maps of one sample of layout 3 on, recomputed from its triangle ids (layouts 6, 7: a
        :class:`synth.codecs.StoredIds`, the ids recomputed too) and parameters."""
        return self._renderer().surface_maps(self._sample_params(raw), tri_id, maps=maps)

    def _renderer(self):
        """The renderer that recomputes this shard's layout-3 maps (the model loaded on first use)."""
        if self._model is None:
            self._model = _builtin_for(self)
        return surface_renderer(self._model, int(self.attrs["size"]), self.detail_bank_version)

    @property
    def detail_bank_version(self) -> int:
        """The :mod:`synth.detail` bank version of this shard's detail (1 when the attribute is absent:
        shards written before it existed)."""
        return int(self.attrs.get("detail_bank_version", 1))

    def _sample_params(self, raw: dict[str, np.ndarray]):
        """The :class:`synth.sampling.SampleParams` the maps of a layout-3 sample depend on."""
        from .sampling import SampleParams

        return SampleParams(
            index=int(raw["index"]), alpha_id=raw["alpha_id"], alpha_exp=raw["alpha_exp"], beta=raw["beta"],
            pose=raw["pose"], translation=raw["translation"], intrinsics=raw["intrinsics"],
            projection=str(self.attrs["projection"]), sh=np.zeros((9, 3), np.float32),
            detail_weights=raw["detail_weights"] if self.detail else None, background_kind="none",
            background_color=np.zeros(3), background_seed=0, occluders=[])

    def __iter__(self):
        for i in range(self._n):
            yield self.read(i)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        self._columns = {}
        self._maps = {}

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_samples(requests, keys=None) -> list[dict[str, np.ndarray]]:
    """``reader.read(i, keys)`` for each ``(reader, i)`` of ``requests`` (readers of any shards),
    bit for bit, with the morphable model evaluated once per ``GEOMETRY_BATCH`` samples *across
    all of them* where layout-3 maps are recomputed (``depth``, ``depth_coarse``, ``normals``,
    ``pncc``, ``albedo``): readers of one model and image size share the recomputing renderer
    (:func:`surface_renderer`), and its model evaluation gives values that do not depend on the
    batching (:meth:`synth.render.FaceRenderer.model_arrays`, a fixed-order kernel; it is memory
    bound, so one call for a block of samples costs a few times one call for one). A training batch draws
    from many shards: this is what the loaders use (``train.data.ShardDataset.__getitems__``). Raw
    arrays are read ``GEOMETRY_BATCH`` samples at a time."""
    from .render import GEOMETRY_BATCH

    keys = None if keys is None else tuple(keys)
    maps = keys is None or bool(set(keys) & set(SURFACE_KEYS))  # recomputed from layout 3 on
    ids = keys is None or "tri_id" in keys  # recomputed from layout 6 on
    out: list[dict[str, np.ndarray] | None] = [None] * len(requests)
    groups: dict[int, list[int]] = {}  # renderer -> positions in requests whose maps it recomputes
    for n, (reader, i) in enumerate(requests):
        if (maps and reader.layout >= 3) or (ids and ids_recomputed(reader.layout)):
            groups.setdefault(id(reader._renderer()), []).append(n)
        else:
            out[n] = reader.read(i, keys)
    for positions in groups.values():
        renderer = requests[positions[0]][0]._renderer()
        for b in range(0, len(positions), GEOMETRY_BATCH):
            chunk = positions[b:b + GEOMETRY_BATCH]
            raws = [requests[n][0]._raw_for(requests[n][1], keys) for n in chunk]
            params = [requests[n][0]._sample_params(raw) for n, raw in zip(chunk, raws)]
            for n, raw, p, arrays in zip(chunk, raws, params, renderer.model_arrays(params)):
                def surface(raw, tri_id, maps=True, p=p, arrays=arrays):
                    return renderer.surface_maps(p, tri_id, arrays=arrays, maps=maps)
                out[n] = decode_sample(raw, keys, requests[n][0].layout, surface=surface)
    return out


_RENDERERS: dict[tuple[str, int, int], Any] = {}  # (model fingerprint, size, bank) -> FaceRenderer


def surface_renderer(model, size: int, detail_version: int | None = None):
    """The CPU :class:`~synth.render.FaceRenderer` that recomputes layout-3 maps of ``model`` at ``size``
    with detail bank ``detail_version`` (default: the current one), one per (model, size, version) in
    a process (created on first use; readers share it)."""
    from .detail import BANK_VERSION

    version = BANK_VERSION if detail_version is None else int(detail_version)
    key = (model.fingerprint, int(size), version)
    r = _RENDERERS.get(key)
    if r is None:
        from .render import FaceRenderer

        r = _RENDERERS[key] = FaceRenderer(model, int(size), platform="cpu", detail_version=version)
    return r


def sampling_json(sampling: dict[str, Any]) -> str:
    """A shard's ``generator_config`` attribute: its job's sampling settings (the manifest's
    ``sampling``) as canonical JSON, compared by ``synth-cli verify`` and the resume check."""
    return json.dumps(sampling, sort_keys=True)


def _builtin_for(reader: "ShardReader"):
    """The built-in model, when it is the one ``reader``'s shard was rendered with."""
    from morphable_model.builtin import MODEL_VERSION, builtin_model

    want = reader.attrs.get("model_fingerprint")
    source = str(reader.attrs.get("model_source", ""))
    m = re.fullmatch(r"builtin:v(\d+):grid([0-9.]+):seed(\d+)", source)
    model = None
    if m and int(m.group(1)) == MODEL_VERSION:
        model = builtin_model(grid_mm=float(m.group(2)), seed=int(m.group(3)))
    if model is None or not model.matches(want, reader.attrs.get("model_sketch"), f"shard {str(reader.path)!r}"):
        raise ValueError(f"shard {str(reader.path)!r}: its maps are recomputed with the morphable model it was rendered "
                         f"with ({source or '?'}, fingerprint {want}); give that model file (synth-cli verify / preview "
                         f"--model, or ShardReader(path, model=...))")
    return model


def plain_attr(v):
    """An HDF5 attribute value as a plain Python value (bytes -> str, numpy scalar -> Python)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v
