"""Photos -> detailed 3-D faces: the pipeline behind ``train-cli reconstruct``, as a library.

Per photo (:func:`run_reconstruct`):

1. **Photos** (:mod:`train.photos`): decode, detect (cached by content), crop each face by the
   framing rule of the renders, at the size the networks want; a bad or faceless file is skipped
   with its one-line reason and the rest go on.
2. **CoarseNet** (:func:`train.inference.reconstruct`, all its iterations, batched, on the crops
   resampled to its input size): the morphable-model parameters, the mesh in the camera frame,
   and its depth map at FineNet's input size (CoarseNet's with ``--no-fine``).
3. **FineNet** (a :class:`FineStage`; skipped with ``--no-fine``): the refined depth map at the
   same size, the coarse depth plus a residual.
4. **Meshes** (:func:`build_meshes`): the coarse mesh (the model's topology, camera frame, mm) and
   the **detailed mesh**: the coarse mesh with every vertex that the crop sees moved along its
   camera ray to the refined depth at its pixel (bilinear; hidden vertices stay where they are).

   Why this and not the depth map meshed: the built-in model's mesh (1 mm between vertices) is
   finer than the depth map (about 2.3 mm per pixel at 128 px, 1.3 at 224), so sampling the refined depth at
   each vertex keeps all the detail FineNet produces while keeping the model's topology (the same
   vertex count, correspondence and landmarks as the coarse mesh, a clean silhouette, the face
   surface outside the photo's view kept from the coarse fit). Along the *ray* rather than the
   normal: a vertex moved along its ray projects to the same pixel, so the detailed mesh seen from
   the photo's camera has exactly the refined depth (up to the bilinear sampling), with no
   ``1 / cos`` blow-up where the surface turns away near the silhouette, and both meshes share
   their vertex colours.
   Vertex colours: the photo (full resolution, bilinear) at each visible vertex's projection; a
   hidden vertex takes the colour of the nearest visible one.
5. **Files** (:func:`write_face`): ``<name>.json``, ``<name>_coarse.obj/.ply``,
   ``<name>_detailed.obj/.ply`` (with the fine stage), ``<name>_depth.png`` (16-bit), and the
   pictures of :mod:`train.report` (overlay, compare, turntable); ``index.html`` for the folder.
   Each file is written under a temporary name and renamed, so an interrupted run never leaves a
   half-written file under a final name. docs/reconstruct.md describes every output.

Coordinates: meshes are in the camera frame of the photo (mm; x right, y up, the camera at the
origin looking along -z, so the face looks toward +z), with the assumed field of view
(:data:`train.photos.DEFAULT_FOV_DEG`); ``landmarks_68`` and ``box`` are in pixels of the upright
photo (docs/DESIGN.md's continuous convention).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from scipy.ndimage import map_coordinates
from scipy.spatial import cKDTree

from synth import camera
from synth.render import LANDMARK_DEPTH_TOL_MM, MeshRenderer

from . import report
from .checkpoint import CheckpointError, load_inference_checkpoint
from .config import FitLandmarks, ReconstructConfig
from .inference import SHIPPED_CHECKPOINT, load_coarse_checkpoint, reconstruct
from .photos import PhotoConfig, PhotoFace, PhotoRun, list_photos, load_photo, prepare_photos
from .report import RESULT_FORMAT

__all__ = ["ReconstructError", "FineStage", "CoarseEstimate", "Stages", "FaceResult", "WrittenFace", "ReconstructRun",
           "DEFAULT_COARSE", "DEFAULT_FINE", "RESULT_FORMAT", "load_stages", "run_networks", "build_meshes",
           "detail_vertices", "write_face", "run_reconstruct", "encode_depth_png", "decode_depth_png"]

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_COARSE = WEIGHTS_DIR.parent / SHIPPED_CHECKPOINT
"""The shipped CoarseNet weights (package data), used when ``--coarse`` is not given."""
DEFAULT_FINE = WEIGHTS_DIR / "fine.safetensors"
"""The shipped FineNet weights (package data), used when neither ``--fine`` nor ``--no-fine`` is given."""

RESULT_VERSION = 1  # of the <name>.json layout (its "format" key is report.RESULT_FORMAT)

DEPTH_LEVELS = 65535
"""16-bit depth PNG: 0 = off the face, 1..65535 = depth (see :func:`encode_depth_png`)."""


class ReconstructError(ValueError):
    """Reconstruction cannot start (a missing or unsuitable checkpoint); one line naming the file and the fix."""


# ------------------------------------------------------------------------------ stages
@dataclasses.dataclass
class CoarseEstimate:
    """CoarseNet's result for a batch of B crops of size S (torch, on the networks' device)."""

    params: Any  # train.params.CoarseParams after the last iteration
    vertices_cam: torch.Tensor  # (B, N, 3) camera frame, mm
    depth: torch.Tensor  # (B, S, S) mm, 0 off the face
    mask: torch.Tensor  # (B, S, S) bool, pixels the coarse mesh covers


class FineStage(Protocol):
    """The fine stage: refines the coarse depth of a batch of face crops.

    ``refine(image (B, 3, S, S) in [0, 1] (sRGB, as the photo gives it), intrinsics (B, 3, 3),
    coarse)`` returns the refined depth ``(B, S, S)`` (mm, 0 off the face) at the crop size
    ``size``; it may only use what a photo gives (the image) and the coarse estimate.
    """

    size: int

    def refine(self, image: torch.Tensor, intrinsics: torch.Tensor, coarse: CoarseEstimate) -> torch.Tensor: ...


@dataclasses.dataclass
class Stages:
    """The loaded networks and what the pipeline needs to know about them."""

    model: Any  # morphable_model.MorphableModel
    coarse: Any  # train.coarse_net.IterativeCoarseNet, eval mode, on ``device``
    coarse_size: int  # CoarseNet's input size, pixels
    fine: FineStage | None  # None: coarse only
    device: torch.device
    coarse_path: str
    coarse_step: int
    fine_path: str | None = None
    fine_step: int | None = None
    fit_landmarks: FitLandmarks = "detector"  # --fit-landmarks

    def fit_source(self, face: PhotoFace) -> str | None:
        """Whose 68 points CoarseNet's first fit uses for ``face``: "detector", "head" (the
        landmark head's), or None (a network without a landmark head: no fit)."""
        if self.coarse.landmark_head is None:
            return None
        return "detector" if self.fit_landmarks == "detector" and face.landmarks is not None else "head"

    @property
    def size(self) -> int:
        """Side of the face crops: the larger of the networks' input sizes (each network gets the
        crop resampled to its own size, never enlarged)."""
        return max(self.coarse_size, self.fine.size if self.fine is not None else 0)

    @property
    def depth_size(self) -> int:
        """Side of the depth maps written: FineNet's size with the fine stage, else CoarseNet's."""
        return self.fine.size if self.fine is not None else self.coarse_size


