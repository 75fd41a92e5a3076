"""synth.backgrounds: the background kinds, noise texture, image folder, occluders."""
import numpy as np
import pytest

from synth.backgrounds import BACKGROUNDS, ImageFolder, draw_background, noise_texture, paint_occluders
from synth.sampling import Occluder


def test_kinds_and_determinism(tmp_path):
    from PIL import Image

    color = np.array([0.2, 0.4, 0.6])
    assert not draw_background("none", color, 0, 16).any()
    np.testing.assert_allclose(draw_background("solid", color, 0, 16), np.broadcast_to(color, (16, 16, 3)), rtol=1e-6)
    a, b = draw_background("noise", color, 5, 33), draw_background("noise", color, 5, 33)
    assert a.shape == (33, 33, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, b)  # the seed fixes the texture
    assert a.std() > 0.01 and not np.array_equal(a, draw_background("noise", color, 6, 33))
    # the noise varies around 0.2 + 0.6 * colour
    np.testing.assert_allclose(a.reshape(-1, 3).mean(0), 0.2 + 0.6 * color, atol=0.15)
    Image.fromarray(np.full((40, 50, 3), [10, 200, 30], np.uint8)).save(tmp_path / "a.png")
    img = draw_background("images", color, 0, 24, ImageFolder(str(tmp_path)))
    np.testing.assert_allclose(img * 255, np.broadcast_to([10, 200, 30], (24, 24, 3)), atol=0.5)
    with pytest.raises(ValueError, match="--background-dir"):
        draw_background("images", color, 0, 24)
    with pytest.raises(ValueError, match="--background"):
        draw_background("plaid", color, 0, 24)
    assert BACKGROUNDS == ("none", "solid", "noise", "images")


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
    assert inside.sum() == 6 * 4  # pixel centres 7.5..12.5 by 8.5..11.5
    assert inside[8:12, 7:13].all() and not img[..., 1:].any()
    ell = np.zeros((20, 20, 3), np.float32)
    paint_occluders(ell, [Occluder("ellipse", np.array([10.0, 10.0]), np.array([5.0, 5.0]), 0.3, np.ones(3))])
    assert 60 < (ell[..., 0] == 1).sum() < 100  # area pi * 25 ~ 79
