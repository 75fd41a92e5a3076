"""synth.shards: write/read round trip, the keyed (partial) read, atomic commit."""
import json
import sys

import h5py
import numpy as np
import pytest

from synth import shards as sh
from synth.codecs import DEPTH_STEP_MM, DETAIL_STEP_MM, encode_sample
from synth.color import linear_to_srgb, linear_to_srgb_u8
from synth.verify import verify_shard


@pytest.mark.parametrize("layout", [6, 4, 3])
def test_roundtrip_layouts_3_4_6_recompute_the_maps_bit_for_bit(tiny_model, tmp_path, write_shard, layout):
    """Layout 6 (written: the ids recomputed too), 4 and 3 (read): the same decoded keys, bit for bit."""
    path = tmp_path / sh.shard_name(0)
    outs = write_shard(tiny_model, path, layout=layout)
    assert not list(tmp_path.glob(".tmp-*"))
    with sh.ShardReader(path, model=tiny_model) as r:
        assert r.layout == layout and r.detail
        assert len(r) == 3 and r.attrs["model_fingerprint"] == tiny_model.fingerprint and r.attrs["complete"]
        for j, (p, o) in enumerate(outs):
            d = r.read(j)
            np.testing.assert_array_equal(d["image"], o.image)
            np.testing.assert_array_equal(d["mask"], o.mask)
            np.testing.assert_array_equal(d["tri_id"], o.tri_id)
            # recomputed from the ids, the stored float32 parameters and the model: the renderer's own
            # computation on the same values, so equal bit for bit (no quantisation any more)
            for key in ("depth", "depth_coarse", "normals", "pncc", "albedo"):
                assert d[key].dtype == np.float32
                np.testing.assert_array_equal(d[key], getattr(o, key), err_msg=key)
            np.testing.assert_array_equal(d["landmarks"], o.landmarks)
            np.testing.assert_array_equal(d["landmarks_visible"], o.landmarks_visible)
            for key in ("alpha_id", "alpha_exp", "beta", "sh", "pose", "translation", "intrinsics", "detail_weights"):
                np.testing.assert_array_equal(d[key], getattr(p, key))
                assert d[key].dtype == np.float32
            np.testing.assert_array_equal(d["specular"], np.float32([p.specular_strength, p.shininess]))
            assert d["index"] == j and d["index"].dtype == np.int64
    with h5py.File(path) as f:  # maps: one sample per chunk, checksummed, Zstandard (filter 32015)
        assert f["image"].chunks == (1, 32, 32, 3) and f["image"].fletcher32 and "32015" in f["image"]._filters
        assert f["mask"].dtype == np.uint8
        assert ("rct_encode" in f["image"].attrs["encoding"]) == (layout >= 4)
        if layout == 6:  # no id image: the ids of the unstable pixels and the CRC of all of them
            assert "tri_id" not in f and f["tri_fix"].dtype == np.uint32 and f["tri_crc"].dtype == np.uint32
            assert f["tri_fix"].chunks == (1, 32, 32) and f["tri_crc"].shape == (3,)
            fix = f["tri_fix"][...]
            assert ((fix > 0) <= f["mask"][...].astype(bool)).all()  # on the face only
            assert (fix > 0).mean() < 0.2  # a few pixels near edges, not the ids again
        else:
            assert f["tri_id"].dtype == (np.uint32 if layout == 4 else np.int32)
            assert ("row_delta_encode" in f["tri_id"].attrs["encoding"]) == (layout == 4)
        assert not {"depth", "depth_coarse", "normals", "pncc", "albedo"} & set(f)
        assert f["alpha_id"].chunks == (3, tiny_model.n_id)  # small arrays: one chunk, read whole
    assert verify_shard(path).ok


