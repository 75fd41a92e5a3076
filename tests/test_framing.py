"""synth.framing: crop transforms (round trips, intrinsics, camera roll), resampling, the crop rules,
and re-cropping a render (landmarks, intrinsics and depth stay consistent)."""
import dataclasses
import math

import numpy as np
import pytest

from synth import camera as cam
from synth import framing
from synth.framing import Crop, crop_from_box, crop_from_landmarks, crop_image

CROPS = [Crop([40.0, 30.0], 50.0), Crop([10.5, -3.0], 7.0, 0.4), Crop([100.0, 80.0], 300.0, -2.5)]


@pytest.mark.parametrize("crop", CROPS)
@pytest.mark.parametrize("out_size", [1, 17, 64])
def test_matrix_and_inverse_round_trip(crop, out_size):
    m, inv = crop.matrix(out_size), crop.inverse_matrix(out_size)
    m3 = np.vstack([m, [0, 0, 1]])
    inv3 = np.vstack([inv, [0, 0, 1]])
    np.testing.assert_allclose(m3 @ inv3, np.eye(3), atol=1e-12)
    pts = np.random.default_rng(0).uniform(-50, 150, (3, 5, 2))
    np.testing.assert_allclose(crop.unmap_points(crop.map_points(pts, out_size), out_size), pts, atol=1e-9)
    # the crop's corners go to the output image's corners, its centre to the output centre
    np.testing.assert_allclose(crop.map_points(crop.corners(), out_size),
                               [[0, 0], [out_size, 0], [out_size, out_size], [0, out_size]], atol=1e-9)
    np.testing.assert_allclose(crop.map_points(crop.center, out_size), [out_size / 2] * 2, atol=1e-9)


def test_axis_aligned_crop_golden():
    # side 50 -> 100 px: scale 2; centre (40, 30) -> (50, 50); so image (15, 5) (top-left corner) -> (0, 0)
    c = Crop([40.0, 30.0], 50.0)
    np.testing.assert_allclose(c.matrix(100), [[2, 0, -30], [0, 2, -10]])
    np.testing.assert_allclose(c.map_points([[15.0, 5.0], [40.5, 30.0]], 100), [[0, 0], [51, 50]])
    np.testing.assert_allclose(c.map_box([15, 5, 65, 55], 100), [0, 0, 100, 100])
    # a positive angle turns the crop clockwise on screen: its x axis is the image direction (cos a, sin a)
    r = Crop([0.0, 0.0], 10.0, math.pi / 2)
    np.testing.assert_allclose(r.map_points([[0.0, 1.0]], 10) - 5.0, [[1.0, 0.0]], atol=1e-12)


@pytest.mark.parametrize("kind", cam.PROJECTIONS)
def test_map_intrinsics_moves_the_principal_point_and_scales_the_focal(kind):
    rng = np.random.default_rng(1)
    pts = rng.uniform([-60, -80, -900], [60, 80, -700], (50, 3))  # camera frame, in front
    k = np.array([[800.0, 0, 310.0], [0, 790.0, 250.0], [0, 0, 1]]) if kind == "perspective" else \
        np.array([[0.9, 0, 310.0], [0, 0.9, 250.0], [0, 0, 1]])
    crop = Crop([330.0, 240.0], 180.0)
    uv, _ = cam.project(pts, k, kind)
    uv2, _ = cam.project(pts, crop.map_intrinsics(k, 96), kind)
    np.testing.assert_allclose(uv2, crop.map_points(uv, 96), atol=1e-9)
    # golden: focal x 96/180, principal point at 96/2 + (310 - 330) * 96/180
    k2 = crop.map_intrinsics(k, 96)
    assert math.isclose(k2[0, 0], k[0, 0] * 96 / 180) and math.isclose(k2[0, 2], 48 + (310 - 330) * 96 / 180)


@pytest.mark.parametrize("kind", cam.PROJECTIONS)
def test_rotated_crop_is_a_camera_roll(kind):
    # angle a: the mapped intrinsics see the points rolled by Rz(a), i.e. the pose's roll grows by a
    rng = np.random.default_rng(2)
    pts = rng.uniform([-60, -80, -900], [60, 80, -700], (50, 3))
    f = 700.0 if kind == "perspective" else 0.8
    k = np.array([[f, 0, 200.0], [0, f, 150.0], [0, 0, 1]])
    crop = Crop([210.0, 160.0], 150.0, 0.3)
    uv, _ = cam.project(pts, k, kind)
    uv2, _ = cam.project(pts @ crop.camera_rotation().T, crop.map_intrinsics(k, 64), kind)
    np.testing.assert_allclose(uv2, crop.map_points(uv, 64), atol=1e-9)
    rot = cam.rotation_matrix(0.2, -0.1, 0.05)
    np.testing.assert_allclose(crop.camera_rotation() @ rot, cam.rotation_matrix(0.2, -0.1, 0.05 + 0.3), atol=1e-12)
    with pytest.raises(ValueError, match="square pixels"):
        crop.map_intrinsics(np.diag([700.0, 650.0, 1.0]), 64)


