"""Tests of the built-in procedural face model (morphable_model.builtin)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from morphable_model import _face_head as fh
from morphable_model import builtin
from morphable_model.builtin import build_face, build_face_model, builtin_model, cache_path
from morphable_model.geometry import face_normals
from morphable_model.landmarks import MIDLINE, MIRROR_PAIRS

COARSE_MM = 6.0  # ~1400 vertices: fast, still resolves eyes / nose / mouth


@pytest.fixture(scope="module")
def coarse():
    return build_face(COARSE_MM, seed=0)


@pytest.fixture(scope="module")
def full():
    return build_face(1.0, seed=0)


@pytest.fixture(scope="module")
def medium():
    return build_face(4.0, seed=0)  # ~5.6k vertices: the mouth interior is resolved (at 6 mm it is a sketch)


def _sha(model) -> str:
    h = hashlib.sha256()
    for name in ("mean_shape", "id_basis", "id_std", "exp_basis", "exp_std", "albedo_mean", "albedo_basis",
                 "albedo_std", "triangles", "landmarks", "face_region", "regions"):
        h.update(np.ascontiguousarray(getattr(model, name)).tobytes())
    return h.hexdigest()


def _region_triangles(model) -> np.ndarray:
    """Triangles whose three corners are in the inner face region."""
    return model.triangles[model.face_region[model.triangles].all(axis=1)]


def _head_triangles(model, mouth: bool = False) -> np.ndarray:
    """Triangles touching the head around the face (scalp, ears, neck, head skin), or with
    ``mouth=True`` those touching the mouth interior."""
    if mouth:
        new = model.region_mask("mouth_interior")
    else:
        new = model.region_mask("scalp", "ears", "neck", "head_skin")
    return model.triangles[new[model.triangles].any(axis=1)]


def _flipped(model, verts, tris) -> int:
    """Number of triangles whose normal turned by more than 90 degrees from the mean's."""
    n0 = face_normals(model.mean_shape.astype(np.float64), tris)
    n1 = face_normals(np.asarray(verts, np.float64), tris)  # (..., T, 3)
    return int(((n1 * n0).sum(-1) <= 0).sum())


# ------------------------------------------------------------------------------------- counts
def _mean_edge(model, tris) -> float:
    e = model.mean_shape[np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])]
    return float(np.linalg.norm(e[:, 0] - e[:, 1], axis=1).mean())


def test_full_resolution_density(full):
    m = full.model
    face = m.triangles[(m.triangles < full.n_face).all(axis=1)]
    assert full.n_face >= 20_000
    assert _mean_edge(m, face) <= 1.5, _mean_edge(m, face)  # the face: a 1 mm grid
    head = _head_triangles(m)
    assert 2.5 <= _mean_edge(m, head) <= 5.0, _mean_edge(m, head)  # the head around it: ~4 mm
    # the head costs at most a quarter of the face's triangles (rasterisation is linear in them)
    assert m.n_triangles - face.shape[0] < 0.25 * face.shape[0]
    assert m.n_id >= 80 and m.n_exp >= 29 and m.n_albedo >= 80


@pytest.mark.parametrize("grid_mm, lo, hi", [(4.0, 1500, 4000), (8.0, 300, 1200), (12.0, 150, 600)])
def test_coarse_sizes(grid_mm, lo, hi):
    b = build_face(grid_mm)
    m = b.model
    assert lo <= b.n_face <= hi and b.n_face < m.n_vertices <= 2.5 * b.n_face  # the head never outweighs the face
    assert m.landmarks.shape == (68,) and m.face_region.sum() > 0.3 * b.n_face


def test_bad_arguments():
    with pytest.raises(ValueError, match="grid_mm"):
        build_face_model(0.0)
    with pytest.raises(ValueError, match="seed"):
        build_face_model(8.0, seed=-1)
    with pytest.raises(ValueError, match="n_exp"):
        build_face_model(8.0, n_exp=0)


# ------------------------------------------------------------------------------------- bases
@pytest.mark.parametrize("which", ["id", "exp", "albedo"])
def test_bases_orthonormal_with_decaying_std(coarse, which):
    m = coarse.model
    basis, std = getattr(m, f"{which}_basis"), getattr(m, f"{which}_std")
    gram = basis.T.astype(np.float64) @ basis.astype(np.float64)  # (K, 3N) @ (3N, K) -> (K, K)
    np.testing.assert_allclose(gram, np.eye(basis.shape[1]), atol=2e-5)  # float32 round-off
    assert np.all(np.diff(std) <= 0) and std[-1] > 0