@pytest.mark.parametrize("jpeg, lossless", [(7, 6), (5, 4)])
def test_jpeg_layouts_store_the_image_as_jpeg_and_everything_else_as_their_lossless_twin(
        tiny_model, tmp_path, write_shard, jpeg, lossless):
    """Layouts 7 and 5: the JPEG bytes of all samples back to back in one checksummed dataset, each
    sample's range in image_span; the image decodes within the JPEG error, every other key as layout
    6 / 4 (bit for bit); a keyed read of the image reads its bytes only; verify passes."""
    five, four = tmp_path / "five" / sh.shard_name(0), tmp_path / "four" / sh.shard_name(0)
    five.parent.mkdir()
    four.parent.mkdir()
    outs = write_shard(tiny_model, five, n=4, size=48, layout=jpeg)
    write_shard(tiny_model, four, n=4, size=48, layout=lossless)
    with h5py.File(five) as f:
        span = f["image_span"][...]
        assert f["image"].ndim == 1 and f["image"].dtype == np.uint8 and f["image"].fletcher32
        assert span[0, 0] == 0 and np.array_equal(span[1:, 0], span[:-1, 1]) and span[-1, 1] == f["image"].shape[0]
        assert all(bytes(f["image"][a:a + 2]) == b"\xff\xd8" for a in span[:, 0])  # each a JPEG
        assert (f.attrs["image_codec"], f.attrs["image_quality"], f.attrs["layout_version"]) == ("jpeg", 95, jpeg)
        assert "JPEG" in f["image"].attrs["encoding"] and "JPEG" in json.loads(f.attrs["keys"])["image"]["encoding"]
    with sh.ShardReader(five, model=tiny_model) as r5, sh.ShardReader(four, model=tiny_model) as r4:
        assert r5.layout == jpeg
        for j, (p, o) in enumerate(outs):
            d5, d4 = r5.read(j), r4.read(j)
            assert d5.keys() == d4.keys()
            for key in d5:
                if key != "image":
                    np.testing.assert_array_equal(d5[key], d4[key], err_msg=key)
            np.testing.assert_array_equal(d4["image"], o.image)
            err = d5["image"].astype(np.float64) - o.image
            assert d5["image"].dtype == np.uint8 and 0 < np.sqrt(np.mean(err ** 2)) < 6.0
            with sh.ShardReader(five) as fresh:  # the keyed image read: its range, then its bytes
                np.testing.assert_array_equal(fresh.read(j, keys=("image",))["image"], d5["image"])
                assert set(fresh._columns) == {"image_span"} and set(fresh._maps) == {"image"}
        got = r5.read_many([3, 0, 2], keys=("image", "depth"))
        for j, g in zip([3, 0, 2], got):
            np.testing.assert_array_equal(g["image"], r5.read(j)["image"])
    assert verify_shard(five).ok and verify_shard(five, maps=True, model=tiny_model).ok
    with pytest.raises(ValueError, match=f"layout {jpeg} stores the image as JPEG: pass image_quality"):
        encode_sample(*outs[0], layout=jpeg)
    with pytest.raises(ValueError, match=r"--jpeg-quality must be an integer in \[1, 100\], got 101"):
        sh.ShardWriter(tmp_path / "x.h5", 1, 8, {}, False, {}, layout=jpeg, image_quality=101)
    with pytest.raises(ValueError, match=r"layout must be one of \(2, 3, 4, 5, 6, 7\)"):
        sh.ShardWriter(tmp_path / "x.h5", 1, 8, {}, False, {}, layout=8)


