"""Spherical-harmonics lighting: the SH basis shared by the renderer and the training loss,
Lambertian shading, the Blinn-Phong specular term of the lighting's dominant light, and the
lighting priors used by the synthetic-data generator.

Convention (docs/DESIGN.md): ``sh_basis(n)`` maps unit normals ``(..., 3)`` (camera frame) to the
9 real SH basis functions ``(..., 9)`` in the order

    [Y00, Y1-1(y), Y10(z), Y11(x), Y2-2(xy), Y2-1(yz), Y20(3z^2-1), Y21(xz), Y22(x^2-y^2)]

with the real SH constants. Lighting coefficients ``sh`` are ``(9, 3)`` *irradiance*
coefficients (the Lambertian convolution is folded in), so ``shading = sh_basis(n) @ sh`` and
the Lambertian radiance is ``clip(albedo * shading, 0, 1)`` in linear RGB (:func:`shade`). The
renderer adds a highlight, :func:`blinn_phong` of :func:`dominant_light` (``linear = clip(albedo *
shading + specular, 0, 1)``), which the Lambertian model of the losses does not explain, and
encodes the result to sRGB (:mod:`synth.color`).

Every lighting mode (``sh9``, ``ambient``, ``point``) produces such a ``(9, 3)`` array, so the
renderer and the training loss always use exactly the same shading formula. The prior is near real
light: near-white key + ambient, a modest warm <-> cool spread, rarely a strongly coloured light
(:class:`LightingConfig`).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

# Real SH normalisation constants.
C0 = 0.5 / math.sqrt(math.pi)  # 0.282095  Y00
C1 = math.sqrt(3.0 / (4.0 * math.pi))  # 0.488603  Y1m
C2 = 0.5 * math.sqrt(15.0 / math.pi)  # 1.092548  Y2-2, Y2-1, Y21
C3 = 0.25 * math.sqrt(5.0 / math.pi)  # 0.315392  Y20
C4 = 0.25 * math.sqrt(15.0 / math.pi)  # 0.546274  Y22

# Lambertian (clamped cosine) kernel per band, Ramamoorthi & Hanrahan 2001: A0 = pi,
# A1 = 2 pi / 3, A2 = pi / 4. Irradiance coefficient = A_l * radiance coefficient.
LAMBERT_BAND = (math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0)
_BAND_OF = (0, 1, 1, 1, 2, 2, 2, 2, 2)

LIGHT_MODES = ("sh9", "ambient", "point")


def sh_basis(normals):
    """The 9 real SH basis functions at unit ``normals`` ``(..., 3)`` -> ``(..., 9)``.

    Works on numpy arrays and torch tensors (autograd-friendly, same dtype/device as the input).
    Normals are used as given (not re-normalised); zero normals give ``[C0, 0, ..., -C3, 0]``.
    """
    if normals.shape[-1:] != (3,):
        raise ValueError(f"normals must be (..., 3), got {tuple(normals.shape)}")
    x = normals[..., 0]
    y = normals[..., 1]
    z = normals[..., 2]
    one = x * 0 + 1  # same type/dtype/device as the input
    terms = [
        C0 * one,
        C1 * y,
        C1 * z,
        C1 * x,
        C2 * x * y,
        C2 * y * z,
        C3 * (3.0 * z * z - 1.0),
        C2 * x * z,
        C4 * (x * x - y * y),
    ]
    if isinstance(normals, np.ndarray):
        return np.stack(terms, axis=-1)
    import torch  # only reached with torch input

    return torch.stack(terms, dim=-1)


def sh_basis_reference(normals: np.ndarray) -> np.ndarray:
    """Slow reference: real SH from the spherical angles via scipy's complex ``Y_l^m``.

    Real SH: ``Y_l0 = Re Y_l^0``, ``Y_lm = sqrt(2) (-1)^m Re Y_l^m`` (m > 0),
    ``Y_l-m = sqrt(2) (-1)^m Im Y_l^m`` (m > 0). Used by the tests to check :func:`sh_basis`.
    """
    from scipy.special import sph_harm_y  # scipy >= 1.15

    n = np.asarray(normals, dtype=np.float64)
    if n.shape[-1:] != (3,):
        raise ValueError(f"normals must be (..., 3), got {n.shape}")
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    theta = np.arccos(np.clip(n[..., 2], -1.0, 1.0))  # polar angle from +z
    phi = np.arctan2(n[..., 1], n[..., 0])  # azimuth from +x towards +y

    def real(l: int, m: int) -> np.ndarray:
        if m == 0:
            return sph_harm_y(l, 0, theta, phi).real
        ylm = sph_harm_y(l, abs(m), theta, phi)
        sign = (-1.0) ** abs(m)
        return math.sqrt(2.0) * sign * (ylm.real if m > 0 else ylm.imag)

    order = [(0, 0), (1, -1), (1, 0), (1, 1), (2, -2), (2, -1), (2, 0), (2, 1), (2, 2)]
    return np.stack([real(l, m) for l, m in order], axis=-1)


def shade(albedo, normals, sh):
    """Lambertian SH shading: ``clip(albedo * (sh_basis(normals) @ sh), 0, 1)``.

    ``albedo (..., 3)``, ``normals (..., 3)`` unit, camera frame, ``sh (9, 3)`` -> ``(..., 3)``.
    numpy or torch (all inputs the same kind).
    """
    if tuple(sh.shape) != (9, 3):
        raise ValueError(f"sh must be (9, 3), got {tuple(sh.shape)}")
    if albedo.shape[-1:] != (3,):
        raise ValueError(f"albedo must be (..., 3), got {tuple(albedo.shape)}")
    shading = sh_basis(normals) @ sh  # (..., 9) @ (9, 3) -> (..., 3)
    out = albedo * shading
    if isinstance(out, np.ndarray):
        return np.clip(out, 0.0, 1.0)
    return out.clamp(0.0, 1.0)


# Rec. 709 luminance weights (linear RGB): how much each channel's band-1 vector counts for the direction
LUMA = (0.2126, 0.7152, 0.0722)


def dominant_light(sh):
    """The distant light that explains the band-1 (linear) part of SH lighting ``sh (..., 9, 3)``.

    For :func:`directional_sh` ``(d, c)`` the band-1 coefficients of channel k are
    ``A1 C1 c_k (d_x, d_y, d_z)`` (at indices 3, 1, 2), so this returns exactly ``d`` and ``c``:
    ``direction (..., 3)`` = the luminance-weighted band-1 vector, normalised (towards the light,
    camera frame; ``+z`` where band 1 vanishes), ``color (..., 3)`` = each channel's band-1 vector
    projected on it, ``/ (A1 C1)``, at least 0 (the light's irradiance on a surface facing it; 0 for
    ambient-only lighting). numpy or torch.
    """
    if tuple(sh.shape[-2:]) != (9, 3):
        raise ValueError(f"sh must be (..., 9, 3), got {tuple(sh.shape)}")
    scale = LAMBERT_BAND[1] * C1
    b = sh[..., [3, 1, 2], :] / scale  # band-1 vectors per channel: (..., 3 coords x/y/z, 3 channels)
    if isinstance(sh, np.ndarray):
        v = b @ np.asarray(LUMA, b.dtype)  # (..., 3, 3) @ (3,) -> (..., 3)
        norm = np.linalg.norm(v, axis=-1, keepdims=True)
        ok = norm > 1e-9
        up = np.zeros_like(v)
        up[..., 2] = 1.0
        direction = np.where(ok, v / np.where(ok, norm, 1.0), up)
        color = np.maximum((b * direction[..., :, None]).sum(-2), 0.0)  # (..., 3, 3) * (..., 3, 1) -> (..., 3)
        return direction, color
    import torch

    v = b @ b.new_tensor(LUMA)
    norm = v.norm(dim=-1, keepdim=True)
    ok = norm > 1e-9
    up = torch.zeros_like(v)
    up[..., 2] = 1.0
    direction = torch.where(ok, v / torch.where(ok, norm, torch.ones_like(norm)), up)
    color = (b * direction[..., :, None]).sum(-2).clamp(min=0.0)
    return direction, color


def view_directions(uv, intrinsics, projection: str = "perspective"):
    """Unit vectors ``(..., 3)`` from the surface seen at pixel points ``uv (..., 2)`` towards the
    camera (camera frame): the reversed pixel ray ``normalise((cx - u) / fx, (v - cy) / fy, 1)`` for
    perspective (docs/DESIGN.md projection), ``(0, 0, 1)`` for weak perspective. numpy or torch
    (``intrinsics (3, 3)`` of the same kind or numpy)."""
    if uv.shape[-1:] != (2,):
        raise ValueError(f"uv must be (..., 2), got {tuple(uv.shape)}")
    if tuple(intrinsics.shape) != (3, 3):
        raise ValueError(f"intrinsics must be (3, 3), got {tuple(intrinsics.shape)}")
    u, v = uv[..., 0], uv[..., 1]
    one = u * 0 + 1  # same kind / dtype / device as uv
    if projection == "perspective":
        x, y = (intrinsics[0, 2] - u) / intrinsics[0, 0], (v - intrinsics[1, 2]) / intrinsics[1, 1]
    else:
        x, y = u * 0, u * 0
    if isinstance(uv, np.ndarray):
        out = np.stack([x, y, one], axis=-1)
        return out / np.linalg.norm(out, axis=-1, keepdims=True)
    import torch

    out = torch.stack([x, y, one], dim=-1)
    return out / out.norm(dim=-1, keepdim=True)


def blinn_phong(normals, view, light_dir, light_color, strength, shininess):
    """Blinn-Phong specular radiance ``(..., 3)``, linear RGB:

        strength * light_color * max(0, n . h) ** shininess * [n . l > 0],   h = normalise(l + v)

    ``normals (..., 3)`` and ``view (..., 3)`` unit (surface -> camera), ``light_dir (3,)`` unit
    (towards the light), ``light_color (3,)`` (its irradiance, :func:`dominant_light`), ``strength``
    and ``shininess`` scalars. numpy or torch (all inputs the same kind).

    The Lambertian SH model of :func:`shade` (and of any loss built on it) does not contain this
    term: a shape-from-shading loss must treat specular pixels as outliers (robust loss / masking).
    """
    if normals.shape[-1:] != (3,) or view.shape[-1:] != (3,):
        raise ValueError(f"normals and view must be (..., 3), got {tuple(normals.shape)}, {tuple(view.shape)}")
    h = view + light_dir  # (..., 3)
    if isinstance(normals, np.ndarray):
        h = h / np.maximum(np.linalg.norm(h, axis=-1, keepdims=True), 1e-12)
        nh = np.maximum((normals * h).sum(-1), 0.0)
        lit = (normals * light_dir).sum(-1) > 0
        lobe = np.where(lit, nh ** shininess, 0.0) * strength
        return lobe[..., None] * light_color  # (..., 1) * (3,)
    import torch

    h = h / h.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    nh = (normals * h).sum(-1).clamp(min=0.0)
    lit = (normals * light_dir).sum(-1) > 0
    lobe = torch.where(lit, nh ** shininess, torch.zeros_like(nh)) * strength
    return lobe[..., None] * light_color


def directional_sh(direction, color) -> np.ndarray:
    """Irradiance SH ``(9, 3)`` of a distant light from unit ``direction`` (pointing *towards*
    the light, camera frame) with RGB intensity ``color``: the order-2 projection of
    ``color * max(0, n . direction)`` (``L_lm = color * Y_lm(direction)``, times ``A_l``)."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    y = sh_basis(d)  # (9,)
    a = np.array([LAMBERT_BAND[b] for b in _BAND_OF])  # (9,)
    return (a * y)[:, None] * np.asarray(color, dtype=np.float64)[None, :]  # (9, 1) * (1, 3)


