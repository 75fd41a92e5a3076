"""synth.shards: encodings, write/read round trip, atomic commit, verify catching corruption."""
import json

import h5py
import numpy as np
import pytest

from synth import shards as sh
from synth.render import FaceRenderer
from synth.sampling import SamplingConfig, sample_params


def test_octahedral_roundtrip_error_below_one_degree():
    v = np.random.default_rng(0).standard_normal((5000, 3))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    back = sh.octahedral_decode(sh.octahedral_encode(v))
    angle = np.degrees(np.arccos(np.clip((back * v).sum(-1), -1, 1)))
    assert angle.max() < 1.0  # int8 octahedral: worst case ~0.6 degrees
    np.testing.assert_allclose(np.linalg.norm(back, axis=-1), 1, atol=1e-6)


def test_octahedral_encode_golden_values_and_zero_vectors():
    """Hand-computed codes: axes, a lower-hemisphere fold, zero vectors, any leading shape."""
    v = np.array([[[0, 0, 1], [1, 0, 0], [0, -1, 0], [0, 0, -1]],
                  [[0.6, 0, -0.8], [0, 0, 0], [-1, 1, 1], [0.5, -0.25, -0.25]]], np.float32)
    e = sh.octahedral_encode(v)
    assert e.dtype == np.int8 and e.shape == (2, 4, 2)
    # z >= 0: (x, y) / |v|_1 * 127; z < 0: ((1 - |y'|) sign x', (1 - |x'|) sign y')
    # e.g. (0.6, 0, -0.8): x' = 0.6 / 1.4, y' = 0 -> (1, 1 - 3/7) * 127 = (127, 72.6); 63.5 rounds to even
    expected = [[[0, 0], [127, 0], [0, -127], [127, 127]],
                [[127, 73], [0, 0], [-42, 42], [95, -64]]]
    np.testing.assert_array_equal(e, expected)


def test_depth_quantisation_error_half_a_step():
    d = np.zeros((10, 10), np.float32)
    d[2:8, 2:8] = np.random.default_rng(1).uniform(250, 400, (6, 6))
    q, off, step = sh.encode_depth(d)
    back = sh.decode_depth(q, off, step)
    assert np.all((q > 0) == (d > 0)) and np.all(back[d == 0] == 0)
    assert np.abs(back - d).max() <= step / 2 + 1e-4 and step == sh.DEPTH_STEP_MM


def _write_shard(model, path, n=3, size=32, detail=True, k=0, n_total=None):
    cfg = SamplingConfig(detail=detail)
    attrs = {"model_fingerprint": model.fingerprint, "model_source": model.source, "projection": "perspective",
             "size": size, "seed": 0, "shard_index": k, "shard_size": n, "n_total": n_total or n * (k + 1),
             "start_index": k * n, "generator_config": json.dumps(cfg.to_dict())}
    dims = {"alpha_id": model.n_id, "alpha_exp": model.n_exp, "beta": model.n_albedo, "detail_weights": 16}
    outs = []
    with FaceRenderer(model, size) as r, sh.ShardWriter(path, n, size, dims, detail, attrs) as w:
        for j in range(n):
            p = sample_params(model, cfg, size, 0, k * n + j)
            o = r.render(p)
            w.write(j, sh.encode_sample(p, o))
            outs.append((p, o))
        w.commit()
    return outs


