"""train.augment: photo-like degradations — each step in its intended direction, deterministic, off = identity."""
import dataclasses

import numpy as np
import pytest

from synth.color import srgb_u8_to_linear
from train.augment import (PhotoAugment, PhotoAugmentDraw, adjust_contrast, adjust_gamma, gaussian_blur,
                           jpeg_recompress, motion_blur, sensor_noise, white_balance)


def _photo(size=64):
    """A real photo crop (scikit-image's coffee cup) as uint8 sRGB."""
    from synth.backgrounds import bank_image

    return np.ascontiguousarray(bank_image("coffee").pixels[100:100 + size, 200:200 + size])


def _smooth(size=64):
    """A smooth colour gradient (no texture, so block or noise artefacts stand out)."""
    u, v = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size))
    return np.round(np.stack([0.2 + 0.6 * u, 0.3 + 0.4 * v, 0.5 + 0.3 * u * v], -1) * 255).astype(np.uint8)


def _aug(**changes) -> PhotoAugment:
    """The default prior of ``train-cli coarse`` (train.config holds the defaults), with changes."""
    from train.config import CoarseConfig

    return dataclasses.replace(PhotoAugment.from_config(CoarseConfig(data="d", out="o")), **changes)


def _draw(**steps) -> PhotoAugmentDraw:
    base = dict(white_balance=None, blur=None, noise=None, gamma=None, contrast=None, jpeg=None)
    base.update(steps)
    return PhotoAugmentDraw(**base)


def test_off_is_identity():
    img = _photo()
    assert _aug(p=0.0)(img, np.random.default_rng(0)) is img  # no step drawn: the same array
    zero = _aug(gamma=0, contrast=0, white_balance=0, noise=0, blur=0, jpeg=0, p=1.0)
    np.testing.assert_array_equal(zero(img, np.random.default_rng(1)), img)
    np.testing.assert_array_equal(_draw().apply(img), img)


def test_deterministic_per_generator_and_varies_between_seeds():
    img = _photo()
    aug = _aug(p=1.0)
    a = aug(img, np.random.default_rng([0, 3, 7]))
    b = aug(img, np.random.default_rng([0, 3, 7]))
    c = aug(img, np.random.default_rng([0, 3, 8]))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.uint8 and a.shape == img.shape


def test_draw_order_is_fixed():
    # turning one step off leaves the other steps' parameters unchanged
    full = _aug(p=1.0).draw(np.random.default_rng(5))
    no_jpeg = _aug(p=1.0, jpeg=0).draw(np.random.default_rng(5))
    assert no_jpeg.jpeg is None and full.jpeg is not None
    assert full.gamma == no_jpeg.gamma and full.noise == no_jpeg.noise and full.blur == no_jpeg.blur


def test_probability_of_each_step():
    aug = _aug(p=0.3)
    draws = [aug.draw(np.random.default_rng(i)) for i in range(2000)]
    rate = np.mean([d.gamma is not None for d in draws])
    assert abs(rate - 0.3) < 0.04  # binomial std sqrt(.3 * .7 / 2000) = 0.01: 4 sigma


def test_gamma_above_one_darkens_mid_tones_and_keeps_the_ends():
    x = np.array([0.0, 0.25, 0.5, 0.75, 1.0], np.float32)
    y = adjust_gamma(x, 1.3)
    assert y[0] == 0 and y[-1] == 1 and np.all(y[1:-1] < x[1:-1])
    assert np.all(adjust_gamma(x, 0.8)[1:-1] > x[1:-1])
    img = _photo()
    assert _draw(gamma=1.3).apply(img).mean() < img.mean() - 5  # mid-tone photo: clearly darker


def test_contrast_scales_the_spread_about_the_mean():
    img = _photo()
    x = img.astype(np.float32) / 255
    hi = adjust_contrast(x, 1.2)
    assert hi.std() > x.std() * 1.1 and abs(hi.mean() - x.mean()) < 0.02  # clipping moves the mean a little
    assert _draw(contrast=0.7).apply(img).std() < img.std() * 0.75


