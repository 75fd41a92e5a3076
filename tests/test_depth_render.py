"""Tests for train.depth_render: golden images, fast vs reference, gradients, pyrender agreement."""

import math

import numpy as np
import pytest
import torch

from train.depth_render import (
    Fragments,
    interpolate,
    project,
    rasterize,
    rasterize_reference,
    render_depth,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
PROJECTIONS = ["perspective", "weak_perspective"]


def _k(fx, fy, cx, cy, dtype=torch.float64):
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)


def _random_scene(seed, batch, n_verts=14, n_tris=18, projection="perspective"):
    """Random overlapping triangles in front of the camera, covering much of a 17x23 image."""
    g = torch.Generator().manual_seed(seed)
    verts = torch.randn(batch, n_verts, 3, generator=g, dtype=torch.float64)
    verts = verts * torch.tensor([30.0, 25.0, 20.0], dtype=torch.float64)
    verts[..., 2] -= 120.0
    triangles = torch.randint(0, n_verts, (n_tris, 3), generator=g)
    keep = (triangles[:, 0] != triangles[:, 1]) & (triangles[:, 1] != triangles[:, 2]) & (triangles[:, 0] != triangles[:, 2])
    triangles = triangles[keep]
    # Drop repeated vertex sets: duplicates tie exactly in depth (tested separately).
    _, first = np.unique(np.sort(triangles.numpy(), 1), axis=0, return_index=True)
    triangles = triangles[np.sort(first)]
    if projection == "perspective":
        k = _k(90.0, 95.0, 11.3, 8.6)
    else:
        k = _k(0.35, 0.33, 11.3, 8.6)
    # Per-image intrinsics that differ slightly, to exercise the (B, 3, 3) path.
    k = k.expand(batch, 3, 3).clone()
    k[:, 0, 2] += torch.arange(batch, dtype=torch.float64) * 0.37
    return verts, triangles, k


def _ellipsoid_grid(n_u, n_v, radii=(70.0, 90.0, 55.0)):
    """Front half of an ellipsoid (facing +z) as a triangle grid, CCW seen from outside."""
    th = np.linspace(-0.45 * math.pi, 0.45 * math.pi, n_u)  # around y (left-right)
    ph = np.linspace(-0.45 * math.pi, 0.45 * math.pi, n_v)  # around x (down-up)
    T, P = np.meshgrid(th, ph, indexing="ij")
    x = radii[0] * np.sin(T) * np.cos(P)
    y = radii[1] * np.sin(P)
    z = radii[2] * np.cos(T) * np.cos(P)
    verts = np.stack([x, y, z], -1).reshape(-1, 3)
    idx = np.arange(n_u * n_v).reshape(n_u, n_v)
    a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
    c, d = idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    triangles = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return verts, triangles


# ------------------------------------------------------------------------------------------
# Golden, hand-computed images
# ------------------------------------------------------------------------------------------

# Right triangle whose corners project to pixel coords (u, v) = (1, 1), (9, 1), (1, 5) in a
# 6 x 10 image: long leg along image x, short leg along image y (down). Covered pixel centres
# (j + 0.5, i + 0.5) satisfy (u - 1) / 8 + (v - 1) / 4 <= 1, worked out row by row:
ASYM_MASK = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 1, 1, 1, 1, 0, 0],  # v = 1.5: u <= 8
        [0, 1, 1, 1, 1, 1, 0, 0, 0, 0],  # v = 2.5: u <= 6
        [0, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # v = 3.5: u <= 4
        [0, 1, 0, 0, 0, 0, 0, 0, 0, 0],  # v = 4.5: u <= 2
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ],
    dtype=bool,
)


