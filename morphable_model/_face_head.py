"""The head around the built-in face: skull with a short-hair cap, ears, neck, and the mouth interior.

The face (:mod:`morphable_model._face_geometry`) is a 1 mm grid trimmed by the face outline. Around
it this module builds, at a lower density (``head_mm``, 4 mm at full resolution):

* **the head**: a range map over a chart ``(theta, s)`` that covers the whole head and neck.
  ``theta`` is the azimuth about the vertical axis (as for the face); below ``Y_C`` the chart is a
  cylinder (``s = y``: the point at height ``s`` on the horizontal ray at angle ``theta``), above
  it a sphere about ``(0, Y_C, 0)`` (``s = Y_C + R_N * elevation``), so the crown closes in a pole.
  The surface radius is a blend of the face's own radius function (continued past the outline,
  so the head meets the face smoothly) and a skull (:func:`skull_radius`: superellipse
  cross-sections with separate front / back depths and a dome on top; its back and top include a
  ~6 mm short-hair volume), plus the ears (:func:`ear_height`, a height field on the side of the
  head: helix rim, concha bowl, tragus, lobe). Columns are evenly spaced in arc length with a finer
  spacing at the ears and halve toward the crown (2:1 transition cells); rows are finer over the
  ears and coarser down the neck. Cells that touch the face (its outline plus a margin) are left
  out, and the hole is closed by a strip of triangles "zipped" between the face's boundary and
  the hole's boundary, built on the subject's right half and mirrored (the whole mesh stays
  exactly mirror-symmetric).
* **the mouth interior**: a closed pouch hanging from the mouth slit (lips' inner sides, upper
  and lower front teeth, palate, tongue, back wall); its rings follow the slit vertex they hang
  from, so expressions (jaw opening) carry it.

Every new vertex has a region label (:data:`REGION_NAMES`). Nothing here is random.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import _face_geometry as fg
from ._face_geometry import _pchip, smoothstep

Y_C = 40.0
"""Height (mm) where the head chart turns from a cylinder (below) into a sphere (above)."""

R_N = 80.0
"""Nominal radius (mm) of the chart's spherical part: ``s - Y_C = R_N * elevation``."""

DOME_HEIGHT = 78.0
"""Height (mm) of the skull's dome above ``Y_C``: the crown (with hair) is at ``Y_C + DOME_HEIGHT``."""

Y_NECK = -255.0
"""Height (mm) of the open lower end of the neck."""

BLEND_MM = 25.0
"""Distance (mm) outside the face outline over which the head turns from the face's radius
function into the skull."""

R_CHART = 80.0
"""mm per radian of theta in the 2-D chart used to zip the face to the head."""

REGION_NAMES = ("face", "eyes", "mouth_interior", "ears", "scalp", "neck", "head_skin")
"""Per-vertex region labels of the built-in model: ``face`` (the face mesh's skin), ``eyes`` (the
visible eyeballs), ``mouth_interior`` (teeth, tongue, cavity), ``ears``, ``scalp`` (hair-covered),
``neck`` and ``head_skin`` (the rest of the head's skin: temples in front of the ears, behind the
ears)."""

REGION = {name: k for k, name in enumerate(REGION_NAMES)}


# ---------------------------------------------------------------------------------------------
# the surface: face radius continued past the outline, skull, ears
# ---------------------------------------------------------------------------------------------
def _linear_ends(p, lo: float, hi: float):
    """The spline ``p`` on ``[lo, hi]`` continued linearly (C1) outside (``p`` itself extrapolates
    with cubics, which run away)."""
    d = p.derivative()
    dlo, dhi = float(d(lo)), float(d(hi))

    def f(y):
        y = np.asarray(y, dtype=float)
        yc = np.clip(y, lo, hi)
        return p(yc) + np.where(y < lo, dlo * (y - lo), 0.0) + np.where(y > hi, dhi * (y - hi), 0.0)

    return f


_HALF_WIDTH_EXT = _linear_ends(fg._HALF_WIDTH, -140.0, 80.0)
_FRONT_DEPTH_EXT = _linear_ends(fg._FRONT_DEPTH, -140.0, 80.0)
_EXPONENT_EXT = _linear_ends(fg._EXPONENT, -130.0, 80.0)


def _superellipse(theta, a, b, p):
    s, c = np.abs(np.sin(theta)), np.abs(np.cos(theta))
    return ((s / a) ** p + (c / b) ** p) ** (-1.0 / p)


