"""Tests for morphable_model.io_bfm: BFM2017/2019 h5 and BFM2009 .mat readers, the writer, errors."""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pytest
import scipy.io

from morphable_model import ModelFileError, load_bfm2009, load_bfm2017, load_model, save_bfm2017
from morphable_model.landmarks import IBUG68_NAMES


# ------------------------------------------------------------------ hand-written files
def write_statismo(path, m, *, length=1.0, colour=1.0, exp_mean=None, cells=None, landmarks_json=None,
                   expression=True, exp_points=None):
    """Write ``m`` in the BFM2017 layout with plain h5py (independent of save_bfm2017).

    ``length`` multiplies geometry (1000 = micrometres, 0.001 = metres), ``colour`` the colours;
    ``exp_mean`` (3N,) is stored as the expression mean and subtracted from the shape mean.
    """
    n = m.n_vertices
    exp_mean = np.zeros(3 * n) if exp_mean is None else exp_mean
    shape_mean = m.mean_shape.reshape(-1) - exp_mean  # (N, 3) -> (3N,)
    cells = m.triangles.T if cells is None else cells  # (T, 3) -> (3, T)
    with h5py.File(path, "w") as f:
        groups = [("shape", shape_mean * length, m.id_basis, (m.id_std.astype(np.float64) * length) ** 2),
                  ("color", m.albedo_mean.reshape(-1) * colour, m.albedo_basis,
                   (m.albedo_std.astype(np.float64) * colour) ** 2)]
        if expression:
            groups.append(("expression", exp_mean * length, m.exp_basis, (m.exp_std.astype(np.float64) * length) ** 2))
        for g, mean, basis, var in groups:
            f[f"{g}/model/mean"] = mean.astype(np.float32)
            f[f"{g}/model/pcaBasis"] = basis
            f[f"{g}/model/pcaVariance"] = var.astype(np.float32)
            f[f"{g}/representer/points"] = (m.mean_shape.T * length).astype(np.float32)
            f[f"{g}/representer/cells"] = cells
        if exp_points is not None:
            del f["expression/representer/points"]
            f["expression/representer/points"] = exp_points
        if landmarks_json is not None:
            f["metadata/landmarks/json"] = landmarks_json


def write_bfm2009(path, m, *, v73=False, drop=None, **override):
    """Write ``m`` like 01_MorphableModel.mat: micrometres, colours 0..255, 1-based tl."""
    d = {
        "shapeMU": m.mean_shape.reshape(-1, 1).astype(np.float64) * 1000.0,  # (3N, 1) um
        "shapePC": m.id_basis.astype(np.float64),
        "shapeEV": m.id_std.reshape(-1, 1).astype(np.float64) * 1000.0,  # (K, 1) std, um
        "texMU": m.albedo_mean.reshape(-1, 1).astype(np.float64) * 255.0,
        "texPC": m.albedo_basis.astype(np.float64),
        "texEV": m.albedo_std.reshape(-1, 1).astype(np.float64) * 255.0,
        "tl": m.triangles.astype(np.float64) + 1,  # MATLAB stores double, 1-based
    }
    d.update(override)
    for k in drop or ():
        del d[k]
    if v73:  # MATLAB v7.3 = HDF5 with column-major arrays (transposed as seen by h5py)
        with h5py.File(path, "w") as f:
            for k, v in d.items():
                f[k] = np.asarray(v).T
    else:
        scipy.io.savemat(path, d)


# ------------------------------------------------------------------ BFM2017 round trip / layout
def test_round_trip_exact(tiny_model, tmp_model_h5):
    m2 = load_bfm2017(tmp_model_h5)
    for name in ("mean_shape", "id_basis", "id_std", "exp_basis", "exp_std", "albedo_mean", "albedo_basis",
                 "albedo_std", "triangles", "landmarks", "face_region", "regions"):
        a, b = getattr(tiny_model, name), getattr(m2, name)
        np.testing.assert_array_equal(a, b, err_msg=name)
        assert a.dtype == b.dtype, name
    assert m2.region_names == tiny_model.region_names and len(m2.region_names) >= 6
    assert m2.fingerprint == tiny_model.fingerprint
    assert m2.source == tiny_model.source and m2.unit == "mm"
    assert load_model(tmp_model_h5).fingerprint == tiny_model.fingerprint


