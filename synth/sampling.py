"""Per-sample parameter priors: model coefficients, pose, camera, lighting, specular, detail, background,
occluders, line occluders and facial hair.

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
from . import framing
from .backgrounds import BACKGROUNDS
from .detail import N_FIELDS, sample_detail_weights
from .lighting import LIGHT_MODES, LightingConfig, sample_sh

STREAMS = {"coefficients": 0, "pose": 1, "camera": 2, "lighting": 3, "detail": 4, "background": 5, "occluders": 6,
           "specular": 7, "lines": 8, "hair": 9}

NEUTRAL_ADDED = {"line_occluders": 0.0, "facial_hair": 0.0}
"""Sampling settings added after datasets were first written, with the value that renders what the
code did before they existed. :meth:`SamplingConfig.to_dict` leaves a setting out while it has that
value, so the manifests and shards of older datasets still match (resume, ``synth-cli verify``) and
read back (``SamplingConfig(**d)``) to the same renders."""


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
    distance_mm: tuple[float, float] = (300.0, 3000.0)  # --distance: camera distance range lo,hi, mm (log-uniform)
    framing_jitter: float = 1.0  # --framing-jitter: x the detector's measured crop bias and spread (0 = the exact rule)
    detail: bool = True  # --detail/--no-detail: procedural fine-scale geometry
    detail_scale: float = 1.0  # --detail-scale: multiplies every detail amplitude
    cavity: float = 0.4  # --cavity: crease darkening exp(cavity * depth mm), 0 = off
    background: str = "photos"  # --background: photos (bundled real photos) | images | noise | solid | none
    background_dir: str | None = None  # --background-dir: folder of images for --background images
    occluders: float = 0.2  # --occluders: probability that a sample gets 1-3 occluding shapes
    line_occluders: float = 0.0  # --line-occluders: probability of thin dark lines without geometry (glasses, brows, strands)
    facial_hair: float = 0.0  # --facial-hair: probability of painted facial hair without geometry (stubble, moustache, goatee, beard)
    specular: bool = True  # --specular/--no-specular: Blinn-Phong highlight from the SH lighting's dominant light
    specular_strength: tuple[float, float] = (0.0, 0.5)  # --specular-strength: strength ~ U(lo, hi) x light irradiance
    shininess: tuple[float, float] = (4.0, 64.0)  # --shininess: Blinn-Phong exponent, log-uniform in lo, hi
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
                            ("--albedo-scale", self.albedo_scale), ("--detail-scale", self.detail_scale),
                            ("--cavity", self.cavity)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{flag} must be finite and >= 0, got {value}")
        if self.truncation is not None and not self.truncation > 0:
            raise ValueError(f"--truncation must be > 0 (or none), got {self.truncation}")
        for flag, value, limit in (("--yaw", self.yaw_deg, 90), ("--pitch", self.pitch_deg, 90), ("--roll", self.roll_deg, 180)):
            if not 0 <= value <= limit:
                raise ValueError(f"{flag} must be in [0, {limit}] degrees, got {value}")
        if self.projection not in cam.PROJECTIONS:
            raise ValueError(f"--projection must be one of {', '.join(cam.PROJECTIONS)}, got {self.projection!r}")
        self.distance_mm = tuple(float(x) for x in self.distance_mm)
        if not (len(self.distance_mm) == 2 and all(math.isfinite(x) for x in self.distance_mm)
                and 0 < self.distance_mm[0] <= self.distance_mm[1]):
            raise ValueError(f"--distance must be lo,hi millimetres with 0 < lo <= hi, got {self.distance_mm}")
        if not (math.isfinite(self.framing_jitter) and 0 <= self.framing_jitter <= 5):
            raise ValueError(f"--framing-jitter must be in [0, 5] (x the measured detector jitter), "
                             f"got {self.framing_jitter}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"--background must be one of {', '.join(BACKGROUNDS)}, got {self.background!r}")
        if self.background == "images" and not self.background_dir:
            raise ValueError("--background images needs --background-dir DIR")
        for flag, value in (("--occluders", self.occluders), ("--line-occluders", self.line_occluders),
                            ("--facial-hair", self.facial_hair)):
            if not 0 <= value <= 1:
                raise ValueError(f"{flag} must be a probability in [0, 1], got {value}")
        self.specular_strength = tuple(float(x) for x in self.specular_strength)
        self.shininess = tuple(float(x) for x in self.shininess)
        if not (len(self.specular_strength) == 2 and 0 <= self.specular_strength[0] <= self.specular_strength[1] <= 10):
            raise ValueError(f"--specular-strength must be lo,hi with 0 <= lo <= hi <= 10, got {self.specular_strength}")
        if not (len(self.shininess) == 2 and 1 <= self.shininess[0] <= self.shininess[1] <= 10000):
            raise ValueError(f"--shininess must be lo,hi with 1 <= lo <= hi <= 10000, got {self.shininess}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (round-trips through ``SamplingConfig(**d)``); the settings of
        :data:`NEUTRAL_ADDED` are left out while they have their neutral value."""
        d = dataclasses.asdict(self)
        for key, neutral in NEUTRAL_ADDED.items():
            if d[key] == neutral:
                del d[key]
        return d


