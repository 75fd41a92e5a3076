"""One framing for renders and photos: the square face crop, its transforms, and the rules that
place it from 68 landmarks or from a detector's face box.

The photo pipeline (:mod:`train.photos`) crops photos with these rules; the renderer's camera
sampling (:func:`synth.sampling.sample_camera`) chooses intrinsics so that a render *is* the crop
the same rule makes from the sample's landmarks (plus the detector's measured jitter). A network
trained on renders therefore sees faces framed as the photo pipeline frames them.

Pixel convention (docs/DESIGN.md): continuous coordinates, origin at the image's top-left corner,
x right, y down; the centre of pixel (row i, col j) is (u, v) = (j + 0.5, i + 0.5). An image of
width W covers u in [0, W].

A :class:`Crop` is a square of side ``side`` pixels centred at ``center``, optionally rotated by
``angle``. Cropping to an ``out_size`` image is the similarity

    q = s * R(angle)^T (p - center) + out_size / 2,     s = out_size / side,

with ``R(a) = [[cos a, -sin a], [sin a, cos a]]`` (image coordinates, y down): the crop's x axis
is the image direction ``(cos a, sin a)``, so a positive angle turns the crop clockwise on screen,
and a face whose eye line has that direction comes out upright.

Angle and camera roll: for a camera with ``fx == fy`` (square pixels), cropping with angle ``a``
is the same as rotating the camera about its optical axis: camera-frame points become
``p' = Rz(a) p`` (``Rz`` = rotation about z, counter-clockwise in the y-up camera frame), i.e. the
pose's roll grows by ``a`` (``R = Rz(roll) Rx(pitch) Ry(yaw)``), and the intrinsics of the crop
are those of :meth:`Crop.map_intrinsics`. For ``angle == 0`` no rotation is needed.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

FRAMING_VERSION = "framing-v1"
"""Changes whenever a rule or constant below changes (part of the photo pipeline's cache key)."""

# --------------------------------------------------------------------------- rule constants
# The landmark rule uses the eyes and the mouth only: a detector places them far more consistently
# than the jaw line or the brows (on renders of the built-in model, a rule on all 68 points moved
# by 4.7 % / 2.0 % of the side (u / v) and 9.6 % in size between true and detected landmarks; this
# one by 0.8 % / 1.4 % and 5.9 %; benchmarks/detector_jitter.py).

EYE_MOUTH_RATIO = 1.24
"""Eye-line-to-mouth distance / eye-to-eye distance of a frontal face (median over near-frontal
renders of the built-in model, 1.24; adult faces: ~70 mm / ~62 mm). The face size is
``max(|eye->mouth|, EYE_MOUTH_RATIO * |eye->eye|)``: yaw shortens the eye-to-eye vector, pitch the
eye-to-mouth one, and the larger of the two is the one least foreshortened."""

CENTER_DOWN = 0.2
"""The crop centre is the eyes' midpoint moved toward the mouth by this fraction of the
eye-to-mouth vector: the middle of the head (skull top to chin) lies a little below the eyes.
Chosen so the top and bottom margins of the face are balanced on renders."""

CROP_SCALE = 4.2
"""Crop side / face size. The hairline-to-chin face (about 2.7 face sizes) fills about 65 % of the
crop: chin, forehead, some hair and neck are inside. On renders of the built-in model framed by
this rule with the detector's jitter (default priors, benchmarks/framing_stats.py) the face mask
touches the top or bottom border in 0.5 % of samples and a side border only beyond 50 degrees of
yaw (the far cheek of a face turned that far lies outside the eyes-and-mouth frame)."""

BOX_CENTER_SHIFT = -0.11
"""Detector box rule: the crop centre is the box centre moved down by this fraction of the box
height (negative: up). Calibrated on renders against :func:`crop_from_landmarks` on the detector's
own landmarks (benchmarks/detector_jitter.py: median -0.109, spread 0.032 box heights): mediapipe's
box reaches from the brows to the chin, whose middle lies below the crop centre."""

BOX_SCALE = 1.92
"""Detector box rule: crop side / the box's larger side (calibrated like ``BOX_CENTER_SHIFT``: median
1.917, spread 0.14, so a box-only crop is about 7 % less certain in size than a landmark crop)."""

# Groups of the 68 iBUG points (0-based) used by the rules
_RIGHT_EYE = slice(36, 42)  # subject's right eye: the image's left for a frontal face
_LEFT_EYE = slice(42, 48)


def _rot(angle: float) -> np.ndarray:
    """``R(a) = [[cos a, -sin a], [sin a, cos a]]`` (2, 2) float64."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _check_size(out_size) -> float:
    if not (isinstance(out_size, (int, np.integer)) and out_size >= 1):
        raise ValueError(f"out_size must be a positive integer, got {out_size!r}")
    return float(out_size)


@dataclasses.dataclass(frozen=True, eq=False)
class Crop:
    """A square crop of an image: centre (u, v) and side in image pixels, rotation in radians.

    See the module docstring for the transform and the meaning of ``angle``.
    """

    center: np.ndarray  # (2,) float64 image pixels (u, v)
    side: float  # side of the square, image pixels
    angle: float = 0.0  # radians, crop x axis = image direction (cos a, sin a)

    def __post_init__(self) -> None:
        c = np.asarray(self.center, dtype=np.float64).reshape(-1)
        if c.shape != (2,) or not np.all(np.isfinite(c)):
            raise ValueError(f"center must be 2 finite numbers (u, v), got {self.center!r}")
        if not (math.isfinite(self.side) and self.side > 0):
            raise ValueError(f"side must be a positive number of pixels, got {self.side!r}")
        if not math.isfinite(self.angle):
            raise ValueError(f"angle must be finite, got {self.angle!r}")
        c.setflags(write=False)
        object.__setattr__(self, "center", c)
        object.__setattr__(self, "side", float(self.side))
        object.__setattr__(self, "angle", float(self.angle))

    def __eq__(self, other) -> bool:
        return (isinstance(other, Crop) and np.array_equal(self.center, other.center)
                and self.side == other.side and self.angle == other.angle)

    __hash__ = None  # holds an array

    # ---------------------------------------------------------------- transforms
    def scale(self, out_size: int) -> float:
        """Crop pixels per image pixel for an ``out_size`` crop."""
        return _check_size(out_size) / self.side

    def matrix(self, out_size: int) -> np.ndarray:
        """``(2, 3)`` float64 similarity from image pixels to pixels of the ``out_size`` crop."""
        s = self.scale(out_size)
        a = s * _rot(self.angle).T  # (2, 2)
        t = out_size / 2.0 - a @ self.center
        return np.concatenate([a, t[:, None]], axis=1)

    def inverse_matrix(self, out_size: int) -> np.ndarray:
        """``(2, 3)`` float64 similarity from pixels of the ``out_size`` crop back to image pixels."""
        s = self.scale(out_size)
        a = _rot(self.angle) / s  # (2, 2)
        t = self.center - a @ np.full(2, out_size / 2.0)
        return np.concatenate([a, t[:, None]], axis=1)

    def map_points(self, points, out_size: int) -> np.ndarray:
        """Image pixels ``(..., 2)`` -> crop pixels ``(..., 2)`` (float64)."""
        return _apply(self.matrix(out_size), points, "points")

    def unmap_points(self, points, out_size: int) -> np.ndarray:
        """Crop pixels ``(..., 2)`` -> image pixels ``(..., 2)`` (float64)."""
        return _apply(self.inverse_matrix(out_size), points, "points")

    def map_box(self, box, out_size: int) -> np.ndarray:
        """Axis-aligned box ``[x0, y0, x1, y1]`` in image pixels -> the box of its mapped corners."""
        b = np.asarray(box, dtype=np.float64)
        if b.shape != (4,):
            raise ValueError(f"box must be (4,) [x0, y0, x1, y1], got {b.shape}")
        corners = np.array([[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]])
        q = self.map_points(corners, out_size)
        return np.concatenate([q.min(axis=0), q.max(axis=0)])

    def map_intrinsics(self, intrinsics, out_size: int) -> np.ndarray:
        """Intrinsics ``(3, 3)`` of the image -> intrinsics ``(3, 3)`` float64 of the crop.

        Works for both projections (docs/DESIGN.md): the focal length (or the weak-perspective scale)
        is multiplied by ``out_size / side`` and the principal point moves with the crop. With
        ``angle != 0`` the camera must also be rolled (camera-frame points ``p' = Rz(angle) p``,
        :meth:`camera_rotation`); that needs square pixels (``fx == fy``).
        """
        k = np.asarray(intrinsics, dtype=np.float64)
        if k.shape != (3, 3):
            raise ValueError(f"intrinsics must be (3, 3), got {k.shape}")
        if self.angle != 0.0 and not math.isclose(k[0, 0], k[1, 1], rel_tol=1e-6):
            raise ValueError(f"a rotated crop needs square pixels (fx == fy), got fx={k[0, 0]}, fy={k[1, 1]}")
        s = self.scale(out_size)
        cx, cy = self.map_points(k[:2, 2], out_size)
        return np.array([[s * k[0, 0], 0.0, cx], [0.0, s * k[1, 1], cy], [0.0, 0.0, 1.0]])

    def camera_rotation(self) -> np.ndarray:
        """``(3, 3)`` float64 ``Rz(angle)``: camera-frame points of the crop's camera are
        ``Rz(angle) @ p`` (the identity for an axis-aligned crop)."""
        r = np.eye(3)
        r[:2, :2] = _rot(self.angle)
        return r

    def scaled(self, factor: float) -> "Crop":
        """The same crop in an image resized by ``factor`` (pixel coordinates times ``factor``)."""
        return Crop(self.center * factor, self.side * factor, self.angle)

    def jittered(self, shift, log_scale: float) -> "Crop":
        """The crop moved by ``shift (2,)`` (fractions of the side, in the crop's own axes) and
        resized by ``exp(log_scale)``."""
        d = _rot(self.angle) @ (np.asarray(shift, dtype=np.float64) * self.side)
        return Crop(self.center + d, self.side * math.exp(log_scale), self.angle)

    def corners(self) -> np.ndarray:
        """``(4, 2)`` image pixels of the crop's corners (top-left, top-right, bottom-right, bottom-left)."""
        h = self.side / 2.0
        local = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
        return local @ _rot(self.angle).T + self.center  # (4, 2) @ (2, 2)^T

    def to_dict(self) -> dict:
        """JSON-ready ``{"center": [u, v], "side": s, "angle": a}``."""
        return {"center": [float(x) for x in self.center], "side": self.side, "angle": self.angle}

    @classmethod
    def from_dict(cls, d: dict) -> "Crop":
        return cls(np.asarray(d["center"], dtype=np.float64), float(d["side"]), float(d.get("angle", 0.0)))


def _apply(m: np.ndarray, points, name: str) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.shape[-1:] != (2,):
        raise ValueError(f"{name} must be (..., 2), got {p.shape}")
    # (..., 2) @ (2, 2)^T + (2,) -> (..., 2)
    return p @ m[:, :2].T + m[:, 2]


# --------------------------------------------------------------------------- rules
def eye_angle(lm68) -> float:
    """Direction (radians, image coordinates) from the subject's right eye centre to the left one:
    0 for an upright face, positive when the face is rolled clockwise on screen."""
    lm = _check_landmarks(lm68)
    d = lm[_LEFT_EYE].mean(axis=0) - lm[_RIGHT_EYE].mean(axis=0)
    return math.atan2(d[1], d[0])


def _check_landmarks(lm68) -> np.ndarray:
    lm = np.asarray(lm68, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"lm68 must be (68, 2) pixel (u, v), got {lm.shape}")
    if not np.all(np.isfinite(lm)):
        raise ValueError("lm68 must be finite")
    return lm


def face_axes(lm68) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(eye_mid, eye_to_eye, eye_to_mouth)`` ``(2,)`` each, pixels: the midpoint of the two eye
    centres (means of points 36-41 and 42-47), the vector from the subject's right eye centre to
    the left one, and the vector from ``eye_mid`` to the mouth corners' midpoint (48, 54)."""
    lm = _check_landmarks(lm68)
    right, left = lm[_RIGHT_EYE].mean(axis=0), lm[_LEFT_EYE].mean(axis=0)
    eye_mid = (right + left) / 2.0
    mouth = (lm[48] + lm[54]) / 2.0
    return eye_mid, left - right, mouth - eye_mid


def crop_from_landmarks(lm68, rotate: bool = False) -> Crop:
    """The face crop of 68 iBUG landmarks ``(68, 2)`` (pixel (u, v), continuous convention).

    With ``eye_mid``, ``eye_to_eye`` and ``eye_to_mouth`` from :func:`face_axes`:

    * face size ``f = max(|eye_to_mouth|, EYE_MOUTH_RATIO * |eye_to_eye|)`` (pose-stable, see the
      constant);
    * centre ``eye_mid + CENTER_DOWN * eye_to_mouth``;
    * side ``CROP_SCALE * f``.

    Only the eyes and the mouth are used: they are what a detector finds most reliably. The rule
    commutes with similarity transforms of the image (rotating, scaling or moving the landmarks
    moves the crop the same way). ``rotate=False`` (default) returns an axis-aligned crop (angle 0);
    ``rotate=True`` turns it with the eye line (:func:`eye_angle`), so the face comes out upright.
    """
    eye_mid, e2e, e2m = face_axes(lm68)
    size = max(float(np.hypot(*e2m)), EYE_MOUTH_RATIO * float(np.hypot(*e2e)))
    if not size > 0:
        raise ValueError("lm68: the eyes and the mouth coincide; not a face")
    center = eye_mid + CENTER_DOWN * e2m
    angle = math.atan2(e2e[1], e2e[0]) if rotate else 0.0
    return Crop(center, CROP_SCALE * size, angle)


POINTS_SCALE = 1.5
"""Crop side / the larger side of the box of points spanning the whole face (:func:`crop_from_points`):
about the margin :func:`crop_from_landmarks` leaves around the face."""


def crop_from_points(points) -> Crop:
    """Axis-aligned crop around points ``(P, 2)`` that already span the whole face (chin to
    hairline, e.g. a face mesh's projected vertices): centred on their box, side ``POINTS_SCALE``
    times its larger side. (Frames a morphable model that has no landmarks.)"""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] < 2 or not np.all(np.isfinite(p)):
        raise ValueError(f"points must be (P >= 2, 2) finite pixel (u, v), got {p.shape}")
    lo, hi = p.min(axis=0), p.max(axis=0)
    side = POINTS_SCALE * float(max(hi - lo))
    if not side > 0:
        raise ValueError("points must not all coincide")
    return Crop((lo + hi) / 2.0, side, 0.0)


def crop_from_box(box) -> Crop:
    """The face crop of a detector's face box ``[x0, y0, x1, y1]`` (pixels) with no landmarks.

    Centre: the box centre moved down by ``BOX_CENTER_SHIFT`` box heights; side: ``BOX_SCALE`` times
    the box's larger side; axis-aligned. The two constants make this agree on average with
    :func:`crop_from_landmarks` for the project's detector (:mod:`train.detector`), so photos whose
    landmarks fail are framed like the others.
    """
    b = np.asarray(box, dtype=np.float64)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise ValueError(f"box must be 4 finite numbers [x0, y0, x1, y1], got {box!r}")
    w, h = b[2] - b[0], b[3] - b[1]
    if not (w > 0 and h > 0):
        raise ValueError(f"box must have x1 > x0 and y1 > y0, got {b.tolist()}")
    center = np.array([(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0 + BOX_CENTER_SHIFT * h])
    return Crop(center, BOX_SCALE * max(w, h), 0.0)


# --------------------------------------------------------------------------- resampling
_MAX_BILINEAR_SHRINK = 2.0  # beyond this reduction a bilinear lookup skips pixels: box-filter first


def crop_image(image, crop: Crop, out_size: int, resample: str = "bilinear", fill=0) -> np.ndarray:
    """Resample ``image`` into the ``out_size x out_size`` crop (anti-aliased).

    ``image``: ``(H, W, 3)`` or ``(H, W)`` uint8, or ``(H, W)`` float32 (a depth map, a mask as
    float). Pixels outside the image are ``fill``. ``resample``: ``"bilinear"`` (default),
    ``"bicubic"`` (uint8 only) or ``"nearest"``. When the crop shrinks the image by more than 2x,
    the needed part of the image is first reduced by an integer factor with a box filter (an exact
    area average, which keeps the continuous pixel convention), so no pixel is skipped.
    Returns an array of the input's dtype, ``(out_size, out_size[, 3])``.
    """
    from PIL import Image

    modes = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST}
    if resample not in modes:
        raise ValueError(f"resample must be one of {', '.join(modes)}, got {resample!r}")
    out_size = int(_check_size(out_size))
    a = np.asarray(image)
    if a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3:
        mode = "RGB"
    elif a.dtype == np.uint8 and a.ndim == 2:
        mode = "L"
    elif a.dtype == np.float32 and a.ndim == 2:
        mode = "F"
        if resample == "bicubic":
            raise ValueError("resample='bicubic' needs a uint8 image (PIL resamples float images bilinearly)")
    else:
        raise ValueError(f"image must be (H, W, 3) / (H, W) uint8 or (H, W) float32, got {a.shape} {a.dtype}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"image must not be empty, got {a.shape}")

    inv = crop.inverse_matrix(out_size)  # crop pixels -> image pixels
    ratio = crop.side / out_size  # image pixels per crop pixel
    factor = int(math.floor(ratio)) if resample != "nearest" and ratio >= _MAX_BILINEAR_SHRINK else 1
    if factor >= 2:  # then what is left to shrink is less than 2x
        # the part of the image the crop needs (integer box on the reduction grid, one extra cell of
        # margin for the bilinear lookup), reduced by box-averaging factor x factor blocks: image
        # pixel p -> reduced pixel (p - origin) / factor, exactly, in the continuous convention
        lo = np.floor(crop.corners().min(axis=0) / factor).astype(np.int64) - 1
        hi = np.ceil(crop.corners().max(axis=0) / factor).astype(np.int64) + 1
        region = _crop_region(a, lo * factor, hi * factor, fill)
        small = np.asarray(Image.fromarray(region, mode).reduce(factor))
        inv = inv.copy()
        inv[:, 2] -= lo * factor  # shift to the region's origin
        inv /= factor  # then the reduction: p -> p / factor
        a = small
    src = Image.fromarray(np.ascontiguousarray(a), mode)
    coeffs = tuple(inv.reshape(-1))  # PIL maps output (x, y) to input (a x + b y + c, d x + e y + f)
    fillcolor = (tuple([fill] * 3) if mode == "RGB" and np.isscalar(fill) else fill)
    out = src.transform((out_size, out_size), Image.Transform.AFFINE, coeffs, resample=modes[resample],
                        fillcolor=fillcolor)
    return np.asarray(out, dtype=a.dtype)


def _crop_region(a: np.ndarray, lo: np.ndarray, hi: np.ndarray, fill) -> np.ndarray:
    """``a[lo_v:hi_v, lo_u:hi_u]`` with out-of-image parts set to ``fill`` (lo, hi = (u, v) ints)."""
    h, w = a.shape[:2]
    out = np.empty((int(hi[1] - lo[1]), int(hi[0] - lo[0])) + a.shape[2:], a.dtype)
    out[...] = fill
    u0, v0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    u1, v1 = min(int(hi[0]), w), min(int(hi[1]), h)
    if u1 > u0 and v1 > v0:
        out[v0 - lo[1]:v1 - lo[1], u0 - lo[0]:u1 - lo[0]] = a[v0:v1, u0:u1]
    return out
