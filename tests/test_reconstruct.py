"""train.reconstruct and ``train-cli reconstruct`` on a tiny CoarseNet trained and exported in a
fixture: every file written and re-readable, bad and faceless photos skipped with their reason,
exit codes, ``--all-faces`` on a photo with two faces, hostile file names, refused checkpoints,
the detailed mesh on a known refinement (the fine-stage slot), the 16-bit depth encoding."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from train import reconstruct as rc
from train.cli import main
from train.config import ReconstructConfig
from train.photos import PhotoConfig, prepare_photos

FAST = ["--no-fine", "--view-size", "64", "--turntable-frames", "4", "--overlay-max-side", "160", "--no-progress",
        "--device", "cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The two offline photos (scikit-image's astronaut, matplotlib's Grace Hopper; public domain),
    a text file renamed .jpg, a photo without a face, and a copy of the astronaut with a hostile name."""
    import matplotlib.cbook
    from skimage import data

    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(d / "astronaut.png")
    shutil.copy(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), d / "grace_hopper.jpg")
    (d / "notes.jpg").write_text("this is text, not a photo\n")
    Image.fromarray(np.full((96, 128, 3), 200, np.uint8)).save(d / "blank.png")  # no face in it
    return d


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("detections")


def _run(args, out, weights, cache):
    return CliRunner().invoke(main, ["reconstruct", *map(str, args), "--out", str(out), "--coarse", str(weights),
                                     "--cache-dir", str(cache), *FAST])


def test_every_file_written_and_readable(photos, tiny_coarse_weights, tiny_model, cache, tmp_path):
    import trimesh

    out = tmp_path / "out"
    res = _run([photos], out, tiny_coarse_weights, cache)
    assert res.exit_code == 0, res.output
    assert "skipped" in res.output and "notes.jpg: not an image file PIL can read" in res.output
    assert "blank.png: no face found" in res.output
    assert "2 faces from 2 photos written" in res.output and "index.html" in res.output
    for name, photo in (("astronaut", "astronaut.png"), ("grace_hopper", "grace_hopper.jpg")):
        doc = json.loads((out / f"{name}.json").read_text())
        w, h = Image.open(photos / photo).size
        assert doc["photo_size"] == [w, h] and doc["name"] == name and doc["fine"]["used"] is False
        lm = np.array(doc["landmarks_68"])
        assert lm.shape == (68, 2)
        assert (lm >= 0).all() and (lm[:, 0] <= w).all() and (lm[:, 1] <= h).all()  # inside the photo
        box = np.array(doc["box"])
        # the model's landmarks lie around the detector's face box (the untrained net puts the mean
        # face where the crop rule expects a face): their centre within half a box of the box's
        size = box[2:] - box[:2]
        assert np.all(np.abs(lm.mean(0) - (box[:2] + box[2:]) / 2) < 0.5 * size)
        assert set(doc["timings_ms"]) >= {"decode", "detect", "crop", "coarse", "fine", "mesh", "write", "pictures"}
        assert len(doc["params"]["alpha_id"]) >= 1 and len(doc["params"]["rotation"]) == 3
        for kind in ("coarse_obj", "coarse_ply"):
            mesh = trimesh.load(out / doc["files"][kind], process=False)
            assert mesh.vertices.shape == (tiny_model.n_vertices, 3) and len(mesh.faces) == len(tiny_model.triangles)
            assert mesh.visual.vertex_colors.shape[0] == tiny_model.n_vertices
            assert (mesh.vertices[:, 2] < 0).all()  # in front of the photo's camera
        obj = trimesh.load(out / doc["files"]["coarse_obj"], process=False)
        ply = trimesh.load(out / doc["files"]["coarse_ply"], process=False)
        np.testing.assert_allclose(obj.vertices, ply.vertices, atol=5e-4)  # OBJ keeps 1 um
        np.testing.assert_array_equal(obj.visual.vertex_colors, ply.visual.vertex_colors)
        assert np.ptp(ply.visual.vertex_colors[:, :3].astype(int), axis=0).min() > 30  # sampled from the photo
        assert "detailed_obj" not in doc["files"]  # --no-fine: no detailed mesh
        depth = rc.decode_depth_png(out / doc["files"]["depth"], doc["depth"]["scale_mm"], doc["depth"]["offset_mm"])
        assert depth.shape == (doc["crop"]["size"],) * 2 and (depth > 0).any()
        verts = trimesh.load(out / doc["files"]["coarse_ply"], process=False).vertices
        on = depth[depth > 0]
        # the depth map is the coarse mesh seen from the crop: within its depth range (1e-3 mm float32 slack)
        assert on.min() >= (-verts[:, 2]).min() - 1e-3 and on.max() <= (-verts[:, 2]).max() + 1e-3
        overlay = Image.open(out / doc["files"]["overlay"])
        assert overlay.size == (min(w, round(w * 160 / max(w, h))), min(h, round(h * 160 / max(w, h))))
        assert Image.open(out / doc["files"]["compare"]).size[0] == 3 * 64  # photo | coarse | coloured coarse
        gif = Image.open(out / doc["files"]["turntable"])
        assert gif.n_frames == 4 and gif.size == (64, 64)
    page = (out / "index.html").read_text()
    assert "astronaut_compare.png" in page and "grace_hopper_turntable.gif" in page and "notes.jpg" in page
    assert not list(out.glob(".tmp-*"))  # no temporary file left behind


