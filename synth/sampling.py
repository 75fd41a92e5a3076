"""Per-sample parameter priors: model coefficients, pose, camera, lighting, detail, background.

Every draw for global sample ``index`` comes from ``numpy.random.default_rng([seed, stream, index])``
with one stream per purpose (:data:`STREAMS`), so sample ``i`` is the same whatever the shard size,
worker count, machine or the order in which samples are rendered, and switching one option (say,
the background) does not change the other draws.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from . import camera as cam
from .backgrounds import BACKGROUNDS
from .detail import N_FIELDS, sample_detail_weights
from .lighting import LIGHT_MODES, LightingConfig, sample_sh

STREAMS = {"coefficients": 0, "pose": 1, "camera": 2, "lighting": 3, "detail": 4, "background": 5, "occluders": 6}


def sample_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """``default_rng([seed, STREAMS[stream], index])`` — the generator for one purpose of one sample."""
    return np.random.default_rng([int(seed), STREAMS[stream], int(index)])


@dataclasses.dataclass
class SamplingConfig:
    """Priors of the synthetic-data generator (one field per ``synth-cli render`` flag)."""

    lights: str = "sh9"  # --lights: sh9 | ambient | point
    id_scale: float = 1.0  # --id-scale: identity coefficients ~ N(0, id_scale^2) in std units
    exp_scale: float = 1.0  # --exp-scale: expression coefficients ~ N(0, exp_scale^2)
    albedo_scale: float = 1.0  # --albedo-scale: albedo coefficients ~ N(0, albedo_scale^2)
    truncation: float | None = 3.0  # --truncation: clip coefficients to +-truncation std (None = off)
    yaw_deg: float = 75.0  # --yaw: yaw ~ U(-yaw, yaw) degrees
    pitch_deg: float = 30.0  # --pitch: pitch ~ U(-pitch, pitch) degrees
    roll_deg: float = 20.0  # --roll: roll ~ U(-roll, roll) degrees
    projection: str = "perspective"  # --projection: perspective | weak_perspective
    fov_deg: tuple[float, float] = (12.0, 45.0)  # --fov: horizontal field of view range, degrees
    face_fraction: tuple[float, float] = (0.55, 0.8)  # --face-fraction: face width / image width
    jitter: float = 0.05  # --jitter: translation jitter, fraction of the image size
    detail: bool = True  # --detail/--no-detail: procedural fine-scale geometry
    detail_scale: float = 1.0  # --detail-scale: multiplies every detail amplitude
    background: str = "noise"  # --background: none | solid | noise | images
    background_dir: str | None = None  # --background-dir: folder of images for --background images
    occluders: float = 0.0  # --occluders: probability that a sample gets 1-3 occluding shapes
    lighting: LightingConfig | None = None  # advanced lighting prior (default: from --lights)

    def __post_init__(self) -> None:
        if self.lights not in LIGHT_MODES:
            raise ValueError(f"--lights must be one of {', '.join(LIGHT_MODES)}, got {self.lights!r}")
        if self.lighting is None:
            self.lighting = LightingConfig(mode=self.lights)
        elif isinstance(self.lighting, dict):
            self.lighting = LightingConfig(**self.lighting)
        if self.lighting.mode != self.lights:
            raise ValueError(f"--lights {self.lights!r} disagrees with lighting.mode {self.lighting.mode!r}")
        for flag, value in (("--id-scale", self.id_scale), ("--exp-scale", self.exp_scale),
                            ("--albedo-scale", self.albedo_scale), ("--detail-scale", self.detail_scale)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{flag} must be finite and >= 0, got {value}")
        if self.truncation is not None and not self.truncation > 0:
            raise ValueError(f"--truncation must be > 0 (or none), got {self.truncation}")
        for flag, value, limit in (("--yaw", self.yaw_deg, 90), ("--pitch", self.pitch_deg, 90), ("--roll", self.roll_deg, 180)):
            if not 0 <= value <= limit:
                raise ValueError(f"{flag} must be in [0, {limit}] degrees, got {value}")
        if self.projection not in cam.PROJECTIONS:
            raise ValueError(f"--projection must be one of {', '.join(cam.PROJECTIONS)}, got {self.projection!r}")
        self.fov_deg = tuple(float(x) for x in self.fov_deg)
        self.face_fraction = tuple(float(x) for x in self.face_fraction)
        if not (len(self.fov_deg) == 2 and 0 < self.fov_deg[0] <= self.fov_deg[1] < 170):
            raise ValueError(f"--fov must be lo,hi with 0 < lo <= hi < 170 degrees, got {self.fov_deg}")
        if not (len(self.face_fraction) == 2 and 0 < self.face_fraction[0] <= self.face_fraction[1] <= 2):
            raise ValueError(f"--face-fraction must be lo,hi with 0 < lo <= hi <= 2, got {self.face_fraction}")
        if not 0 <= self.jitter <= 0.5:
            raise ValueError(f"--jitter must be in [0, 0.5], got {self.jitter}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"--background must be one of {', '.join(BACKGROUNDS)}, got {self.background!r}")
        if self.background == "images" and not self.background_dir:
            raise ValueError("--background images needs --background-dir DIR")
        if not 0 <= self.occluders <= 1:
            raise ValueError(f"--occluders must be a probability in [0, 1], got {self.occluders}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (round-trips through ``SamplingConfig(**d)``)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class FramingConstants:
    """Model-level constants for camera framing: the face's centre and width (mm, model space).

    (Not to be confused with ``morphable_model._face_bases.FaceFrame``, the built-in model's
    per-vertex coordinate frame.)"""

    center: np.ndarray  # (3,) bounding-box centre of the (inner) face
    width: float  # x extent of the (inner) face
    radius: float = 0.0  # largest distance of any mean-shape vertex from ``center``


def face_framing(model) -> FramingConstants:
    """Centre and width of the model's mean face (its ``face_region`` when it has one)."""
    everything = np.asarray(model.mean_shape, dtype=np.float64)
    v = everything
    region = getattr(model, "face_region", None)
    if region is not None and np.count_nonzero(region) >= 3:
        v = v[np.asarray(region, dtype=bool)]
    lo, hi = v.min(axis=0), v.max(axis=0)
    center = (lo + hi) / 2.0
    radius = float(np.linalg.norm(everything - center, axis=1).max())
    return FramingConstants(center=center, width=float(max(hi[0] - lo[0], 1e-6)), radius=radius)


