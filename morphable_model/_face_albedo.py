"""Albedo of the built-in face and head: per-vertex LINEAR reflectance (RGB in [0, 1]), mean and modes.

Units: albedo is linear reflectance, not a display value. A renderer multiplies it by the
irradiance and then encodes for display (sRGB, roughly ``display ~ linear ** (1 / 2.2)``), so a
linear 0.46 shows as ~0.70 (179/255) and a linear 0.05 as ~0.25 (63/255).

The mean is a medium skin tone (the midpoint of the melanin axis) with redder lips, dark brows,
slightly red cheeks / nose tip / ears, an off-white sclera, a hazel iris, a black pupil, dark lash
lines, dark-brown short hair on the scalp (with a streaky hair-like texture), and the mouth
interior: dark-red inner lips, off-white teeth, a red palate and tongue darkening with depth, a
near-black back wall. The modes (one std each, RGB offsets) are:

* ``melanin`` (dominant): multiplies the local mean colour per channel, so that -3 std gives very
  light skin (cheek sRGB ~ 240, 196, 172), +3 std very dark skin (~ 61, 38, 28), -1 / +1 std
  light-medium (203, 165, 144) / medium-dark (153, 123, 106), +2 std dark brown (119, 92, 79); lips and brows scale with it, the hair
  by half as much (dark skin, darker hair), the eyes and the mouth interior not at all;
* skin: redness, olive / yellow, cheek blush, under-eye darkness, beard shadow, nose-tip redness,
  forehead tone; lips: colour, darkness; brows: darkness; iris colour (brown <-> blue-grey);
* hair: lightness (black <-> light brown), warmth (ash <-> red-brown);

then smooth random colour blotches on the skin. Face-local modes fade out on the head.

Range: every mode is small enough that +-3 std samples stay inside [0, 1] (checked by the tests
on random samples; :meth:`MorphableModel.albedo` clips by default anyway).
"""

from __future__ import annotations

import numpy as np

from . import _face_geometry as fg
from ._face_bases import FaceFrame
from ._face_geometry import EYE_U, EYE_Y, MOUTH_Y, gauss, gauss2, smoothstep

SKIN_LIGHT = np.array([0.84, 0.565, 0.42])
"""Linear albedo of very light skin (melanin -3 std)."""
SKIN_DARK = np.array([0.045, 0.020, 0.012])
"""Linear albedo of very dark skin (melanin +3 std)."""
SKIN = 0.5 * (SKIN_LIGHT + SKIN_DARK)
"""Mean skin (0.44, 0.29, 0.22): a medium tone, sRGB ~ (177, 147, 129); with the cheeks' redness ~ (180, 146, 127)."""
LIP = np.array([0.42, 0.16, 0.14])
BROW = np.array([0.05, 0.035, 0.025])
SCLERA = np.array([0.62, 0.575, 0.53])
IRIS = np.array([0.07, 0.055, 0.05])
PUPIL = np.array([0.01, 0.01, 0.01])
LASH = np.array([0.02, 0.015, 0.012])
HAIR = np.array([0.07, 0.048, 0.033])
"""Mean hair: dark brown, sRGB ~ (75, 62, 51)."""
TEETH = np.array([0.60, 0.54, 0.42])
INNER_LIP = np.array([0.34, 0.085, 0.085])
PALATE = np.array([0.30, 0.07, 0.07])
TONGUE = np.array([0.42, 0.13, 0.12])
CAVITY = np.array([0.02, 0.006, 0.006])
IRIS_RADIUS = 5.8
BROW_START, BROW_LENGTH = 15.0, 44.0  # mm of u
PUPIL_RADIUS = 2.0


def eye_parts(f: FaceFrame):
    """Masks (N,) in [0, 1]: whole visible eye (fissure), iris, pupil."""
    fis = fg.fissure_mask(f.u, f.h, edge=0.9) * (f.bag_part == 0)
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


def hair_texture(f: FaceFrame) -> np.ndarray:
    """(N,) brightness factor ~ 1 +- 0.2 of the hair: streaks along the hair's flow (front to back
    and down), a fixed pseudo-random value per ~4 mm across the flow, slowly varying along it."""
    across = f.theta * 97.0 + 0.02 * f.h  # changes fast across the flow (around the head)
    along = 0.035 * f.h  # and slowly along it
    n = np.sin(across * 1.7 + np.sin(along) * 2.0) * np.sin(across * 0.77 + 1.3 + along) + 0.5 * np.sin(across * 3.1 - along)
    return 1.0 + 0.14 * n


def mouth_interior(f: FaceFrame) -> np.ndarray:
    """(N, 3) colour of the mouth interior by part, darkening with depth (the cavity's shadow)."""
    upper = f.mouth_offset > 0
    deep = np.exp(-f.bag_depth / 22.0)[:, None]
    out = np.zeros((f.u.shape[0], 3))
    part = f.bag_part
    out[part == 1] = INNER_LIP
    out[part == 2] = TEETH * np.where(f.bag_depth[part == 2] > 6.0, 0.8, 1.0)[:, None]
    inside = part == 3
    out[inside] = (np.where(upper[inside, None], PALATE, TONGUE) * deep[inside])
    out[part == 4] = CAVITY
    return out


