"""Backgrounds and occluders composited behind / over the rendered face (RGB only; the geometry maps
are unaffected): a solid colour, smooth coloured value noise, random crops of an image folder, and
flat occluding shapes.

Every draw comes from the generator seeded with the sample's ``background_seed`` (or the occluder
list drawn by :func:`synth.sampling.sample_occluders`), so a background depends only on the sample.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

__all__ = ["BACKGROUNDS", "draw_background", "noise_texture", "ImageFolder", "paint_occluders"]

BACKGROUNDS = ("none", "solid", "noise", "images")


def draw_background(kind: str, color: np.ndarray, seed: int, size: int, images: "ImageFolder | None" = None) -> np.ndarray:
    """Background ``(size, size, 3)`` float32 in [0, 1] of ``kind`` (:data:`BACKGROUNDS`): ``none`` black,
    ``solid`` the colour, ``noise`` :func:`noise_texture` around ``0.2 + 0.6 * color``, ``images`` a
    random crop of ``images`` (an :class:`ImageFolder`); ``seed`` seeds the noise / the image draw."""
    if kind == "none":
        return np.zeros((size, size, 3), np.float32)
    if kind == "solid":
        return np.broadcast_to(np.asarray(color, np.float32), (size, size, 3)).copy()
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return noise_texture(rng, size, 0.2 + 0.6 * np.asarray(color))
    if kind == "images":
        if images is None:
            raise ValueError("--background images needs --background-dir DIR")
        return images.draw(rng, size)
    raise ValueError(f"--background must be none|solid|noise|images, got {kind!r}")


def noise_texture(rng: np.random.Generator, size: int, base: np.ndarray) -> np.ndarray:
    """Smooth multi-octave coloured value noise ``(size, size, 3)`` float32 in [0, 1]
    (computed at a quarter of the resolution, then bilinearly upsampled)."""
    small = max(size // 4, 4)
    tex = _value_noise(rng, small, base)
    if small == size:
        return tex
    from PIL import Image

    channels = [np.asarray(Image.fromarray(tex[..., c], mode="F").resize((size, size), Image.BILINEAR))
                for c in range(3)]
    return np.stack(channels, axis=-1)


def _value_noise(rng: np.random.Generator, size: int, base: np.ndarray) -> np.ndarray:
    out = np.zeros((size, size, 3), np.float32)
    x = (np.arange(size) + 0.5) / size
    total = 0.0
    for octave in range(4):
        g = 3 * 2 ** octave
        grid = rng.uniform(-1, 1, (g + 1, g + 1, 3)).astype(np.float32)
        t = x * g
        i = np.minimum(t.astype(int), g - 1)
        f = (t - i).astype(np.float32)
        # bilinear interpolation, rows then columns: (g+1, g+1, 3) -> (size, g+1, 3) -> (size, size, 3)
        rows = grid[i] * (1 - f)[:, None, None] + grid[i + 1] * f[:, None, None]
        img = rows[:, i] * (1 - f)[None, :, None] + rows[:, i + 1] * f[None, :, None]
        amp = 0.5 ** octave
        out += amp * img
        total += amp
    return np.clip(np.asarray(base, np.float32) + 0.35 * out / total, 0.0, 1.0)


class ImageFolder:
    """Background images from a folder (sorted list, small decode cache)."""

    EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

    def __init__(self, folder: str):
        p = Path(folder)
        if not p.is_dir():
            raise ValueError(f"--background-dir {folder!r} is not a directory")
        self.files = sorted(f for f in p.rglob("*") if f.suffix.lower() in self.EXTENSIONS)
        if not self.files:
            raise ValueError(f"--background-dir {folder!r} holds no images ({', '.join(self.EXTENSIONS)})")
        self._load = functools.lru_cache(maxsize=32)(self._load_uncached)

    @staticmethod
    def _load_uncached(path: Path):
        from PIL import Image

        with Image.open(path) as im:
            return im.convert("RGB")

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        from PIL import Image

        im = self._load(self.files[int(rng.integers(len(self.files)))])
        w, h = im.size
        side = int(min(w, h) * rng.uniform(0.5, 1.0))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = im.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BILINEAR)
        return np.asarray(crop, np.float32) / 255.0


def paint_occluders(image: np.ndarray, occluders) -> None:
    """Paint flat ellipses/rectangles (``synth.sampling.Occluder``) into ``image (H, W, 3)`` float in place."""
    if not occluders:
        return
    size = image.shape[0]
    c = np.arange(size) + 0.5
    uu, vv = np.meshgrid(c, c)
    for o in occluders:
        du, dv = uu - o.center[0], vv - o.center[1]
        ca, sa = np.cos(o.angle), np.sin(o.angle)
        a = (ca * du + sa * dv) / o.half_size[0]
        b = (-sa * du + ca * dv) / o.half_size[1]
        inside = (a * a + b * b <= 1.0) if o.kind == "ellipse" else ((np.abs(a) <= 1) & (np.abs(b) <= 1))
        image[inside] = o.color