def face_radius_ext(theta: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The face's radius function (:func:`_face_geometry.face_radius`) continued past the face
    outline: the head's profiles are continued linearly beyond their spline ranges (equal to the
    face's inside them)."""
    a = np.maximum(_HALF_WIDTH_EXT(y), 8.0)
    b = np.maximum(_FRONT_DEPTH_EXT(y), 8.0)
    p = np.clip(_EXPONENT_EXT(y), 1.6, 3.0)
    head = _superellipse(theta, a, b, p)
    u = fg.R0 * theta
    r = head + fg.face_features(u, y)
    ball, lids = fg.eye_offset(u, y)
    fis = fg.fissure_mask(u, y)
    return fg.smax(r, head + fis * ball + (1.0 - fis) * lids, 2.5)


# skull (with the hair volume on top and at the back): half-width, front and back depth, exponents
_SKULL_Y = [-265, -235, -205, -175, -150, -130, -112, -95, -75, -55, -35, -15, 5, 25, 40]
_SKULL_A = _pchip(_SKULL_Y, [66, 59, 55.5, 54.5, 54.5, 55, 56.5, 59, 63, 67, 70.5, 72.5, 74, 75, 75])
_SKULL_F = _pchip(_SKULL_Y, [60, 52, 49, 48.5, 50, 56, 63, 70, 79, 86, 91, 93.5, 95, 96, 96])
_SKULL_B = _pchip(_SKULL_Y, [76, 67, 63, 61.5, 61.5, 63, 66, 73, 84, 94, 100, 104, 105.5, 105, 103])
_SKULL_PF = _pchip([-265, -150, -110, -60, 40], [2.0, 2.0, 2.05, 2.2, 2.25])
_SKULL_PB = _pchip([-265, -150, -110, -60, 40], [2.0, 2.0, 2.1, 2.3, 2.4])


def skull_radius(theta: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Radius (mm) of the bare head shape away from the face: superellipse cross-sections (front
    half with the front depth, back half with the back depth; C1 across theta = +-90 deg) that
    narrow into the neck below the jaw, and an elliptic dome above ``Y_C`` (0 above the crown)."""
    yc = np.clip(y, _SKULL_Y[0], Y_C)
    front = np.cos(theta) >= 0
    depth = np.where(front, _SKULL_F(yc), _SKULL_B(yc))
    p = np.where(front, _SKULL_PF(yc), _SKULL_PB(yc))
    r = _superellipse(theta, _SKULL_A(yc), depth, p)
    t = np.clip((np.asarray(y, float) - Y_C) / DOME_HEIGHT, 0.0, 1.0)
    return r * np.sqrt(1.0 - t * t)


def outline_distance_ext(theta: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance-like measure (mm, > 0 inside) from the face outline, continued around the
    head (equal to :func:`_face_geometry.outline_distance` for |theta| <= the outline's side)."""
    td = np.minimum(np.rad2deg(np.abs(theta)), fg.THETA_SIDE_DEG)
    d_side = (np.deg2rad(fg.THETA_SIDE_DEG) - np.abs(theta)) * 75.0
    return np.minimum(np.minimum(fg._TOP(td) - y, y - fg._BOTTOM(td)), d_side)


def fade(theta: np.ndarray, y: np.ndarray, length: float, length_below: float | None = None) -> np.ndarray:
    """1 inside the face outline, falling smoothly to 0 at ``length`` mm outside it (at
    ``length_below`` mm below the jaw line, toward the neck, where the face's lower modes carry the
    submandibular skin further; default ``length``)."""
    if length_below is not None:
        length = length + (length_below - length) * smoothstep(-(np.asarray(y, float) + 40.0) / 40.0)
    return 1.0 - smoothstep(-outline_distance_ext(theta, y) / length)


# ears --------------------------------------------------------------------------------------
EAR_THETA = np.deg2rad(99.5)
"""Azimuth of the ear's front (attachment) edge."""
EAR_Y = -21.0
"""Height (mm) of the ear's centre (the ear spans ~ -52 .. +11 mm: nose base to brow level)."""
EAR_R = 70.0
"""mm of arc per radian of theta at the ear (the head's half-width there)."""


def ear_coords(theta: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ear coordinates (mm): ``a`` backward from the attachment edge, ``b`` up from the centre."""
    return (np.abs(theta) - EAR_THETA) * EAR_R, np.asarray(y, float) - EAR_Y


def ear_outline(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Approximate distance (mm, > 0 inside) from the ear's outline: an egg 62 mm tall, ~32 mm
    wide at the top and narrower at the lobe."""
    half_w = 15.5 + 2.0 * np.tanh(b / 15.0)
    q = np.sqrt(((a - 15.0) / half_w) ** 2 + ((b - 1.0) / 31.0) ** 2)
    return (1.0 - q) * half_w


def ear_height(theta: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outward offset (mm) of the ear above the head surface and the ear mask in [0, 1].

    The ear plane leaves the head at its front edge and stands out ~14 mm at the back (the
    auricle's ~30 deg to the head), with a rolled helix rim along the top and back, the concha
    bowl and tragus in front, a thinner lobe below; the back edge drops steeply to the head.
    """
    a, b = ear_coords(theta, y)
    inside = ear_outline(a, b)
    mask = smoothstep(inside / 2.5)
    lobe = smoothstep((b + 34.0) / 14.0)  # the lobe (bottom) stands out less
    plane = 18.0 * smoothstep(a / 26.0) * (0.55 + 0.45 * lobe)
    rim = 2.4 * np.exp(-0.5 * ((inside - 2.2) / 1.6) ** 2) * smoothstep((a - 4.0) / 8.0 + (b - 6.0) / 12.0)
    concha = 7.0 * fg.gauss(a, b, 9.0, -4.0, 5.5, 8.5)
    fossa = 2.0 * fg.gauss(a, b, 16.0, 20.0, 6.0, 5.0)
    tragus = 4.0 * fg.gauss(a, b, 1.0, -7.0, 2.2, 4.0)
    height = np.clip(plane + rim - concha - fossa, 0.0, None) + tragus
    head_side = np.abs(theta) > 0.5 * np.pi
    return np.where(head_side, mask * height, 0.0), np.where(head_side, mask, 0.0)


def head_radius(theta: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Radius (mm) of the head surface at (theta, height y): face radius near the face, skull
    away from it, plus the ears."""
    theta, y = np.broadcast_arrays(np.asarray(theta, float), np.asarray(y, float))
    w = smoothstep(-outline_distance_ext(theta, y) / BLEND_MM)
    r = skull_radius(theta, y)
    near = w < 1.0  # the face's radius function only where it counts (it is the costly part)
    r[near] = (1.0 - w[near]) * face_radius_ext(theta[near], y[near]) + w[near] * r[near]
    a, b = ear_coords(theta, y)
    ear = (a > -4.0) & (a < 40.0) & (np.abs(b) < 40.0)
    r[ear] += ear_height(theta[ear], y[ear])[0]
    return r


def hairline(theta: np.ndarray) -> np.ndarray:
    """Height (mm) of the hairline at azimuth theta (+ HAIR_INSIDE_MM): the face's top outline in
    front, over the ears, down behind them to the nape."""
    td = np.rad2deg(np.abs(theta))
    behind = _pchip([96, 100, 112, 123, 131, 140, 152, 166, 180], [14, 15, 16, 14, -8, -36, -60, -74, -79])(
        np.clip(td, 96, 180)
    )
    return np.where(td <= fg.THETA_SIDE_DEG, fg._TOP(np.minimum(td, fg.THETA_SIDE_DEG)), behind + HAIR_INSIDE_MM)


HAIR_INSIDE_MM = 5.0
"""The hairline lies this far inside the face mesh's top border, so it is drawn on the fine grid."""


def hair_mask(theta: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1 on the hair-covered scalp, 0 on skin (a soft hairline ~4 mm wide), 0 on the ears."""
    _, ear = ear_height(theta, y)
    return smoothstep((y - hairline(theta) + HAIR_INSIDE_MM) / 4.0) * (1.0 - ear)


def neck_line(theta: np.ndarray) -> np.ndarray:
    """Height (mm) below which the head's skin counts as neck: the jaw line in front, under the
    ear lobe at the side, the nape hairline at the back."""
    td = np.rad2deg(np.abs(theta))
    return _pchip([0, 40, 60, 72, 82, 90, 96, 110, 140, 180], [-127, -119, -110, -101, -86, -70, -60, -58, -70, -82])(
        np.clip(td, 0, 180)
    )


# ---------------------------------------------------------------------------------------------
# the chart
# ---------------------------------------------------------------------------------------------
S_POLE = Y_C + R_N * 0.5 * np.pi
"""Chart coordinate of the crown (the pole)."""


def chart_points(theta: np.ndarray, s: np.ndarray, iterations: int = 32) -> np.ndarray:
    """(N, 3) surface points at chart coordinates (theta, s).

    Cylinder part (``s <= Y_C``): ``(r sin theta, s, r cos theta)`` with ``r = head_radius``.
    Sphere part: the point on the ray from ``(0, Y_C, 0)`` at elevation ``(s - Y_C) / R_N`` where the
    ray meets the surface ``r = head_radius(theta, y)`` (bisection; the dome is star-shaped about
    the centre, so there is one crossing).
    """
    theta = np.asarray(theta, float)
    s = np.asarray(s, float)
    out = np.empty(theta.shape + (3,))
    cyl = s <= Y_C
    r = head_radius(theta[cyl], s[cyl])
    out[cyl] = np.stack([r * np.sin(theta[cyl]), s[cyl], r * np.cos(theta[cyl])], -1)
    th, phi = theta[~cyl], np.minimum((s[~cyl] - Y_C) / R_N, 0.5 * np.pi)
    cp, sp = np.cos(phi), np.sin(phi)
    lo, hi = np.zeros_like(th), np.full_like(th, 250.0)
    for _ in range(iterations):  # f(rho) = rho cos(phi) - R(theta, Y_C + rho sin(phi)) rises through 0
        mid = 0.5 * (lo + hi)
        below = mid * cp - head_radius(th, Y_C + mid * sp) < 0
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    rho = 0.5 * (lo + hi)
    out[~cyl] = np.stack([rho * cp * np.sin(th), Y_C + rho * sp, rho * cp * np.cos(th)], -1)
    return out


def chart_s(points: np.ndarray) -> np.ndarray:
    """Chart coordinate ``s`` of 3-D points (the inverse of :func:`chart_points` in s)."""
    y = points[:, 1]
    r = np.hypot(points[:, 0], points[:, 2])
    return np.where(y <= Y_C, y, Y_C + R_N * np.arctan2(y - Y_C, r))


def _spacing_positions(lo: float, hi: float, spacing, length, count_multiple: int = 1) -> np.ndarray:
    """Positions from ``lo`` to ``hi`` (both included) whose steps follow ``spacing(x)`` (mm per step)
    along the arc length ``length(x)`` (monotone, mm); the number of steps is a multiple of
    ``count_multiple``."""
    x = np.linspace(lo, hi, 4001)
    ell = length(x)
    steps = np.concatenate([[0.0], np.cumsum(np.diff(ell) * 2.0 / (spacing(x[1:]) + spacing(x[:-1])))])
    n = max(count_multiple, int(round(steps[-1] / count_multiple)) * count_multiple)
    return np.interp(np.linspace(0.0, steps[-1], n + 1), steps, x)


def column_angles(head_mm: float, levels: int) -> np.ndarray:
    """(NC,) column azimuths in [0, 2 pi): theta = 0 first, mirror-symmetric (column k <-> NC - k),
    evenly spaced in arc length along the head's section at y = -20 mm with spacing ``head_mm``
    (0.75 x at the ears, 1.35 x at the back); NC is a multiple of ``2 ** (levels + 1)``."""
    def spacing(th):
        td = np.rad2deg(th)
        return head_mm * np.interp(td, [0, 86, 97, 133, 152, 180], [1.0, 1.0, 0.75, 0.75, 1.35, 1.35])

    def length(th):
        r = head_radius(th, np.full_like(th, -20.0)) - ear_height(th, np.full_like(th, -20.0))[0]
        seg = np.hypot(np.diff(r), r[1:] * np.diff(th))  # arc length of the section
        return np.concatenate([[0.0], np.cumsum(seg)])

    half = _spacing_positions(0.0, np.pi, spacing, length, 2 ** levels)
    return np.concatenate([half, 2.0 * np.pi - half[-2:0:-1]])


def row_positions(head_mm: float) -> np.ndarray:
    """Chart rows ``s`` from the neck's end to the crown: ``head_mm`` apart, 0.75 x over the ears,
    1.5 x down the neck, 1.1 x on the crown; the last row is the pole."""
    def spacing(s):
        return head_mm * np.interp(s, [Y_NECK, -185, -150, -70, -62, 16, 24, 60, S_POLE], [1.5, 1.5, 1.0, 1.0, 0.75, 0.75, 1.0, 1.1, 1.1])

    def length(s):
        return s

    return _spacing_positions(Y_NECK, S_POLE, spacing, length)


# ---------------------------------------------------------------------------------------------
# the head mesh
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HeadMesh:
    """New vertices (after the face's) and triangles of the head, ears, neck and mouth interior."""

    verts: np.ndarray  # (M, 3) mm
    theta: np.ndarray  # (M,) azimuth (bag vertices: their slit vertex's)
    h: np.ndarray  # (M,) height parameter (head: y; bag: their slit vertex's h)
    radial: np.ndarray  # (M, 3) horizontal unit radial direction (bag: their slit vertex's)
    mouth_offset: np.ndarray  # (M,) signed height above the mouth line (bag: their slit vertex's)
    regions: np.ndarray  # (M,) uint8 labels, see REGION_NAMES
    hair: np.ndarray  # (M,) hair mask in [0, 1]
    ear: np.ndarray  # (M,) ear mask in [0, 1]
    ear_height: np.ndarray  # (M,) ear offset (mm)
    bag_depth: np.ndarray  # (M,) depth (mm) behind the lips of mouth-interior vertices (0 elsewhere)
    bag_part: np.ndarray  # (M,) int8: 0 not the mouth, 1 lip inside, 2 teeth, 3 palate/tongue, 4 back wall
    triangles: np.ndarray  # (T, 3) int32, indices into [face vertices; these vertices]
    mirror: np.ndarray  # (M,) vertex id (global) of each new vertex's mirror image
    n_head: int  # the first n_head new vertices are the head (the rest: mouth interior)
    n_zip: int  # triangles of the face-to-head strip


def _grid_cells(levels_per_row: list[int], nc: int) -> tuple[list, list]:
    """Cells between consecutive rows of a ring grid whose rows hold ``nc / 2**L`` columns.

    Returns (cells, vertex keys): each cell is a list of triangles over keys ``(row, column index
    at the full resolution)``, counter-clockwise in the chart (theta right, s up)."""
    cells = []
    n_rows = len(levels_per_row)
    for r in range(n_rows - 1):
        la, lb = levels_per_row[r], levels_per_row[r + 1]
        if r + 1 == n_rows - 1:  # pole: a fan
            step = 2 ** la
            ks = list(range(0, nc, step))
            for i, k in enumerate(ks):
                k1 = ks[(i + 1) % len(ks)]
                cells.append([((r, k), (r, k1), (r + 1, 0))])
            continue
        if la == lb:
            step = 2 ** la
            for k in range(0, nc, step):
                k1 = (k + step) % nc
                a, b, c, d = (r, k), (r, k1), (r + 1, k1), (r + 1, k)
                if k + 0.5 * step < 0.5 * nc:  # right half (theta in (0, pi)): diagonal a-c
                    cells.append([(a, b, c), (a, c, d)])
                else:  # left half: mirrored diagonal b-d
                    cells.append([(a, b, d), (b, c, d)])
        elif lb == la + 1:  # fewer columns above
            step = 2 ** la
            for k in range(0, nc, 2 * step):
                l0, l1, l2 = (r, k), (r, (k + step) % nc), (r, (k + 2 * step) % nc)
                u0, u1 = (r + 1, k), (r + 1, (k + 2 * step) % nc)
                cells.append([(l0, l1, u0), (l1, u1, u0), (l1, l2, u1)])
        elif lb == la - 1:  # more columns above
            step = 2 ** lb
            for k in range(0, nc, 2 * step):
                l0, l1 = (r, k), (r, (k + 2 * step) % nc)
                u0, u1, u2 = (r + 1, k), (r + 1, (k + step) % nc), (r + 1, (k + 2 * step) % nc)
                cells.append([(l0, u1, u0), (l0, l1, u1), (l1, u2, u1)])
        else:
            raise RuntimeError("row levels must change by at most one")  # programming error
    return cells


def _row_levels(circumference: np.ndarray, nc: int, levels: int, min_spacing: float) -> list[int]:
    """Halving level per row: the fewest halvings keeping the spacing >= ``min_spacing``, at most
    ``levels``, changing by at most one between neighbouring rows; the pole row last."""
    lv = np.zeros(circumference.shape[0], int)
    for i, c in enumerate(circumference):
        while lv[i] < levels and c / (nc / 2 ** lv[i]) < min_spacing:
            lv[i] += 1
    lv[-1] = lv[-2]  # the pole row (a single vertex) takes the last ring's level
    for _ in range(levels + 1):  # smooth: neighbours differ by <= 1 (only lowering levels)
        lv[1:] = np.minimum(lv[1:], lv[:-1] + 1)
        lv[:-1] = np.minimum(lv[:-1], lv[1:] + 1)
    return [int(x) for x in lv]


def _boundary_edges(triangles: np.ndarray) -> np.ndarray:
    """(E, 2) directed boundary edges a -> b (the mesh on their left) of a triangle list."""
    t = np.asarray(triangles, np.int64)
    e = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])  # (3T, 2)
    n = int(t.max()) + 1
    key, rev = e[:, 0] * n + e[:, 1], e[:, 1] * n + e[:, 0]
    return e[~np.isin(key, rev)]


def _boundary_next(triangles: np.ndarray) -> dict[int, int]:
    """Directed boundary edges as a map a -> b."""
    e = _boundary_edges(triangles)
    if np.unique(e[:, 0]).shape[0] != e.shape[0]:
        raise RuntimeError("boundary vertex with two outgoing boundary edges")  # programming error
    return dict(zip(e[:, 0].tolist(), e[:, 1].tolist()))


def _walk(nxt: dict[int, int], start: int, stop: int) -> list[int]:
    out = [start]
    while out[-1] != stop:
        out.append(nxt[out[-1]])
        if len(out) > len(nxt) + 1:
            raise RuntimeError("boundary walk did not reach its end")  # programming error
    return out


def zip_polylines(p: np.ndarray, q: np.ndarray, pid: list[int], qid: list[int]) -> list[tuple[int, int, int]]:
    """Triangulate the strip between two polylines in the plane: ``p`` (the inner one, the strip on
    its right) and ``q`` (the outer one, the strip on its left), both from the same start edge
    ``p[0]-q[0]`` to the same end edge ``p[-1]-q[-1]``. Greedy: advance along the polyline whose
    next diagonal is shorter, unless that triangle would not be counter-clockwise. Returns
    counter-clockwise triangles of ids (``pid``/``qid``)."""

    def ccw(a, b, c) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])

    i, j, n, m = 0, 0, len(p) - 1, len(q) - 1
    tris = []
    while i < n or j < m:
        tp = (p[i], q[j], p[i + 1]) if i < n else None
        tq = (p[i], q[j], q[j + 1]) if j < m else None
        ok_p = tp is not None and ccw(*tp) > 0
        ok_q = tq is not None and ccw(*tq) > 0
        if ok_p and ok_q:
            take_p = np.hypot(*(p[i + 1] - q[j])) <= np.hypot(*(p[i] - q[j + 1]))
        elif ok_p or ok_q:
            take_p = ok_p
        else:
            raise RuntimeError(f"cannot zip the face to the head at {p[i]} / {q[j]}")  # programming error
        if take_p:
            tris.append((pid[i], qid[j], pid[i + 1]))
            i += 1
        else:
            tris.append((pid[i], qid[j], qid[j + 1]))
            j += 1
    return tris


def build_head(grid: fg.FaceGrid, face_verts: np.ndarray, head_mm: float) -> HeadMesh:
    """The head, ears, neck and mouth interior around the face mesh (``grid``, ``face_verts``)."""
    n_face = face_verts.shape[0]
    levels = 4 if head_mm <= 6.0 else 2
    col_theta = column_angles(head_mm, levels)  # (NC,) in [0, 2 pi)
    nc = col_theta.shape[0]
    rows = row_positions(head_mm)  # (R,) the last one is the pole
    n_rows = rows.shape[0]
    col_signed = np.where(col_theta > np.pi, col_theta - 2.0 * np.pi, col_theta)

    # full-resolution rings (the pole row collapses to one point) -> circumferences -> levels
    th_all = np.tile(col_signed, n_rows)
    s_all = np.repeat(rows, nc)
    p_all = chart_points(th_all, s_all).reshape(n_rows, nc, 3)
    circ = np.linalg.norm(np.roll(p_all, -1, axis=1) - p_all, axis=2).sum(1)  # (R,)
    lv = _row_levels(circ, nc, levels, min_spacing=0.55 * head_mm)
    cells = _grid_cells(lv, nc)

    # vertices of the ring grid: (row, k) for k a multiple of 2 ** level(row); the pole: (R-1, 0)
    keys = [(r, k) for r in range(n_rows - 1) for k in range(0, nc, 2 ** lv[r])] + [(n_rows - 1, 0)]
    key_id = {key: i for i, key in enumerate(keys)}
    kr = np.array([k[0] for k in keys])
    kk = np.array([k[1] for k in keys])
    g_theta = col_signed[kk]
    g_theta[kr == n_rows - 1] = 0.0
    g_s = rows[kr]
    g_verts = p_all[kr, kk]
    g_verts[kr == n_rows - 1] = chart_points(np.zeros(1), np.array([S_POLE]))[0]
    dist = outline_distance_ext(g_theta, g_verts[:, 1])

    # leave out the cells touching the face (outline + margin), then cells at pinched vertices
    margin = 0.4 * head_mm
    near = dist > -margin
    tri_cells = [np.array([[key_id[v] for v in t] for t in cell]) for cell in cells]
    keep = np.array([not near[c].any() for c in tri_cells])
    for _ in range(10):
        tris = np.concatenate([c for c, k in zip(tri_cells, keep) if k])
        nxt_count = np.bincount(_boundary_edges(tris)[:, 0], minlength=len(keys))
        pinched = np.nonzero(nxt_count > 1)[0]
        if pinched.size == 0:
            break
        bad = np.zeros(len(keys), bool)
        bad[pinched] = True
        keep &= np.array([not bad[c].any() for c in tri_cells])
    else:
        raise RuntimeError("could not cut a simple hole for the face")  # programming error
    tris = np.concatenate([c for c, k in zip(tri_cells, keep) if k])
    used = np.zeros(len(keys), bool)
    used[tris.reshape(-1)] = True
    new_id = -np.ones(len(keys), np.int64)
    new_id[used] = n_face + np.arange(int(used.sum()))
    head_tris = new_id[tris]
    # mirror image of a ring vertex: (row, k) -> (row, (NC - k) mod NC)
    g_mirror = np.array([key_id[(r, (nc - k) % nc) if r < n_rows - 1 else (r, 0)] for r, k in keys])
    h_verts, h_theta, h_s = g_verts[used], g_theta[used], g_s[used]
    h_mirror = new_id[g_mirror[used]]
    if np.any(h_mirror < 0):
        raise RuntimeError("head grid is not mirror-symmetric")  # programming error

    # zip the face's outer boundary to the hole's boundary (subject's right half, then mirrored)
    face_next = _boundary_next(grid.triangles.astype(np.int64))
    mid = np.nonzero(grid.col == 0)[0]
    f_top, f_bot = mid[np.argmax(grid.row[mid])], mid[np.argmin(grid.row[mid])]
    p_ids = _walk(face_next, f_top, f_bot)  # counter-clockwise: top -> subject's right -> chin
    head_next = _boundary_next(head_tris - n_face)
    head_prev = {b: a for a, b in head_next.items()}
    on_mid = [i for i in head_prev if h_theta[i] == 0.0 and h_s[i] < S_POLE - 1e-6]
    hole_mid = [i for i in on_mid if Y_NECK + 1e-6 < h_s[i]]
    q_top = max(hole_mid, key=lambda i: h_s[i])
    q_bot = min(hole_mid, key=lambda i: h_s[i])
    q_local = _walk(head_prev, q_top, q_bot)  # against the hole's orientation: toward x < 0
    p_xy = np.stack([grid.theta[p_ids] * R_CHART, chart_s(face_verts[p_ids])], 1)
    q_xy = np.stack([h_theta[q_local] * R_CHART, h_s[q_local]], 1)
    zip_right = zip_polylines(p_xy, q_xy, list(p_ids), [n_face + i for i in q_local])
    full_mirror = np.concatenate([grid.mirror, h_mirror])
    zip_left = [(full_mirror[a], full_mirror[c], full_mirror[b]) for a, b, c in zip_right]
    zip_tris = np.array(zip_right + zip_left, np.int64)

    m = h_verts.shape[0]
    ear_h, ear_m = ear_height(h_theta, h_verts[:, 1])
    hair = hair_mask(h_theta, h_verts[:, 1])
    regions = np.full(m, REGION["head_skin"], np.uint8)
    regions[h_verts[:, 1] < neck_line(h_theta)] = REGION["neck"]
    regions[hair >= 0.5] = REGION["scalp"]
    regions[ear_m >= 0.5] = REGION["ears"]

    bag = _mouth_bag(grid, face_verts, n_face + m)
    nb = bag.verts.shape[0]
    return HeadMesh(
        verts=np.concatenate([h_verts, bag.verts]),
        theta=np.concatenate([h_theta, bag.theta]),
        h=np.concatenate([h_verts[:, 1], bag.h]),
        radial=fg.radial_dir(np.concatenate([h_theta, bag.theta])),
        mouth_offset=np.concatenate([h_verts[:, 1] - fg.MOUTH_Y, bag.mouth_offset]),
        regions=np.concatenate([regions, np.full(nb, REGION["mouth_interior"], np.uint8)]),
        hair=np.concatenate([hair, np.zeros(nb)]),
        ear=np.concatenate([ear_m, np.zeros(nb)]),
        ear_height=np.concatenate([ear_h, np.zeros(nb)]),
        bag_depth=np.concatenate([np.zeros(m), bag.depth]),
        bag_part=np.concatenate([np.zeros(m, np.int8), bag.part]),
        triangles=np.concatenate([zip_tris, head_tris, bag.triangles]).astype(np.int32),
        mirror=np.concatenate([h_mirror, bag.mirror]),
        n_head=m,
        n_zip=zip_tris.shape[0],
    )


# ---------------------------------------------------------------------------------------------
# the mouth interior
# ---------------------------------------------------------------------------------------------
# Profiles of the pouch in the sagittal plane, per ring: (depth behind the lip edge, height above
# it) in mm and the part (1 lip inside, 2 teeth, 3 palate / tongue, 4 back wall). Upper: inner
# lip, upper incisors (front face hanging 3 mm below the lip line, back face), palate, back wall;
# lower: inner lip, lower incisors (just behind and below the upper ones: an overbite), floor,
# tongue, back wall. The last rings of both halves are joined by the back wall.
_UPPER = [(1.2, 0.9, 1), (2.8, 3.6, 1), (3.8, 3.2, 2), (4.4, 0.0, 2), (4.8, -3.0, 2), (6.4, -2.6, 2),
          (7.8, 2.0, 2), (11.0, 7.0, 3), (19.0, 10.0, 3), (29.0, 11.0, 3), (37.0, 10.0, 3), (41.0, 7.0, 4)]
_LOWER = [(1.2, -0.9, 1), (2.8, -3.6, 1), (4.4, -7.5, 1), (5.6, -7.0, 2), (6.0, -5.0, 2), (8.2, -5.4, 2),
          (9.0, -8.5, 2), (12.5, -9.5, 3), (16.0, -6.0, 3), (26.0, -5.0, 3), (35.0, -8.0, 3), (40.0, -14.0, 4)]


@dataclasses.dataclass(frozen=True)
class _Bag:
    verts: np.ndarray  # (B, 3)
    theta: np.ndarray  # (B,) azimuth of the slit column each vertex hangs from
    h: np.ndarray  # (B,) its slit vertex's height parameter (corners: the mouth line)
    mouth_offset: np.ndarray  # (B,) signed height above the mouth line (+ upper, - lower, 0 corners)
    depth: np.ndarray  # (B,) mm
    part: np.ndarray  # (B,) int8
    triangles: np.ndarray  # (T, 3), global ids
    mirror: np.ndarray  # (B,) global ids


def _mouth_bag(grid: fg.FaceGrid, face_verts: np.ndarray, first_id: int) -> _Bag:
    """The mouth-interior pouch: one ring of vertices per profile step around the slit.

    Ring 0 is the slit itself (upper lip's inner edge left -> right, lower lip's right -> left).
    Ring k >= 1 holds the upper and lower profile points of every inner slit column plus one vertex
    per mouth corner shared by both halves, so the pouch closes like a lens at the corners (no thin
    side walls there). Every vertex moves with its slit column (upper half with the upper lip,
    lower half with the jaw, corners half-way)."""
    up = grid.slit_upper[np.argsort(grid.col[grid.slit_upper])]
    lo = grid.slit_lower[np.argsort(grid.col[grid.slit_lower])]
    if not np.array_equal(grid.col[up], grid.col[lo]) or up.shape[0] < 3:
        raise RuntimeError("mouth slit edges do not share their columns")  # programming error
    n = up.shape[0]
    u = fg.R0 * grid.theta[up]
    t = np.maximum(np.sqrt(np.clip(1.0 - (u / (np.abs(u).max() + 0.5 * grid.step)) ** 2, 0.0, 1.0)), 0.5)
    back = np.array([0.0, 0.0, -1.0])  # straight back: the columns stay as far apart as at the lips
    verts, theta, hh, offset, depth, part, mirror = [], [], [], [], [], [], []
    ring_ids = []  # per ring k >= 1: (upper ids (n,), lower ids (n,)), corners shared
    nxt = first_id
    for k in range(len(_UPPER)):
        pu = face_verts[up] + (_UPPER[k][0] * (0.3 + 0.7 * t))[:, None] * back + (_UPPER[k][1] * t)[:, None] * [0.0, 1.0, 0.0]
        pl = face_verts[lo] + (_LOWER[k][0] * (0.3 + 0.7 * t))[:, None] * back + (_LOWER[k][1] * t)[:, None] * [0.0, 1.0, 0.0]
        corner = 0.5 * (pu[[0, -1]] + pl[[0, -1]])  # (2, 3) left and right corner
        inner = np.arange(1, n - 1)
        ids_up = np.empty(n, np.int64)
        ids_lo = np.empty(n, np.int64)
        ids_up[[0, -1]] = ids_lo[[0, -1]] = nxt + np.arange(2)
        ids_up[inner] = nxt + 2 + np.arange(n - 2)
        ids_lo[inner] = nxt + n + np.arange(n - 2)
        nxt += 2 * n - 2
        ring_ids.append((ids_up, ids_lo))
        verts += [corner, pu[inner], pl[inner]]
        theta += [grid.theta[up[[0, -1]]], grid.theta[up[inner]], grid.theta[lo[inner]]]
        hh += [np.full(2, fg.MOUTH_Y), grid.h[up[inner]], grid.h[lo[inner]]]
        offset += [np.zeros(2), (grid.row[up[inner]] + 0.5) * grid.step, (grid.row[lo[inner]] + 0.5) * grid.step]
        depth += [np.full(2, 0.5 * (_UPPER[k][0] + _LOWER[k][0]) * 0.65), _UPPER[k][0] * (0.3 + 0.7 * t[inner]),
                  _LOWER[k][0] * (0.3 + 0.7 * t[inner])]
        part += [np.full(2, max(_UPPER[k][2], _LOWER[k][2])), np.full(n - 2, _UPPER[k][2]), np.full(n - 2, _LOWER[k][2])]
        mirror += [ids_up[[-1, 0]], ids_up[inner][::-1], ids_lo[inner][::-1]]
    # rings as loops aligned with the slit loop: upper columns left -> right, lower right -> left
    loops = [np.concatenate([up, lo[::-1]])] + [np.concatenate([a, b[::-1]]) for a, b in ring_ids]
    tris = []
    for k in range(len(loops) - 1):  # tube: ring k -> k + 1, reversed along the loop (the face owns a -> b)
        a, b = loops[k], loops[k + 1]
        a1, b1 = np.roll(a, -1), np.roll(b, -1)
        tris += [np.stack([a1, a, b], 1), np.stack([a1, b, b1], 1)]
    uc, lc = ring_ids[-1]  # back wall: the last ring's upper and lower halves, column by column
    tris += [np.stack([uc[1:], uc[:-1], lc[:-1]], 1), np.stack([uc[1:], lc[:-1], lc[1:]], 1)]
    tris = np.concatenate(tris)
    tris = tris[(tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 2] != tris[:, 0])]
    return _Bag(
        verts=np.concatenate(verts),
        theta=np.concatenate(theta),
        h=np.concatenate(hh),
        mouth_offset=np.concatenate(offset),
        depth=np.concatenate(depth),
        part=np.concatenate(part).astype(np.int8),
        triangles=tris,
        mirror=np.concatenate(mirror),
    )
