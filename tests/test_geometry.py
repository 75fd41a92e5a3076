"""morphable_model.geometry: face and vertex normals, one function each for numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morphable_model.geometry import face_normals, vertex_normals, vertex_normals_reference


# ------------------------------------------------------------------ numpy: golden values and the reference
def test_face_normals_golden():
    # an asymmetric triangle in the z = 1 plane, counter-clockwise seen from +z
    v = np.array([[0.0, 0.0, 1.0], [2.0, 0.0, 1.0], [0.0, 3.0, 1.0]])
    t = np.array([[0, 1, 2]])
    np.testing.assert_allclose(face_normals(v, t, normalize=False), [[0.0, 0.0, 6.0]])  # 2 * area 3
    np.testing.assert_allclose(face_normals(v, t), [[0.0, 0.0, 1.0]])
    np.testing.assert_allclose(face_normals(v, t[:, [0, 2, 1]]), [[0.0, 0.0, -1.0]])  # flipped winding


def test_vertex_normals_area_weighted_golden():
    # two triangles sharing edge 1-2: a big one in the z = 0 plane (area 2, normal +z) and a
    # small one in the x = 1 plane... bent upwards (area 0.5, normal +x)
    v = np.array([[-1.0, 0.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    t = np.array([[0, 1, 2], [1, 3, 2]])
    fn = face_normals(v, t, normalize=False)
    np.testing.assert_allclose(fn, [[0, 0, 4], [-2, 0, 0]])
    n = vertex_normals(v, t)
    np.testing.assert_allclose(n[0], [0, 0, 1])
    np.testing.assert_allclose(n[3], [-1, 0, 0])
    # shared vertices: (0, 0, 4) + (-2, 0, 0), normalised: the bigger triangle weighs more
    np.testing.assert_allclose(n[1], np.array([-2.0, 0, 4]) / np.sqrt(20))
    np.testing.assert_allclose(n[2], n[1])


def test_vertex_normals_matches_reference_batched(ellipsoid_model):
    m = ellipsoid_model
    v = m.shape(np.random.default_rng(4).standard_normal((3, m.n_id)))  # (3, N, 3) float32
    fast = vertex_normals(v, m.triangles)
    assert fast.shape == v.shape and fast.dtype == np.float32
    ref = vertex_normals_reference(v[:2], m.triangles)
    np.testing.assert_allclose(fast[:2], ref, atol=1e-5)
    np.testing.assert_allclose(vertex_normals(v[2], m.triangles), fast[2], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(fast, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(m.vertex_normals(v), fast, atol=1e-6)  # cached incidence
    with pytest.raises(ValueError, match=r"incidence must be \(525, 960\), got \(525, 959\)"):
        vertex_normals(v, m.triangles, incidence=m.incidence[:, :959])
    # odd batch shapes: (2, 1, N, 3)
    np.testing.assert_allclose(vertex_normals(v[:2, None], m.triangles)[:, 0], fast[:2], atol=1e-6)


def test_vertex_normals_sphere_are_radial():
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=3, radius=2.0)
    n = vertex_normals(np.asarray(s.vertices), np.asarray(s.faces))
    radial = s.vertices / np.linalg.norm(s.vertices, axis=1, keepdims=True)
    # a subdivided icosahedron is close to a sphere: normals within ~1 degree of radial
    assert np.einsum("ni,ni->n", n, radial).min() > np.cos(np.radians(1.0))


def test_vertex_normals_isolated_vertex_is_zero_and_bad_input():
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5]])
    n = vertex_normals(v, np.array([[0, 1, 2]]))
    np.testing.assert_array_equal(n[3], 0.0)
    with pytest.raises(ValueError, match=r"vertices must be \(\.\.\., N, 3\), got \(4, 2\)"):
        vertex_normals(v[:, :2], np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match=r"triangles indices must be in \[0, 4\), got \[0, 4\]"):
        vertex_normals(v, np.array([[0, 1, 4]]))


# ------------------------------------------------------------------ torch: the same function
def _random_mesh(seed: int = 0, batch: int = 3):
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=1, radius=50.0)  # 42 vertices, 80 triangles
    rng = np.random.default_rng(seed)
    v = np.asarray(s.vertices)[None] + rng.normal(scale=3.0, size=(batch,) + s.vertices.shape)  # (B, N, 3)
    return v, np.asarray(s.faces)


def test_torch_matches_numpy_batched_and_unbatched():
    v, t = _random_mesh()
    want = vertex_normals(v, t)  # (3, N, 3) float64 numpy
    got = vertex_normals(torch.from_numpy(v), torch.from_numpy(t))
    assert isinstance(got, torch.Tensor) and got.shape == v.shape and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)  # float64: rounding only
    # unbatched (N, 3), numpy triangles, float32 in -> float32 out
    one = vertex_normals(torch.from_numpy(v[1]).float(), t)
    assert one.shape == v[1].shape and one.dtype == torch.float32
    np.testing.assert_allclose(one.numpy(), want[1], atol=1e-5)
    # odd batch shape (2, 1, N, 3)
    np.testing.assert_allclose(vertex_normals(torch.from_numpy(v[:2, None]), t)[:, 0].numpy(), want[:2], atol=1e-12)
    fn = face_normals(torch.from_numpy(v), t, normalize=False)
    np.testing.assert_allclose(fn.numpy(), face_normals(v, t, normalize=False), atol=1e-10)
    np.testing.assert_allclose(face_normals(torch.from_numpy(v), t).numpy(), face_normals(v, t), atol=1e-12)


def test_torch_golden_and_isolated_vertex():
    v = torch.tensor([[-1.0, 0.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [7.0, 7.0, 7.0]])
    t = torch.tensor([[0, 1, 2], [1, 3, 2]])
    n = vertex_normals(v, t)
    torch.testing.assert_close(n[1], torch.tensor([-2.0, 0, 4]) / 20 ** 0.5)
    torch.testing.assert_close(n[0], torch.tensor([0.0, 0, 1]))
    assert (n[4] == 0).all()  # used by no triangle
    torch.testing.assert_close(face_normals(v, t, normalize=False), torch.tensor([[0.0, 0, 4], [-2, 0, 0]]))


def test_torch_gradcheck():
    v, t = _random_mesh(seed=1, batch=1)
    verts = torch.from_numpy(v).requires_grad_(True)  # (1, 42, 3) float64
    tri = torch.from_numpy(t)
    assert torch.autograd.gradcheck(lambda x: vertex_normals(x, tri), (verts,))
    assert torch.autograd.gradcheck(lambda x: face_normals(x, tri), (verts,))


def test_torch_bad_input():
    with pytest.raises(ValueError, match=r"vertices must be \(\.\.\., N, 3\)"):
        vertex_normals(torch.zeros(4, 2), np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="triangles must be"):
        vertex_normals(torch.zeros(4, 3), torch.zeros(2, 3))  # float triangles
    with pytest.raises(ValueError, match="incidence"):
        vertex_normals(torch.zeros(4, 3), np.array([[0, 1, 2]]), incidence=object())
