"""Tests for morphable_model.model (MorphableModel, ModelSample)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from morphable_model import MorphableModel, ModelSample


def _fields(model: MorphableModel) -> dict:
    return {
        name: getattr(model, name)
        for name in (
            "mean_shape id_basis id_std exp_basis exp_std albedo_mean albedo_basis albedo_std "
            "triangles landmarks unit source face_region"
        ).split()
    }


# ------------------------------------------------------------------ construction / validation
def test_tiny_model_is_valid(tiny_model):
    m = tiny_model
    assert 100 <= m.n_vertices <= 5000
    assert m.landmarks is not None and m.landmarks.shape == (68,)
    assert m.n_id >= 1 and m.n_albedo >= 1
    assert m.mean_shape.dtype == np.float32 and m.triangles.dtype == np.int32
    assert m.landmarks.dtype == np.int64
    # the face looks toward +z: most vertex normals of the inner face have a positive z
    assert (m.vertex_normals()[m.face_region, 2] > 0).mean() > 0.7


def test_arrays_are_read_only_copies(ellipsoid_model):
    fields = _fields(ellipsoid_model)
    mean = np.array(fields["mean_shape"], dtype=np.float64)  # writable float64 input
    fields["mean_shape"] = mean
    m = MorphableModel(**fields)
    assert mean.flags.writeable  # the caller's array is untouched
    for name in ("mean_shape", "id_basis", "id_std", "exp_basis", "triangles", "landmarks", "face_region"):
        a = getattr(m, name)
        assert not a.flags.writeable, name
        with pytest.raises(ValueError):
            a[0] = 0
    mean[0, 0] = 1234.0
    assert m.mean_shape[0, 0] != 1234.0
    assert m.mean_shape.dtype == np.float32
    with pytest.raises(AttributeError):
        m.unit = "m"  # frozen dataclass


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("mean_shape", np.zeros((10, 2)), r"mean_shape must be \(\*, 3\), got \(10, 2\)"),
        ("id_basis", np.zeros((7, 10)), r"id_basis must be \(3N=1575, Kid\), got \(7, 10\)"),
        ("id_std", np.ones(3), r"id_std must be \(Kid=10,\), got \(3,\)"),
        ("exp_basis", np.zeros((1575,)), r"exp_basis must be \(3N=1575, Kexp\), got \(1575,\)"),
        ("albedo_mean", np.zeros((524, 3)), r"albedo_mean must be \(525, 3\), got \(524, 3\)"),
        ("triangles", np.array([[0, 1, 525]]), r"triangles indices must be in \[0, 525\), got \[0, 525\]"),
        ("triangles", np.zeros((4, 4), int), r"triangles must be \(\*, 3\), got \(4, 4\)"),
        ("triangles", np.zeros((4, 3)), r"triangles must be an integer array"),
        ("landmarks", np.arange(67), r"landmarks must be \(68,\), got \(67,\)"),
        ("landmarks", np.full(68, -1), r"landmarks indices must be in \[0, 525\)"),
        ("face_region", np.ones(3, bool), r"face_region must be \(525,\), got \(3,\)"),
        ("id_std", -np.ones(10), r"id_std must be finite and >= 0"),
        ("unit", "m", r"unit must be 'mm'"),
    ],
)
def test_validation_names_field_and_shapes(ellipsoid_model, field, value, message):
    fields = _fields(ellipsoid_model)
    fields[field] = value
    with pytest.raises(ValueError, match=message):
        MorphableModel(**fields)


def test_zero_width_expression_basis_is_allowed(ellipsoid_model):
    m = ellipsoid_model.truncated(n_exp=0)
    assert m.n_exp == 0 and m.exp_basis.shape == (3 * m.n_vertices, 0)
    np.testing.assert_array_equal(m.shape(np.zeros(m.n_id)), m.mean_shape)
    s = m.sample(np.random.default_rng(0), 2)
    assert s.alpha_exp.shape == (2, 0)
    np.testing.assert_allclose(m.shape(s.alpha_id, s.alpha_exp), m.shape(s.alpha_id), atol=0)


def test_counts(ellipsoid_model):
    m = ellipsoid_model
    assert (m.n_vertices, m.n_triangles, m.n_id, m.n_exp, m.n_albedo) == (525, 960, 10, 6, 8)


# ------------------------------------------------------------------ evaluation
def _shape_reference(m: MorphableModel, alpha_id, alpha_exp) -> np.ndarray:
    """Loop over components: mean + sum_k std_k a_k basis[:, k] (float64)."""
    out = m.mean_shape.astype(np.float64).copy()
    for k, a in enumerate(alpha_id):
        out += m.id_std[k] * a * m.id_basis[:, k].astype(np.float64).reshape(-1, 3)
    for k, a in enumerate(alpha_exp):
        out += m.exp_std[k] * a * m.exp_basis[:, k].astype(np.float64).reshape(-1, 3)
    return out


def test_shape_zero_is_mean(ellipsoid_model):
    m = ellipsoid_model
    v = m.shape(np.zeros(m.n_id), np.zeros(m.n_exp))
    assert v.shape == (m.n_vertices, 3) and v.dtype == np.float32
    np.testing.assert_array_equal(v, m.mean_shape)


def test_shape_single_component_golden(ellipsoid_model):
    m = ellipsoid_model
    a = np.zeros(m.n_id)
    a[2] = 1.5
    v = m.shape(a)
    # row order x0, y0, z0, x1 ...: vertex 7's y coordinate is row 3 * 7 + 1
    expected = m.mean_shape[7, 1] + 1.5 * m.id_std[2] * m.id_basis[3 * 7 + 1, 2]
    assert v[7, 1] == pytest.approx(expected, rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("batch", [1, 3])
def test_shape_matches_reference(ellipsoid_model, batch):
    m = ellipsoid_model
    rng = np.random.default_rng(1)
    a_id = rng.standard_normal((batch, m.n_id))
    a_exp = rng.standard_normal((batch, m.n_exp))
    v = m.shape(a_id, a_exp)
    assert v.shape == (batch, m.n_vertices, 3)
    for b in range(batch):
        # float32 arithmetic on values ~100 mm: 1e-3 mm absolute is ~10 ulps
        np.testing.assert_allclose(v[b], _shape_reference(m, a_id[b], a_exp[b]), atol=1e-3)
    np.testing.assert_allclose(m.shape(a_id[0], a_exp[0]), v[0], atol=1e-4)


def test_shape_truncated_coefficients_equal_zero_padding(ellipsoid_model):
    m = ellipsoid_model
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 4))
    padded = np.concatenate([a, np.zeros((2, m.n_id - 4))], 1)
    np.testing.assert_allclose(m.shape(a), m.shape(padded), atol=1e-4)
    np.testing.assert_allclose(m.shape(a[:, :0]), np.broadcast_to(m.mean_shape, (2, m.n_vertices, 3)))


def test_shape_bad_input(ellipsoid_model):
    m = ellipsoid_model
    with pytest.raises(ValueError, match=r"alpha_id must have at most 10 coefficients, got \(11,\)"):
        m.shape(np.zeros(11))
    with pytest.raises(ValueError, match=r"alpha_id must be \(k,\) or \(B, k\)"):
        m.shape(np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="alpha_exp must match alpha_id's batch shape"):
        m.shape(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="alpha_exp must match"):
        m.shape(np.zeros((2, 3)), np.zeros(2))


def test_albedo_clip(ellipsoid_model):
    m = ellipsoid_model
    beta = np.zeros((2, m.n_albedo))
    beta[1, 0] = 40.0  # far outside the prior: leaves [0, 1]
    raw = m.albedo(beta, clip=False)
    clipped = m.albedo(beta)
    assert raw.shape == (2, m.n_vertices, 3)
    assert raw.min() < 0 or raw.max() > 1
    np.testing.assert_array_equal(clipped, np.clip(raw, 0, 1))
    np.testing.assert_allclose(raw[0], m.albedo_mean, atol=1e-6)
    expected = m.albedo_mean[5, 2] + 40.0 * m.albedo_std[0] * m.albedo_basis[3 * 5 + 2, 0]
    assert raw[1, 5, 2] == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert m.albedo(np.zeros(3)).shape == (m.n_vertices, 3)


# ------------------------------------------------------------------ sampling
def test_sample_shapes_and_determinism(ellipsoid_model):
    m = ellipsoid_model
    s = m.sample(np.random.default_rng([0, 1, 2]), 5)
    assert isinstance(s, ModelSample) and len(s) == 5
    assert s.alpha_id.shape == (5, m.n_id) and s.alpha_exp.shape == (5, m.n_exp) and s.beta.shape == (5, m.n_albedo)
    assert s.alpha_id.dtype == np.float32
    s2 = m.sample(np.random.default_rng([0, 1, 2]), 5)
    np.testing.assert_array_equal(s.beta, s2.beta)
    # documented draw order: alpha_id, alpha_exp, beta from the same generator
    rng = np.random.default_rng([0, 1, 2])
    np.testing.assert_allclose(s.alpha_id, rng.standard_normal((5, m.n_id)), rtol=1e-6)
    np.testing.assert_allclose(s.alpha_exp, rng.standard_normal((5, m.n_exp)), rtol=1e-6)
    assert s[1].alpha_id.shape == (m.n_id,)


def test_sample_statistics_and_truncation(ellipsoid_model):
    m = ellipsoid_model
    s = m.sample(np.random.default_rng(3), 4000, scale=2.0)
    # 4000 draws: the std estimate has relative error ~1/sqrt(8000) ~ 1.1%; allow 5%
    np.testing.assert_allclose(s.alpha_id.std(0), 2.0, rtol=0.05)
    assert np.abs(s.alpha_id.mean(0)).max() < 0.15  # 2 / sqrt(4000) = 0.03 per component, 5 sigma
    t = m.sample(np.random.default_rng(3), 4000, scale=2.0, truncation=1.5)
    assert np.abs(t.alpha_id).max() == pytest.approx(1.5)
    assert (np.abs(t.beta) == np.float32(1.5)).mean() > 0.3  # P(|2z| > 1.5) = 0.45
    z = m.sample(np.random.default_rng(3), 2, scale=0.0)
    assert not z.alpha_id.any()


def test_sample_bad_arguments(ellipsoid_model):
    m = ellipsoid_model
    with pytest.raises(ValueError, match="rng must be a numpy.random.Generator"):
        m.sample(0, 2)
    with pytest.raises(ValueError, match="truncation must be > 0"):
        m.sample(np.random.default_rng(0), 2, truncation=0)
    with pytest.raises(ValueError, match="scale must be finite"):
        m.sample(np.random.default_rng(0), 2, scale=-1)


# ------------------------------------------------------------------ derived data
def test_fingerprint(ellipsoid_model):
    m = ellipsoid_model
    fp = m.fingerprint
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert m.fingerprint is fp  # cached
    same = MorphableModel(**{**_fields(m), "source": "elsewhere"})
    assert same.fingerprint == fp  # source is not hashed
    mean = m.mean_shape.copy()
    mean[100, 2] += 1e-3
    assert MorphableModel(**{**_fields(m), "mean_shape": mean}).fingerprint != fp
    assert MorphableModel(**{**_fields(m), "landmarks": None}).fingerprint != fp
    tri = m.triangles[:, [0, 2, 1]]
    assert MorphableModel(**{**_fields(m), "triangles": tri}).fingerprint != fp


def test_sketch_matches_the_same_model_up_to_round_off(ellipsoid_model, tiny_model):
    """A model rebuilt on another CPU (float32 entries one ulp away) has another fingerprint but
    matches by its sketch; any other model, or a changed topology, landmark or region, does not."""
    from conftest import built_elsewhere

    from morphable_model.model import SKETCH_VERSION, model_matches

    for m in (ellipsoid_model, tiny_model.replace(source="elsewhere")):
        other = built_elsewhere(m)
        assert other.fingerprint != m.fingerprint and other.sketch != m.sketch
        assert other.matches(m.fingerprint, m.sketch, "test") and m.matches(other.fingerprint, other.sketch)
        assert m.matches(m.fingerprint) and not other.matches(m.fingerprint)  # exact, no sketch given
        assert not other.matches(m.fingerprint, None) and not other.matches(None, "")
        assert model_matches(m, other.fingerprint.encode(), other.sketch.encode())  # HDF5 attributes as bytes
        assert model_matches(m.fingerprint, m.fingerprint)
        assert not model_matches(m.fingerprint, other.fingerprint, m.sketch)  # a string: exact only
        assert m.sketch.startswith(SKETCH_VERSION + ":") and m.sketch.count(":") == 2
    m, s = tiny_model, tiny_model.sketch
    assert not ellipsoid_model.matches("0" * 64, s)  # another model altogether
    assert not m.replace(id_basis=m.id_basis * 1.001).matches("0" * 64, s)  # a real change of one array
    flipped, swapped = m.id_basis.copy(), m.exp_basis.copy()
    flipped[:, 3] *= -1  # a component's sign (the L1 norms stay)
    swapped[:, [1, 2]] = swapped[:, [2, 1]]  # two components' order
    assert not m.replace(id_basis=flipped).matches("0" * 64, s)
    assert not m.replace(exp_basis=swapped, exp_std=m.exp_std[[0, 2, 1, *range(3, m.n_exp)]]).matches("0" * 64, s)
    assert not m.replace(exp_basis=swapped).matches("0" * 64, s)
    mean = m.mean_shape.copy()
    mean[:, 2] += 0.01  # 10 micrometres everywhere
    assert not m.replace(mean_shape=mean).matches("0" * 64, s)
    assert not m.replace(triangles=m.triangles[:, [0, 2, 1]]).matches("0" * 64, s)  # winding: exact
    assert not m.replace(landmarks=np.roll(m.landmarks, 1)).matches("0" * 64, s)
    assert not m.replace(region_names=m.region_names[::-1]).matches("0" * 64, s)
    assert not m.replace(id_basis=m.id_basis[:, :-1], id_std=m.id_std[:-1]).matches("0" * 64, s)  # shapes
    head, digest, numbers = s.split(":")
    for bad in (f"sketch0:{digest}:{numbers}", f"{head}:{digest}", f"{head}:{digest}:{numbers},1",
                f"{head}:{digest}:x" + numbers, "garbage"):
        assert not m.matches("0" * 64, bad), bad


def test_fingerprint_without_regions_is_unchanged(ellipsoid_model):
    # region labels were added later: a model without them (every BFM file) keeps the fingerprint it
    # had before (written out here: name, dtype, shape, bytes of the original fields, in order)
    m = ellipsoid_model
    h = hashlib.sha256()
    for name in ("mean_shape", "id_basis", "id_std", "exp_basis", "exp_std", "albedo_mean", "albedo_basis",
                 "albedo_std", "triangles", "landmarks", "face_region"):
        a = getattr(m, name)
        h.update(name.encode())
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    assert m.regions is None and m.fingerprint == h.hexdigest()
    labelled = m.replace(regions=np.zeros(m.n_vertices, np.uint8), region_names=("face",))
    assert labelled.fingerprint != m.fingerprint
    assert m.replace(regions=labelled.regions, region_names=("skin",)).fingerprint != labelled.fingerprint


def test_region_labels(ellipsoid_model, tiny_model):
    m = ellipsoid_model
    labels = (np.arange(m.n_vertices) % 3).astype(np.uint8)
    r = m.replace(regions=labels, region_names=("a", "b", "c"))
    assert r.regions.dtype == np.uint8 and not r.regions.flags.writeable
    np.testing.assert_array_equal(r.region_mask("b", "c"), labels > 0)
    with pytest.raises(ValueError, match="unknown region 'd'"):
        r.region_mask("d")
    with pytest.raises(ValueError, match="has no region labels"):
        m.region_mask("a")
    with pytest.raises(ValueError, match="regions must be"):
        m.replace(regions=labels[:-1], region_names=("a", "b", "c"))
    with pytest.raises(ValueError, match="regions must index region_names"):
        m.replace(regions=labels, region_names=("a", "b"))
    with pytest.raises(ValueError, match="region_names given without regions"):
        m.replace(region_names=("a",))
    with pytest.raises(ValueError, match="distinct"):
        m.replace(regions=labels, region_names=("a", "a", "c"))
    assert tiny_model.region_mask("face", "eyes")[tiny_model.landmarks].all()  # the built-in model's labels


def test_pncc_colors(ellipsoid_model):
    c = ellipsoid_model.pncc_colors
    assert c.shape == (525, 3) and c.dtype == np.float32 and not c.flags.writeable
    np.testing.assert_allclose(c.min(0), 0.0)
    np.testing.assert_allclose(c.max(0), 1.0)
    # the vertex with the largest z (dome top) has pncc z = 1
    assert c[ellipsoid_model.mean_shape[:, 2].argmax(), 2] == pytest.approx(1.0)


def test_landmark_points(ellipsoid_model):
    m = ellipsoid_model
    v = m.shape(np.zeros((3, 2)))
    lm = m.landmark_points(v)
    assert lm.shape == (3, 68, 3)
    np.testing.assert_array_equal(lm[1, 8], v[1, m.landmarks[8]])
    with pytest.raises(ValueError, match=r"vertices must be \(\.\.\., 525, 3\)"):
        m.landmark_points(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="has no landmarks"):
        m.replace(landmarks=None).landmark_points(v)


def test_truncated(ellipsoid_model):
    t = ellipsoid_model.truncated(n_id=3, n_albedo=2)
    assert (t.n_id, t.n_exp, t.n_albedo) == (3, 6, 2)
    # float32 BLAS may sum in another order for a sliced basis: 1e-4 mm
    np.testing.assert_allclose(t.shape(np.ones(3)), ellipsoid_model.shape(np.ones(3)), atol=1e-4)
    with pytest.raises(ValueError, match=r"n_id must be in \[0, 10\], got 11"):
        ellipsoid_model.truncated(n_id=11)


def test_pickle_keeps_arrays_read_only(ellipsoid_model):
    import pickle

    m = pickle.loads(pickle.dumps(ellipsoid_model))
    assert m.fingerprint == ellipsoid_model.fingerprint
    assert not m.id_basis.flags.writeable and not m.triangles.flags.writeable
    np.testing.assert_array_equal(m.shape(np.ones(2)), ellipsoid_model.shape(np.ones(2)))


def test_numpy_side_does_not_import_torch():
    code = "import sys, morphable_model; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
