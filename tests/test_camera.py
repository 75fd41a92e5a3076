"""synth.camera: rotation convention, projection golden values, rays, numpy/torch agreement."""
import math

import numpy as np
import pytest
import torch

from synth.camera import intrinsics_matrix, pixel_rays, project, rotation_matrix, to_camera


def test_rotation_orthonormal_and_order():
    r = rotation_matrix(0.3, -0.2, 0.5)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(r), 1.0)
    # R = Rz(roll) Rx(pitch) Ry(yaw)
    np.testing.assert_allclose(r, rotation_matrix(0, 0, 0.5) @ rotation_matrix(0, -0.2, 0) @ rotation_matrix(0.3, 0, 0))


def test_positive_yaw_turns_face_to_image_right():
    # the face looks along +z (toward the camera); after +yaw its normal has +x = image right
    n = rotation_matrix(math.radians(30), 0, 0) @ np.array([0.0, 0, 1])
    assert n[0] > 0.4 and abs(n[1]) < 1e-12
    # positive pitch about x: y -> z (nose tips... whatever the sign, check the right-hand rule)
    np.testing.assert_allclose(rotation_matrix(0, math.pi / 2, 0) @ [0, 1.0, 0], [0, 0, 1.0], atol=1e-12)
    np.testing.assert_allclose(rotation_matrix(0, 0, math.pi / 2) @ [1.0, 0, 0], [0, 1.0, 0], atol=1e-12)


def test_project_golden_perspective_and_weak():
    k = intrinsics_matrix(100.0, 120.0, 32.0, 30.0)
    p = np.array([[10.0, 20.0, -200.0], [0.0, 0.0, -50.0]])
    uv, d = project(p, k, "perspective")
    np.testing.assert_allclose(uv, [[32 + 100 * 10 / 200, 30 - 120 * 20 / 200], [32, 30]])
    np.testing.assert_allclose(d, [200, 50])
    uv, d = project(p, intrinsics_matrix(2.0, 2.0, 32.0, 30.0), "weak_perspective")
    np.testing.assert_allclose(uv, [[52, -10], [32, 30]])
    np.testing.assert_allclose(d, [200, 50])


def test_project_torch_batched_matches_numpy():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(2, 5, 3)) + np.array([0, 0, -300.0])
    k = np.stack([intrinsics_matrix(200, 200, 32, 32), intrinsics_matrix(150, 160, 30, 33)]).astype(np.float64)
    uv_t, d_t = project(torch.tensor(p), torch.tensor(k))
    for b in range(2):
        uv, d = project(p[b], k[b])
        np.testing.assert_allclose(uv_t[b].numpy(), uv, rtol=1e-12)
        np.testing.assert_allclose(d_t[b].numpy(), d, rtol=1e-12)


def test_min_depth_keeps_points_behind_the_camera_finite():
    """``min_depth`` (what training uses on predicted poses): the depth is floored before the
    division, numpy and torch alike; points in front are unchanged; weak perspective ignores it."""
    k = intrinsics_matrix(100.0, 100.0, 32.0, 32.0)
    p = np.array([[10.0, 5.0, -200.0], [1e-3, 0.0, 0.0], [2.0, -1.0, 50.0]])  # in front, on, behind
    uv, d = project(p, k, "perspective", min_depth=1e-6)
    np.testing.assert_allclose(d, [200.0, 1e-6, 1e-6])
    np.testing.assert_allclose(uv[0], project(p[:1], k)[0][0])  # in front: as without the floor
    np.testing.assert_allclose(uv[1], [32 + 100 * 1e-3 / 1e-6, 32])
    assert np.isfinite(uv).all()
    uv_t, d_t = project(torch.tensor(p[None]), torch.tensor(k[None].astype(np.float64)), min_depth=1e-6)
    np.testing.assert_allclose(uv_t[0].numpy(), uv, rtol=1e-12)
    np.testing.assert_allclose(d_t[0].numpy(), d, rtol=1e-12)
    uv_w, d_w = project(p, k, "weak_perspective", min_depth=1e-6)
    np.testing.assert_allclose(d_w, [200.0, 0.0, -50.0])  # weak perspective divides by nothing


