"""Linear bases of the built-in face: identity, expression and albedo modes.

Every mode is first written as a *named, hand-designed* displacement (or colour) field for one
standard deviation, in millimetres (or albedo units), on the vertices of the mean face. After the
semantic modes come smooth random fields (products of Legendre polynomials in the unrolled
cylinder coordinates, std decaying with the polynomial degree) to fill up the requested count.
The columns are then orthonormalised in this order (QR, i.e. Gram-Schmidt) and each column's std
is the norm of its part orthogonal to the previous ones; so every semantic mode is its designed
field (normalised) up to the overlap with the semantic modes before it, and the random fields
only add what is new. Finally the columns are sorted by decreasing std, as in a PCA model.

Amplitudes are chosen so that samples with coefficients up to +-3 stay plausible: no triangle of
the inner face folds (see tests/test_builtin.py). Where several modes compress the same region
(the eyelids: eye close, squint and their left/right variants) they share a budget, so even
all of them at 3 std together do not close the fissure past its height.

Expression modes are localised by smooth masks (mouth, cheeks, eyes, brows, jaw); the jaw
opening splits at the mouth slit. Asymmetric variants multiply a symmetric mode by
``tanh(x / 12 mm)`` (left minus right).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.polynomial import legendre
from scipy.linalg import qr

from . import _face_geometry as fg
from . import _face_head as fh
from ._face_geometry import EYE_HALF_WIDTH, EYE_U, EYE_Y, MOUTH_HALF_WIDTH, MOUTH_Y, gauss, gauss2, sigmoid, smoothstep

# random streams for numpy.random.default_rng([seed, stream, index])
STREAM_ID_FIELDS = 101
STREAM_EXP_FIELDS = 102
STREAM_ALB_FIELDS = 103


@dataclasses.dataclass(frozen=True)
class FaceFrame:
    """What the mode functions need about the mean mesh (all ``(N,)`` or ``(N, 3)``)."""

    u: np.ndarray  # unrolled horizontal coordinate (mm), ~x on the face front
    h: np.ndarray  # parameter height (mm)
    theta: np.ndarray
    verts: np.ndarray  # (N, 3) mean vertices (mm)
    radial: np.ndarray  # (N, 3) unit radial directions
    mouth_offset: np.ndarray  # (N,) signed height (mm) of the vertex's grid row above the mouth line
    # the head around the face (v3); None = a face-only frame (all ones / zeros)
    fade_id: np.ndarray | None = None  # (N,) 1 on the face, 0 far out on the head: local identity modes
    fade_exp: np.ndarray | None = None  # (N,) same for the expression modes (shorter fall-off)
    head_near: np.ndarray | None = None  # (N,) 0 on the face, 1 from a few mm outside it: ear modes
    head_far: np.ndarray | None = None  # (N,) 0 on the face, 1 far out on the head: skull / neck modes
    ear: np.ndarray | None = None  # (N,) ear mask
    ear_height: np.ndarray | None = None  # (N,) ear offset (mm) above the head surface
    ear_a: np.ndarray | None = None  # (N,) ear coordinate (mm) backward from the ear's front edge
    ear_b: np.ndarray | None = None  # (N,) ear coordinate (mm) up from the ear's centre
    hair: np.ndarray | None = None  # (N,) hair mask
    normals: np.ndarray | None = None  # (N, 3) unit vertex normals of the mean mesh
    bag_depth: np.ndarray | None = None  # (N,) depth (mm) of mouth-interior vertices behind the lips
    bag_part: np.ndarray | None = None  # (N,) 0 not mouth interior, 1 inner lip, 2 teeth, 3 palate/tongue, 4 back

    @property
    def soft_tissue(self) -> np.ndarray:
        """(N,) how much a vertex follows the local (soft-tissue) modes of its face point: 1 off the
        mouth interior; inside it 1 at the lips, falling to 0 by the teeth (~5 mm deep), which move
        only with the jaw and the global modes."""
        return np.ones_like(self.u)

    def __post_init__(self) -> None:
        n = self.u.shape[0]
        for name, value in (("fade_id", 1.0), ("fade_exp", 1.0), ("head_near", 0.0), ("head_far", 0.0),
                            ("ear", 0.0), ("ear_height", 0.0), ("ear_a", 0.0), ("ear_b", 0.0), ("hair", 0.0),
                            ("bag_depth", 0.0)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(n, value))
        if self.bag_part is None:
            object.__setattr__(self, "bag_part", np.zeros(n, np.int8))
        if self.normals is None:
            object.__setattr__(self, "normals", self.radial)

    @property
    def x(self) -> np.ndarray:
        return self.verts[:, 0]

    @property
    def y(self) -> np.ndarray:
        return self.verts[:, 1]

    @property
    def z(self) -> np.ndarray:
        return self.verts[:, 2]

    def rad(self, f: np.ndarray) -> np.ndarray:
        """Radial displacement field ``(N, 3)`` of magnitude ``f``."""
        return f[:, None] * self.radial

    def vec(self, dx=0.0, dy=0.0, dz=0.0) -> np.ndarray:
        n = self.u.shape[0]
        return np.stack([np.broadcast_to(dx, (n,)), np.broadcast_to(dy, (n,)), np.broadcast_to(dz, (n,))], 1).astype(float)


def antisym(f: FaceFrame) -> np.ndarray:
    """Smooth left(+1)/right(-1) weight, 0 on the midline."""
    return np.tanh(f.u / 12.0)


# ---------------------------------------------------------------------------------------------
# identity: hand-designed modes, one std each (mm)
# ---------------------------------------------------------------------------------------------
def id_face_width(f):
    return f.vec(dx=0.04 * f.x)


def id_face_height(f):
    # lower face stretches down from the nasion, forehead a little up; the neck below -170 mm
    # follows the chin rigidly
    y = np.maximum(f.y, -170.0)
    return f.vec(dy=0.045 * y * (0.7 - 0.3 * np.tanh(y / 20.0)))


def id_face_depth(f):
    return f.vec(dz=0.035 * f.z * smoothstep((f.z - 20.0) / 60.0))


def id_jaw_width(f):
    m = np.exp(-0.5 * ((f.h + 98.0) / 18.0) ** 2) * smoothstep(np.abs(f.u) / 70.0)
    return f.vec(dx=4.0 * np.tanh(f.u / 30.0) * m)


def id_nose_length(f):
    w = np.where(f.h > -52.0, smoothstep(-f.h / 44.0), np.exp(-0.5 * ((f.h + 52.0) / 15.0) ** 2))
    return f.vec(dy=-3.5 * w * np.exp(-0.5 * (f.u / 20.0) ** 2))


def id_nose_protrusion(f):
    n = fg._nose(f.u, f.h) + fg._nose_tip(f.u, f.h) + 0.5 * fg._alae(f.u, f.h)
    return f.rad(2.2 * n / 20.0)


def id_nose_width(f):
    m = gauss(f.u, f.h, 0, -46, 18, 9)
    return f.vec(dx=0.13 * f.u * m)


def id_nose_bridge_height(f):
    m = np.exp(-0.5 * ((f.h + 15.0) / 9.0) ** 2) * np.exp(-0.5 * (f.u / 6.0) ** 2)
    return f.rad(1.6 * m)


def id_nose_bridge_width(f):
    m = np.exp(-0.5 * ((f.h + 15.0) / 10.0) ** 2) * np.exp(-0.5 * (f.u / 12.0) ** 2)
    return f.vec(dx=0.8 * np.tanh(f.u / 8.0) * m)


def id_nose_tip(f):
    return f.rad(1.5 * gauss(f.u, f.h, 0, -41, 7, 5))


def id_nose_upturn(f):
    m = gauss(f.u, f.h, 0, -44, 12, 8)
    return f.vec(dy=1.4 * m, dz=-0.6 * m)


def id_chin_protrusion(f):
    return f.rad(3.0 * gauss(f.u, f.h, 0, -108, 17, 11))


def id_chin_height(f):
    m = smoothstep(-(f.h + 85.0) / 30.0) * np.exp(-0.5 * (f.u / 35.0) ** 2)
    return f.vec(dy=-3.5 * m)


def id_chin_width(f):
    m = gauss(f.u, f.h, 0, -110, 25, 10)
    return f.vec(dx=2.5 * np.tanh(f.u / 10.0) * m)


def id_cheek_fullness(f):
    return f.rad(2.6 * gauss2(f.u, f.h, 42, -52, 15, 15))


def id_cheekbones(f):
    return f.rad(2.0 * gauss2(f.u, f.h, 50, -22, 13, 10))


def id_brow_ridge(f):
    return f.rad(1.8 * fg._brow(f.u, f.h) / 4.0)


def id_eye_spacing(f):
    m = gauss2(f.u, f.h, EYE_U, EYE_Y, 14, 12)
    return f.vec(dx=2.0 * np.tanh(f.u / 16.0) * m)


def id_eye_depth(f):
    return f.rad(-1.8 * gauss2(f.u, f.h, EYE_U, EYE_Y, 15, 12))


def id_eye_size(f):
    out = f.vec()
    for sgn in (-1.0, 1.0):
        m = gauss(f.u, f.h, sgn * EYE_U, EYE_Y, 14, 10)
        out[:, 0] += 0.05 * (f.u - sgn * EYE_U) * m
        out[:, 1] += 0.05 * (f.h - EYE_Y) * m
    return out


def id_eye_height(f):
    return f.vec(dy=2.0 * gauss2(f.u, f.h, EYE_U, EYE_Y, 15, 12))


def id_lip_thickness(f):
    lips = fg._upper_lip(f.u, f.h) + fg._lower_lip(f.u, f.h)
    return f.rad(1.3 * lips / 4.5)


def id_mouth_width(f):
    m = gauss(f.u, f.h, 0, MOUTH_Y, 32, 11)
    return f.vec(dx=0.09 * f.u * m)


def id_mouth_height(f):
    m = gauss(f.u, f.h, 0, MOUTH_Y - 3.0, 30, 10)
    return f.vec(dy=2.0 * m)


def id_lip_protrusion(f):
    return f.rad(2.0 * gauss(f.u, f.h, 0, MOUTH_Y, 24, 9))


def id_forehead_slope(f):
    s = np.clip((f.h - 15.0) / 55.0, 0.0, 1.2)  # bounded above the hairline (the face ends at ~1.1)
    return f.rad(-4.0 * s * s)


def id_forehead_height(f):
    return f.vec(dy=4.0 * smoothstep((f.h - 15.0) / 55.0))


def id_temples(f):
    return f.rad(-1.8 * gauss2(f.u, f.h, 64, 22, 13, 16))


def id_jaw_angle(f):
    return f.rad(2.5 * gauss2(f.u, f.h, 86, -95, 15, 13))


def id_nasolabial(f):
    return f.rad(1.0 * fg._nasolabial(f.u, f.h) / 1.4)


def id_under_eye(f):
    return f.rad(1.0 * gauss2(f.u, f.h, EYE_U - 2, EYE_Y - 12, 11, 4))


def id_face_asymmetry(f):
    # one side of the face slightly larger than the other
    return f.vec(dx=1.5 * smoothstep(np.abs(f.u) / 60.0) * np.sign(f.u) * (0.5 + 0.5 * np.tanh(f.u / 20.0)))


def id_head_size(f):
    return f.vec(dx=0.025 * f.x, dy=0.025 * (f.y + 30.0), dz=0.025 * f.z)


# the head around the face: zero on the face, smooth everywhere
def id_skull_length(f):
    # the back of the head (not the neck) longer or shorter
    back = smoothstep((10.0 - f.z) / 70.0) * smoothstep((f.y + 120.0) / 60.0) * f.head_far
    return f.vec(dz=-3.5 * back)


def id_crown_height(f):
    return f.vec(dy=4.0 * smoothstep((f.y - 20.0) / 80.0) * f.head_far)


def id_neck_width(f):
    return f.rad(3.5 * smoothstep(-(f.y + 110.0) / 40.0) * f.head_far)


def _ear_weight(f):
    """1 on and around the ears (fading over ~10 mm outside them, and toward their front edge, which
    is only ~4 mm behind the face), 0 on the face."""
    around = smoothstep((fh.ear_outline(f.ear_a, f.ear_b) + 10.0) / 10.0) * smoothstep((f.ear_a - 1.0) / 8.0)
    return around * f.head_near * (np.abs(f.theta) > 0.5 * np.pi)


def id_ear_size(f):
    # scale the ear about its centre along the head surface (a backward, b up)
    w = 0.04 * _ear_weight(f)
    back = np.sign(f.theta)[:, None] * np.stack([np.cos(f.theta), np.zeros_like(f.theta), -np.sin(f.theta)], 1)
    return (w * (f.ear_a - 15.0))[:, None] * back + f.vec(dy=w * (f.ear_b - 1.0)) + f.rad(w * f.ear_height)


def id_ear_protrusion(f):
    return f.rad(0.2 * f.ear_height * smoothstep((f.ear_a - 1.0) / 8.0))


def id_hair_volume(f):
    # thicker or thinner hair on the crown and the back of the head (not next to the ears)
    away = 1.0 - smoothstep((fh.ear_outline(f.ear_a, f.ear_b) + 20.0) / 15.0)
    return 1.8 * (f.hair * f.head_far * away)[:, None] * f.normals


ID_MODES = {
    "face_width": id_face_width,
    "face_height": id_face_height,
    "head_size": id_head_size,
    "face_depth": id_face_depth,
    "jaw_width": id_jaw_width,
    "nose_length": id_nose_length,
    "nose_protrusion": id_nose_protrusion,
    "nose_width": id_nose_width,
    "nose_bridge_height": id_nose_bridge_height,
    "nose_bridge_width": id_nose_bridge_width,
    "nose_tip": id_nose_tip,
    "nose_upturn": id_nose_upturn,
    "chin_protrusion": id_chin_protrusion,
    "chin_height": id_chin_height,
    "chin_width": id_chin_width,
    "cheek_fullness": id_cheek_fullness,
    "cheekbones": id_cheekbones,
    "brow_ridge": id_brow_ridge,
    "eye_spacing": id_eye_spacing,
    "eye_depth": id_eye_depth,
    "eye_size": id_eye_size,
    "eye_height": id_eye_height,
    "lip_thickness": id_lip_thickness,
    "mouth_width": id_mouth_width,
    "mouth_height": id_mouth_height,
    "lip_protrusion": id_lip_protrusion,
    "forehead_slope": id_forehead_slope,
    "forehead_height": id_forehead_height,
    "temples": id_temples,
    "jaw_angle": id_jaw_angle,
    "nasolabial_depth": id_nasolabial,
    "under_eye": id_under_eye,
    "face_asymmetry": id_face_asymmetry,
    "skull_length": id_skull_length,
    "crown_height": id_crown_height,
    "neck_width": id_neck_width,
    "ear_size": id_ear_size,
    "ear_protrusion": id_ear_protrusion,
    "hair_volume": id_hair_volume,
}

GLOBAL_ID_MODES = ("face_width", "face_height", "head_size", "face_depth")
"""Identity modes defined on the whole head (linear in x, y, z); the other face modes fade out on
the head (``FaceFrame.fade_id``); the head modes are zero on the face by construction."""

HEAD_ID_MODES = ("skull_length", "crown_height", "neck_width", "ear_size", "ear_protrusion", "hair_volume")


def identity_fields(f: FaceFrame) -> np.ndarray:
    """``(K, N, 3)`` the semantic identity modes (order of :data:`ID_MODES`): face modes faded on the
    head and kept to the lips inside the mouth (:attr:`FaceFrame.soft_tissue`)."""
    out = []
    for name, fn in ID_MODES.items():
        field = fn(f)
        if name not in GLOBAL_ID_MODES and name not in HEAD_ID_MODES:
            field = field * (f.fade_id * f.soft_tissue)[:, None]
        out.append(field)
    return np.stack(out)


JAW_MODES = ("jaw_open", "jaw_left_right", "jaw_forward")
"""Expression modes that move the mandible: they carry the lower mouth interior (teeth, tongue)."""


def expression_fields(f: FaceFrame) -> np.ndarray:
    """``(K, N, 3)`` the semantic expression modes (order of :data:`EXP_MODES`), faded on the head; inside
    the mouth only the jaw modes move the teeth and tongue (the others move the lips)."""
    out = []
    for name, fn in EXP_MODES.items():
        w = f.fade_exp if name in JAW_MODES else f.fade_exp * f.soft_tissue
        out.append(fn(f) * w[:, None])
    return np.stack(out)


# ---------------------------------------------------------------------------------------------
# expression: hand-designed modes (one std, mm)
# ---------------------------------------------------------------------------------------------
def jaw_mask(f: FaceFrame) -> np.ndarray:
    """1 on the mandible (below the mouth line), 0 above.

    In the middle of the mouth it is an exact step at the slit (decided by the vertex's grid row,
    so all of the lower lip moves as one and nothing is compressed); toward the corners it blends
    (in u, i.e. as a shear) into a smooth vertical transition 8 mm wide, so the triangles joining
    the lips beyond the corners stretch or compress gently and never fold.
    """
    side = (f.mouth_offset < 0).astype(float)
    smooth = sigmoid(-f.mouth_offset / 8.0)
    c = smoothstep((np.abs(f.u) - 6.0) / (MOUTH_HALF_WIDTH - 7.0))
    return side * (1.0 - c) + smooth * c


def _jaw_rotation(f: FaceFrame, angle: float) -> np.ndarray:
    """Displacement of rotating the mandible by ``angle`` rad about the condyle axis (x)."""
    pivot_y, pivot_z = -22.0, 5.0
    dy, dz = f.y - pivot_y, f.z - pivot_z
    m = jaw_mask(f) * smoothstep((fg.THETA_SIDE_DEG - np.rad2deg(np.abs(f.theta))) / 25.0)
    # rotation about +x by -angle opens the mouth: (dy, dz) -> (-dz, dy) * angle, chin down/back
    return f.vec(dy=-angle * dz * m, dz=angle * dy * m * 0.6)


def ex_jaw_open(f):
    return _jaw_rotation(f, 0.07)


def _corner(f, su=9.0, sh=8.0):
    return gauss2(f.u, f.h, MOUTH_HALF_WIDTH, MOUTH_Y, su, sh)


def ex_smile(f):
    c = _corner(f, 12, 11)
    cheek = gauss2(f.u, f.h, 40, -40, 14, 12)
    out = f.vec(dx=1.8 * np.tanh(f.u / 12.0) * c, dy=2.3 * c + 1.2 * cheek, dz=-1.2 * c)
    return out + f.rad(0.9 * cheek + 0.4 * gauss2(f.u, f.h, EYE_U, EYE_Y - 9, 10, 3))


def ex_frown(f):
    c = _corner(f, 9, 8)
    chin = gauss(f.u, f.h, 0, -105, 14, 9)
    return f.vec(dy=-1.6 * c, dz=-0.3 * c) + f.rad(0.6 * chin)


def _brows(f):
    m = gauss2(f.u, f.h, 28, 14, 22, 9)
    return m + 0.5 * smoothstep((f.h - 10.0) / 50.0) * np.exp(-0.5 * (f.u / 60.0) ** 2) * (1 - smoothstep((f.h - 55.0) / 20.0))


def _above_lids(f):
    """0 at and below the upper eyelids, rising to 1 over 10 mm above them (brow modes fade
    out there, so the upper lid skin is stretched/compressed gently and never folds)."""
    return smoothstep((f.h - (EYE_Y + 5.0)) / 15.0)


def ex_brow_raise(f):
    return f.vec(dy=2.0 * _brows(f) * _above_lids(f))


def ex_brow_lower(f):
    m = gauss2(f.u, f.h, 22, 12, 16, 8)
    glab = gauss(f.u, f.h, 0, 8, 8, 6)
    fade = _above_lids(f)
    return f.vec(dx=-1.2 * np.tanh(f.u / 10.0) * m * fade, dy=-1.6 * m * fade) + f.rad(0.6 * glab + 0.3 * m)


def ex_brow_inner_raise(f):
    m = gauss2(f.u, f.h, 16, 14, 9, 8) * _above_lids(f)
    return f.vec(dy=2.2 * m)


def _lips(f, su=24.0):
    return gauss(f.u, f.h, 0, MOUTH_Y, su, 9)


def ex_pucker(f):
    m = _lips(f)
    return f.vec(dx=-0.11 * f.u * m) + f.rad(2.4 * m)


def ex_lip_press(f):
    m = _lips(f, 22)
    side = jaw_mask(f)
    # upper lip down, lower lip up (toward the slit), both pressed back
    return f.vec(dy=1.0 * m * (1 - 2 * side)) + f.rad(-1.0 * m)


def ex_mouth_stretch(f):
    c = _corner(f, 11, 9)
    return f.vec(dx=2.2 * np.tanh(f.u / 10.0) * c, dy=-0.5 * c, dz=-0.6 * c)


def ex_cheek_puff(f):
    return f.rad(3.0 * gauss2(f.u, f.h, 42, -62, 14, 14) + 0.8 * gauss(f.u, f.h, 0, -64, 16, 5))


def ex_cheek_suck(f):
    return f.rad(-2.2 * gauss2(f.u, f.h, 48, -62, 11, 13))


def _fissure_shift(f: FaceFrame, upper: bool) -> np.ndarray:
    """Vertical displacement that moves one lid by a fraction of the local fissure height and
    compresses the fissure between the lids linearly (no fold-over for fractions < 1)."""
    dy = np.zeros_like(f.u)
    for sgn in (-1.0, 1.0):
        lu = sgn * f.u - EYE_U
        up, lo = fg.lid_curves(lu)
        height = up - lo
        w = np.exp(-0.5 * (lu / (EYE_HALF_WIDTH + 2.0)) ** 4)
        s = np.clip((f.h - lo) / np.maximum(height, 1e-6), 0.0, 1.0)  # 0 at the lower lid, 1 at the upper
        if upper:
            above = np.exp(-0.5 * (np.clip(f.h - up, 0, None) / 7.0) ** 2)
            prof = np.where(f.h >= up, above, s)
        else:
            below = np.exp(-0.5 * (np.clip(lo - f.h, 0, None) / 4.0) ** 2)
            prof = np.where(f.h <= lo, below, 1 - s)
        dy += (-1.0 if upper else 1.0) * height * prof * w
    return dy


def ex_eye_close(f):
    return f.vec(dy=0.17 * _fissure_shift(f, upper=True))


def ex_squint(f):
    cheek = gauss2(f.u, f.h, 40, -20, 14, 9)
    return f.vec(dy=0.05 * _fissure_shift(f, upper=False) + 1.0 * cheek) + f.rad(0.5 * cheek)


def ex_nose_wrinkle(f):
    sides = gauss2(f.u, f.h, 12, -38, 8, 10)
    lip = gauss(f.u, f.h, 0, -60, 14, 6)
    return f.vec(dy=1.3 * sides + 0.8 * lip) + f.rad(-0.4 * gauss(f.u, f.h, 0, -8, 8, 5))


def ex_jaw_lateral(f):
    return f.vec(dx=2.2 * jaw_mask(f) * smoothstep((fg.THETA_SIDE_DEG - np.rad2deg(np.abs(f.theta))) / 30.0))


def ex_jaw_forward(f):
    return f.vec(dz=1.8 * jaw_mask(f) * smoothstep((fg.THETA_SIDE_DEG - np.rad2deg(np.abs(f.theta))) / 30.0))


def ex_upper_lip_raise(f):
    m = gauss(f.u, f.h, 0, MOUTH_Y + 4, 18, 7) * (1 - jaw_mask(f))
    return f.vec(dy=1.6 * m) + f.rad(0.6 * m)


def ex_lower_lip_depress(f):
    m = gauss(f.u, f.h, 0, MOUTH_Y - 5, 18, 11) * jaw_mask(f)
    return f.vec(dy=-1.4 * m) + f.rad(0.5 * m)


def ex_mouth_shift(f):
    m = gauss(f.u, f.h, 0, MOUTH_Y, 30, 11)
    return f.vec(dx=2.0 * m)


def ex_lip_funnel(f):
    m = _lips(f, 20)
    side = jaw_mask(f)
    return f.rad(1.8 * m) + f.vec(dy=0.6 * m * (1 - 2 * side), dx=-0.1 * f.u * m)


def ex_dimpler(f):
    c = _corner(f, 7, 7)
    return f.vec(dx=0.8 * np.tanh(f.u / 10.0) * c) + f.rad(-1.2 * c)


def ex_chin_raise(f):
    m = gauss(f.u, f.h, 0, -98, 16, 14)
    lower = gauss(f.u, f.h, 0, MOUTH_Y - 5, 18, 6) * jaw_mask(f)
    return f.vec(dy=1.4 * m + 0.8 * lower) + f.rad(0.8 * m + 0.6 * lower)


def ex_nostril_flare(f):
    m = gauss2(f.u, f.h, 14, -47, 7, 6)
    return f.vec(dx=1.0 * np.tanh(f.u / 4.0) * m) + f.rad(0.4 * m)


def _asym(fn, scale=0.8):
    def mode(f):
        return scale * antisym(f)[:, None] * fn(f)

    return mode


EXP_MODES = {
    "jaw_open": ex_jaw_open,
    "smile": ex_smile,
    "frown": ex_frown,
    "brow_raise": ex_brow_raise,
    "brow_lower": ex_brow_lower,
    "pucker": ex_pucker,
    "lip_press": ex_lip_press,
    "mouth_stretch": ex_mouth_stretch,
    "cheek_puff": ex_cheek_puff,
    "eye_close": ex_eye_close,
    "squint": ex_squint,
    "nose_wrinkle": ex_nose_wrinkle,
    "jaw_left_right": ex_jaw_lateral,
    "smile_left_right": _asym(ex_smile, 0.6),
    "brow_raise_left_right": _asym(ex_brow_raise),
    "eye_close_left_right": _asym(ex_eye_close, 0.5),
    "jaw_forward": ex_jaw_forward,
    "upper_lip_raise": ex_upper_lip_raise,
    "lower_lip_depress": ex_lower_lip_depress,
    "mouth_left_right": ex_mouth_shift,
    "lip_funnel": ex_lip_funnel,
    "cheek_suck": ex_cheek_suck,
    "dimpler": ex_dimpler,
    "chin_raise": ex_chin_raise,
    "brow_inner_raise": ex_brow_inner_raise,
    "frown_left_right": _asym(ex_frown),
    "brow_lower_left_right": _asym(ex_brow_lower),
    "mouth_stretch_left_right": _asym(ex_mouth_stretch),
    "squint_left_right": _asym(ex_squint, 0.5),
    "cheek_puff_left_right": _asym(ex_cheek_puff),
    "nose_wrinkle_left_right": _asym(ex_nose_wrinkle),
    "nostril_flare": ex_nostril_flare,
    "upper_lip_raise_left_right": _asym(ex_upper_lip_raise),
}


def mobility_mask(f: FaceFrame) -> np.ndarray:
    """Where random expression fields may move the face: mouth, cheeks, jaw, eyes and brows."""
    mouth = gauss(f.u, f.h, 0, MOUTH_Y - 8, 38, 26)
    eyes = gauss2(f.u, f.h, EYE_U, EYE_Y + 4, 18, 14)
    return np.clip(mouth + 0.3 * eyes, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# smooth random fields
# ---------------------------------------------------------------------------------------------
def _legendre_table(x: np.ndarray, degree: int) -> np.ndarray:
    """(degree + 1, N) Legendre polynomials P_0..P_degree at x in [-1, 1] (orthonormal-scaled)."""
    out = np.empty((degree + 1, x.shape[0]))
    for d in range(degree + 1):
        c = np.zeros(d + 1)
        c[d] = 1.0
        out[d] = legendre.legval(x, c) * np.sqrt(2 * d + 1)
    return out


def random_fields(f: FaceFrame, count: int, seed: int, stream: int, mask=None, tangential: float = 0.25,
                  norm=None):
    """``count`` smooth random displacement fields ``(count, N, 3)`` and their degrees.

    Field k uses the Legendre products ``P_m(u~) P_n(h~)`` of total degree ``d_k`` (1, 2, 2, 3, 3,
    3, ...: as many fields per degree as the degree allows), with Gaussian coefficients from
    ``default_rng([seed, stream, k])``; mostly radial with a smaller tangential part. Each field
    is normalised to unit RMS per vertex over the vertices ``norm`` (bool ``(N,)``, default all;
    the builder passes the face's) and multiplied by ``mask``; its std is assigned by the caller
    from the degree.
    """
    if count <= 0:
        return np.zeros((0, f.u.shape[0], 3)), np.zeros(0, int)
    degrees = []
    d = 1
    while len(degrees) < count:
        degrees += [d] * min(d + 1, count - len(degrees))
        d += 1
    dmax = degrees[-1]
    ut = np.clip(f.theta / fg.THETA_MAX, -1, 1)
    ht = np.clip((f.h - 0.5 * (fg.Y_MIN + fg.Y_MAX)) / (0.5 * (fg.Y_MAX - fg.Y_MIN)), -1, 1)
    pu, ph = _legendre_table(ut, dmax), _legendre_table(ht, dmax)
    tang_x = np.stack([np.cos(f.theta), np.zeros_like(f.theta), -np.sin(f.theta)], 1)  # (N, 3)
    tang_y = np.tile([0.0, 1.0, 0.0], (f.u.shape[0], 1))
    out = np.empty((count, f.u.shape[0], 3))
    for k, d in enumerate(degrees):
        rng = np.random.default_rng([seed, stream, k])
        c = rng.standard_normal((3, d + 1))  # radial, tangential x, tangential y; one per (m, d-m)
        comps = []
        for ci in range(3):
            comps.append(sum(c[ci, m] * pu[m] * ph[d - m] for m in range(d + 1)))
        field = comps[0][:, None] * f.radial + tangential * (comps[1][:, None] * tang_x + comps[2][:, None] * tang_y)
        if mask is not None:
            field = field * mask[:, None]
        rms = np.sqrt(np.mean(np.sum((field if norm is None else field[norm]) ** 2, 1)))
        out[k] = field / max(rms, 1e-12)
    return out, np.asarray(degrees)


# ---------------------------------------------------------------------------------------------
# orthonormalisation
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Basis:
    basis: np.ndarray  # (3N, K) float64, orthonormal columns
    std: np.ndarray  # (K,) decreasing
    names: tuple[str, ...]


def orthonormal_basis(fields: np.ndarray, names: list[str]) -> Basis:
    """Orthonormal basis of the 1-std fields ``(K, N, C)`` in their given (Gram-Schmidt) order.

    QR keeps the span of the first j fields for every j, so each semantic mode (they come first)
    is its own designed field, normalised; later fields only add what is new. ``std = |R_kk|``
    (the norm of the new part). Columns are then sorted by decreasing std, as in a PCA model,
    and signed so that a positive coefficient gives the named effect.
    """
    k = fields.shape[0]
    a = fields.reshape(k, -1).T  # (K, N, C) -> (K, C N) -> (C N, K), rows x0, y0, z0, x1, ...
    q, r = qr(a, mode="economic", check_finite=False)  # (3N, K), (K, K)
    diag = np.diag(r)
    std = np.abs(diag)
    sign = np.where(diag < 0, -1.0, 1.0)
    q = q * sign  # (3N, K) * (K,): column k points along the new part of field k
    order = np.argsort(-std, kind="stable")
    return Basis(np.ascontiguousarray(q[:, order]), std[order], tuple(names[i] for i in order))
