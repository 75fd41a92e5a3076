"""Procedural fine-scale facial detail (ground truth for FineNet).

Detail is a scalar displacement (mm, negative = into the skin) per model vertex, applied along the
coarse shape's vertex normals: ``detailed = coarse + displacement[:, None] * normals(coarse)``.

The displacement of a sample is a weighted sum of a fixed *bank* of unit-amplitude fields built
once per model on its mean shape (so wrinkles follow the face when identity/expression change):

- ``forehead``: 3-5 horizontal, slightly wavy creases above the brows (4 variants),
- ``crows_right`` / ``crows_left``: 3-5 creases radiating from the outer eye corners (3 variants each),
- ``nasolabial``: a fold from each nose wing past the mouth corner (3 variants),
- ``pores``: high-pass per-vertex noise over the face (3 variants).

Per sample, each family is present with probability :data:`PRESENCE`, picks one variant and gets an
amplitude ~ U(0, 1) * :data:`MAX_AMPLITUDE_MM` * ``detail_scale``. Anchors come from the model's
68 landmarks (iBUG order); models without landmarks use bounding-box proportions.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.sparse

FAMILIES = ("forehead", "crows_right", "crows_left", "nasolabial", "pores")
N_VARIANTS = {"forehead": 4, "crows_right": 3, "crows_left": 3, "nasolabial": 3, "pores": 3}
MAX_AMPLITUDE_MM = {"forehead": 1.6, "crows_right": 1.2, "crows_left": 1.2, "nasolabial": 2.4, "pores": 0.12}
PRESENCE = {"forehead": 0.8, "crows_right": 0.7, "crows_left": 0.7, "nasolabial": 0.8, "pores": 1.0}


# Crease half-width multipliers (x the base half-width of about a millimetre) of each bank version.
# Version 1 (shards written before the "detail_bank_version" attribute): creases ~1 mm wide, under a
# pixel at 128-224 px, invisible in the renders (benchmarks/detail_visibility.py). Version 2: folds
# a few pixels wide at 128 px, so that they shade.
CREASE_WIDTH = {1: {"forehead": 1.0, "crows": 1.0, "nasolabial": 1.0},
                2: {"forehead": 2.0, "crows": 1.6, "nasolabial": 1.6}}
BANK_VERSION = 2  # what synth-cli render writes (shard attribute "detail_bank_version")


def cavity_occlusion(disp: np.ndarray, strength: float) -> np.ndarray:
    """Per-vertex light fraction ``(N,)`` float32 of a crease ``disp`` mm deep (negative = into the
    skin): ``exp(strength * min(disp, 0))``, 1 on flat or raised skin. A cheap ambient occlusion: a
    groove sees less of the sky and of the key light the deeper it is (``strength`` per mm)."""
    return np.exp(np.float32(strength) * np.minimum(np.asarray(disp, np.float32), 0.0)).astype(np.float32)


def layout() -> list[tuple[str, int]]:
    """``(family, variant)`` of each bank field, in bank order."""
    return [(f, k) for f in FAMILIES for k in range(N_VARIANTS[f])]


N_FIELDS = len(layout())


@dataclasses.dataclass(frozen=True)
class DetailBank:
    """Unit-amplitude displacement fields ``(F, N)`` float32 of one model, in :func:`layout` order."""

    fields: np.ndarray
    names: tuple[str, ...]


def sample_detail_weights(rng: np.random.Generator, n_fields: int = N_FIELDS, scale: float = 1.0) -> np.ndarray:
    """Amplitudes ``(F,)`` float32 (mm) of the bank fields for one sample (see module doc)."""
    if n_fields != N_FIELDS:
        raise ValueError(f"n_fields must be {N_FIELDS} (the bank layout), got {n_fields}")
    w = np.zeros(N_FIELDS, dtype=np.float32)
    start = 0
    for fam in FAMILIES:
        n = N_VARIANTS[fam]
        present = rng.uniform() < PRESENCE[fam]
        variant = int(rng.integers(0, n))
        amp = rng.uniform() * MAX_AMPLITUDE_MM[fam] * scale
        if present:
            w[start + variant] = amp
        start += n
    return w


def displacement(bank: DetailBank, weights: np.ndarray) -> np.ndarray:
    """Per-vertex displacement ``(N,)`` mm: ``weights (F,) @ fields (F, N)``."""
    if np.shape(weights) != (bank.fields.shape[0],):
        raise ValueError(f"weights must be ({bank.fields.shape[0]},), got {np.shape(weights)}")
    return np.asarray(weights, dtype=np.float32) @ bank.fields  # (F,) @ (F, N) -> (N,)


def apply_detail(coarse: np.ndarray, normals: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """``coarse (N,3) + disp (N,)[:, None] * normals (N,3)`` -> detailed vertices ``(N, 3)``."""
    return coarse + disp[:, None] * normals


# ---------------------------------------------------------------------------------- bank building
def _anchors(model) -> dict[str, np.ndarray]:
    """Named 3-D anchor points on the mean shape (from landmarks, else bounding-box proportions)."""
    v = np.asarray(model.mean_shape, dtype=np.float64)
    lm = getattr(model, "landmarks", None)
    if lm is not None and len(lm) == 68:
        p = v[np.asarray(lm)]
        brow = p[17:27]
        return {
            "brow_top": np.array([brow[:, 0].mean(), brow[:, 1].max(), brow[:, 2].mean()]),
            "brow_left_x": np.array(brow[:, 0].min()), "brow_right_x": np.array(brow[:, 0].max()),
            "eye_outer_r": p[36], "eye_outer_l": p[45],
            "nose_wing_r": p[31], "nose_wing_l": p[35],
            "mouth_r": p[48], "mouth_l": p[54],
        }
    lo, hi = v.min(axis=0), v.max(axis=0)
    c, s = (lo + hi) / 2, hi - lo

    def at(fx: float, fy: float) -> np.ndarray:
        return np.array([c[0] + fx * s[0], c[1] + fy * s[1], hi[2] - 0.2 * s[2]])

    return {
        "brow_top": at(0.0, 0.15), "brow_left_x": np.array(c[0] - 0.3 * s[0]), "brow_right_x": np.array(c[0] + 0.3 * s[0]),
        "eye_outer_r": at(-0.3, 0.05), "eye_outer_l": at(0.3, 0.05),
        "nose_wing_r": at(-0.1, -0.15), "nose_wing_l": at(0.1, -0.15),
        "mouth_r": at(-0.18, -0.3), "mouth_l": at(0.18, -0.3),
    }


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _window(t: np.ndarray, lo: float, hi: float, ramp: float) -> np.ndarray:
    """1 inside [lo, hi], smooth ramps of width ``ramp`` to 0 outside."""
    return _smoothstep((t - lo) / ramp + 1.0) * _smoothstep((hi - t) / ramp + 1.0)


def _edge_length(model) -> float:
    t = np.asarray(model.triangles)
    v = np.asarray(model.mean_shape, dtype=np.float64)
    e = np.linalg.norm(v[t[:, 0]] - v[t[:, 1]], axis=-1)
    return float(np.median(e))


def _neighbour_mean(values: np.ndarray, triangles: np.ndarray, n: int) -> np.ndarray:
    """Mean of each vertex's 1-ring neighbours."""
    t = np.asarray(triangles)
    rows = np.concatenate([t[:, 0], t[:, 1], t[:, 2], t[:, 1], t[:, 2], t[:, 0]])
    cols = np.concatenate([t[:, 1], t[:, 2], t[:, 0], t[:, 0], t[:, 1], t[:, 2]])
    adj = scipy.sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    deg = np.maximum(np.asarray(adj.sum(axis=1)).ravel(), 1.0)
    return (adj @ values) / deg