@pytest.mark.parametrize("projection", PROJECTIONS)
@pytest.mark.parametrize("device", DEVICES)
def test_asymmetric_triangle_catches_flipped_axes(projection, device):
    # fx = fy = 10, (cx, cy) = (6, 4), depth 10: u = 6 + x, v = 4 - y (perspective);
    # weak perspective with s = 1 gives the same pixels.
    pix = np.array([[1.0, 1.0], [9.0, 1.0], [1.0, 5.0]])
    x, y = pix[:, 0] - 6.0, 4.0 - pix[:, 1]
    verts = torch.tensor(np.stack([x, y, -10.0 * np.ones(3)], 1))[None].to(device)
    f = 10.0 if projection == "perspective" else 1.0
    k = _k(f, f, 6.0, 4.0).to(device)
    triangles = torch.tensor([[0, 1, 2]], device=device)
    frag = rasterize(verts, triangles, k, (6, 10), projection)
    assert frag.mask.shape == (1, 6, 10)
    np.testing.assert_array_equal(frag.mask[0].cpu().numpy(), ASYM_MASK)
    np.testing.assert_array_equal(frag.tri_id[0].cpu().numpy(), np.where(ASYM_MASK, 0, -1))
    # Constant depth plane: depth 10 inside, 0 outside.
    np.testing.assert_allclose(frag.depth[0].cpu().numpy(), np.where(ASYM_MASK, 10.0, 0.0))
    # Interpolating the pixel coordinates of the corners (an affine attribute on a fronto-parallel
    # triangle) gives back each pixel centre.
    uv = interpolate(torch.tensor(pix, device=device), triangles, frag)[0].cpu().numpy()
    ii, jj = np.nonzero(ASYM_MASK)
    np.testing.assert_allclose(uv[ii, jj, 0], jj + 0.5, atol=1e-12)
    np.testing.assert_allclose(uv[ii, jj, 1], ii + 0.5, atol=1e-12)
    assert (uv[~ASYM_MASK] == 0).all()


def _square(z_left, z_right, half=20.0):
    """Square [-half, half]^2 in camera x/y, two CCW triangles, depth varying linearly in x."""
    verts = torch.tensor(
        [
            [-half, -half, -z_left],
            [half, -half, -z_right],
            [half, half, -z_right],
            [-half, half, -z_left],
        ],
        dtype=torch.float64,
    )
    triangles = torch.tensor([[0, 1, 2], [0, 2, 3]])
    return verts, triangles


def test_square_at_known_depth():
    # Square of half-width 20 mm at 100 mm with f = 50, c = (8, 8): spans u, v in [-2, 18],
    # i.e. covers the whole 16 x 16 image.
    verts, triangles = _square(100.0, 100.0)
    depth = render_depth(verts[None], triangles, _k(50.0, 50.0, 8.0, 8.0), (16, 16))
    torch.testing.assert_close(depth, torch.full((1, 16, 16), 100.0, dtype=torch.float64), rtol=1e-14, atol=0)


def test_tilted_plane_perspective_depth_by_hand():
    # Plane through x = -20 at depth 80 and x = 20 at depth 120: d = 100 + x.
    # The ray through pixel u has x = d (u - cx) / fx, so d = 100 / (1 - (u - cx) / fx),
    # independent of v; pixel centres u = j + 0.5.
    verts, triangles = _square(80.0, 120.0)
    fx, cx = 60.0, 8.0
    frag = rasterize(verts[None], triangles, _k(fx, fx, cx, 8.0), (16, 16))
    assert frag.mask.all()
    u = np.arange(16) + 0.5
    expected = 100.0 / (1.0 - (u - cx) / fx)
    np.testing.assert_allclose(frag.depth[0].numpy(), np.broadcast_to(expected, (16, 16)), rtol=1e-12)
    # Perspective-correct barycentrics interpolate camera-space x exactly (x = d - 100).
    x = interpolate(verts[:, :1], triangles, frag)[0, ..., 0].numpy()
    np.testing.assert_allclose(x, np.broadcast_to(expected - 100.0, (16, 16)), rtol=1e-12, atol=1e-12)


