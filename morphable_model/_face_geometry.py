"""Geometry of the built-in face: a cylindrical range map r(theta, h), like Blanz & Vetter.

The face is a radius ``r(theta, h)`` about the vertical axis (y), sampled on a regular grid of
``(theta, h)`` and trimmed by a face outline. A grid point becomes the vertex
``(r sin(theta), h, r cos(theta))`` in mm (x right, y up, z toward a frontal viewer).

``r`` is a smooth head (a superellipse cross-section whose half-width and depth vary with height)
plus smooth anisotropic features placed in millimetres with adult anthropometric proportions:
brow ridge, eye sockets, eyeballs with lids, nose (bridge, tip, alae, nostrils), lips, chin,
cheeks. Features are positioned in the "unrolled" coordinates ``(u, h)`` with ``u = R0 * theta``
(arc length on a cylinder of radius ``R0``), which is close to x on the front of the face.

The origin is on the vertical axis at the height of the nasion (y = 0 at the nasion); the face
front is at z ~ 95 mm. Heights (mm): trichion ~ +70, brows ~ +12, pupils ~ -4, nose tip ~ -40,
subnasale ~ -52, mouth line (stomion) -72, menton ~ -120 (nasion-menton 120 mm).

Everything here is vectorised numpy; nothing is random.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.interpolate import PchipInterpolator

R0 = 95.0
"""Radius (mm) of the cylinder on which ``u = R0 * theta`` measures arc length."""

MOUTH_Y = -72.0
"""Height (mm) of the mouth line (stomion); the slit of removed triangles lies on it."""

MOUTH_HALF_WIDTH = 27.0
"""Half the mouth width (cheilion to midline) in mm of u; the slit spans ``|u| < MOUTH_HALF_WIDTH``
(the corners recede, so the mouth is ~50 mm wide in x)."""

EYE_U = 35.5
"""Distance (mm of u) of each pupil from the midline; the eyes lie at r ~ 85 mm, so in x the
interpupillary distance is ~ 62 mm."""

EYE_Y = -4.0
"""Height (mm) of the pupils."""

EYE_HALF_WIDTH = 16.0
"""Half the palpebral fissure width (mm of u): in x, intercanthal ~ 35 mm, biocular ~ 91 mm."""

THETA_MAX = np.deg2rad(98.0)
"""Largest |theta| of the grid (the outline trims inside it)."""

Y_MIN, Y_MAX = -132.0, 76.0
"""Vertical extent of the grid (mm)."""


# ---------------------------------------------------------------------------------------------
# small smooth building blocks
# ---------------------------------------------------------------------------------------------
def gauss(u: np.ndarray, h: np.ndarray, u0: float, h0: float, su: float, sh: float) -> np.ndarray:
    """Anisotropic Gaussian bump exp(-((u-u0)/su)^2/2 - ((h-h0)/sh)^2/2)."""
    return np.exp(-0.5 * ((u - u0) / su) ** 2 - 0.5 * ((h - h0) / sh) ** 2)


def gauss2(u: np.ndarray, h: np.ndarray, u0: float, h0: float, su: float, sh: float) -> np.ndarray:
    """A symmetric pair of Gaussians at ``+u0`` and ``-u0`` (smooth across the midline)."""
    return gauss(u, h, u0, h0, su, sh) + gauss(u, h, -u0, h0, su, sh)


def smoothstep(x: np.ndarray) -> np.ndarray:
    """C1 step: 0 for x <= 0, 1 for x >= 1, 3x^2 - 2x^3 between."""
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth maximum (>= max(a, b), exceeds it by at most k/2)."""
    return 0.5 * (a + b + np.sqrt((a - b) ** 2 + k * k))


def segment_distance(u, h, p0, p1):
    """Distance of points (u, h) to the segment p0-p1 and the parameter t in [0, 1] along it."""
    du, dh = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((u - p0[0]) * du + (h - p0[1]) * dh) / (du * du + dh * dh), 0.0, 1.0)
    return np.hypot(u - p0[0] - t * du, h - p0[1] - t * dh), t


