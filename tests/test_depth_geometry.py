"""train.depth_geometry: depth -> points -> normals (golden planes, a sphere, the shards' normals, gradcheck)."""

import math

import numpy as np
import pytest
import torch

from train.depth_geometry import DepthNormals, depth_normals, depth_to_points, erode_mask

PROJECTIONS = ["perspective", "weak_perspective"]


def _k(f, cx, cy, batch=None):
    k = torch.tensor([[f, 0.0, cx], [0.0, f * 1.1, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return k if batch is None else k.expand(batch, 3, 3).clone()


def _plane_depth(n, c, k, h, w, projection):
    """Depth of the plane ``n . p = c`` at every pixel centre (exact, by intersecting the rays)."""
    u = torch.arange(w, dtype=torch.float64) + 0.5
    v = torch.arange(h, dtype=torch.float64) + 0.5
    x = ((u[None, :] - k[0, 2]) / k[0, 0]).expand(h, w)
    y = (-(v[:, None] - k[1, 2]) / k[1, 1]).expand(h, w)
    if projection == "perspective":  # p = d (x, y, -1)
        return c / (n[0] * x + n[1] * y - n[2])
    return (n[0] * x + n[1] * y - c) / n[2]  # p = (x, y, -d)


def test_points_invert_the_projection():
    # depth_to_points followed by synth.camera.project gives back the pixel centres and the depth
    from synth.camera import project

    k = _k(40.0, 6.3, 4.9)
    depth = 300.0 + torch.rand(1, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for projection in PROJECTIONS:
        kk = k if projection == "perspective" else _k(0.2, 6.3, 4.9)
        p = depth_to_points(depth, kk, projection)[0].reshape(-1, 3).numpy()
        uv, d = project(p, kk.numpy(), projection)
        ii, jj = np.meshgrid(np.arange(9), np.arange(11), indexing="ij")
        np.testing.assert_allclose(uv[:, 0], jj.ravel() + 0.5, atol=1e-9)
        np.testing.assert_allclose(uv[:, 1], ii.ravel() + 0.5, atol=1e-9)
        np.testing.assert_allclose(d, depth[0].reshape(-1).numpy(), atol=1e-9)


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_tilted_plane_golden(projection):
    # An asymmetric tilt (x and y differ in sign and size) catches flipped axes and orientation:
    # the normal of a plane is exact (finite differences of coplanar points span the plane).
    n_true = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    n_true = n_true / n_true.norm()
    h, w = 13, 17
    k = _k(60.0, 8.2, 6.1) if projection == "perspective" else _k(0.3, 8.2, 6.1)
    c = -400.0 * n_true[2] if projection == "perspective" else -400.0 * n_true[2]  # through (0, 0, -400)
    depth = _plane_depth(n_true, c, k, h, w, projection)[None]
    assert (depth > 0).all()
    out = depth_normals(depth, k, projection=projection)
    assert isinstance(out, DepthNormals) and out.normals.shape == (1, h, w, 3) and out.mask.shape == (1, h, w)
    inner = torch.zeros(h, w, dtype=torch.bool)
    inner[1:-1, 1:-1] = True
    assert torch.equal(out.mask[0], inner)  # border pixels lack a neighbour
    np.testing.assert_allclose(out.normals[0][inner].numpy(), n_true.expand(int(inner.sum()), 3).numpy(), atol=1e-9)
    assert (out.normals[0][~inner] == 0).all()
    # toward the camera: n . (-p) > 0
    p = depth_to_points(depth, k, projection)[0]
    view = -p if projection == "perspective" else torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(p)
    assert ((out.normals[0] * view).sum(-1)[inner] > 0).all()


def test_sphere_normals_perspective():
    # Sphere of radius 60 mm centred 400 mm in front of the camera: exact depth by ray intersection,
    # exact normal (p - centre) / R. Central differences are second-order: with ~2 mm between
    # samples (f = 200 px) the error is a small fraction of a degree away from the rim; a sign or
    # axis error would give tens of degrees.
    h = w = 64
    f, r, dist = 200.0, 60.0, 400.0
    k = _k(f, 32.0, 32.0)
    k[1, 1] = f
    u = torch.arange(w, dtype=torch.float64) + 0.5
    x = ((u[None, :] - 32.0) / f).expand(h, w)
    y = (-(u[:, None] - 32.0) / f).expand(h, w)
    # |d (x, y, -1) - (0, 0, -dist)|^2 = r^2 -> a d^2 - 2 dist d + dist^2 - r^2 = 0, nearest root
    a = x * x + y * y + 1.0
    disc = dist * dist - a * (dist * dist - r * r)
    hit = disc > 0
    depth = torch.where(hit, (dist - disc.clamp_min(0).sqrt()) / a, torch.zeros_like(a))[None]
    out = depth_normals(depth, k)
    p = depth_to_points(depth, k)[0]
    n_true = (p - torch.tensor([0.0, 0.0, -dist], dtype=torch.float64)) / r
    facing = n_true[..., 2] > 0.5  # away from the rim, where the sampling is coarse against the curvature
    sel = out.mask[0] & facing
    assert int(sel.sum()) > 500
    ang = torch.rad2deg(torch.arccos((out.normals[0][sel] * n_true[sel]).sum(-1).clamp(-1, 1)))
    # measured mean 0.08, max 0.55 degrees (largest where the surface tilts 60 degrees away)
    assert float(ang.mean()) < 0.15 and float(ang.max()) < 1.0, (float(ang.mean()), float(ang.max()))


def test_against_the_shards_normals(detail_shards):
    # The shards store interpolated vertex normals of the detailed mesh; the normals of its
    # depth map are those of the triangle facets, sampled at pixel centres. On the head without
    # its 2-pixel outline, the mean angular difference (measured 1.2-2.0 degrees at 128 px with
    # the 2 mm-grid model v3) must stay below 3 degrees; a flipped axis gives tens of degrees.
    from synth.shards import ShardReader

    reader = ShardReader(sorted(detail_shards.glob("shard-*.h5"))[0])
    projection = reader.attrs["projection"]
    projection = projection.decode() if isinstance(projection, bytes) else str(projection)
    for i in range(len(reader)):
        s = reader.read(i)
        mask = torch.from_numpy(s["mask"])[None]
        out = depth_normals(torch.from_numpy(s["depth"])[None].double(), torch.from_numpy(s["intrinsics"]).double(),
                            mask, projection)
        sel = (out.mask & erode_mask(mask, 2))[0].numpy()
        assert sel.sum() > 0.7 * s["mask"].sum()
        cos = (out.normals[0].numpy()[sel] * s["normals"][sel]).sum(-1)
        mean_deg = float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())
        assert mean_deg < 3.0, (i, mean_deg)


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_gradcheck(projection):
    g = torch.Generator().manual_seed(1)
    depth = (200.0 + 5.0 * torch.rand(2, 5, 6, generator=g, dtype=torch.float64)).requires_grad_(True)
    mask = torch.ones(2, 5, 6, dtype=torch.bool)
    mask[1, 0, 0] = False
    k = _k(50.0, 3.1, 2.4, batch=2) if projection == "perspective" else _k(0.5, 3.1, 2.4, batch=2)
    k.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda d, kk: depth_normals(d, kk, mask, projection).normals, (depth, k))


@pytest.mark.parametrize("batch,h,w", [(1, 7, 9), (3, 10, 5)])
def test_shapes_mask_and_max_jump(batch, h, w):
    depth = torch.full((batch, h, w), 100.0)
    depth[:, :, w // 2:] = 130.0  # a 30 mm step
    depth[0, 0, 0] = 0.0  # off-surface pixel
    out = depth_normals(depth, _k(20.0, w / 2, h / 2).float())
    assert out.normals.shape == (batch, h, w, 3) and out.normals.dtype == torch.float32
    assert out.mask[0, 1, 1]  # (0, 0) is off but only a diagonal neighbour
    cut = depth_normals(depth, _k(20.0, w / 2, h / 2).float(), max_jump=5.0)
    assert not cut.mask[:, :, w // 2 - 1: w // 2 + 1].any()  # both sides of the step dropped
    assert cut.mask.sum() < out.mask.sum()
    # unit length where valid, zero elsewhere
    norms = out.normals.norm(dim=-1)
    assert torch.allclose(norms[out.mask], torch.ones(()), atol=1e-5) and (norms[~out.mask] == 0).all()


def test_off_surface_neighbours_invalidate():
    depth = torch.full((1, 5, 5), 50.0)
    depth[0, 2, 3] = 0.0
    out = depth_normals(depth, _k(10.0, 2.5, 2.5).float())
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[1:4, 1:4] = True
    expected[2, 3] = False  # off the surface
    expected[1, 3] = expected[3, 3] = expected[2, 2] = False  # a 4-neighbour is off
    assert torch.equal(out.mask[0], expected)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"depth must be \(B, H, W\)"):
        depth_normals(torch.ones(4, 4), torch.eye(3))
    with pytest.raises(ValueError, match=r"intrinsics must be \(3, 3\) or \(2, 3, 3\)"):
        depth_normals(torch.ones(2, 4, 4), torch.eye(4))
    with pytest.raises(ValueError, match="projection must be one of"):
        depth_to_points(torch.ones(1, 4, 4), torch.eye(3), "fisheye")
    with pytest.raises(ValueError, match=r"mask must be \(1, 4, 4\)"):
        depth_normals(torch.ones(1, 4, 4), torch.eye(3), torch.ones(1, 4, 5, dtype=torch.bool))


def test_erode_mask_golden():
    m = torch.zeros(1, 7, 8, dtype=torch.bool)
    m[0, 1:6, 1:7] = True
    e = erode_mask(m, 1)
    expected = torch.zeros(7, 8, dtype=torch.bool)
    expected[2:5, 2:6] = True
    assert torch.equal(e[0], expected)
    assert torch.equal(erode_mask(m, 0), m)
    full = torch.ones(1, 5, 5, dtype=torch.bool)  # the image border counts as off
    assert erode_mask(full, 1)[0].sum() == 9 and erode_mask(full, 3).sum() == 0
    with pytest.raises(ValueError, match="radius must be >= 0"):
        erode_mask(m, -1)
