"""Offline face detection and 68-point landmarks for real photos (mediapipe 0.10.14).

mediapipe 0.10.14 ships its model files inside the wheel (later releases do not), so detection
runs with no download: ``solutions.face_detection`` (BlazeFace) finds the faces — the full-range
model first; when it finds none, the short-range model (which catches a head that fills the
image, e.g. a tight crop) and finally the face mesh's own detector — , then ``solutions.face_mesh`` (468 points) runs on a square crop around each box and its
points are mapped to the 68 iBUG 300-W points with :data:`IBUG68_FROM_MESH`.

Coordinates are in the project's continuous pixel convention (docs/DESIGN.md): ``u = x * W``,
``v = y * H`` for mediapipe's normalised ``(x, y)``, so the centre of pixel (row i, col j) is
``(j + 0.5, i + 0.5)``.

The 468 → 68 table
------------------
Each iBUG point ``k`` is ``w_k * mesh[i_k] + (1 - w_k) * mesh[j_k]`` (a mesh point, or a point on
the segment between two neighbouring mesh points). The table was derived by
``scripts/derive_ibug68_table.py`` from mediapipe's own contour topology
(``face_mesh_connections.FACEMESH_*``: face oval, eyes, eyebrows, lips, nose) and the 3-D mesh
that mediapipe returns for scikit-image's ``astronaut.png``, with rules that follow the iBUG
definitions (arc lengths measured in 3-D, so the head pose of the photo does not matter):

* eyes: corners = the extreme points of each eye contour across the face; the two upper and two
  lower lid points at 1/3 and 2/3 of the upper / lower arc;
* eyebrows: the upper edge of each brow, 5 points evenly spaced end to end;
* lips: corners = the extreme points of the outer / inner ring; 5 (outer) or 3 (inner) points
  evenly spaced on each arc between them;
* nose: bridge 27–30 evenly spaced on the midline from mesh point 168 (between the eyes) to the
  most forward midline point (the tip); 33 = the subnasale (mesh 2); 31 / 35 the most lateral
  point of each nostril contour, 32 / 34 half way to the subnasale;
* jaw 0–16: 17 points evenly spaced along the face oval through the chin, between the two points
  where it crosses the height of the eye corners.

It agrees with community tables (e.g. the one in ``PeizhiYan/Mediapipe_2_Dlib_Landmarks``) on the
eye corners, lid points, brows, nose bridge and mouth corners; it differs on the jaw, whose iBUG
points lie on the visible silhouette and have no fixed mesh point anyway. Its accuracy is
measured on renders of the built-in model, where the true 68 points are known
(``benchmarks/render_realism.py``; ``tests/test_detector.py`` bounds it).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

__all__ = ["FaceDetection", "FaceDetector", "IBUG68_FROM_MESH", "mesh_to_ibug68", "DETECTOR_VERSION"]

log = logging.getLogger(__name__)

DETECTOR_VERSION = "mediapipe-0.10.14/full+short-range+mesh468/ibug68-v1"
"""Changes whenever detection results may change (part of the photo pipeline's cache key)."""

# (i, j, w) per iBUG point: w * mesh[i] + (1 - w) * mesh[j]  (scripts/derive_ibug68_table.py)
_TABLE = [
    (162, 127, 0.835), (127, 234, 0.542), (93, 132, 0.977), (132, 58, 0.558), (58, 172, 0.256),  # jaw 0-4
    (136, 150, 0.88), (150, 149, 0.351), (176, 148, 0.641), (152, 377, 0.991), (377, 400, 0.355),  # 5-9
    (378, 379, 0.666), (379, 365, 0.14), (397, 288, 0.761), (288, 361, 0.461), (361, 323, 0.041),  # 10-14
    (454, 356, 0.48), (356, 389, 0.183),  # jaw 15-16
    (70, 63, 1.0), (63, 105, 0.881), (105, 66, 0.81), (66, 107, 0.872), (66, 107, 0.0),  # right brow 17-21
    (336, 296, 1.0), (336, 296, 0.126), (296, 334, 0.183), (334, 293, 0.116), (293, 300, 0.0),  # left brow 22-26
    (168, 6, 1.0), (6, 197, 0.328), (195, 5, 0.622), (5, 4, 0.0),  # nose bridge 27-30
    (64, 64, 1.0), (97, 98, 0.598), (2, 2, 1.0), (326, 327, 0.606), (294, 294, 1.0),  # lower nose 31-35
    (33, 33, 1.0), (160, 159, 0.766), (158, 157, 0.653), (133, 133, 1.0), (153, 145, 0.748),  # right eye 36-40
    (144, 163, 0.795),  # 41
    (362, 362, 1.0), (384, 385, 0.329), (386, 387, 0.228), (263, 263, 1.0), (390, 373, 0.204),  # left eye 42-46
    (374, 380, 0.261),  # 47
    (61, 61, 1.0), (185, 40, 0.036), (39, 37, 0.441), (0, 267, 0.958), (267, 269, 0.497),  # outer lips 48-52
    (270, 409, 0.918), (291, 291, 1.0), (375, 321, 0.153), (405, 314, 0.572), (314, 17, 0.029),  # 53-57
    (84, 181, 0.475), (91, 146, 0.873),  # 58-59
    (78, 78, 1.0), (80, 81, 0.219), (13, 312, 0.959), (311, 310, 0.697), (308, 308, 1.0),  # inner lips 60-64
    (318, 402, 0.308), (317, 14, 0.039), (178, 88, 0.76),  # 65-67
]
IBUG68_FROM_MESH = (
    np.array([(i, j) for i, j, _ in _TABLE], dtype=np.int64),  # (68, 2) mesh indices
    np.array([w for _, _, w in _TABLE], dtype=np.float64),  # (68,) weight of the first index
)
"""``(indices (68, 2), weights (68,))``: iBUG point k = w_k mesh[i_k] + (1 - w_k) mesh[j_k]."""

_MESH_CROP_SCALE = 1.6  # face mesh runs on a square crop this many times the detector box's larger side


def mesh_to_ibug68(mesh: np.ndarray) -> np.ndarray:
    """468 mediapipe points ``(468, D)`` (or batched ``(..., 468, D)``) -> 68 iBUG points ``(..., 68, D)``."""
    mesh = np.asarray(mesh, dtype=np.float64)
    if mesh.ndim < 2 or mesh.shape[-2] < 468:
        raise ValueError(f"mesh must be (..., 468, D), got {mesh.shape}")
    idx, w = IBUG68_FROM_MESH
    a, b = mesh[..., idx[:, 0], :], mesh[..., idx[:, 1], :]  # (..., 68, D) each
    return w[:, None] * a + (1.0 - w[:, None]) * b


@dataclasses.dataclass(frozen=True)
class FaceDetection:
    """One face in an image (pixel coordinates of that image, continuous convention)."""

    box: np.ndarray
    """(4,) float32 ``[x0, y0, x1, y1]`` of the detector's face box."""
    score: float
    """detector confidence in [0, 1]."""
    landmarks: np.ndarray | None
    """(68, 2) float32 iBUG points ``(u, v)``, None when the face mesh failed on this face."""
    mesh: np.ndarray | None
    """(468, 3) float32 mediapipe points ``(u, v, z)`` (z in the same pixel units, smaller = nearer)."""

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


class FaceDetector:
    """mediapipe face detection + face mesh, reusable for many images (not thread-safe).

    ``min_score``: detections below it are dropped; ``max_faces``: at most this many faces per image
    (largest first). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, min_score: float = 0.5, max_faces: int = 4):
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        try:
            from mediapipe.python.solutions import face_detection, face_mesh
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise ImportError("face detection needs mediapipe==0.10.14 (pip install 'mediapipe==0.10.14')") from e
        self.min_score, self.max_faces = float(min_score), int(max_faces)
        # model_selection=1: the full-range model (faces up to ~5 m), which also finds large faces
        self._detector = face_detection.FaceDetection(model_selection=1, min_detection_confidence=self.min_score)
        self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False,
                                        min_detection_confidence=0.3)
        self._short = None  # short-range detector: first fallback when the full-range one finds nothing
        self._mesh_full = None  # a multi-face mesh on the whole image: the last fallback

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for m in (self._detector, self._short, self._mesh, self._mesh_full):
            if m is not None:
                m.close()
        self._detector = self._short = self._mesh = self._mesh_full = None

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """Faces in an RGB ``uint8`` image ``(H, W, 3)``, largest box first."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        if self._detector is None:
            raise ValueError("FaceDetector is closed")
        h, w = image.shape[:2]
        image = np.ascontiguousarray(image)
        res = self._detector.process(image)
        fallback = not res.detections
        if fallback:
            if self._short is None:
                from mediapipe.python.solutions import face_detection

                self._short = face_detection.FaceDetection(model_selection=0, min_detection_confidence=self.min_score)
            res = self._short.process(image)
        boxes = []
        for d in res.detections or []:
            bb = d.location_data.relative_bounding_box
            box = np.array([bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h])
            boxes.append((box, float(d.score[0])))
        if not boxes:
            return self._mesh_only(image)
        boxes.sort(key=lambda b: -(b[0][2] - b[0][0]) * (b[0][3] - b[0][1]))
        faces = [FaceDetection(box=box.astype(np.float32), score=score, landmarks=lm, mesh=mesh)
                 for box, score in boxes[: self.max_faces]
                 for lm, mesh in [self._landmarks_in_box(image, box)]]
        if fallback:
            # the short-range model fires on textures (coins, star fields, ...) at scores ~0.5-0.7
            # where the full-range one finds nothing: keep only boxes the face mesh confirms
            faces = [f for f in faces if f.landmarks is not None]
        return faces

    def _landmarks_in_box(self, image: np.ndarray, box: np.ndarray):
        """Face mesh on a square crop around ``box`` -> (68 points, 468 points) in image pixels."""
        h, w = image.shape[:2]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(box[2] - box[0], box[3] - box[1]) * _MESH_CROP_SCALE
        x0, y0 = int(np.floor(cx - side / 2)), int(np.floor(cy - side / 2))
        s = max(int(np.ceil(side)), 8)
        crop = np.zeros((s, s, 3), np.uint8)  # zero padding where the square leaves the image
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + s, w), min(y0 + s, h)
        if sx1 <= sx0 or sy1 <= sy0:
            return None, None
        crop[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
        res = self._mesh.process(crop)
        if not res.multi_face_landmarks:
            return None, None
        pts = np.array([[p.x, p.y, p.z] for p in res.multi_face_landmarks[0].landmark[:468]], np.float64) * s
        pts[:, 0] += x0
        pts[:, 1] += y0
        return mesh_to_ibug68(pts[:, :2]).astype(np.float32), pts.astype(np.float32)

    def _mesh_only(self, image: np.ndarray) -> list[FaceDetection]:
        """No detector box: the face mesh's own (short-range) detector on the whole image, boxes
        from the landmarks, score 0 (unknown)."""
        if self._mesh_full is None:
            from mediapipe.python.solutions import face_mesh

            self._mesh_full = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=self.max_faces,
                                                 refine_landmarks=False, min_detection_confidence=self.min_score)
        h, w = image.shape[:2]
        res = self._mesh_full.process(image)
        out = []
        for lms in res.multi_face_landmarks or []:
            pts = np.array([[p.x * w, p.y * h, p.z * w] for p in lms.landmark[:468]], np.float64)
            box = np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])
            out.append(FaceDetection(box=box.astype(np.float32), score=0.0,
                                     landmarks=mesh_to_ibug68(pts[:, :2]).astype(np.float32),
                                     mesh=pts.astype(np.float32)))
        out.sort(key=lambda d: -d.area)
        return out