def _coarse_path(config: ReconstructConfig) -> Path:
    if config.coarse is not None:
        return Path(config.coarse)
    if not DEFAULT_COARSE.is_file():
        raise ReconstructError(
            f"no CoarseNet checkpoint: the shipped weights {DEFAULT_COARSE} are not installed; pass --coarse CKPT "
            "(a run's checkpoints/last.pt or a file from `train-cli export`)")
    return DEFAULT_COARSE


def _fine_path(config: ReconstructConfig) -> Path | None:
    if config.no_fine:
        return None
    if config.fine is not None:
        return Path(config.fine)
    if not DEFAULT_FINE.is_file():
        raise ReconstructError(
            f"no FineNet checkpoint: the shipped weights {DEFAULT_FINE} are not installed; pass --fine CKPT "
            "or --no-fine (coarse meshes only)")
    return DEFAULT_FINE


class FineNetStage:
    """:class:`FineStage` of a trained FineNet (phase 2, :mod:`train.fine_task`): the checkpoint's
    ``FineModel`` on the coarse estimate — the refined pixels are its refinement mask (the coarse
    face eroded, facing the camera) within the face region of the estimated mesh, as in training."""

    def __init__(self, fine_model, size: int):
        self.model = fine_model.eval()
        self.size = int(size)

    @torch.no_grad()
    def refine(self, image: torch.Tensor, intrinsics: torch.Tensor, coarse: CoarseEstimate) -> torch.Tensor:
        b, s = image.shape[0], image.shape[-1]
        p = coarse.params
        region = self.model.region(p.alpha_id, p.alpha_exp, p.pose, p.translation, intrinsics, (s, s))
        albedo = image.new_zeros(b, s, s, 3)  # only the training losses use the albedo estimate
        use_net = torch.zeros(b, dtype=torch.bool, device=image.device)  # the coarse depth is given
        out = self.model(image, intrinsics, coarse.depth, coarse.mask, albedo, region, use_net)
        return out["depth"]