@dataclasses.dataclass(frozen=True)
class FramingConstants:
    """Model-level constants for camera framing, computed once per model by :func:`face_framing`.

    (Not to be confused with ``morphable_model._face_bases.FaceFrame``, the built-in model's
    per-vertex coordinate frame.)"""

    center: np.ndarray  # (3,) bounding-box centre of the (inner) face, mm, model space
    width: float  # x extent of the (inner) face, mm
    radius: float = 0.0  # largest distance of any mean-shape vertex from ``center``
    landmark_mean: np.ndarray | None = None  # (68, 3) mean-shape landmark vertices (None: no landmarks)
    landmark_basis: np.ndarray | None = None  # (204, Kid + Kexp) their basis rows x std: (x0, y0, z0, x1, ...)
    region_points: np.ndarray | None = None  # (P, 3) face-region vertices framing a model without landmarks

    def landmarks(self, alpha_id: np.ndarray, alpha_exp: np.ndarray) -> np.ndarray:
        """The sample's 68 landmark vertices ``(68, 3)`` float64 (model space, mm): 68 rows of the
        bases instead of the whole model."""
        coef = np.concatenate([np.asarray(alpha_id, np.float64).reshape(-1), np.asarray(alpha_exp, np.float64).reshape(-1)])
        k = self.landmark_basis.shape[1]
        if coef.size > k:
            raise ValueError(f"coefficients longer than the model's ({k}), got {coef.size}")
        # (204, k) @ (k,) -> (204,) -> (68, 3); shorter coefficient vectors = trailing zeros
        return self.landmark_mean + (self.landmark_basis[:, :coef.size] @ coef).reshape(68, 3)


_MAX_REGION_POINTS = 400  # vertices that frame a model without landmarks (an even subsample of its face region)


