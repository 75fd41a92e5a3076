"""synth.backgrounds: the background kinds (linear light), the photo bank (no faces), noise texture, image folder, occluders."""
import dataclasses

import numpy as np
import pytest

from synth.backgrounds import (BACKGROUNDS, BANK_IMAGES, EXCLUDED_IMAGES, EXPOSURE_LOG, GAIN_LOG, MAX_SIDE,
                               ImageFolder, PhotoBank, _segment_distance, bank_image, default_bank, draw_background,
                               face_frame, line_polylines,
                               facial_hair_polygons, noise_texture, paint_facial_hair, paint_lines, paint_occluders,
                               polygon_coverage, region_coverage)
from synth.color import srgb_to_linear
from synth.sampling import (FacialHair, LineOccluder, Occluder, SamplingConfig, sample_facial_hair,
                            sample_line_occluders)


def test_kinds_and_determinism(tmp_path):
    from PIL import Image

    color = np.array([0.2, 0.4, 0.6])
    assert not draw_background("none", color, 0, 16).any()
    # colours are sRGB display values, backgrounds linear light
    np.testing.assert_allclose(draw_background("solid", color, 0, 16),
                               np.broadcast_to(srgb_to_linear(color), (16, 16, 3)), rtol=1e-6)
    a, b = draw_background("noise", color, 5, 33), draw_background("noise", color, 5, 33)
    assert a.shape == (33, 33, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, b)  # the seed fixes the texture
    assert a.std() > 0.01 and not np.array_equal(a, draw_background("noise", color, 6, 33))
    np.testing.assert_allclose(a, srgb_to_linear(noise_texture(np.random.default_rng(5), 33, 0.2 + 0.6 * color)),
                               atol=1e-6)
    Image.fromarray(np.full((40, 50, 3), [10, 200, 30], np.uint8)).save(tmp_path / "a.png")
    img = draw_background("images", color, 0, 24, ImageFolder(str(tmp_path)))
    np.testing.assert_allclose(img, np.broadcast_to(srgb_to_linear(np.array([10, 200, 30]) / 255), (24, 24, 3)),
                               atol=1e-6)
    p1, p2 = draw_background("photos", color, 3, 24), draw_background("photos", color, 3, 24)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(p1, default_bank().draw(np.random.default_rng(3), 24))
    with pytest.raises(ValueError, match="--background-dir"):
        draw_background("images", color, 0, 24)
    with pytest.raises(ValueError, match="--background"):
        draw_background("plaid", color, 0, 24)
    assert BACKGROUNDS == ("photos", "images", "noise", "solid", "none")


def test_noise_texture_small_sizes():
    t = noise_texture(np.random.default_rng(0), 8, np.array([0.5, 0.5, 0.5]))
    assert t.shape == (8, 8, 3) and np.isfinite(t).all()


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        ImageFolder(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="holds no images"):
        ImageFolder(str(tmp_path))


def test_occluders_paint_only_inside():
    img = np.zeros((20, 20, 3), np.float32)
    paint_occluders(img, [Occluder("rectangle", np.array([10.0, 10.0]), np.array([3.0, 2.0]), 0.0,
                                   np.array([1.0, 0.0, 0.0]))])
    inside = img[..., 0] == 1
    # edges on pixel boundaries: pixel centres 7.5..12.5 by 8.5..11.5 are covered fully, no others at all
    assert inside.sum() == 6 * 4 and (img[..., 0] > 0).sum() == 6 * 4
    assert inside[8:12, 7:13].all() and not img[..., 1:].any()
    ell = np.zeros((20, 20, 3), np.float32)
    paint_occluders(ell, [Occluder("ellipse", np.array([10.0, 10.0]), np.array([5.0, 5.0]), 0.3, np.ones(3))])
    assert abs(ell[..., 0].sum() - np.pi * 25) < 1.0  # coverage sums to the area (anti-aliased edge)
    partial = (ell[..., 0] > 0) & (ell[..., 0] < 1)
    assert partial.sum() >= 8  # the edge is soft