def load_fine(path: str | os.PathLike, model, device: torch.device):
    """``(fine stage, training step, CoarseNet or None)`` of FineNet checkpoint ``path``: the
    CoarseNet is the checkpoint's own when it was trained end to end (it then replaces
    ``--coarse``). ``ReconstructError`` when this version has no FineNet."""
    try:
        from .fine_task import build_fine_model
    except ImportError:
        raise ReconstructError(f"{path}: this version of detailface has no FineNet (train/fine_task.py); "
                               "pass --no-fine for coarse meshes") from None
    ck = load_inference_checkpoint(path, fingerprint=model, task="fine")
    fine_model = build_fine_model(model, ck["task_state"], None)
    fine_model.load_state_dict(ck["model"])
    fine_model = fine_model.to(device).eval()
    size = int(ck["config"].get("size", 128))
    return FineNetStage(fine_model, size), int(ck["step"]), fine_model.coarse_net if fine_model.end_to_end else None


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``ValueError`` naming ``--device`` for cuda without a GPU."""
    from .trainer import resolve_device as _resolve

    return _resolve(name)


def load_stages(config: ReconstructConfig, model=None) -> Stages:
    """CoarseNet (and FineNet unless ``--no-fine``) from the configured or shipped checkpoints.

    Raises :class:`ReconstructError` for a missing shipped checkpoint, and
    :class:`train.checkpoint.CheckpointError` for an unreadable or unsafe file or a CoarseNet trained
    with the ground-truth mask in its input (a photo has no such mask; :func:`train.inference.load_checkpoint_and_model`).
    """
    device = resolve_device(config.device)
    coarse_path = _coarse_path(config)
    fine_path = _fine_path(config)  # before any loading: a missing file is reported at once
    net, ck, model = load_coarse_checkpoint(coarse_path, model, device, model_path=config.model,
                                            flip_test=config.flip_test)
    coarse_size, coarse_step, coarse_name = int(ck["config"].get("size", 224)), int(ck["step"]), str(coarse_path)
    fine, fine_step = None, None
    if fine_path is not None:
        fine, fine_step, own = load_fine(fine_path, model, device)
        if own is not None:  # trained end to end: its CoarseNet goes with it
            log.info("%s was trained end to end: its own CoarseNet replaces %s", fine_path, coarse_path)
            net, coarse_size, coarse_step, coarse_name = own.eval(), fine.size, fine_step, f"{fine_path} (end to end)"
            net.flip_test = config.flip_test
    return Stages(model=model, coarse=net, coarse_size=coarse_size, fine=fine, device=device,
                  coarse_path=coarse_name, coarse_step=coarse_step,
                  fine_path=None if fine_path is None else str(fine_path), fine_step=fine_step,
                  fit_landmarks=config.fit_landmarks)


# ------------------------------------------------------------------------------ networks
@dataclasses.dataclass
class FaceResult:
    """One reconstructed face (numpy). The depth maps are ``(D, D)`` (``Stages.depth_size``) seen
    through ``intrinsics``: the face's crop (``face.size``, ``face.intrinsics``) resampled to ``D``."""

    face: PhotoFace
    params: dict[str, np.ndarray]  # alpha_id, alpha_exp, pose (yaw, pitch, roll rad), translation mm, [beta, sh]
    rotation: np.ndarray  # (3, 3) model -> camera
    vertices_cam: np.ndarray  # (N, 3) float64 coarse mesh, camera frame, mm
    intrinsics: np.ndarray  # (3, 3) of the depth maps
    depth_coarse: np.ndarray  # (D, D) float32 mm, 0 off the face
    depth: np.ndarray  # (D, D) float32 mm: refined (fine stage) or the coarse depth
    mask: np.ndarray  # (D, D) bool, the coarse face
    refined: bool  # the fine stage ran
    timings: dict[str, float]  # seconds: coarse, fine (this face's share of its batch)
    vertices_detailed: np.ndarray | None = None  # (N, 3), set by build_meshes (with the fine stage)
    visible: np.ndarray | None = None  # (N,) bool, set by build_meshes
    colors: np.ndarray | None = None  # (N, 3) uint8, set by build_meshes