def test_semantic_modes_are_named(coarse):
    for name in ("nose_length", "nose_width", "nose_bridge_height", "jaw_width", "face_width", "face_height",
                 "chin_protrusion", "cheek_fullness", "brow_ridge", "eye_spacing", "lip_thickness",
                 "forehead_slope", "mouth_width"):
        assert name in coarse.id_names
    for name in ("jaw_open", "smile", "frown", "brow_raise", "brow_lower", "pucker", "lip_press",
                 "mouth_stretch", "cheek_puff", "eye_close", "squint", "nose_wrinkle", "jaw_left_right",
                 "smile_left_right", "eye_close_left_right"):
        assert name in coarse.exp_names
    assert coarse.albedo_names[0] == "melanin"  # the dominant albedo mode


def _effect(built, kind, name, value=1.0):
    m = built.model
    a_id, a_exp = np.zeros(m.n_id, np.float32), np.zeros(m.n_exp, np.float32)
    (a_id if kind == "id" else a_exp)[(built.id_names if kind == "id" else built.exp_names).index(name)] = value
    return m.shape(a_id, a_exp)[m.landmarks] - m.mean_shape[m.landmarks]  # (68, 3) landmark motion


def test_semantic_modes_do_what_they_say(coarse):
    lm = coarse.model.mean_shape[coarse.model.landmarks]
    d = _effect(coarse, "id", "face_width")
    assert d[16, 0] > 0.5 and d[0, 0] < -0.5  # jaw contour moves outward
    d = _effect(coarse, "id", "nose_length")
    assert d[30, 1] < -1.0  # nose tip moves down
    d = _effect(coarse, "id", "nose_protrusion")
    assert d[30, 2] > 1.0  # nose tip comes forward
    d = _effect(coarse, "exp", "jaw_open")
    assert d[66, 1] < -3.0 and abs(d[62, 1]) < 0.5 * abs(d[66, 1])  # lower lip drops, upper stays
    assert d[8, 1] < -3.0  # chin drops
    d = _effect(coarse, "exp", "smile")
    assert d[48, 1] > 1.0 and d[54, 1] > 1.0  # mouth corners up
    d = _effect(coarse, "exp", "brow_raise")
    assert np.all(d[[18, 19, 20, 23, 24, 25], 1] > 1.0) and np.all(d[17:27, 1] > 0.2)  # tails move less
    d = _effect(coarse, "exp", "smile_left_right")
    assert d[54, 1] > 0.5 and d[48, 1] < -0.5  # one corner up, the other down
    assert lm[54, 0] > 0  # landmark 54 (subject's left corner) is at image right


def test_eye_close_closes_the_fissure():
    b = build_face(1.5)  # the fissure needs a fine grid
    lm = b.model.mean_shape[b.model.landmarks]
    gap0 = lm[37, 1] - lm[41, 1]
    d = _effect(b, "exp", "eye_close", 3.0)
    gap3 = (lm[37, 1] + d[37, 1]) - (lm[41, 1] + d[41, 1])
    assert gap0 > 5.0 and gap3 < 0.6 * gap0, (gap0, gap3)  # 3 std closes the eye half-way


def test_random_fields_are_smooth(coarse):
    # neighbouring vertices move alike: the per-edge displacement difference of every unit-norm
    # column is small compared with the column's RMS per vertex times the edge length ratio
    m = coarse.model
    e = np.concatenate([m.triangles[:, [0, 1]], m.triangles[:, [1, 2]]])
    for basis in (m.id_basis, m.exp_basis):
        b = basis.reshape(m.n_vertices, 3, -1)  # (3N, K) -> (N, 3, K)
        diff = np.linalg.norm(b[e[:, 0]] - b[e[:, 1]], axis=1).mean(0)  # (K,)
        rms = np.sqrt((b**2).sum(1).mean(0))  # (K,)
        assert np.all(diff < 1.2 * rms)


