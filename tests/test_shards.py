"""synth.shards: write/read round trip, the keyed (partial) read, atomic commit."""
import h5py
import numpy as np
import pytest

from synth import shards as sh
from synth.codecs import DEPTH_STEP_MM, DETAIL_STEP_MM
from synth.verify import verify_shard


def test_roundtrip_decodes_design_keys(tiny_model, tmp_path, write_shard):
    path = tmp_path / sh.shard_name(0)
    outs = write_shard(tiny_model, path)
    assert not list(tmp_path.glob(".tmp-*"))
    with sh.ShardReader(path) as r:
        assert len(r) == 3 and r.attrs["model_fingerprint"] == tiny_model.fingerprint and r.attrs["complete"]
        for j, (p, o) in enumerate(outs):
            d = r.read(j)
            m = o.mask
            np.testing.assert_array_equal(d["image"], o.image)
            np.testing.assert_array_equal(d["mask"], m)
            assert d["depth"].dtype == np.float32 and d["depth"].shape == (32, 32)
            np.testing.assert_allclose(d["depth"], o.depth, atol=DEPTH_STEP_MM + DETAIL_STEP_MM)
            np.testing.assert_allclose(d["depth_coarse"], o.depth_coarse, atol=DEPTH_STEP_MM)
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
    assert verify_shard(path).ok


def test_reader_pickles_and_rejects_missing(tiny_model, tmp_path, write_shard):
    import pickle

    path = tmp_path / sh.shard_name(0)
    write_shard(tiny_model, path, n=1, detail=False)
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


@pytest.mark.parametrize("detail", [False, True])
def test_keyed_read_equals_full_decoding_and_reads_only_what_it_needs(tiny_model, tmp_path, write_shard, detail):
    path = tmp_path / sh.shard_name(0)
    write_shard(tiny_model, path, n=2, detail=detail)
    keys = ("image", "mask", "landmarks", "landmarks_visible", "intrinsics", "pose", "index")
    with sh.ShardReader(path) as r:
        full = [r.read(j) for j in range(2)]
    with h5py.File(path, "r+") as f:  # drop every map the keys do not need: the keyed read must not notice
        for name in ("normals", "pncc", "albedo", "depth_detail", "alpha_id"):
            if name in f:
                del f[name]
    with sh.ShardReader(path) as r:
        for j in range(2):
            part = r.read(j, keys=keys)
            assert sorted(part) == sorted(keys)
            for k in keys:
                assert part[k].dtype == full[j][k].dtype
                np.testing.assert_array_equal(part[k], full[j][k])
        assert set(r._columns) == {"landmarks", "landmarks_visible", "intrinsics", "pose", "index"}  # cached once
        with pytest.raises(ValueError, match=r"lacks the datasets \['normals'\]"):
            r.read(0, keys=["normals"])
        with pytest.raises(ValueError, match="unknown key"):
            r.read(0, keys=["colour"])