def test_fit_landmarks_detector_or_head(photos, tiny_shards, tmp_model_h5, cache, tmp_path):
    """A network with a landmark head fits the detector's 68 points by default (no mirrored reading
    then), its head's with --fit-landmarks head (with the flip test); the JSON says which."""
    from train.checkpoint import export_inference
    from train.coarse_task import train_coarse
    from train.config import CoarseConfig

    config = CoarseConfig(data=str(tiny_shards(n=24, size=48, seed=4)), out=str(tmp_path / "run"),
                          model=str(tmp_model_h5), iters=2, size=32, batch_size=6, steps=2, width_mult=0.125,
                          workers=0, threads=1, progress=False, val_every=1000, log_every=1, landmark_init=True)
    weights = export_inference(train_coarse(config).checkpoint, tmp_path / "head.safetensors")
    docs = {}
    for extra in ([], ["--fit-landmarks", "head"]):
        out = tmp_path / ("out" + "".join(extra))
        res = CliRunner().invoke(main, ["reconstruct", str(photos / "astronaut.png"), "--out", str(out), "--coarse",
                                        str(weights), "--cache-dir", str(cache), *FAST, *extra])
        assert res.exit_code == 0, res.output
        docs[tuple(extra)] = json.loads((out / "astronaut.json").read_text())
    det, head = docs[()], docs[("--fit-landmarks", "head")]
    assert det["checkpoints"]["coarse_fit_landmarks"] == "detector" and not det["checkpoints"]["coarse_flip_test"]
    assert head["checkpoints"]["coarse_fit_landmarks"] == "head" and head["checkpoints"]["coarse_flip_test"]
    # an untrained head's points are nowhere near the detector's: the fitted pose differs
    assert np.abs(np.subtract(det["params"]["translation_mm"], head["params"]["translation_mm"])).max() > 1e-2
    res = CliRunner().invoke(main, ["reconstruct", str(photos / "astronaut.png"), "--out", str(tmp_path / "x"),
                                    "--fit-landmarks", "hand"])
    assert res.exit_code == 2 and "'hand' is not one of 'detector', 'head'" in res.output
    # evaluate --photos names the head's own figures landmark_head_nme51 / _nme68 (per photo) and
    # landmark_head: {nme51_median, nme68_median}
    report = tmp_path / "ev.json"
    res = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(weights), "--photos", str(photos / "astronaut.png"),
                                    "--cache-dir", str(cache), "--device", "cpu", "--json", str(report)])
    assert res.exit_code == 0, res.output
    ph = json.loads(report.read_text())["photos"]
    (row,) = ph["per_photo"]
    assert 0 < row["landmark_head_nme51"] < 10 and 0 < row["landmark_head_nme68"] < 10
    assert ph["landmark_head"] == {"nme51_median": row["landmark_head_nme51"], "nme68_median": row["landmark_head_nme68"]}

    # crops larger than CoarseNet's input (a fine stage at twice its size, as shipped: 128 vs 64 px):
    # the detector's points reach the fit at CoarseNet's scale, i.e. as if mapped into a crop of its size
    from train.params import decode_params

    stages = rc.load_stages(ReconstructConfig(out=str(tmp_path / "y"), coarse=str(weights), no_fine=True, device="cpu"))
    stages.fine = RampFine(2 * stages.coarse_size)
    (face,) = prepare_photos([photos / "astronaut.png"], PhotoConfig(size=stages.size, cache_dir=str(cache))).faces
    (got,) = rc.run_networks(stages, [face])
    net, s = stages.coarse, stages.coarse_size
    image = torch.from_numpy(face.image.copy()).permute(2, 0, 1)[None].float() / 255.0
    img_s, k_s = rc._resized(image, torch.from_numpy(face.intrinsics).float()[None], s)
    points = torch.from_numpy(face.crop.map_points(face.landmarks, s)).float()[None]
    with torch.no_grad():
        est = net(img_s, k_s, fit_points=points)[-1]
    want = decode_params(est, net.layout, net.stats, k_s, (s, s), net.render.projection)
    np.testing.assert_allclose(got.params["alpha_id"], want.alpha_id[0].double().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.params["translation"], want.translation[0].double().numpy(), rtol=1e-4, atol=1e-3)