def test_region_labels_layout_and_errors(tiny_model, tmp_model_h5, tmp_path):
    with h5py.File(tmp_model_h5, "r") as f:
        ds = f["metadata/detailface/regions"]
        assert ds.shape == (tiny_model.n_vertices,) and ds.dtype == np.uint8
        assert json.loads(ds.attrs["names"]) == list(tiny_model.region_names)
    # a model without labels (BFM files) writes and reads none
    plain = tiny_model.replace(regions=None, region_names=())
    m2 = load_bfm2017(save_bfm2017(plain, tmp_path / "plain.h5"))
    assert m2.regions is None and m2.region_names == ()
    # labels beyond the names, or names that are not a JSON list: one-line errors naming the key
    for name, value, attr in (("labels.h5", 99, None), ("names.h5", None, "not json")):
        path = tmp_path / name
        save_bfm2017(tiny_model, path)
        with h5py.File(path, "r+") as f:
            ds = f["metadata/detailface/regions"]
            if value is not None:
                ds[0] = value
            if attr is not None:
                ds.attrs["names"] = attr
        with pytest.raises(ModelFileError, match="metadata/detailface/regions"):
            load_bfm2017(path)


def test_writer_layout(tiny_model, tmp_model_h5):
    n, t = tiny_model.n_vertices, tiny_model.n_triangles
    with h5py.File(tmp_model_h5, "r") as f:
        assert f["shape/model/mean"].shape == (3 * n,)
        assert f["shape/model/pcaBasis"].shape == (3 * n, tiny_model.n_id)
        np.testing.assert_allclose(f["shape/model/pcaVariance"][()], tiny_model.id_std.astype(np.float64) ** 2)
        assert f["color/model/pcaBasis"].shape == (3 * n, tiny_model.n_albedo)
        assert f["expression/model/pcaBasis"].shape == (3 * n, tiny_model.n_exp)
        assert not f["expression/model/mean"][()].any()
        assert f["shape/representer/points"].shape == (3, n)
        np.testing.assert_array_equal(f["shape/representer/cells"][()], tiny_model.triangles.T)
        entries = json.loads(f["metadata/landmarks/json"][()])
        assert [e["id"] for e in entries] == list(IBUG68_NAMES)
        assert [e["vertex"] for e in entries] == tiny_model.landmarks.tolist()
        np.testing.assert_allclose(entries[30]["coordinates"], tiny_model.mean_shape[tiny_model.landmarks[30]])
        meta = f["metadata/detailface"].attrs
        assert meta["unit"] == "mm" and meta["fingerprint"] == tiny_model.fingerprint
    assert not list(tmp_model_h5.parent.glob("*.tmp"))  # no temporary file left behind


def test_zero_width_expression_round_trip(ellipsoid_model, tmp_path):
    m = ellipsoid_model.truncated(n_exp=0).replace(landmarks=None, face_region=None)
    save_bfm2017(m, tmp_path / "noexp.h5")
    m2 = load_bfm2017(tmp_path / "noexp.h5")
    assert m2.n_exp == 0 and m2.landmarks is None and m2.face_region is None
    assert m2.fingerprint == m.fingerprint


# ------------------------------------------------------------------ BFM2017 files written by others
def test_statismo_file_expression_mean_is_added(ellipsoid_model, tmp_path):
    m = ellipsoid_model
    exp_mean = np.random.default_rng(0).normal(0, 2.0, 3 * m.n_vertices)
    write_statismo(tmp_path / "bfm.h5", m, exp_mean=exp_mean)
    m2 = load_bfm2017(tmp_path / "bfm.h5")
    # shape mean + expression mean (float32 storage of each: ~1e-5 mm)
    np.testing.assert_allclose(m2.mean_shape, m.mean_shape, atol=1e-4)
    np.testing.assert_allclose(m2.id_std, m.id_std, rtol=1e-6)  # sqrt(pcaVariance)
    np.testing.assert_array_equal(m2.exp_basis, m.exp_basis)
    assert m2.landmarks is None  # no landmark metadata
    assert m2.face_region is None and m2.source.endswith("bfm.h5")


