"""Mesh geometry: face and vertex normals, one function each for numpy arrays and torch tensors.

Conventions (docs/DESIGN.md): vertices are ``(..., N, 3)`` float arrays, triangles ``(T, 3)``
0-based integer indices, counter-clockwise when seen from outside, so that
``cross(v1 - v0, v2 - v0)`` points out of the surface.

:func:`vertex_normals` and :func:`face_normals` take numpy arrays or torch tensors (like
:func:`synth.lighting.sh_basis`). The numpy path is the fast one for data generation (one sparse
matrix product for the whole batch, with a cacheable incidence matrix); the torch path is
autograd-friendly (gathers and ``index_add``) and runs on any device. torch is imported only when
a tensor comes in. ``vertex_normals_reference`` is the slow, obvious ``np.add.at`` version kept
for tests.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

__all__ = [
    "check_triangles",
    "check_vertices",
    "face_normals",
    "vertex_normals",
    "vertex_normals_reference",
    "vertex_face_incidence",
]


def check_vertices(vertices: np.ndarray, name: str = "vertices") -> np.ndarray:
    """Return ``vertices`` as an array, raising ValueError unless it is ``(..., N, 3)``."""
    v = np.asarray(vertices)
    if v.ndim < 2 or v.shape[-1] != 3:
        raise ValueError(f"{name} must be (..., N, 3), got {tuple(v.shape)}")
    if not np.issubdtype(v.dtype, np.floating):
        v = v.astype(np.float64)
    return v


def check_triangles(triangles: np.ndarray, n_vertices: int, name: str = "triangles") -> np.ndarray:
    """Return ``triangles`` as an int64 array, raising ValueError unless it is ``(T, 3)`` with
    indices in ``[0, n_vertices)``."""
    t = np.asarray(triangles)
    if t.ndim != 2 or t.shape[1] != 3:
        raise ValueError(f"{name} must be (T, 3), got {tuple(t.shape)}")
    if t.size and not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"{name} must be integer, got dtype {t.dtype}")
    t = t.astype(np.int64, copy=False)
    if t.size and (t.min() < 0 or t.max() >= n_vertices):
        raise ValueError(
            f"{name} indices must be in [0, {n_vertices}), got [{int(t.min())}, {int(t.max())}]"
        )
    return t


def _is_torch(x) -> bool:
    """True for a torch tensor (without importing torch)."""
    return type(x).__module__.split(".", 1)[0] == "torch"


def _torch_triangles(vertices, triangles):
    """``(..., N, 3)`` tensor check; triangles as a long tensor on the vertices' device."""
    import torch

    if vertices.ndim < 2 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be (..., N, 3), got {tuple(vertices.shape)}")
    if not vertices.is_floating_point():
        raise ValueError(f"vertices must be a floating point tensor, got {vertices.dtype}")
    t = triangles if _is_torch(triangles) else torch.from_numpy(np.asarray(triangles, np.int64))
    if t.ndim != 2 or t.shape[1] != 3:
        raise ValueError(f"triangles must be (T, 3), got {tuple(t.shape)}")
    if t.is_floating_point():
        raise ValueError(f"triangles must be integer, got dtype {t.dtype}")
    return t.to(device=vertices.device, dtype=torch.long)


def _torch_face_normals(vertices, t):
    """``cross(v1 - v0, v2 - v0)`` ``(..., T, 3)`` for a checked tensor and long triangles."""
    import torch

    v0, v1, v2 = (vertices[..., t[:, k], :] for k in range(3))  # (..., T, 3) each
    return torch.cross(v1 - v0, v2 - v0, dim=-1)  # (..., T, 3), |n| = 2 * area


def face_normals(vertices, triangles, normalize: bool = True):
    """Per-triangle normals ``(..., T, 3)`` (numpy array or torch tensor, like ``vertices``).

    With ``normalize=False`` the result is ``cross(v1 - v0, v2 - v0)``, whose length is twice
    the triangle's area (the weight used by :func:`vertex_normals`). With ``normalize=True``
    the vectors are unit length; a degenerate (zero-area) triangle gives a zero vector.
    """
    if _is_torch(vertices):
        import torch.nn.functional as F

        n = _torch_face_normals(vertices, _torch_triangles(vertices, triangles))
        return F.normalize(n, dim=-1, eps=1e-12) if normalize else n
    v = check_vertices(vertices)
    t = check_triangles(triangles, v.shape[-2])
    n = np.stack(_cross_components(v, t), axis=-1)  # (..., T, 3), |n| = 2 * area
    if normalize:
        n = _normalize(n)
    return n