def test_occluder_colour_is_srgb_and_textures_come_from_the_bank():
    img = np.zeros((16, 16, 3), np.float32)
    paint_occluders(img, [Occluder("rectangle", np.array([8.0, 8.0]), np.array([8.0, 8.0]), 0.0,
                                   np.array([0.5, 0.5, 0.5]))])
    np.testing.assert_allclose(img, srgb_to_linear(0.5), atol=1e-6)  # linear light of sRGB grey 0.5
    tex = np.zeros((16, 16, 3), np.float32)
    paint_occluders(tex, [Occluder("rectangle", np.array([8.0, 8.0]), np.array([8.0, 8.0]), 0.0,
                                   np.array([0.5, 0.5, 0.5]), texture_seed=7)])
    np.testing.assert_allclose(tex, default_bank().draw(np.random.default_rng(7), 16), atol=1e-6)


def test_a_window_of_a_draw_is_computed_on_the_window_alone():
    """draw(rng, size, window): the same choices from rng, PIL resampling the window's box only —
    within two levels of cutting the whole draw (the whole image as a window: the same bits)."""
    bank = default_bank()
    rng = np.random.default_rng(8)
    diffs, same = [], 0
    for k in range(60):
        size = int(rng.choice([16, 48, 224]))
        r0, c0 = int(rng.integers(0, size)), int(rng.integers(0, size))
        r1, c1 = int(rng.integers(r0 + 1, size + 1)), int(rng.integers(c0 + 1, size + 1))
        whole = bank.draw(np.random.default_rng([1, k]), size)
        win = bank.draw(np.random.default_rng([1, k]), size, window=(r0, r1, c0, c1))
        assert win.shape == (r1 - r0, c1 - c0, 3) and win.dtype == np.float32
        d = np.abs(win - whole[r0:r1, c0:c1])
        diffs.append(d.max())
        same += (d == 0).mean()
    # two sRGB levels at the brightest (linear slope ~2.4 / 255 per level near 1) times the largest gain
    assert max(diffs) < 2 * 2.4 / 255 * np.exp(GAIN_LOG + EXPOSURE_LOG[1])
    assert same / 60 > 0.9  # most values are the very same
    np.testing.assert_array_equal(bank.draw(np.random.default_rng(3), 40, window=(0, 40, 0, 40)),
                                  bank.draw(np.random.default_rng(3), 40))
    with pytest.raises(ValueError, match="window must be"):
        bank.draw(np.random.default_rng(3), 40, window=(5, 5, 0, 40))


def test_bank_images_load_as_rgb_uint8():
    for name, _, _ in BANK_IMAGES:
        img = bank_image(name)
        assert img.pixels.dtype == np.uint8 and img.pixels.ndim == 3 and img.pixels.shape[2] == 3
        assert min(img.pixels.shape[:2]) <= MAX_SIDE
        assert not img.pixels.flags.writeable
    assert not {n for n, _, _ in BANK_IMAGES} & set(EXCLUDED_IMAGES)
    with pytest.raises(ValueError, match="unknown bank image 'astronaut'"):
        bank_image("astronaut")