def face_framing(model) -> FramingConstants:
    """Centre and width of the model's mean face (its ``face_region`` when it has one), and the
    landmark rows of its bases for :func:`sample_camera`."""
    everything = np.asarray(model.mean_shape, dtype=np.float64)
    v = everything
    region = getattr(model, "face_region", None)
    if region is not None and np.count_nonzero(region) >= 3:
        v = v[np.asarray(region, dtype=bool)]
    lo, hi = v.min(axis=0), v.max(axis=0)
    center = (lo + hi) / 2.0
    radius = float(np.linalg.norm(everything - center, axis=1).max())
    lm_mean = lm_basis = region_points = None
    if model.landmarks is not None:
        lm = np.asarray(model.landmarks, dtype=np.int64)
        rows = (3 * lm[:, None] + np.arange(3)).reshape(-1)  # (68, 3) -> (204,) rows x, y, z per landmark
        lm_mean = everything[lm]
        lm_basis = np.concatenate([np.asarray(model.id_basis)[rows] * np.asarray(model.id_std, np.float64),
                                   np.asarray(model.exp_basis)[rows] * np.asarray(model.exp_std, np.float64)],
                                  axis=1)  # (204, Kid + Kexp)
    else:
        step = max(1, len(v) // _MAX_REGION_POINTS)
        region_points = v[::step]
    return FramingConstants(center=center, width=float(max(hi[0] - lo[0], 1e-6)), radius=radius,
                     landmark_mean=lm_mean, landmark_basis=lm_basis, region_points=region_points)


@dataclasses.dataclass
class Occluder:
    """A shape painted over the image (RGB only; geometry maps are unaffected), see
    :func:`synth.backgrounds.paint_occluders`."""

    kind: str  # "ellipse" | "rectangle"
    center: np.ndarray  # (2,) pixel (u, v)
    half_size: np.ndarray  # (2,) pixels
    angle: float  # radians
    color: np.ndarray  # (3,) float [0, 1] sRGB, the fill when there is no texture
    texture_seed: int | None = None  # seed of a photo-bank texture fill (None: flat colour)


@dataclasses.dataclass
class LineOccluder:
    """Thin dark lines painted over the image with no geometry (RGB only), placed on the face by the
    rendered landmarks: see :func:`synth.backgrounds.line_polylines` / :func:`~synth.backgrounds.paint_lines`.

    ``kind`` "glasses": a rim around each eye (half axes ``shape[0:2]`` and downward offset
    ``shape[2]``, face units), the bridge and, when ``shape[3] > 0``, the temples out to that fraction
    of the way to the jaw's ends; "brows": a stroke along each brow's five landmarks, moved up by
    ``shape[0]`` face units; "strands": ``points`` ``(S, 3, 2)`` quadratic Bezier control points in
    face coordinates (hair across the face). Face coordinates: the origin midway between the eye
    centres, x along the eye line (1 = the projected eye distance), y down (1 = eye-to-chin / 2; both
    about 60 mm on a frontal face, :func:`synth.backgrounds.face_frame`)."""

    kind: str  # "glasses" | "brows" | "strands"
    width: float  # stroke width, face units
    color: np.ndarray  # (3,) sRGB in [0, 1]
    opacity: float  # in (0, 1]
    shape: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(4))  # kind-specific (see above)
    points: np.ndarray | None = None  # (S, 3, 2) strands' control points


@dataclasses.dataclass
class FacialHair:
    """Facial hair painted over the face's pixels with no geometry (RGB only), placed by the rendered
    landmarks: see :func:`synth.backgrounds.facial_hair_polygons` / :func:`~synth.backgrounds.paint_facial_hair`.

    ``kind`` (:data:`HAIR_KINDS`): "stubble" (cheeks, chin and upper lip; sparse, short),
    "moustache" (between the nose and the upper lip), "goatee" (moustache and chin), "beard" (cheeks,
    chin and upper lip; dense, longer hairs). The hairs are the pixels of a white-noise field
    (``texture_seed``) below ``density``, drawn as streaks along ``angle`` (radians from the face's
    downward axis), in ``color`` at ``opacity``."""

    kind: str
    color: np.ndarray  # (3,) sRGB in [0, 1]
    opacity: float  # in (0, 1]
    density: float  # fraction of the region's pixels a hair is centred on
    angle: float  # hair direction, radians from the face frame's y axis (down), toward its x axis
    texture_seed: int


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
    specular_strength: float = 0.0  # Blinn-Phong strength (x the dominant light's irradiance); 0 = none
    shininess: float = 16.0  # Blinn-Phong exponent
    cavity: float = 0.0  # crease darkening per mm of detail depth (synth.detail.cavity_occlusion); 0 = none
    line_occluders: list[LineOccluder] = dataclasses.field(default_factory=list)  # painted before ``occluders``
    facial_hair: FacialHair | None = None  # painted before the line occluders

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


# Camera placement (see sample_camera)
NOMINAL_FOCAL = 1000.0
"""Focal length (pixels) of the nominal camera the landmarks are first projected with; any value
gives the same crop intrinsics (the framing rule is scale-invariant), this one keeps numbers readable."""

OFF_AXIS_MAX = 0.3
"""The face centre's direction is drawn uniformly within +-0.3 (x/d and y/d, i.e. about +-17 degrees)
of the optical axis: in a photo the face is rarely in the middle, so the crop's principal point is
off-centre and the face is seen slightly obliquely, as in the crops the photo pipeline makes
(0.3 keeps the face inside the central part of a photo with the pipeline's assumed 50 degree field of view)."""

