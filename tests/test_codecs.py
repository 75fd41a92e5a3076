"""synth.codecs: octahedral normals, depth quantisation, 2-D difference coding, (partial) sample decoding."""
import numpy as np
import pytest

from synth import codecs


def test_octahedral_roundtrip_error_below_one_degree():
    v = np.random.default_rng(0).standard_normal((5000, 3))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    back = codecs.octahedral_decode(codecs.octahedral_encode(v))
    angle = np.degrees(np.arccos(np.clip((back * v).sum(-1), -1, 1)))
    assert angle.max() < 1.0  # int8 octahedral: worst case ~0.6 degrees
    np.testing.assert_allclose(np.linalg.norm(back, axis=-1), 1, atol=1e-6)


def test_octahedral_encode_golden_values_and_zero_vectors():
    """Hand-computed codes: axes, a lower-hemisphere fold, zero vectors, any leading shape."""
    v = np.array([[[0, 0, 1], [1, 0, 0], [0, -1, 0], [0, 0, -1]],
                  [[0.6, 0, -0.8], [0, 0, 0], [-1, 1, 1], [0.5, -0.25, -0.25]]], np.float32)
    e = codecs.octahedral_encode(v)
    assert e.dtype == np.int8 and e.shape == (2, 4, 2)
    # z >= 0: (x, y) / |v|_1 * 127; z < 0: ((1 - |y'|) sign x', (1 - |x'|) sign y')
    # e.g. (0.6, 0, -0.8): x' = 0.6 / 1.4, y' = 0 -> (1, 1 - 3/7) * 127 = (127, 72.6); 63.5 rounds to even
    expected = [[[0, 0], [127, 0], [0, -127], [127, 127]],
                [[127, 73], [0, 0], [-42, 42], [95, -64]]]
    np.testing.assert_array_equal(e, expected)


def test_depth_quantisation_error_half_a_step():
    d = np.zeros((10, 10), np.float32)
    d[2:8, 2:8] = np.random.default_rng(1).uniform(250, 400, (6, 6))
    q, off, step = codecs.encode_depth(d)
    back = codecs.decode_depth(q, off, step)
    assert np.all((q > 0) == (d > 0)) and np.all(back[d == 0] == 0)
    assert np.abs(back - d).max() <= step / 2 + 1e-4 and step == codecs.DEPTH_STEP_MM


def test_delta2d_roundtrip_is_exact_with_wrapping():
    rng = np.random.default_rng(2)
    for dtype in (np.uint8, np.int8, np.uint16, np.int16):
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, (7, 9, 2), endpoint=True).astype(dtype)  # extremes wrap
        d = codecs.delta2d_encode(a)
        assert d.dtype == dtype
        np.testing.assert_array_equal(codecs.delta2d_decode(d), a)
    smooth = np.add.outer(np.arange(20), np.arange(30)).astype(np.uint16) + 1000  # a plane
    d = codecs.delta2d_encode(smooth)
    assert np.count_nonzero(d) == 20 + 30 - 1  # first row and column only


def _sample(detail: bool, rng, layout: int = 2):
    """Stored arrays of a random 8x8 sample as encode_sample makes them (fields the decoder reads)."""
    from types import SimpleNamespace

    mask = np.zeros((8, 8), bool)
    mask[2:6, 1:7] = True
    depth = np.where(mask, rng.uniform(200, 260, (8, 8)), 0).astype(np.float32)
    normals = rng.normal(size=(8, 8, 3))
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    out = SimpleNamespace(image=rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), depth=depth, mask=mask,
                          depth_coarse=(depth + np.where(mask, 0.3, 0)).astype(np.float32) if detail else None,
                          normals=np.where(mask[..., None], normals, 0), pncc=rng.uniform(0, 1, (8, 8, 3)),
                          albedo=rng.uniform(0, 1, (8, 8, 3)), landmarks=rng.uniform(0, 8, (68, 2)),
                          landmarks_visible=rng.uniform(size=68) > 0.5,
                          tri_id=np.where(mask, rng.integers(0, 5000, (8, 8)), -1))
    params = SimpleNamespace(alpha_id=rng.normal(size=5), alpha_exp=rng.normal(size=3), beta=rng.normal(size=4),
                             sh=rng.normal(size=(9, 3)), pose=rng.normal(size=3), translation=rng.normal(size=3),
                             intrinsics=np.eye(3), index=7, detail_weights=rng.uniform(size=16) if detail else None,
                             specular_strength=0.3, shininess=20.0)
    return codecs.encode_sample(params, out, layout=layout), out


