"""Readers and a writer for Basel Face Model files.

* BFM2017 / BFM2019 (``model2017-1_bfm_nomouth.h5``, ``model2019_fullHead.h5``, ...): statismo
  HDF5 layout, see :func:`load_bfm2017` / :func:`save_bfm2017`.
* BFM2009 (``01_MorphableModel.mat``): MATLAB file, see :func:`load_bfm2009`.

This module only reads and writes files; :func:`morphable_model.load.load_model` dispatches on
the path (and builds the built-in model for ``None``).

Every problem with a file raises :class:`ModelFileError` (a ``ValueError``) with one line
naming the file, the key and the expected vs actual shape; h5py / scipy errors are chained
(``raise ... from e``), never shown raw.

Units: the returned model is always in millimetres with albedo in [0, 1]. BFM2017/2019 are in
mm; BFM2009 is in micrometres. Whatever the format, the unit is also checked with a heuristic on
the mean shape's bounding-box diagonal (a face is ~200-400 mm): > 5000 -> micrometres (/1000),
< 1 -> metres (x1000); what was assumed is logged. Colours whose mean exceeds 1.5 are taken as
0..255 and divided by 255.

Winding: triangles are re-oriented, if needed, so that ``cross(v1 - v0, v2 - v0)`` points out of
the face (towards +z on average over the mean shape), as docs/DESIGN.md requires; a flip is logged.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from .geometry import face_normals
from .landmarks import IBUG68_NAMES, N_LANDMARKS
from .model import MorphableModel

__all__ = [
    "ModelFileError",
    "HDF5_MAGIC",
    "load_bfm2017",
    "load_bfm2009",
    "save_bfm2017",
    "read_landmark_indices",
    "FORMAT_VERSION",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Version of the detailface metadata written by :func:`save_bfm2017` (``/metadata/detailface``)."""

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
"""The first 8 bytes of every HDF5 file."""


class ModelFileError(ValueError):
    """A model file is missing, unreadable or has wrong content; the message names the file."""