def _cross_components(v: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The x, y, z components ``(..., T)`` of ``cross(v1 - v0, v2 - v0)`` for checked vertices
    ``(..., N, 3)`` and triangles ``(T, 3)``. Per-coordinate 1-D gathers: much faster than
    gathering ``(N, 3)`` rows; same arithmetic as ``np.cross``."""
    x, y, z = (np.ascontiguousarray(v[..., c]) for c in range(3))  # (..., N) each
    i0, i1, i2 = (np.ascontiguousarray(t[:, k]) for k in range(3))  # (T,) each
    x0, y0, z0 = x[..., i0], y[..., i0], z[..., i0]
    ax, ay, az = x[..., i1] - x0, y[..., i1] - y0, z[..., i1] - z0  # v1 - v0
    bx, by, bz = x[..., i2] - x0, y[..., i2] - y0, z[..., i2] - z0  # v2 - v0
    return ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx


def vertex_face_incidence(triangles: np.ndarray, n_vertices: int) -> scipy.sparse.csr_matrix:
    """Sparse ``(N, T)`` matrix with a 1 at (vertex, triangle) for every corner of every
    triangle (a vertex listed twice in one degenerate triangle gets a 2)."""
    t = check_triangles(triangles, n_vertices)
    n_tri = t.shape[0]
    rows = t.reshape(-1)  # (T, 3) -> (3T,), corner k of triangle i at 3i + k
    cols = np.repeat(np.arange(n_tri, dtype=np.int64), 3)  # (3T,)
    data = np.ones(rows.shape[0], dtype=np.float64)
    # duplicate (row, col) pairs are summed by the constructor
    return scipy.sparse.csr_matrix((data, (rows, cols)), shape=(n_vertices, n_tri))


def vertex_normals(vertices, triangles, incidence: scipy.sparse.spmatrix | None = None):
    """Area-weighted unit vertex normals ``(..., N, 3)`` for vertices ``(..., N, 3)``.

    Each vertex normal is the normalised sum of ``cross(v1 - v0, v2 - v0)`` over the triangles
    that use it (each cross product is twice the triangle area, so big triangles weigh more).
    Vertices used by no triangle (or only by degenerate ones) get a zero vector; there is no
    meaningful normal for them. Output dtype follows the input (float32 in, float32 out).

    numpy: the batch is handled with a single sparse ``(N, T) @ (T, 3B)`` product. Pass
    ``incidence=vertex_face_incidence(triangles, N)`` to reuse it across calls (it is ~5% of
    the time for one mesh; :meth:`MorphableModel.vertex_normals` caches it).

    torch: differentiable (gathers, ``torch.cross``, ``index_add``), any device; ``triangles``
    may be a numpy array or a tensor. ``incidence`` is a numpy-path option and must be None.
    """
    if _is_torch(vertices):
        import torch
        import torch.nn.functional as F

        if incidence is not None:
            raise ValueError("incidence is for numpy vertices only; pass None with torch tensors")
        t = _torch_triangles(vertices, triangles)
        fn = _torch_face_normals(vertices, t)  # (..., T, 3)
        n = torch.zeros_like(vertices)
        for k in range(3):
            n.index_add_(n.ndim - 2, t[:, k], fn)  # scatter (..., T, 3) onto (..., N, 3)
        return F.normalize(n, dim=-1, eps=1e-12)
    v = check_vertices(vertices)
    n_vert = v.shape[-2]
    t = check_triangles(triangles, n_vert)
    fn = np.stack(_cross_components(v, t), axis=-1)  # (..., T, 3), |fn| = 2 * area
    batch_shape = fn.shape[:-2]
    n_tri = fn.shape[-2]
    if incidence is None:
        incidence = vertex_face_incidence(triangles, n_vert)  # (N, T)
    elif incidence.shape != (n_vert, n_tri):
        raise ValueError(f"incidence must be ({n_vert}, {n_tri}), got {incidence.shape}")
    # (..., T, 3) -> (T, ..., 3) -> (T, 3B) so one sparse product does the whole batch
    fn_cols = np.moveaxis(fn, -2, 0).reshape(n_tri, -1).astype(np.float64, copy=False)
    summed = incidence @ fn_cols  # (N, T) @ (T, 3B) -> (N, 3B)
    # (N, 3B) -> (N, ..., 3) -> (..., N, 3)
    summed = np.moveaxis(summed.reshape((n_vert,) + batch_shape + (3,)), 0, -2)
    return _normalize(summed).astype(v.dtype, copy=False)


def vertex_normals_reference(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Slow, obvious version of :func:`vertex_normals` (``np.add.at``), kept to test against."""
    v = check_vertices(vertices)
    t = check_triangles(triangles, v.shape[-2])
    flat = v.reshape((-1,) + v.shape[-2:]).astype(np.float64)  # (B, N, 3)
    out = np.zeros_like(flat)
    for b in range(flat.shape[0]):
        for tri in t:
            a, bb, c = flat[b, tri[0]], flat[b, tri[1]], flat[b, tri[2]]
            n = np.cross(bb - a, c - a)
            np.add.at(out[b], tri, n[None, :])
    return _normalize(out).reshape(v.shape).astype(v.dtype, copy=False)


def _normalize(x: np.ndarray) -> np.ndarray:
    """Unit vectors along the last axis; zero vectors stay zero."""
    # sqrt((x0^2 + x1^2) + x2^2): the sum np.linalg.norm does for 3 components, without its overhead
    if x.shape[-1] == 3:
        sq = x * x
        norm = np.sqrt((sq[..., 0] + sq[..., 1]) + sq[..., 2])[..., None]
    else:
        norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
