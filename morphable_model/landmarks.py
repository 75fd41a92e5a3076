"""The 68 iBUG 300-W facial landmarks: names in order, groups and left/right mirror pairs.

"Right"/"left" are the *subject's* sides, as in the iBUG annotation: the subject's right side
appears on the image's left, i.e. at negative x in model space (docs/DESIGN.md: x runs from the
subject's right to the subject's left = image left to image right).

Index layout (0-based):

* 0-16 jaw (0 = subject's right, near the ear; 8 = chin; 16 = subject's left)
* 17-21 right eyebrow (outer -> inner), 22-26 left eyebrow (inner -> outer)
* 27-30 nose bridge (top -> tip), 31-35 lower nose (right nostril wing -> left)
* 36-41 right eye (36 outer corner, clockwise in the image), 42-47 left eye (45 outer corner)
* 48-59 outer lip (48 right mouth corner, 51 top centre, 54 left corner, 57 bottom centre)
* 60-67 inner lip (60 right corner, 62 top centre, 64 left corner, 66 bottom centre)
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "IBUG68_NAMES",
    "GROUPS",
    "FINE_GROUPS",
    "MIRROR_PAIRS",
    "N_LANDMARKS",
    "group_of",
    "mirror_permutation",
    "frontal_template_mm",
]

N_LANDMARKS = 68


def _names() -> tuple[str, ...]:
    n = [f"jaw.{i:02d}" for i in range(17)]
    n += [f"brow.right.{i}" for i in range(5)]
    n += [f"brow.left.{i}" for i in range(5)]
    n += [f"nose.bridge.{i}" for i in range(4)]
    n += [f"nose.base.{i}" for i in range(5)]
    n += [f"eye.right.{i}" for i in range(6)]
    n += [f"eye.left.{i}" for i in range(6)]
    n += [f"lip.outer.{i:02d}" for i in range(12)]
    n += [f"lip.inner.{i}" for i in range(8)]
    return tuple(n)


IBUG68_NAMES: tuple[str, ...] = _names()
"""Name of each of the 68 landmarks, in iBUG order (index i has name IBUG68_NAMES[i])."""

GROUPS: dict[str, range] = {
    "jaw": range(0, 17),
    "brows": range(17, 27),
    "nose": range(27, 36),
    "eyes": range(36, 48),
    "mouth": range(48, 68),
}
"""The five usual landmark groups as index ranges."""

FINE_GROUPS: dict[str, range] = {
    "jaw": range(0, 17),
    "brow.right": range(17, 22),
    "brow.left": range(22, 27),
    "nose.bridge": range(27, 31),
    "nose.base": range(31, 36),
    "eye.right": range(36, 42),
    "eye.left": range(42, 48),
    "lip.outer": range(48, 60),
    "lip.inner": range(60, 68),
}
"""Groups split by side / contour."""


def _mirror_pairs() -> tuple[tuple[int, int], ...]:
    pairs = [(i, 16 - i) for i in range(8)]  # jaw, 8 (chin) maps to itself
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils; 27-30 and 33 on the midline
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lip; 51, 57 midline
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lip; 62, 66 midline
    return tuple(pairs)


MIRROR_PAIRS: tuple[tuple[int, int], ...] = _mirror_pairs()
"""(i, j) pairs swapped by a left/right mirror; unlisted indices lie on the midline."""

MIDLINE: tuple[int, ...] = (8, 27, 28, 29, 30, 33, 51, 57, 62, 66)
"""Indices that a mirror maps to themselves."""


def mirror_permutation() -> np.ndarray:
    """``(68,)`` int64 ``p`` with ``p[i]`` = the index of i's mirror image (an involution)."""
    p = np.arange(N_LANDMARKS, dtype=np.int64)
    for i, j in MIRROR_PAIRS:
        p[i], p[j] = j, i
    return p


def group_of(index: int) -> str:
    """The name of the group in :data:`GROUPS` that holds landmark ``index``."""
    for name, r in GROUPS.items():
        if index in r:
            return name
    raise ValueError(f"index must be in [0, {N_LANDMARKS}), got {index}")


