"""synth.kernels: each compiled kernel against its numpy reference (bit for bit where the arithmetic is the same)."""
import numpy as np
import pytest

from morphable_model.geometry import vertex_normals as vertex_normals_numpy
from synth import camera as cam
from synth import kernels
from synth.detail import apply_detail
from synth.raster import barycentrics, rasterize_reference


def _scene(model, seed, size=40):
    rng = np.random.default_rng(seed)
    rot = cam.rotation_matrix(*rng.uniform(-0.6, 0.6, 3))
    verts = cam.to_camera(np.asarray(model.mean_shape, np.float64), rot, np.array([0.0, 0.0, -600.0]))
    k = np.array([[2.2 * size, 0, size / 2 + rng.uniform(-3, 3)], [0, 2.2 * size, size / 2], [0, 0, 1]])
    return verts, k


@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
@pytest.mark.parametrize("cull", [True, False])
def test_rasterize_equals_the_reference(tiny_model, projection, cull):
    for seed in range(3):
        verts, k = _scene(tiny_model, seed)
        if projection == "weak_perspective":
            k[0, 0] /= 600.0  # same image scale at the head's depth: s = f / 600 px/mm
            k[1, 1] /= 600.0
        ref = rasterize_reference(verts, tiny_model.triangles, k, (40, 37), projection, cull_backfaces=cull)
        uv, d = cam.project(verts, k, projection)
        ids = kernels.rasterize(uv, d, tiny_model.triangles, (40, 37), projection, cull_backfaces=cull)
        assert ids.dtype == np.int32 and ids.shape == (40, 37) and (ids >= 0).mean() > 0.2
        np.testing.assert_array_equal(ids, ref.tri_id)  # same formulas, same order: identical ids


def _projected(model, seed, projection):
    """``(uv, depth)`` of :func:`_scene`'s vertices (weak perspective: the same image scale)."""
    verts, k = _scene(model, seed)
    if projection == "weak_perspective":
        k[0, 0] /= 600.0
        k[1, 1] /= 600.0
    return cam.project(verts, k, projection)


def _random_triangles(seed, n=60, size=24):
    """Overlapping random triangles over a size x size image, with an exact duplicate (a depth tie)."""
    rng = np.random.default_rng(seed)
    uv = rng.uniform(-2, size + 2, (3 * n, 2))
    d = rng.uniform(400, 420, 3 * n)
    tris = np.arange(3 * n).reshape(n, 3)
    tris = np.concatenate([tris, tris[:1]])  # triangle n repeats triangle 0
    return uv, d, tris


@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
@pytest.mark.parametrize("cull", [True, False])
def test_rasterize_stable_gives_rasterizes_ids_bit_for_bit(tiny_model, projection, cull):
    ties = 0
    for seed in range(3):
        uv, d = _projected(tiny_model, seed, projection)
        ids = kernels.rasterize(uv, d, tiny_model.triangles, (40, 37), projection, cull_backfaces=cull)
        assert (ids >= 0).mean() > 0.2
        got, unstable = kernels.rasterize_stable(uv, d, tiny_model.triangles, (40, 37), projection, cull_backfaces=cull)
        np.testing.assert_array_equal(got, ids)
        assert unstable.dtype == bool and unstable.shape == (40, 37) and 0 < unstable.mean() < 0.3
        uv, d, tris = _random_triangles(seed)
        got, unstable = kernels.rasterize_stable(uv, d, tris, 24, projection, cull_backfaces=cull)
        np.testing.assert_array_equal(got, kernels.rasterize(uv, d, tris, 24, projection, cull_backfaces=cull))
        # where the duplicate would win (its twin triangle 0 is nearest), the tie makes the pixel unstable
        assert unstable[got == 0].all()
        ties += int((got == 0).sum())
    assert ties > 0