def test_nothing_reconstructed_is_a_failure(photos, tiny_coarse_weights, cache, tmp_path):
    res = _run([photos / "notes.jpg", photos / "blank.png", tmp_path / "missing.png"], tmp_path / "o",
               tiny_coarse_weights, cache)
    assert res.exit_code != 0
    assert "nothing reconstructed: 3 input(s) skipped" in res.output
    assert "missing.png: does not exist" in res.output and "blank.png: no face found" in res.output


def test_all_faces_on_a_photo_with_two_faces(tiny_coarse_weights, cache, tmp_path):
    from skimage import data

    head = data.astronaut()[20:260, 110:350]  # (240, 240): her head
    canvas = np.full((300, 500, 3), 128, np.uint8)
    canvas[30:270, 10:250] = head
    canvas[100:220, 330:450] = np.asarray(Image.fromarray(head).resize((120, 120), Image.Resampling.BILINEAR))
    Image.fromarray(canvas).save(tmp_path / "two.png")
    one = _run([tmp_path / "two.png"], tmp_path / "one", tiny_coarse_weights, cache)
    assert one.exit_code == 0, one.output
    assert sorted(p.name for p in (tmp_path / "one").glob("*.json")) == ["two.json"]
    both = _run([tmp_path / "two.png", "--all-faces"], tmp_path / "both", tiny_coarse_weights, cache)
    assert both.exit_code == 0, both.output
    assert "2 faces from 1 photo written" in both.output
    docs = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "both").glob("*.json")}
    assert sorted(docs) == ["two", "two_face1"]
    big, small = np.array(docs["two"]["landmarks_68"]), np.array(docs["two_face1"]["landmarks_68"])
    assert big[:, 0].mean() < 250 < small[:, 0].mean()  # each face's landmarks on its own head
    assert np.ptp(big[:, 1]) > 1.5 * np.ptp(small[:, 1])
    assert docs["two"]["face_index"] == 0 and docs["two_face1"]["face_index"] == 1