def test_layout_3_maps_are_recomputed_with_the_shards_own_detail_bank(tiny_model, tmp_path, write_shard):
    """A shard records the detail bank it was rendered with; one written before the attribute existed
    (bank 1) still reads back bit for bit, and the current bank is recorded by the writer itself."""
    from synth.detail import BANK_VERSION

    old, new = tmp_path / "old" / sh.shard_name(0), tmp_path / "new" / sh.shard_name(0)
    old.parent.mkdir()
    new.parent.mkdir()
    outs_old = write_shard(tiny_model, old, detail_version=1)
    with h5py.File(old, "r+") as f:  # as written before the attribute existed
        assert int(f.attrs["detail_bank_version"]) == 1
        del f.attrs["detail_bank_version"]
    outs_new = write_shard(tiny_model, new)
    with sh.ShardReader(old, model=tiny_model) as r_old, sh.ShardReader(new, model=tiny_model) as r_new:
        assert r_old.detail_bank_version == 1 and r_new.detail_bank_version == BANK_VERSION == 2
        for j in range(3):
            for r, outs in ((r_old, outs_old), (r_new, outs_new)):
                d = r.read(j, keys=("depth", "normals"))
                np.testing.assert_array_equal(d["depth"], outs[j][1].depth)
                np.testing.assert_array_equal(d["normals"], outs[j][1].normals)
        # the two banks differ, so reading with the wrong one would not go unnoticed
        assert not np.array_equal(outs_old[0][1].depth, outs_new[0][1].depth)


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_layout_2_shards_still_read_at_their_precision(tiny_model, tmp_path, write_shard, compression):
    path = tmp_path / sh.shard_name(0)
    outs = write_shard(tiny_model, path, layout=2, compression=compression)
    with sh.ShardReader(path) as r:
        assert r.layout == 2
        for j, (p, o) in enumerate(outs):
            d = r.read(j)
            m = o.mask
            np.testing.assert_array_equal(d["image"], o.image)
            np.testing.assert_array_equal(d["mask"], m)
            np.testing.assert_allclose(d["depth"], o.depth, atol=DEPTH_STEP_MM + DETAIL_STEP_MM)
            np.testing.assert_allclose(d["depth_coarse"], o.depth_coarse, atol=DEPTH_STEP_MM)
            np.testing.assert_allclose(d["pncc"], o.pncc, atol=0.5 / 255 + 1e-6)
            # albedo: linear, stored sRGB-encoded in 8 bits (half a step in sRGB)
            np.testing.assert_allclose(linear_to_srgb(d["albedo"]), linear_to_srgb(o.albedo), atol=0.5 / 255 + 1e-6)
            assert np.degrees(np.arccos(np.clip((d["normals"][m] * o.normals[m]).sum(-1), -1, 1))).max() < 1.0
            assert np.all(d["normals"][~m] == 0)
            np.testing.assert_array_equal(d["specular"], np.float32([p.specular_strength, p.shininess]))
            with pytest.raises(ValueError, match="'tri_id' is stored from shard layout 3 on"):
                r.read(j, keys=["tri_id"])
    with h5py.File(path) as f:
        assert f["image"].compression == compression and f["depth_coarse"].dtype == np.uint16
    assert verify_shard(path).ok


@pytest.mark.parametrize("layout", [6, 4])
def test_maps_need_the_shards_model(tiny_model, tmp_path, write_shard, layout):
    """The maps (and from layout 6 the ids) are recomputed with the shard's model: another model is
    refused, and one the reader cannot load is named; the other keys need no model."""
    path = tmp_path / sh.shard_name(0)
    write_shard(tiny_model, path, n=1, layout=layout)
    other = tiny_model.replace(mean_shape=np.asarray(tiny_model.mean_shape) + 1.0)
    with pytest.raises(ValueError, match="was rendered with model"):
        sh.ShardReader(path, model=other)
    with sh.ShardReader(path, model=tiny_model) as r:
        ids = r.read(0, keys=["tri_id"])["tri_id"]
    with h5py.File(path, "r+") as f:
        f.attrs["model_source"] = "/data/bfm2017.h5"
    with sh.ShardReader(path) as r:
        np.testing.assert_array_equal(r.read(0, keys=["mask"])["mask"], ids >= 0)
        needs_model = ["depth", "tri_id"] if layout >= 6 else ["depth"]
        if layout < 6:
            np.testing.assert_array_equal(r.read(0, keys=["tri_id"])["tri_id"], ids)
        for key in needs_model:
            with pytest.raises(ValueError, match=r"/data/bfm2017\.h5.*ShardReader\(path, model=\.\.\.\)") \
                    as e:
                r.read(0, keys=[key])
            assert "\n" not in str(e.value)


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
    with sh.ShardReader(path, model=tiny_model) as r:
        full = [r.read(j) for j in range(2)]
    with h5py.File(path, "r+") as f:  # drop every map the keys do not need: the keyed read must not notice
        dropped = [name for name in ("tri_id", "tri_fix", "alpha_id") if name in f]
        for name in dropped:
            del f[name]
    with sh.ShardReader(path, model=tiny_model) as r:
        for j in range(2):
            part = r.read(j, keys=keys)
            assert sorted(part) == sorted(keys)
            for k in keys:
                assert part[k].dtype == full[j][k].dtype
                np.testing.assert_array_equal(part[k], full[j][k])
        assert set(r._columns) == {"landmarks", "landmarks_visible", "intrinsics", "pose", "index"}  # cached once
        assert dropped == ["tri_fix", "alpha_id"]  # layout 6
        with pytest.raises(ValueError, match=r"lacks the datasets \['tri_fix', 'alpha_id'\] \(needed for keys \['normals'\]\)"):
            r.read(0, keys=["normals"])
        with pytest.raises(ValueError, match=r"lacks the datasets \['tri_fix', 'alpha_id'\] \(needed for keys \['tri_id'\]\)"):
            r.read(0, keys=["tri_id"])
        with pytest.raises(ValueError, match="unknown key"):
            r.read(0, keys=["colour"])


