"""Albedo (per-vertex linear RGB in [0, 1]) of the built-in face: mean and named modes.

The mean is a medium skin tone with redder lips, darker brows, slightly red cheeks / nose tip,
white sclera (darker and pinker toward the canthi), a brown iris, a black pupil and dark lash
lines along the lid margins. The modes (one std each, RGB offsets) are:
melanin (dominant: light to dark skin), redness, olive/yellow, brow darkness, lip colour, lip
darkness, iris colour, cheek blush, under-eye darkness, beard shadow, nose-tip redness; then
smooth random colour blotches on the skin. Eyes are excluded from the skin modes.

Range: the melanin mode spans light (~0.88, 0.72, 0.62) to dark (~0.36, 0.23, 0.16) skin at
+-3 std; the other modes are small enough that +-3 std samples stay inside [0, 1] (checked by
the tests on random samples; :meth:`MorphableModel.albedo` clips by default anyway).
"""

from __future__ import annotations

import numpy as np

from . import _face_geometry as fg
from ._face_bases import FaceFrame
from ._face_geometry import EYE_U, EYE_Y, MOUTH_Y, gauss, gauss2, smoothstep

SKIN = np.array([0.62, 0.475, 0.39])
LIGHT_SKIN = np.array([0.85, 0.69, 0.59])
DARK_SKIN = 2.0 * SKIN - LIGHT_SKIN  # (0.39, 0.26, 0.19): SKIN is the midpoint
LIP = np.array([0.63, 0.31, 0.30])
BROW = np.array([0.26, 0.18, 0.14])
SCLERA = np.array([0.86, 0.83, 0.80])
IRIS = np.array([0.30, 0.21, 0.17])
PUPIL = np.array([0.03, 0.03, 0.03])
LASH = np.array([0.10, 0.08, 0.07])
IRIS_RADIUS = 5.8
BROW_START, BROW_LENGTH = 15.0, 44.0  # mm of u
PUPIL_RADIUS = 2.0


def eye_parts(f: FaceFrame):
    """Masks (N,) in [0, 1]: whole visible eye (fissure), iris, pupil."""
    fis = fg.fissure_mask(f.u, f.h, edge=0.9)
    iris = np.zeros_like(f.u)
    pupil = np.zeros_like(f.u)
    for sgn in (-1.0, 1.0):
        rho = np.hypot(f.u - sgn * EYE_U, f.h - EYE_Y)
        iris = np.maximum(iris, smoothstep((IRIS_RADIUS - rho) / 1.0 + 0.5))
        pupil = np.maximum(pupil, smoothstep((PUPIL_RADIUS - rho) / 0.9 + 0.5))
    return fis, iris * fis, pupil * fis


def lash_lines(f: FaceFrame) -> np.ndarray:
    """Dark lash line along the upper lid margin (thicker laterally) and a faint one below."""
    out = np.zeros_like(f.u)
    for sgn in (-1.0, 1.0):
        lu = sgn * f.u - EYE_U
        up, lo = fg.lid_curves(lu)
        along = smoothstep((fg.EYE_HALF_WIDTH + 1.5 - np.abs(lu)) / 3.0)
        width = 0.9 + 0.6 * np.clip(lu / fg.EYE_HALF_WIDTH, 0, 1)
        upper = np.exp(-0.5 * ((f.h - up - 0.4) / width) ** 2)
        lower = 0.35 * np.exp(-0.5 * ((f.h - lo + 0.3) / 0.7) ** 2)
        out = np.maximum(out, along * np.maximum(upper, lower))
    return out


def lip_region(f: FaceFrame) -> np.ndarray:
    return np.clip(fg.upper_lip_region(f.u, f.h) + fg.lower_lip_region(f.u, f.h), 0.0, 1.0)


def brow_centre(t: np.ndarray) -> np.ndarray:
    """Height (mm) of the eyebrow's centre line at ``t`` = 0 (medial end, u = BROW_START) .. 1
    (lateral tail, u = BROW_START + BROW_LENGTH): an arch peaking at about two thirds."""
    return 11.0 + 6.5 * np.sin(np.pi * np.clip(0.85 * t + 0.05, 0, 1)) - 3.0 * t


def brow_region(f: FaceFrame) -> np.ndarray:
    """Eyebrow hair: an arched band above each eye, thick medially, tapering laterally."""
    out = np.zeros_like(f.u)
    for sgn in (-1.0, 1.0):
        lu = sgn * f.u  # distance from the midline on this side
        t = (lu - BROW_START) / BROW_LENGTH  # 0 at the medial end, 1 at the lateral end
        centre = brow_centre(t)
        half = 4.0 * (1.0 - 0.6 * np.clip(t, 0, 1))
        along = smoothstep(t / 0.1) * smoothstep((1.0 - t) / 0.2)
        out = np.maximum(out, along * smoothstep((half - np.abs(f.h - centre)) / 2.2 + 0.2))
    return out