@dataclasses.dataclass
class Occluder:
    """A flat shape painted over the image (RGB only; geometry maps are unaffected)."""

    kind: str  # "ellipse" | "rectangle"
    center: np.ndarray  # (2,) pixel (u, v)
    half_size: np.ndarray  # (2,) pixels
    angle: float  # radians
    color: np.ndarray  # (3,) float [0, 1]


@dataclasses.dataclass
class SampleParams:
    """Everything that defines one synthetic sample (all arrays float32 unless noted)."""

    index: int  # global sample index
    alpha_id: np.ndarray  # (Kid,)
    alpha_exp: np.ndarray  # (Kexp,)
    beta: np.ndarray  # (Kalb,)
    pose: np.ndarray  # (3,) yaw, pitch, roll radians
    translation: np.ndarray  # (3,) mm, p = R v + t
    intrinsics: np.ndarray  # (3, 3)
    projection: str
    sh: np.ndarray  # (9, 3) irradiance SH
    detail_weights: np.ndarray | None  # (F,) amplitudes (mm) of the detail bank fields, None = off
    background_kind: str
    background_color: np.ndarray  # (3,) float, solid colour / noise base colour
    background_seed: int  # seed of the noise texture / image choice and crop
    occluders: list[Occluder]

    @property
    def rotation(self) -> np.ndarray:
        """``(3, 3)`` float64 rotation from ``pose``."""
        return cam.rotation_matrix(*[float(a) for a in self.pose])


def sample_coefficients(rng: np.random.Generator, model, config: SamplingConfig):
    """alpha_id, alpha_exp, beta ~ N(0, scale^2), clipped to +-truncation, float32 (drawn in that order)."""
    out = []
    for k, scale in ((model.n_id, config.id_scale), (model.n_exp, config.exp_scale), (model.n_albedo, config.albedo_scale)):
        c = scale * rng.standard_normal(k)
        if config.truncation is not None:
            np.clip(c, -config.truncation, config.truncation, out=c)
        out.append(c.astype(np.float32))
    return tuple(out)