def test_white_balance_changes_colour_keeping_luminance():
    img = _photo()
    draw = _aug(p=1.0).draw(np.random.default_rng(2))
    gains = draw.white_balance
    assert gains is not None and abs(float(gains @ [0.2126, 0.7152, 0.0722]) - 1) < 1e-6
    lin = srgb_u8_to_linear(img)
    out = white_balance(lin, [1.2, 1.0, 0.8])
    ratio = out.reshape(-1, 3).mean(0) / lin.reshape(-1, 3).mean(0)
    np.testing.assert_allclose(ratio, [1.2, 1.0, 0.8], atol=0.02)  # a few clipped highlights


def test_noise_raises_the_variance_more_in_bright_areas():
    flat = np.full((64, 64, 3), 0.2, np.float32)
    bright = np.full((64, 64, 3), 0.8, np.float32)
    rng = np.random.default_rng(0)
    n1, n2 = sensor_noise(flat, 0.04, rng), sensor_noise(bright, 0.04, rng)
    # std = level * sqrt(x + 0.01): 0.0183 at 0.2, 0.036 at 0.8 (12288 values each: ~1 % sampling error)
    np.testing.assert_allclose(n1.std(), 0.04 * np.sqrt(0.21), rtol=0.05)
    np.testing.assert_allclose(n2.std(), 0.04 * np.sqrt(0.81), rtol=0.05)
    out = _draw(noise=(0.04, 1)).apply(_smooth())
    lap = lambda a: np.diff(a.astype(np.float32), 2, axis=1).var()  # noqa: E731 (2nd difference: removes the gradient)
    assert lap(out) > 10 * lap(_smooth()) + 1


def test_blur_removes_high_frequencies():
    img = _photo()
    lap = lambda a: np.diff(a.astype(np.float32), 2, axis=0).var() + np.diff(a.astype(np.float32), 2, axis=1).var()  # noqa: E731
    assert lap(_draw(blur=("gaussian", 1.5, 0.0)).apply(img)) < 0.3 * lap(img)
    # a horizontal motion blur smooths along rows only
    stripes = np.zeros((32, 32, 3), np.float32)
    stripes[:, ::2] = 1.0  # vertical stripes: alternate along a row
    h = motion_blur(stripes, 4.0, 0.0)
    assert np.abs(np.diff(h, axis=1)).max() < 0.3  # averaged across the stripes
    rows = np.transpose(stripes, (1, 0, 2))  # horizontal stripes: a horizontal blur leaves them
    np.testing.assert_array_equal(motion_blur(rows, 4.0, 0.0), rows)
    g = gaussian_blur(np.full((16, 16, 3), 0.5, np.float32), 1.0)
    np.testing.assert_allclose(g, 0.5, atol=1e-6)  # a flat image stays flat (normalised kernel, reflected edges)


def test_low_quality_jpeg_adds_8x8_block_error():
    img = _smooth(64)
    out = jpeg_recompress(img, 5).astype(np.float32)
    err = out - img.astype(np.float32)
    assert np.abs(err).mean() > 0.5
    # the error jumps across the 8x8 block edges: differences between columns 8k-1 | 8k beat those inside
    d = np.abs(np.diff(out, axis=1)).mean(axis=(0, 2))  # (63,) difference between column j and j+1
    at_edges = d[7::8].mean()
    inside = np.delete(d, np.arange(7, 63, 8)).mean()
    assert at_edges > 1.5 * inside
    np.testing.assert_array_equal(_draw(jpeg=5).apply(img), jpeg_recompress(img, 5))


def test_validation_names_the_field():
    with pytest.raises(ValueError, match="--photo-gamma must be in"):
        _aug(gamma=-1)
    with pytest.raises(ValueError, match="--photo-jpeg must be 0 or in"):
        _aug(jpeg=99)
    from train.config import CoarseConfig

    with pytest.raises(ValueError, match="--photo-white-balance"):
        CoarseConfig(data="d", out="o", photo_white_balance=2.0)
    assert PhotoAugment.from_config(CoarseConfig(data="d", out="o", photo_aug=False)) is None
    with pytest.raises(ValueError, match=r"image must be \(H, W, 3\) uint8"):
        _aug(p=1.0)(np.zeros((4, 4, 3), np.float32), np.random.default_rng(0))