def ambient_sh(color) -> np.ndarray:
    """Irradiance SH ``(9, 3)`` of a constant irradiance ``color`` (RGB): only Y00 is non-zero."""
    out = np.zeros((9, 3))
    out[0] = np.asarray(color, dtype=np.float64) / C0
    return out


# Colour of a light as log-gains on linear RGB (normalised to unit luminance afterwards):
# WARM_AXIS: a blackbody-like warm <-> cool axis (t = 1 ~ a 3000 K lamp seen with daylight white
# balance: R/G x1.4, B/G x0.57; t = -0.4 ~ 10 000 K shade); TINT_AXIS: green <-> magenta.
WARM_AXIS = np.array([0.34, 0.0, -0.56])
TINT_AXIS = np.array([-0.5, 1.0, -0.5])
LUMINANCE = np.array([0.2126, 0.7152, 0.0722])  # Rec. 709 / sRGB luminance of linear RGB


def light_color(warm: float, tint: float = 0.0, extra=None) -> np.ndarray:
    """RGB ``(3,)`` of unit luminance: ``exp(warm * WARM_AXIS + tint * TINT_AXIS + extra)`` normalised."""
    log_gain = warm * WARM_AXIS + tint * TINT_AXIS + (0.0 if extra is None else np.asarray(extra, float))
    c = np.exp(log_gain)
    return c / float(LUMINANCE @ c)