@pytest.mark.parametrize("detail", [False, True])
def test_decode_sample_subsets_equal_the_full_decoding(detail):
    raw, out = _sample(detail, np.random.default_rng(3))
    full = codecs.decode_sample(raw, layout=2)
    assert ("depth_coarse" in full) == detail and ("detail_weights" in full) == detail
    np.testing.assert_array_equal(full["mask"], out.mask)
    np.testing.assert_array_equal(full["image"], out.image)
    for keys in (["image", "mask"], ["depth"], ["normals", "index"], ["pncc", "landmarks_visible", "pose"],
                 ["mask"] + (["depth_coarse"] if detail else [])):
        need = codecs.stored_for(keys, detail, layout=2)
        part = codecs.decode_sample({k: raw[k] for k in need}, keys, layout=2)  # only the stored datasets named
        assert sorted(part) == sorted(keys)
        for k in keys:
            assert part[k].dtype == full[k].dtype
            np.testing.assert_array_equal(part[k], full[k])


@pytest.mark.parametrize("layout", [3, 4])
@pytest.mark.parametrize("detail", [False, True])
def test_layouts_3_4_decode_ids_and_ask_the_surface_for_the_maps(detail, layout):
    from types import SimpleNamespace

    raw, out = _sample(detail, np.random.default_rng(4), layout=layout)
    assert {"tri_id", "mask"} <= set(raw) and not {"depth", "normals", "pncc", "albedo", "depth_offset"} & set(raw)
    calls = []

    def surface(r, tri):  # stands for ShardReader's recomputation from the ids, parameters and model
        calls.append(tri)
        return SimpleNamespace(depth=np.full((8, 8), 1.5, np.float32), depth_coarse=None, normals=None, pncc=None,
                               albedo=np.zeros((8, 8, 3), np.float32))

    full = codecs.decode_sample(raw, layout=layout)  # without a surface: everything but the maps
    assert not set(codecs.SURFACE_KEYS) & set(full) and ("detail_weights" in full) == detail
    np.testing.assert_array_equal(full["tri_id"], out.tri_id)
    np.testing.assert_array_equal(full["mask"], out.mask)
    np.testing.assert_array_equal(full["image"], out.image)
    assert full["tri_id"].dtype == np.int32
    need = codecs.stored_for(["depth", "mask"], detail, layout=layout)
    assert need == ("tri_id",) + codecs.GEOMETRY_KEYS + (("detail_weights",) if detail else ()) + ("mask",)
    part = codecs.decode_sample({k: raw[k] for k in need}, ["depth", "mask"], layout=layout, surface=surface)
    assert part["depth"][0, 0] == 1.5 and len(calls) == 1
    np.testing.assert_array_equal(calls[0], out.tri_id)
    with pytest.raises(ValueError, match=rf"\['albedo'\] of a layout-{layout} shard are recomputed"):
        codecs.decode_sample(raw, ["albedo"], layout=layout)