def test_tilted_plane_weak_perspective_depth_by_hand():
    # Weak perspective, s = 0.4 px/mm, cx = 8: x = (u - 8) / 0.4 and d = 100 + x (linear in u).
    verts, triangles = _square(80.0, 120.0)
    s = 0.4
    frag = rasterize(verts[None], triangles, _k(s, s, 8.0, 8.0), (16, 16), "weak_perspective")
    assert frag.mask.all()
    u = np.arange(16) + 0.5
    expected = 100.0 + (u - 8.0) / s
    np.testing.assert_allclose(frag.depth[0].numpy(), np.broadcast_to(expected, (16, 16)), rtol=1e-12)


def test_nearest_surface_wins_and_culling():
    # Two parallel full-image squares: the near one (depth 50) hides the far one (depth 90),
    # whichever order the triangles come in.
    near, triangles = _square(50.0, 50.0)
    far, _ = _square(90.0, 90.0)
    for verts in (torch.cat([far, near]), torch.cat([near, far])):
        all_faces = torch.cat([triangles, triangles + 4])
        frag = rasterize(verts[None], all_faces, _k(20.0, 20.0, 8.0, 8.0), (16, 16))
        torch.testing.assert_close(frag.depth, torch.full_like(frag.depth, 50.0), rtol=1e-14, atol=0)
    # Reversed winding (clockwise as seen from the camera) is back-facing: culled on request.
    verts, triangles = _square(50.0, 50.0)
    k = _k(20.0, 20.0, 8.0, 8.0)
    assert rasterize(verts[None], triangles, k, (16, 16), cull_backfaces=True).mask.all()
    back = rasterize(verts[None], triangles.flip(1), k, (16, 16), cull_backfaces=True)
    assert not back.mask.any()
    assert rasterize(verts[None], triangles.flip(1), k, (16, 16)).mask.all()


def test_exact_depth_ties_go_to_smallest_triangle_id():
    verts, triangles = _square(70.0, 90.0)
    # The same two triangles listed again (rotated vertex order) after the originals.
    dup = torch.cat([triangles, triangles.roll(1, dims=1)])
    frag = rasterize(verts[None], dup, _k(50.0, 50.0, 8.0, 8.0), (16, 16))
    assert frag.mask.all() and (frag.tri_id <= 1).all()
    dup = torch.cat([triangles.roll(1, dims=1), triangles])
    frag = rasterize(verts[None], dup, _k(50.0, 50.0, 8.0, 8.0), (16, 16))
    assert frag.mask.all() and (frag.tri_id <= 1).all()


def test_triangles_behind_camera_are_dropped():
    verts, triangles = _square(100.0, 100.0)
    behind = verts.clone()
    behind[1, 2] = 5.0  # one corner behind the camera: triangles using vertex 1 are dropped
    frag = rasterize(behind[None], triangles, _k(50.0, 50.0, 8.0, 8.0), (16, 16))
    assert (frag.tri_id[frag.mask] == 1).all() and frag.mask.any()