def albedo_mean(f: FaceFrame) -> np.ndarray:
    fis, iris, pupil = eye_parts(f)
    lips = lip_region(f)
    brows = brow_region(f)
    red = gauss2(f.u, f.h, 42, -38, 14, 12) + 0.8 * gauss(f.u, f.h, 0, -41, 8, 6)
    skin = SKIN[None, :] + red[:, None] * np.array([0.025, -0.012, -0.008]) + f.ear[:, None] * np.array([0.03, -0.01, -0.01])
    line = np.exp(-0.5 * ((f.h - MOUTH_Y) / 1.2) ** 2) * np.exp(-0.5 * (f.u / (fg.MOUTH_HALF_WIDTH + 1.0)) ** 6)
    # shadowy mouth line and corners (applied below, to skin and lips)
    nostril = gauss2(f.u, f.h, 6.5, -51.0, 3.0, 1.8)
    skin = skin * (1 - 0.6 * np.clip(nostril, 0, 1))[:, None]
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
    hair = f.hair[:, None]
    out = out * (1 - hair) + hair * HAIR[None, :] * hair_texture(f)[:, None]
    bag = (f.bag_part > 0)[:, None]
    return np.where(bag, mouth_interior(f), out)


def skin_mask(f: FaceFrame) -> np.ndarray:
    """1 on skin (face, lips, brows, head, ears, neck), 0 on the eyes, hair and mouth interior."""
    fis, _, _ = eye_parts(f)
    return (1.0 - fis) * (1.0 - f.hair) * (f.bag_part == 0)


def albedo_modes(f: FaceFrame) -> dict:
    """Named 1-std albedo fields (N, 3); the face-local ones fade out on the head."""
    skin = skin_mask(f)
    local = skin * f.fade_id  # face-local skin modes
    lips = lip_region(f) * (f.bag_part == 0)
    brows = brow_region(f)
    fis, iris, pupil = eye_parts(f)
    # melanin scales the local mean colour: +3 std multiplies it by SKIN_DARK / SKIN (stays >= 0
    # even on dark nostrils and brows), -3 std by SKIN_LIGHT / SKIN; the hair by half as much
    mean = albedo_mean(f)
    melanin = (skin + 0.5 * f.hair)[:, None] * mean * ((SKIN_DARK / SKIN - 1.0) / 3.0)[None, :]
    modes = {
        "melanin": melanin,
        # hue modes are additive, so they are kept small: at the darkest skin (~0.02 in G) they still
        # move a channel by only ~20 % per std
        "redness": (skin * (0.5 + 0.8 * gauss2(f.u, f.h, 42, -38, 16, 14)))[:, None] * np.array([0.0085, -0.0025, -0.002]),
        "olive": (skin * (1 - lips))[:, None] * np.array([0.001, 0.002, -0.0012]),
        "hair_lightness": f.hair[:, None] * np.array([0.0225, 0.0155, 0.0105]),
        "hair_warmth": f.hair[:, None] * np.array([0.006, 0.0, -0.004]),
        "brow_darkness": brows[:, None] * np.array([0.012, 0.008, 0.006]),
        "lip_colour": lips[:, None] * np.array([0.025, -0.012, -0.002]),
        "lip_darkness": lips[:, None] * np.array([-0.03, -0.012, -0.010]),
        "iris_colour": (iris - pupil)[:, None] * np.array([-0.015, 0.004, 0.016]),
        "cheek_blush": (local * gauss2(f.u, f.h, 44, -42, 13, 11))[:, None] * np.array([0.008, -0.003, -0.002]),
        "under_eye_darkness": (local * gauss2(f.u, f.h, EYE_U - 2, EYE_Y - 10, 11, 4))[:, None] * np.array([-0.010, -0.006, -0.004]),
        "beard_shadow": (local * (1 - lips) * _beard(f))[:, None] * np.array([-0.012, -0.006, -0.004]),
        "nose_redness": (local * gauss(f.u, f.h, 0, -42, 10, 8))[:, None] * np.array([0.010, -0.003, -0.002]),
        "forehead_tone": (local * smoothstep((f.h - 10) / 50.0))[:, None] * np.array([0.010, 0.006, 0.004]),
    }
    return modes


def _beard(f: FaceFrame) -> np.ndarray:
    chin = smoothstep(-(f.h + 60.0) / 25.0) * smoothstep((np.abs(f.u) - 0.0) / 1.0 + 1.0)
    upper = gauss(f.u, f.h, 0, MOUTH_Y + 12, 22, 4)
    return np.clip(chin * smoothstep((95.0 - np.abs(f.u)) / 20.0) + upper, 0.0, 1.0)