def _scaled_intrinsics(k: torch.Tensor, factor: float) -> torch.Tensor:
    """Intrinsics of an image resized by ``factor``: in the continuous pixel convention u -> factor * u,
    so fx, fy, cx, cy all scale (the last row stays (0, 0, 1))."""
    out = k.clone()
    out[..., :2, :] *= factor
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _resized(image: torch.Tensor, k: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(B, 3, S, S)`` and their intrinsics resampled to ``size`` (anti-aliased; as they are when S == size)."""
    s = image.shape[-1]
    if s == size:
        return image, k
    x = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x, _scaled_intrinsics(k, size / s)


@torch.no_grad()
def run_networks(stages: Stages, faces: list[PhotoFace]) -> list[FaceResult]:
    """CoarseNet (all iterations) and the fine stage on a batch of face crops of size
    ``stages.size``, each network fed the crops resampled to its own input size; depth maps at
    ``stages.depth_size``."""
    if not faces:
        return []
    size = stages.size
    if any(f.size != size for f in faces):
        raise ValueError(f"faces must be cropped at {size} px, got {sorted({f.size for f in faces})}")
    dev = stages.device
    b, out_size = len(faces), stages.depth_size
    image = torch.from_numpy(np.stack([f.image for f in faces])).to(dev)  # (B, S, S, 3) uint8
    image = image.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, S, S) in [0, 1]
    k = torch.from_numpy(np.stack([f.intrinsics for f in faces])).float().to(dev)  # (B, 3, 3) at S
    net = stages.coarse
    t0 = time.perf_counter()
    image_d, k_d = _resized(image, k, out_size)  # the view of the depth maps (the fine stage's)
    fit_points = None
    if any(stages.fit_source(f) == "detector" for f in faces):  # crop pixels -> CoarseNet's input pixels
        fit_points = torch.from_numpy(np.stack([
            f.landmarks_crop * (stages.coarse_size / size) if stages.fit_source(f) == "detector"
            else np.full((68, 2), np.nan) for f in faces])).float().to(dev)
    rec = reconstruct(net, *_resized(image, k, stages.coarse_size), depth_view=(k_d, (out_size, out_size)),
                      fit_points=fit_points)
    depth_c, mask = rec.depth, rec.mask
    _sync(dev)
    t1 = time.perf_counter()
    last = rec.params[-1]
    depth = depth_c
    if stages.fine is not None:
        depth = stages.fine.refine(image_d, k_d, CoarseEstimate(last, rec.vertices_cam, depth_c, mask))
        if tuple(depth.shape) != (b, out_size, out_size):
            raise ValueError(f"the fine stage returned depth {tuple(depth.shape)}, expected ({b}, {out_size}, {out_size})")
    _sync(dev)
    t2 = time.perf_counter()
    rot = camera.rotation_matrix(last.pose.float())  # (B, 3, 3)
    out = []
    for i, face in enumerate(faces):
        params = {"alpha_id": last.alpha_id[i], "alpha_exp": last.alpha_exp[i], "pose": last.pose[i],
                  "translation": last.translation[i]}
        if last.beta is not None:
            params["beta"] = last.beta[i]
        if last.sh is not None:
            params["sh"] = last.sh[i]
        out.append(FaceResult(
            face=face, params={n: v.detach().cpu().double().numpy() for n, v in params.items()},
            rotation=rot[i].cpu().double().numpy(), vertices_cam=rec.vertices_cam[i].cpu().double().numpy(),
            intrinsics=k_d[i].cpu().double().numpy(), depth_coarse=depth_c[i].cpu().float().numpy(), depth=depth[i].cpu().float().numpy(),
            mask=mask[i].cpu().numpy().astype(bool), refined=stages.fine is not None,
            timings={"coarse": (t1 - t0) / b, "fine": (t2 - t1) / b}))
    return out


# ------------------------------------------------------------------------------ meshes
def _bilinear(image: np.ndarray, uv: np.ndarray, outside: str) -> np.ndarray:
    """Bilinear samples of ``image (H, W)`` or ``(H, W, C)`` at pixel positions ``uv (N, 2)``
    (continuous convention: pixel (i, j) has its centre at (j + 0.5, i + 0.5)). Outside the image:
    ``outside="zero"`` treats it as 0, ``"edge"`` repeats the border pixels."""
    a = np.asarray(image, np.float64)
    coords = np.stack([uv[:, 1] - 0.5, uv[:, 0] - 0.5])  # (2, N) row, column in index space
    mode, cval = ("constant", 0.0) if outside == "zero" else ("nearest", 0.0)
    if a.ndim == 2:
        return map_coordinates(a, coords, order=1, mode=mode, cval=cval)
    return np.stack([map_coordinates(a[..., c], coords, order=1, mode=mode, cval=cval)
                     for c in range(a.shape[2])], axis=-1)


def visible_vertices(vertices_cam: np.ndarray, depth: np.ndarray, mask: np.ndarray, intrinsics: np.ndarray,
                     projection: str = "perspective", tol_mm: float = LANDMARK_DEPTH_TOL_MM) -> np.ndarray:
    """``(N,)`` bool: vertices ``(N, 3)`` that the ``(S, S)`` depth map sees — projecting into the
    image on the face mask and not more than ``tol_mm`` behind the surface at their pixel (the
    rendered depth of the same mesh; a vertex behind the nose or the far cheek is hidden)."""
    uv, d = camera.project(vertices_cam, intrinsics, projection)  # (N, 2), (N,)
    s_h, s_w = depth.shape
    col, row = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    inside = (col >= 0) & (col < s_w) & (row >= 0) & (row < s_h)
    r, c = np.clip(row, 0, s_h - 1), np.clip(col, 0, s_w - 1)
    return inside & mask[r, c] & (d <= depth[r, c] + tol_mm)


def detail_vertices(vertices_cam: np.ndarray, visible: np.ndarray, depth_coarse: np.ndarray,
                    depth_refined: np.ndarray, mask: np.ndarray, intrinsics: np.ndarray,
                    projection: str = "perspective") -> np.ndarray:
    """The detailed mesh: each visible vertex moved along its camera ray by the refined-minus-coarse
    depth at its pixel (bilinear; the difference is 0 off the mask, so it fades out at the
    silhouette); hidden vertices unchanged. Perspective: ``p * (d + r) / d`` (the camera is at the
    origin, so scaling a point moves it along its ray and scales its depth); weak perspective:
    ``p_z - r``. Returns ``(N, 3)`` float64."""
    residual = np.where(mask, depth_refined - depth_coarse, 0.0).astype(np.float64)  # (S, S)
    uv, d = camera.project(vertices_cam, intrinsics, projection)
    r = np.where(visible, _bilinear(residual, uv, "zero"), 0.0)  # (N,)
    out = np.array(vertices_cam, np.float64)
    if projection == "perspective":
        out *= ((d + r) / d)[:, None]
    else:
        out[:, 2] -= r
    return out


def vertex_colors(face: PhotoFace, vertices_cam: np.ndarray, visible: np.ndarray, rgb: np.ndarray,
                  projection: str = "perspective") -> np.ndarray:
    """``(N, 3)`` uint8: the photo ``rgb`` (bilinear, full resolution) at each visible vertex's
    projection; a hidden vertex takes the colour of the nearest visible vertex (camera-frame
    distance), or mid grey when none is visible."""
    n = len(vertices_cam)
    if not visible.any():
        return np.full((n, 3), 128, np.uint8)
    uv_crop, _ = camera.project(vertices_cam, face.intrinsics, projection)
    uv_photo = face.to_photo(uv_crop[visible])  # (V, 2)
    seen = np.clip(np.round(_bilinear(rgb, uv_photo, "edge")), 0, 255).astype(np.uint8)  # (V, 3)
    out = np.empty((n, 3), np.uint8)
    out[visible] = seen
    if (~visible).any():
        _, nearest = cKDTree(vertices_cam[visible]).query(vertices_cam[~visible])
        out[~visible] = seen[nearest]
    return out


def build_meshes(result: FaceResult, rgb: np.ndarray, projection: str = "perspective") -> FaceResult:
    """Visibility, vertex colours and (with the fine stage) the detailed vertices of ``result``, in place."""
    k = result.intrinsics
    result.visible = visible_vertices(result.vertices_cam, result.depth_coarse, result.mask, k, projection)
    result.colors = vertex_colors(result.face, result.vertices_cam, result.visible, rgb, projection)
    if result.refined:
        result.vertices_detailed = detail_vertices(result.vertices_cam, result.visible, result.depth_coarse,
                                                   result.depth, result.mask, k, projection)
    return result


# ------------------------------------------------------------------------------ files
def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Write through ``write(tmp)`` to a temporary name in ``path``'s folder (same suffix, so
    writers that go by it pick the format), then rename over ``path``. The temporary name is short
    (a digest of the name), so any name that fits the file system has one that fits too."""
    digest = hashlib.sha1(path.name.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    tmp = path.with_name(f".tmp-{os.getpid()}-{digest}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def encode_depth_png(depth: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(S, S)`` depth (mm) -> ``(uint16 image, scale_mm, offset_mm)`` with
    ``depth = offset_mm + scale_mm * value`` where ``value >= 1``, and ``value = 0`` off the mask.
    The face's depth range spans levels 1..65535 (a 200 mm range: 3 um per level)."""
    on = mask & np.isfinite(depth) & (depth > 0)
    img = np.zeros(depth.shape, np.uint16)
    if not on.any():
        return img, 1.0, 0.0
    lo, hi = float(depth[on].min()), float(depth[on].max())
    scale = max((hi - lo) / (DEPTH_LEVELS - 1), 1e-6)
    offset = lo - scale  # lo -> level 1
    img[on] = np.clip(np.round((depth[on] - offset) / scale), 1, DEPTH_LEVELS).astype(np.uint16)
    return img, scale, offset


def decode_depth_png(path: str | os.PathLike, scale_mm: float, offset_mm: float) -> np.ndarray:
    """The ``(S, S)`` float64 depth (mm, 0 off the face) of a depth PNG written by :func:`write_face`."""
    from PIL import Image

    with Image.open(path) as im:
        v = np.asarray(im).astype(np.float64)
    return np.where(v > 0, offset_mm + scale_mm * v, 0.0)


def _write_png16(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint16)).save(path, format="PNG")  # mode I;16


def write_obj(path: Path, vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray) -> None:
    """Wavefront OBJ with vertex colours: ``v x y z r g b`` (mm to 1 um, colours in [0, 1], the
    extension MeshLab, Blender and trimesh read) and ``f i j k`` (1-based). Written here rather than
    by trimesh's exporter, which takes about 3x longer for the built-in model's 55k vertices."""
    rows = np.concatenate([np.asarray(vertices, np.float64), np.asarray(colors, np.float64) / 255.0], axis=1)
    with open(path, "w", encoding="ascii") as f:
        f.write(f"# detailface: {len(vertices)} vertices, {len(triangles)} triangles, mm, photo camera frame\n")
        f.write("".join(map("v %.3f %.3f %.3f %.4f %.4f %.4f\n".__mod__, map(tuple, rows.tolist()))))
        f.write("".join(map("f %d %d %d\n".__mod__, map(tuple, (np.asarray(triangles, np.int64) + 1).tolist()))))


def _mesh_files(stem: Path, vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray) -> dict[str, Path]:
    """``<stem>.obj`` (:func:`write_obj`) and ``<stem>.ply`` (binary, trimesh) with per-vertex RGB colours."""
    rgba = np.concatenate([colors, np.full((len(colors), 1), 255, np.uint8)], axis=1)
    mesh = trimesh.Trimesh(vertices=vertices, faces=triangles, vertex_colors=rgba, process=False)
    obj = _atomic(stem.with_name(f"{stem.name}.obj"), lambda tmp: write_obj(tmp, vertices, triangles, colors))
    ply = _atomic(stem.with_name(f"{stem.name}.ply"), lambda tmp: mesh.export(tmp, file_type="ply"))
    return {"obj": obj, "ply": ply}


@dataclasses.dataclass
class WrittenFace:
    """What :func:`write_face` wrote for one face."""

    name: str
    photo: Path
    files: dict[str, Path]  # kind -> path (json, coarse_obj, coarse_ply, detailed_obj, ..., turntable)
    timings: dict[str, float]  # seconds per stage


def _landmarks_photo(result: FaceResult, model, projection: str) -> np.ndarray | None:
    if model.landmarks is None:
        return None
    uv, _ = camera.project(result.vertices_cam[np.asarray(model.landmarks)], result.face.intrinsics, projection)
    return result.face.to_photo(uv)  # crop pixels -> photo pixels, (68, 2)


def _json_text(doc: dict) -> str:
    """One top-level key per line, each value compact (arrays of numbers stay on their line)."""
    lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _rounded(a, digits: int = 4):
    return np.round(np.asarray(a, np.float64), digits).tolist()


def write_face(result: FaceResult, rgb: np.ndarray, out: Path, name: str, stages: Stages,
               config: ReconstructConfig, renderer=None, timings: dict[str, float] | None = None) -> WrittenFace:
    """Mesh one face (:func:`build_meshes`) and write its files into ``out`` as ``<name>*``;
    ``renderer`` (a :class:`synth.render.MeshRenderer` of the model's triangles) draws the
    pictures when ``config.pictures``. ``timings`` (seconds, e.g. decode/detect/crop of its photo)
    are merged into the JSON's ``timings_ms``."""
    model = stages.model
    projection = stages.coarse.render.projection
    tri = np.asarray(model.triangles, np.int64)
    times = dict(timings or {})
    times.update(result.timings)
    # the JSON is written last: until then no <name>.json of an earlier run describes other files
    (out / f"{name}.json").unlink(missing_ok=True)
    t0 = time.perf_counter()
    build_meshes(result, rgb, projection)
    t1 = time.perf_counter()
    files: dict[str, Path] = {}
    for kind, verts in (("coarse", result.vertices_cam), ("detailed", result.vertices_detailed)):
        if verts is not None:
            for ext, p in _mesh_files(out / f"{name}_{kind}", verts, tri, result.colors).items():
                files[f"{kind}_{ext}"] = p
    depth_img, scale, offset = encode_depth_png(result.depth, result.mask)
    files["depth"] = _atomic(out / f"{name}_depth.png", lambda tmp: _write_png16(tmp, depth_img))
    t2 = time.perf_counter()
    if config.pictures and renderer is not None:
        pics = report.face_pictures(result, rgb, renderer, view_size=config.view_size,
                                    n_frames=config.turntable_frames,
                                    overlay_max_side=config.overlay_max_side, projection=projection)
        for kind, write in pics.items():
            suffix = ".gif" if kind == "turntable" else ".png"
            files[kind] = _atomic(out / f"{name}_{kind}{suffix}", write)
    t3 = time.perf_counter()
    times.update({"mesh": t1 - t0, "write": t2 - t1, "pictures": t3 - t2})
    face = result.face
    lm = _landmarks_photo(result, model, projection)
    residual = (result.depth - result.depth_coarse)[result.mask]
    pose = result.params["pose"]
    doc = {
        "format": RESULT_FORMAT, "version": RESULT_VERSION, "name": name,
        "photo": str(face.path), "photo_size": list(face.photo_size), "face_index": face.face_index,
        "box": _rounded(face.box, 2), "score": round(float(face.score), 4),
        "landmarks_68": None if lm is None else _rounded(lm, 2),
        "detector_landmarks_68": None if face.landmarks is None else _rounded(face.landmarks, 2),
        "crop": {**face.crop.to_dict(), "size": face.size},
        "camera": {"frame": "photo camera: x right, y up, looking along -z, mm", "projection": projection,
                   "fov_deg": config.fov, "photo_intrinsics": _rounded(face.photo_intrinsics, 4),
                   "crop_intrinsics": _rounded(face.intrinsics, 4)},
        "params": {"alpha_id": _rounded(result.params["alpha_id"], 5), "alpha_exp": _rounded(result.params["alpha_exp"], 5),
                   "pose_rad": {"yaw": round(float(pose[0]), 6), "pitch": round(float(pose[1]), 6),
                                "roll": round(float(pose[2]), 6)},
                   "pose_deg": {n: round(math.degrees(float(v)), 3) for n, v in zip(("yaw", "pitch", "roll"), pose)},
                   "rotation": _rounded(result.rotation, 6), "translation_mm": _rounded(result.params["translation"], 3),
                   **({"beta": _rounded(result.params["beta"], 5)} if "beta" in result.params else {}),
                   **({"sh": _rounded(result.params["sh"], 5)} if "sh" in result.params else {})},
        "depth": {"file": files["depth"].name, "kind": "refined" if result.refined else "coarse",
                  "size": int(result.depth.shape[0]), "intrinsics": _rounded(result.intrinsics, 4),
                  "scale_mm": scale, "offset_mm": offset,
                  "decode": "depth_mm = offset_mm + scale_mm * value where value > 0; value 0 = off the face; "
                            "seen through depth.intrinsics (the crop resampled to depth.size)"},
        "mesh": {"n_vertices": int(len(result.vertices_cam)), "n_triangles": int(len(tri)),
                 "n_visible_vertices": int(result.visible.sum()),
                 "detailed": "coarse vertices seen by the crop moved along their camera rays to the refined depth"
                             if result.refined else None},
        "fine": {"used": result.refined,
                 "residual_mm": None if not result.refined or residual.size == 0 else
                 {"mean_abs": round(float(np.abs(residual).mean()), 4), "max_abs": round(float(np.abs(residual).max()), 4)}},
        "checkpoints": {"coarse": stages.coarse_path, "coarse_step": stages.coarse_step,
                        "coarse_fit_landmarks": stages.fit_source(result.face),
                        "coarse_flip_test": bool(stages.coarse.flip_test and stages.fit_source(result.face) == "head"),
                        "fine": stages.fine_path, "fine_step": stages.fine_step,
                        "model_fingerprint": model.fingerprint},
        "files": {k: p.name for k, p in files.items()},
    }
    t4 = time.perf_counter()
    times["write"] += t4 - t3
    doc["timings_ms"] = {k: round(v * 1000.0, 2) for k, v in times.items()}
    files["json"] = _atomic(out / f"{name}.json", lambda tmp: tmp.write_text(_json_text(doc)))
    times["write"] += time.perf_counter() - t4
    return WrittenFace(name=name, photo=face.path, files=files, timings=times)


# ------------------------------------------------------------------------------ the run
@dataclasses.dataclass
class ReconstructRun:
    """What :func:`run_reconstruct` did."""

    out: Path
    written: list[WrittenFace]
    skipped: list[tuple[Path, str]]  # (file, one-line reason)
    index: Path | None = None

    def summary(self) -> str:
        """One line: faces written from how many photos, and what was skipped and why."""
        photos = len({w.photo for w in self.written})
        line = (f"{len(self.written)} face{'s' * (len(self.written) != 1)} from {photos} photo"
                f"{'s' * (photos != 1)} written to {self.out}")
        if self.skipped:
            line += f"; {len(self.skipped)} skipped (" + "; ".join(f"{p.name}: {r}" for p, r in self.skipped) + ")"
        return line


def _unique(name: str, used: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``, ... if an earlier face of this run took it."""
    out, k = name, 2
    while out in used:
        out, k = f"{name}_{k}", k + 1
    used.add(out)
    return out


class _LazyDetector:
    """A :class:`train.detector.FaceDetector` created on the first photo that needs detecting
    (a run whose detections all come from the cache never starts mediapipe)."""

    def __init__(self, min_score: float, max_faces: int):
        self.min_score, self.max_faces, self._detector = min_score, max_faces, None

    def detect(self, rgb: np.ndarray):
        if self._detector is None:
            from .detector import FaceDetector

            self._detector = FaceDetector(min_score=self.min_score, max_faces=self.max_faces)
        return self._detector.detect(rgb)

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None


OUTPUT_PICTURES = ("_depth.png", "_overlay.png", "_compare.png")  # what write_face writes that looks like a photo


def _output_folder(path: str, create: bool = True) -> Path:
    """``--out``, created if needed (``create``; else only checked that it can be a folder);
    :class:`ReconstructError` (one line) when it cannot be."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ReconstructError(f"--out {out}: exists and is not a folder")
    if not create:
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReconstructError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ReconstructError(f"--out {out}: the folder is not writable")
    return out


def _is_output(path: Path, out: Path) -> bool:
    """Whether ``path`` is a picture an earlier run wrote into ``out`` (an output folder among or
    inside the input folders must not feed its overlays back in as photos; a file of that name in
    any other folder is the user's)."""
    try:
        inside = path.resolve().parent == out.resolve()  # write_face writes into out itself
    except OSError:
        return False
    return inside and path.name.endswith(OUTPUT_PICTURES)


def run_reconstruct(inputs: Iterable[str | os.PathLike], config: ReconstructConfig, stages: Stages | None = None,
                    progress: Callable[[int], None] | None = None, on_total: Callable[[int], None] | None = None,
                    on_skip: Callable[[Path, str], None] | None = None, detector=None) -> ReconstructRun:
    """Reconstruct every face of the photos ``inputs`` (files and folders) into ``config.out``.

    Loads the stages (:func:`load_stages`, unless given) before touching a photo, so a bad
    checkpoint stops at once; then photo by photo: decode, detect, crop (:mod:`train.photos`),
    networks in batches of ``config.batch_size`` faces, meshes, files, and finally
    ``index.html``. A bad or faceless file is skipped with its reason. ``on_total(n)`` is called
    once with the number of photo files, ``progress(k)`` after each photo is done or skipped,
    ``on_skip(path, reason)`` for each skipped file as it happens.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    _output_folder(config.out, create=False)  # a file in the way: said before the networks load
    stages = load_stages(config) if stages is None else stages
    out = _output_folder(config.out)  # nothing is written before the checkpoints are accepted
    files, missing = list_photos(inputs, recursive=config.recursive, exclude=lambda p: _is_output(p, out))
    skipped: list[tuple[Path, str]] = []

    def skip(path: Path, reason: str) -> None:
        skipped.append((path, reason))
        log.info("skipped %s: %s", path, reason)
        if on_skip:
            on_skip(path, reason)

    if on_total:
        on_total(len(files) + len(missing))
    for path, reason in missing:
        skip(path, reason)
    if progress and missing:
        progress(len(missing))
    photo_config = PhotoConfig(size=stages.size, fov_deg=config.fov, all_faces=config.all_faces,
                               max_faces=config.max_faces, min_score=config.min_score, cache_dir=config.cache_dir,
                               use_cache=config.cache)
    own_detector = None
    if detector is None:
        detector = own_detector = _LazyDetector(config.min_score, config.max_faces)
    renderer = None
    written: list[WrittenFace] = []
    used_names: set[str] = set()
    pending: list[tuple[PhotoFace, dict[str, float]]] = []

    def flush() -> None:
        nonlocal renderer
        if not pending:
            return
        results = run_networks(stages, [f for f, _ in pending])
        if config.pictures and renderer is None:
            renderer = MeshRenderer(stages.model.triangles, stages.model.n_vertices)
        rgb_path, rgb = None, None
        for (face, times), res in zip(pending, results):
            t = dict(times)
            if face.path != rgb_path:  # the faces of one photo are consecutive: decode it once more
                rgb_path, t0 = face.path, time.perf_counter()
                try:
                    rgb, _ = load_photo(face.path, photo_config.max_pixels)
                except ValueError as e:  # changed on disk since it was cropped
                    rgb = None
                    skip(face.path, f"cannot be read again to write its outputs ({e})")
                t["reload"] = time.perf_counter() - t0
            if rgb is not None:
                name = _unique(face.name, used_names)
                try:
                    written.append(write_face(res, rgb, out, name, stages, config, renderer, t))
                except OSError as e:  # a full disk, a name the file system refuses: this face, not the run
                    skip(face.path, f"cannot write its outputs as {name} ({e.strerror or e})")
                except Exception as e:  # one face's failure (a degenerate mesh, ...) must not stop the folder
                    log.exception("%s: writing %s failed", face.path, name)
                    skip(face.path, f"writing its outputs as {name} failed ({type(e).__name__}: "
                                    f"{' '.join(str(e).split())})")
        if progress:
            progress(len({f.path for f, _ in pending}))
        pending.clear()

    try:
        for path in files:
            run: PhotoRun = prepare_photos([path], photo_config, detector=detector)
            for p, reason in run.skipped:
                skip(p, reason)
            if not run.faces:
                if progress:
                    progress(1)
                continue
            times = run.timings.get(path, {})
            pending.extend((face, times) for face in run.faces)  # all faces of a photo go in one batch
            if len(pending) >= config.batch_size:
                flush()
        flush()
    finally:
        if own_detector is not None:
            own_detector.close()
        if renderer is not None:
            renderer.close()
    index = None
    if written or any(out.glob("*.json")):
        try:
            index = report.write_index(out, skipped=skipped)
        except OSError as e:  # the faces' files are written; only the page is missing
            log.warning("cannot write %s (%s)", out / "index.html", e.strerror or e)
    result = ReconstructRun(out=out, written=written, skipped=skipped, index=index)
    log.info("%s", result.summary())
    return result