@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
def test_a_sliver_just_outside_a_pixel_makes_it_unstable(projection):
    """A thin triangle in front, its base 5e-4 px from a pixel centre that a far triangle covers: its
    plane, extrapolated to the centre, lies far behind (the sliver's depth changes fast across it),
    but a move of 6e-4 px makes it cover the centre in front of the far triangle."""
    y = 1.5 + 5e-4  # the base's line, just below the centre (1.5, 1.5) in the image
    uv = np.array([[-10, -10], [20, -10], [-10, 20],  # the far triangle, over the whole 4 x 4 image
                   [0.0, y], [3.0, y], [1.5, y + 1e-4]])  # the sliver: altitude 1e-4 px
    d = np.array([600.0, 600.0, 600.0, 500.0, 500.0, 400.0])
    tris = np.array([[0, 1, 2], [3, 4, 5]])
    ids, unstable = kernels.rasterize_stable(uv, d, tris, 4, projection, cull_backfaces=False)
    assert ids[1, 1] == 0 and unstable[1, 1]
    moved = uv.copy()
    moved[3:5, 1] -= 6e-4  # the base now passes 1e-4 px above the centre
    assert kernels.rasterize(moved, d, tris, 4, projection, cull_backfaces=False)[1, 1] == 1


@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
def test_an_id_that_a_move_within_eps_changes_is_marked_unstable(tiny_model, projection):
    """Corners moved by less than eps (pixels, and depths by less than eps mm): the ids change at
    unstable pixels only — and they do change somewhere, so the test can fail."""
    eps = 0.05
    changed = 0
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        for uv, d, tris, size in ((*_projected(tiny_model, seed, projection), tiny_model.triangles, 40),
                                  (*_random_triangles(seed), 24)):
            ids, unstable = kernels.rasterize_stable(uv, d, tris, size, projection, eps_px=eps, eps_mm=eps)
            assert unstable.mean() < 0.5
            for _ in range(3):
                uv2 = uv + rng.uniform(-0.7 * eps, 0.7 * eps, uv.shape)  # |move| < eps
                d2 = d + rng.uniform(-0.9 * eps, 0.9 * eps, d.shape)
                moved = kernels.rasterize(uv2, d2, tris, size, projection)
                assert not (moved != ids)[~unstable].any()
                changed += int((moved != ids).sum())
    assert changed > 10
    with pytest.raises(ValueError, match="eps_px and eps_mm must be > 0"):
        kernels.rasterize_stable(uv, d, tris, 24, eps_px=0.0)


def test_rasterize_golden_two_triangles():
    # a unit square at depth 10 in front of a pinhole camera, split along its diagonal, covering 4x4
    # pixel centres; counter-clockwise seen from the camera = front faces
    verts = np.array([[-1, -1, -10], [1, -1, -10], [1, 1, -10], [-1, 1, -10]], np.float64)
    k = np.array([[20.0, 0, 4], [0, 20.0, 4], [0, 0, 1]])
    uv, d = cam.project(verts, k)
    ids = kernels.rasterize(uv, d, np.array([[0, 1, 2], [0, 2, 3]]), 8)
    assert (ids[2:6, 2:6] >= 0).all() and (ids >= 0).sum() == 16
    # image rows grow downwards: the triangle (0, 1, 2) holds the lower-right half
    assert ids[5, 5] == 0 and ids[2, 2] == 1
    back = kernels.rasterize(uv, d, np.array([[0, 2, 1]]), 8)  # clockwise: culled
    assert (back == -1).all()