def existing_file(path) -> Path:
    """``path`` as a Path, raising :class:`ModelFileError` unless it is an existing file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelFileError(f"{p}: no such file")
    if not p.is_file():
        raise ModelFileError(f"{p}: not a file")
    return p


# ---------------------------------------------------------------------------------------------
# BFM2017 / 2019 (statismo HDF5)
# ---------------------------------------------------------------------------------------------
def load_bfm2017(path: str | os.PathLike, landmarks=None) -> MorphableModel:
    """Load a BFM2017/BFM2019 HDF5 file (or one written by :func:`save_bfm2017`).

    Keys read (N vertices, T triangles):

    * ``/shape/model/{mean (3N,), pcaBasis (3N, Kid), pcaVariance (Kid,)}``
    * ``/color/model/{mean, pcaBasis, pcaVariance}`` (same layout, RGB)
    * ``/expression/model/{mean, pcaBasis, pcaVariance}`` (optional: absent -> Kexp = 0)
    * ``/shape/representer/points (3, N)``, ``/shape/representer/cells (3, T)`` (0-based)
    * ``/metadata/landmarks/json`` (optional) and ``/metadata/detailface`` (ours, optional)

    ``pcaBasis`` columns are orthonormal and ``pcaVariance`` holds the eigenvalues, so the
    model std is ``sqrt(pcaVariance)``. The expression mean is added to the shape mean
    (``mean_shape = shape mean + expression mean``), so alpha = 0 is the model's mean face with
    its mean expression. The expression representer (if stored) must have the same points and
    cells as the shape representer.

    Landmarks: ``landmarks`` (array / .npy / .txt of 68 vertex ids) wins; else our own files'
    stored vertex ids; else, if the JSON holds all 68 iBUG names (see
    :data:`morphable_model.landmarks.IBUG68_NAMES`), their coordinates are snapped to the
    nearest representer vertex; else ``landmarks = None`` (the BFM's own landmark set is not
    the iBUG 68-point set).
    """
    import h5py

    p = existing_file(path)
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise ModelFileError(f"{p}: not an HDF5 file ({e})") from e
    with f:
        try:
            mean, id_basis, id_var = _read_pca(f, p, "shape")
            n = mean.shape[0] // 3
            col_mean, alb_basis, alb_var = _read_pca(f, p, "color", n)
            if "expression" in f:
                exp_mean, exp_basis, exp_var = _read_pca(f, p, "expression", n)
            else:
                log.info("%s: no /expression group, model has no expression basis", p)
                exp_mean = np.zeros(3 * n, np.float32)
                exp_basis = np.zeros((3 * n, 0), np.float32)
                exp_var = np.zeros((0,), np.float64)
            points = _read(f, p, "/shape/representer/points", (3, n), float)
            cells = _read(f, p, "/shape/representer/cells", (3, None), int)
            if "expression/representer/points" in f:
                e_pts = _read(f, p, "/expression/representer/points", (3, n), float)
                if not np.allclose(e_pts, points, atol=1e-3 * max(1.0, np.abs(points).max())):
                    raise ModelFileError(
                        f"{p}: /expression/representer/points differ from /shape/representer/points "
                        "(shape and expression models must share one mesh)"
                    )
            if "expression/representer/cells" in f:
                e_cells = _read(f, p, "/expression/representer/cells", cells.shape, int)
                if not np.array_equal(e_cells, cells):
                    raise ModelFileError(
                        f"{p}: /expression/representer/cells differ from /shape/representer/cells"
                    )
            lm_json = _read_text(f, p, "/metadata/landmarks/json")
            ours = f.get("metadata/detailface")
            meta = dict(ours.attrs) if isinstance(ours, h5py.Group) else {}
            face_region = None
            if isinstance(ours, h5py.Group) and "face_region" in ours:
                face_region = _read(f, p, "/metadata/detailface/face_region", (n,), int).astype(bool)
            regions, region_names = None, ()
            if isinstance(ours, h5py.Group) and "regions" in ours:
                regions = _read(f, p, "/metadata/detailface/regions", (n,), int)
                region_names = _region_names(ours["regions"].attrs.get("names"), p)
                if regions.size and (regions.min() < 0 or regions.max() >= len(region_names)):
                    raise ModelFileError(
                        f"{p}: /metadata/detailface/regions must hold labels in [0, {len(region_names)}), "
                        f"got [{regions.min()}, {regions.max()}]"
                    )
        except (KeyError, OSError, TypeError) as e:  # anything h5py throws on a corrupt file
            raise ModelFileError(f"{p}: cannot read model ({type(e).__name__}: {e})") from e

    triangles = cells.T.astype(np.int64)  # (3, T) -> (T, 3)
    _check_indices(triangles, n, p, "/shape/representer/cells")
    mean_shape = (mean + exp_mean).reshape(n, 3)  # (3N,) -> (N, 3), rows x0, y0, z0, ...
    scale = _unit_scale(mean_shape, p, declared=str(meta.get("unit", "")) or None)
    albedo_mean = col_mean.reshape(n, 3)  # (3N,) -> (N, 3)
    cscale = _colour_scale(albedo_mean, p)
    ref_points = points.T * scale  # (3, N) -> (N, 3), in mm

    lm = _landmarks_2017(lm_json, ref_points, p, landmarks, n)
    model = MorphableModel(
        mean_shape=mean_shape * scale,
        id_basis=id_basis,
        id_std=_std(id_var, p, "/shape/model/pcaVariance") * scale,
        exp_basis=exp_basis,
        exp_std=_std(exp_var, p, "/expression/model/pcaVariance") * scale,
        albedo_mean=albedo_mean * cscale,
        albedo_basis=alb_basis,
        albedo_std=_std(alb_var, p, "/color/model/pcaVariance") * cscale,
        triangles=_orient_outward(mean_shape, triangles, p),
        landmarks=lm,
        unit="mm",
        source=str(meta.get("source", "")) or str(p),
        face_region=face_region,
        regions=regions,
        region_names=region_names,
    )
    stored = meta.get("fingerprint")
    if stored is not None and str(stored) != model.fingerprint:
        log.warning(
            "%s: stored fingerprint %s... differs from the loaded arrays' %s... (file edited, "
            "or arrays changed on loading: units, winding)", p, str(stored)[:12], model.fingerprint[:12]
        )
    log.info("loaded %r", model)
    return model


def _region_names(raw, path: Path) -> tuple[str, ...]:
    """The ``names`` attribute of ``/metadata/detailface/regions``: a JSON list of strings."""
    key = "/metadata/detailface/regions@names"
    try:
        names = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: {key} must be a JSON list of region names, got {raw!r}") from e
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise ModelFileError(f"{path}: {key} must be a JSON list of region names, got {raw!r}")
    return tuple(names)


def _read(f, path: Path, key: str, shape: tuple, kind) -> np.ndarray:
    """Dataset ``key`` as an array of the expected ``shape`` (None = any) and kind."""
    if key not in f:
        raise ModelFileError(f"{path}: missing key '{key}'")
    ds = f[key]
    if not hasattr(ds, "shape") or not hasattr(ds, "dtype"):
        raise ModelFileError(f"{path}: '{key}' is a group, expected a dataset of shape {_fmt(shape)}")
    got = tuple(ds.shape)
    if len(got) != len(shape) or any(e is not None and e != g for e, g in zip(shape, got)):
        raise ModelFileError(f"{path}: '{key}' must have shape {_fmt(shape)}, got {got}")
    try:
        a = ds[()]
    except Exception as e:  # noqa: BLE001 - h5py raises many types on corrupt data
        raise ModelFileError(f"{path}: cannot read '{key}' ({type(e).__name__}: {e})") from e
    a = np.asarray(a)
    if kind is int:
        if a.size and not np.issubdtype(a.dtype, np.number):
            raise ModelFileError(f"{path}: '{key}' must be numeric, got dtype {a.dtype}")
        if a.size and np.issubdtype(a.dtype, np.floating):
            if not np.all(np.equal(np.mod(a, 1), 0)):
                raise ModelFileError(f"{path}: '{key}' must hold integers, got non-integer values")
        return a.astype(np.int64)
    if a.size and not np.issubdtype(a.dtype, np.number):
        raise ModelFileError(f"{path}: '{key}' must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64 if kind is np.float64 else np.float32)
    if not np.all(np.isfinite(a)):
        raise ModelFileError(f"{path}: '{key}' holds non-finite values")
    return a


def _fmt(shape: tuple) -> str:
    inner = ", ".join("*" if s is None else str(s) for s in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def _read_pca(f, path: Path, group: str, n: int | None = None):
    """``mean (3N,)``, ``basis (3N, K)``, ``variance (K,)`` of ``/<group>/model``."""
    rows = None if n is None else 3 * n
    mean = _read(f, path, f"/{group}/model/mean", (rows,), float)
    if mean.shape[0] % 3 or mean.shape[0] == 0:
        raise ModelFileError(
            f"{path}: '/{group}/model/mean' must have shape (3N,), got {mean.shape} (not a multiple of 3)"
        )
    basis = _read(f, path, f"/{group}/model/pcaBasis", (mean.shape[0], None), float)
    var = _read(f, path, f"/{group}/model/pcaVariance", (basis.shape[1],), np.float64)
    return mean, basis, var


def _read_text(f, path: Path, key: str) -> str | None:
    if key not in f:
        return None
    try:
        raw = f[key][()]
    except Exception as e:  # noqa: BLE001
        raise ModelFileError(f"{path}: cannot read '{key}' ({type(e).__name__}: {e})") from e
    if isinstance(raw, np.ndarray):
        raw = raw.reshape(-1)[0] if raw.size == 1 else b"".join(np.asarray(raw, dtype=bytes).tolist())
    return raw.decode("utf-8") if isinstance(raw, (bytes, np.bytes_)) else str(raw)


def _std(var: np.ndarray, path: Path, key: str) -> np.ndarray:
    var = np.asarray(var, dtype=np.float64)
    if np.any(var < 0):
        # tiny negative eigenvalues appear from round-off; large ones mean a broken file
        if var.min() < -1e-6 * max(1.0, float(np.abs(var).max())):
            raise ModelFileError(f"{path}: '{key}' must be >= 0 (variances), got min {var.min():g}")
        var = np.maximum(var, 0.0)
    return np.sqrt(var)


def _check_indices(triangles: np.ndarray, n: int, path: Path, key: str) -> None:
    if triangles.size and (triangles.min() < 0 or triangles.max() >= n):
        raise ModelFileError(
            f"{path}: '{key}' indices must be in [0, {n}), got [{triangles.min()}, {triangles.max()}]"
        )


def _landmarks_2017(lm_json: str | None, ref_points: np.ndarray, path: Path, override, n: int):
    if override is not None:
        return read_landmark_indices(override, n)
    if lm_json is None:
        log.info("%s: no /metadata/landmarks/json, landmarks = None", path)
        return None
    try:
        entries = json.loads(lm_json)
        by_name = {str(e["id"]): e for e in entries}
    except (ValueError, TypeError, KeyError) as e:
        raise ModelFileError(
            f"{path}: '/metadata/landmarks/json' must be a JSON list of {{\"id\", \"coordinates\"}} objects ({e})"
        ) from e
    if not all(name in by_name for name in IBUG68_NAMES):
        log.info(
            "%s: the file's %d landmarks are not the 68 iBUG points, landmarks = None "
            "(pass landmarks= a (68,) vertex-index array/.npy/.txt)", path, len(by_name)
        )
        return None
    ordered = [by_name[name] for name in IBUG68_NAMES]
    if all("vertex" in e for e in ordered):  # written by save_bfm2017
        idx = np.array([e["vertex"] for e in ordered], dtype=np.int64)
        _check_indices(idx, n, path, "/metadata/landmarks/json vertex")
        return idx
    try:
        coords = np.array([e["coordinates"] for e in ordered], dtype=np.float64)  # (68, 3)
    except (KeyError, ValueError, TypeError) as e:
        raise ModelFileError(f"{path}: '/metadata/landmarks/json' entries need 3 'coordinates' ({e})") from e
    if coords.shape != (N_LANDMARKS, 3):
        raise ModelFileError(
            f"{path}: '/metadata/landmarks/json' coordinates must be (68, 3), got {coords.shape}"
        )
    from scipy.spatial import cKDTree

    scale = _unit_scale(coords, path, quiet=True) if len(coords) else 1.0
    dist, idx = cKDTree(ref_points).query(coords * scale)
    log.info("%s: snapped 68 iBUG landmarks to vertices (max distance %.2f mm)", path, dist.max())
    return idx.astype(np.int64)


def read_landmark_indices(spec, n_vertices: int) -> np.ndarray:
    """``(68,)`` int64 vertex indices from an array-like or a ``.npy`` / ``.txt`` file.

    A ``.txt`` file holds 68 integers separated by white space or commas (``#`` comments ok).
    """
    if isinstance(spec, (str, os.PathLike)):
        p = existing_file(spec)
        try:
            if p.suffix.lower() == ".npy":
                arr = np.load(p, allow_pickle=False)
            else:
                text = "\n".join(line.split("#", 1)[0] for line in p.read_text().splitlines())
                arr = np.array([float(t) for t in text.replace(",", " ").split()])
        except (OSError, ValueError) as e:
            raise ModelFileError(f"{p}: cannot read landmark indices ({e})") from e
        where = str(p)
    else:
        arr = np.asarray(spec)
        where = "landmarks"
    arr = np.asarray(arr).reshape(-1) if np.ndim(arr) == 2 and 1 in np.shape(arr) else np.asarray(arr)
    if arr.shape != (N_LANDMARKS,):
        raise ModelFileError(f"{where}: landmark indices must have shape (68,), got {arr.shape}")
    if not np.all(np.equal(np.mod(arr, 1), 0)):
        raise ModelFileError(f"{where}: landmark indices must be integers")
    idx = arr.astype(np.int64)
    if idx.min() < 0 or idx.max() >= n_vertices:
        raise ModelFileError(
            f"{where}: landmark indices must be in [0, {n_vertices}), got [{idx.min()}, {idx.max()}]"
        )
    return idx


def save_bfm2017(model: MorphableModel, path: str | os.PathLike) -> Path:
    """Write ``model`` in exactly the layout :func:`load_bfm2017` reads; returns the path.

    Datasets (float32 unless noted): ``/{shape,color,expression}/model/{mean, pcaBasis,
    pcaVariance (float64 = std^2, so sqrt gives the float32 std back bit for bit),
    noiseVariance}``, ``/{shape,color,expression}/representer/{points (3, N), cells (3, T) int32}``.
    The expression mean is written as zeros (``mean_shape`` already contains it).
    Metadata: ``/metadata/landmarks/json`` (68 entries ``{"id": iBUG name, "coordinates":
    [x, y, z] on the mean shape, "vertex": index}`` in iBUG order, when the model has
    landmarks), ``/metadata/detailface`` attrs ``unit, source, fingerprint, format_version``
    and datasets ``face_region (N,) uint8`` and ``regions (N,) uint8`` (attribute ``names``: JSON
    list of the region names) when present. Written to a temporary file first, then
    renamed, so a crash never leaves a half-written model.
    """
    import h5py

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
    n = model.n_vertices
    points = model.mean_shape.T  # (N, 3) -> (3, N)
    cells = model.triangles.T.astype(np.int32)  # (T, 3) -> (3, T)
    try:
        with h5py.File(tmp, "w") as f:
            for group, mean, basis, std in (
                ("shape", model.mean_shape.reshape(-1), model.id_basis, model.id_std),
                ("color", model.albedo_mean.reshape(-1), model.albedo_basis, model.albedo_std),
                ("expression", np.zeros(3 * n, np.float32), model.exp_basis, model.exp_std),
            ):
                g = f.create_group(f"{group}/model")
                g.create_dataset("mean", data=mean.astype(np.float32))
                g.create_dataset("pcaBasis", data=basis.astype(np.float32))
                g.create_dataset("pcaVariance", data=std.astype(np.float64) ** 2)
                g.create_dataset("noiseVariance", data=np.float32(0.0))
                r = f.create_group(f"{group}/representer")
                r.create_dataset("points", data=points.astype(np.float32))
                r.create_dataset("cells", data=cells)
            meta = f.create_group("metadata")
            if model.landmarks is not None:
                entries = [
                    {"id": name, "coordinates": [float(c) for c in model.mean_shape[v]], "vertex": int(v)}
                    for name, v in zip(IBUG68_NAMES, model.landmarks)
                ]
                meta.create_group("landmarks").create_dataset("json", data=json.dumps(entries))
            ours = meta.create_group("detailface")
            ours.attrs["unit"] = model.unit
            ours.attrs["source"] = model.source
            ours.attrs["fingerprint"] = model.fingerprint
            ours.attrs["format_version"] = FORMAT_VERSION
            if model.face_region is not None:
                ours.create_dataset("face_region", data=model.face_region.astype(np.uint8))
            if model.regions is not None:
                ds = ours.create_dataset("regions", data=model.regions.astype(np.uint8))
                ds.attrs["names"] = json.dumps(list(model.region_names))
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info("saved %r to %s", model, p)
    return p


# ---------------------------------------------------------------------------------------------
# BFM2009 (.mat)
# ---------------------------------------------------------------------------------------------
_BFM2009_KEYS = ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tl")


def load_bfm2009(path: str | os.PathLike, expression=None, landmarks=None) -> MorphableModel:
    """Load BFM2009 ``01_MorphableModel.mat`` (MATLAB v5 via scipy, or v7.3 via h5py).

    Keys: ``shapeMU (3N, 1)``, ``shapePC (3N, K)`` (orthonormal columns), ``shapeEV (K, 1)``
    (standard deviations, not variances), ``texMU (3N, 1)``, ``texPC``, ``texEV`` (colours
    0..255), ``tl (T, 3)`` 1-based triangles. Geometry is micrometres -> mm (/1000, confirmed by
    the unit heuristic), colours /255.

    BFM2009 has no expression basis: the model gets a zero-width one unless ``expression``
    names an ``.npz`` or ``.mat`` file with ``mean (3N,)`` (optional, added to shapeMU),
    ``basis (3N, Kexp)`` and ``std (Kexp,)``, in the same unit as the shape (the unit heuristic
    is applied to the combined mean). ``landmarks``: a ``(68,)`` index array / .npy / .txt.
    """
    p = existing_file(path)
    d = _read_mat(p, _BFM2009_KEYS)
    mu = _mat_array(d, p, "shapeMU", (None, 1)).reshape(-1)
    if mu.shape[0] % 3 or mu.shape[0] == 0:
        raise ModelFileError(f"{p}: 'shapeMU' must have shape (3N, 1), got {d['shapeMU'].shape}")
    rows = mu.shape[0]
    n = rows // 3
    shape_pc = _mat_array(d, p, "shapePC", (rows, None))
    shape_ev = _mat_array(d, p, "shapeEV", (shape_pc.shape[1], 1)).reshape(-1)
    tex_mu = _mat_array(d, p, "texMU", (rows, 1)).reshape(-1)
    tex_pc = _mat_array(d, p, "texPC", (rows, None))
    tex_ev = _mat_array(d, p, "texEV", (tex_pc.shape[1], 1)).reshape(-1)
    tl = _mat_array(d, p, "tl", (None, 3))
    if not np.all(np.equal(np.mod(tl, 1), 0)):
        raise ModelFileError(f"{p}: 'tl' must hold integer (1-based) vertex indices")
    triangles = tl.astype(np.int64) - 1  # 1-based -> 0-based
    _check_indices(triangles, n, p, "tl (1-based)")

    exp_mean = np.zeros(rows, np.float64)
    exp_basis = np.zeros((rows, 0), np.float32)
    exp_std = np.zeros((0,), np.float64)
    if expression is not None:
        exp_mean, exp_basis, exp_std = _read_expression(expression, rows)

    mean_shape = (mu + exp_mean).reshape(n, 3)  # (3N,) -> (N, 3)
    scale = _unit_scale(mean_shape, p, declared="um")
    albedo_mean = tex_mu.reshape(n, 3)  # (3N,) -> (N, 3)
    cscale = _colour_scale(albedo_mean, p)
    if np.any(shape_ev < 0) or np.any(tex_ev < 0):
        raise ModelFileError(f"{p}: 'shapeEV'/'texEV' must be >= 0 (standard deviations)")
    model = MorphableModel(
        mean_shape=mean_shape * scale,
        id_basis=shape_pc,
        id_std=shape_ev * scale,
        exp_basis=exp_basis,
        exp_std=exp_std * scale,
        albedo_mean=albedo_mean * cscale,
        albedo_basis=tex_pc,
        albedo_std=tex_ev * cscale,
        triangles=_orient_outward(mean_shape, triangles, p),
        landmarks=None if landmarks is None else read_landmark_indices(landmarks, n),
        unit="mm",
        source=str(p),
    )
    log.info("loaded %r", model)
    return model


def _read_mat(p: Path, keys: tuple[str, ...]) -> dict:
    """The named variables of a MATLAB file, v5 (scipy) or v7.3 (HDF5, transposed back)."""
    import scipy.io

    with open(p, "rb") as fh:
        head = fh.read(512)
    if head[:8] == HDF5_MAGIC or head[512 - 8 :] == HDF5_MAGIC or _is_hdf5(p):
        import h5py

        try:
            with h5py.File(p, "r") as f:
                # MATLAB v7.3 stores column-major arrays: h5py sees them transposed
                return {k: np.asarray(f[k][()]).T for k in keys if k in f}
        except OSError as e:
            raise ModelFileError(f"{p}: cannot read MATLAB v7.3 file ({e})") from e
    try:
        return scipy.io.loadmat(p, variable_names=list(keys))
    except (ValueError, TypeError, OSError, NotImplementedError) as e:
        raise ModelFileError(f"{p}: not a MATLAB .mat file ({type(e).__name__}: {e})") from e


def _is_hdf5(p: Path) -> bool:
    import h5py

    try:
        return bool(h5py.is_hdf5(p))
    except OSError:
        return False


def _mat_array(d: dict, p: Path, key: str, shape: tuple) -> np.ndarray:
    if key not in d:
        raise ModelFileError(f"{p}: missing key '{key}'")
    a = np.asarray(d[key])
    if a.ndim == 1 and len(shape) == 2 and shape[1] == 1:
        a = a[:, None]
    if a.ndim != len(shape) or any(e is not None and e != g for e, g in zip(shape, a.shape)):
        raise ModelFileError(f"{p}: '{key}' must have shape {_fmt(shape)}, got {tuple(a.shape)}")
    if a.size and not np.issubdtype(a.dtype, np.number):
        raise ModelFileError(f"{p}: '{key}' must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ModelFileError(f"{p}: '{key}' holds non-finite values")
    return a


def _read_expression(spec, rows: int):
    """``mean (3N,)``, ``basis (3N, K)``, ``std (K,)`` from an .npz or .mat expression file."""
    p = existing_file(spec)
    if p.suffix.lower() == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:  # never unpickle: an object array could run code
                d = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ModelFileError(f"{p}: cannot read as a plain-array .npz file ({e})") from e
    else:
        d = _read_mat(p, ("mean", "basis", "std"))
    basis = _mat_array(d, p, "basis", (rows, None))
    k = basis.shape[1]
    if "std" not in d:
        raise ModelFileError(f"{p}: missing key 'std'")
    std = np.asarray(d["std"], dtype=np.float64).reshape(-1) if np.size(d["std"]) == k else None
    if std is None:
        raise ModelFileError(f"{p}: 'std' must have shape ({k},), got {np.shape(d['std'])}")
    if np.any(std < 0) or not np.all(np.isfinite(std)):
        raise ModelFileError(f"{p}: 'std' must be finite and >= 0")
    mean = np.zeros(rows)
    if "mean" in d:
        if np.size(d["mean"]) != rows:
            raise ModelFileError(f"{p}: 'mean' must have shape ({rows},), got {np.shape(d['mean'])}")
        mean = np.asarray(d["mean"], dtype=np.float64).reshape(-1)
    return mean, basis, std


# ---------------------------------------------------------------------------------------------
# units, colours, winding
# ---------------------------------------------------------------------------------------------
_UNIT_SCALE = {"mm": 1.0, "um": 1e-3, "m": 1e3}


def _unit_scale(points: np.ndarray, path: Path, declared: str | None = None, quiet: bool = False) -> float:
    """Factor that converts ``points`` to millimetres, from the bounding-box diagonal."""
    diag = float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)))
    if diag > 5000:
        guess = "um"
    elif diag < 1:
        guess = "m"
    else:
        guess = "mm"
    if declared is not None and declared in _UNIT_SCALE and declared != guess:
        log.warning(
            "%s: unit declared/expected %s but the mean shape's bounding-box diagonal is %.4g, "
            "which looks like %s; using %s", path, declared, diag, guess, guess
        )
    if not quiet:
        log.info("%s: bounding-box diagonal %.4g -> assuming %s (x%g to mm)", path, diag, guess, _UNIT_SCALE[guess])
    return _UNIT_SCALE[guess]


def _colour_scale(albedo_mean: np.ndarray, path: Path) -> float:
    if float(albedo_mean.mean()) > 1.5:
        log.info("%s: mean colour %.3g > 1.5, assuming 0..255 colours (/255)", path, albedo_mean.mean())
        return 1.0 / 255.0
    return 1.0


def _orient_outward(mean_shape: np.ndarray, triangles: np.ndarray, path: Path) -> np.ndarray:
    """Flip the winding of all triangles if their normals point inwards on the whole.

    "Outwards" = away from the vertex centroid: the sum over triangles of
    ``dot(cross(v1 - v0, v2 - v0), triangle centre - centroid)`` (6x the signed volume of the
    cone from the centroid) is positive. This works for open face masks (the centroid lies
    behind the face) and for closed full-head meshes alike.
    """
    v = mean_shape.astype(np.float64)
    n = face_normals(v, triangles, normalize=False)  # (T, 3), |n| = 2 area
    centres = v[triangles].mean(axis=1) - v.mean(axis=0)  # (T, 3, 3) -> (T, 3)
    if np.einsum("ti,ti->", n, centres) < 0:  # (T, 3) . (T, 3) -> scalar
        log.info("%s: triangles wound inwards (clockwise seen from outside), flipping them", path)
        return triangles[:, [0, 2, 1]]
    return triangles
