"""The default background bank: real photos and textures shipped inside scikit-image.

``skimage.data`` bundles a few dozen images in its wheel (no download): :data:`BANK_IMAGES` lists
the ones used, i.e. every bundled photo or texture **without a human face** (``astronaut``,
``camera``, ``lfw_subset`` and the ``no_time_for_that`` animation are left out; the tests run the
face detector on every bank image and expect zero faces). Each is converted to RGB uint8 once per
process (greyscale replicated, alpha composited over white, binary masks scaled to 0/255) and
shrunk so its shorter side is at most :data:`MAX_SIDE` pixels.

A draw (:meth:`PhotoBank.draw`, every choice from the generator passed in, so a background is a
pure function of the sample's seed) picks an image, a square crop of 30-100 % of its shorter
side at a random place, a random flip and quarter turn, resizes it (bilinear) to the output size,
decodes it to linear light (:mod:`synth.color`) and applies a colour shift there: per-channel gains
``exp(U(-0.25, 0.25))`` (``exp(U(-0.5, 0.5))`` for greyscale images, to tint them) and an exposure
``exp(U(-1.0, 0.3))``. The result is linear RGB in [0, 1].
"""
from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np

from .color import srgb_u8_to_linear

__all__ = ["BANK_IMAGES", "EXCLUDED_IMAGES", "MAX_SIDE", "PhotoBank", "bank_image", "default_bank"]

log = logging.getLogger(__name__)

# (name, skimage.data function, index into its tuple result or None)
BANK_IMAGES: tuple[tuple[str, str, int | None], ...] = (
    ("brick", "brick", None), ("grass", "grass", None), ("gravel", "gravel", None),
    ("coffee", "coffee", None), ("rocket", "rocket", None), ("coins", "coins", None), ("moon", "moon", None),
    ("hubble_deep_field", "hubble_deep_field", None), ("retina", "retina", None),
    ("motorcycle_left", "stereo_motorcycle", 0), ("motorcycle_right", "stereo_motorcycle", 1),
    ("page", "page", None), ("text", "text", None), ("clock", "clock", None), ("colorwheel", "colorwheel", None),
    ("logo", "logo", None), ("horse", "horse", None), ("chelsea", "chelsea", None), ("cell", "cell", None),
    ("immunohistochemistry", "immunohistochemistry", None), ("checkerboard", "checkerboard", None),
)
EXCLUDED_IMAGES = ("astronaut", "camera", "lfw_subset", "no_time_for_that")  # human faces
MAX_SIDE = 512  # shorter side of a bank image after the one-time shrink (crops are resized anyway)
CROP_FRACTION = (0.3, 1.0)  # crop side / shorter image side
GAIN_LOG = 0.25  # colour images: per-channel gains exp(U(-GAIN_LOG, GAIN_LOG)), linear light
GREY_GAIN_LOG = 0.5  # greyscale images: stronger tint
EXPOSURE_LOG = (-1.0, 0.3)  # overall gain exp(U(lo, hi)), linear light


@dataclasses.dataclass(frozen=True)
class BankImage:
    name: str
    pixels: np.ndarray  # (H, W, 3) uint8 sRGB, read-only
    grey: bool  # the source was greyscale (or binary)


@functools.lru_cache(maxsize=None)
def bank_image(name: str) -> BankImage:
    """One bank image (by its :data:`BANK_IMAGES` name), RGB uint8, shorter side <= MAX_SIDE."""
    entries = {n: (f, i) for n, f, i in BANK_IMAGES}
    if name not in entries:
        raise ValueError(f"unknown bank image {name!r}; known: {', '.join(entries)}")
    import skimage.data
    from PIL import Image

    func, index = entries[name]
    a = getattr(skimage.data, func)()
    if index is not None:
        a = a[index]
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        raise ValueError(f"skimage.data.{func}() gave {a.dtype}, expected uint8")
    grey = a.ndim == 2
    if grey:
        a = np.repeat(a[..., None], 3, axis=-1)
    elif a.shape[-1] == 4:  # RGBA over white
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = np.round(a[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    im = Image.fromarray(np.ascontiguousarray(a[..., :3]))
    short = min(im.size)
    if short > MAX_SIDE:
        w, h = im.size
        im = im.resize((round(w * MAX_SIDE / short), round(h * MAX_SIDE / short)), Image.LANCZOS)
    pixels = np.asarray(im).copy()
    pixels.setflags(write=False)
    return BankImage(name, pixels, grey)


class PhotoBank:
    """Random crops of the bundled images (see the module doc). ``names``: a subset of the bank."""

    def __init__(self, names: tuple[str, ...] | None = None):
        self.names = tuple(n for n, _, _ in BANK_IMAGES) if names is None else tuple(names)
        if not self.names:
            raise ValueError("names must not be empty")
        for n in self.names:
            if n not in {m for m, _, _ in BANK_IMAGES}:
                raise ValueError(f"unknown bank image {n!r}")

    def __len__(self) -> int:
        return len(self.names)

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """A ``(size, size, 3)`` float32 linear-RGB background (every choice from ``rng``)."""
        from PIL import Image

        img = bank_image(self.names[int(rng.integers(len(self.names)))])
        h, w = img.pixels.shape[:2]
        side = max(8, int(round(min(h, w) * rng.uniform(*CROP_FRACTION))))
        side = min(side, h, w)
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        flip, turns = bool(rng.uniform() < 0.5), int(rng.integers(4))
        spread = GREY_GAIN_LOG if img.grey else GAIN_LOG
        gains = np.exp(rng.uniform(-spread, spread, 3) + rng.uniform(*EXPOSURE_LOG)).astype(np.float32)
        crop = Image.fromarray(img.pixels[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.BILINEAR)
        a = np.asarray(crop)
        if flip:
            a = a[:, ::-1]
        a = np.rot90(a, turns)
        lin = srgb_u8_to_linear(a)  # (size, size, 3) float32, a new array
        lin *= gains
        return np.clip(lin, 0.0, 1.0, out=lin)


@functools.lru_cache(maxsize=1)
def default_bank() -> PhotoBank:
    """The bank of every :data:`BANK_IMAGES` entry (one per process)."""
    return PhotoBank()