# ------------------------------------------------------------------------------------- validity
def test_triangles_ccw_from_outside(coarse, full):
    for b in (coarse, full):
        m = b.model
        mouth = m.region_mask("mouth_interior")[m.triangles].any(axis=1)
        tris = m.triangles[~mouth]
        n = face_normals(m.mean_shape.astype(np.float64), tris)
        c = m.mean_shape[tris].mean(1)  # (T, 3, 3) -> (T, 3) centroids
        # outward from the head's centre: horizontally below the dome, from (0, Y_C, 0) above it
        out = c - np.where(c[:, 1:2] > fh.Y_C, [0.0, fh.Y_C, 0.0], c * [0.0, 1.0, 0.0])
        assert np.all((n * out).sum(1) > 0)


@pytest.mark.parametrize("which", ["coarse", "medium", "full"])
def test_mesh_is_a_consistently_oriented_manifold(which, request):
    # every edge is used by one or two triangles, never twice in the same direction: the face, the
    # zipped strip, the head and the mouth interior form one oriented surface; its only open
    # border is the end of the neck
    b = request.getfixturevalue(which)
    m = b.model
    e = np.concatenate([m.triangles[:, [0, 1]], m.triangles[:, [1, 2]], m.triangles[:, [2, 0]]]).astype(np.int64)
    key = e[:, 0] * m.n_vertices + e[:, 1]
    assert np.unique(key).size == key.size  # no directed edge twice
    border = e[~np.isin(key, e[:, 1] * m.n_vertices + e[:, 0])]
    assert np.all(m.mean_shape[border.ravel(), 1] < fh.Y_NECK + 1e-3)  # open only at the neck's end
    assert np.bincount(m.triangles.ravel(), minlength=m.n_vertices).min() > 0  # no unused vertex
    # the mouth interior faces into the cavity: its back wall looks at the viewer (+z)
    mouth = m.triangles[m.region_mask("mouth_interior")[m.triangles].all(axis=1)]
    n = face_normals(m.mean_shape.astype(np.float64), mouth)
    back = np.all(m.mean_shape[mouth][:, :, 2] < m.mean_shape[m.landmarks[62], 2] - 38.0, axis=1)  # the back wall
    assert back.any() and np.all(n[back, 2] > 0.5)


def test_whole_mesh_is_mirror_symmetric(full):
    m = full.model
    np.testing.assert_allclose(m.mean_shape[full.mirror] * [-1, 1, 1], m.mean_shape, atol=1e-4)  # float32
    np.testing.assert_array_equal(m.regions[full.mirror], m.regions)
    assert np.array_equal(full.mirror[full.mirror], np.arange(m.n_vertices))


def test_no_flips_coarse_random_samples(coarse):
    m = coarse.model
    for tris in (_region_triangles(m), _head_triangles(m)):  # the inner face; the head around it
        rng = np.random.default_rng(0)
        s = m.sample(rng, 50, truncation=3.0)
        assert _flipped(m, m.shape(s.alpha_id, s.alpha_exp), tris) == 0
        # and each component alone at +-3 std
        for k in range(m.n_id):
            a = np.zeros((2, m.n_id), np.float32)
            a[:, k] = [3.0, -3.0]
            assert _flipped(m, m.shape(a), tris) == 0, ("id", k, coarse.id_names[k])
        for k in range(m.n_exp):
            e = np.zeros((2, m.n_exp), np.float32)
            e[:, k] = [3.0, -3.0]
            assert _flipped(m, m.shape(np.zeros((2, m.n_id), np.float32), e), tris) == 0, ("exp", coarse.exp_names[k])


def test_no_flips_in_the_mouth_interior(medium):
    # teeth, tongue and cavity follow the lips and the jaw without folding (a 4 mm grid: at 6 mm the
    # slit has 9 columns and the pouch's corners are slivers)
    m = medium.model
    tris = _head_triangles(m, mouth=True)
    s = m.sample(np.random.default_rng(0), 50, truncation=3.0)
    assert _flipped(m, m.shape(s.alpha_id, s.alpha_exp), tris) == 0
    for k in range(m.n_exp):
        e = np.zeros((2, m.n_exp), np.float32)
        e[:, k] = [3.0, -3.0]
        assert _flipped(m, m.shape(np.zeros((2, m.n_id), np.float32), e), tris) == 0, ("exp", medium.exp_names[k])


