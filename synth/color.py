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
"""
from __future__ import annotations

import functools

import numpy as np

__all__ = ["linear_to_srgb", "srgb_to_linear", "srgb_u8_to_linear", "linear_to_srgb_u8",
           "SRGB_LINEAR_KNEE", "SRGB_ENCODED_KNEE"]

SRGB_LINEAR_KNEE = 0.0031308  # linear value where the encoding switches from the line to the power
SRGB_ENCODED_KNEE = 0.04045  # encoded value where the decoding switches
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


def linear_to_srgb_u8(x) -> np.ndarray:
    """Linear light (numpy float, any shape; clipped to [0, 1]) -> uint8 sRGB ``round(255 * encode(x))``."""
    out = linear_to_srgb(np.asarray(x, dtype=np.float32))
    out *= 255.0
    np.round(out, out=out)
    return out.astype(np.uint8)