# The detector's framing jitter, measured by benchmarks/detector_jitter.py (300 renders of the built-in
# model at 256 px, default priors, 281 with a detection): the photo pipeline's rule on the detector's
# landmarks minus the same rule on the true landmarks (centre offset in fractions of the crop side,
# log of the side ratio). A render is framed by the rule on its true landmarks, moved by
# framing_jitter * (bias + std * z)  (z ~ N(0, 1) clipped to +-JITTER_CLIP; framing_jitter 0 = the exact rule). The centre bias measured
# +0.0015 / +0.0010 (u / v), below a pixel at any network size, so it is left out; the detector's
# crops are 4 % smaller than those of the true landmarks (its mouth sits closer to the eyes).
DETECTOR_SHIFT_BIAS = np.array([0.0, 0.0])  # (2,) mean centre offset / side (u, v)
DETECTOR_SHIFT_STD = np.array([0.008, 0.014])  # (2,) its standard deviation (u, v)
DETECTOR_LOG_SCALE_BIAS = -0.040  # mean log(side_detected / side_true)
DETECTOR_LOG_SCALE_STD = 0.057  # its standard deviation
JITTER_CLIP = 2.5  # draws beyond 2.5 standard deviations are clipped (no outlier crops)


def sample_camera(rng: np.random.Generator, config: SamplingConfig, frame: FramingConstants, pose: np.ndarray, size: int,
                  alpha_id: np.ndarray | None = None, alpha_exp: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics ``(3, 3)`` and translation ``(3,)`` so the render is the face crop of the photo pipeline.

    1. The camera distance ``d`` (the perspective strength) is drawn log-uniform in ``distance_mm``
       (at least 1.1 x the model radius, so no vertex can be behind the camera), and the face
       centre's direction uniformly within ``OFF_AXIS_MAX`` of the optical axis:
       ``t = (ox d, oy d, -d) - R @ center``.
    2. The sample's 68 landmark vertices (``alpha_id``, ``alpha_exp``; 68 rows of the bases) are
       projected with a nominal camera (focal ``NOMINAL_FOCAL``, principal point 0).
    3. :func:`synth.framing.crop_from_landmarks` frames them (the photo pipeline's rule), moved by
       the detector's measured jitter (``DETECTOR_*`` bias and spread, times ``framing_jitter``).
    4. The intrinsics are the nominal camera's mapped into that crop at ``size`` pixels.

    Weak perspective uses the same draws with the nominal scale ``NOMINAL_FOCAL / d``. A model
    without landmarks is framed by the box of its face region (:func:`synth.framing.crop_from_points`).
    Draws, in order: distance, direction (2), jitter (3).
    """
    d_lo, d_hi = config.distance_mm
    distance = math.exp(rng.uniform(math.log(d_lo), math.log(d_hi)))
    distance = max(distance, 1.1 * frame.radius)  # the whole mesh stays in front of the camera
    direction = rng.uniform(-OFF_AXIS_MAX, OFF_AXIS_MAX, 2)  # (ox, oy): x/d, y/d of the face centre
    z = np.clip(rng.standard_normal(3), -JITTER_CLIP, JITTER_CLIP)
    rot = cam.rotation_matrix(*[float(a) for a in pose])
    translation = np.array([direction[0] * distance, direction[1] * distance, -distance]) - rot @ frame.center
    focal = NOMINAL_FOCAL if config.projection == "perspective" else NOMINAL_FOCAL / distance
    nominal = cam.intrinsics_matrix(focal, focal, 0.0, 0.0).astype(np.float64)
    if frame.landmark_mean is not None:
        if alpha_id is None or alpha_exp is None:
            raise ValueError("sample_camera needs alpha_id and alpha_exp to place the landmarks")
        points = frame.landmarks(alpha_id, alpha_exp)
    else:
        points = frame.region_points
    uv, _ = cam.project(cam.to_camera(points, rot, translation), nominal, config.projection)
    crop = framing.crop_from_landmarks(uv) if frame.landmark_mean is not None else framing.crop_from_points(uv)
    j = config.framing_jitter
    crop = crop.jittered(j * (DETECTOR_SHIFT_BIAS + DETECTOR_SHIFT_STD * z[:2]),
                         j * (DETECTOR_LOG_SCALE_BIAS + DETECTOR_LOG_SCALE_STD * z[2]))
    intrinsics = crop.map_intrinsics(nominal, size)
    return intrinsics.astype(np.float32), translation.astype(np.float32)


OCCLUDER_TEXTURED = 0.8  # share of the occluders filled with a photo-bank texture (the rest: a flat colour)


def sample_occluders(rng: np.random.Generator, config: SamplingConfig, size: int) -> list[Occluder]:
    """With probability ``occluders``, 1-3 random ellipses/rectangles near the image centre
    (centre U(0.2, 0.8) x size, half sizes U(0.05, 0.2) x size, any angle), each filled with a
    photo-bank texture (``OCCLUDER_TEXTURED`` of them) or a flat sRGB colour U(0, 1)."""
    if config.occluders <= 0 or rng.uniform() >= config.occluders:
        return []
    out = []
    for _ in range(int(rng.integers(1, 4))):
        kind = str(rng.choice(["ellipse", "rectangle"]))
        center = rng.uniform(0.2, 0.8, 2) * size
        half_size = rng.uniform(0.05, 0.2, 2) * size
        angle = float(rng.uniform(0, math.pi))
        color = rng.uniform(0.0, 1.0, 3)
        textured = rng.uniform() < OCCLUDER_TEXTURED
        seed = int(rng.integers(0, 2**31 - 1))
        out.append(Occluder(kind=kind, center=center, half_size=half_size, angle=angle, color=color,
                            texture_seed=seed if textured else None))
    return out


LINE_KINDS = ("glasses", "brows", "strands")


def _dark_colour(rng: np.random.Generator) -> np.ndarray:
    """A dark sRGB colour: grey U(0.02, 0.3), green and blue x U(0.75, 1) (neutral to brown)."""
    v = rng.uniform(0.02, 0.3)
    return np.array([v, v * rng.uniform(0.75, 1.0), v * rng.uniform(0.75, 1.0)])


def sample_line_occluders(rng: np.random.Generator, config: SamplingConfig) -> list[LineOccluder]:
    """With probability ``line_occluders``, one to three of :data:`LINE_KINDS` (each kept with
    probability 1/2, at least one), all dark and thin (face units, ~60 mm; ~27 px on a render
    at 128 px with the default camera): glasses (width U(0.02, 0.07), rims 0.28-0.42 x 0.18-0.3 half axes,
    opacity U(0.7, 1), temples in 70 %), brows (width U(0.06, 0.16), opacity U(0.3, 0.8)), 1-6
    strands (width U(0.01, 0.04), opacity U(0.5, 1), control points spread over the face)."""
    if config.line_occluders <= 0 or rng.uniform() >= config.line_occluders:
        return []
    keep = rng.uniform(size=len(LINE_KINDS)) < 0.5
    if not keep.any():
        keep[int(rng.integers(0, len(LINE_KINDS)))] = True
    out = []
    for kind, on in zip(LINE_KINDS, keep):
        if not on:
            continue
        if kind == "glasses":
            temples = rng.uniform(0.6, 1.0) if rng.uniform() < 0.7 else 0.0
            shape = np.array([rng.uniform(0.28, 0.42), rng.uniform(0.18, 0.3), rng.uniform(-0.02, 0.1), temples])
            out.append(LineOccluder(kind, float(rng.uniform(0.02, 0.07)), _dark_colour(rng),
                                    float(rng.uniform(0.7, 1.0)), shape))
        elif kind == "brows":
            out.append(LineOccluder(kind, float(rng.uniform(0.06, 0.16)), _dark_colour(rng),
                                    float(rng.uniform(0.3, 0.8)), np.array([rng.uniform(0.0, 0.06), 0, 0, 0])))
        else:
            n = int(rng.integers(1, 7))
            start = rng.uniform([-1.0, -0.9], [1.0, 0.6], (n, 2))
            end = start + rng.normal(0.0, 0.6, (n, 2))
            mid = (start + end) / 2 + rng.normal(0.0, 0.25, (n, 2))
            out.append(LineOccluder(kind, float(rng.uniform(0.01, 0.04)), _dark_colour(rng),
                                    float(rng.uniform(0.5, 1.0)), points=np.stack([start, mid, end], axis=1)))
    return out


HAIR_KINDS = ("stubble", "moustache", "goatee", "beard")


def sample_facial_hair(rng: np.random.Generator, config: SamplingConfig) -> FacialHair | None:
    """With probability ``facial_hair``, one of :data:`HAIR_KINDS` (uniform): dark (75 %, as the
    line occluders' colours) or grey to white hair; stubble density U(0.15, 0.45) and opacity
    U(0.3, 0.7), the others U(0.4, 0.85) and U(0.6, 1); direction N(0, 0.35) rad from straight down."""
    if config.facial_hair <= 0 or rng.uniform() >= config.facial_hair:
        return None
    kind = HAIR_KINDS[int(rng.integers(0, len(HAIR_KINDS)))]
    if rng.uniform() < 0.75:
        color = _dark_colour(rng)
    else:
        v = rng.uniform(0.45, 0.85)
        color = np.array([v, v * rng.uniform(0.9, 1.0), v * rng.uniform(0.85, 1.0)])
    stubble = kind == "stubble"
    density = rng.uniform(0.15, 0.45) if stubble else rng.uniform(0.4, 0.85)
    opacity = rng.uniform(0.3, 0.7) if stubble else rng.uniform(0.6, 1.0)
    return FacialHair(kind, color, float(opacity), float(density), float(rng.normal(0.0, 0.35)),
                      int(rng.integers(0, 2**31 - 1)))


def sample_specular(rng: np.random.Generator, config: SamplingConfig) -> tuple[float, float]:
    """Blinn-Phong ``(strength, shininess)``: strength ~ U(``specular_strength``) (0 with
    ``specular`` off), shininess log-uniform in ``shininess`` (drawn either way)."""
    strength = float(rng.uniform(*config.specular_strength))
    lo, hi = config.shininess
    shininess = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return (strength if config.specular else 0.0), shininess


def sample_params(model, config: SamplingConfig, size: int, seed: int, index: int,
                  frame: FramingConstants | None = None) -> SampleParams:
    """All parameters of global sample ``index`` for generator ``seed`` (see module doc)."""
    frame = face_framing(model) if frame is None else frame
    alpha_id, alpha_exp, beta = sample_coefficients(sample_rng(seed, "coefficients", index), model, config)
    pose = sample_pose(sample_rng(seed, "pose", index), config)
    intrinsics, translation = sample_camera(sample_rng(seed, "camera", index), config, frame, pose, size,
                                            alpha_id, alpha_exp)
    sh = sample_sh(sample_rng(seed, "lighting", index), config.lighting)
    detail_weights = None
    if config.detail:
        detail_weights = sample_detail_weights(sample_rng(seed, "detail", index), N_FIELDS, config.detail_scale)
    bg = sample_rng(seed, "background", index)
    background_color = bg.uniform(0.0, 1.0, 3)
    background_seed = int(bg.integers(0, 2**31 - 1))
    occluders = sample_occluders(sample_rng(seed, "occluders", index), config, size)
    strength, shininess = sample_specular(sample_rng(seed, "specular", index), config)
    lines = sample_line_occluders(sample_rng(seed, "lines", index), config)
    hair = sample_facial_hair(sample_rng(seed, "hair", index), config)
    return SampleParams(
        index=int(index), alpha_id=alpha_id, alpha_exp=alpha_exp, beta=beta, pose=pose,
        translation=translation, intrinsics=intrinsics, projection=config.projection, sh=sh,
        detail_weights=detail_weights, background_kind=config.background,
        background_color=background_color, background_seed=background_seed, occluders=occluders,
        specular_strength=strength, shininess=shininess, cavity=config.cavity if config.detail else 0.0,
        line_occluders=lines, facial_hair=hair,
    )