def test_read_many_equals_read_bit_for_bit(tiny_model, tmp_path, write_shard):
    """read_many evaluates the model once per GEOMETRY_BATCH samples (layout-3 maps): the same bits
    as read, in any order, with repeats, across more than one group, for any keys."""
    from synth.render import GEOMETRY_BATCH

    path = tmp_path / sh.shard_name(0)
    write_shard(tiny_model, path, n=40)
    order = [39, 3, 3, 0, 7, 38] + [j for j in range(1, 38) if j not in (3, 7)]
    assert GEOMETRY_BATCH < len(order) <= 2 * GEOMETRY_BATCH  # two groups
    with sh.ShardReader(path, model=tiny_model) as r:
        for keys in (None, ("image", "depth", "depth_coarse", "albedo", "mask"), ("normals",), ("image", "pose")):
            want = [r.read(j, keys) for j in order]
            got = r.read_many(order, keys)
            assert len(got) == len(want)
            for w, g in zip(want, got):
                assert w.keys() == g.keys()
                for k in w:
                    assert g[k].dtype == w[k].dtype
                    np.testing.assert_array_equal(g[k], w[k], err_msg=str((keys, k)))
        assert r.read_many([], ("depth",)) == []
    # across shards (a training batch draws from many): one model evaluation for both, same bits
    other = tmp_path / sh.shard_name(1)
    write_shard(tiny_model, other, n=3, k=1)
    keys = ("depth", "albedo", "index")
    with sh.ShardReader(path, model=tiny_model) as a, sh.ShardReader(other, model=tiny_model) as b:
        requests = [(b, 2), (a, 5), (b, 0), (a, 19)]
        for (reader, j), got in zip(requests, sh.read_samples(requests, keys)):
            want = reader.read(j, keys)
            for k in keys:
                np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_stored_image_is_the_srgb_encoded_shading_of_the_stored_maps(tiny_model, tmp_path, write_shard):
    """On face pixels, image = linear_to_srgb(clip(albedo * shading + specular)) recomputed from the
    stored maps and parameters alone (normals, albedo, sh, intrinsics, specular), crease darkening
    off (it multiplies the shading: tests/test_render.py)."""
    from synth.lighting import blinn_phong, dominant_light, sh_basis, view_directions

    path = tmp_path / sh.shard_name(0)
    outs = write_shard(tiny_model, path, n=3, size=48, cavity=0.0)
    assert any(p.specular_strength > 0.1 for p, _ in outs)
    c = np.arange(48) + 0.5
    grid = np.stack(np.meshgrid(c, c), axis=-1)  # (48, 48, 2) pixel centres
    with sh.ShardReader(path, model=tiny_model) as r:
        for j, (p, o) in enumerate(outs):
            d = r.read(j)
            m = d["mask"] & ~_occluded(p, 48)
            n, alb = d["normals"][m].astype(np.float64), d["albedo"][m].astype(np.float64)
            lin = alb * (sh_basis(n) @ d["sh"].astype(np.float64))
            light_dir, light_color = dominant_light(d["sh"].astype(np.float64))
            strength, shininess = (float(x) for x in d["specular"])
            lin += blinn_phong(n, view_directions(grid[m], d["intrinsics"].astype(np.float64)), light_dir, light_color,
                               strength, shininess)
            err = np.abs(linear_to_srgb_u8(np.clip(lin, 0, 1)).astype(int) - d["image"][m])
            # layout 3: the maps are the renderer's float32 values (no quantisation); float64 here vs
            # float32 in the renderer moves a value across a rounding boundary at most by one level
            assert err.max() <= 1 and np.mean(err == 0) > 0.99, (j, err.max())


def _occluded(params, size):
    """Pixels the sample's occluders paint over (occluders change the image, not the maps)."""
    import dataclasses

    from synth.backgrounds import paint_occluders

    img = np.zeros((size, size, 3), np.float32)
    paint_occluders(img, [dataclasses.replace(o, texture_seed=None, color=np.ones(3)) for o in params.occluders])
    return img[..., 0] > 0


