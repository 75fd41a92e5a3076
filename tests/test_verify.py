"""synth.verify: corruption and bad values are caught and named, missing shards reported."""
import json

import h5py
import numpy as np

from synth.shards import shard_name
from synth.verify import verify_dir, verify_shard


def _corrupt(path, dataset="image", sample=1):
    """Flip 64 bytes inside the stored chunk of ``dataset`` holding ``sample`` (as a bad disk would)."""
    import hdf5plugin  # noqa: F401

    with h5py.File(path) as f:
        info = f[dataset].id.get_chunk_info_by_coord((sample,) + (0,) * (f[dataset].ndim - 1))
    data = bytearray(path.read_bytes())
    i = info.byte_offset + info.size // 4
    data[i:i + 64] = bytes(255 - b for b in data[i:i + 64])
    path.write_bytes(bytes(data))


def test_verify_catches_corruption_by_name(tiny_model, tmp_path, write_shard):
    good, bad = tmp_path / shard_name(0), tmp_path / shard_name(1)
    write_shard(tiny_model, good, k=0)
    write_shard(tiny_model, bad, k=1)
    _corrupt(bad)
    assert verify_shard(good).ok
    report = verify_shard(bad)
    assert not report.ok and report.name == "shard-00001.h5"
    truncated = tmp_path / "shard-00002.h5"
    truncated.write_bytes(good.read_bytes()[:1000])
    assert not verify_shard(truncated).ok


def test_verify_checks_values(tiny_model, tmp_path, write_shard):
    path = tmp_path / shard_name(0)
    write_shard(tiny_model, path)
    with h5py.File(path, "r+") as f:
        f["sh"][1] = np.full((9, 3), np.nan, np.float32)
        f["index"][2] = 99
        f["specular"][0] = [-0.5, 16.0]  # layout 2: a negative highlight strength
    problems = " ".join(verify_shard(path).problems)
    assert "sample 1: sh has NaN" in problems and "sample 2: index 99" in problems
    assert "sample 0: bad specular (strength, shininess) [-0.5, 16.0]" in problems
    with h5py.File(path, "r+") as f:
        del f["specular"]  # layout 2 without its specular dataset
    assert "missing datasets: specular" in " ".join(verify_shard(path).problems)


def test_verify_dir_reports_missing_shards(tiny_model, tmp_path, write_shard):
    write_shard(tiny_model, tmp_path / shard_name(0), k=0, n_total=6)
    (tmp_path / "dataset.json").write_text(json.dumps({"n_total": 6, "shard_size": 3, "size": 32, "seed": 0,
                                                       "model_fingerprint": tiny_model.fingerprint}))
    reports, problems = verify_dir(tmp_path)
    assert [r.ok for r in reports] == [True]
    assert problems and "shard-00001.h5" in problems[0]


def test_verify_layouts_3_4_check_mask_ids_and_recomputed_maps(tiny_model, tmp_path, write_shard):
    from synth.codecs import row_delta_decode, row_delta_encode

    path = tmp_path / shard_name(0)
    write_shard(tiny_model, path, layout=4)
    assert verify_shard(path, maps=True, model=tiny_model).ok
    with h5py.File(path, "r+") as f:
        ids = row_delta_decode(f["tri_id"][1])
        ids[ids == -1] = 0  # a background pixel now names triangle 0: the mask no longer matches
        f["tri_id"][1] = row_delta_encode(ids)
    assert "sample 1: mask differs from tri_id >= 0" in " ".join(verify_shard(path).problems)
    with h5py.File(path, "r+") as f:
        f["mask"][1] = (row_delta_decode(f["tri_id"][1]) >= 0).astype(np.uint8)  # consistent again
        f["alpha_id"][2] = 1e6  # absurd coefficients: the recomputed maps go wrong, the stored arrays do not
    assert verify_shard(path).ok
    problems = " ".join(verify_shard(path, maps=True, model=tiny_model).problems)
    assert "sample 2:" in problems and "sample 1:" not in problems
    other = tiny_model.replace(mean_shape=np.asarray(tiny_model.mean_shape) + 1.0)
    assert "was rendered with model" in " ".join(verify_shard(path, maps=True, model=other).problems)


def test_verify_layout_6_recomputes_every_samples_ids_and_checks_them(tiny_model, tmp_path, write_shard):
    """Layout 6: verify recomputes each sample's ids with the model (no --maps needed) and names the
    samples whose stored unstable ids, CRC or parameters no longer reproduce the writer's ids, and
    unstable ids off the mask."""
    path = tmp_path / shard_name(0)
    write_shard(tiny_model, path, n=4)
    assert verify_shard(path, model=tiny_model).ok and verify_shard(path, maps=True, model=tiny_model).ok
    good = path.read_bytes()
    with h5py.File(path, "r+") as f:
        crc = f["tri_crc"][...]
        crc[1] ^= 1
        f["tri_crc"][...] = crc
        fix = f["tri_fix"][2]
        on = np.argwhere(f["mask"][2] > 0)[0]
        fix[tuple(on)] = fix[tuple(on)] + 1 if fix[tuple(on)] else 1  # a wrong id where one is stored or none was
        f["tri_fix"][2] = fix
    problems = verify_shard(path, model=tiny_model).problems
    assert [p.split(":")[0] for p in problems] == ["sample 1", "sample 2"]
    assert all("triangle ids recomputed here do not reproduce the writer's" in p for p in problems)
    path.write_bytes(good)
    with h5py.File(path, "r+") as f:
        alpha = f["alpha_id"][...]
        alpha[3] += 3.0  # other parameters: another geometry, other ids
        f["alpha_id"][...] = alpha
        fix = f["tri_fix"][0]
        off = np.argwhere(f["mask"][0] == 0)[0]
        fix[tuple(off)] = 5
        f["tri_fix"][0] = fix
    problems = " ".join(verify_shard(path, model=tiny_model).problems)
    assert "sample 0: tri_fix holds ids off the face mask" in problems and "sample 3:" in problems
    other = tiny_model.replace(mean_shape=np.asarray(tiny_model.mean_shape) + 1.0)
    assert "was rendered with model" in " ".join(verify_shard(path, model=other).problems)


def test_verify_layout_5_checks_the_jpeg_bytes_and_their_ranges(tiny_model, tmp_path, write_shard):
    """Layout 5: a flipped byte in the JPEG data fails its chunk checksum, ranges that do not tile the
    bytes are named, a range holding no JPEG is named."""
    import hdf5plugin  # noqa: F401

    path = tmp_path / shard_name(0)
    write_shard(tiny_model, path, n=3, size=48, layout=5)
    assert verify_shard(path).ok
    good = path.read_bytes()
    with h5py.File(path) as f:
        info = f["image"].id.get_chunk_info(0)
    data = bytearray(good)
    data[info.byte_offset + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    problems = " ".join(verify_shard(path).problems)
    assert "unreadable chunk" in problems
    path.write_bytes(good)
    with h5py.File(path, "r+") as f:
        span = f["image_span"][...]
        f["image_span"][1] = span[1] + 1  # starts one byte late: a gap, and sample 1 no longer a JPEG
    problems = " ".join(verify_shard(path).problems)
    assert "image_span ranges do not tile the image bytes in sample order" in problems
    path.write_bytes(good)
    with h5py.File(path, "r+") as f:
        a, b = f["image_span"][2]
        f["image"][a:a + 4] = np.zeros(4, np.uint8)  # checksums rewritten by h5py: only the decoder sees it
    assert "sample 2: image is not a decodable JPEG" in " ".join(verify_shard(path).problems)
