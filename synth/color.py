"""Colour transfer: the sRGB curve (IEC 61966-2-1) between linear light and display values.

The renderer shades in **linear** light (``albedo * shading + specular``, docs/DESIGN.md) and stores
images **sRGB-encoded**, like a photo; background photos are sRGB and are decoded before they are
composited. Whatever needs linear values back (a shape-from-shading loss, a photometric check)
converts with :func:`srgb_to_linear`; nothing else in the project writes this curve.

The curve, for values in [0, 1] (inputs outside are clipped to [0, 1] first)::

    encode  x_lin <= 0.0031308 :  12.92 * x_lin
            otherwise          :  1.055 * x_lin ** (1 / 2.4) - 0.055
    decode  x_srgb <= 0.04045  :  x_srgb / 12.92
            otherwise          :  ((x_srgb + 0.055) / 1.055) ** 2.4

(The two branches of each meet at the knee to within 1e-7; the inverse pair round-trips to float
precision.) Both functions take numpy arrays or torch tensors, like :func:`synth.lighting.sh_basis`,
and keep the kind, dtype and device; the torch versions are autograd-friendly (the power branch is
evaluated on values clamped above the knee, so no infinite gradient reaches the linear branch).
uint8 helpers: :func:`srgb_u8_to_linear` (a 256-entry table) and :func:`linear_to_srgb_u8`.

:func:`linear_to_srgb_u8` is exact: the level of a float32 value is ``round(255 * encode(x))`` of
the curve above in exact arithmetic, decided by comparing ``x`` with 255 float32 thresholds derived
with rational numbers (``1.055 x^(5/12) - 0.055 >= s`` is ``x^5 >= ((s + 0.055) / 1.055)^12``), so
no float32 rounding near the half levels and no ulp of the machine's ``pow`` (numpy's float32
power is a SIMD routine on some CPUs and libm's on others) can move a value to the next level. Per
value: one look-up of the level at the start of its bin (:data:`ENCODE_BIN_SHIFT`), then at most
one threshold comparison that steps it up.
"""
from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np

__all__ = ["linear_to_srgb", "srgb_to_linear", "srgb_u8_to_linear", "srgb_u8_to_linear_gained", "linear_to_srgb_u8",
           "encode_thresholds", "SRGB_LINEAR_KNEE", "SRGB_ENCODED_KNEE", "ENCODE_BIN_SHIFT"]

SRGB_LINEAR_KNEE = 0.0031308  # linear value where the encoding switches from the line to the power
SRGB_ENCODED_KNEE = 0.04045  # encoded value where the decoding switches
# linear_to_srgb_u8: a float32 in [0, 1] falls in bin ``bits >> 15`` (the exponent and the first 8
# mantissa bits: 1/256 of its power-of-two range), which holds at most one threshold (tested)
ENCODE_BIN_SHIFT = 15
_SLOPE = 12.92
_A = 0.055
_GAMMA = 2.4


def _is_numpy(x) -> bool:
    return not hasattr(x, "clamp")