def test_no_flips_full_random_samples(full):
    m = full.model
    tris = m.triangles  # every region
    s = m.sample(np.random.default_rng(1), 3, truncation=3.0)
    assert _flipped(m, m.shape(s.alpha_id, s.alpha_exp), tris) == 0
    e = np.zeros((2, m.n_exp), np.float32)
    e[:, full.exp_names.index("jaw_open")] = [3.0, -3.0]
    e[:, full.exp_names.index("eye_close")] = [3.0, -3.0]
    assert _flipped(m, m.shape(np.zeros((2, m.n_id), np.float32), e), tris) == 0


# ------------------------------------------------------------------------------------- the head
def test_regions_cover_the_head(coarse, full):
    for b in (coarse, full):
        m = b.model
        assert m.region_names == fh.REGION_NAMES and m.regions.shape == (m.n_vertices,)
        counts = np.bincount(m.regions, minlength=len(m.region_names))
        assert np.all(counts > 0), dict(zip(m.region_names, counts))
        face_grid = np.isin(m.regions[: b.n_face], [fh.REGION[x] for x in ("face", "eyes", "scalp")])
        assert np.all(face_grid)  # the face grid is face, eyes, or hair above the hairline
        assert not m.region_mask("scalp", "ears", "neck", "head_skin", "mouth_interior")[m.face_region].any()
        assert np.all(m.regions[m.landmarks] <= 1)  # landmarks stay on the face
        v = m.mean_shape
        assert v[m.region_mask("scalp"), 1].max() > 100.0  # the crown
        assert v[m.region_mask("neck"), 1].min() < -200.0  # the neck
        assert v[m.region_mask("scalp"), 2].min() < -80.0  # the back of the head
        ears = v[m.region_mask("ears")]
        assert ears[:, 0].min() < -70.0 and ears[:, 0].max() > 70.0  # both ears stand out at the sides
    m = full.model
    width = np.ptp(m.mean_shape[:, 0])
    length = np.ptp(m.mean_shape[~m.region_mask("neck"), 2])
    height = m.mean_shape[:, 1].max() - m.mean_shape[m.landmarks[8], 1]
    assert 160 < width < 200 and 195 < length < 235 and 215 < height < 250  # with ears, nose, hair; menton-vertex


def _motion(built, kind: str, name: str, value: float = 1.0) -> np.ndarray:
    m = built.model
    a, e = np.zeros(m.n_id, np.float32), np.zeros(m.n_exp, np.float32)
    (a if kind == "id" else e)[(built.id_names if kind == "id" else built.exp_names).index(name)] = value
    return m.shape(a, e) - m.mean_shape  # (N, 3)


def test_identity_moves_the_head_plausibly(coarse):
    m = coarse.model
    v = m.mean_shape
    crown, back = np.argmax(v[:, 1]), np.argmin(v[:, 2])
    d = _motion(coarse, "id", "head_size")
    assert d[crown, 1] > 1.0 and d[back, 2] < -1.0  # a bigger head: crown up, back of the head back
    d = _motion(coarse, "id", "face_width")
    ears = m.region_mask("ears")
    assert np.all(d[ears, 0] * np.sign(v[ears, 0]) > 1.0)  # a wider face carries the ears out
    for name in ("skull_length", "crown_height", "neck_width", "ear_size", "ear_protrusion", "hair_volume"):
        d = _motion(coarse, "id", name)
        # head modes are designed as zero on the face; orthogonalised against the global modes before
        # them, they keep a small part of those there
        head = np.abs(d[coarse.n_face :]).max()
        assert head > 1.0 and np.abs(d[: coarse.n_face]).max() < 0.5 * head, name


def test_expressions_stay_on_the_face(coarse):
    m = coarse.model
    v = m.mean_shape
    far = m.region_mask("ears") | (v[:, 1] > 110.0) | (v[:, 2] < -60.0) | (v[:, 1] < -190.0)  # crown, back, neck
    for k, name in enumerate(coarse.exp_names):
        d = _motion(coarse, "exp", name, 3.0)
        assert np.abs(d[far]).max() < 0.05, name  # mm at 3 std: nothing on the scalp, ears, lower neck
    d = _motion(coarse, "exp", "jaw_open")
    below = m.region_mask("neck") & (m.mean_shape[:, 1] > -150.0) & (m.mean_shape[:, 2] > 20.0)
    assert d[below, 1].min() < -0.5  # the jaw carries the skin under the chin