def albedo_mean(f: FaceFrame) -> np.ndarray:
    fis, iris, pupil = eye_parts(f)
    lips = lip_region(f)
    brows = brow_region(f)
    red = gauss2(f.u, f.h, 42, -38, 14, 12) + 0.8 * gauss(f.u, f.h, 0, -41, 8, 6)
    skin = SKIN[None, :] + red[:, None] * np.array([0.02, -0.015, -0.01])
    line = np.exp(-0.5 * ((f.h - MOUTH_Y) / 1.2) ** 2) * np.exp(-0.5 * (f.u / (fg.MOUTH_HALF_WIDTH + 1.0)) ** 6)
    # shadowy mouth line and corners (applied below, to skin and lips)
    nostril = gauss2(f.u, f.h, 6.5, -51.0, 3.0, 1.8)
    skin = skin * (1 - 0.5 * np.clip(nostril, 0, 1))[:, None]
    out = (skin * (1 - lips)[:, None] + LIP[None, :] * lips[:, None]) * (1 - 0.35 * line)[:, None]
    out = out * (1 - 0.85 * brows)[:, None] + BROW[None, :] * (0.85 * brows)[:, None]
    # sclera: a little darker and pinker toward the canthi (caruncle at the medial corner)
    corner = np.zeros_like(f.u)
    for sgn in (-1.0, 1.0):
        corner = np.maximum(corner, np.clip(np.abs(sgn * f.u - EYE_U) / fg.EYE_HALF_WIDTH, 0, 1) ** 3)
    sclera = SCLERA[None, :] * (1 - 0.2 * corner)[:, None] + (corner * 0.12)[:, None] * np.array([0.5, -0.1, -0.1])
    eye = sclera * (1 - iris)[:, None] + IRIS[None, :] * (iris - pupil)[:, None] + PUPIL[None, :] * pupil[:, None]
    out = out * (1 - fis)[:, None] + eye * fis[:, None]
    lash = 0.75 * lash_lines(f)
    out = out * (1 - lash)[:, None] + LASH[None, :] * lash[:, None]
    return out


def skin_mask(f: FaceFrame) -> np.ndarray:
    fis, _, _ = eye_parts(f)
    return 1.0 - fis


def albedo_modes(f: FaceFrame) -> dict:
    """Named 1-std albedo fields (N, 3)."""
    skin = skin_mask(f)
    lips = lip_region(f)
    brows = brow_region(f)
    fis, iris, pupil = eye_parts(f)
    # melanin scales the local mean colour: +3 std multiplies it by DARK/SKIN (stays >= 0 even
    # on dark nostrils and brows), -3 std by LIGHT/SKIN; eyes are excluded
    melanin = skin[:, None] * albedo_mean(f) * ((DARK_SKIN / SKIN - 1.0) / 3.0)[None, :]
    modes = {
        "melanin": melanin,
        "redness": (skin * (0.5 + 0.8 * gauss2(f.u, f.h, 42, -38, 16, 14)))[:, None] * np.array([0.014, -0.008, -0.005]),
        "olive": (skin * (1 - lips))[:, None] * np.array([0.004, 0.010, -0.012]),
        "brow_darkness": brows[:, None] * np.array([0.034, 0.026, 0.020]),
        "lip_colour": lips[:, None] * np.array([0.025, -0.020, -0.005]),
        "lip_darkness": lips[:, None] * np.array([-0.025, -0.022, -0.018]),
        "iris_colour": (iris - pupil)[:, None] * np.array([-0.035, 0.0, 0.045]),
        "cheek_blush": (skin * gauss2(f.u, f.h, 44, -42, 13, 11))[:, None] * np.array([0.012, -0.010, -0.005]),
        "under_eye_darkness": (skin * gauss2(f.u, f.h, EYE_U - 2, EYE_Y - 10, 11, 4))[:, None] * np.array([-0.025, -0.025, -0.012]),
        "beard_shadow": (skin * (1 - lips) * _beard(f))[:, None] * np.array([-0.030, -0.025, -0.020]),
        "nose_redness": (skin * gauss(f.u, f.h, 0, -42, 10, 8))[:, None] * np.array([0.022, -0.012, -0.008]),
        "forehead_tone": (skin * smoothstep((f.h - 10) / 50.0))[:, None] * np.array([0.015, 0.013, 0.010]),
    }
    return modes


def _beard(f: FaceFrame) -> np.ndarray:
    chin = smoothstep(-(f.h + 60.0) / 25.0) * smoothstep((np.abs(f.u) - 0.0) / 1.0 + 1.0)
    upper = gauss(f.u, f.h, 0, MOUTH_Y + 12, 22, 4)
    return np.clip(chin * smoothstep((95.0 - np.abs(f.u)) / 20.0) + upper, 0.0, 1.0)
