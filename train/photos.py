"""Real photos in: files or folders of photos -> RGB -> face detection -> face crops at the network size.

The pipeline, per photo file:

1. **Decode** (:func:`load_photo`): JPEG, PNG, WebP, BMP, TIFF -> ``(H, W, 3)`` uint8 RGB with the
   EXIF orientation applied (the photo as a viewer shows it; "photo pixels" always mean pixels of
   that upright image). Greyscale and palette images become RGB; transparency is composited over a
   neutral grey (``NEUTRAL_BACKGROUND``); 16-bit images are reduced to 8 bits. The declared pixel
   count is checked against ``max_pixels`` *before* decoding (decompression bombs), per call,
   without touching PIL's global limit. Truncated or corrupt files and non-images raise
   :class:`PhotoError` with a one-line reason.
2. **Detect** (:class:`train.detector.FaceDetector`): on a copy downscaled to at most
   ``detect_max_side`` pixels (huge photos), the results mapped back to photo pixels. Detections
   are cached on disk, keyed by the file's content hash and the detector's and the framing's
   versions (``DETECTOR_VERSION``, ``synth.framing.FRAMING_VERSION``), so a second run does not
   detect again.
3. **Frame** (:mod:`synth.framing`): the crop rule on the detector's 68 landmarks
   (:func:`~synth.framing.crop_from_landmarks`), or on its box when the landmarks failed
   (:func:`~synth.framing.crop_from_box`) — the same rule that frames the synthetic renders.
4. **Crop** (:func:`~synth.framing.crop_image`): the face at ``size x size`` pixels, anti-aliased.

Each face comes back as a :class:`PhotoFace` holding the crop transform, so anything predicted in
crop pixels maps back to photo pixels (:meth:`PhotoFace.to_photo`).

Camera for photos: a photo does not state its field of view, so one is assumed: ``fov_deg``
(default ``DEFAULT_FOV_DEG`` = 50 degrees on the longer side) with square pixels and the principal
point at the photo's centre; the crop's intrinsics follow with
:meth:`~synth.framing.Crop.map_intrinsics` (the principal point moves with the crop, the focal
scales). 50 degrees lies between a phone's main camera (26 mm equivalent: about 65 degrees on the
longer side) and a 50 mm-equivalent portrait lens (about 40 degrees); a wrong guess changes the
estimated distance, i.e. how strong the perspective is assumed to be, and little else.

Bad files never stop a run: :func:`prepare_photos` skips them with their reason and
:meth:`PhotoRun.summary` says in one line what was used and what was skipped.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from synth import framing
from synth.framing import Crop

log = logging.getLogger(__name__)

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
"""File suffixes taken from a folder (files named explicitly are tried whatever their suffix)."""

DEFAULT_FOV_DEG = 50.0
"""Assumed field of view of a photo on its longer side, degrees (see the module docstring)."""

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest decoded photo, pixels (a 100 MP camera's frame; 300 MB as RGB). A file declaring more is
skipped before it is decoded (a small file can declare a huge image: a decompression bomb). PIL's
own hard limit (twice ``PIL.Image.MAX_IMAGE_PIXELS``, about 179 MP) still applies above it."""

DEFAULT_DETECT_MAX_SIDE = 1280
"""Detection runs on a copy of the photo at most this many pixels on its longer side: mediapipe's
detector sees a 192 px input anyway, and its mesh a 192 px face crop, so more only costs time."""

NEUTRAL_BACKGROUND = (128, 128, 128)
"""Transparent pixels are composited over this mid grey (no colour cast, no hard black/white edge)."""

CACHE_LAYOUT = 1  # version of the cache file's own layout


class PhotoError(ValueError):
    """A photo file that cannot be used; the message is one line naming the file and the reason."""