def test_open_mouth_shows_the_mouth_interior(medium):
    # rays from a frontal viewer through the open mouth hit teeth / tongue / cavity, not the background
    m = medium.model
    e = np.zeros(m.n_exp, np.float32)
    e[medium.exp_names.index("jaw_open")] = 2.0
    v = m.shape(np.zeros(m.n_id, np.float32), e).astype(np.float64)
    top, bottom = v[m.landmarks[62], 1], v[m.landmarks[66], 1]
    assert top - bottom > 8.0
    for x in (-8.0, 0.0, 8.0):
        for y in np.linspace(bottom, top, 5)[1:-1]:
            tri = _first_hit(v, m.triangles, np.array([x, y, 300.0]), np.array([0.0, 0.0, -1.0]))
            assert tri >= 0 and m.regions[m.triangles[tri]].max() == fh.REGION["mouth_interior"], (x, y)


def _first_hit(v, tris, origin, direction) -> int:
    """Index of the first triangle a ray hits (Moller-Trumbore, both sides), -1 if none."""
    a, b, c = v[tris[:, 0]], v[tris[:, 1]], v[tris[:, 2]]
    e1, e2 = b - a, c - a
    p = np.cross(direction, e2)
    det = (e1 * p).sum(1)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = origin - a
    u = (s * p).sum(1) * inv
    q = np.cross(s, e1)
    w = (direction * q).sum(1) * inv
    t = (e2 * q).sum(1) * inv
    hit = ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 0)
    return int(np.argmin(np.where(hit, t, np.inf))) if hit.any() else -1


# ------------------------------------------------------------------------------------- albedo
def test_albedo_range_and_appearance(coarse, full):
    for b in (coarse, full):
        m = b.model
        s = m.sample(np.random.default_rng(2), 50, truncation=3.0)
        alb = m.albedo(s.beta, clip=False)
        # linear albedo is additive: on the darkest skins (skin ~0.02 in G) the other skin modes can push
        # a channel a hair below 0 (then clipped, as MorphableModel.albedo does by default)
        assert alb.min() >= -0.03 and alb.max() <= 1.0, (alb.min(), alb.max())
        assert (alb < 0).mean() < 1e-3
        for v in (3.0, -3.0):  # the lightest and darkest skin, with random other modes
            beta = s.beta.copy()
            beta[:, 0] = v
            a = m.albedo(beta, clip=False)
            assert a.min() >= -0.06 and a.max() <= 1.0, (v, a.min(), a.max())
            skin = m.albedo(beta)[:, m.face_region & m.region_mask("face")].mean(1)  # (50, 3) clipped, no eyes
            assert np.all(skin[:, 0] > skin[:, 1])  # still warm skin: red above green in every sample,
            assert np.all(skin[:, 2] < skin[:, 1] + 0.006)  # blue at most a hair above green (dark skin, ~0.02)
            assert skin.mean(0)[1] > skin.mean(0)[2]
    m = full.model
    lm, a = m.landmarks, m.albedo_mean
    skin = a[m.face_region].mean(0)
    v = m.mean_shape
    mid_lips = m.face_region & (np.abs(v[:, 0]) < 8) & (np.abs(np.abs(v[:, 1] - v[lm[62], 1]) - 4.5) < 1.5)
    lips = a[mid_lips].mean(0)
    assert (lips[0] - lips[1]) > (skin[0] - skin[1]) + 0.05  # lips redder than skin
    brow = a[lm[[19, 24]]].mean(0)
    assert brow.sum() < 0.6 * skin.sum()  # dark brows
    hair = a[m.region_mask("scalp")].mean(0)
    assert hair.sum() < 0.4 * skin.sum()  # dark-brown hair
    mouth = a[m.region_mask("mouth_interior")]
    assert mouth.min(0).sum() < 0.05 and mouth.max(0).sum() > 1.4  # a dark cavity and off-white teeth
    # melanin: +3 std is darker than -3 std everywhere on the skin
    beta = np.zeros(m.n_albedo, np.float32)
    beta[0] = 3.0
    dark = m.albedo(beta)
    beta[0] = -3.0
    light = m.albedo(beta)
    assert dark[m.face_region].mean() < 0.5 * light[m.face_region].mean()