def test_statismo_units_and_colours(ellipsoid_model, tmp_path, caplog):
    m = ellipsoid_model
    for length, name in ((1000.0, "micrometres"), (0.001, "metres")):
        write_statismo(tmp_path / f"{name}.h5", m, length=length, colour=255.0)
        with caplog.at_level(logging.INFO, logger="morphable_model.io_bfm"):
            m2 = load_bfm2017(tmp_path / f"{name}.h5")
        np.testing.assert_allclose(m2.mean_shape, m.mean_shape, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(m2.id_std, m.id_std, rtol=1e-5)
        np.testing.assert_allclose(m2.albedo_mean, m.albedo_mean, atol=1e-6)
        np.testing.assert_allclose(m2.albedo_std, m.albedo_std, rtol=1e-5)
        expected_unit = "um" if length > 1 else "m"
        assert f"assuming {expected_unit}" in caplog.text
        assert "assuming 0..255 colours" in caplog.text
        caplog.clear()


def test_statismo_without_expression_group(ellipsoid_model, tmp_path):
    write_statismo(tmp_path / "noexp.h5", ellipsoid_model, expression=False)
    m2 = load_bfm2017(tmp_path / "noexp.h5")
    assert m2.n_exp == 0 and m2.exp_std.shape == (0,)


def test_clockwise_cells_are_flipped(ellipsoid_model, tmp_path):
    m = ellipsoid_model
    write_statismo(tmp_path / "cw.h5", m, cells=m.triangles[:, [0, 2, 1]].T)
    m2 = load_bfm2017(tmp_path / "cw.h5")
    # stored clockwise as (0, 2, 1): the loader flips them back to the original winding
    np.testing.assert_array_equal(m2.triangles, m.triangles)
    assert (m2.vertex_normals()[:, 2] > 0).mean() > 0.9


def test_landmarks_from_ibug_named_coordinates(ellipsoid_model, tmp_path):
    m = ellipsoid_model
    rng = np.random.default_rng(0)
    # coordinates near (within 1 mm of) the true landmark vertices, shuffled order, no "vertex"
    coords = m.mean_shape[m.landmarks] + rng.uniform(-1, 1, (68, 3))
    order = rng.permutation(68)
    entries = [{"id": IBUG68_NAMES[i], "coordinates": coords[i].tolist()} for i in order]
    entries.append({"id": "center.nose.tip", "coordinates": [0, 0, 0]})  # extra points are ignored
    write_statismo(tmp_path / "lm.h5", m, landmarks_json=json.dumps(entries))
    m2 = load_bfm2017(tmp_path / "lm.h5")
    np.testing.assert_array_equal(m2.landmarks, m.landmarks)


def test_non_ibug_landmarks_give_none_unless_passed(ellipsoid_model, tmp_path):
    m = ellipsoid_model
    bfm_like = [{"id": "center.nose.tip", "coordinates": [0, 0, 60]},
                {"id": "left.eye.corner_outer", "coordinates": [40, 30, 40]}]
    path = tmp_path / "bfmlm.h5"
    write_statismo(path, m, landmarks_json=json.dumps(bfm_like))
    assert load_bfm2017(path).landmarks is None
    idx = np.arange(68) * 3
    np.testing.assert_array_equal(load_bfm2017(path, landmarks=idx).landmarks, idx)
    np.save(tmp_path / "lm.npy", idx)
    np.testing.assert_array_equal(load_model(path, landmarks=tmp_path / "lm.npy").landmarks, idx)
    (tmp_path / "lm.txt").write_text("# iBUG 68 vertex ids\n" + "\n".join(map(str, idx)) + "\n")
    np.testing.assert_array_equal(load_bfm2017(path, landmarks=str(tmp_path / "lm.txt")).landmarks, idx)
    with pytest.raises(ModelFileError, match=r"landmark indices must have shape \(68,\), got \(3,\)"):
        load_bfm2017(path, landmarks=[1, 2, 3])
    with pytest.raises(ModelFileError, match=r"landmark indices must be in \[0, 525\)"):
        load_bfm2017(path, landmarks=np.full(68, 10_000))


# ------------------------------------------------------------------ BFM2017 errors
def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_error_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such file") as e:
        load_model(tmp_path / "nope.h5")
    assert str(tmp_path / "nope.h5") in _one_line(e)


def test_error_not_hdf5(tmp_path):
    p = tmp_path / "fake.h5"
    p.write_text("hello")
    with pytest.raises(ModelFileError, match="not an HDF5 file") as e:
        load_bfm2017(p)
    assert str(p) in _one_line(e)
    assert e.value.__cause__ is not None  # the h5py error is chained, not shown raw


def test_error_missing_key(ellipsoid_model, tmp_path):
    p = tmp_path / "m.h5"
    write_statismo(p, ellipsoid_model)
    with h5py.File(p, "a") as f:
        del f["shape/model/mean"]
    with pytest.raises(ModelFileError) as e:
        load_bfm2017(p)
    assert _one_line(e) == f"{p}: missing key '/shape/model/mean'"


def test_error_wrong_shape(ellipsoid_model, tmp_path):
    p = tmp_path / "m.h5"
    write_statismo(p, ellipsoid_model)
    with h5py.File(p, "a") as f:
        del f["color/model/pcaBasis"]
        f["color/model/pcaBasis"] = np.zeros((30, 8), np.float32)
    with pytest.raises(ModelFileError) as e:
        load_bfm2017(p)
    assert _one_line(e) == f"{p}: '/color/model/pcaBasis' must have shape (1575, *), got (30, 8)"


def test_error_variance_length_and_cells(ellipsoid_model, tmp_path):
    m = ellipsoid_model
    p = tmp_path / "m.h5"
    write_statismo(p, m)
    with h5py.File(p, "a") as f:
        del f["shape/model/pcaVariance"]
        f["shape/model/pcaVariance"] = np.ones(3, np.float32)
    with pytest.raises(ModelFileError, match=r"'/shape/model/pcaVariance' must have shape \(10,\), got \(3,\)"):
        load_bfm2017(p)
    bad = m.triangles.T.copy()
    bad[0, 0] = m.n_vertices
    write_statismo(p, m, cells=bad)
    with pytest.raises(ModelFileError, match=r"'/shape/representer/cells' indices must be in \[0, 525\)"):
        load_bfm2017(p)


def test_error_expression_representer_differs(ellipsoid_model, tmp_path):
    m = ellipsoid_model
    p = tmp_path / "m.h5"
    write_statismo(p, m, exp_points=(m.mean_shape.T + 5.0).astype(np.float32))
    with pytest.raises(ModelFileError, match="/expression/representer/points differ"):
        load_bfm2017(p)


# ------------------------------------------------------------------ BFM2009
@pytest.mark.parametrize("v73", [False, True])
def test_bfm2009_units_and_one_based_triangles(ellipsoid_model, tmp_path, v73):
    m = ellipsoid_model
    p = tmp_path / "01_MorphableModel.mat"
    write_bfm2009(p, m, v73=v73)
    m2 = load_bfm2009(p)
    np.testing.assert_allclose(m2.mean_shape, m.mean_shape, rtol=1e-6, atol=1e-4)  # um -> mm
    np.testing.assert_allclose(m2.id_std, m.id_std, rtol=1e-6)  # shapeEV are std, /1000
    np.testing.assert_array_equal(m2.triangles, m.triangles)  # 1-based -> 0-based
    np.testing.assert_allclose(m2.albedo_mean, m.albedo_mean, atol=1e-6)  # /255
    np.testing.assert_allclose(m2.albedo_std, m.albedo_std, rtol=1e-6)
    assert m2.n_exp == 0 and m2.landmarks is None
    assert load_model(p).fingerprint == m2.fingerprint
    np.testing.assert_allclose(m2.shape(np.ones(3)), m.shape(np.ones(3)), atol=1e-3)


def test_bfm2009_with_expression_file_and_landmarks(ellipsoid_model, tmp_path):
    m = ellipsoid_model
    p = tmp_path / "bfm09.mat"
    write_bfm2009(p, m)
    emean = np.random.default_rng(0).normal(0, 1000.0, 3 * m.n_vertices)  # um, like the shape
    np.savez(tmp_path / "exp.npz", mean=emean, basis=m.exp_basis, std=m.exp_std * 1000.0)
    m2 = load_bfm2009(p, expression=tmp_path / "exp.npz", landmarks=m.landmarks)
    np.testing.assert_allclose(m2.mean_shape, m.mean_shape + emean.reshape(-1, 3) / 1000.0, atol=1e-3)
    np.testing.assert_allclose(m2.exp_std, m.exp_std, rtol=1e-6)
    np.testing.assert_array_equal(m2.landmarks, m.landmarks)
    scipy.io.savemat(tmp_path / "exp.mat", {"basis": m.exp_basis, "std": m.exp_std[:2] * 1000.0})
    with pytest.raises(ModelFileError, match=r"'std' must have shape \(6,\), got \(1, 2\)"):
        load_bfm2009(p, expression=tmp_path / "exp.mat")


def test_bfm2009_errors(ellipsoid_model, tmp_path):
    m = ellipsoid_model
    p = tmp_path / "bfm09.mat"
    write_bfm2009(p, m, drop=["shapeEV"])
    with pytest.raises(ModelFileError) as e:
        load_bfm2009(p)
    assert _one_line(e) == f"{p}: missing key 'shapeEV'"
    write_bfm2009(p, m, texPC=np.zeros((9, 8)))
    with pytest.raises(ModelFileError) as e:
        load_bfm2009(p)
    assert _one_line(e) == f"{p}: 'texPC' must have shape (1575, *), got (9, 8)"
    write_bfm2009(p, m, tl=np.zeros((4, 3)))  # 0 in a 1-based array -> index -1
    with pytest.raises(ModelFileError, match=r"'tl \(1-based\)' indices must be in \[0, 525\), got \[-1, -1\]"):
        load_bfm2009(p)
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"\x00garbage" * 40)
    with pytest.raises(ModelFileError, match="not a MATLAB .mat file") as e:
        load_bfm2009(junk)
    assert e.value.__cause__ is not None


