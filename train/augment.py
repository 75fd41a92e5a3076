"""Photo-like degradations of rendered training images (domain randomisation), applied in the
DataLoader workers to the uint8 sRGB input crop.

A camera pipeline in miniature, in this order (each step with probability ``p``, its parameters
drawn from the ranges of :class:`PhotoAugment`):

1. decode sRGB -> linear light (:func:`synth.color.srgb_u8_to_linear`);
2. **white balance**: per-channel gains ``exp(U(-w, w))``, normalised to keep the luminance;
3. **blur**: Gaussian, ``sigma ~ U(0.3, blur)`` px, or (one blur in three) linear motion blur of
   length ``U(2, 2 + 2 blur)`` px at a random angle;
4. **sensor noise**: Poisson-Gaussian in linear light, level ``s ~ U(0, noise)``:
   ``x + s * sqrt(x + 0.01) * N(0, 1)`` per pixel and channel (shot noise ``s^2 x``, read noise
   ``s / 10``), then clipped to [0, 1];
5. encode linear -> sRGB (:func:`synth.color.linear_to_srgb`);
6. **gamma** on the encoded values: ``y = x ** g``, ``g = exp(U(-gamma, gamma))``
   (g > 1 darkens the mid-tones);
7. **contrast** about the image mean: ``y = (x - m) c + m``, ``c ~ U(1 - contrast, 1 + contrast)``;
8. quantise to uint8, then **JPEG re-compression** at quality ``U(jpeg, 95)`` (Pillow, 4:2:0).

Steps 1 and 5 only run when a linear-light step (2-4) was drawn, and nothing at all runs when no
step was drawn, so "no step" is the identity on the uint8 image. Every draw comes from the
generator passed in (the data loader seeds it from ``(seed, epoch, index)``); the draws are made in
a fixed order whether or not a step is taken, so changing one probability or range leaves the
others' draws unchanged.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from synth.color import linear_to_srgb, srgb_u8_to_linear

__all__ = ["PhotoAugment", "PhotoAugmentDraw", "white_balance", "gaussian_blur", "motion_blur",
           "sensor_noise", "adjust_gamma", "adjust_contrast", "jpeg_recompress"]

_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)  # Rec. 709 luminance weights, linear RGB
_MOTION_FRACTION = 1.0 / 3.0  # share of the blurs that are motion blurs


@dataclasses.dataclass(frozen=True)
class PhotoAugment:
    """Photo degradation prior (a strength of 0 turns that step off). The values come from the job
    config (:meth:`from_config`: ``train-cli coarse --photo-*`` flags), which holds the defaults."""

    p: float
    """probability of each step, independently."""
    gamma: float
    """gamma exponent exp(U(-gamma, gamma)) on the sRGB values."""
    contrast: float
    """contrast factor U(1 - contrast, 1 + contrast) about the image mean."""
    white_balance: float
    """per-channel linear gains exp(U(-w, w)), luminance kept."""
    noise: float
    """largest sensor-noise level s (noise std s * sqrt(x + 0.01) in linear light)."""
    blur: float
    """largest Gaussian blur sigma in pixels (>= 0.3 when on); motion blur up to 2 + 2 blur px long."""
    jpeg: int
    """lowest JPEG quality of the re-compression (quality ~ U(jpeg, 95)); 0 = off."""

    @classmethod
    def from_config(cls, config) -> "PhotoAugment | None":
        """The prior of a job config (fields ``photo_aug``, ``photo_p``, ``photo_gamma``, ...);
        None when ``photo_aug`` is off."""
        if not config.photo_aug:
            return None
        return cls(**{f.name: getattr(config, "photo_" + f.name) for f in dataclasses.fields(cls)})

    def __post_init__(self) -> None:
        checks = (
            ("p", 0.0 <= self.p <= 1.0, "in [0, 1]"),
            ("gamma", 0.0 <= self.gamma <= 1.0, "in [0, 1]"),
            ("contrast", 0.0 <= self.contrast < 1.0, "in [0, 1)"),
            ("white_balance", 0.0 <= self.white_balance <= 1.0, "in [0, 1]"),
            ("noise", 0.0 <= self.noise <= 0.5, "in [0, 0.5]"),
            ("blur", self.blur == 0 or 0.3 <= self.blur <= 10.0, "0 or in [0.3, 10]"),
            ("jpeg", self.jpeg == 0 or 1 <= self.jpeg <= 95, "0 or in [1, 95]"),
        )
        for name, ok, rule in checks:
            value = getattr(self, name)
            if not (ok and math.isfinite(value)):
                raise ValueError(f"--photo-{name.replace('_', '-')} must be {rule}, got {value!r}")

    def draw(self, rng: np.random.Generator) -> "PhotoAugmentDraw":
        """The parameters of one sample (fixed draw order; ``None`` = step not taken)."""
        take = rng.uniform(size=6) < self.p  # white balance, blur, noise, gamma, contrast, jpeg
        wb = np.exp(rng.uniform(-self.white_balance, self.white_balance, 3))
        wb = wb / float(wb @ _LUMA)  # luminance-preserving
        sigma = rng.uniform(0.3, max(self.blur, 0.3))
        motion = rng.uniform() < _MOTION_FRACTION
        length = rng.uniform(2.0, 2.0 + 2.0 * self.blur)
        angle = rng.uniform(0.0, math.pi)
        level = rng.uniform(0.0, self.noise)
        noise_seed = int(rng.integers(0, 2**63 - 1))
        g = math.exp(rng.uniform(-self.gamma, self.gamma))
        c = rng.uniform(1.0 - self.contrast, 1.0 + self.contrast)
        q = int(rng.integers(max(self.jpeg, 1), 96))
        return PhotoAugmentDraw(
            white_balance=wb.astype(np.float32) if take[0] and self.white_balance > 0 else None,
            blur=(("motion", length, angle) if motion else ("gaussian", sigma, 0.0))
            if take[1] and self.blur > 0 else None,
            noise=(level, noise_seed) if take[2] and self.noise > 0 else None,
            gamma=g if take[3] and self.gamma > 0 else None,
            contrast=c if take[4] and self.contrast > 0 else None,
            jpeg=q if take[5] and self.jpeg > 0 else None,
        )

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Degrade an ``(H, W, 3)`` uint8 sRGB image with the draws of ``rng`` -> uint8 ``(H, W, 3)``."""
        return self.draw(rng).apply(image)