def _display(linear: np.ndarray) -> np.ndarray:
    """sRGB display value in [0, 255] of linear albedo (the standard transfer function)."""
    c = np.clip(linear, 0.0, 1.0)
    return 255.0 * np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def test_skin_range_very_light_to_very_dark(full):
    # albedo is linear reflectance: shown in sRGB, melanin -3 std is very light skin, +3 std very dark,
    # and +2 std already darker than the old model's +2 std "mid-brown" (sRGB ~ 167, 138, 120)
    m = full.model
    v = m.mean_shape
    cheek = m.face_region & (np.abs(v[:, 0] - 45.0) < 8) & (np.abs(v[:, 1] + 30.0) < 8)
    mouth_y = v[m.landmarks[62], 1]
    lips = m.face_region & (np.abs(v[:, 0]) < 8) & (np.abs(np.abs(v[:, 1] - mouth_y) - 4.5) < 1.5)  # mid vermilion
    shown = {}
    for v in (-3.0, -2.0, 0.0, 2.0, 3.0):
        beta = np.zeros(m.n_albedo, np.float32)
        beta[0] = v
        alb = m.albedo(beta)
        shown[v] = _display(alb[cheek].mean(0))
        skin, lip = alb[cheek].mean(0), alb[lips].mean(0)
        assert lip[0] / lip[1] > 1.2 * skin[0] / skin[1], v  # lips redder than the skin at every tone
        assert shown[v][0] > shown[v][1] > shown[v][2], v  # skin is warm (R > G > B) at every tone
    assert shown[-3.0].mean() > 190 and shown[-3.0][0] > 225  # very light
    assert shown[3.0].mean() < 55  # very dark
    assert shown[2.0].max() < 130  # darker than the old "+2 std"
    assert shown[-2.0].mean() > shown[0.0].mean() > shown[2.0].mean()


# ------------------------------------------------------------------------------------- landmarks
@pytest.mark.parametrize("which", ["coarse", "full"])
def test_landmarks(which, request):
    b = request.getfixturevalue(which)
    m = b.model
    p = m.mean_shape[m.landmarks]  # (68, 3)
    assert np.argmax(p[:, 2]) == 30  # nose tip is the most forward landmark
    assert np.all(p[48:68, 1] < p[33, 1])  # mouth below the nose base
    assert np.all(p[36:48, 1] > p[30, 1])  # eyes above the nose tip
    assert np.all(p[17:27, 1] > p[36:48, 1].max())  # brows above the eyes
    assert p[8, 1] < p[57, 1]  # chin below the lower lip
    for i, j in MIRROR_PAIRS:  # mirror pairs: (x, y, z) -> (-x, y, z); tolerance: float32 round-off
        np.testing.assert_allclose(p[i] * [-1, 1, 1], p[j], atol=1e-4)
    assert np.all(np.abs(p[list(MIDLINE), 0]) < 1e-4)
    assert np.all(p[[0, 36, 48, 17], 0] < 0)  # iBUG right side is at image left (x < 0)
    slit = set(b.slit_upper.tolist()) | set(b.slit_lower.tolist())
    assert all(int(v) in slit for v in m.landmarks[60:68])  # inner lips on the mouth slit
    assert set(m.landmarks[[61, 62, 63]].tolist()) <= set(b.slit_upper.tolist())
    assert set(m.landmarks[[65, 66, 67]].tolist()) <= set(b.slit_lower.tolist())


def test_landmarks_unchanged_in_meaning():
    # the head is added around the face: the 68 landmarks are the same vertices at the same
    # places as in model v2 (golden sums of the grid-8 model, identical for v1, v2, v3)
    b = build_face(8.0)
    m = b.model
    assert np.all(m.landmarks < b.n_face)
    np.testing.assert_allclose(m.mean_shape[m.landmarks].astype(np.float64).sum(0), GOLDEN[2]["landmark_sum"], atol=0.05)
    np.testing.assert_allclose(m.mean_shape[: b.n_face].shape[0], GOLDEN[2]["n_vertices"])


def test_mouth_slit_is_open(coarse):
    m = coarse.model
    up, lo = set(coarse.slit_upper.tolist()), set(coarse.slit_lower.tolist())
    # no triangle joins the upper and lower lip across the slit in the middle of the mouth
    mid = np.abs(m.mean_shape[:, 0]) < 15
    for t in m.triangles:
        if mid[t].all():
            assert not (any(v in up for v in t) and any(v in lo for v in t))
    e = np.zeros(m.n_exp, np.float32)
    e[coarse.exp_names.index("jaw_open")] = 2.0
    v = m.shape(np.zeros(m.n_id, np.float32), e)
    gap = v[m.landmarks[62], 1] - v[m.landmarks[66], 1]
    gap0 = m.mean_shape[m.landmarks[62], 1] - m.mean_shape[m.landmarks[66], 1]
    assert gap > gap0 + 8.0  # the lips part