def test_crop_validation_names_the_argument():
    with pytest.raises(ValueError, match="center"):
        Crop([1.0, 2.0, 3.0], 5.0)
    with pytest.raises(ValueError, match="side"):
        Crop([1.0, 2.0], 0.0)
    with pytest.raises(ValueError, match="out_size"):
        CROPS[0].matrix(0)
    with pytest.raises(ValueError, match="intrinsics"):
        CROPS[0].map_intrinsics(np.eye(2), 8)
    with pytest.raises(ValueError, match="points"):
        CROPS[0].map_points(np.zeros((3, 3)), 8)
    assert Crop.from_dict(CROPS[1].to_dict()) == CROPS[1] and CROPS[1] != CROPS[0]


# ------------------------------------------------------------------------------ resampling
def _ramp(h=300, w=400):
    v, u = np.mgrid[0:h, 0:w] + 0.5  # pixel centres
    return (0.3 * u + 0.7 * v).astype(np.float32)


@pytest.mark.parametrize("crop, out_size", [
    (Crop([200.0, 150.0], 40.0), 64),  # enlarging
    (Crop([200.0, 150.0], 100.0, 0.3), 64),  # shrinking < 2x, rotated
    (Crop([190.0, 160.0], 250.0), 32),  # shrinking 7.8x: box-filtered by 7 first
    (Crop([190.0, 160.0], 200.0, -0.5), 24),  # rotated and box-filtered
])
def test_crop_image_samples_the_pixel_centres(crop, out_size):
    # a linear ramp is reproduced exactly by bilinear interpolation and by box averages: every output
    # pixel holds the ramp at its centre mapped back to the image (float32 rounding: 1e-3)
    out = crop_image(_ramp(), crop, out_size)
    jj, ii = np.meshgrid(np.arange(out_size) + 0.5, np.arange(out_size) + 0.5)
    p = crop.unmap_points(np.stack([jj, ii], -1), out_size)
    want = 0.3 * p[..., 0] + 0.7 * p[..., 1]
    inside = (p[..., 0] > 1) & (p[..., 0] < 399) & (p[..., 1] > 1) & (p[..., 1] < 299)
    np.testing.assert_allclose(out[inside], want[inside], atol=1e-3)


def test_crop_image_anti_aliases_when_shrinking():
    # a 1-pixel checkerboard shrunk 8x must come out as its mean grey, not as a sampled pattern
    board = (((np.indices((400, 400)).sum(0)) % 2) * 255).astype(np.uint8)
    out = crop_image(np.stack([board] * 3, -1), Crop([200.0, 200.0], 256.0), 32)
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)
    assert np.abs(out.astype(float) - 127.5).max() <= 2  # box of 8x8 = exact mean; then a bilinear step


def test_crop_image_fill_and_types():
    rgb = np.full((20, 30, 3), 200, np.uint8)
    out = crop_image(rgb, Crop([0.0, 0.0], 20.0), 10, fill=7)  # the top-left quarter lies in the image
    assert out[0, 0].tolist() == [7, 7, 7] and out[-1, -1].tolist() == [200, 200, 200]
    grey = crop_image(rgb[..., 0], Crop([15.0, 10.0], 20.0), 10, resample="nearest")
    assert grey.shape == (10, 10) and grey.dtype == np.uint8
    with pytest.raises(ValueError, match="image must be"):
        crop_image(np.zeros((4, 4, 4), np.uint8), CROPS[0], 8)
    with pytest.raises(ValueError, match="resample"):
        crop_image(rgb, CROPS[0], 8, resample="lanczos")


# ------------------------------------------------------------------------------ rules
def _frontal_landmarks() -> np.ndarray:
    """68 points of a hand-made frontal face: eye centres (40, 50) and (60, 50), mouth corners
    (42, 75) and (58, 75), other points spread around (the rule ignores them)."""
    lm = np.random.default_rng(3).uniform(30, 70, (68, 2))
    lm[36:42] = [40.0, 50.0] + np.array([[-4, 0], [-2, -1], [2, -1], [4, 0], [2, 1], [-2, 1]])
    lm[42:48] = [60.0, 50.0] + np.array([[-4, 0], [-2, -1], [2, -1], [4, 0], [2, 1], [-2, 1]])
    lm[48], lm[54] = [42.0, 75.0], [58.0, 75.0]
    return lm