def frontal_template_mm() -> np.ndarray:
    """A hand-built, symmetric frontal 68-point layout ``(68, 2)`` in mm (x right, y up,
    origin at the nose tip), proportioned like an average adult face.

    It is a geometric sketch (ellipse-arc jaw, almond eyes, ...), not a statistical mean; use it
    to place landmarks on a procedural mesh or as a sanity reference in tests. Mirror pairs are
    exactly mirrored (x -> -x) and midline points have x = 0.
    """
    pts = np.zeros((N_LANDMARKS, 2))
    # jaw: lower half of an ellipse from the right ear (0) over the chin (8) to the left ear (16)
    ang = np.linspace(np.pi * 0.97, np.pi * 0.03, 17)  # subject's right (x<0) -> left (x>0)
    pts[0:17, 0] = 70.0 * np.cos(ang)  # cos(~pi) = -1 -> x = -70 at index 0
    pts[0:17, 1] = 5.0 - 75.0 * np.sin(ang)  # y = 5 at the ears, -70 at the chin
    # brows: arcs above the eyes, outer -> inner on the right, inner -> outer on the left
    bx = np.linspace(-55.0, -12.0, 5)
    by = 42.0 + 6.0 * np.sin(np.linspace(0.2, np.pi - 0.6, 5))
    pts[17:22] = np.stack([bx, by], 1)
    pts[22:27] = np.stack([-bx[::-1], by[::-1]], 1)
    # nose bridge (top -> tip) and base (right wing -> left wing)
    pts[27:31, 1] = np.linspace(32.0, 2.0, 4)
    pts[31:36] = [[-13.0, -8.0], [-7.0, -10.0], [0.0, -11.0], [7.0, -10.0], [13.0, -8.0]]

    # eyes: 6 points of an almond, 36 = right outer corner, then upper lid, inner corner, lower lid
    def eye(cx: float, sign: float) -> np.ndarray:
        w, h = 14.0, 5.0
        outer = cx + sign * w  # outer corner is further from the midline
        inner = cx - sign * w
        return np.array(
            [
                [outer, 30.0],
                [cx + sign * w / 3, 30.0 + h],
                [cx - sign * w / 3, 30.0 + h],
                [inner, 30.0],
                [cx - sign * w / 3, 30.0 - h * 0.8],
                [cx + sign * w / 3, 30.0 - h * 0.8],
            ]
        )

    right = eye(-32.0, -1.0)  # outer corner at x = -46
    pts[36:42] = right
    # left eye: 42 inner corner, 43-44 upper lid, 45 outer corner, 46-47 lower lid (mirror map)
    perm = mirror_permutation()
    for i in range(36, 42):
        pts[perm[i]] = [-pts[i, 0], pts[i, 1]]
    # outer lip: 48 right corner, 49-53 upper lip to the left corner 54, 55-59 lower lip back
    mx, my = 25.0, -32.0
    upper = [[-mx, my], [-15.0, my + 7], [-6.0, my + 9], [0.0, my + 7.5], [6.0, my + 9], [15.0, my + 7], [mx, my]]
    lower = [[15.0, my - 8], [6.0, my - 11], [0.0, my - 11.5], [-6.0, my - 11], [-15.0, my - 8]]
    pts[48:55] = upper
    pts[55:60] = lower
    pts[60:65] = [[-19.0, my], [-7.0, my + 3], [0.0, my + 2.5], [7.0, my + 3], [19.0, my]]
    pts[65:68] = [[7.0, my - 3], [0.0, my - 3.5], [-7.0, my - 3]]
    # make the symmetry exact (linspace / cos round-off): copy the right side to the left
    for i, j in MIRROR_PAIRS:
        if pts[i, 0] < 0:
            i, j = j, i  # i is now the left-side (x > 0) point, j its right-side mirror
        pts[i] = [-pts[j, 0], pts[j, 1]]
    pts[list(MIDLINE), 0] = 0.0
    return pts