def test_stored_for_names_what_each_key_needs():
    assert codecs.stored_for(["mask"], detail=False, layout=2) == ("depth",)
    assert codecs.stored_for(["mask"], detail=True, layout=2) == ("depth_coarse",)
    assert codecs.stored_for(["depth"], detail=True, layout=2) == ("depth_coarse", "depth_offset", "depth_step",
                                                                    "depth_detail")
    assert codecs.stored_for(["mask", "image"], detail=True) == ("mask", "image")  # layout 4
    assert codecs.stored_for(["image", "pose", "image"], detail=True) == ("image", "pose")
    with pytest.raises(ValueError, match="unknown key 'colour'"):
        codecs.stored_for(["colour"], detail=True)
    with pytest.raises(ValueError, match="'depth_coarse' exists only in shards rendered with detail on"):
        codecs.stored_for(["depth_coarse"], detail=False)


def test_rct_and_row_delta_codes_are_exact_inverses():
    """Layout 4's codes: every uint8 colour and any triangle ids (-1 off the face, large jumps) come back
    exactly; small colour differences and neighbouring ids give small codes."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (17, 9, 3), dtype=np.uint8)
    img[0, 0], img[0, 1] = (255, 0, 255), (0, 255, 0)
    code = codecs.rct_encode(img)
    assert code.dtype == np.uint8
    np.testing.assert_array_equal(codecs.rct_decode(code), img)
    grey = np.full((2, 2, 3), 77, np.uint8)
    np.testing.assert_array_equal(codecs.rct_encode(grey)[..., 1:], 0)  # equal channels: zero differences
    with pytest.raises(ValueError, match=r"image must be uint8 \(\.\.\., 3\)"):
        codecs.rct_encode(img.astype(np.int16))
    ids = rng.integers(-1, 2**31 - 2, (13, 11)).astype(np.int32)
    ids[:, :3] = -1
    ids[4, 5:9] = [100, 101, 99, 2**31 - 2]
    enc = codecs.row_delta_encode(ids)
    assert enc.dtype == np.uint32
    np.testing.assert_array_equal(enc[4, 6:8], [2, 3])  # +1 -> 2, -2 -> 3 (zigzag)
    dec = codecs.row_delta_decode(enc)
    assert dec.dtype == np.int32
    np.testing.assert_array_equal(dec, ids)


def test_jpeg_codec_round_trip_error_and_bad_input():
    """Layout 5's image code: a smooth image comes back within a level or two at quality 95 (4:4:4),
    worse at a lower quality, the same bytes from the same pixels; bad input is named."""
    yy, xx = np.mgrid[0:48, 0:40]
    img = np.stack([yy * 5, xx * 6, (yy + xx) * 2], axis=-1).astype(np.uint8)
    data = codecs.jpeg_encode(img, 95)
    assert data.dtype == np.uint8 and data.ndim == 1 and bytes(data[:2]) == b"\xff\xd8"  # JPEG start of image
    np.testing.assert_array_equal(codecs.jpeg_encode(img, 95), data)
    errors = {q: np.abs(codecs.jpeg_decode(codecs.jpeg_encode(img, q)).astype(int) - img).mean() for q in (95, 30)}
    assert errors[95] < 1.5 and errors[30] > errors[95]
    assert codecs.jpeg_decode(data).shape == img.shape and codecs.jpeg_decode(data.tobytes()).flags.writeable
    with pytest.raises(ValueError, match=r"image must be uint8 \(H, W, 3\)"):
        codecs.jpeg_encode(img[..., 0], 95)
    with pytest.raises(ValueError, match=r"JPEG quality must be in \[1, 100\], got 0"):
        codecs.jpeg_encode(img, 0)
    with pytest.raises(ValueError, match="subsampling must be"):
        codecs.jpeg_encode(img, 95, subsampling="4:1:1")
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(img).save(png, format="PNG")
    with pytest.raises(ValueError, match="expected JPEG bytes, got PNG"):
        codecs.jpeg_decode(np.frombuffer(png.getvalue(), np.uint8))
    # layout 5 reads the image from the JPEG bytes and its byte range
    assert codecs.stored_for(["mask", "image"], detail=True, layout=5) == ("mask", "image", "image_span")