def test_crop_from_landmarks_golden():
    # eye_mid (50, 50), eye->mouth (0, 25), eye->eye (20, 0): size = max(25, 1.24 * 20 = 24.8) = 25
    c = crop_from_landmarks(_frontal_landmarks())
    np.testing.assert_allclose(c.center, [50.0, 50.0 + framing.CENTER_DOWN * 25.0])
    assert math.isclose(c.side, framing.CROP_SCALE * 25.0) and c.angle == 0.0
    # a face squeezed sideways (yaw) keeps its size: eye->mouth decides; squeezed vertically (pitch): eye->eye
    lm = _frontal_landmarks()
    lm[:, 1] = 50 + (lm[:, 1] - 50) * 0.5
    assert math.isclose(crop_from_landmarks(lm).side, framing.CROP_SCALE * framing.EYE_MOUTH_RATIO * 20.0)


def test_crop_from_landmarks_commutes_with_similarities():
    lm = _frontal_landmarks()
    a, s, t = 0.35, 2.5, np.array([13.0, -7.0])
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    moved = (lm @ r.T) * s + t
    c0, c1 = crop_from_landmarks(lm), crop_from_landmarks(moved)
    np.testing.assert_allclose(c1.center, r @ c0.center * s + t, atol=1e-9)
    assert math.isclose(c1.side, s * c0.side)
    # rotate=True: the rotated face comes out exactly as the upright one does
    up = crop_from_landmarks(moved, rotate=True)
    assert math.isclose(up.angle, a)
    np.testing.assert_allclose(up.map_points(moved, 64), c0.map_points(lm, 64), atol=1e-9)


def test_crop_from_box_golden_and_errors():
    c = crop_from_box([10.0, 20.0, 50.0, 80.0])  # w 40, h 60
    np.testing.assert_allclose(c.center, [30.0, 50.0 + framing.BOX_CENTER_SHIFT * 60.0])
    assert math.isclose(c.side, framing.BOX_SCALE * 60.0)
    with pytest.raises(ValueError, match="box must"):
        crop_from_box([10, 20, 5, 80])
    with pytest.raises(ValueError, match="lm68 must be"):
        crop_from_landmarks(np.zeros((5, 2)))


# ------------------------------------------------------------------------------ re-cropping a render
@pytest.fixture(scope="module")
def renders(tiny_model):
    from synth.render import FaceRenderer

    with FaceRenderer(tiny_model, size=64) as r64, FaceRenderer(tiny_model, size=48) as r48:
        yield r64, r48


@pytest.mark.parametrize("projection, angle", [("perspective", 0.0), ("weak_perspective", 0.0),
                                               ("perspective", 0.25)])
def test_recropping_a_render_keeps_landmarks_intrinsics_and_depth(tiny_model, renders, projection, angle):
    from synth.sampling import SamplingConfig, sample_params

    r64, r48 = renders
    p = sample_params(tiny_model, SamplingConfig(projection=projection, detail=False, background="solid"), 64, 0, 5)
    big = r64.render(p)
    crop = Crop([30.0, 35.0], 40.0, angle)  # the face's middle, enlarged 1.2x
    k48 = crop.map_intrinsics(p.intrinsics, 48)
    roll = crop.camera_rotation()
    q = dataclasses.replace(p, intrinsics=k48.astype(np.float32),
                            pose=(p.pose + np.array([0, 0, angle])).astype(np.float32),
                            translation=(roll @ p.translation).astype(np.float32))
    small = r48.render(q)
    # landmarks: rendered with the mapped intrinsics = the stored ones mapped (float32 intrinsics: 2e-3 px)
    np.testing.assert_allclose(small.landmarks, crop.map_points(big.landmarks, 48), atol=2e-3)
    # depth: the big depth map resampled bilinearly equals the small render wherever all four
    # bilinear neighbours lie on the face (the resampled mask is 1). Depth is linear in screen space
    # only for weak perspective; under perspective and across triangle edges the bilinear value
    # differs by the surface's bend over one pixel: measured 0.07-0.10 mm median and 1.1-1.3 mm at the
    # 98th percentile (steep sides of the nose) on this ~110 mm deep face: bounds 2x that. Occlusion
    # edges (an ear or the jaw in front of the head behind it: all four neighbours on the mesh, but
    # tens of mm apart) are left out: pixels whose depth jumps by > 5 mm to a 4-neighbour.
    resampled = crop_image(big.depth, crop, 48)
    d = big.depth
    smooth = big.mask.copy()
    for a, b in ((d[1:], d[:-1]), (d[:, 1:], d[:, :-1])):
        jump = np.abs(a - b) > 5.0
        if a.shape[0] < d.shape[0]:
            smooth[1:] &= ~jump
            smooth[:-1] &= ~jump
        else:
            smooth[:, 1:] &= ~jump
            smooth[:, :-1] &= ~jump
    cover = crop_image(smooth.astype(np.float32), crop, 48)
    ok = (cover > 1 - 1e-6) & small.mask
    assert ok.sum() > 400
    err = np.abs(resampled[ok] - small.depth[ok])
    assert np.median(err) < 0.2 and np.percentile(err, 98) < 2.5