def _pchip(xs, ys):
    """Monotone cubic (C1) interpolation through the control points (any order of xs)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    order = np.argsort(xs)
    return PchipInterpolator(xs[order], ys[order], extrapolate=True)


# head cross-section: half-width a(h) (x at theta = 90 deg) and front depth b(h) (z at theta = 0)
_HALF_WIDTH = _pchip(
    [-140, -128, -118, -105, -90, -70, -45, -20, 0, 25, 50, 80],
    [16, 26, 36, 47, 54, 61, 67, 70, 69.5, 68, 65, 58],
)
_FRONT_DEPTH = _pchip(
    [-140, -128, -120, -110, -95, -80, -60, -40, -20, 0, 20, 40, 60, 80],
    [55, 68, 78, 85, 89, 91, 92, 92, 92, 93, 95, 93.5, 89, 80],
)
_EXPONENT = _pchip([-130, -95, -60, -20, 20, 80], [2.0, 2.05, 2.15, 2.2, 2.2, 2.1])

# outline of the face region in (|theta| deg, h): top (hairline / temples) and bottom (jaw line)
_TOP = _pchip([0, 15, 30, 45, 60, 75, 88, 100], [72, 70.5, 66, 58, 47, 34, 22, 10])
_BOTTOM = _pchip([0, 20, 40, 60, 72, 82, 90, 100], [-127, -125, -119, -110, -101, -84, -62, -40])
THETA_SIDE_DEG = 96.0


def inside_outline(theta: np.ndarray, h: np.ndarray) -> np.ndarray:
    """True for grid points inside the trimmed face outline."""
    td = np.rad2deg(np.abs(theta))
    return (td <= THETA_SIDE_DEG) & (h <= _TOP(td)) & (h >= _BOTTOM(td))


def outline_distance(theta: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Approximate distance (mm, >0 inside) from the outline, used for margins."""
    td = np.rad2deg(np.abs(theta))
    d_side = (np.deg2rad(THETA_SIDE_DEG) - np.abs(theta)) * 75.0
    return np.minimum(np.minimum(_TOP(td) - h, h - _BOTTOM(td)), d_side)