def test_project_rejects_bad_input():
    with pytest.raises(ValueError, match="points_cam"):
        project(np.zeros((4, 2)), np.eye(3))
    with pytest.raises(ValueError, match="projection"):
        project(np.zeros((4, 3)), np.eye(3), "fisheye")
    with pytest.raises(ValueError, match="intrinsics"):
        project(np.zeros((2, 4, 3)), np.zeros((3, 3, 3)))  # 3 cameras for 2 point sets
    with pytest.raises(ValueError, match="rotation"):
        to_camera(np.zeros((4, 3)), np.eye(2), np.zeros(3))
    with pytest.raises(ValueError, match="translation"):
        to_camera(np.zeros((2, 4, 3)), np.zeros((2, 3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="pose"):
        rotation_matrix(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="pose"):
        rotation_matrix(torch.zeros(4))


def test_rotation_pose_forms_agree_numpy_and_torch():
    """The scalar form, the batched numpy form and the batched torch form are one function."""
    pose = np.random.default_rng(2).uniform(-1.5, 1.5, (5, 3))
    per_sample = np.stack([rotation_matrix(*p) for p in pose])  # (5, 3, 3)
    # the same float64 arithmetic per sample: identical bits whether batched or not
    np.testing.assert_array_equal(rotation_matrix(pose[0]), per_sample[0])
    batched = rotation_matrix(pose)
    assert batched.shape == (5, 3, 3) and batched.dtype == np.float64
    np.testing.assert_allclose(batched, per_sample, rtol=0, atol=1e-15)  # batched matmul: rounding only
    assert rotation_matrix(pose.reshape(5, 1, 3)).shape == (5, 1, 3, 3)
    t = rotation_matrix(torch.tensor(pose))
    assert t.shape == (5, 3, 3) and t.dtype == torch.float64
    np.testing.assert_allclose(t.numpy(), per_sample, rtol=0, atol=1e-15)
    assert rotation_matrix(torch.tensor(pose, dtype=torch.float32)).dtype == torch.float32


def test_rotation_gradcheck():
    pose = torch.tensor([[0.3, -0.2, 0.5], [1.1, 0.4, -0.7]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rotation_matrix, (pose,))


def test_to_camera_batched_numpy_and_torch():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(2, 6, 3)) * 50
    r = rotation_matrix(rng.uniform(-1, 1, (2, 3)))  # (2, 3, 3)
    t = rng.normal(size=(2, 3)) + [0, 0, -400.0]
    want = np.stack([to_camera(v[b], r[b], t[b]) for b in range(2)])
    np.testing.assert_allclose(to_camera(v, r, t), want, rtol=1e-12)
    got = to_camera(torch.tensor(v), torch.tensor(r), torch.tensor(t))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    # one shared rotation for a batch, torch
    np.testing.assert_allclose(to_camera(torch.tensor(v), torch.tensor(r[0]), torch.tensor(t[0])).numpy(),
                               np.stack([to_camera(v[b], r[0], t[0]) for b in range(2)]), rtol=1e-12)


def test_project_per_point_set_cameras_and_dtype_promotion():
    """``(..., 3, 3)`` intrinsics give one camera per (N, 3) point set; a float32 / float64 pair is
    computed in float64 (torch)."""
    rng = np.random.default_rng(4)
    p = rng.normal(size=(3, 4, 3)) * 20 + [0, 0, -300.0]
    k = np.stack([intrinsics_matrix(100 + 10 * b, 90, 30, 31) for b in range(3)]).astype(np.float64)
    uv, d = project(torch.tensor(p, dtype=torch.float32), torch.tensor(k))
    assert uv.dtype == torch.float64 and uv.shape == (3, 4, 2) and d.shape == (3, 4)
    for b in range(3):
        np.testing.assert_allclose(uv[b].numpy(), project(p[b].astype(np.float32).astype(np.float64), k[b])[0],
                                   rtol=1e-12)


@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
def test_pixel_rays_hit_pixel_centres(projection):
    size = 9
    k = intrinsics_matrix(12.0, 13.0, 4.2, 4.7) if projection == "perspective" else intrinsics_matrix(0.5, 0.5, 4.2, 4.7)
    o, d = pixel_rays(size, k, projection)
    pts = o + 37.0 * d  # every ray at depth 37
    uv, depth = project(pts.reshape(-1, 3), k, projection)
    jj, ii = np.meshgrid(np.arange(size), np.arange(size))
    np.testing.assert_allclose(uv, np.stack([jj.ravel() + 0.5, ii.ravel() + 0.5], -1), atol=1e-9)
    np.testing.assert_allclose(depth, 37.0)


def test_to_camera():
    r = rotation_matrix(0.1, 0.2, 0.3)
    t = np.array([1.0, 2.0, -300.0])
    v = np.random.default_rng(1).normal(size=(4, 3))
    np.testing.assert_allclose(to_camera(v, r, t), (r @ v.T).T + t)


@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
def test_unproject_inverts_project_numpy_and_torch(projection):
    from synth.camera import unproject

    rng = np.random.default_rng(3)
    k = np.array([[[90.0, 0, 30.0], [0, 95.0, 20.0], [0, 0, 1]], [[0.4, 0, 31.0], [0, 0.45, 19.0], [0, 0, 1]]])
    k = k[:1].repeat(2, 0) if projection == "perspective" else k[1:].repeat(2, 0)  # (2, 3, 3)
    pts = rng.normal(0, 40, (2, 7, 3))
    pts[..., 2] -= 400.0
    uv, d = project(pts, k, projection)
    np.testing.assert_allclose(unproject(uv, d, k, projection), pts, atol=1e-9)
    t = unproject(torch.tensor(uv), torch.tensor(d, requires_grad=True), torch.tensor(k), projection)
    np.testing.assert_allclose(t.detach().numpy(), pts, atol=1e-9)
    t.sum().backward()  # differentiable
    np.testing.assert_allclose(unproject(uv[0], d[0], k[0], projection), pts[0], atol=1e-9)  # shared camera
    with pytest.raises(ValueError, match="uv must be"):
        unproject(uv[..., :1], d, k, projection)
    with pytest.raises(ValueError, match="must be \\(3, 3\\) or match"):
        unproject(uv, d, k[:1], projection)