def _unit_float(x) -> np.ndarray:
    """numpy ``x`` as a float array (float64 for ints / Python numbers) clipped to [0, 1]."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return np.clip(x, 0.0, 1.0)


def linear_to_srgb(x):
    """Linear light ``x`` in [0, 1] -> sRGB-encoded values in [0, 1] (any shape; numpy or torch).
    numpy input is computed in its float dtype (float64 for ints / Python numbers)."""
    if _is_numpy(x):
        x = _unit_float(x)
        hi = np.asarray(np.maximum(x, SRGB_LINEAR_KNEE))  # the power branch never sees values below the knee
        np.power(hi, 1.0 / _GAMMA, out=hi)
        hi *= 1.0 + _A
        hi -= _A
        return np.where(x <= SRGB_LINEAR_KNEE, x * _SLOPE, hi).astype(x.dtype, copy=False)
    import torch

    x = x.clamp(0.0, 1.0)
    hi = (1.0 + _A) * x.clamp(min=SRGB_LINEAR_KNEE).pow(1.0 / _GAMMA) - _A
    return torch.where(x <= SRGB_LINEAR_KNEE, x * _SLOPE, hi)


def srgb_to_linear(x):
    """sRGB-encoded ``x`` in [0, 1] -> linear light in [0, 1] (any shape; numpy or torch).
    numpy input is computed in its float dtype (float64 for ints / Python numbers)."""
    if _is_numpy(x):
        x = _unit_float(x)
        hi = np.asarray(np.maximum(x, SRGB_ENCODED_KNEE))
        hi += _A
        hi /= 1.0 + _A
        np.power(hi, _GAMMA, out=hi)
        return np.where(x <= SRGB_ENCODED_KNEE, x / _SLOPE, hi).astype(x.dtype, copy=False)
    import torch

    x = x.clamp(0.0, 1.0)
    hi = ((x.clamp(min=SRGB_ENCODED_KNEE) + _A) / (1.0 + _A)).pow(_GAMMA)
    return torch.where(x <= SRGB_ENCODED_KNEE, x / _SLOPE, hi)


@functools.lru_cache(maxsize=1)
def _decode_table() -> np.ndarray:
    table = srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)
    table.setflags(write=False)
    return table


def srgb_u8_to_linear(image):
    """uint8 sRGB values (any shape) -> float32 linear light in [0, 1] (numpy: a 256-entry table;
    a torch uint8 tensor gives a float32 tensor on its device)."""
    if _is_numpy(image):
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f"image must be uint8, got {image.dtype}")
        return _decode_table()[image]
    import torch

    if image.dtype != torch.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    table = torch.from_numpy(_decode_table().copy()).to(image.device)
    return table[image.long()]


def _encodes_at_least(x: Fraction, s: Fraction) -> bool:
    """Exactly: is ``encode(x) >= s`` for linear ``x`` in [0, 1] and an encoded value ``s`` in (0, 1)?"""
    if x <= Fraction(str(SRGB_LINEAR_KNEE)):
        return Fraction(str(_SLOPE)) * x >= s
    # 1.055 x^(1/2.4) - 0.055 >= s  <=>  x^(5/12) >= r  <=>  x^5 >= r^12, r = (s + 0.055) / 1.055 > 0
    r = (s + Fraction(str(_A))) / (1 + Fraction(str(_A)))
    return x ** 5 >= r ** 12


@functools.lru_cache(maxsize=1)
def encode_thresholds() -> np.ndarray:
    """``(255,)`` float32: entry ``i - 1`` is the smallest float32 whose exact encoding is at least
    ``(i - 0.5) / 255``, so ``linear_to_srgb_u8(x)`` is the number of thresholds ``<= x`` (a value
    exactly half way between two levels would round up; no float32 value is). Derived with rational
    arithmetic from a float64 first guess: the same on every machine."""
    one = np.float32(1.0)
    out = np.empty(255, np.float32)
    for i in range(1, 256):
        s = Fraction(2 * i - 1, 510)
        f = np.float32(srgb_to_linear(np.float64(s)))  # first guess, within a few float32 ulps
        while not _encodes_at_least(Fraction(float(f)), s):
            f = np.nextafter(f, one)
        while f > 0 and _encodes_at_least(Fraction(float(np.nextafter(f, np.float32(0.0)))), s):
            f = np.nextafter(f, np.float32(0.0))
        out[i - 1] = f
    out.setflags(write=False)
    return out


def srgb_u8_to_linear_gained(image: np.ndarray, gains) -> np.ndarray:
    """uint8 sRGB ``(H, W, C)`` (any strides: flipped or rotated views are fine) -> float32 linear
    light times per-channel ``gains (C,)`` (cast to float32 first), clipped to [0, 1]: the bits of
    ``clip(srgb_u8_to_linear(image) * gains, 0, 1)`` with float32 gains, as one look-up per value in
    a 256-entry table per channel (a photo background's exposure and white balance)."""
    from .kernels import lookup_channels

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"image must be a uint8 (H, W, C) array, got {image.dtype} {image.shape}")
    gains = np.asarray(gains, np.float32).reshape(-1)
    if gains.shape != image.shape[-1:]:
        raise ValueError(f"gains must be ({image.shape[-1]},) for image {image.shape}, got {gains.shape}")
    tables = _decode_table()[None, :] * gains[:, None]  # (C, 256) float32: the same products
    np.clip(tables, 0.0, 1.0, out=tables)
    out = np.empty(image.shape, np.float32)
    lookup_channels(image, tables, out)
    return out


def linear_to_srgb_u8(x) -> np.ndarray:
    """Linear light (numpy, any shape, 0-d included; cast to float32, clipped to [0, 1], NaN -> 0) ->
    uint8 sRGB ``round(255 * encode(x))``, exact (:func:`encode_thresholds`; one compiled pass)."""
    from .kernels import srgb_encode_u8

    shape = np.shape(x)
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty(x.shape, np.uint8)
    srgb_encode_u8(x, encode_thresholds(), _encode_start_levels(), ENCODE_BIN_SHIFT, out)
    return out.reshape(shape)


@functools.lru_cache(maxsize=1)
def _encode_start_levels() -> np.ndarray:
    """uint8 level of the first float32 of each bin of :data:`ENCODE_BIN_SHIFT` over [0, 1]: the
    encoder starts there and steps up past the threshold inside the bin, if any."""
    starts = (np.arange((0x3F800000 >> ENCODE_BIN_SHIFT) + 1, dtype=np.uint32) << ENCODE_BIN_SHIFT).view(np.float32)
    table = np.searchsorted(encode_thresholds(), starts, side="right").astype(np.uint8)
    table.setflags(write=False)
    return table