def head_radius(theta: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Radius of the smooth head (superellipse section) without facial features."""
    a, b, p = _HALF_WIDTH(h), _FRONT_DEPTH(h), _EXPONENT(h)
    s, c = np.abs(np.sin(theta)), np.abs(np.cos(theta))
    return ((s / a) ** p + (c / b) ** p) ** (-1.0 / p)


# ---------------------------------------------------------------------------------------------
# facial features (radial offsets in mm); each returns an array like u
# ---------------------------------------------------------------------------------------------
_NOSE_PROFILE = _pchip(
    [12, 4, 0, -8, -16, -24, -32, -37, -40.5, -44, -47.5, -50.5, -53, -56, -70],
    [0, 0.3, 1.0, 4.2, 8.0, 11.8, 15.8, 18.6, 19.8, 19.2, 15.5, 8.5, 2.5, 0.0, 0.0],
)
_NOSE_HALFWIDTH = _pchip([10, 0, -12, -25, -35, -42, -50, -56], [7.0, 6.0, 4.8, 5.4, 7.0, 8.3, 9.0, 9.0])


def nose_profile(h: np.ndarray) -> np.ndarray:
    """Height of the nose ridge above the face (mm) along the midline, nasion -> subnasale."""
    return np.where((h < 12) & (h > -70), _NOSE_PROFILE(np.clip(h, -70, 12)), 0.0)


def nose_halfwidth(h: np.ndarray) -> np.ndarray:
    """Cross-section scale (mm) of the nose ridge at height h."""
    return _NOSE_HALFWIDTH(np.clip(h, -56, 10))


def _cap(q: np.ndarray) -> np.ndarray:
    """sqrt(1 - q) for q < 1, else 0: the profile of an ellipsoid cap."""
    return np.sqrt(np.clip(1.0 - q, 0.0, None))


def lid_curves(lu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heights (mm) of the upper and lower lid margins at lateral offset ``lu`` from the pupil
    (``lu > 0`` toward the ear); they meet at the canthi ``|lu| = EYE_HALF_WIDTH``, the lateral
    canthus a little higher than the medial one."""
    t = np.clip(lu / EYE_HALF_WIDTH, -1.0, 1.0)
    mid = EYE_Y + 0.4 + 1.2 * t
    up = mid + 5.9 * (1 - t * t) ** 0.8 * (1 - 0.2 * t)
    lo = mid - 4.3 * (1 - t * t) * (1 + 0.15 * t)
    return up, lo


def fissure_mask(u: np.ndarray, h: np.ndarray, edge: float = 0.9) -> np.ndarray:
    """Smooth mask (1 inside) of both palpebral fissures (almond-shaped eye openings)."""
    out = np.zeros_like(u)
    for sgn in (-1.0, 1.0):
        lu = sgn * u - EYE_U  # > 0 lateral
        up, lo = lid_curves(lu)
        inside_u = smoothstep((EYE_HALF_WIDTH - np.abs(lu)) / edge)
        m = smoothstep((up - h) / edge) * smoothstep((h - lo) / edge) * inside_u
        out = np.maximum(out, m)
    return out


EYE_APEX_DEPTH = 5.0
"""How far (mm) the corneal apex lies behind the smooth head surface."""


def eye_offset(u: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radial offsets (relative to the smooth head) of the eyeballs and of the lid mound.

    Returns ``(ball, lids)``: the globe (sclera ellipsoid + corneal cap) and the lids (a slightly
    larger ellipsoid, 1.8 mm thick skin), both ``-inf``-free (far outside they are very low).
    """
    ball = np.full_like(u, -60.0)
    lids = np.full_like(u, -60.0)
    base = -EYE_APEX_DEPTH - 2.4 - 12.0  # ellipsoid centre, so that the corneal apex is at -EYE_APEX_DEPTH
    for sgn in (-1.0, 1.0):
        du, dh = u - sgn * EYE_U, h - EYE_Y
        q_ball = (du / 16.5) ** 2 + (dh / 12.5) ** 2
        rho2 = du * du + dh * dh
        cornea = 2.4 * np.clip(1.0 - rho2 / 36.0, 0.0, None) ** 1.5
        b = base + 12.0 * _cap(q_ball) + cornea - 40.0 * (q_ball >= 1)
        q_lid = (du / 18.5) ** 2 + ((dh - 0.8) / 14.0) ** 2
        lid = base + 12.8 * _cap(q_lid) + 1.2 - 40.0 * (q_lid >= 1)
        ball = np.maximum(ball, b)
        lids = np.maximum(lids, np.maximum(lid, b + 1.8))
    return ball, lids


def eye_geometry(theta, u, h, face_r):
    """Blend the eyes (globe visible in the fissure, lids around) into the face radius."""
    ball, lids = eye_offset(u, h)
    fis = fissure_mask(u, h)
    eye_r = head_radius(theta, h) + fis * ball + (1.0 - fis) * lids
    return smax(face_r, eye_r, 2.5)


def face_features(u: np.ndarray, h: np.ndarray, amp: dict | None = None) -> np.ndarray:
    """Sum of the facial feature offsets (mm) at (u, h); ``amp`` scales named features."""
    a = {k: 1.0 for k in FEATURES}
    if amp:
        a.update(amp)
    total = np.zeros_like(u)
    for name, fn in FEATURES.items():
        if a[name] != 0.0:
            total = total + a[name] * fn(u, h)
    return total


def _brow(u, h):
    # brow ridge: arched along the brows, plus the glabella
    arch = 11.0 + 3.0 * np.exp(-0.5 * ((np.abs(u) - 33) / 14) ** 2)
    ridge = np.exp(-0.5 * ((h - arch) / 6.5) ** 2) * np.exp(-0.5 * (u / 47.0) ** 4)
    return 3.2 * ridge + 1.5 * gauss(u, h, 0, 9, 9, 7)


def _nasion(u, h):
    return -2.5 * gauss(u, h, 0, 1, 9, 5)


def _sockets(u, h):
    # orbits: deep under the brow, shallow toward the cheek
    return -14.0 * gauss2(u, h, EYE_U + 1, EYE_Y + 0.5, 15.0, 10.0) - 2.0 * gauss2(u, h, EYE_U + 2, EYE_Y + 8, 14, 5)


def _lid_crease(u, h):
    return -0.6 * gauss2(u, h, EYE_U, EYE_Y + 9.5, 10, 1.6)


def _under_eye(u, h):
    # lower lid bulge and the tear trough
    return 1.0 * gauss2(u, h, EYE_U, EYE_Y - 7.5, 10, 2.5) - 0.9 * gauss2(u, h, EYE_U - 6, EYE_Y - 11, 9, 2.5)


def _nose(u, h):
    w = nose_halfwidth(h)
    return nose_profile(h) * np.exp(-0.5 * (u / w) ** 2)


def _nose_tip(u, h):
    return 2.2 * gauss(u, h, 0, -41, 6.5, 4.5)


def _alae(u, h):
    # nostril wings, with the alar-facial groove around them
    wing = gauss2(u, h, 14.5, -47.5, 5.2, 4.6)
    groove = gauss2(u, h, 19.5, -47, 2.4, 5.5)
    return 7.5 * wing - 1.6 * groove


def _nostrils(u, h):
    return -2.6 * gauss2(u, h, 6.5, -51.0, 2.6, 1.6)


def _cheekbones(u, h):
    return 5.5 * gauss2(u, h, 52, -22, 14, 11) + 1.5 * gauss2(u, h, 36, -27, 10, 8)


def _cheeks(u, h):
    # malar fat pads and the buccal hollow below the cheekbone
    return 3.0 * gauss2(u, h, 38, -48, 13, 13) - 2.4 * gauss2(u, h, 60, -58, 11, 16)


def _nasolabial(u, h):
    out = np.zeros_like(u)
    for sgn in (-1.0, 1.0):
        d, t = segment_distance(sgn * u, h, (20.0, -45.0), (31.0, -78.0))
        fade = np.sin(np.pi * np.clip(t * 0.9 + 0.05, 0, 1))
        out = out - 1.4 * np.exp(-0.5 * (d / 2.2) ** 2) * fade
    return out


def _muzzle(u, h):
    # the maxilla/teeth arch pushing the lips forward
    return 3.6 * gauss(u, h, 0, -70, 22, 13)


def lip_mask(u: np.ndarray) -> np.ndarray:
    """1 across the mouth, falling to 0 at the corners (|u| ~ MOUTH_HALF_WIDTH)."""
    return np.exp(-np.abs(u / (MOUTH_HALF_WIDTH - 1.5)) ** 5)


def upper_lip_region(u, h):
    """Vermilion of the upper lip: mask in [0, 1]."""
    bow = 8.5 - 1.8 * np.exp(-0.5 * (u / 2.8) ** 2) + 1.2 * np.exp(-0.5 * ((np.abs(u) - 6) / 3.5) ** 2)
    top = MOUTH_Y + bow * (1 - (np.abs(u) / (MOUTH_HALF_WIDTH + 2)) ** 2).clip(0.15, 1)
    return lip_mask(u) * smoothstep((top - h) / 1.6 + 0.3) * smoothstep((h - MOUTH_Y) / 0.5)


def lower_lip_region(u, h):
    bottom = MOUTH_Y - 10.5 * (1 - (np.abs(u) / (MOUTH_HALF_WIDTH + 2)) ** 2).clip(0.15, 1)
    return lip_mask(u) * smoothstep((h - bottom) / 1.8 + 0.3) * smoothstep((MOUTH_Y - h) / 0.5)


def _upper_lip(u, h):
    m = lip_mask(u)
    return 4.6 * m * np.exp(-0.5 * ((h - MOUTH_Y - 3.4) / 2.8) ** 2) + 0.8 * m * np.exp(
        -0.5 * ((h - MOUTH_Y - 8.3) / 1.0) ** 2
    )


def _lower_lip(u, h):
    m = lip_mask(u * 1.05)
    return 4.4 * m * np.exp(-0.5 * ((h - MOUTH_Y + 4.6) / 3.4) ** 2)


def _mouth_line(u, h):
    # the lips roll inward toward the mouth line; the commissures are little dimples
    line = lip_mask(u * 0.96) * np.exp(-0.5 * ((h - MOUTH_Y) / 1.3) ** 2)
    return -2.2 * line - 1.2 * gauss2(u, h, MOUTH_HALF_WIDTH + 0.5, MOUTH_Y, 2.5, 2.5)


def _philtrum(u, h):
    # two ridges from the subnasale to the peaks of the cupid's bow, a groove between them
    t = np.clip((h - (MOUTH_Y + 7.0)) / 12.0, 0.0, 1.0)  # 0 at the vermilion border, 1 at subnasale
    col = np.sin(np.pi * t) ** 0.7
    half = 5.5 - 1.8 * t
    ridges = np.exp(-0.5 * ((np.abs(u) - half) / 1.5) ** 2)
    return col * (0.45 * ridges - 0.3 * np.exp(-0.5 * (u / 1.8) ** 2))


def _mentolabial(u, h):
    return -3.6 * gauss(u, h, 0, -92, 16, 4.2)


def _chin(u, h):
    return 7.0 * gauss(u, h, 0, -107, 15, 9.5) + 1.2 * gauss2(u, h, 9, -110, 6, 6)


def _jaw(u, h):
    # mandible angle and body: widen the lower face a little
    return 4.0 * gauss2(u, h, 86, -94, 14, 12)


def _temples(u, h):
    return -3.0 * gauss2(u, h, 64, 22, 12, 14)


def _forehead(u, h):
    return 1.3 * gauss2(u, h, 24, 40, 14, 14)


FEATURES = {
    "brow": _brow,
    "nasion": _nasion,
    "sockets": _sockets,
    "lid_crease": _lid_crease,
    "under_eye": _under_eye,
    "nose": _nose,
    "nose_tip": _nose_tip,
    "alae": _alae,
    "nostrils": _nostrils,
    "cheekbones": _cheekbones,
    "cheeks": _cheeks,
    "nasolabial": _nasolabial,
    "muzzle": _muzzle,
    "upper_lip": _upper_lip,
    "lower_lip": _lower_lip,
    "mouth_line": _mouth_line,
    "philtrum": _philtrum,
    "mentolabial": _mentolabial,
    "chin": _chin,
    "jaw": _jaw,
    "temples": _temples,
    "forehead": _forehead,
}


def face_radius(theta: np.ndarray, h: np.ndarray, amp: dict | None = None) -> np.ndarray:
    """Radius of the mean face at (theta, h): head + features + eyes."""
    u = R0 * theta
    r = head_radius(theta, h) + face_features(u, h, amp)
    return eye_geometry(theta, u, h, r)


# ---------------------------------------------------------------------------------------------
# the grid mesh
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FaceGrid:
    """The trimmed (theta, h) grid and its triangles."""

    theta: np.ndarray  # (N,) rad
    h: np.ndarray  # (N,) mm (parameter height; the vertex y)
    col: np.ndarray  # (N,) int column index, 0 at theta = 0 (negative = subject's right)
    row: np.ndarray  # (N,) int row index, mouth line between rows -1 and 0
    triangles: np.ndarray  # (T, 3) int32, counter-clockwise from outside
    slit_upper: np.ndarray  # (M,) vertex ids on the upper edge of the mouth slit
    slit_lower: np.ndarray  # (M,) vertex ids on the lower edge of the mouth slit
    mirror: np.ndarray  # (N,) vertex id of each vertex's mirror image (x -> -x)
    step: float  # grid spacing (mm)

    @property
    def u(self) -> np.ndarray:
        return R0 * self.theta


COLUMN_REFERENCE_Y = -20.0
"""Height (mm) of the head cross-section along which grid columns are spaced evenly."""


def column_angles(step: float) -> np.ndarray:
    """Angles (rad) of the grid columns: evenly spaced by ``step`` mm of arc length along the
    smooth head's cross-section at COLUMN_REFERENCE_Y (so cells are ~square on the cheeks too),
    symmetric about 0 with a column on the midline, up to THETA_MAX."""
    th = np.linspace(0.0, THETA_MAX, 4001)
    r = head_radius(th, np.full_like(th, COLUMN_REFERENCE_Y))
    dr = np.gradient(r, th)
    ds = np.sqrt(r * r + dr * dr)
    arc = np.concatenate([[0.0], np.cumsum(0.5 * (ds[1:] + ds[:-1]) * np.diff(th))])  # (4001,)
    n = int(np.floor(arc[-1] / step))
    half = np.interp(np.arange(1, n + 1) * step, arc, th)
    return np.concatenate([-half[::-1], [0.0], half])


def make_grid(grid_mm: float) -> FaceGrid:
    """Regular grid in (theta, h) with spacing ``grid_mm``, trimmed by the outline.

    Columns are evenly spaced in arc length (:func:`column_angles`), symmetric about theta = 0
    (a column on the midline); rows are spaced ``grid_mm`` apart and offset so the
    mouth line lies half-way between two rows. Quads whose four corners are inside become two
    triangles; the quads between the two rows around the mouth line with |u| < mouth half-width
    are left out (the mouth slit). Diagonals are mirrored across the midline, so the mesh is
    exactly mirror-symmetric.
    """
    step = float(grid_mm)
    col_theta = column_angles(step)  # (nc,) symmetric, col_theta[jmax] = 0
    jmax = (col_theta.shape[0] - 1) // 2
    cols = np.arange(-jmax, jmax + 1)
    imin = int(np.floor((Y_MIN - MOUTH_Y) / step - 0.5))
    imax = int(np.ceil((Y_MAX - MOUTH_Y) / step - 0.5))
    rows = np.arange(imin, imax + 1)
    cc, rr = np.meshgrid(cols, rows)  # (nr, nc)
    theta = col_theta[cc + jmax]
    hh = MOUTH_Y + (rr + 0.5) * step
    keep = inside_outline(theta, hh)
    # drop isolated points: keep only vertices used by some full quad (done below)
    nr, nc = keep.shape
    q = keep[:-1, :-1] & keep[:-1, 1:] & keep[1:, :-1] & keep[1:, 1:]  # (nr-1, nc-1) quads
    # mouth slit: quads between row -1 and row 0 spanning the mouth
    quad_rows = rows[:-1]  # quad i spans rows[i] .. rows[i] + 1
    quad_u = R0 * 0.5 * (col_theta[:-1] + col_theta[1:])  # quad centre u
    slit = (quad_rows[:, None] == -1) & (np.abs(quad_u)[None, :] < MOUTH_HALF_WIDTH - 0.25 * step)
    if not slit.any():  # very coarse grids: at least the middle two quads
        slit = (quad_rows[:, None] == -1) & (np.abs(quad_u)[None, :] <= step)
    q &= ~slit
    # border quads with exactly three corners inside give one triangle (a smoother outline)
    k00, k01, k10, k11 = keep[:-1, :-1], keep[:-1, 1:], keep[1:, :-1], keep[1:, 1:]
    three = (k00.astype(int) + k01 + k10 + k11 == 3) & ~slit
    used = np.zeros_like(keep)
    for part in (q, three):
        used[:-1, :-1] |= part & k00
        used[:-1, 1:] |= part & k01
        used[1:, :-1] |= part & k10
        used[1:, 1:] |= part & k11
    index = -np.ones(keep.shape, dtype=np.int64)
    index[used] = np.arange(int(used.sum()))
    qi, qj = np.nonzero(q)
    v00, v01 = index[qi, qj], index[qi, qj + 1]
    v10, v11 = index[qi + 1, qj], index[qi + 1, qj + 1]
    # ccw from outside (+x along j, +y along i): (00, 01, 11) and (00, 11, 10) on the right
    # half; mirrored diagonal (01, 10) on the left half (quad centre u < 0)
    left = quad_u[qj] < 0
    t1 = np.where(left[:, None], np.stack([v00, v01, v10], 1), np.stack([v00, v01, v11], 1))
    t2 = np.where(left[:, None], np.stack([v01, v11, v10], 1), np.stack([v00, v11, v10], 1))
    ti, tj = np.nonzero(three)
    w00, w01 = index[ti, tj], index[ti, tj + 1]
    w10, w11 = index[ti + 1, tj], index[ti + 1, tj + 1]
    miss = np.stack([~k00[ti, tj], ~k01[ti, tj], ~k10[ti, tj], ~k11[ti, tj]], 1).argmax(1)  # missing corner
    t3 = np.select(
        [miss[:, None] == 0, miss[:, None] == 1, miss[:, None] == 2],
        [np.stack([w01, w11, w10], 1), np.stack([w00, w11, w10], 1), np.stack([w00, w01, w11], 1)],
        np.stack([w00, w01, w10], 1),
    )
    triangles = np.concatenate([t1, t2, t3]).astype(np.int32)
    # the slit edges: vertices of the slit quads' bottom and top rows
    si, sj = np.nonzero(slit & keep[:-1, :-1] & keep[:-1, 1:])
    lower = np.unique(np.concatenate([index[si, sj], index[si, sj + 1]]))
    upper = np.unique(np.concatenate([index[si + 1, sj], index[si + 1, sj + 1]]))
    lower, upper = lower[lower >= 0], upper[upper >= 0]
    col_n = cc[used]
    row_n = rr[used]
    h_n = MOUTH_Y + (row_n + 0.5) * step
    slit_cols = np.nonzero(slit.any(axis=0))[0]
    end = slit_cols[np.argmax(np.abs(quad_u[slit_cols]))]
    u_end = float(R0 * max(abs(col_theta[end]), abs(col_theta[end + 1])))  # |u| of the slit's end vertices
    theta_n = col_theta[col_n + jmax]
    h_n = h_n + lip_closure(R0 * theta_n, row_n, step, u_end)
    # mirror map: (row, col) -> (row, -col)
    mirror_index = index[:, ::-1]  # cols are symmetric: column k <-> nc - 1 - k
    mirror = mirror_index[used]
    if np.any(mirror < 0):
        raise RuntimeError("face grid is not mirror-symmetric")  # programming error
    return FaceGrid(
        theta=theta_n.astype(np.float64),
        h=h_n.astype(np.float64),
        col=col_n,
        row=row_n,
        triangles=triangles,
        slit_upper=upper,
        slit_lower=lower,
        mirror=mirror,
        step=step,
    )


LIP_CLOSURE = 1.05
"""Fraction of the half grid step by which the rows next to the mouth slit move toward the
mouth line; slightly above 1, so the closed lips overlap by a hair (no gap seen from the front)."""


def lip_closure(u: np.ndarray, row: np.ndarray, step: float, u_end: float) -> np.ndarray:
    """Vertical shift (mm) of grid rows near the mouth slit toward the mouth line.

    Row k lies at distance d = |k + 0.5| * step from the line; it moves by
    LIP_CLOSURE * step / 2 * exp(-(d - step / 2) / step) toward it (monotone in d, so rows never
    cross). The shift fades to 0 at the slit's end vertices (|u| = u_end) over two grid steps, so
    the quads joining the lips at the mouth corners keep their full height. Rows cross the line
    by at most (LIP_CLOSURE - 1) * step / 2; rows of the same lip never cross each other.
    """
    d = np.abs(row + 0.5) * step
    toward = -np.sign(row + 0.5)  # rows above the line move down, rows below move up
    fade = smoothstep((u_end - np.abs(u)) / (1.5 * step))
    return toward * LIP_CLOSURE * 0.5 * step * np.exp(-(d - 0.5 * step) / step) * fade


def grid_vertices(theta: np.ndarray, h: np.ndarray, r: np.ndarray) -> np.ndarray:
    """(N, 3) vertices from the cylinder coordinates."""
    return np.stack([r * np.sin(theta), h, r * np.cos(theta)], axis=1)


def radial_dir(theta: np.ndarray) -> np.ndarray:
    """(N, 3) unit radial directions."""
    return np.stack([np.sin(theta), np.zeros_like(theta), np.cos(theta)], axis=1)
