"""synth.color: the sRGB curve (IEC 61966-2-1), numpy and torch, uint8 helpers."""
from decimal import Decimal, localcontext

import numpy as np
import pytest
import torch

from synth.color import (ENCODE_BIN_SHIFT, SRGB_ENCODED_KNEE, SRGB_LINEAR_KNEE, encode_thresholds, linear_to_srgb, linear_to_srgb_u8,
                         srgb_to_linear, srgb_u8_to_linear, srgb_u8_to_linear_gained)


def test_known_values():
    # the standard's fixed points and a few values computed by hand from its formula
    lin = np.array([0.0, 1.0, 0.5, 0.18, 0.001, SRGB_LINEAR_KNEE])
    enc = np.array([0.0, 1.0, 1.055 * 0.5 ** (1 / 2.4) - 0.055, 1.055 * 0.18 ** (1 / 2.4) - 0.055, 0.01292,
                    0.04045])
    np.testing.assert_allclose(linear_to_srgb(lin), enc, atol=1e-6)  # 1e-6: the knee values are rounded in the standard
    np.testing.assert_allclose(linear_to_srgb(0.5), 0.735357, atol=1e-6)  # the familiar mid-grey figure
    np.testing.assert_allclose(srgb_to_linear(0.5), 0.214041, atol=1e-6)
    np.testing.assert_allclose(srgb_to_linear(enc), lin, atol=1e-6)


def test_round_trip_numpy_and_torch():
    x = np.linspace(0.0, 1.0, 10001)
    np.testing.assert_allclose(srgb_to_linear(linear_to_srgb(x)), x, atol=1e-12)  # float64: exact to rounding
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-12)
    t = torch.tensor(x)
    np.testing.assert_allclose(linear_to_srgb(t).numpy(), linear_to_srgb(x), atol=1e-12)
    np.testing.assert_allclose(srgb_to_linear(t).numpy(), srgb_to_linear(x), atol=1e-12)
    x32 = x.astype(np.float32)
    assert linear_to_srgb(x32).dtype == np.float32 and srgb_to_linear(x32).dtype == np.float32
    np.testing.assert_allclose(srgb_to_linear(linear_to_srgb(x32)), x32, atol=2e-6)  # float32 rounding


def test_monotonic_and_continuous_at_the_knee():
    x = np.linspace(0.0, 1.0, 100001)
    assert np.all(np.diff(linear_to_srgb(x)) > 0) and np.all(np.diff(srgb_to_linear(x)) > 0)
    eps = 1e-9
    for f, knee in ((linear_to_srgb, SRGB_LINEAR_KNEE), (srgb_to_linear, SRGB_ENCODED_KNEE)):
        lo, hi = f(np.array([knee - eps, knee + eps]))
        assert abs(hi - lo) < 1e-6  # the two branches meet (the standard's constants agree to ~3e-8)