def test_same_stems_get_distinct_names_and_hostile_names_stay_text(photos, tiny_coarse_weights, cache, tmp_path):
    """Two photos named alike in different folders do not overwrite each other; a photo whose
    name and folder are markup is written under that name and shown as text on the page."""
    from html.parser import HTMLParser

    a, b = tmp_path / "a", tmp_path / "b"
    evil_dir = tmp_path / "<script>alert(1)<"  # with the file below, the path reads <script>alert(1)</script>.png
    for d in (a, b, evil_dir):
        d.mkdir()
        shutil.copy(photos / "astronaut.png", d / "face.png")
    shutil.copy(photos / "astronaut.png", evil_dir / "script>.png")
    shutil.copy(photos / "astronaut.png", a / '<img src=x onerror="alert(2)">.png')
    out = tmp_path / "out"
    res = _run([a, b, evil_dir / "script>.png"], out, tiny_coarse_weights, cache)
    assert res.exit_code == 0, res.output
    names = sorted(json.loads(p.read_text())["name"] for p in out.glob("*.json"))
    assert names == ['<img src=x onerror="alert(2)">', "face", "face_2", "script>"]

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.srcs, self.hrefs = [], [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            d = dict(attrs)
            if tag == "img":
                self.srcs.append(d["src"])
            if tag == "a":
                self.hrefs.append(d["href"])
            assert not any(k.startswith("on") for k in d), (tag, attrs)

    from urllib.parse import unquote

    page = (out / "index.html").read_text()
    parser = Tags()
    parser.feed(page)
    assert "script" not in parser.tags
    assert len(parser.srcs) == 2 * 4  # compare + turntable per face, nothing injected
    for link in parser.srcs + parser.hrefs:
        assert (out / unquote(link)).is_file(), link  # every link resolves to a file of the folder
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in page


def test_missing_shipped_weights_are_named(monkeypatch, tmp_path):
    monkeypatch.setattr(rc, "DEFAULT_COARSE", tmp_path / "weights" / "coarse.safetensors")
    res = CliRunner().invoke(main, ["reconstruct", str(tmp_path), "--out", str(tmp_path / "o"), "--no-fine"])
    assert res.exit_code != 0
    line = res.output.strip().splitlines()[-1]
    assert str(tmp_path / "weights" / "coarse.safetensors") in line and "--coarse CKPT" in line


def test_missing_shipped_fine_weights_are_named(monkeypatch, tiny_coarse_weights, tmp_path):
    monkeypatch.setattr(rc, "DEFAULT_FINE", tmp_path / "weights" / "fine.safetensors")
    res = CliRunner().invoke(main, ["reconstruct", str(tmp_path), "--out", str(tmp_path / "o"),
                                    "--coarse", str(tiny_coarse_weights)])
    assert res.exit_code != 0
    assert "fine.safetensors" in res.output and "--no-fine" in res.output


@pytest.mark.parametrize("flags,message", [
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--fov", "0"], "--fov must be in [1, 170] degrees, got 0.0"),
    (["--fine", "x.pt", "--no-fine"], "--fine and --no-fine are exclusive"),
])
def test_bad_flags_are_named(flags, message, tmp_path):
    res = CliRunner().invoke(main, ["reconstruct", str(tmp_path), "--out", str(tmp_path / "o"), *flags])
    assert res.exit_code != 0 and message in res.output


def test_network_with_the_mask_in_its_input_is_refused(tiny_coarse_weights, tiny_model, tmp_path):
    from train.checkpoint import CheckpointError, export_inference, load_inference_checkpoint, save_checkpoint

    ck = load_inference_checkpoint(tiny_coarse_weights)
    ck["task_state"] = {**ck["task_state"], "mask_input": True}
    pt = save_checkpoint(tmp_path / "masked.pt", {k: v for k, v in ck.items() if k != "format_version"})
    path = export_inference(pt, tmp_path / "masked.safetensors")
    with pytest.raises(CheckpointError, match="ground-truth face mask"):
        rc.load_stages(ReconstructConfig(out=str(tmp_path / "o"), coarse=str(path), no_fine=True, device="cpu"),
                       model=tiny_model)


# ------------------------------------------------------------------------------ the fine-stage slot
class RampFine:
    """A stand-in fine stage adding a known residual: depth + mask * (1 mm * u / S - 0.5 mm), a
    ramp across the crop (smooth, so the detailed mesh can reproduce it exactly up to sampling)."""

    def __init__(self, size: int):
        self.size = size
        self.calls = 0

    def refine(self, image, intrinsics, coarse):
        self.calls += 1
        depth, mask = coarse.depth, coarse.mask
        assert image.shape == (depth.shape[0], 3, self.size, self.size) and 0 <= float(image.min()) <= float(image.max()) <= 1
        assert coarse.vertices_cam.shape[0] == depth.shape[0] and coarse.params.pose.shape == (depth.shape[0], 3)
        u = (torch.arange(self.size, dtype=depth.dtype) + 0.5) / self.size  # (S,)
        return depth + mask.to(depth.dtype) * (u[None, None, :] - 0.5)


def _stages(tiny_coarse_weights, tiny_model, fine=None, out="o", fine_extra=0):
    config = ReconstructConfig(out=str(out), coarse=str(tiny_coarse_weights), no_fine=True, device="cpu")
    stages = rc.load_stages(config, model=tiny_model)
    if fine is not None:
        stages.fine = fine(stages.coarse_size + fine_extra)
    return stages


def test_detailed_mesh_has_the_refined_depth(photos, tiny_coarse_weights, tiny_model, cache):
    """Moving the seen vertices along their rays to the refined depth: rendered from the crop's camera, the
    detailed mesh has the refined depth; every vertex keeps its pixel; hidden vertices do not move."""
    from train import depth_render

    stages = _stages(tiny_coarse_weights, tiny_model, fine=RampFine)
    run = prepare_photos([photos / "astronaut.png"], PhotoConfig(size=stages.size, cache_dir=str(cache)))
    (res,) = rc.run_networks(stages, run.faces)
    assert res.refined and np.allclose(res.depth - res.depth_coarse, np.where(res.mask, res.depth - res.depth_coarse, 0))
    rgb = np.asarray(Image.open(photos / "astronaut.png").convert("RGB"))
    rc.build_meshes(res, rgb)
    k = res.intrinsics
    moved = np.linalg.norm(res.vertices_detailed - res.vertices_cam, axis=1)
    assert (moved[~res.visible] == 0).all() and moved[res.visible].max() > 0.1
    from synth import camera

    uv0, _ = camera.project(res.vertices_cam, k)
    uv1, _ = camera.project(res.vertices_detailed, k)
    np.testing.assert_allclose(uv1, uv0, atol=1e-9)  # along the ray: same pixel
    frags = depth_render.rasterize(torch.from_numpy(res.vertices_detailed[None]).float(),
                                   stages.coarse.render.triangles, torch.from_numpy(k[None]).float(), res.depth.shape)
    d = frags.depth[0].numpy()
    # interior pixels (the 5 x 5 neighbourhood on the face): the ramp is linear, so sampling it at the
    # vertices and interpolating over triangles reproduces it to float32 rounding (1e-3 mm at 650 mm)
    # wherever a pixel's triangle has its three corners sampled inside the face; the few pixels whose
    # triangle has a corner on the silhouette, where the residual fades to 0 within a pixel, or
    # hidden (not moved), are off by a fraction of the 1 mm ramp
    m = res.mask.copy()
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            m &= np.roll(np.roll(res.mask, dy, 0), dx, 1)
    m &= frags.mask[0].numpy()
    assert m.sum() > 30
    err = np.abs(d[m] - res.depth[m])
    assert np.quantile(err, 0.9) < 1e-3 and err.max() < 0.1


@pytest.mark.parametrize("fine_extra", [0, 16, -16])
def test_fine_stage_outputs(photos, tiny_coarse_weights, tiny_model, cache, tmp_path, fine_extra):
    """With a fine stage: detailed meshes, the refined depth in the PNG, four compare panels; a
    FineNet larger than CoarseNet gets the crops at its size and CoarseNet a resampled copy; a
    smaller one gets a resampled copy, and the depth maps are at its size."""
    import trimesh

    stages = _stages(tiny_coarse_weights, tiny_model, fine=RampFine, fine_extra=fine_extra)
    assert stages.depth_size == stages.coarse_size + fine_extra
    assert stages.size == max(stages.coarse_size, stages.depth_size)
    config = ReconstructConfig(out=str(tmp_path / "out"), coarse=str(tiny_coarse_weights), device="cpu",
                               view_size=48, turntable_frames=4, overlay_max_side=96, cache_dir=str(cache))
    run = rc.run_reconstruct([photos / "astronaut.png", photos / "grace_hopper.jpg"], config, stages=stages)
    assert len(run.written) == 2 and stages.fine.calls == 1  # both faces in one batch
    for w in run.written:
        doc = json.loads(w.files["json"].read_text())
        assert doc["fine"]["used"] and doc["depth"]["kind"] == "refined"
        assert 0.05 < doc["fine"]["residual_mm"]["mean_abs"] <= 0.5  # the ramp: |u / S - 0.5| mm over the face
        coarse = trimesh.load(w.files["coarse_obj"], process=False)
        detailed = trimesh.load(w.files["detailed_ply"], process=False)
        assert detailed.vertices.shape == coarse.vertices.shape == (tiny_model.n_vertices, 3)
        assert np.abs(detailed.vertices - coarse.vertices).max() > 0.1
        assert Image.open(w.files["compare"]).size == (4 * 48, 48 + 20)
        assert doc["depth"]["size"] == stages.depth_size and doc["crop"]["size"] == stages.size
        depth = rc.decode_depth_png(w.files["depth"], doc["depth"]["scale_mm"], doc["depth"]["offset_mm"])
        assert depth.shape == (stages.depth_size,) * 2
        w_photo, h_photo = doc["photo_size"]
        lm, box = np.array(doc["landmarks_68"]), np.array(doc["box"])
        assert (lm >= 0).all() and (lm[:, 0] <= w_photo).all() and (lm[:, 1] <= h_photo).all()
        assert np.all(np.abs(lm.mean(0) - (box[:2] + box[2:]) / 2) < 0.5 * (box[2:] - box[:2]))  # on the face


def test_depth_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    depth = (600.0 + 80.0 * rng.random((20, 24))).astype(np.float32)
    mask = rng.random((20, 24)) > 0.3
    img, scale, offset = rc.encode_depth_png(depth, mask)
    assert img.dtype == np.uint16 and (img[~mask] == 0).all() and img[mask].min() == 1
    assert img[mask].max() == rc.DEPTH_LEVELS
    path = tmp_path / "d.png"
    Image.fromarray(img).save(path)
    back = rc.decode_depth_png(path, scale, offset)
    assert (back[~mask] == 0).all()
    assert np.abs(back[mask] - depth[mask]).max() <= scale / 2 + 1e-4  # half a level (+ float32 input rounding)
    assert scale < 80.0 / 65000  # the range spans all 16 bits: ~1.2 um per level here


def test_a_face_that_cannot_be_written_is_skipped_and_the_rest_go_on(photos, tiny_coarse_weights, cache, tmp_path):
    """A photo whose name is fine but whose output names are too long for the file system (255
    bytes) is skipped with the reason; the other photo is written."""
    d = tmp_path / "in"
    d.mkdir()
    long_name = "x" * 245 + ".png"  # 249 bytes; "<stem>_turntable.gif" would be 259
    shutil.copy(photos / "astronaut.png", d / long_name)
    shutil.copy(photos / "grace_hopper.jpg", d / "grace_hopper.jpg")
    stale = tmp_path / "out" / f"{'x' * 245}.json"  # an earlier run's: it would describe the new files
    stale.parent.mkdir()
    stale.write_text("{}")
    res = _run([d], tmp_path / "out", tiny_coarse_weights, cache)
    assert res.exit_code == 0, res.output
    assert "1 face from 1 photo written" in res.output
    assert f"{long_name}: cannot write its outputs as {'x' * 245}" in res.output
    assert (tmp_path / "out" / "grace_hopper.json").is_file()
    assert not stale.exists()
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_output_folder_beside_the_photos_is_not_read_back(photos, tiny_coarse_weights, cache, tmp_path):
    """--out the photos' own folder (or a sub-folder with --recursive): a second run does not take
    the first run's overlays and depth pictures for photos."""
    for d, sub, extra in ((tmp_path / "a", "", []), (tmp_path / "b", "faces", ["--recursive"])):
        d.mkdir()
        shutil.copy(photos / "astronaut.png", d / "astronaut.png")
        out = d / sub
        for _ in range(2):
            res = CliRunner().invoke(main, ["reconstruct", str(d), "--out", str(out), "--coarse",
                                            str(tiny_coarse_weights), "--cache-dir", str(cache), *FAST, *extra])
            assert res.exit_code == 0, res.output
            assert "1 face from 1 photo written" in res.output and "skipped" not in res.output, res.output
        assert sorted(p.name for p in out.glob("*.json")) == ["astronaut.json"]


def test_only_the_output_folders_own_pictures_are_left_out(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    assert rc._is_output(out / "a_overlay.png", out) and rc._is_output(out / "a_depth.png", out)
    assert not rc._is_output(out / "a.png", out)
    assert not rc._is_output(out / "sub" / "a_overlay.png", out)  # write_face writes into out itself
    assert not rc._is_output(tmp_path / "a_overlay.png", out)  # the user's own file


def test_output_folder_that_cannot_be_one_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("x")
    for out, words in ((tmp_path / "file", "exists and is not a folder"),
                       (tmp_path / "file" / "sub", "cannot create the folder")):
        res = CliRunner().invoke(main, ["reconstruct", str(tmp_path), "--out", str(out), *FAST])
        assert res.exit_code == 1 and f"--out {out}: {words}" in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1


def test_atomic_write_fits_every_name_the_file_system_takes(tmp_path):
    """The temporary name of a write is short: a 250-byte output name (a long photo stem plus
    ``_overlay.png``) is written, not refused for its temporary name's length."""
    from train.reconstruct import _atomic

    path = tmp_path / ("x" * 246 + ".png")
    assert _atomic(path, lambda tmp: tmp.write_bytes(b"data")) == path
    assert path.read_bytes() == b"data" and not list(tmp_path.glob(".tmp-*"))
