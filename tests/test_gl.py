"""synth.gl: platform selection, the clip-space projection matrix, the triangle-id pass on a golden mesh."""
import numpy as np
import pytest

from synth import camera as cam
from synth.gl import GLContext, PrimitiveIdPass, projection_matrix, select_platform


@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
def test_projection_matrix_maps_points_to_their_pixels(projection):
    """Clip space -> window coordinates (y from the bottom) reproduces synth.camera.project, and the
    depth range [znear, zfar] maps to NDC z in [-1, 1]."""
    size = 48
    f = 70.0 if projection == "perspective" else 0.25
    k = cam.intrinsics_matrix(f, 1.1 * f, 20.3, 26.9).astype(np.float64)
    p = np.random.default_rng(0).normal(size=(20, 3)) * 20 + [0, 0, -250.0]
    m = projection_matrix(k, projection, size, znear=100.0, zfar=400.0)
    clip = np.c_[p, np.ones(len(p))] @ m.T  # (20, 4)
    ndc = clip[:, :3] / clip[:, 3:]
    u = (ndc[:, 0] + 1) / 2 * size
    v = size - (ndc[:, 1] + 1) / 2 * size  # window y grows upward, image v downward
    uv, _ = cam.project(p, k, projection)
    np.testing.assert_allclose(np.c_[u, v], uv, atol=1e-9)
    for depth, z in ((100.0, -1.0), (400.0, 1.0)):
        c = np.array([0.0, 0.0, -depth, 1.0]) @ m.T
        assert abs(c[2] / c[3] - z) < 1e-12


def test_select_platform_rejects_unknown_and_switching():
    with pytest.raises(ValueError, match="--platform"):
        select_platform("wgl")
    select_platform("osmesa")  # the tests' platform (conftest / the renderer fixtures use it)
    import OpenGL  # noqa: F401  (now OpenGL is imported: another platform cannot be chosen)

    with pytest.raises(ValueError, match="OpenGL already initialised"):
        select_platform("egl")


def test_id_pass_golden_square():
    """Two triangles of a square: ids 0 and 1 split along the diagonal, -1 around, rows from the top."""
    verts = np.array([[-50, -50, -200], [50, -50, -200], [50, 50, -200], [-50, 50, -200]], np.float32)
    tris = np.array([[0, 1, 2], [0, 2, 3]])
    k = cam.intrinsics_matrix(64, 64, 32, 32).astype(np.float64)
    ctx = GLContext("osmesa", 64, 64)
    try:
        ids = PrimitiveIdPass(64, tris, 4)
        out = ids.draw(verts, projection_matrix(k, "perspective", 64, 100.0, 400.0))
        ids.delete()
    finally:
        ctx.delete()
    expected = np.full((64, 64), -1)
    expected[16:48, 16:48] = 1
    ii, jj = np.mgrid[16:48, 16:48]
    expected[16:48, 16:48][(jj - 16 + 0.5) > (47 - ii + 0.5)] = 0  # triangle 0: lower right
    off_diagonal = np.abs((np.arange(64)[None] + 0.5) - (63 - np.arange(64)[:, None] + 0.5)) > 1  # centre not on it
    np.testing.assert_array_equal(out[off_diagonal], expected[off_diagonal])
    assert out.dtype == np.int32