def build_detail_bank(model, seed: int = 0, version: int = BANK_VERSION) -> DetailBank:
    """The bank of unit-amplitude displacement fields for ``model`` (deterministic for ``seed``) in
    the crease widths of bank ``version`` (:data:`CREASE_WIDTH`)."""
    if version not in CREASE_WIDTH:
        raise ValueError(f"detail bank version must be one of {sorted(CREASE_WIDTH)}, got {version!r}")
    widen = CREASE_WIDTH[version]
    rng = np.random.default_rng([seed, 1234])
    v = np.asarray(model.mean_shape, dtype=np.float64)
    n = v.shape[0]
    x, y = v[:, 0], v[:, 1]
    a = _anchors(model)
    # crease half-width: about a millimetre, never narrower than the mesh can carry
    w = max(0.8, 0.9 * _edge_length(model))
    normals = model.vertex_normals() if hasattr(model, "vertex_normals") else None
    front = np.ones(n) if normals is None else _smoothstep((np.asarray(normals)[:, 2] + 0.2) / 0.5)
    if getattr(model, "face_region", None) is not None:
        front = front * np.asarray(model.face_region, dtype=np.float64)
    fields: list[np.ndarray] = []

    # forehead: horizontal wavy creases above the brows
    bx0, bx1 = float(a["brow_left_x"]), float(a["brow_right_x"])
    half = (bx1 - bx0) / 2.0
    xc = (bx0 + bx1) / 2.0
    y0 = a["brow_top"][1]
    for _ in range(N_VARIANTS["forehead"]):
        n_lines = int(rng.integers(3, 6))
        spacing = rng.uniform(6.0, 10.0)
        f = np.zeros(n)
        for k in range(n_lines):
            base = y0 + rng.uniform(8.0, 14.0) + k * spacing
            wave = rng.uniform(0.5, 2.5) * np.sin(2 * math.pi * (x - xc) / rng.uniform(40, 90) + rng.uniform(0, 6.3))
            length = half * rng.uniform(0.5, 1.0)
            shift = rng.uniform(-0.2, 0.2) * half
            crease = np.exp(-(((y - base - wave) / (w * widen["forehead"])) ** 2))
            f -= crease * _window(x - xc - shift, -length, length, 6.0)
        fields.append(f * front)

    # crow's feet: rays from the outer eye corners, pointing away from the face centre
    for name, side in (("crows_right", -1.0), ("crows_left", 1.0)):
        corner = a["eye_outer_r"] if side < 0 else a["eye_outer_l"]
        dx, dy = (x - corner[0]) * side, y - corner[1]
        r = np.hypot(dx, dy)
        theta = np.arctan2(dy, dx)
        for _ in range(N_VARIANTS[name]):
            f = np.zeros(n)
            for ang in np.radians(np.sort(rng.uniform(-45, 40, int(rng.integers(3, 6))))):
                along = r * np.cos(theta - ang)
                across = r * np.sin(theta - ang)
                crease = np.exp(-((across / (w * widen["crows"])) ** 2))
                f -= crease * _window(along, rng.uniform(4, 7), rng.uniform(14, 24), 3.0)
            fields.append(f * front)

    # nasolabial folds: a bent curve from each nose wing past the mouth corner
    for _ in range(N_VARIANTS["nasolabial"]):
        f = np.zeros(n)
        width = w * widen["nasolabial"] * rng.uniform(1.5, 2.5)
        for wing, mouth, side in ((a["nose_wing_r"], a["mouth_r"], -1.0), (a["nose_wing_l"], a["mouth_l"], 1.0)):
            p0 = wing[:2] + np.array([side * rng.uniform(3, 6), rng.uniform(-2, 2)])
            p2 = mouth[:2] + np.array([side * rng.uniform(4, 8), -rng.uniform(6, 14)])
            p1 = (p0 + p2) / 2 + np.array([side * rng.uniform(3, 7), 0.0])  # bulge outward
            ts = np.linspace(0, 1, 64)[:, None]
            curve = (1 - ts) ** 2 * p0 + 2 * (1 - ts) * ts * p1 + ts ** 2 * p2  # (64, 2) quadratic Bezier
            d2 = ((v[:, None, :2] - curve[None]) ** 2).sum(-1)  # (N, 64)
            j = d2.argmin(axis=1)
            taper = np.sin(np.pi * np.clip(ts[j, 0], 0, 1)) ** 0.5
            f -= np.exp(-d2[np.arange(n), j] / width ** 2) * taper
        fields.append(f * front)

    # pores: high-pass vertex noise (noise minus its 1-ring mean), normalised
    for _ in range(N_VARIANTS["pores"]):
        noise = rng.standard_normal(n)
        hp = noise - _neighbour_mean(noise, model.triangles, n)
        fields.append(hp * front)

    out = np.stack(fields).astype(np.float32)  # (F, N)
    peak = np.abs(out).max(axis=1, keepdims=True)
    out = np.divide(out, peak, out=np.zeros_like(out), where=peak > 0)
    out.setflags(write=False)
    names = tuple(f"{fam}{k}" for fam, k in layout())
    return DetailBank(fields=out, names=names)