@dataclasses.dataclass
class PhotoConfig:
    """How photos become network inputs (one field per flag of the CLIs that use it)."""

    size: int = 128  # --size: side of the face crops, pixels (the network's input size)
    fov_deg: float = DEFAULT_FOV_DEG  # --fov: assumed field of view of the photo on its longer side
    all_faces: bool = False  # --all-faces: every detected face instead of the largest one
    max_faces: int = 8  # --max-faces: at most this many faces per photo with --all-faces
    min_score: float = 0.5  # --min-score: detector confidence below which a face is dropped
    rotate: bool = False  # --rotate: turn each crop with the face's eye line (upright faces)
    max_pixels: int = DEFAULT_MAX_PIXELS  # --max-pixels: larger photos are skipped (decompression bombs)
    detect_max_side: int = DEFAULT_DETECT_MAX_SIDE  # detection on a copy at most this large
    cache_dir: str | None = None  # --cache-dir: detections cache (None: $DETAILFACE_CACHE/detections)
    use_cache: bool = True  # --no-cache turns it off

    def __post_init__(self) -> None:
        if not (isinstance(self.size, (int, np.integer)) and self.size >= 8):
            raise ValueError(f"--size must be an integer >= 8, got {self.size!r}")
        if not (math.isfinite(self.fov_deg) and 1.0 <= self.fov_deg <= 170.0):
            raise ValueError(f"--fov must be in [1, 170] degrees, got {self.fov_deg}")
        if self.max_faces < 1:
            raise ValueError(f"--max-faces must be >= 1, got {self.max_faces}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"--min-score must be in [0, 1], got {self.min_score}")
        if self.max_pixels < 1:
            raise ValueError(f"--max-pixels must be >= 1, got {self.max_pixels}")
        if self.detect_max_side < 64:
            raise ValueError(f"detect_max_side must be >= 64, got {self.detect_max_side}")


def photo_intrinsics(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> np.ndarray:
    """``(3, 3)`` float64 intrinsics of a ``width x height`` photo with field of view ``fov_deg`` on
    its longer side: square pixels, principal point at the photo's centre ``(W / 2, H / 2)``."""
    if not (width >= 1 and height >= 1):
        raise ValueError(f"photo size must be positive, got {width} x {height}")
    f = 0.5 * max(width, height) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


# ------------------------------------------------------------------------------ decoding
def _to_rgb_array(im) -> np.ndarray:
    """A decoded, upright PIL image of any mode -> ``(H, W, 3)`` uint8 RGB."""
    from PIL import Image

    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit (or 32-bit integer) greyscale
        a = np.asarray(im).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        g = np.clip(np.round(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "F":  # float greyscale: [0, 1] if it fits there, else 0..255
        a = np.asarray(im).astype(np.float64)
        scale = 255.0 if np.nanmax(a) <= 1.0 else 1.0
        g = np.clip(np.round(np.nan_to_num(a) * scale), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, NEUTRAL_BACKGROUND + (255,))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def max_file_bytes(max_pixels: int) -> int:
    """The largest photo file :func:`load_photo` reads: ``max_pixels`` at 8 bytes a pixel (16-bit
    RGBA, uncompressed) plus 16 MiB of metadata; a larger file is refused unread."""
    return 8 * int(max_pixels) + (16 << 20)


def load_photo(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Decode one photo file -> ``(rgb (H, W, 3) uint8, sha256 hex of the file's bytes)``.

    EXIF orientation applied; greyscale, palette, transparent and 16-bit images converted (see the
    module docstring). Raises :class:`PhotoError` (one line) when the file is missing, declares more
    than ``max_pixels`` pixels or is larger than :func:`max_file_bytes`, is truncated or corrupt, or
    is not an image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        n_bytes = path.stat().st_size
        if n_bytes > max_file_bytes(max_pixels):  # not read at all: a video renamed .jpg, a huge scan
            raise PhotoError(f"{path}: {n_bytes} bytes, more than a photo of at most max_pixels={max_pixels} "
                             f"pixels takes ({max_file_bytes(max_pixels)} bytes)")
        data = path.read_bytes()
    except OSError as e:
        raise PhotoError(f"{path}: cannot read ({e.strerror or e})") from None
    except MemoryError:
        raise PhotoError(f"{path}: too large to read into memory ({n_bytes} bytes)") from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            # our own per-call limit replaces PIL's warning; PIL's hard error (2x its limit) still applies
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise PhotoError(f"{path}: declares {w} x {h} = {w * h} pixels, more than max_pixels={max_pixels} "
                                 "(a decompression bomb or a huge scan)")
            im.load()
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb_array(im)
    except PhotoError:
        raise
    except UnidentifiedImageError:
        raise PhotoError(f"{path}: not an image file PIL can read") from None
    except Image.DecompressionBombError as e:
        raise PhotoError(f"{path}: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise PhotoError(f"{path}: cannot decode ({' '.join(str(e).split())})") from None
    except Exception as e:  # untrusted bytes: any decoder failure (broken EXIF, odd modes) is this file's problem
        raise PhotoError(f"{path}: cannot decode ({type(e).__name__}: {' '.join(str(e).split())})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise PhotoError(f"{path}: decoded to an unusable array of shape {rgb.shape}")
    return np.ascontiguousarray(rgb), digest


def _folder_files(folder: Path, recursive: bool, skipped: list[tuple[Path, str]]) -> list[Path]:
    """The photo files of ``folder`` (sorted), its sub-folders too with ``recursive``; a folder
    that cannot be listed goes to ``skipped`` with the reason."""
    def unlisted(e: OSError) -> None:
        skipped.append((Path(e.filename or folder), f"cannot list this folder ({e.strerror or e})"))

    found: list[Path] = []
    if recursive:
        for top, dirs, names in os.walk(folder, onerror=unlisted):
            found.extend(Path(top, n) for n in names)
    else:
        try:
            found = list(folder.iterdir())
        except OSError as e:
            unlisted(e)
    return sorted(f for f in found if f.suffix.lower() in PHOTO_SUFFIXES and f.is_file())


def list_photos(inputs: Iterable[str | os.PathLike], recursive: bool = False,
                exclude: Callable[[Path], bool] | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Photo files of ``inputs`` (files and folders) -> ``(files, skipped)``.

    A folder contributes its files with a suffix in ``PHOTO_SUFFIXES`` (case-insensitive), sorted by
    name (all sub-folders too with ``recursive``), except those ``exclude(path)`` is true of (the
    pictures ``reconstruct`` wrote into an output folder among the inputs); a file named explicitly
    is kept whatever its suffix (decoding decides). ``skipped`` holds ``(path, reason)`` for inputs
    that do not exist and folders that cannot be listed. Duplicates are kept once.
    """
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files.extend(f for f in _folder_files(p, recursive, skipped) if exclude is None or not exclude(f))
        elif p.is_file():
            files.append(p)
        else:
            skipped.append((p, "does not exist"))
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, skipped


# ------------------------------------------------------------------------------ detections + cache
@dataclasses.dataclass(frozen=True)
class Detection:
    """One detected face in photo pixels (continuous convention)."""

    box: np.ndarray  # (4,) float64 [x0, y0, x1, y1]
    score: float
    landmarks: np.ndarray | None  # (68, 2) float64 (u, v), None when the face mesh failed


def default_cache_dir() -> Path:
    """``$DETAILFACE_CACHE/detections`` (default ``~/.cache/detailface/detections``), read at call time."""
    root = os.environ.get("DETAILFACE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "detailface")
    return Path(root) / "detections"


def _detector_version() -> str:
    from train.detector import DETECTOR_VERSION

    return DETECTOR_VERSION


def cache_key(digest: str, config: PhotoConfig) -> str:
    """File name of a photo's cached detections: its content hash plus everything that changes them."""
    settings = json.dumps({"detector": _detector_version(), "framing": framing.FRAMING_VERSION,
                           "layout": CACHE_LAYOUT, "detect_max_side": config.detect_max_side,
                           "min_score": config.min_score, "max_faces": config.max_faces}, sort_keys=True)
    return f"{digest}-{hashlib.sha256(settings.encode()).hexdigest()[:16]}.json"


def _read_cache(path: Path) -> list[Detection] | None:
    try:
        d = json.loads(path.read_text())
        return [Detection(box=np.asarray(f["box"], np.float64), score=float(f["score"]),
                          landmarks=None if f["landmarks"] is None else np.asarray(f["landmarks"], np.float64))
                for f in d["faces"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:  # a damaged entry is detected again
        log.warning("ignoring unreadable detection cache entry %s (%s)", path, e)
        return None


def _write_cache(path: Path, faces: list[Detection], image_size: tuple[int, int]) -> None:
    """Atomic write (temporary name in the same folder, then rename); failures only log."""
    doc = {"image_size": list(image_size),
           "faces": [{"box": f.box.tolist(), "score": f.score,
                      "landmarks": None if f.landmarks is None else f.landmarks.tolist()} for f in faces]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot write the detection cache %s (%s); continuing without it", path, e)


def detect_faces(rgb: np.ndarray, detector, detect_max_side: int = DEFAULT_DETECT_MAX_SIDE) -> list[Detection]:
    """Faces in a photo ``(H, W, 3)`` uint8, in photo pixels, largest first.

    ``detector``: an object whose ``detect(rgb)`` returns :class:`train.detector.FaceDetection`-like
    results. Photos larger than ``detect_max_side`` on their longer side are detected on a
    downscaled copy (anti-aliased), and boxes and landmarks are scaled back per axis
    (``W / W'``, ``H / H'``: exact in the continuous pixel convention).
    """
    from PIL import Image

    h, w = rgb.shape[:2]
    factor = min(1.0, detect_max_side / max(h, w))
    small = rgb
    if factor < 1.0:
        sw, sh = max(1, round(w * factor)), max(1, round(h * factor))
        small = np.asarray(Image.fromarray(rgb).resize((sw, sh), Image.Resampling.LANCZOS, reducing_gap=3.0))
    sx, sy = w / small.shape[1], h / small.shape[0]
    out = []
    for f in detector.detect(small):
        box = np.asarray(f.box, np.float64) * [sx, sy, sx, sy]
        lm = None if f.landmarks is None else np.asarray(f.landmarks, np.float64) * [sx, sy]
        out.append(Detection(box=box, score=float(f.score), landmarks=lm))
    out.sort(key=lambda d: -(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))
    return out


# ------------------------------------------------------------------------------ faces
@dataclasses.dataclass
class PhotoFace:
    """One face of one photo, cropped for the network, with everything to map back to the photo."""

    path: Path  # the photo file
    face_index: int  # 0 = the largest face of the photo
    photo_size: tuple[int, int]  # (W, H) of the upright photo, pixels
    crop: Crop  # the crop, in photo pixels
    size: int  # side of ``image``, pixels
    image: np.ndarray  # (size, size, 3) uint8 RGB crop
    intrinsics: np.ndarray  # (3, 3) float64 of the crop (assumed field of view, see the module docstring)
    photo_intrinsics: np.ndarray  # (3, 3) float64 of the whole photo
    box: np.ndarray  # (4,) float64 detector box [x0, y0, x1, y1], photo pixels
    score: float  # detector confidence
    landmarks: np.ndarray | None  # (68, 2) float64 detector landmarks, photo pixels (None: box-only crop)

    @property
    def landmarks_crop(self) -> np.ndarray | None:
        """``(68, 2)`` detector landmarks in crop pixels (None when the detector gave none)."""
        return None if self.landmarks is None else self.crop.map_points(self.landmarks, self.size)

    def to_photo(self, points_crop) -> np.ndarray:
        """Crop pixels ``(..., 2)`` -> photo pixels ``(..., 2)``."""
        return self.crop.unmap_points(points_crop, self.size)

    @property
    def name(self) -> str:
        """``<stem>`` for the largest face, ``<stem>_face<k>`` for the others (output file names)."""
        return self.path.stem if self.face_index == 0 else f"{self.path.stem}_face{self.face_index}"


def frame_face(rgb: np.ndarray, det: Detection, config: PhotoConfig, path: Path, index: int) -> PhotoFace:
    """Crop one detected face of the photo ``rgb`` by the framing rule (landmarks, else box)."""
    h, w = rgb.shape[:2]
    if det.landmarks is not None:
        crop = framing.crop_from_landmarks(det.landmarks, rotate=config.rotate)
    else:
        crop = framing.crop_from_box(det.box)
    k_photo = photo_intrinsics(w, h, config.fov_deg)
    return PhotoFace(path=path, face_index=index, photo_size=(w, h), crop=crop, size=config.size,
                     image=framing.crop_image(rgb, crop, config.size, resample="bilinear", fill=NEUTRAL_BACKGROUND[0]),
                     intrinsics=crop.map_intrinsics(k_photo, config.size), photo_intrinsics=k_photo,
                     box=det.box, score=det.score, landmarks=det.landmarks)


@dataclasses.dataclass
class PhotoRun:
    """What :func:`prepare_photos` did: the faces, and which files were used or skipped and why."""

    faces: list[PhotoFace]
    used: list[Path]
    skipped: list[tuple[Path, str]]  # (file, one-line reason)
    detected: int = 0  # decoded photos the detector ran on
    cached: int = 0  # decoded photos whose detections came from the cache
    timings: dict[Path, dict[str, float]] = dataclasses.field(default_factory=dict)
    """per used photo, seconds: ``decode`` (read + decode), ``detect`` (0 when cached), ``crop``
    (framing and resampling of all its faces)."""

    def summary(self) -> str:
        """One line: ``N photos: U used (F faces; ...from the cache), S skipped (name: reason; ...)``."""
        n = len(self.used) + len(self.skipped)
        line = (f"{n} photo{'s' * (n != 1)}: {len(self.used)} used ({len(self.faces)} face"
                f"{'s' * (len(self.faces) != 1)}; detections of {self.cached} photo{'s' * (self.cached != 1)} from the cache)")
        if self.skipped:
            reasons = "; ".join(f"{p.name}: {r}" for p, r in self.skipped)
            line += f", {len(self.skipped)} skipped ({reasons})"
        return line


def _reason(e: PhotoError, path: Path) -> str:
    """The reason part of a PhotoError's message (without the path it starts with)."""
    msg = str(e)
    prefix = f"{path}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def prepare_photos(inputs: Iterable[str | os.PathLike], config: PhotoConfig | None = None, detector=None,
                   progress: Callable[[int], None] | None = None, recursive: bool = False) -> PhotoRun:
    """Files / folders of photos -> face crops (:class:`PhotoRun`); never stops on a bad file.

    ``detector``: anything with ``detect(rgb)`` like :class:`train.detector.FaceDetector` (default:
    one is created on the first cache miss and closed at the end). ``progress(k)`` is called after
    each photo. Per photo: the largest face, or every face with ``config.all_faces``; a photo with
    no face is skipped ("no face found").
    """
    config = PhotoConfig() if config is None else config
    files, skipped = list_photos(inputs, recursive=recursive)
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    own_detector = None
    faces: list[PhotoFace] = []
    used: list[Path] = []
    detected = cached = 0
    timings: dict[Path, dict[str, float]] = {}
    try:
        for path in files:
            t0 = time.perf_counter()
            try:
                rgb, digest = load_photo(path, config.max_pixels)
            except PhotoError as e:
                skipped.append((path, _reason(e, path)))
                log.info("skipped %s", e)
                if progress:
                    progress(1)
                continue
            t1 = time.perf_counter()
            entry = cache_dir / cache_key(digest, config) if config.use_cache else None
            dets = _read_cache(entry) if entry is not None else None
            if dets is None:
                if detector is None:
                    from train.detector import FaceDetector

                    detector = own_detector = FaceDetector(min_score=config.min_score, max_faces=config.max_faces)
                try:
                    dets = detect_faces(rgb, detector, config.detect_max_side)
                except Exception as e:  # one photo the detector chokes on must not stop the folder
                    skipped.append((path, f"face detection failed ({type(e).__name__}: {' '.join(str(e).split())})"))
                    log.warning("%s: face detection failed (%s)", path, e)
                    if progress:
                        progress(1)
                    continue
                detected += 1
                if entry is not None:
                    _write_cache(entry, dets, (rgb.shape[1], rgb.shape[0]))
            else:
                cached += 1
            t2 = time.perf_counter()
            if not dets:
                skipped.append((path, "no face found"))
            else:
                mine = []
                for k, det in enumerate(dets[: config.max_faces if config.all_faces else 1]):
                    try:
                        mine.append(frame_face(rgb, det, config, path, k))
                    except ValueError as e:  # degenerate landmarks / box: this face cannot be framed
                        log.warning("%s: face %d cannot be framed (%s)", path, k, e)
                if mine:
                    faces.extend(mine)
                    used.append(path)
                    timings[path] = {"decode": t1 - t0, "detect": t2 - t1, "crop": time.perf_counter() - t2}
                else:
                    skipped.append((path, "no face could be framed (degenerate detection)"))
            if progress:
                progress(1)
    finally:
        if own_detector is not None:
            own_detector.close()
    run = PhotoRun(faces=faces, used=used, skipped=skipped, detected=detected, cached=cached, timings=timings)
    log.info("%s", run.summary())
    return run


# ------------------------------------------------------------------------------ annotations
ANNOTATION_SUFFIX = ".pts"
"""Hand-placed landmarks of a photo: ``<stem>.pts`` beside ``<stem>.jpg`` (the iBUG / 300-W format)."""


def read_pts(path: str | os.PathLike) -> np.ndarray:
    """The points of an iBUG / 300-W ``.pts`` file -> ``(N, 2)`` float64 ``(x, y)`` in photo pixels.

    The format: ``version: 1``, ``n_points: N``, ``{``, N lines ``x y``, ``}``. It counts pixels from
    1 (the first pixel's centre is (1, 1)); photo pixels here put that centre at (0.5, 0.5)
    (:mod:`train.detector`), so 0.5 is subtracted. The points must be placed on the photo as a
    viewer shows it (after its EXIF orientation, as :func:`load_photo` decodes it). Raises
    :class:`PhotoError` (one line, naming the file) for anything else."""
    path = Path(path)
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError as e:
        raise PhotoError(f"{path}: cannot read ({e.strerror or e})") from None
    header = dict(ln.split(":", 1) for ln in lines if ":" in ln and "{" not in ln)
    try:
        n = int(header.get("n_points", ""))
        start, end = lines.index("{"), lines.index("}")
    except ValueError:
        raise PhotoError(f"{path}: not an iBUG .pts file (expected 'n_points: N', '{{', N lines 'x y', '}}')"
                         ) from None
    rows = []
    for k, ln in enumerate(lines[start + 1:end], start=1):
        try:
            xy = [float(v) for v in ln.split()]
        except ValueError:
            xy = []
        if len(xy) != 2 or not all(math.isfinite(v) for v in xy):
            raise PhotoError(f"{path}: point {k} is {ln!r}, expected 'x y' (two finite numbers)")
        rows.append(xy)
    if len(rows) != n:
        raise PhotoError(f"{path}: declares {n} points but lists {len(rows)}")
    return np.array(rows, np.float64).reshape(n, 2) - 0.5


def photo_annotation(photo: str | os.PathLike) -> np.ndarray | None:
    """The 68 iBUG points annotated for ``photo`` (``<stem>.pts`` beside it, :func:`read_pts`), in
    photo pixels; None when there is no such file. :class:`PhotoError` when it is unreadable or does
    not hold 68 points."""
    path = Path(photo).with_suffix(ANNOTATION_SUFFIX)
    if not path.is_file():
        return None
    points = read_pts(path)
    if points.shape != (68, 2):
        raise PhotoError(f"{path}: holds {len(points)} points, expected the 68 iBUG landmarks")
    return points


def faces_to_arrays(faces: Sequence[PhotoFace]) -> dict[str, np.ndarray]:
    """Stack faces of one size: ``image (F, S, S, 3) uint8``, ``intrinsics (F, 3, 3) float32``,
    ``landmarks (F, 68, 2) float32`` crop pixels (NaN where missing), ``landmarks_valid (F,) bool``."""
    if not faces:
        raise ValueError("faces must not be empty")
    sizes = {f.size for f in faces}
    if len(sizes) != 1:
        raise ValueError(f"faces must share one crop size, got {sorted(sizes)}")
    lm = np.full((len(faces), 68, 2), np.nan, np.float32)
    valid = np.zeros(len(faces), bool)
    for i, f in enumerate(faces):
        if f.landmarks is not None:
            lm[i] = f.landmarks_crop
            valid[i] = True
    return {"image": np.stack([f.image for f in faces]),
            "intrinsics": np.stack([f.intrinsics for f in faces]).astype(np.float32),
            "landmarks": lm, "landmarks_valid": valid}


SAMPLE_PHOTOS = ("astronaut", "cameraman", "grace_hopper")
"""The public-domain photos that ship inside installed packages (no download): scikit-image's
astronaut (Eileen Collins) and cameraman, matplotlib's Grace Hopper."""


def write_sample_photos(folder: str | os.PathLike, names: Sequence[str] = SAMPLE_PHOTOS) -> list[Path]:
    """Write the offline sample photos ``names`` (of :data:`SAMPLE_PHOTOS`) into ``folder`` as
    ``astronaut.png``, ``cameraman.png`` (greyscale saved as RGB), ``grace_hopper.jpg`` (copied
    as shipped); returns their paths in the order asked. For demos, benchmarks and tests."""
    import shutil

    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    unknown = [n for n in names if n not in SAMPLE_PHOTOS]
    if unknown:
        raise ValueError(f"unknown sample photo {unknown[0]!r}: choose from {', '.join(SAMPLE_PHOTOS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        if name == "grace_hopper":
            path = folder / "grace_hopper.jpg"
            shutil.copy(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), path)
        else:
            path = folder / f"{name}.png"
            Image.fromarray(getattr(skimage.data, "camera" if name == "cameraman" else name)()).convert("RGB").save(path)
        out.append(path)
    return out