@dataclasses.dataclass
class LightingConfig:
    """Prior over the lighting; all colours linear RGB. Defaults (see :func:`sample_sh`):

    * ambient irradiance a ~ U(0.2, 0.7) and one distant key light of irradiance k ~ U(0.3, 1.2)
      from the front/top (azimuth within +-60 deg of the optical axis, elevation -10..60 deg):
      key-to-ambient ratios from ~0.4 (overcast, flat) to 6 (a hard studio key; a least-squares SH
      fit to scikit-image's astronaut photo gives ~5, scripts/fit_photo_lighting.py);
    * colours near white: each light's colour is ``light_color(warm, tint)`` with the key's
      warm <-> cool value ~ N(0, 0.18) (2 std: R/G x1.13, B/G x0.82, a mild tungsten / shade cast
      left after white balance), the ambient's = 0.5 x the key's + N(0, 0.12), and a green <->
      magenta tint ~ N(0, 0.025) each (2 std: G/R x1.08 - rare and small, like real white balance);
    * with probability 0.05 one of the two lights is strongly coloured (a random hue at log-chroma
      0.4..1.0: neon, stage or sunset light);
    * ``sh9`` adds low-frequency environment variation: Gaussian noise (std 0.06 x ambient / C0)
      on the 9 coefficients, the same for R, G, B (brightness, not colour), plus 1/8 of that per
      channel; draws whose shading goes negative on the camera-facing hemisphere are redrawn.
    """

    mode: str = "sh9"  # --lights: sh9 | ambient | point
    ambient: tuple[float, float] = (0.2, 0.7)  # range of the ambient irradiance
    intensity: tuple[float, float] = (0.3, 1.2)  # range of the directional (key) light's irradiance
    elevation_deg: tuple[float, float] = (-10.0, 60.0)  # key light elevation above the horizon (+y up)
    azimuth_deg: float = 60.0  # key light azimuth |angle| from the optical axis (+z, towards camera)
    warm_std: float = 0.18  # std of the key light's warm <-> cool value (see light_color)
    tint_std: float = 0.025  # std of each light's green <-> magenta value
    strong_color: float = 0.05  # probability that one light is strongly coloured
    sh_noise: float = 0.06  # sh9 only: std of extra noise on the 9 coefficients (x ambient / C0)

    def __post_init__(self) -> None:
        if self.mode not in LIGHT_MODES:
            raise ValueError(f"--lights must be one of {', '.join(LIGHT_MODES)}, got {self.mode!r}")
        for name in ("ambient", "intensity", "elevation_deg"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name} range must be (lo, hi) with lo <= hi, got {(lo, hi)}")
        if self.ambient[0] < 0 or self.intensity[0] < 0:
            raise ValueError("ambient and intensity ranges must be >= 0")
        for name in ("warm_std", "tint_std", "sh_noise"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.strong_color <= 1.0:
            raise ValueError(f"strong_color must be a probability in [0, 1], got {self.strong_color}")


def sample_light_colors(rng: np.random.Generator, config: LightingConfig) -> tuple[np.ndarray, np.ndarray]:
    """Colours ``(ambient (3,), key (3,))`` of unit luminance from the prior of :class:`LightingConfig`."""
    c = config
    warm_key = c.warm_std * rng.standard_normal()
    warm_amb = 0.5 * warm_key + (2.0 / 3.0) * c.warm_std * rng.standard_normal()
    tints = c.tint_std * rng.standard_normal(2)
    strong = rng.uniform() < c.strong_color
    which = int(rng.integers(2))  # 0: ambient, 1: key
    hue = rng.uniform(0.0, 2.0 * math.pi)
    size = rng.uniform(0.4, 1.0)
    extra = [None, None]
    if strong:  # a direction in the log-chroma plane (orthogonal to grey), unit length
        e1 = np.array([1.0, -1.0, 0.0]) / math.sqrt(2.0)
        e2 = np.array([1.0, 1.0, -2.0]) / math.sqrt(6.0)
        extra[which] = size * (math.cos(hue) * e1 + math.sin(hue) * e2)
    return light_color(warm_amb, tints[0], extra[0]), light_color(warm_key, tints[1], extra[1])


def sample_sh(rng: np.random.Generator, config: LightingConfig) -> np.ndarray:
    """Draw irradiance SH coefficients ``(9, 3)`` float32 from the lighting prior (see
    :class:`LightingConfig` for the distribution).

    - ``ambient``: constant irradiance of the ambient colour.
    - ``point``: ambient + one distant key light, mostly from the front and above
      (azimuth within ``azimuth_deg`` of the optical axis, elevation in ``elevation_deg``),
      projected exactly onto the 9 SH coefficients.
    - ``sh9``: the ``point`` light plus low-frequency noise on all 9 coefficients (mostly the
      same in R, G and B). Samples whose shading would go negative over the front hemisphere are
      re-drawn (bounded retries).
    """
    c = config
    amb_color, key_color = sample_light_colors(rng, c)
    amb = rng.uniform(*c.ambient)
    out = ambient_sh(amb * amb_color)
    if c.mode == "ambient":
        return out.astype(np.float32)
    az = math.radians(rng.uniform(-c.azimuth_deg, c.azimuth_deg))
    el = math.radians(rng.uniform(*c.elevation_deg))
    direction = np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    out = out + directional_sh(direction, rng.uniform(*c.intensity) * key_color)
    if c.mode == "point":
        return out.astype(np.float32)
    base = out
    probe = _hemisphere_probe()
    scale = c.sh_noise * amb / C0
    for _ in range(8):
        grey = rng.standard_normal(9)[:, None] * np.ones(3)  # (9, 1) * (3,) -> (9, 3): brightness only
        noisy = base + scale * (grey + 0.125 * rng.standard_normal((9, 3)))
        if (sh_basis(probe) @ noisy).min() >= 0.02:  # (P, 9) @ (9, 3)
            return noisy.astype(np.float32)
    return base.astype(np.float32)


@functools.lru_cache(maxsize=1)
def _hemisphere_probe() -> np.ndarray:
    """Fixed unit directions on the camera-facing hemisphere (z > 0) for the positivity check."""
    k = np.arange(200) + 0.5
    z = k / 200.0
    phi = k * math.pi * (3.0 - math.sqrt(5.0))  # golden-angle spiral
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)  # (200, 3)