def test_no_bank_image_contains_a_face():
    """The real-photo face detector (mediapipe) finds no face in any bank image, at full size and
    in a 2x2 split (faces small in the image are found on the quarters)."""
    from train.detector import FaceDetector

    found = {}
    with FaceDetector(min_score=0.5) as det:
        for name, _, _ in BANK_IMAGES:
            px = bank_image(name).pixels
            h, w = px.shape[:2]
            parts = [px] + [np.ascontiguousarray(px[i * h // 2:(i + 1) * h // 2, j * w // 2:(j + 1) * w // 2])
                            for i in range(2) for j in range(2)]
            n = sum(len(det.detect(p)) for p in parts)
            if n:
                found[name] = n
    assert found == {}


def test_the_detector_does_find_the_excluded_faces():
    """The check above can fail: the same detector finds the face in an excluded image."""
    import skimage.data

    from train.detector import FaceDetector

    with FaceDetector(min_score=0.5) as det:
        assert len(det.detect(np.ascontiguousarray(skimage.data.astronaut()))) >= 1


def test_draws_are_deterministic_linear_and_varied():
    bank = default_bank()
    a = bank.draw(np.random.default_rng([0, 5, 3]), 48)
    b = bank.draw(np.random.default_rng([0, 5, 3]), 48)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (48, 48, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    draws = np.stack([bank.draw(np.random.default_rng([0, 5, i]), 16) for i in range(40)])
    means = draws.mean(axis=(1, 2, 3))
    assert np.unique(means).size == 40  # 40 different backgrounds
    assert draws.std() > 0.05  # not a flat colour


def test_subset_and_validation():
    bank = PhotoBank(("brick",))
    assert len(bank) == 1
    with pytest.raises(ValueError, match="unknown bank image"):
        PhotoBank(("camera",))


def _paint_whole_image(image, o):
    """paint_occluders' per-pixel formula evaluated on every pixel (the reference of its window)."""
    size = image.shape[0]
    c = np.arange(size, dtype=np.float64) + 0.5
    uu, vv = np.meshgrid(c, c)
    hx, hy = float(o.half_size[0]), float(o.half_size[1])
    du, dv = uu - o.center[0], vv - o.center[1]
    a = (np.cos(o.angle) * du + np.sin(o.angle) * dv) / hx
    b = (-np.sin(o.angle) * du + np.cos(o.angle) * dv) / hy
    if o.kind == "ellipse":
        dist = (1.0 - (a * a + b * b)) / np.maximum(2.0 * np.sqrt((a / hx) ** 2 + (b / hy) ** 2), 1e-9)
    else:
        dist = np.minimum((1.0 - np.abs(a)) * hx, (1.0 - np.abs(b)) * hy)
    w = np.clip(dist + 0.5, 0.0, 1.0).astype(np.float32)[..., None]
    fill = np.broadcast_to(srgb_to_linear(np.asarray(o.color, np.float32)), image.shape)
    image *= 1.0 - w
    image += w * fill


def test_occluders_are_painted_on_a_window_with_the_whole_image_values():
    """paint_occluders computes only around each shape: the same values as the formula on every
    pixel, for thin, fat, rotated shapes, at the border and (partly) outside the image."""
    rng = np.random.default_rng(5)
    size = 48
    shapes = []
    for kind in ("ellipse", "rectangle"):
        for half in ((0.6, 20.0), (20.0, 0.6), (1.0, 1.0), (15.0, 9.0), (30.0, 2.0)):
            for center in ((24.3, 23.8), (1.0, 46.5), (-5.0, 20.0), (60.0, 60.0)):
                shapes.append(Occluder(kind, np.array(center), np.array(half), float(rng.uniform(0, np.pi)),
                                       rng.uniform(0, 1, 3)))
    base = rng.uniform(0, 1, (size, size, 3)).astype(np.float32)
    for o in shapes:
        got, ref = base.copy(), base.copy()
        paint_occluders(got, [o])
        _paint_whole_image(ref, o)
        np.testing.assert_array_equal(got, ref)


def _frontal_landmarks(eye_y=40.0, chin_y=120.0):
    """68 points of an upright face: eyes 36-41 around (40, eye_y), 42-47 around (80, eye_y), chin
    (point 8) at (60, chin_y), brows 10 px above the eyes, jaw ends at x 20 / 100."""
    lm = np.zeros((68, 2))
    ring = np.stack([np.cos(np.arange(6) * np.pi / 3) * 6, np.sin(np.arange(6) * np.pi / 3) * 3], axis=1)
    lm[36:42], lm[42:48] = ring + [40.0, eye_y], ring + [80.0, eye_y]
    lm[8] = [60.0, chin_y]
    lm[17:22] = np.stack([np.linspace(30, 50, 5), np.full(5, eye_y - 10)], axis=1)
    lm[22:27] = np.stack([np.linspace(70, 90, 5), np.full(5, eye_y - 10)], axis=1)
    lm[0], lm[16] = [20.0, eye_y + 5], [100.0, eye_y + 5]
    return lm


def test_face_frame_and_line_polylines():
    lm = _frontal_landmarks()
    origin, xa, ya = face_frame(lm)
    np.testing.assert_allclose(origin, [60, 40])
    np.testing.assert_allclose(xa, [40, 0])  # eye to eye
    np.testing.assert_allclose(ya, [0, 40])  # down, eye-to-chin (80) / 2
    c, s = np.cos(0.5), np.sin(0.5)  # a rolled face: the frame turns with it
    rot = np.array([[c, -s], [s, c]])
    turned = face_frame(lm @ rot.T)
    for got, want in zip(turned, (origin, xa, ya)):
        np.testing.assert_allclose(got, rot @ want, atol=1e-9)
    glasses = LineOccluder("glasses", 0.05, np.zeros(3), 1.0, np.array([0.3, 0.2, 0.1, 0.5]))
    polys = line_polylines(glasses, lm)
    assert [c for _, c in polys] == [True, True, False, False, False]  # two rims, bridge, two temples
    np.testing.assert_allclose(polys[0][0].mean(axis=0), [40, 44], atol=1e-9)  # rim around the eye, 0.1 down
    np.testing.assert_allclose(np.ptp(polys[1][0], axis=0), [24, 16], rtol=0.02)  # half axes 0.3 x 40, 0.2 x 40
    np.testing.assert_allclose(polys[3][0][1], (polys[3][0][0] + lm[0]) / 2)  # temple half way to the jaw's end
    brows = line_polylines(LineOccluder("brows", 0.1, np.zeros(3), 1.0, np.array([0.05, 0, 0, 0])), lm)
    np.testing.assert_allclose(brows[0][0], lm[17:22] - [0, 2])
    pts = np.array([[[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]])
    (strand, closed), = line_polylines(LineOccluder("strands", 0.02, np.zeros(3), 1.0, points=pts), lm)
    assert not closed
    np.testing.assert_allclose(strand[[0, -1]], [[20, 40], [100, 40]])
    with pytest.raises(ValueError, match="glasses, brows or strands"):
        line_polylines(LineOccluder("hat", 0.1, np.zeros(3), 1.0), lm)


def test_paint_lines_coverage():
    lm = _frontal_landmarks()
    img = np.ones((128, 128, 3), np.float32)
    # a horizontal strand along y = 40.0 (the eye line) from x 20 to 100, 3 px wide, black, opaque
    line = LineOccluder("strands", 3 / 40, np.zeros(3), 1.0, points=np.array([[[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]]))
    cover = paint_lines(img, [line], lm)
    # pixel centres 39.5 and 40.5 are 0.5 px from the line: covered; 38.5 and 41.5 (1.5 px): half; 37.5 none
    np.testing.assert_allclose(cover[37:43, 60], [0, 0.5, 1, 1, 0.5, 0], atol=1e-6)
    np.testing.assert_allclose(img[[38, 39], 60, 0], [0.5, 0.0], atol=1e-6)
    assert (img[cover == 0] == 1).all() and cover[:, :18].max() == 0 and cover[:, 102:].max() == 0  # round caps
    assert cover[39, 18] > 0 and cover[39, 101] > 0
    half = np.ones_like(img)
    paint_lines(half, [dataclasses.replace(line, opacity=0.5, color=np.ones(3) * 0.5)], lm)
    np.testing.assert_allclose(half[39, 60], 1 - 0.5 * (1 - srgb_to_linear(np.float32(0.5))), atol=1e-6)
    untouched = img.copy()
    assert paint_lines(untouched, [], lm) is None and paint_lines(untouched, [line], None) is None
    np.testing.assert_array_equal(untouched, img)


@pytest.mark.parametrize("width", [0.3, 0.7, 1.0, 2.5])
@pytest.mark.parametrize("offset", [0.0, 0.25, 0.5])
def test_paint_lines_ink_is_the_width(width, offset):
    # across a straight stroke the coverage sums to its width in pixels, wherever it lies between
    # pixel centres, sub-pixel widths included (a 0.3-px strand is faint, not a dark 1-px line)
    lm = _frontal_landmarks()
    y = offset / 40  # face units (40 px): the strand's axis at y = 40 + offset px
    line = LineOccluder("strands", width / 40, np.zeros(3), 1.0,
                        points=np.array([[[-1.0, y], [0.0, y], [1.0, y]]]))
    cover = paint_lines(np.ones((128, 128, 3), np.float32), [line], lm)
    np.testing.assert_allclose(cover[:, 40:80].sum(axis=0), width, rtol=1e-5)
    assert cover.max() <= min(width, 1.0) + 1e-6


def test_paint_lines_glasses_joints_painted_once():
    lm = _frontal_landmarks()
    glasses = LineOccluder("glasses", 2 / 40, np.zeros(3), 0.5, np.array([0.3, 0.2, 0.1, 0.5]))
    img = np.ones((128, 128, 3), np.float32)
    cover = paint_lines(img, [glasses], lm)
    # half-opaque black: one blend leaves 0.5 where covered, also where a rim meets its bridge or temple
    np.testing.assert_allclose(img.min(), 0.5, atol=1e-6)
    np.testing.assert_allclose(img[..., 0], 1 - cover, atol=1e-6)
    (left, _), (right, _), (bridge, _), (temple0, _), (temple1, _) = line_polylines(glasses, lm)

    def to_rim(p, rim):  # distance of the point p (2,) to the closed rim polyline
        return float(_segment_distance(np.array([p[0]]), np.array([p[1]]), rim, True)[0])
    # the bridge and temples start on the rims (within the 32-gon's sag, < 0.1 px here), not past them
    for p, rim in ((bridge[0], left), (bridge[-1], right), (temple0[0], left), (temple1[0], right)):
        assert to_rim(p, rim) < 0.1


def _full_landmarks():
    """_frontal_landmarks plus a U-shaped jaw (0-16), the nose's base (31-35, y 72) and the mouth's
    outline (48-59 around (60, 88), half axes 12 x 5; 48 and 54 the corners)."""
    lm = _frontal_landmarks()
    t = np.linspace(np.pi, 0.0, 17)
    lm[0:17] = np.stack([60 + 40 * np.cos(t), 45 + 75 * np.sin(t)], axis=1)  # 8 at (60, 120)
    lm[31:36] = np.stack([np.linspace(52, 68, 5), np.full(5, 72.0)], axis=1)
    a = np.pi + np.arange(12) * np.pi / 6  # 48 at the left corner, 49-53 along the top, 55-59 the bottom
    lm[48:60] = np.stack([60 + 12 * np.cos(a), 88 + 5 * np.sin(a)], axis=1)
    return lm


def test_polygon_coverage():
    square = np.array([[10.0, 10.0], [20.0, 10.0], [20.0, 20.0], [10.0, 20.0]])
    px, py = np.array([15.0, 10.0, 9.0, 21.5, 19.5]), np.array([15.0, 15.0, 15.0, 15.0, 15.0])
    np.testing.assert_allclose(polygon_coverage(px, py, square), [1.0, 0.5, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(polygon_coverage(px, py, square, feather=4.0), [1.0, 0.5, 0.25, 0.125, 0.625])


def test_facial_hair_regions():
    lm = _full_landmarks()

    def covers(kind, x, y):  # inside the union of the regions, outside the holes
        return region_coverage(np.array([x + 0.0]), np.array([y + 0.0]), *facial_hair_polygons(kind, lm))[0] > 0.5

    lip, upper_lip, chin, cheek, eye = (60, 88), (60, 78), (60, 108), (32, 85), (40, 40)
    assert covers("moustache", *upper_lip) and not any(covers("moustache", *q) for q in (lip, chin, cheek, eye))
    assert covers("moustache", 45.5, 88) and covers("moustache", 74.5, 88)  # tips past the corners (48, 88), (72, 88)
    assert covers("goatee", *upper_lip) and covers("goatee", *chin)
    assert not any(covers("goatee", *q) for q in (lip, cheek, eye))
    for kind in ("beard", "stubble"):
        assert all(covers(kind, *q) for q in (upper_lip, chin, cheek)) and not any(covers(kind, *q) for q in (lip, eye))
    with pytest.raises(ValueError, match="stubble, moustache, goatee or beard"):
        facial_hair_polygons("sideburns", lm)


def test_paint_facial_hair():
    lm = _full_landmarks()
    img = np.ones((128, 128, 3), np.float32)
    solid = FacialHair("stubble", np.zeros(3), 1.0, 1.0, 0.0, 7)  # every pixel a hair, black, opaque
    cover = paint_facial_hair(img, solid, lm)
    np.testing.assert_allclose(img[..., 0], 1 - cover, atol=1e-6)
    assert cover[108, 60] == 1 and cover[88, 60] == 0 and cover[40, 40] == 0  # chin, lips, eye
    face = np.zeros((128, 128), bool)
    face[:, :60] = True  # only the left half is face
    half = paint_facial_hair(np.ones_like(img), solid, lm, face)
    assert half[:, 60:].max() == 0 and half[108, 50] == 1
    untouched = np.ones_like(img)
    assert paint_facial_hair(untouched, None, lm) is None and paint_facial_hair(untouched, solid, None) is None
    assert paint_facial_hair(untouched, dataclasses.replace(solid, density=0.0), lm) is None
    assert paint_facial_hair(untouched, solid, lm, np.zeros((128, 128), bool)) is None
    np.testing.assert_array_equal(untouched, 1)
    # a beard's hairs are streaks along their direction: down (angle 0) or across (pi / 2)
    for angle, along, across in ((0.0, 0, 1), (np.pi / 2, 1, 0)):
        c = paint_facial_hair(np.ones_like(img), FacialHair("beard", np.zeros(3), 1.0, 0.3, angle, 3), lm)
        patch = c[98:112, 40:56]  # inside the region (chin and cheek, below the mouth)
        assert patch.std() > 0.1

        def corr(axis):
            a = patch - patch.mean()
            b = np.roll(a, 1, axis=axis)
            return float((a * b)[1:, 1:].mean() / (a * a).mean())
        assert corr(along) > 0.5 and abs(corr(across)) < 0.3


def test_sample_facial_hair():
    rng = np.random.default_rng
    assert sample_facial_hair(rng(0), SamplingConfig()) is None  # off by default
    hairs = [sample_facial_hair(rng(i), SamplingConfig(facial_hair=1.0)) for i in range(200)]
    assert {h.kind for h in hairs} == {"stubble", "moustache", "goatee", "beard"}
    assert all(0 < h.density < 1 and 0 < h.opacity <= 1 for h in hairs)
    assert 0.1 < np.mean([np.asarray(h.color).min() > 0.4 for h in hairs]) < 0.4  # grey to white ones
    assert 0.3 < np.mean([sample_facial_hair(rng(i), SamplingConfig(facial_hair=0.5)) is not None
                          for i in range(200)]) < 0.7
    with pytest.raises(ValueError, match="--facial-hair"):
        SamplingConfig(facial_hair=1.5)
    assert "facial_hair" not in SamplingConfig().to_dict()
    d = SamplingConfig(facial_hair=0.3).to_dict()
    assert d["facial_hair"] == 0.3 and SamplingConfig(**d) == SamplingConfig(facial_hair=0.3)


def test_sample_line_occluders():
    rng = np.random.default_rng
    assert sample_line_occluders(rng(0), SamplingConfig()) == []  # off by default
    kinds = [tuple(o.kind for o in sample_line_occluders(rng(i), SamplingConfig(line_occluders=1.0)))
             for i in range(200)]
    assert all(kinds) and {k for ks in kinds for k in ks} == {"glasses", "brows", "strands"}
    assert 0.4 < np.mean(["glasses" in k for k in kinds]) < 0.75
    for o in sample_line_occluders(rng(1), SamplingConfig(line_occluders=1.0)):
        assert 0 < o.width < 0.2 and 0 < o.opacity <= 1 and (np.asarray(o.color) <= 0.3).all()
    with pytest.raises(ValueError, match="--line-occluders"):
        SamplingConfig(line_occluders=1.5)
    # added after datasets were written: left out of the manifest while off (older datasets still match)
    assert "line_occluders" not in SamplingConfig().to_dict()
    d = SamplingConfig(line_occluders=0.3).to_dict()
    assert d["line_occluders"] == 0.3 and SamplingConfig(**d) == SamplingConfig(line_occluders=0.3)