def test_interpolate_and_plane_depth_equal_the_numpy_barycentrics(tiny_model):
    verts, k = _scene(tiny_model, 5)
    tris = np.asarray(tiny_model.triangles, np.int64)
    uv, d = cam.project(verts, k)
    ids = kernels.rasterize(uv, d, tris, 40)
    pix = np.flatnonzero(ids.reshape(-1) >= 0)
    tid = ids.reshape(-1)[pix]
    attrs = np.random.default_rng(0).uniform(-1, 1, (len(verts), 5)).astype(np.float32)
    values, z = kernels.interpolate(pix, tid, 40, uv, d, tris, attrs)
    points = np.stack([pix % 40 + 0.5, pix // 40 + 0.5], axis=-1)
    lam, z_ref = barycentrics(points, uv[tris[tid]], d[tris[tid]], "perspective", clip=True)
    ref = attrs[tris[tid, 0]] * lam[:, :1].astype(np.float32)
    ref += attrs[tris[tid, 1]] * lam[:, 1:2].astype(np.float32)
    ref += attrs[tris[tid, 2]] * lam[:, 2:3].astype(np.float32)
    np.testing.assert_array_equal(z, z_ref)
    np.testing.assert_array_equal(values, ref)
    # the attributes as separate arrays (a 1-D one, a read-only one): the same columns side by side
    ro = attrs[:, 3:5].copy()
    ro.setflags(write=False)
    parts, _ = kernels.interpolate(pix, tid, 40, uv, d, tris, [attrs[:, 0:2], attrs[:, 2], ro])
    np.testing.assert_array_equal(parts, values)
    with pytest.raises(ValueError, match="attrs must be"):
        kernels.interpolate(pix, tid, 40, uv, d, tris, [attrs, attrs[:3]])
    plane = kernels.plane_depth(pix, tid, 40, uv, d, tris)
    np.testing.assert_array_equal(plane, barycentrics(points, uv[tris[tid]], d[tris[tid]], "perspective", clip=False)[1])


@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
def test_plane_depth_clamps_runaway_cuts_of_edge_on_triangles(projection):
    # a triangle seen almost edge-on (depths 500-540 mm over a tenth of a pixel in v): pixel rows
    # away from it meet its plane hundreds of mm off; the cut is clamped to its depth range +-
    # the margin, and equals barycentrics(clip=False) wherever that stays inside
    uv = np.array([[2.0, 5.0], [30.0, 5.0], [16.0, 5.1]])
    d = np.array([500.0, 500.0, 540.0])
    tris = np.array([[0, 1, 2]])
    pix = np.array([5 * 40 + 16, 4 * 40 + 16, 9 * 40 + 16, 30 * 40 + 16], np.int64)  # rows 5, 4, 9, 30
    tid = np.zeros(4, np.int64)
    points = np.stack([pix % 40 + 0.5, pix // 40 + 0.5], axis=-1)
    free = barycentrics(points, uv[tris[tid]], d[tris[tid]], projection, clip=False)[1]
    got = kernels.plane_depth(pix, tid, 40, uv, d, tris, projection, margin_mm=32.0)
    assert np.abs(free - 520).max() > 200  # the runaway cuts this is about (even negative depths)
    np.testing.assert_array_equal(got, np.clip(free, 500.0 - 32.0, 540.0 + 32.0))
    assert (got >= 468.0).all() and (got <= 572.0).all()
    np.testing.assert_array_equal(kernels.plane_depth(pix, tid, 40, uv, d, tris, projection, margin_mm=1e9), free)


def test_vertex_normals_equal_the_numpy_version(tiny_model):
    v = (np.asarray(tiny_model.mean_shape) + np.random.default_rng(1).normal(0, 0.3, (tiny_model.n_vertices, 3)))
    for dtype in (np.float32, np.float64):
        x = v.astype(dtype)
        out = kernels.vertex_normals(x, tiny_model.triangles)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, vertex_normals_numpy(x, tiny_model.triangles))
    with pytest.raises(ValueError, match=r"vertices must be \(N, 3\)"):
        kernels.vertex_normals(v[None], tiny_model.triangles)


def test_vertex_normals_at_are_vertex_normals_at_the_corners_asked_for(tiny_model):
    """The normals of the vertices of some triangles only: vertex_normals's bits there (unrotated),
    rotated in float32, the packed attributes beside them, zeros elsewhere."""
    rng = np.random.default_rng(2)
    v = (np.asarray(tiny_model.mean_shape) + rng.normal(0, 0.3, (tiny_model.n_vertices, 3))).astype(np.float32)
    tris = tiny_model.triangles
    full = kernels.vertex_normals(v, tris)
    np.testing.assert_array_equal(kernels.vertex_normals_at(v, tris), full)  # every vertex
    tid = rng.choice(len(tris), 40)
    asked = np.unique(np.asarray(tris)[tid])
    other = np.setdiff1d(np.arange(len(v)), asked)
    assert 0 < asked.size < len(v) // 2
    part = kernels.vertex_normals_at(v, tris, None, tid)
    np.testing.assert_array_equal(part[asked], full[asked])
    assert not part[other].any()
    rot = cam.rotation_matrix(0.3, -0.5, 0.2).astype(np.float32)
    albedo = rng.uniform(0, 1, (len(v), 3)).astype(np.float32)
    occ = rng.uniform(0.5, 1, len(v)).astype(np.float32)
    packed = kernels.vertex_normals_at(v, tris, rot, tid, pack=[albedo, occ])
    assert packed.shape == (len(v), 8) and packed.dtype == np.float32  # 3 + 3 + 1, padded to 4-float rows
    np.testing.assert_allclose(packed[asked, :3], full[asked] @ rot.T, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(packed[asked, 3:6], albedo[asked])
    np.testing.assert_array_equal(packed[asked, 6], occ[asked])
    assert not packed[other].any() and not packed[:, 7].any()
    frozen = albedo.copy()
    frozen.setflags(write=False)  # a read-only array packed beside a writeable one (copied for the kernel)
    np.testing.assert_array_equal(kernels.vertex_normals_at(v, tris, rot, tid, pack=[frozen, occ]), packed)
    with pytest.raises(ValueError, match="vertices must be"):
        kernels.vertex_normals_at(v.astype(np.float64), tris)
    with pytest.raises(ValueError, match="triangle_ids must index"):
        kernels.vertex_normals_at(v, tris, None, [len(tris)])
    with pytest.raises(ValueError, match="pack must be"):
        kernels.vertex_normals_at(v, tris, None, tid, pack=[albedo[:-1]])


@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
def test_camera_project_is_to_camera_then_exactly_project(tiny_model, projection):
    rng = np.random.default_rng(4)
    v = (np.asarray(tiny_model.mean_shape) + rng.normal(0, 1.0, (tiny_model.n_vertices, 3))).astype(np.float32)
    rot = cam.rotation_matrix(0.4, 0.3, -0.1).astype(np.float32)
    t = np.array([3.0, -5.0, -600.0], np.float32)
    k = np.array([[900.0, 0, 111.7], [0, 905.0, 113.2], [0, 0, 1]])
    if projection == "weak_perspective":
        k[:2, :2] /= 600.0
    verts_cam, uv, d = kernels.camera_project(v, rot, t, k, projection)
    assert verts_cam.dtype == np.float32 and uv.dtype == d.dtype == np.float64
    np.testing.assert_allclose(verts_cam, cam.to_camera(v, rot, t), rtol=0, atol=1e-4)  # float32 rounding (mm)
    ref_uv, ref_d = cam.project(verts_cam.astype(np.float64), k, projection)
    np.testing.assert_array_equal(uv, ref_uv)
    np.testing.assert_array_equal(d, ref_d)
    # displaced along normals first: exactly synth.detail.apply_detail, then the same pass
    normals = kernels.vertex_normals(v, tiny_model.triangles)
    disp = rng.normal(0, 0.5, len(v)).astype(np.float32)
    drawn, verts_cam2, uv2, d2 = kernels.camera_project(v, rot, t, k, projection, displace=(normals, disp))
    np.testing.assert_array_equal(drawn, apply_detail(v, normals, disp))
    for a, b in zip((verts_cam2, uv2, d2), kernels.camera_project(drawn, rot, t, k, projection)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="displace must be"):
        kernels.camera_project(v, rot, t, k, projection, displace=(normals, disp[:-1]))
    with pytest.raises(ValueError, match="projection"):
        kernels.camera_project(v, rot, t, k, "orthographic")
    with pytest.raises(ValueError, match="vertices must be"):
        kernels.camera_project(v.astype(np.float64), rot, t, k, projection)


def test_unit_and_clip_equals_the_numpy_formula():
    rng = np.random.default_rng(5)
    values = rng.normal(0, 1, (500, 10)).astype(np.float32)
    values[7, :3] = 0.0  # a zero normal stays zero
    ref = values.copy()
    n = ref[:, :3]
    norm = np.sqrt((n[:, 0] * n[:, 0] + n[:, 1] * n[:, 1]) + n[:, 2] * n[:, 2])  # float32
    n /= np.maximum(norm, np.float32(1e-12))[:, None]
    ref[:, 3:6] = np.clip(ref[:, 3:6], 0, 1)
    ref[:, 7:10] = np.clip(ref[:, 7:10], 0, 1)
    out = values.copy()
    kernels.unit_and_clip(out, (3, 6), (7, 10))
    np.testing.assert_array_equal(out, ref)  # column 6 untouched
    assert not out[7, :3].any()
    with pytest.raises(ValueError, match="clip ranges"):
        kernels.unit_and_clip(values.copy(), (3, 11))
    with pytest.raises(ValueError, match="C-contiguous float32"):
        kernels.unit_and_clip(values[:, :6])


@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
def test_shade_pixels_equals_the_numpy_lighting(projection):
    """kernels.shade_pixels = clip(albedo * (sh_basis(n) @ sh) * occlusion + blinn_phong(n, view, ...), 0, 1)
    of synth.lighting, written at the face pixels only (float64 inside vs the float32 formula)."""
    from synth.lighting import blinn_phong, dominant_light, sh_basis, view_directions

    rng = np.random.default_rng(3)
    h, w = 9, 13
    pix = np.sort(rng.choice(h * w, 60, replace=False))
    n = rng.normal(size=(60, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    alb = rng.uniform(0, 1, (60, 3)).astype(np.float32)
    occ = rng.uniform(0.5, 1, 60).astype(np.float32)
    sh = rng.normal(0, 0.4, (9, 3)).astype(np.float32)
    sh[0] += 1.5
    k = np.array([[30.0, 0, 6.2], [0, 31.0, 4.1], [0, 0, 1]])
    light_dir, light_color = dominant_light(sh)
    background = rng.uniform(0, 1, (h, w, 3)).astype(np.float32)
    c = np.arange(w) + 0.5, np.arange(h) + 0.5
    uv = np.stack(np.meshgrid(*c), -1).reshape(-1, 2)[pix]  # (P, 2) pixel centres
    for occlusion, highlight in ((None, None), (occ, None), (occ, (light_dir, light_color, 0.7, 12.0))):
        image = background.copy()
        spec = kernels.shade_pixels(image, pix, n, alb, sh, occlusion, highlight, k, projection)
        lin = alb * (sh_basis(n) @ sh) * (1.0 if occlusion is None else occlusion[:, None])
        if highlight is None:
            assert spec is None
        else:
            ref = blinn_phong(n.astype(np.float64), view_directions(uv, k, projection), light_dir, light_color,
                              0.7, 12.0)
            assert ref.max() > 0.05  # a visible highlight is tested
            np.testing.assert_allclose(spec, ref, atol=1e-6)
            lin = lin + ref
        np.testing.assert_allclose(image.reshape(-1, 3)[pix], np.clip(lin, 0, 1), atol=2e-6)
        off = np.setdiff1d(np.arange(h * w), pix)
        np.testing.assert_array_equal(image.reshape(-1, 3)[off], background.reshape(-1, 3)[off])  # untouched
    with pytest.raises(ValueError, match="image must be a C-contiguous"):
        kernels.shade_pixels(background.astype(np.float64), pix, n, alb, sh)
    with pytest.raises(ValueError, match=r"occlusion must be \(60,\)"):
        kernels.shade_pixels(background.copy(), pix, n, alb, sh, occ[:5])
    with pytest.raises(ValueError, match=r"pix must index the 9 x 13 image, got \[0, 117\]"):
        kernels.shade_pixels(background.copy(), np.r_[pix[:-1], 117], n, alb, sh)
    with pytest.raises(ValueError, match="intrinsics are needed"):
        kernels.shade_pixels(background.copy(), pix, n, alb, sh, specular=(light_dir, light_color, 0.7, 12.0))