def test_clips_out_of_range_inputs():
    # 1e-15: 1.055 * 1 - 0.055 is 1 - 1 ulp in float64
    np.testing.assert_allclose(linear_to_srgb(np.array([-0.5, 1.5])), [0.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(srgb_to_linear(torch.tensor([-0.5, 1.5])).numpy(), [0.0, 1.0], atol=1e-6)


def test_torch_gradients_are_finite_and_match_the_derivative():
    x = torch.tensor([0.0, 0.001, SRGB_LINEAR_KNEE, 0.01, 0.5, 1.0], dtype=torch.float64, requires_grad=True)
    linear_to_srgb(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    np.testing.assert_allclose(x.grad[:2].numpy(), 12.92)  # the linear branch
    np.testing.assert_allclose(x.grad[4].item(), 1.055 / 2.4 * 0.5 ** (1 / 2.4 - 1), rtol=1e-12)
    inner = torch.tensor([0.02, 0.3, 0.7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(srgb_to_linear, (inner,))
    assert torch.autograd.gradcheck(linear_to_srgb, (inner,))


def test_uint8_helpers():
    q = np.arange(256, dtype=np.uint8)
    lin = srgb_u8_to_linear(q)
    assert lin.dtype == np.float32
    np.testing.assert_allclose(lin, srgb_to_linear(q / 255.0), atol=1e-7)
    np.testing.assert_array_equal(linear_to_srgb_u8(lin), q)  # decode then encode is exact on uint8
    t = srgb_u8_to_linear(torch.from_numpy(q))
    np.testing.assert_array_equal(t.numpy(), lin)
    with pytest.raises(ValueError, match="uint8"):
        srgb_u8_to_linear(np.zeros(3, np.float32))


def _encode_decimal(x: float) -> Decimal:
    """The sRGB encoding of a linear value with 40 significant digits (an independent evaluation)."""
    x = Decimal(x)
    if x <= Decimal("0.0031308"):
        return Decimal("12.92") * x
    return Decimal("1.055") * (x.ln() / Decimal("2.4")).exp() - Decimal("0.055")


def test_uint8_encoding_is_exact():
    """linear_to_srgb_u8 = round(255 * encode(x)) of the exact curve: each threshold is the first
    float32 at or above its half level (checked in 40-digit decimal arithmetic, not the module's
    rational one), random values agree with the float64 formula away from the half levels, and
    NaN, infinities and out-of-range values are clipped."""
    t = encode_thresholds()
    assert t.dtype == np.float32 and t.shape == (255,) and np.all(np.diff(t) > 0)
    with localcontext() as ctx:
        ctx.prec = 40
        for i in range(1, 256):
            half = Decimal(2 * i - 1) / Decimal(510)
            assert _encode_decimal(float(t[i - 1])) >= half, i
            assert _encode_decimal(float(np.nextafter(t[i - 1], np.float32(0)))) < half, i
    # the encoder's bins (bits >> ENCODE_BIN_SHIFT) hold at most one threshold each
    bins = t.view(np.uint32) >> ENCODE_BIN_SHIFT
    assert np.all(np.diff(bins) >= 1)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.random(1_000_000) ** 3, t, np.nextafter(t, np.float32(0))]).astype(np.float32)
    got = linear_to_srgb_u8(x)
    enc = 255.0 * linear_to_srgb(x.astype(np.float64))
    far = np.abs(enc - np.floor(enc) - 0.5) > 1e-9  # not within float64 error of a half level
    np.testing.assert_array_equal(got[far], np.round(enc[far]).astype(np.uint8))
    np.testing.assert_array_equal(got[1_000_000:1_000_255], np.arange(1, 256))  # each threshold starts its level
    np.testing.assert_array_equal(got[1_000_255:], np.arange(0, 255))  # the float32 below it does not
    odd = np.array([np.nan, -np.inf, -1.0, -0.0, 0.0, 1.0, 1.5, np.inf], np.float32)
    np.testing.assert_array_equal(linear_to_srgb_u8(odd), [0, 0, 0, 0, 0, 255, 255, 255])
    img = rng.random((5, 7, 3))[:, ::2]  # float64, not contiguous: cast to float32 first
    np.testing.assert_array_equal(linear_to_srgb_u8(img), linear_to_srgb_u8(img.astype(np.float32).copy()))
    assert linear_to_srgb_u8(img).shape == (5, 4, 3)
    zero_d = linear_to_srgb_u8(np.float32(0.5))
    assert zero_d.shape == () and zero_d == 188  # 255 * encode(0.5) = 187.52


def test_gained_decoding_equals_the_numpy_formula_bit_for_bit():
    """srgb_u8_to_linear_gained = clip(srgb_u8_to_linear(x) * gains, 0, 1) in float32, on flipped and
    rotated views (what a photo background passes), with gains that clip; bad shapes are refused."""
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (31, 17, 3), dtype=np.uint8)
    for view in (a, a[:, ::-1], np.rot90(a, 1), np.rot90(a[::-1], 3)):
        gains = np.exp(rng.uniform(-0.8, 0.8, 3)).astype(np.float32)  # some > 1: bright values clip
        want = srgb_u8_to_linear(view) * gains
        np.clip(want, 0.0, 1.0, out=want)
        got = srgb_u8_to_linear_gained(view, gains)
        assert got.dtype == np.float32 and got.shape == view.shape and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
    assert srgb_u8_to_linear_gained(a, [4.0, 4.0, 4.0]).max() == 1.0
    with pytest.raises(ValueError, match="uint8"):
        srgb_u8_to_linear_gained(a.astype(np.float32), [1, 1, 1])
    with pytest.raises(ValueError, match="gains"):
        srgb_u8_to_linear_gained(a, [1, 1])