def test_mean_face_proportions(full):
    p = full.model.mean_shape[full.model.landmarks]
    pupils = 0.5 * (p[37] + p[40]), 0.5 * (p[43] + p[46])
    ipd = pupils[1][0] - pupils[0][0]
    assert 55 < ipd < 70  # interpupillary ~ 63 mm
    assert 42 < p[54, 0] - p[48, 0] < 58  # mouth width ~ 50 mm
    assert 105 < p[27, 1] - p[8, 1] < 135  # nasion-menton ~ 120 mm
    assert 12 < p[30, 2] - p[33, 2] < 28  # nose protrusion ~ 20 mm


# ------------------------------------------------------------------------------------- determinism, cache
def test_deterministic_and_seeded():
    a, b = build_face_model(8.0, seed=0), build_face_model(8.0, seed=0)
    assert _sha(a) == _sha(b) and a.fingerprint == b.fingerprint
    c = build_face_model(8.0, seed=1)
    assert c.fingerprint != a.fingerprint
    np.testing.assert_array_equal(c.mean_shape, a.mean_shape)  # the seed only drives random fields


def test_builtin_model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DETAILFACE_CACHE", str(tmp_path / "env_cache"))
    path = cache_path(grid_mm=8.0)
    assert path.parent == tmp_path / "env_cache"
    assert f"v{builtin.MODEL_VERSION}" in path.name
    first = builtin_model(grid_mm=8.0)
    assert path.exists()
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary files left behind
    mtime = path.stat().st_mtime_ns
    second = builtin_model(grid_mm=8.0)  # loads from the cache
    assert path.stat().st_mtime_ns == mtime
    assert _sha(second) == _sha(first) == _sha(build_face_model(8.0))
    assert second.fingerprint == first.fingerprint
    # an explicit cache_dir wins over the environment; a corrupt file is rebuilt
    other = tmp_path / "explicit"
    other.mkdir()
    cache_path(other, grid_mm=8.0).write_bytes(b"not an h5 file")
    third = builtin_model(cache_dir=other, grid_mm=8.0)
    assert third.fingerprint == first.fingerprint


# Golden values of the grid-8 model for each MODEL_VERSION. If a change to the geometry or the
# albedo makes this fail, bump builtin.MODEL_VERSION (cached models carry it in their file name,
# so stale caches are not reused) and record the new values here.
GOLDEN = {
    1: dict(n_vertices=709, n_triangles=1316, landmark_sum=(0.0, -3099.08, 5313.11), albedo_sum=(436.17, 332.58, 273.65)),
    2: dict(n_vertices=709, n_triangles=1316, landmark_sum=(0.0, -3099.08, 5313.11), albedo_sum=(436.17, 332.58, 273.65)),
    # v3: the head, ears, neck, hair and mouth interior around the same face; linear skin albedo
    3: dict(n_vertices=1410, n_triangles=2786, landmark_sum=(0.0, -3099.08, 5313.11), albedo_sum=(517.83, 341.41, 254.12)),
}


def test_fingerprint_independent_of_blas_threads():
    # Regression: multi-threaded LAPACK QR gave a different model (and fingerprint) per thread
    # count, so shards rendered on one machine were refused on another. Grid 2 mm is large
    # enough for OpenBLAS to use several threads.
    code = "from morphable_model.builtin import build_face_model; print(build_face_model(grid_mm=2.0).fingerprint)"
    prints = []
    for threads in ("1", "2"):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        prints.append(out.stdout.strip())
    assert len(prints[0]) == 64 and prints[0] == prints[1]


def test_model_version_golden():
    m = build_face_model(8.0)
    g = GOLDEN[builtin.MODEL_VERSION]
    assert (m.n_vertices, m.n_triangles) == (g["n_vertices"], g["n_triangles"])
    # sums of float32 values; 0.05 is far above round-off and far below any real change
    np.testing.assert_allclose(m.mean_shape[m.landmarks].astype(np.float64).sum(0), g["landmark_sum"], atol=0.05)
    np.testing.assert_allclose(m.albedo_mean.astype(np.float64).sum(0), g["albedo_sum"], atol=0.05)