def _as_layout_1(path):
    """Rewrite a layout-2 shard as layout 1 wrote it: linear image and albedo, no specular."""  # noqa
    from synth.codecs import delta2d_decode, delta2d_encode
    from synth.color import srgb_to_linear

    with h5py.File(path, "r+") as f:
        f.attrs["layout_version"] = 1
        for i in range(f["image"].shape[0]):
            srgb = delta2d_decode(f["image"][i])
            f["image"][i] = delta2d_encode(np.round(srgb_to_linear(srgb / 255.0) * 255).astype(np.uint8))
            f["albedo"][i] = np.round(srgb_to_linear(f["albedo"][i] / 255.0) * 255).astype(np.uint8)
        del f["specular"]


def test_layout_1_shards_read_with_the_image_encoded_to_srgb(tiny_model, tmp_path, write_shard):
    from synth.codecs import delta2d_decode

    path = tmp_path / sh.shard_name(0)
    write_shard(tiny_model, path, n=2, detail=False, layout=2)
    _as_layout_1(path)
    with h5py.File(path) as f:
        stored_image, stored_albedo = delta2d_decode(f["image"][1]), f["albedo"][1]
    with sh.ShardReader(path) as r:
        assert r.layout == 1
        d = r.read(1)
        np.testing.assert_array_equal(d["image"], linear_to_srgb_u8(stored_image / 255.0))  # encoded on read
        np.testing.assert_array_equal(d["albedo"], stored_albedo.astype(np.float32) / 255)  # linear as stored
        np.testing.assert_array_equal(d["specular"], [0, 0])  # layout 1 had no highlight
        keyed = r.read(1, keys=("image", "specular", "mask"))
        np.testing.assert_array_equal(keyed["image"], d["image"])
        np.testing.assert_array_equal(keyed["specular"], [0, 0])
    assert verify_shard(path).ok


def test_unknown_layout_is_refused_in_one_line(tiny_model, tmp_path, write_shard):
    path = tmp_path / sh.shard_name(0)
    write_shard(tiny_model, path, n=1, detail=False)
    with h5py.File(path, "r+") as f:
        f.attrs["layout_version"] = 8
    with pytest.raises(ValueError, match=r"shard-00000\.h5.* has layout_version 8; this reader needs one of 1, 2, 3, 4") as e:
        sh.ShardReader(path)
    assert "\n" not in str(e.value)
    assert any("layout_version 8" in p for p in verify_shard(path).problems)


def test_layout_6_ids_survive_a_reader_whose_geometry_moves_within_the_tolerance(tiny_model, tmp_path, write_shard,
                                                                                 monkeypatch):
    """A reader on another machine (model arrays and rounding an ulp apart) rasterizes slightly moved
    corners: below the writer's tolerance the ids (and maps) still come back bit for bit; far above it
    the read fails with a clear error instead of returning other ids."""
    from synth import kernels, render
    from synth.codecs import IdsMismatchError

    path = tmp_path / sh.shard_name(0)
    outs = write_shard(tiny_model, path, n=6, size=96)
    rasterize = kernels.rasterize
    rng = np.random.default_rng(0)
    move = {"px": 0.0, "changed": 0}

    def moved(uv, d, *args, **kw):
        ids = rasterize(uv + rng.uniform(-move["px"], move["px"], uv.shape), d, *args, **kw)
        move["changed"] += int((ids != rasterize(uv, d, *args, **kw)).sum())
        return ids

    monkeypatch.setattr(render.kernels, "rasterize", moved)
    for px in (0.0, 5e-4):  # |move| < UNSTABLE_EPS_PX = 1e-3
        move["px"] = px
        sh._RENDERERS.clear()
        with sh.ShardReader(path, model=tiny_model) as r:
            for j, (p, o) in enumerate(outs):
                np.testing.assert_array_equal(r.read(j, keys=("tri_id",))["tri_id"], o.tri_id)
                np.testing.assert_array_equal(r.read(j, keys=("depth",))["depth"], o.depth)
    assert move["changed"] > 0  # the moved corners did change some of the recomputed ids
    move["px"] = 0.3
    with sh.ShardReader(path, model=tiny_model) as r:
        with pytest.raises(IdsMismatchError, match=r"sample \d: the triangle ids recomputed here do not reproduce "
                                                   r"the writer's") as e:
            for j in range(len(outs)):
                r.read(j, keys=("tri_id",))
    assert "\n" not in str(e.value)


