"""train.detector: mediapipe detection + the 468 -> 68 table, on a real photo and on renders."""

from __future__ import annotations

import numpy as np
import pytest

from train.detector import IBUG68_FROM_MESH, FaceDetector, mesh_to_ibug68


@pytest.fixture(scope="module")
def detector():
    with FaceDetector(max_faces=4) as det:
        yield det


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # (512, 512, 3) uint8, a real, near-frontal face photo (NASA, public domain)


def test_table_shape_and_weights():
    idx, w = IBUG68_FROM_MESH
    assert idx.shape == (68, 2) and w.shape == (68,)
    assert idx.min() >= 0 and idx.max() < 468
    assert np.all((w >= 0) & (w <= 1))


def test_mesh_to_ibug68_is_the_weighted_pair_average():
    rng = np.random.default_rng(0)
    mesh = rng.normal(size=(2, 468, 3))
    out = mesh_to_ibug68(mesh)
    idx, w = IBUG68_FROM_MESH
    k = 20  # any point: the formula, written out
    want = w[k] * mesh[:, idx[k, 0]] + (1 - w[k]) * mesh[:, idx[k, 1]]
    np.testing.assert_allclose(out[:, k], want)
    assert out.shape == (2, 68, 3)
    with pytest.raises(ValueError, match="mesh must be"):
        mesh_to_ibug68(np.zeros((10, 2)))


def test_real_photo_one_face_with_ordered_landmarks(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.8 and f.landmarks is not None and f.mesh.shape == (468, 3)
    lm = f.landmarks
    x0, y0, x1, y1 = f.box
    # the inner points (brows, eyes, nose, mouth) lie in the detector box, give or take 15 %
    pad = 0.15 * (x1 - x0)
    inner = lm[17:]
    assert np.all((inner[:, 0] > x0 - pad) & (inner[:, 0] < x1 + pad) & (inner[:, 1] > y0 - pad) & (inner[:, 1] < y1 + pad))
    # anatomy: right eye (36-41) left of the left eye (42-47) in the image; brows above eyes above
    # nose tip above mouth above chin
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean()
    assert lm[17:27, 1].mean() < lm[36:48, 1].mean() < lm[30, 1] < lm[48:68, 1].mean() < lm[8, 1]
    assert lm[48, 0] < lm[54, 0] and lm[60, 0] < lm[64, 0]  # mouth corners in order


def test_two_faces_largest_first_and_no_face(detector, astronaut):
    from PIL import Image
    from skimage import data

    face = astronaut[20:260, 110:350]  # (240, 240) the head
    small = np.asarray(Image.fromarray(face).resize((120, 120), Image.BILINEAR))
    canvas = np.full((300, 500, 3), 128, np.uint8)
    canvas[30:270, 10:250] = face
    canvas[100:220, 330:450] = small
    faces = detector.detect(canvas)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert faces[0].box[0] < 250 <= faces[1].box[2]  # the big one on the left, the small one on the right
    brick = np.repeat(data.brick()[..., None], 3, axis=2)  # a texture, no face
    assert detector.detect(brick) == []


def test_bad_image_is_refused(detector):
    with pytest.raises(ValueError, match="image must be"):
        detector.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="image must be"):
        detector.detect(np.zeros((10, 10, 3), np.float32))


def test_landmarks_on_renders_match_the_rendered_ground_truth(detector):
    """The table checked where the true 68 points are known: near-frontal renders of the built-in
    model (2 mm grid, 224 px). The 51 inner points (17-67) must agree to a median NME below 0.10
    (measured 0.06 at the time of writing; a wrong or shuffled table gives > 0.3)."""
    from morphable_model.builtin import build_face_model
    from synth.render import FaceRenderer
    from synth.sampling import SamplingConfig, sample_params

    model = build_face_model(grid_mm=2.0, seed=0)
    cfg = SamplingConfig(yaw_deg=20, pitch_deg=10, roll_deg=5, background="solid")
    renderer = FaceRenderer(model, 224)
    nme = []
    try:
        for i in range(4):
            p = sample_params(model, cfg, 224, 3, i)
            out = renderer.render(p, renderer.model_arrays([p])[0])
            faces = detector.detect(out.image)
            assert faces and faces[0].landmarks is not None, f"no face found in render {i}"
            gt, lm = out.landmarks, faces[0].landmarks
            iod = np.linalg.norm(gt[36] - gt[45])
            nme.append(np.linalg.norm(lm[17:] - gt[17:], axis=1).mean() / iod)
    finally:
        renderer.close()
    assert np.median(nme) < 0.10, nme