class _TouchOnUnpickle:
    """Unpickling this creates ``marker``: a stand-in for a pickle that runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_model_files_never_unpickle(ellipsoid_model, tmp_path):
    """Pickles inside an expression .npz or a landmark .npy, and cell (object) arrays in a .mat,
    are refused with one line naming the file; the code in the pickle never runs."""
    m = ellipsoid_model
    p = tmp_path / "bfm09.mat"
    write_bfm2009(p, m)
    marker = tmp_path / "pwned"
    evil = np.empty(1, dtype=object)
    evil[0] = _TouchOnUnpickle(marker)
    np.savez(tmp_path / "exp.npz", mean=np.zeros(3 * m.n_vertices), basis=evil, std=m.exp_std)
    with np.load(tmp_path / "exp.npz", allow_pickle=True) as z:  # the file really runs code when unpickled
        z["basis"]
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ModelFileError) as e:
        load_bfm2009(p, expression=tmp_path / "exp.npz")
    assert _one_line(e).startswith(f"{tmp_path / 'exp.npz'}: cannot read as a plain-array .npz file")
    np.save(tmp_path / "lm.npy", evil)
    with pytest.raises(ModelFileError) as e:
        load_bfm2009(p, landmarks=tmp_path / "lm.npy")
    assert _one_line(e).startswith(f"{tmp_path / 'lm.npy'}: cannot read landmark indices")
    assert not marker.exists()
    cells = np.empty((3 * m.n_vertices, 1), dtype=object)  # a MATLAB cell array: scipy reads it as objects
    cells[:] = [[np.zeros(2)] for _ in range(3 * m.n_vertices)]
    scipy.io.savemat(tmp_path / "exp.mat", {"basis": cells, "std": m.exp_std})
    with pytest.raises(ModelFileError) as e:
        load_bfm2009(p, expression=tmp_path / "exp.mat")
    assert _one_line(e) == f"{tmp_path / 'exp.mat'}: 'basis' must be numeric, got dtype object"