# ------------------------------------------------------------------------------------------
# Fast vs reference
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("projection", PROJECTIONS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("cull", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_fast_matches_reference(projection, batch, cull, device):
    verts, triangles, k = _random_scene(seed=batch + 10 * cull, batch=batch, projection=projection)
    size = (17, 23)  # odd, non-square
    ref = rasterize_reference(verts, triangles, k, size, projection, cull_backfaces=cull)
    assert ref.mask.sum() > 100  # the scene covers a good part of the image
    fast = rasterize(verts.to(device), triangles.to(device), k.to(device), size, projection, cull_backfaces=cull)
    assert isinstance(fast, Fragments)
    assert fast.tri_id.shape == (batch, 17, 23) and fast.tri_id.dtype == torch.long
    assert fast.bary.shape == (batch, 17, 23, 3) and fast.depth.shape == (batch, 17, 23)
    torch.testing.assert_close(fast.tri_id.cpu(), ref.tri_id, rtol=0, atol=0)
    torch.testing.assert_close(fast.mask.cpu(), ref.mask, rtol=0, atol=0)
    # float64 everywhere: differences are rounding only.
    torch.testing.assert_close(fast.bary.cpu(), ref.bary, rtol=0, atol=1e-10)
    torch.testing.assert_close(fast.depth.cpu(), ref.depth, rtol=1e-12, atol=1e-10)


def test_overlaps_actually_occur_in_random_scene():
    # Guard for the test above: several triangles compete for many pixels.
    verts, triangles, k = _random_scene(seed=1, batch=1)
    hits = torch.zeros(17, 23, dtype=torch.long)
    for t in range(triangles.shape[0]):
        hits += rasterize(verts, triangles[t : t + 1], k, (17, 23)).mask[0].long()
    assert (hits >= 2).sum() > 50


def test_float32_matches_reference():
    verts, triangles, k = _random_scene(seed=7, batch=3)
    ref = rasterize_reference(verts, triangles, k, (17, 23))
    fast = rasterize(verts.float(), triangles, k.float(), (17, 23))
    same = fast.tri_id == ref.tri_id
    # float32 rounding may flip a pixel centre lying within ~1e-5 px of an edge; none expected here.
    assert same.all()
    torch.testing.assert_close(fast.depth.double(), ref.depth, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(fast.bary.double(), ref.bary, rtol=0, atol=1e-4)


def test_chunking_gives_identical_result():
    verts, triangles, k = _random_scene(seed=3, batch=3)
    whole = rasterize(verts, triangles, k, (17, 23))
    # max_candidates is raised to H * W internally; this still forces many chunks.
    chunked = rasterize(verts, triangles, k, (17, 23), max_candidates=1)
    assert torch.equal(whole.tri_id, chunked.tri_id)
    assert torch.equal(whole.depth, chunked.depth)


def test_interpolate_shapes_and_batch_attrs():
    verts, triangles, k = _random_scene(seed=4, batch=3)
    frag = rasterize(verts, triangles, k, (17, 23))
    shared = torch.rand(verts.shape[1], 5, dtype=torch.float64)
    a = interpolate(shared, triangles, frag)
    b = interpolate(shared.expand(3, -1, -1), triangles, frag)
    assert a.shape == (3, 17, 23, 5)
    assert torch.equal(a, b)
    assert (a[~frag.mask] == 0).all()
    # Interpolating the camera-frame vertices reproduces the depth map (perspective-correct).
    z = interpolate(-verts[..., 2:], triangles, frag)[..., 0]
    torch.testing.assert_close(z, frag.depth, rtol=1e-12, atol=0)


def test_project_convention():
    p = torch.tensor([[[10.0, 20.0, -200.0]]], dtype=torch.float64)
    k = _k(400.0, 300.0, 64.0, 48.0)
    out = project(p, k)
    torch.testing.assert_close(out, torch.tensor([[[64.0 + 20.0, 48.0 - 30.0, 200.0]]], dtype=torch.float64))
    out = project(p, _k(2.0, 3.0, 64.0, 48.0), "weak_perspective")
    torch.testing.assert_close(out, torch.tensor([[[64.0 + 20.0, 48.0 - 60.0, 200.0]]], dtype=torch.float64))


def test_project_matches_synth_camera():
    from synth import camera as synth_camera

    rng = np.random.default_rng(0)
    pts = rng.normal(size=(2, 7, 3)) * 30.0 + np.array([0.0, 0.0, -400.0])
    k = np.array([[500.0, 0.0, 60.0], [0.0, 480.0, 70.0], [0.0, 0.0, 1.0]])
    for projection in PROJECTIONS:
        kk = k if projection == "perspective" else np.array([[1.3, 0, 60.0], [0, 1.3, 70.0], [0, 0, 1]])
        ours = project(torch.from_numpy(pts), torch.from_numpy(kk), projection).numpy()
        for b in range(2):
            uv, depth = synth_camera.project(pts[b], kk, projection)
            np.testing.assert_allclose(ours[b, :, :2], uv, rtol=1e-12)
            np.testing.assert_allclose(ours[b, :, 2], depth, rtol=1e-12)


def test_bad_arguments_raise_value_error_naming_them():
    verts, triangles = _square(100.0, 100.0)
    k = _k(50.0, 50.0, 8.0, 8.0)
    with pytest.raises(ValueError, match="verts_cam"):
        rasterize(verts, triangles, k, (16, 16))
    with pytest.raises(ValueError, match="triangles"):
        rasterize(verts[None], triangles[:, :2], k, (16, 16))
    with pytest.raises(ValueError, match="triangles"):
        rasterize(verts[None], triangles + 10, k, (16, 16))
    with pytest.raises(ValueError, match="intrinsics"):
        rasterize(verts[None], triangles, k[None].expand(2, 3, 3), (16, 16))
    with pytest.raises(ValueError, match="projection"):
        rasterize(verts[None], triangles, k, (16, 16), "orthographic")
    with pytest.raises(ValueError, match="size"):
        rasterize(verts[None], triangles, k, (0, 16))
    frag = rasterize(verts[None], triangles, k, (16, 16))
    with pytest.raises(ValueError, match="attrs"):
        interpolate(torch.zeros(2, 4, 3, dtype=torch.float64), triangles, frag)


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_agrees_with_synth_reference_rasterizer(ellipsoid_model, projection):
    # The numpy reference with back triangles culled, as the synth renderer's GL pass draws, on a posed
    # model mesh: checks that both stages agree on projection, winding and pixel centres.
    from synth import camera
    from synth.raster import rasterize_reference as numpy_reference

    f = 90.0 if projection == "perspective" else 90.0 / 500.0
    verts_cam = camera.to_camera(
        np.asarray(ellipsoid_model.mean_shape, np.float64),
        camera.rotation_matrix(0.35, -0.15, 0.1),
        np.array([4.0, -3.0, -500.0]),
    )
    k = np.array([[f, 0.0, 19.7], [0.0, f, 20.2], [0.0, 0.0, 1.0]])
    ref = numpy_reference(verts_cam, ellipsoid_model.triangles, k, 40, projection, cull_backfaces=True)
    tri_ref, depth_ref = ref.tri_id, ref.depth
    assert 200 < (tri_ref >= 0).sum() < 1500  # silhouette inside the image
    frag = rasterize(
        torch.from_numpy(verts_cam)[None], ellipsoid_model.triangles, k, (40, 40), projection, cull_backfaces=True
    )
    np.testing.assert_array_equal(frag.tri_id[0].numpy(), tri_ref)
    # float64 on both sides: rounding only
    np.testing.assert_allclose(frag.depth[0].numpy(), depth_ref, rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------------
# Gradients
# ------------------------------------------------------------------------------------------


def _tilted_mesh():
    """Two tilted, non-coplanar triangles sharing an edge, filling the middle of a 12x12 image."""
    verts = torch.tensor(
        [[-20.0, -18.0, -95.0], [22.0, -20.0, -110.0], [19.0, 21.0, -100.0], [-21.0, 19.0, -90.0]],
        dtype=torch.float64,
    )
    return verts, torch.tensor([[0, 1, 2], [0, 2, 3]])


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_gradcheck_depth_and_attribute(projection):
    verts, triangles = _tilted_mesh()
    k = _k(20.0, 21.0, 6.0, 6.0) if projection == "perspective" else _k(0.2, 0.21, 6.0, 6.0)
    frag = rasterize(verts[None], triangles, k, (12, 12), projection)
    # Keep pixels with every barycentric > 0.05, so a 1e-6 perturbation cannot change visibility.
    interior = frag.mask[0] & (frag.bary[0] > 0.05).all(-1)
    assert interior.sum() > 20
    attrs = torch.tensor(
        [[0.1, 0.9], [0.5, 0.2], [0.8, 0.7], [0.3, 0.4]], dtype=torch.float64, requires_grad=True
    )

    def fn(v, a, kk):
        fr = rasterize(v[None], triangles, kk, (12, 12), projection)
        return fr.depth[0][interior], interpolate(a, triangles, fr)[0][interior]

    v = verts.clone().requires_grad_(True)
    kk = k.clone().requires_grad_(True)  # gradients reach the intrinsics too
    # Depths are ~100 mm: central differences with eps = 1e-6 carry ~1e-8 rounding error.
    assert torch.autograd.gradcheck(fn, (v, attrs, kk), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradient_matches_finite_difference_of_reference():
    # Independent check: d(sum of interior depths)/d(verts) vs central differences of the
    # numpy reference rasterizer.
    verts, triangles = _tilted_mesh()
    k = _k(20.0, 21.0, 6.0, 6.0)
    frag = rasterize(verts[None], triangles, k, (12, 12))
    interior = (frag.mask[0] & (frag.bary[0] > 0.05).all(-1)).numpy()
    v = verts.clone().requires_grad_(True)
    rasterize(v[None], triangles, k, (12, 12)).depth[0][torch.from_numpy(interior)].sum().backward()
    num = np.zeros((4, 3))
    h = 1e-5
    for i in range(4):
        for j in range(3):
            vp, vm = verts.clone(), verts.clone()
            vp[i, j] += h
            vm[i, j] -= h
            dp = rasterize_reference(vp[None], triangles, k, (12, 12)).depth[0].numpy()[interior].sum()
            dm = rasterize_reference(vm[None], triangles, k, (12, 12)).depth[0].numpy()[interior].sum()
            num[i, j] = (dp - dm) / (2 * h)
    np.testing.assert_allclose(v.grad.numpy(), num, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------
# Agreement with pyrender (OpenGL via OSMesa)
# ------------------------------------------------------------------------------------------


def _pyrender_depth(verts, triangles, fx, fy, cx, cy, size):
    from synth.gl import import_pyrender

    pyrender = import_pyrender("osmesa")  # the platform and pyrender's numpy-2 shim, in one place
    import trimesh

    h, w = size
    mesh = pyrender.Mesh.from_trimesh(trimesh.Trimesh(verts, triangles, process=False), smooth=False)
    scene = pyrender.Scene()
    scene.add(mesh)
    scene.add(pyrender.IntrinsicsCamera(fx, fy, cx, cy, znear=100.0, zfar=2000.0), pose=np.eye(4))
    renderer = pyrender.OffscreenRenderer(w, h)
    try:
        return renderer.render(scene, flags=pyrender.RenderFlags.DEPTH_ONLY)
    finally:
        renderer.delete()


def test_agrees_with_pyrender_depth():
    verts, triangles = _ellipsoid_grid(48, 56)  # 2688 vertices, ~5.2k triangles, face-sized in mm
    rng = np.random.default_rng(0)
    verts = verts + rng.normal(scale=0.3, size=verts.shape)  # bumpy, not a textbook quadric
    verts[:, 2] -= 520.0
    size = (64, 64)
    fx, fy, cx, cy = 200.0, 210.0, 31.3, 33.1
    gl = _pyrender_depth(verts, triangles, fx, fy, cx, cy, size)
    ours = render_depth(
        torch.from_numpy(verts)[None], torch.from_numpy(triangles), _k(fx, fy, cx, cy), size
    )[0].numpy()
    fg_gl, fg_ours = gl > 0, ours > 0
    # Silhouettes agree up to a handful of edge pixels.
    assert (fg_gl != fg_ours).sum() <= 0.01 * fg_gl.sum()
    both = fg_gl & fg_ours
    # Interior: drop a 2-pixel band along the silhouette, where a pixel may hit a different facet.
    interior = both.copy()
    for axis in (0, 1):
        for shift in (-2, -1, 1, 2):
            interior &= np.roll(both, shift, axis=axis)
    assert interior.sum() > 1000
    diff = np.abs(gl[interior] - ours[interior])
    # pyrender reads a 24-bit depth buffer: at 500 mm with znear = 100 its step is ~1.5e-4 mm
    # (measured: mean 7e-5 mm, max 3.4e-4 mm); a flipped or shifted image is off by ~2 mm.
    assert diff.mean() < 1e-3
    assert diff.max() < 5e-3