@dataclasses.dataclass(frozen=True)
class PhotoAugmentDraw:
    """One sample's degradation parameters (see the module doc; ``None`` = step not taken)."""

    white_balance: np.ndarray | None  # (3,) linear gains
    blur: tuple[str, float, float] | None  # ("gaussian", sigma, 0) | ("motion", length px, angle rad)
    noise: tuple[float, int] | None  # (level s, seed of the noise field)
    gamma: float | None
    contrast: float | None
    jpeg: int | None  # quality

    def apply(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        linear_steps = self.white_balance is not None or self.blur is not None or self.noise is not None
        x = None  # float32 sRGB-encoded values, when a step needs them
        if linear_steps:
            lin = srgb_u8_to_linear(image)  # (H, W, 3) float32, a new array
            if self.white_balance is not None:
                lin = white_balance(lin, self.white_balance)
            if self.blur is not None:
                kind, a, b = self.blur
                lin = gaussian_blur(lin, a) if kind == "gaussian" else motion_blur(lin, a, b)
            if self.noise is not None:
                lin = sensor_noise(lin, self.noise[0], np.random.default_rng(self.noise[1]))
            x = linear_to_srgb(lin)
        if self.gamma is not None or self.contrast is not None:
            if x is None:
                x = image.astype(np.float32) / 255.0
            if self.gamma is not None:
                x = adjust_gamma(x, self.gamma)
            if self.contrast is not None:
                x = adjust_contrast(x, self.contrast)
        out = image if x is None else _to_u8(x)
        if self.jpeg is not None:
            out = jpeg_recompress(out, self.jpeg)
        return out


def _to_u8(x: np.ndarray) -> np.ndarray:
    y = np.clip(x, 0.0, 1.0) * 255.0
    np.round(y, out=y)
    return y.astype(np.uint8)


def white_balance(linear: np.ndarray, gains) -> np.ndarray:
    """Per-channel gains ``(3,)`` on linear RGB ``(H, W, 3)`` (clipped to [0, 1])."""
    return np.clip(linear * np.asarray(gains, np.float32), 0.0, 1.0)


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``(H, W, C)`` with std ``sigma`` pixels (edges reflected)."""
    from scipy.ndimage import gaussian_filter1d

    y = gaussian_filter1d(x, sigma, axis=0, mode="reflect", truncate=3.0)
    return gaussian_filter1d(y, sigma, axis=1, mode="reflect", truncate=3.0)


def motion_blur(x: np.ndarray, length: float, angle: float) -> np.ndarray:
    """Linear motion blur of ``(H, W, C)``: the mean of ``ceil(length)`` copies shifted evenly along a
    segment of ``length`` pixels at ``angle`` (radians from the +u axis), offsets rounded to whole
    pixels, edges replicated."""
    n = max(int(math.ceil(length)), 1)
    t = np.linspace(-(length - 1) / 2.0, (length - 1) / 2.0, n) if n > 1 else np.zeros(1)
    du = np.floor(t * math.cos(angle) + 0.5).astype(int)  # rounding half up: evenly spread offsets
    dv = np.floor(t * math.sin(angle) + 0.5).astype(int)
    r = int(max(np.abs(du).max(), np.abs(dv).max()))
    h, w = x.shape[:2]
    padded = np.pad(x, ((r, r), (r, r), (0, 0)), mode="edge")
    out = np.zeros_like(x, dtype=np.float32)
    for a, b in zip(du, dv):
        out += padded[r + b:r + b + h, r + a:r + a + w]
    out /= n
    return out


def sensor_noise(linear: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson-Gaussian sensor noise on linear RGB ``(H, W, 3)``: ``x + level sqrt(x + 0.01) N(0, 1)``,
    clipped to [0, 1] (the std grows with the signal; ``level / 10`` is left in the black)."""
    std = np.sqrt(np.maximum(linear, 0.0) + 0.01, dtype=np.float32) * np.float32(level)
    noisy = linear + std * rng.standard_normal(linear.shape, dtype=np.float32)
    return np.clip(noisy, 0.0, 1.0, out=noisy)


def adjust_gamma(x: np.ndarray, gamma: float) -> np.ndarray:
    """``x ** gamma`` on values in [0, 1] (gamma > 1 darkens the mid-tones, 0 and 1 stay)."""
    return np.power(np.clip(x, 0.0, 1.0), np.float32(gamma))


def adjust_contrast(x: np.ndarray, factor: float) -> np.ndarray:
    """``(x - m) factor + m`` with ``m`` the mean of the image, clipped to [0, 1]."""
    m = np.float32(x.mean())
    return np.clip((x - m) * np.float32(factor) + m, 0.0, 1.0)


def jpeg_recompress(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG-encode and decode an ``(H, W, 3)`` uint8 image at ``quality`` (Pillow, 4:2:0, in memory:
    :func:`synth.codecs.jpeg_encode` / :func:`synth.codecs.jpeg_decode`)."""
    from synth.codecs import jpeg_decode, jpeg_encode

    return jpeg_decode(jpeg_encode(image, quality, subsampling="4:2:0"))
