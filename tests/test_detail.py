"""synth.detail: the bank of detail fields, the per-sample weights, the displacement."""
import numpy as np
import pytest

from synth.detail import (BANK_VERSION, CREASE_WIDTH, FAMILIES, MAX_AMPLITUDE_MM, N_FIELDS, N_VARIANTS, apply_detail,
                          build_detail_bank, cavity_occlusion, displacement, layout, sample_detail_weights)


def test_detail_bank_fields(tiny_model):
    bank = build_detail_bank(tiny_model)
    assert bank.fields.shape == (N_FIELDS, tiny_model.n_vertices) and bank.fields.dtype == np.float32
    assert not bank.fields.flags.writeable and len(bank.names) == N_FIELDS
    np.testing.assert_allclose(np.abs(bank.fields).max(axis=1), 1.0)  # unit amplitude
    brow_y = tiny_model.mean_shape[tiny_model.landmarks[17:27], 1].max()
    forehead = np.abs(bank.fields[0]) > 0.5
    assert forehead.any() and tiny_model.mean_shape[forehead, 1].min() > brow_y
    np.testing.assert_array_equal(bank.fields, build_detail_bank(tiny_model).fields)  # deterministic
    assert not np.array_equal(bank.fields, build_detail_bank(tiny_model, seed=1).fields)


def test_weights_one_variant_per_family_within_amplitude():
    assert layout()[:2] == [("forehead", 0), ("forehead", 1)] and len(layout()) == N_FIELDS
    for seed in range(20):
        w = sample_detail_weights(np.random.default_rng(seed), scale=2.0)
        assert w.shape == (N_FIELDS,) and w.dtype == np.float32 and w.min() >= 0
        start = 0
        for fam in FAMILIES:
            part = w[start:start + N_VARIANTS[fam]]
            assert np.count_nonzero(part) <= 1 and part.max() <= 2.0 * MAX_AMPLITUDE_MM[fam]
            start += N_VARIANTS[fam]
    np.testing.assert_array_equal(sample_detail_weights(np.random.default_rng(3)),
                                  sample_detail_weights(np.random.default_rng(3)))
    with pytest.raises(ValueError, match="n_fields"):
        sample_detail_weights(np.random.default_rng(0), n_fields=3)


def test_displacement_moves_vertices_along_normals(tiny_model):
    bank = build_detail_bank(tiny_model)
    w = np.zeros(N_FIELDS, np.float32)
    w[0] = 0.5  # one forehead variant, 0.5 mm
    d = displacement(bank, w)
    np.testing.assert_allclose(d, 0.5 * bank.fields[0], rtol=1e-6)
    normals = tiny_model.vertex_normals()
    moved = apply_detail(tiny_model.mean_shape, normals, d)
    np.testing.assert_allclose(np.einsum("nc,nc->n", moved - tiny_model.mean_shape, normals), d, atol=1e-5)
    with pytest.raises(ValueError, match="weights"):
        displacement(bank, w[:3])


def test_bank_versions_widen_the_creases(face_model_2mm):
    """Bank 2 (written now) draws the same creases as bank 1, wider: more vertices of each crease
    field reach half its depth, by about the width factor; pores are the same; unknown versions
    are refused."""
    v1, v2 = build_detail_bank(face_model_2mm, version=1), build_detail_bank(face_model_2mm, version=2)
    assert BANK_VERSION == 2 and set(CREASE_WIDTH) == {1, 2}
    np.testing.assert_array_equal(build_detail_bank(face_model_2mm).fields, v2.fields)
    for name, family in (("forehead0", "forehead"), ("crows_right0", "crows"), ("nasolabial0", "nasolabial")):
        i = v1.names.index(name)
        ratio = (np.abs(v2.fields[i]) > 0.5).sum() / (np.abs(v1.fields[i]) > 0.5).sum()
        assert 0.7 * CREASE_WIDTH[2][family] < ratio < 1.4 * CREASE_WIDTH[2][family], (name, ratio)
    pores = [v1.names.index(n) for n in v1.names if n.startswith("pores")]
    np.testing.assert_array_equal(v1.fields[pores], v2.fields[pores])
    with pytest.raises(ValueError, match="version"):
        build_detail_bank(face_model_2mm, version=3)


def test_cavity_occlusion():
    d = np.array([-2.0, -0.5, 0.0, 0.3], np.float32)
    o = cavity_occlusion(d, 0.4)
    assert o.dtype == np.float32
    np.testing.assert_allclose(o, np.exp(0.4 * np.minimum(d, 0)), rtol=1e-6)
    assert o[2] == o[3] == 1.0 and o[0] < o[1] < 1.0  # deeper is darker, raised skin is not brightened
    np.testing.assert_array_equal(cavity_occlusion(d, 0.0), np.ones(4, np.float32))


# Bank 1 of the 8 mm tiny model as the code before bank versions (commit 8593681) built it: per field
# sum |f| and sum f * (vertex index mod 97). Shards without "detail_bank_version" are read with bank
# 1, so it must not drift (computed from that commit's synth/detail.py; bit-identical today).
_BANK1_ABS = [
    23.61624, 18.77511, 24.14792, 21.92518, 2.245435, 2.76999, 3.5089, 3.106517, 2.780522, 2.609115, 36.52261,
    32.61856, 28.42457, 71.89039, 81.02251, 76.91634,
]
_BANK1_WEIGHTED = [
    -1147.525, -1002.376, -1131.549, -1107.983, -104.1794, -110.8567, -173.7841, -147.4749, -137.528,
    -131.3625, -2040.592, -1877.436, -1619.701, -58.97326, 108.1911, 72.28833,
]


def test_bank_1_is_the_bank_old_shards_were_rendered_with(tiny_model):
    f = build_detail_bank(tiny_model, version=1).fields.astype(np.float64)
    np.testing.assert_allclose(np.abs(f).sum(1), _BANK1_ABS, rtol=1e-5)
    np.testing.assert_allclose((f * (np.arange(f.shape[1]) % 97)).sum(1), _BANK1_WEIGHTED, rtol=1e-5, atol=1e-3)
