"""train.report: the pictures of a reconstruction (overlay, compare, turntable, detail map) on the
tiny model placed in front of a synthetic photo, and the index page (escaping, what it lists)."""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synth import camera
from synth.framing import Crop
from synth.render import MeshRenderer
from train import report
from train.photos import PhotoFace, photo_intrinsics
from train.reconstruct import FaceResult
from train.report import RESULT_FORMAT

S = 48  # crop size


@pytest.fixture(scope="module")
def renderer(tiny_model):
    with MeshRenderer(tiny_model.triangles, tiny_model.n_vertices) as r:
        yield r


@pytest.fixture(scope="module")
def result(tiny_model):
    """The tiny model's mean face 600 mm in front of a 160 x 120 photo's camera, cropped around it."""
    w, h = 160, 120
    k_photo = photo_intrinsics(w, h)
    verts = np.asarray(tiny_model.mean_shape, np.float64) + [0.0, 0.0, -600.0]
    uv, _ = camera.project(verts, k_photo)
    crop = Crop(center=uv.mean(0), side=float(np.ptp(uv, axis=0).max() * 1.5))
    face = PhotoFace(path=Path("photo.png"), face_index=0, photo_size=(w, h), crop=crop, size=S,
                     image=np.zeros((S, S, 3), np.uint8), intrinsics=crop.map_intrinsics(k_photo, S),
                     photo_intrinsics=k_photo, box=np.array([0.0, 0.0, 1.0, 1.0]), score=1.0, landmarks=None)
    from train import depth_render

    frags = depth_render.rasterize(torch.from_numpy(verts[None]).float(), torch.from_numpy(
        np.asarray(tiny_model.triangles, np.int64)), torch.from_numpy(face.intrinsics[None]).float(), (S, S))
    depth_c, mask = frags.depth[0].numpy(), frags.mask[0].numpy()
    res = FaceResult(face=face, params={}, rotation=np.eye(3), vertices_cam=verts, intrinsics=face.intrinsics,
                     depth_coarse=depth_c,
                     depth=depth_c - 0.5 * mask, mask=mask, refined=True, timings={})  # 0.5 mm raised everywhere
    res.vertices_detailed = verts * ((-verts[:, 2:] - 0.5) / -verts[:, 2:])  # 0.5 mm nearer along the rays
    res.colors = np.full((tiny_model.n_vertices, 3), 200, np.uint8)
    return res


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)


def test_overlay_keeps_the_photo_off_the_face(result, photo, renderer):
    over = report.overlay_image(result, photo, renderer, max_side=1024)
    assert over.shape == photo.shape
    changed = np.any(over != photo, axis=2)
    assert 0.02 < changed.mean() < 0.8  # the face covers part of the photo
    small = report.overlay_image(result, photo, renderer, max_side=80)  # scaled: the same face, half size
    assert small.shape == (60, 80, 3)
    scaled = np.asarray(Image.fromarray(photo).resize((80, 60), Image.Resampling.LANCZOS, reducing_gap=3.0))
    changed_small = np.any(small != scaled, axis=2)
    # a quarter of the pixels: within a few percent of the full-size fraction (edge pixels)
    assert abs(changed_small.mean() - changed.mean()) < 0.05


def test_compare_has_four_panels_and_the_detail_map_shows_raised_in_red(result, photo, renderer):
    img = report.compare_image(result, photo, renderer, view_size=64)
    assert img.shape == (64 + 20, 4 * 64, 3)
    dmap, half = report.detail_map(result.depth_coarse, result.depth, result.mask, 64)
    assert half == pytest.approx(0.5, abs=1e-4)  # the 99th percentile of a constant 0.5 mm
    on = np.any(dmap != report.BACKGROUND, axis=2)
    assert on.mean() > 0.05
    r, b = dmap[on][:, 0].astype(int), dmap[on][:, 2].astype(int)
    assert np.median(r - b) > 50  # raised (coarse - refined > 0): the red end of the map (103, 0, 31)
    sunk, _ = report.detail_map(result.depth_coarse, 2 * result.depth_coarse - result.depth, result.mask, 64)
    assert np.median(sunk[on][:, 2].astype(int) - sunk[on][:, 0]) > 50  # the blue end (5, 48, 97)
    coarse_only = FaceResult(**{**result.__dict__, "vertices_detailed": None, "refined": False})
    assert report.compare_image(coarse_only, photo, renderer, view_size=64).shape == (84, 3 * 64, 3)


def test_turntable_swings_both_ways(result, renderer):
    k = result.face.intrinsics * [[64 / S], [64 / S], [1]]
    frames = report.turntable_frames(renderer, result.vertices_cam, k, 64, 8)
    front, _ = report.clay_view(renderer, result.vertices_cam, k, 64)
    assert len(frames) == 8 and all(f.shape == (64, 64, 3) for f in frames)
    np.testing.assert_array_equal(frames[0], front)  # yaw 0 first
    left, right = frames[2], frames[6]  # +60 and -60 degrees
    assert np.any(left != right) and np.any(left != front)
    # the built-in face is left-right symmetric: -60 degrees is +60 mirrored, up to the light
    # (from the upper left) and pixel-centre rounding: compare silhouettes
    sil = lambda f: np.any(f != report.BACKGROUND, axis=2)  # noqa: E731
    assert (sil(left) != sil(right)[:, ::-1]).mean() < 0.05


# ------------------------------------------------------------------------------ the index page
class _Parser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data):
        self.text.append(data)


def _doc(name: str, photo: str) -> dict:
    return {"format": RESULT_FORMAT, "name": name, "photo": photo, "face_index": 0,
            "params": {"pose_deg": {"yaw": 1.0, "pitch": 2.0, "roll": 3.0}}, "fine": {"used": True},
            "timings_ms": {"coarse": 10.0}, "files": {"compare": f"{name}_compare.png", "turntable": f"{name}_turntable.gif",
                                                     "coarse_obj": f"{name}_coarse.obj"}}


def test_index_escapes_names_and_lists_only_results(tmp_path):
    hostile = '<script>alert("x")</script>'
    (tmp_path / "plain.json").write_text(json.dumps(_doc("plain", "/photos/plain.jpg")))
    (tmp_path / "evil.json").write_text(json.dumps(_doc(hostile, f"/photos/{hostile}.jpg")))
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else", "name": "other"}))
    (tmp_path / "broken.json").write_text("{not json")
    path = report.write_index(tmp_path, skipped=[(Path(f"/in/{hostile}.png"), "not an image file PIL can read")])
    page = path.read_text()
    p = _Parser()
    p.feed(page)
    assert "script" not in p.tags and not any(k.startswith("on") for k, _ in p.attrs)
    assert p.tags.count("img") == 4 and "other" not in page
    srcs = [v for k, v in p.attrs if k == "src"]
    assert "%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E_compare.png" in srcs  # URL-quoted link
    text = "".join(p.text)
    assert f"photo /photos/{hostile}.jpg" in text  # shown as the text it is
    assert f"/in/{hostile}.png: not an image file PIL can read" in text
    assert "2 reconstructions" in text
    assert not list(tmp_path.glob(".tmp-*"))