def test_roundtrip_decodes_design_keys(tiny_model, tmp_path):
    path = tmp_path / sh.shard_name(0)
    outs = _write_shard(tiny_model, path)
    assert not list(tmp_path.glob(".tmp-*"))
    with sh.ShardReader(path) as r:
        assert len(r) == 3 and r.attrs["model_fingerprint"] == tiny_model.fingerprint and r.attrs["complete"]
        for j, (p, o) in enumerate(outs):
            d = r.read(j)
            m = o.mask
            np.testing.assert_array_equal(d["image"], o.image)
            np.testing.assert_array_equal(d["mask"], m)
            assert d["depth"].dtype == np.float32 and d["depth"].shape == (32, 32)
            np.testing.assert_allclose(d["depth"], o.depth, atol=sh.DEPTH_STEP_MM + sh.DETAIL_STEP_MM)
            np.testing.assert_allclose(d["depth_coarse"], o.depth_coarse, atol=sh.DEPTH_STEP_MM)
            np.testing.assert_allclose(d["pncc"], o.pncc, atol=0.5 / 255 + 1e-6)
            np.testing.assert_allclose(d["albedo"], o.albedo, atol=0.5 / 255 + 1e-6)
            assert np.degrees(np.arccos(np.clip((d["normals"][m] * o.normals[m]).sum(-1), -1, 1))).max() < 1.0
            assert np.all(d["normals"][~m] == 0)
            np.testing.assert_array_equal(d["landmarks"], o.landmarks)
            np.testing.assert_array_equal(d["landmarks_visible"], o.landmarks_visible)
            for key in ("alpha_id", "alpha_exp", "beta", "sh", "pose", "translation", "intrinsics"):
                np.testing.assert_array_equal(d[key], getattr(p, key))
                assert d[key].dtype == np.float32
            assert d["index"] == j and d["index"].dtype == np.int64
    with h5py.File(path) as f:  # one sample per chunk, checksummed, compressed maps
        assert f["image"].chunks == (1, 32, 32, 3) and f["image"].fletcher32 and f["image"].compression == "gzip"
        assert f["depth_coarse"].dtype == np.uint16 and f["normals"].dtype == np.int8 and "depth" not in f
    assert sh.verify_shard(path).ok


def test_reader_pickles_and_rejects_missing(tiny_model, tmp_path):
    import pickle

    path = tmp_path / sh.shard_name(0)
    _write_shard(tiny_model, path, n=1, detail=False)
    r = sh.ShardReader(path)
    r.read(0)
    r2 = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(r2.read(0)["image"], r.read(0)["image"])
    assert "depth_coarse" not in r.read(0)
    with pytest.raises(IndexError):
        r.read(5)
    with pytest.raises(ValueError, match="does not exist"):
        sh.ShardReader(tmp_path / "nope.h5")


def test_writer_aborts_without_commit(tiny_model, tmp_path):
    path = tmp_path / sh.shard_name(0)
    attrs = {"shard_index": 0}
    dims = {"alpha_id": 1, "alpha_exp": 1, "beta": 1, "detail_weights": 16}
    with pytest.raises(RuntimeError):
        with sh.ShardWriter(path, 2, 16, dims, False, attrs):
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="never written"):
        with sh.ShardWriter(path, 2, 16, dims, False, attrs) as w:
            w.commit()
    assert not path.exists()


def _corrupt(path, offset_fraction=0.5):
    data = bytearray(path.read_bytes())
    i = int(len(data) * offset_fraction)
    data[i:i + 64] = bytes(255 - b for b in data[i:i + 64])
    path.write_bytes(bytes(data))


def test_verify_catches_corruption_by_name(tiny_model, tmp_path):
    good, bad = tmp_path / sh.shard_name(0), tmp_path / sh.shard_name(1)
    _write_shard(tiny_model, good, k=0)
    _write_shard(tiny_model, bad, k=1)
    _corrupt(bad)
    assert sh.verify_shard(good).ok
    report = sh.verify_shard(bad)
    assert not report.ok and report.name == "shard-00001.h5"
    truncated = tmp_path / "shard-00002.h5"
    truncated.write_bytes(good.read_bytes()[:1000])
    assert not sh.verify_shard(truncated).ok


def test_verify_checks_values(tiny_model, tmp_path):
    path = tmp_path / sh.shard_name(0)
    _write_shard(tiny_model, path)
    with h5py.File(path, "r+") as f:
        f["sh"][1] = np.full((9, 3), np.nan, np.float32)
        f["index"][2] = 99
    problems = " ".join(sh.verify_shard(path).problems)
    assert "sample 1: sh has NaN" in problems and "sample 2: index 99" in problems


def test_verify_dir_reports_missing_shards(tiny_model, tmp_path):
    _write_shard(tiny_model, tmp_path / sh.shard_name(0), k=0, n_total=6)
    (tmp_path / "dataset.json").write_text(json.dumps({"n_total": 6, "shard_size": 3, "size": 32, "seed": 0,
                                                       "model_fingerprint": tiny_model.fingerprint}))
    reports, problems = sh.verify_dir(tmp_path)
    assert [r.ok for r in reports] == [True]
    assert problems and "shard-00001.h5" in problems[0]