def test_layout_6_from_an_opengl_id_pass_reads_back_the_gl_ids(tiny_model, tmp_path):
    """Ids drawn by OpenGL (another edge rule than the CPU rasterizer the reader uses): the pixels where
    the two differ are stored, so the reader gets the GL ids bit for bit."""
    from synth.codecs import encode_sample
    from synth.render import FaceRenderer
    from synth.sampling import SamplingConfig, sample_params

    size, n = 48, 3
    dims = {"alpha_id": tiny_model.n_id, "alpha_exp": tiny_model.n_exp, "beta": tiny_model.n_albedo, "detail_weights": 16}
    attrs = {"model_fingerprint": tiny_model.fingerprint, "model_source": tiny_model.source, "projection": "perspective",
             "size": size, "seed": 0, "shard_index": 0, "shard_size": n, "n_total": n}
    path = tmp_path / sh.shard_name(0)
    outs = []
    with FaceRenderer(tiny_model, size, platform="osmesa") as gl, FaceRenderer(tiny_model, size) as cpu, \
            sh.ShardWriter(path, n, size, dims, True, attrs) as w:
        for j in range(n):
            p = sample_params(tiny_model, SamplingConfig(), size, 0, j)
            o = gl.render(p, maps=False, stable=True)
            differ = o.tri_id != cpu.render(p, maps=False).tri_id
            assert not (differ & ~o.tri_unstable).any()
            outs.append((o, differ.sum()))
            w.write(j, encode_sample(p, o))
        w.commit()
    assert sum(d for _, d in outs) > 0  # OpenGL did draw some pixels differently (llvmpipe: 1-4 of each render)
    with sh.ShardReader(path, model=tiny_model) as r:
        for j, (o, _) in enumerate(outs):
            np.testing.assert_array_equal(r.read(j, keys=("tri_id",))["tri_id"], o.tri_id)


def test_gzip_shards_need_no_hdf5plugin_and_zstd_ones_say_what_is_missing(tiny_model, tmp_path, write_shard,
                                                                         monkeypatch):
    """A machine without hdf5plugin (a lent GPU machine, say) reads and writes gzip shards; a
    Zstandard shard there is a one-line error naming the package, from the reader and from verify."""
    from synth.dataset import DatasetConfig

    gz, zs = tmp_path / "gz" / sh.shard_name(0), tmp_path / "zs" / sh.shard_name(0)
    gz.parent.mkdir()
    zs.parent.mkdir()
    write_shard(tiny_model, zs, n=2)
    # HDF5 without the Zstandard filter (the filter of hdf5plugin, once imported, cannot be unregistered)
    monkeypatch.setattr(h5py.h5z, "filter_avail", lambda fid: fid != sh.ZSTD_FILTER)
    monkeypatch.setitem(sys.modules, "hdf5plugin", None)  # `import hdf5plugin` raises ImportError
    outs = write_shard(tiny_model, gz, n=2, compression="gzip")  # written without it
    with sh.ShardReader(gz, model=tiny_model) as r:
        np.testing.assert_array_equal(r.read(1)["image"], outs[1][1].image)
    assert verify_shard(gz).ok
    with pytest.raises(ValueError, match=r"shard .*shard-00000.h5.*Zstandard.*pip install hdf5plugin"):
        sh.ShardReader(zs)
    report = verify_shard(zs)
    assert not report.ok and "pip install hdf5plugin" in report.problems[0]
    with pytest.raises(ValueError, match="--compression zstd .* needs the package hdf5plugin"):
        DatasetConfig(out=str(tmp_path / "d"), n=4)
    DatasetConfig(out=str(tmp_path / "d"), n=4, compression="gzip")  # fine without it
    (tmp_path / "zs2").mkdir()
    with pytest.raises(ValueError, match="--compression zstd needs the package hdf5plugin"):
        write_shard(tiny_model, tmp_path / "zs2" / sh.shard_name(0), n=1)
    assert not list((tmp_path / "zs2").glob("*"))  # no temporary file left behind
