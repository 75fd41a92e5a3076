"""Backgrounds and occluders composited behind / over the rendered face (RGB only; the geometry maps
are unaffected), all in **linear light** (the renderer composites there and encodes the image to
sRGB once, :mod:`synth.color`):

* ``photos`` (default): random crops of real photos and textures bundled with scikit-image
  (:class:`PhotoBank`; no image with a human face);
* ``images``: random crops of the user's folder (``--background-dir``);
* ``noise``: smooth coloured value noise; ``solid``: one colour; ``none``: black.

Image files and the colours of ``noise`` / ``solid`` / flat occluders are sRGB display values and
are decoded to linear light here. Every draw comes from the generator seeded with the sample's
``background_seed`` (or the occluder list drawn by :func:`synth.sampling.sample_occluders`), so a
background depends only on the sample.

The photo bank
--------------
``skimage.data`` bundles a few dozen images in its wheel (no download): :data:`BANK_IMAGES` lists
the ones used, i.e. every bundled photo or texture **without a human face** (``astronaut``,
``camera``, ``lfw_subset`` and the ``no_time_for_that`` animation are left out; the tests run the
face detector on every bank image and expect zero faces). Each is converted to RGB uint8 once per
process (greyscale replicated, alpha composited over white, binary masks scaled to 0/255) and
shrunk so its shorter side is at most :data:`MAX_SIDE` pixels. A draw picks an image, a square crop
of 30-100 % of its shorter side at a random place, a random flip and quarter turn, resizes it
(bilinear) to the output size, decodes it to linear light and shifts its colour there: per-channel
gains ``exp(U(-0.25, 0.25))`` (``exp(U(-0.5, 0.5))`` for greyscale images, to tint them) times an
exposure ``exp(U(-1.0, 0.3))``.

Occluders
---------
1-3 ellipses / rectangles (:class:`synth.sampling.Occluder`) with a one-pixel anti-aliased edge,
filled with a texture cut from the photo bank (``texture_seed``; 80 % of them) or a flat colour.

Line occluders
--------------
Thin dark lines with no geometry (:class:`synth.sampling.LineOccluder`, ``--line-occluders``):
glasses rims, brows and hair strands, placed by the sample's projected landmarks
(:func:`line_polylines`) and painted as anti-aliased strokes (:func:`paint_lines`) before the
occluders. A network that learned "a dark line is a crease" from the renders' crease darkening sees
here dark lines whose depth is smooth.

Facial hair
-----------
Stubble, moustache, goatee or beard with no geometry (:class:`synth.sampling.FacialHair`,
``--facial-hair``): regions placed by the landmarks (:func:`facial_hair_polygons`) filled with
streaks of a seeded white-noise field on the face's pixels (:func:`paint_facial_hair`), painted
before the lines. Hair texture is dark and high-frequency like the darkened creases, and has no
relief.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import numpy as np

from .color import srgb_to_linear, srgb_u8_to_linear, srgb_u8_to_linear_gained

__all__ = ["BACKGROUNDS", "draw_background", "noise_texture", "ImageFolder", "PhotoBank", "BANK_IMAGES",
           "EXCLUDED_IMAGES", "MAX_SIDE", "bank_image", "default_bank", "paint_occluders",
           "face_frame", "line_polylines", "paint_lines", "stroke_coverage", "LINE_SEGMENTS", "CHIN_UNITS",
           "RIM_JOINT", "facial_hair_polygons", "polygon_coverage", "region_coverage", "paint_facial_hair", "HAIR_FEATHER", "HAIR_LENGTH"]

BACKGROUNDS = ("photos", "images", "noise", "solid", "none")


def draw_background(kind: str, color: np.ndarray, seed: int, size: int, images: "ImageFolder | None" = None) -> np.ndarray:
    """Background ``(size, size, 3)`` float32 linear RGB in [0, 1] of ``kind`` (:data:`BACKGROUNDS`):
    ``photos`` a crop of :func:`default_bank`, ``images`` a random crop of ``images`` (an
    :class:`ImageFolder`), ``noise`` :func:`noise_texture` around the sRGB colour ``0.2 + 0.6 * color``,
    ``solid`` the sRGB colour ``color``, ``none`` black; ``seed`` seeds the draw."""
    if kind == "none":
        return np.zeros((size, size, 3), np.float32)
    if kind == "solid":
        return np.broadcast_to(srgb_to_linear(np.asarray(color, np.float32)), (size, size, 3)).copy()
    rng = np.random.default_rng(seed)
    if kind == "photos":
        return default_bank().draw(rng, size)
    if kind == "noise":
        return srgb_to_linear(noise_texture(rng, size, 0.2 + 0.6 * np.asarray(color)))
    if kind == "images":
        if images is None:
            raise ValueError("--background images needs --background-dir DIR")
        return images.draw(rng, size)
    raise ValueError(f"--background must be one of {', '.join(BACKGROUNDS)}, got {kind!r}")


def noise_texture(rng: np.random.Generator, size: int, base: np.ndarray) -> np.ndarray:
    """Smooth multi-octave coloured value noise ``(size, size, 3)`` float32 in [0, 1] (sRGB values
    around ``base``; computed at a quarter of the resolution, then bilinearly upsampled)."""
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
        self.folder = folder
        self._load = functools.lru_cache(maxsize=32)(self._load_uncached)

    def _load_uncached(self, path: Path):
        from PIL import Image

        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # PIL's decode errors
            raise self._broken(path, e) from None

    def _broken(self, path: Path, e: Exception) -> ValueError:
        return ValueError(f"--background-dir {self.folder!r}: {path} cannot be decoded "
                          f"({' '.join(str(e).split())}); remove or mend it, then rerun")

    def check(self) -> None:
        """Read every image once — PNGs' chunk checksums, other formats decoded (JPEGs at 1/8 scale:
        the whole stream is still read) — so a broken file is a one-line ``ValueError`` before a
        job starts, not in the middle of it."""
        from PIL import Image

        for path in self.files:
            try:
                with Image.open(path) as im:
                    if im.format == "PNG":
                        im.verify()  # every chunk's CRC, nothing decompressed
                    else:
                        im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                        im.load()
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                raise self._broken(path, e) from None

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """A random square crop (50-100 % of the shorter side), ``(size, size, 3)`` float32 linear RGB."""
        from PIL import Image

        im = self._load(self.files[int(rng.integers(len(self.files)))])
        w, h = im.size
        side = int(min(w, h) * rng.uniform(0.5, 1.0))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = im.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BILINEAR)
        return srgb_u8_to_linear(np.asarray(crop))


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
    """One image of the photo bank."""

    name: str
    pixels: np.ndarray  # (H, W, 3) uint8 sRGB, read-only
    grey: bool  # the source was greyscale (or binary)
    image: "Image.Image | None" = None  # the same pixels as a PIL image (crops are cut from it in C)


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
    return BankImage(name, pixels, grey, Image.fromarray(pixels))


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

    def load(self) -> "PhotoBank":
        """Decode every image of the bank now (~2 s once per process) rather than on first use."""
        for name in self.names:
            bank_image(name)
        return self

    def draw(self, rng: np.random.Generator, size: int, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """A ``(size, size, 3)`` float32 linear-RGB background (every choice from ``rng``).

        ``window = (r0, r1, c0, c1)``: only the window ``[r0:r1, c0:c1]`` of that draw is computed
        (what an occluder covers; the same choices from ``rng``): PIL resamples the crop over the
        window's box alone, which rounds to within 2 levels of cutting the whole draw (tested)."""
        from PIL import Image

        img = bank_image(self.names[int(rng.integers(len(self.names)))])
        h, w = img.pixels.shape[:2]
        side = max(8, int(round(min(h, w) * rng.uniform(*CROP_FRACTION))))
        side = min(side, h, w)
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        flip, turns = bool(rng.uniform() < 0.5), int(rng.integers(4))
        spread = GREY_GAIN_LOG if img.grey else GAIN_LOG
        gains = np.exp(rng.uniform(-spread, spread, 3) + rng.uniform(*EXPOSURE_LOG)).astype(np.float32)
        crop = img.image.crop((x0, y0, x0 + side, y0 + side))  # = Image.fromarray(pixels[y0:.., x0:..]), faster
        if window is None:
            a = np.asarray(crop.resize((size, size), Image.BILINEAR))
        else:
            r0, r1, c0, c1 = (int(x) for x in window)
            if not (0 <= r0 < r1 <= size and 0 <= c0 < c1 <= size):
                raise ValueError(f"window must be (r0, r1, c0, c1) with 0 <= r0 < r1 <= {size}, "
                                 f"0 <= c0 < c1 <= {size}, got {window}")
            # the window's rows and columns in the resized crop, before the flip and the quarter turns
            rows, cols = _unturned_box(r0, r1, c0, c1, size, turns)
            if flip:
                cols = (size - cols[1], size - cols[0])
            scale = side / size  # crop pixels per output pixel
            box = (cols[0] * scale, rows[0] * scale, cols[1] * scale, rows[1] * scale)
            a = np.asarray(crop.resize((cols[1] - cols[0], rows[1] - rows[0]), Image.BILINEAR, box=box))
        if flip:
            a = a[:, ::-1]
        a = np.rot90(a, turns)
        return srgb_u8_to_linear_gained(a, gains)  # (size, size, 3) or the window's, float32, a new array


