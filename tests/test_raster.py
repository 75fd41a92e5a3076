"""synth.raster: barycentrics against 3-D geometry, and the reference z-buffer on hand-made meshes."""
import numpy as np
import pytest

from synth import camera as cam
from synth.raster import barycentrics, rasterize_reference

PROJECTIONS = ["perspective", "weak_perspective"]


def _k(projection):
    f = 80.0 if projection == "perspective" else 0.3
    return cam.intrinsics_matrix(f, f, 31.7, 33.2).astype(np.float64)


def _random_triangles(rng, n):
    """``n`` random camera-frame triangles ``(n, 3, 3)`` 150-300 mm in front of the camera."""
    return rng.uniform(-40, 40, (n, 3, 3)) + np.array([0.0, 0.0, -220.0]) + rng.uniform(-60, 60, (n, 1, 1)) * [0, 0, 1]


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_weights_and_depth_of_a_known_3d_point(projection):
    """A point with known 3-D barycentrics b on a triangle projects to a pixel whose barycentrics
    are b and whose depth is the point's: the perspective correction equals the ray-triangle
    intersection (independent of how the function computes it)."""
    rng = np.random.default_rng(0)
    tris = _random_triangles(rng, 200)
    b = rng.dirichlet(np.ones(3), 200)  # (P, 3) inside the triangle
    pts = np.einsum("pk,pkc->pc", b, tris)  # (P, 3) 3-D points on the triangles
    k = _k(projection)
    pix, depth = cam.project(pts, k, projection)
    tri_uv, tri_d = cam.project(tris, np.broadcast_to(k, (200, 3, 3)), projection)  # (P, 3, 2), (P, 3)
    w, z = barycentrics(pix, tri_uv, tri_d, projection)
    # float64 throughout; the 1e-12 area clamp never triggers for these triangles
    np.testing.assert_allclose(w, b, atol=1e-9)
    np.testing.assert_allclose(z, depth, rtol=1e-12)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-12)


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_unclipped_weights_give_the_plane_depth_outside_the_triangle(projection):
    """``clip=False``: a point of the triangle's plane outside the triangle (a negative weight) keeps
    its weights and depth; ``clip=True`` clips them to the triangle."""
    rng = np.random.default_rng(1)
    tris = _random_triangles(rng, 100)
    b = np.stack([np.full(100, -0.2), np.full(100, 0.5), np.full(100, 0.7)], -1)  # sum 1, outside
    pts = np.einsum("pk,pkc->pc", b, tris)
    k = _k(projection)
    pix, depth = cam.project(pts, k, projection)
    tri_uv, tri_d = cam.project(tris, np.broadcast_to(k, (100, 3, 3)), projection)
    w, z = barycentrics(pix, tri_uv, tri_d, projection, clip=False)
    np.testing.assert_allclose(w, b, atol=1e-9)
    np.testing.assert_allclose(z, depth, rtol=1e-10)
    wc, _ = barycentrics(pix, tri_uv, tri_d, projection, clip=True)
    assert wc.min() >= 0 and np.allclose(wc.sum(-1), 1.0) and np.all(wc[:, 0] == 0)


def _square(z=-200.0, half=50.0):
    v = np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]])
    return v, np.array([[0, 1, 2], [0, 2, 3]])  # counter-clockwise seen from the camera (+z side)


def test_reference_golden_square_and_diagonal():
    v, t = _square()
    r = rasterize_reference(v, t, cam.intrinsics_matrix(64, 64, 32, 32), 64)
    # 100 mm at 200 mm with f = 64 px -> 32 px wide, centred: columns/rows 16..47 exactly
    expected = np.zeros((64, 64), bool)
    expected[16:48, 16:48] = True
    np.testing.assert_array_equal(r.mask, expected)
    np.testing.assert_allclose(r.depth[expected], 200.0, rtol=1e-12)
    assert np.all(r.depth[~expected] == 0) and np.all(r.bary[~expected] == 0)
    # triangle 0 (corners 0, 1, 2) is below the diagonal from the lower-left to the upper-right
    # corner: image lower right; ties on the diagonal go to the smaller id, 0
    ii, jj = np.nonzero(expected)
    lower_right = (jj - 16 + 0.5) >= (47 - ii + 0.5)
    np.testing.assert_array_equal(r.tri_id[ii, jj], np.where(lower_right, 0, 1))
    np.testing.assert_allclose(r.bary[expected].sum(-1), 1.0, atol=1e-12)


def test_reference_asymmetric_triangle_lands_upper_right():
    # model triangle in x > 0, y > 0 (right, up) -> image columns > 32, rows < 32 (v grows down)
    v = np.array([[0.0, 0, -200], [50, 0, -200], [0, 50, -200]])
    r = rasterize_reference(v, [[0, 1, 2]], cam.intrinsics_matrix(64, 64, 32, 32), (64, 48))
    ii, jj = np.nonzero(r.mask)
    assert r.mask.shape == (64, 48) and len(ii) > 100
    assert jj.min() >= 32 and ii.max() < 32


def test_reference_nearest_wins_ties_keep_smaller_id_and_culling():
    near, t = _square(-150.0)
    far, _ = _square(-300.0, 140.0)  # 60 px wide, around the near one (43 px)
    v = np.concatenate([far, near])  # triangles 0, 1 far; 2, 3 near
    tris = np.concatenate([t, t + 4])
    k = cam.intrinsics_matrix(64, 64, 32, 32)
    r = rasterize_reference(v, tris, k, 64)
    assert set(np.unique(r.tri_id[r.mask])) == {0, 1, 2, 3}
    centre = r.tri_id[28:36, 28:36]
    assert np.isin(centre, [2, 3]).all()  # the near square covers the middle
    np.testing.assert_allclose(r.depth[28:36, 28:36], 150.0, rtol=1e-12)
    # the same triangle twice: the first one keeps every pixel
    dup = rasterize_reference(near, np.concatenate([t, t]), k, 64)
    assert set(np.unique(dup.tri_id[dup.mask])) == {0, 1}
    # reversed winding = back-facing: culled only when asked
    back = t[:, ::-1]
    assert rasterize_reference(near, back, k, 64).mask.sum() > 1000
    assert not rasterize_reference(near, back, k, 64, cull_backfaces=True).mask.any()
    assert rasterize_reference(near, t, k, 64, cull_backfaces=True).mask.sum() > 1000


def test_reference_drops_triangles_at_or_behind_znear_and_degenerate_ones():
    v, t = _square()
    k = cam.intrinsics_matrix(64, 64, 32, 32)
    behind = v.copy()
    behind[0, 2] = 10.0  # one corner behind the camera: triangles 0 and 1 both use vertex 0
    assert not rasterize_reference(behind, t, k, 64).mask.any()
    # weak perspective has no near plane
    assert rasterize_reference(behind, t, cam.intrinsics_matrix(0.3, 0.3, 32, 32), 64, "weak_perspective").mask.any()
    flat = np.array([[0.0, 0, -200], [10, 0, -200], [20, 0, -200]])  # zero area
    assert not rasterize_reference(flat, [[0, 1, 2]], k, 64).mask.any()


def test_reference_bad_arguments():
    v, t = _square()
    k = cam.intrinsics_matrix(64, 64, 32, 32)
    with pytest.raises(ValueError, match="verts_cam"):
        rasterize_reference(v[None], t, k, 64)
    with pytest.raises(ValueError, match="triangles"):
        rasterize_reference(v, t[:, :2], k, 64)
    with pytest.raises(ValueError, match="projection"):
        rasterize_reference(v, t, k, 64, "orthographic")