def sample_pose(rng: np.random.Generator, config: SamplingConfig) -> np.ndarray:
    """yaw, pitch, roll ~ uniform in +-range, radians ``(3,)`` float32."""
    lim = np.radians([config.yaw_deg, config.pitch_deg, config.roll_deg])
    return (rng.uniform(-1.0, 1.0, 3) * lim).astype(np.float32)


def sample_camera(
    rng: np.random.Generator, config: SamplingConfig, framing: FramingConstants, pose: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics ``(3, 3)`` and translation ``(3,)`` so the face spans ``face_fraction`` of the image.

    A field of view is drawn from ``fov_deg`` (fx = size / (2 tan(fov / 2))), a face fraction f from
    ``face_fraction``; the distance is then ``d = fx * width / (f * size)``. The face centre is put
    on the optical axis at that distance (at least 1.1 x the model radius, so extreme settings cannot
    put vertices behind the camera) and shifted by up to ``jitter * size`` pixels in u and v.
    Weak perspective uses the same draws with the scale ``s = fx / d`` in place of fx, fy.
    """
    fov = math.radians(rng.uniform(*config.fov_deg))
    fx = size / (2.0 * math.tan(fov / 2.0))
    frac = rng.uniform(*config.face_fraction)
    # never closer than 1.1 x the model's radius, so the whole mesh stays in front of the camera
    distance = max(fx * framing.width / (frac * size), 1.1 * framing.radius)
    shift_px = rng.uniform(-1.0, 1.0, 2) * config.jitter * size  # (du, dv)
    # a shift of du pixels at distance d is du * d / fx millimetres; v grows downward
    offset = np.array([shift_px[0] * distance / fx, -shift_px[1] * distance / fx, -distance])
    rot = cam.rotation_matrix(*[float(a) for a in pose])
    translation = offset - rot @ framing.center
    c = size / 2.0
    focal = fx if config.projection == "perspective" else fx / distance
    return cam.intrinsics_matrix(focal, focal, c, c), translation.astype(np.float32)


def sample_occluders(rng: np.random.Generator, config: SamplingConfig, size: int) -> list[Occluder]:
    """With probability ``occluders``, 1-3 random ellipses/rectangles near the image centre."""
    if config.occluders <= 0 or rng.uniform() >= config.occluders:
        return []
    out = []
    for _ in range(int(rng.integers(1, 4))):
        out.append(Occluder(
            kind=str(rng.choice(["ellipse", "rectangle"])),
            center=rng.uniform(0.2, 0.8, 2) * size,
            half_size=rng.uniform(0.05, 0.2, 2) * size,
            angle=float(rng.uniform(0, math.pi)),
            color=rng.uniform(0.0, 1.0, 3),
        ))
    return out


def sample_params(model, config: SamplingConfig, size: int, seed: int, index: int,
                  framing: FramingConstants | None = None) -> SampleParams:
    """All parameters of global sample ``index`` for generator ``seed`` (see module doc)."""
    framing = face_framing(model) if framing is None else framing
    alpha_id, alpha_exp, beta = sample_coefficients(sample_rng(seed, "coefficients", index), model, config)
    pose = sample_pose(sample_rng(seed, "pose", index), config)
    intrinsics, translation = sample_camera(sample_rng(seed, "camera", index), config, framing, pose, size)
    sh = sample_sh(sample_rng(seed, "lighting", index), config.lighting)
    detail_weights = None
    if config.detail:
        detail_weights = sample_detail_weights(sample_rng(seed, "detail", index), N_FIELDS, config.detail_scale)
    bg = sample_rng(seed, "background", index)
    background_color = bg.uniform(0.0, 1.0, 3)
    background_seed = int(bg.integers(0, 2**31 - 1))
    occluders = sample_occluders(sample_rng(seed, "occluders", index), config, size)
    return SampleParams(
        index=int(index), alpha_id=alpha_id, alpha_exp=alpha_exp, beta=beta, pose=pose,
        translation=translation, intrinsics=intrinsics, projection=config.projection, sh=sh,
        detail_weights=detail_weights, background_kind=config.background,
        background_color=background_color, background_seed=background_seed, occluders=occluders,
    )