def _unturned_box(r0: int, r1: int, c0: int, c1: int, size: int, turns: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((rows), (cols))``: the half-open box of a ``size`` x ``size`` array ``a`` whose
    ``np.rot90(a, turns)`` is the window ``[r0:r1, c0:c1]`` (``rot90(a)[i, j] = a[j, size - 1 - i]``)."""
    turns %= 4
    if turns == 0:
        return (r0, r1), (c0, c1)
    if turns == 1:
        return (c0, c1), (size - r1, size - r0)
    if turns == 2:
        return (size - r1, size - r0), (size - c1, size - c0)
    return (size - c1, size - c0), (r0, r1)


@functools.lru_cache(maxsize=1)
def default_bank() -> PhotoBank:
    """The bank of every :data:`BANK_IMAGES` entry (one per process)."""
    return PhotoBank()


def paint_occluders(image: np.ndarray, occluders) -> None:
    """Paint ellipses/rectangles (``synth.sampling.Occluder``) into the linear-RGB ``image (H, W, 3)``
    float32 in place: a bank texture (``texture_seed``) or the flat sRGB ``color``, with a one-pixel
    anti-aliased edge (coverage = signed distance of the pixel centre to the outline + 0.5, clipped)."""
    if not occluders:
        return
    size = image.shape[0]
    for o in occluders:
        hx, hy = float(o.half_size[0]), float(o.half_size[1])
        # compute on a window around the shape only (the same per-pixel values as on the whole image,
        # tested): no pixel further than `reach` from the centre gets coverage > 0. Rectangle: it is
        # the shape grown by half a pixel. Ellipse (r^2 = a^2 + b^2, g = |grad r^2| / 2 <= r / h_min):
        # coverage is 0 where r^2 - 1 >= g, so wherever r >= r* = (1 / h_min + sqrt(1 / h_min^2 + 4)) / 2,
        # i.e. beyond a distance h_max r* from the centre
        if o.kind == "ellipse":
            inv = 1.0 / max(min(hx, hy), 1e-9)
            reach = max(hx, hy) * 0.5 * (inv + math.sqrt(inv * inv + 4.0)) + 1.0
        else:
            reach = math.hypot(hx + 0.5, hy + 0.5) + 1.0
        r0, r1, c0, c1 = _window(np.asarray(o.center, np.float64)[None], reach, size)
        if r0 >= r1 or c0 >= c1:
            continue
        uu, vv = _pixel_centres(r0, r1, c0, c1)
        du, dv = uu - o.center[0], vv - o.center[1]
        ca, sa = np.cos(o.angle), np.sin(o.angle)
        a = (ca * du + sa * dv) / hx  # shape coordinates: the outline is a^2 + b^2 = 1 or max(|a|, |b|) = 1
        b = (-sa * du + ca * dv) / hy
        if o.kind == "ellipse":
            r2 = a * a + b * b
            # first-order distance to the outline in pixels: (1 - r^2) / |grad r^2|,
            # with |grad r^2| = 2 sqrt(a^2 / hx^2 + b^2 / hy^2)
            dist = (1.0 - r2) / np.maximum(2.0 * np.sqrt((a / hx) ** 2 + (b / hy) ** 2), 1e-9)
        else:
            dist = np.minimum((1.0 - np.abs(a)) * hx, (1.0 - np.abs(b)) * hy)
        cover = np.clip(dist + 0.5, 0.0, 1.0).astype(np.float32)
        if not cover.any():
            continue
        seed = getattr(o, "texture_seed", None)
        window = image[r0:r1, c0:c1]  # a view: painted in place
        if seed is not None:  # a bank texture for the whole image, resampled on the window only
            fill = default_bank().draw(np.random.default_rng(seed), size, window=(r0, r1, c0, c1))
        else:
            fill = np.broadcast_to(srgb_to_linear(np.asarray(o.color, np.float32)), window.shape)
        _blend(window, cover, fill)


def _window(pts: np.ndarray, reach: float, size: int) -> tuple[int, int, int, int]:
    """``(r0, r1, c0, c1)``: the rows and columns of a ``size`` x ``size`` image within ``reach`` pixels
    of the bounding box of the points ``pts (K, 2)`` (x, y), clipped to the image (empty when
    ``r0 >= r1`` or ``c0 >= c1``): where a painted shape can have coverage."""
    r0, r1 = max(int(math.floor(pts[:, 1].min() - reach)), 0), min(int(math.ceil(pts[:, 1].max() + reach)), size)
    c0, c1 = max(int(math.floor(pts[:, 0].min() - reach)), 0), min(int(math.ceil(pts[:, 0].max() + reach)), size)
    return r0, r1, c0, c1


def _pixel_centres(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
    """``(uu, vv)``: the x and y of the pixel centres of rows ``r0:r1`` and columns ``c0:c1``, float64."""
    uu, vv = np.meshgrid(np.arange(c0, c1, dtype=np.float64) + 0.5, np.arange(r0, r1, dtype=np.float64) + 0.5)
    return uu, vv


def _blend(window: np.ndarray, cover: np.ndarray, fill) -> None:
    """``window <- (1 - cover) window + cover fill`` in place (``cover (h, w)``, ``fill`` broadcast to
    ``window (h, w, 3)``): the one over-blend of the painted occluders and lines."""
    w = cover[..., None]
    window *= 1.0 - w
    window += w * fill


def stroke_coverage(half: float, dist: np.ndarray) -> np.ndarray:
    """Coverage of a pixel whose centre lies ``dist`` pixels from the axis of a stroke ``2 half`` pixels
    wide: ``clip(min(half + 0.5 - dist, 2 half, 1), 0, 1)``, a one-pixel ramp across each edge. Across
    the stroke it sums to the width (the ink of a line ``2 half`` px wide) for any width, so sub-pixel
    strokes come out faint, not as dark as a one-pixel line (without the ``2 half`` cap a 0.4-px
    line would paint 0.9 at its centre)."""
    return np.clip(np.minimum(half + 0.5 - dist, min(2.0 * half, 1.0)), 0.0, 1.0)


LINE_SEGMENTS = 32  # polyline points of a glasses rim (closed) and of a strand's Bezier curve
CHIN_UNITS = 2.0  # eye-centres-to-chin distance in face units (built-in mean face: 123 mm / eye distance 60 mm)
RIM_JOINT = 0.3  # height of the glasses' bridge and temples above the rim centre, in rim half-heights


def face_frame(landmarks: np.ndarray):
    """``(origin, x_axis, y_axis)`` pixel vectors of the face coordinates of
    :class:`synth.sampling.LineOccluder` from the 68 projected landmarks ``(68, 2)``: the origin midway
    between the eye centres (mean of points 36-41 and 42-47), ``x_axis`` from the first eye centre to
    the second (foreshortened with the yaw), ``y_axis`` perpendicular to it toward the chin (point 8),
    its length the eye-to-chin distance / :data:`CHIN_UNITS` (both about the eye distance on a
    frontal face of the built-in model: 60 mm; the y unit keeps its size when the face turns)."""
    lm = np.asarray(landmarks, np.float64)
    e0, e1 = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    origin = (e0 + e1) / 2.0
    x_axis = e1 - e0
    down = lm[8] - origin
    unit = float(np.hypot(*down)) / CHIN_UNITS
    norm = float(np.hypot(*x_axis))
    perp = np.array([-x_axis[1], x_axis[0]]) / norm if norm > 1e-9 else down / max(float(np.hypot(*down)), 1e-9)
    if perp @ down < 0:
        perp = -perp
    return origin, x_axis, perp * unit


def line_polylines(line, landmarks: np.ndarray, frame=None) -> list[tuple[np.ndarray, bool]]:
    """The pixel polylines ``[(points (K, 2), closed), ...]`` of one
    :class:`synth.sampling.LineOccluder` on a face with projected ``landmarks (68, 2)``
    (``frame``: their :func:`face_frame`, computed here when None)."""
    origin, xa, ya = face_frame(landmarks) if frame is None else frame

    def at(ab):  # face coordinates (..., 2) -> pixels
        ab = np.asarray(ab, np.float64)
        return origin + ab[..., :1] * xa + ab[..., 1:2] * ya

    lm = np.asarray(landmarks, np.float64)
    if line.kind == "glasses":
        ha, hb, dy, temples = (float(x) for x in line.shape[:4])
        t = np.linspace(0.0, 2.0 * np.pi, LINE_SEGMENTS, endpoint=False)
        out = []
        for side in (-1.0, 1.0):
            rim = np.stack([side * 0.5 + ha * np.cos(t), dy + hb * np.sin(t)], axis=1)
            out.append((at(rim), True))
        # bridge and temples leave the rims at the height of their upper part, where the rim's
        # half-width is ha sqrt(1 - RIM_JOINT^2) (not ha: they would stick out past the rim)
        top = dy - RIM_JOINT * hb
        reach = ha * math.sqrt(1.0 - RIM_JOINT ** 2)
        out.append((at([[-0.5 + reach, top], [0.5 - reach, top]]), False))  # the bridge
        if temples > 0:
            for side, jaw in ((-1.0, lm[0]), (1.0, lm[16])):
                start = at([side * (0.5 + reach), top])
                out.append((np.stack([start, start + temples * (jaw - start)]), False))
        return out
    if line.kind == "brows":
        up = float(line.shape[0]) * ya
        return [(lm[17:22] - up, False), (lm[22:27] - up, False)]
    if line.kind == "strands":
        t = np.linspace(0.0, 1.0, LINE_SEGMENTS)[:, None]
        out = []
        for p0, p1, p2 in np.asarray(line.points, np.float64):
            curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
            out.append((at(curve), False))
        return out
    raise ValueError(f"line occluder kind must be glasses, brows or strands, got {line.kind!r}")


def _segment_distance(px: np.ndarray, py: np.ndarray, pts: np.ndarray, closed: bool) -> np.ndarray:
    """Distance of the points ``(px, py)`` (any shape) to the polyline ``pts (K, 2)``."""
    a, b = (pts, np.roll(pts, -1, axis=0)) if closed else (pts[:-1], pts[1:])
    best = np.full(px.shape, np.inf)
    for (ax, ay), (bx, by) in zip(a, b):
        dx, dy = bx - ax, by - ay
        den = dx * dx + dy * dy
        s = np.zeros(px.shape) if den <= 0 else np.clip(((px - ax) * dx + (py - ay) * dy) / den, 0.0, 1.0)
        np.minimum(best, np.hypot(px - ax - s * dx, py - ay - s * dy), out=best)
    return best


def paint_lines(image: np.ndarray, lines, landmarks: np.ndarray | None) -> np.ndarray | None:
    """Paint :class:`synth.sampling.LineOccluder` strokes into the linear-RGB ``image (H, W, 3)``
    float32 in place. Per line: the distance of each pixel centre to the nearest of its polylines
    (:func:`line_polylines`), coverage :func:`stroke_coverage` of it (width in pixels = the face-unit
    width x the frame's y unit) x opacity, blended once toward the sRGB ``color`` decoded to linear
    light, so that where a line's polylines meet (a rim and its bridge) the pixels are painted once.
    Returns the painted coverage ``(H, W)`` float32 (the largest per pixel; None when nothing was
    painted: no lines, or no landmarks)."""
    if not lines or landmarks is None:
        return None
    size = image.shape[0]
    covered = np.zeros(image.shape[:2], np.float32)
    frame = face_frame(landmarks)
    unit = float(np.hypot(*frame[2]))
    for line in lines:
        half = 0.5 * float(line.width) * unit
        reach = half + 1.0  # no pixel centre further than this from a polyline gets coverage
        polys = []  # (points, closed, window rows, window columns)
        for pts, closed in line_polylines(line, landmarks, frame):
            if not np.isfinite(pts).all():
                continue
            r0, r1, c0, c1 = _window(pts, reach, size)
            if r0 < r1 and c0 < c1:
                polys.append((pts, closed, r0, r1, c0, c1))
        if not polys:
            continue
        # the line's window: the union of its polylines' windows; each polyline's distances are
        # computed on its own window only
        R0, R1 = min(p[2] for p in polys), max(p[3] for p in polys)
        C0, C1 = min(p[4] for p in polys), max(p[5] for p in polys)
        dist = np.full((R1 - R0, C1 - C0), np.inf)
        for pts, closed, r0, r1, c0, c1 in polys:
            uu, vv = _pixel_centres(r0, r1, c0, c1)
            sub = dist[r0 - R0:r1 - R0, c0 - C0:c1 - C0]
            np.minimum(sub, _segment_distance(uu, vv, pts, closed), out=sub)
        cover = (stroke_coverage(half, dist) * float(line.opacity)).astype(np.float32)
        if not cover.any():
            continue
        _blend(image[R0:R1, C0:C1], cover, srgb_to_linear(np.asarray(line.color, np.float32)))
        np.maximum(covered[R0:R1, C0:C1], cover, out=covered[R0:R1, C0:C1])
    return covered


HAIR_FEATHER = 0.06  # soft edge of a facial-hair region, face units (~1.6 px at 128 px)
HAIR_LENGTH = {"stubble": 0.0, "moustache": 0.1, "goatee": 0.1, "beard": 0.18}  # one hair's streak, face units
# (0.1 / 0.18 are 3 / 5 px at 128 px with the default camera; a stubble hair is one pixel)


def facial_hair_polygons(kind: str, landmarks: np.ndarray, frame=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(regions, holes)``: the pixel polygons ``(K, 2)`` of facial hair ``kind``
    (:class:`synth.sampling.FacialHair`) on a face with projected ``landmarks (68, 2)`` (``frame``:
    their :func:`face_frame`): the hair covers the union of the regions less the holes. Moustache:
    the nose's base (31-35) to the upper lip (49-53), its tips 0.12 face units past the mouth corners
    and 0.08 lower. Goatee: the moustache and the chin between the lower lip (55-59) and the jaw
    (6-10). Stubble and beard: the jaw (1-15) up to the nose's base, the cheek edge from the
    sideburn to half way between the nose's wing and the jaw point 3 / 13, 0.15 higher; the lips
    (48-59) are a hole."""
    origin, xa, ya = face_frame(landmarks) if frame is None else frame
    lm = np.asarray(landmarks, np.float64)
    unit = float(np.hypot(*ya))
    ex = xa / max(float(np.hypot(*xa)), 1e-9) * unit  # one face unit along the eye line (y's length)
    ey = ya
    left, right = lm[48] - 0.12 * ex + 0.08 * ey, lm[54] + 0.12 * ex + 0.08 * ey
    moustache = np.concatenate([lm[31:36], [right], lm[53:48:-1], [left]])
    if kind == "moustache":
        return [moustache], []
    if kind == "goatee":
        chin = np.concatenate([[lm[48] - 0.05 * ex], lm[59:54:-1], [lm[54] + 0.05 * ex], lm[10:5:-1]])
        return [moustache, chin], []
    if kind in ("stubble", "beard"):
        cheek_l = lm[31] + 0.5 * (lm[3] - lm[31]) - 0.15 * ey
        cheek_r = lm[35] + 0.5 * (lm[13] - lm[35]) - 0.15 * ey
        region = np.concatenate([lm[1:16], [cheek_r], lm[35:30:-1], [cheek_l]])
        return [region], [lm[48:60]]
    raise ValueError(f"facial hair kind must be stubble, moustache, goatee or beard, got {kind!r}")


def _inside_polygon(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd test of the points ``(px, py)`` (any shape) against the closed polygon ``poly (K, 2)``."""
    inside = np.zeros(px.shape, bool)
    for (ax, ay), (bx, by) in zip(poly, np.roll(poly, -1, axis=0)):
        if ay == by:
            continue
        crosses = (ay > py) != (by > py)
        inside ^= crosses & (px < ax + (py - ay) * (bx - ax) / (by - ay))
    return inside


def polygon_coverage(px: np.ndarray, py: np.ndarray, poly: np.ndarray, feather: float = 1.0) -> np.ndarray:
    """Coverage of the closed polygon ``poly (K, 2)`` at the pixel centres ``(px, py)``: 1/2 on the
    outline, linear in the signed distance to it, 1 from ``feather / 2`` pixels inside and 0 from
    ``feather / 2`` outside (a ramp ``feather`` pixels wide across the outline)."""
    d = _segment_distance(px, py, poly, True)
    return np.clip(0.5 + np.where(_inside_polygon(px, py, poly), d, -d) / feather, 0.0, 1.0)


def region_coverage(px: np.ndarray, py: np.ndarray, regions, holes, feather: float = 1.0) -> np.ndarray:
    """Coverage of the union of the polygons ``regions`` less the polygons ``holes`` (as
    :func:`facial_hair_polygons` gives them) at the pixel centres ``(px, py)``: the largest
    :func:`polygon_coverage` of a region (edges ``feather`` pixels wide) x (1 - each hole's, one-pixel edges)."""
    cover = np.max([polygon_coverage(px, py, poly, feather) for poly in regions], axis=0)
    for hole in holes:
        cover = cover * (1.0 - polygon_coverage(px, py, hole))
    return cover


def paint_facial_hair(image: np.ndarray, hair, landmarks: np.ndarray | None,
                      face: np.ndarray | None = None) -> np.ndarray | None:
    """Paint :class:`synth.sampling.FacialHair` into the linear-RGB ``image (H, W, 3)`` float32 in
    place: coverage = region (:func:`facial_hair_polygons`, edges feathered over :data:`HAIR_FEATHER`
    face units, lips cut out with a one-pixel edge) x ``face`` (the face's pixels, bool ``(H, W)``;
    None: everywhere) x hairs x opacity, blended toward the sRGB ``color`` decoded to linear light.
    The hairs: the pixels of a white-noise field over the whole image (seeded by ``texture_seed``)
    below ``density``, averaged along the hair's direction over its :data:`HAIR_LENGTH` (an odd number
    of pixels, at least one). Returns the painted coverage ``(H, W)`` float32, or None when nothing
    was painted (no hair, no landmarks)."""
    if hair is None or landmarks is None:
        return None
    size = image.shape[0]
    frame = face_frame(landmarks)
    unit = float(np.hypot(*frame[2]))
    regions, holes = facial_hair_polygons(hair.kind, landmarks, frame)
    pts = np.concatenate(regions)
    if not (np.isfinite(pts).all() and all(np.isfinite(h).all() for h in holes)):
        return None
    feather = max(1.0, HAIR_FEATHER * unit)
    reach = feather + 1.0
    r0, r1, c0, c1 = _window(pts, reach, size)
    if r0 >= r1 or c0 >= c1:
        return None
    uu, vv = _pixel_centres(r0, r1, c0, c1)
    region = region_coverage(uu, vv, regions, holes, feather)
    if face is not None:
        region *= face[r0:r1, c0:c1]
    dots = (np.random.default_rng(hair.texture_seed).random((size, size)) < hair.density).astype(np.float32)
    taps = 1 + 2 * int(round(HAIR_LENGTH[hair.kind] * unit / 2))
    if taps > 1:  # streaks: the mean of the dots shifted by whole pixels along the hair's direction
        ex = frame[1] / max(float(np.hypot(*frame[1])), 1e-9)
        ey = frame[2] / max(unit, 1e-9)
        d = math.sin(hair.angle) * ex + math.cos(hair.angle) * ey
        d = d / np.abs(d).max()  # one whole pixel along the direction's dominant axis
        dots = np.mean([np.roll(dots, (int(round(k * d[1])), int(round(k * d[0]))), axis=(0, 1))
                        for k in range(-(taps // 2), taps // 2 + 1)], axis=0)
    cover = (region * dots[r0:r1, c0:c1] * float(hair.opacity)).astype(np.float32)
    if not cover.any():
        return None
    _blend(image[r0:r1, c0:c1], cover, srgb_to_linear(np.asarray(hair.color, np.float32)))
    covered = np.zeros(image.shape[:2], np.float32)
    covered[r0:r1, c0:c1] = cover
    return covered
