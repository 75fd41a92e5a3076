"""synth-cli render/verify/preview end to end on tiny runs (32 px, a few samples)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from morphable_model import load_model
from synth.cli import main
from synth.dataset import DatasetConfig, assigned_shards
from synth.shards import ShardReader, list_shards
from synth.verify import verify_dir

ARGS = ["--n", "5", "--size", "32", "--shard-size", "2", "--seed", "3"]


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _arrays(directory):
    out = {}
    for p in list_shards(directory):
        with ShardReader(p) as r:
            for i in range(len(r)):
                raw = r.read_raw(i)
                out[int(raw["index"])] = raw
    return out


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    for i in a:
        assert a[i].keys() == b[i].keys()
        for k in a[i]:
            np.testing.assert_array_equal(a[i][k], b[i][k], err_msg=f"sample {i} key {k}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tmp_model_h5):
    out = tmp_path_factory.mktemp("ref") / "shards"
    res = _run("render", "--out", out, "--model", tmp_model_h5, *ARGS)
    assert res.exit_code == 0, res.output
    return out


def test_render_writes_valid_shards(reference, tmp_model_h5):
    assert [p.name for p in list_shards(reference)] == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    reports, problems = verify_dir(reference)
    assert all(r.ok for r in reports) and not problems
    arrays = _arrays(reference)
    assert sorted(arrays) == [0, 1, 2, 3, 4]
    with ShardReader(reference / "shard-00002.h5", model=load_model(tmp_model_h5)) as r:
        assert len(r) == 1 and r.attrs["size"] == 32 and r.attrs["seed"] == 3 and r.attrs["lights"] == "sh9"
        d = r.read(0)
        assert d["image"].shape == (32, 32, 3) and "depth_coarse" in d and r.layout == 6
    res = _run("verify", reference)
    assert res.exit_code == 0 and "3/3 shards ok, 5 valid samples" in res.output
    res = _run("verify", reference, "--maps", "--model", tmp_model_h5)  # maps recomputed from the ids
    assert res.exit_code == 0 and "3/3 shards ok, 5 valid samples" in res.output



def test_jpeg_image_codec_from_the_cli(reference, tmp_path, tmp_model_h5):
    """--image-codec jpeg --jpeg-quality Q: layout-7 shards that verify; every stored array but the
    image equals the lossless job's."""
    out = tmp_path / "jpeg"
    res = _run("render", "--out", out, "--model", tmp_model_h5, "--image-codec", "jpeg", "--jpeg-quality", "90", *ARGS)
    assert res.exit_code == 0, res.output
    res = _run("verify", out, "--maps", "--model", tmp_model_h5)
    assert res.exit_code == 0 and "3/3 shards ok, 5 valid samples" in res.output
    jpeg, lossless = _arrays(out), _arrays(reference)
    for i in lossless:
        assert set(jpeg[i]) == set(lossless[i]) | {"image_span"}
        for k in lossless[i]:
            if k != "image":
                np.testing.assert_array_equal(jpeg[i][k], lossless[i][k], err_msg=k)
    with ShardReader(out / "shard-00000.h5") as r:
        assert (r.layout, r.attrs["image_quality"]) == (7, 90)


def test_same_arrays_with_two_workers(reference, tmp_path, tmp_model_h5):
    res = _run("render", "--out", tmp_path / "w2", "--model", tmp_model_h5, "--workers", "2", *ARGS)
    assert res.exit_code == 0, res.output
    _assert_same(_arrays(reference), _arrays(tmp_path / "w2"))


def test_same_arrays_whatever_the_shard_size_and_equal_to_render(reference, tmp_path, tmp_model_h5):
    """Model evaluation is batched over aligned blocks of global indices: the shard size (2 vs 5,
    blocks cut differently by shard bounds) changes nothing, and the stored sample is the encoding
    of FaceRenderer.render(params) on its own."""
    args = [a if a != "2" else "5" for a in ARGS]  # --shard-size 5: one shard
    res = _run("render", "--out", tmp_path / "one", "--model", tmp_model_h5, *args)
    assert res.exit_code == 0, res.output
    arrays = _arrays(tmp_path / "one")
    _assert_same(_arrays(reference), arrays)

    from morphable_model import load_model
    from synth.codecs import encode_sample
    from synth.render import FaceRenderer
    from synth.sampling import SamplingConfig, face_framing, sample_params

    model = load_model(str(tmp_model_h5))
    p = sample_params(model, SamplingConfig(), 32, 3, 4, face_framing(model))
    with FaceRenderer(model, 32) as r:
        enc = encode_sample(p, r.render(p, stable=True))
    for key, value in enc.items():
        np.testing.assert_array_equal(arrays[4][key], value, err_msg=key)


def test_rerun_skips_finished_and_fills_gaps(reference, tmp_path, tmp_model_h5):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    (out / "shard-00001.h5").unlink()
    (out / ".tmp-shard-00001.h5.12345").write_bytes(b"half written")  # what a kill -9 leaves behind
    before = (out / "shard-00000.h5").stat().st_mtime_ns
    res = _run("render", "--out", out, "--model", tmp_model_h5, *ARGS)
    assert res.exit_code == 0, res.output
    assert "2 samples in 1 shards" in res.output and "2 shards were already done" in res.output
    assert (out / "shard-00000.h5").stat().st_mtime_ns == before
    assert not list(out.glob(".tmp-*"))
    _assert_same(_arrays(reference), _arrays(out))


KILL_POINTS = Path(__file__).with_name("kill_points.py")


def test_kill_minus_9_and_resume(tmp_path, tmp_model_h5):
    """kill -9 in the middle of a shard (the run paused there by tests/kill_points.py after a seeded
    random number of samples), then rerun: exactly the 40 samples of a clean run, all compared."""
    out = tmp_path / "killed"
    args = ["render", "--out", str(out), "--model", str(tmp_model_h5), "--n", "40", "--size", "32",
            "--shard-size", "4"]
    written = int(np.random.default_rng(9).integers(9, 31))  # samples written before the kill, mid-run
    marker = tmp_path / "paused"
    proc = subprocess.Popen([sys.executable, str(KILL_POINTS), str(marker), "shard-write", str(written),
                             "synth.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 300
    while not marker.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"never reached the kill point: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    # really interrupted: the finished shards are those before the one being written, which is a
    # temporary file; 10 shards are expected in all
    finished = [int(p.name[6:11]) for p in list_shards(out)]
    assert finished == list(range((written - 1) // 4)) and len(finished) < 10
    assert len(list(out.glob(f".tmp-shard-{(written - 1) // 4:05d}.h5.*"))) == 1
    res = _run(*args)
    assert res.exit_code == 0, res.output
    assert f"{len(finished)} shards were already done" in res.output
    reports, problems = verify_dir(out)
    assert len(reports) == 10 and all(r.ok for r in reports) and not problems
    arrays = _arrays(out)
    assert sorted(arrays) == list(range(40))  # exactly N samples: no loss, no duplicate
    assert not list(out.glob(".tmp-*"))
    clean = tmp_path / "clean"
    res = _run(*[a if a != str(out) else str(clean) for a in args])
    assert res.exit_code == 0, res.output
    _assert_same(arrays, _arrays(clean))


def _flip(path, offset, n=8):
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(n)
        f.seek(offset)
        f.write(bytes(255 - b for b in data))


def test_rerun_renders_a_damaged_finished_shard_again(reference, tmp_path, tmp_model_h5, caplog):
    """A finished shard truncated, another with bytes flipped in its index dataset: the rerun's quick
    check names both in a one-line warning, renders them again (identical to a clean run) and
    leaves the sound shard alone; synth-cli verify (the full check) agrees before and after."""
    import logging
    import shutil

    import h5py

    out = tmp_path / "damaged"
    shutil.copytree(reference, out)
    p0, p1, p2 = (out / f"shard-0000{k}.h5" for k in range(3))
    p0.write_bytes(p0.read_bytes()[: p0.stat().st_size * 3 // 5])
    with h5py.File(p1, "r") as f:
        offset = f["index"].id.get_chunk_info(0).byte_offset  # layout 3: the whole index is one chunk
    _flip(p1, offset)
    before = p2.stat().st_mtime_ns
    res = _run("verify", out)
    assert res.exit_code == 1 and "BAD shard-00000.h5" in res.output and "BAD shard-00001.h5" in res.output
    with caplog.at_level(logging.WARNING, logger="synth.dataset"):
        res = _run("render", "--out", out, "--model", tmp_model_h5, *ARGS)
    assert res.exit_code == 0, res.output
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("\n" not in w and "rendering it again" in w for w in warnings)
    assert "shard-00000.h5 is damaged" in warnings[0] and "shard-00001.h5 is damaged" in warnings[1]
    assert "4 samples in 2 shards" in res.output and "1 shards were already done" in res.output
    assert p2.stat().st_mtime_ns == before
    _assert_same(_arrays(reference), _arrays(out))
    assert _run("verify", out).exit_code == 0


def test_shard_range_and_slurm_split_equal_single_run(reference, tmp_path, tmp_model_h5):
    out = tmp_path / "split"
    assert _run("render", "--out", out, "--model", tmp_model_h5, "--shard-range", "0:1", *ARGS).exit_code == 0
    assert [p.name for p in list_shards(out)] == ["shard-00000.h5"]
    assert _run("render", "--out", out, "--model", tmp_model_h5, "--shard-range", "1:", *ARGS).exit_code == 0
    _assert_same(_arrays(reference), _arrays(out))
    cfg = DatasetConfig(out=str(out), n=5, shard_size=2)
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "0"}
    assert assigned_shards(cfg, env) == [1]
    assert assigned_shards(cfg, dict(env, SLURM_ARRAY_TASK_ID="0")) == [0, 2]
    res = _run("render", "--out", out, "--model", tmp_model_h5, "--shard-range", "2:9", *ARGS)
    assert res.exit_code == 1 and "--shard-range 2:9" in res.output


def test_shards_of_a_job_with_other_settings_are_found(reference, tmp_path, tmp_model_h5):
    """Shard ranges rendered in separate folders and merged by hand: a shard rendered with other
    sampling flags (same N, size, seed and model) is named by verify and rendered again by a rerun."""
    import shutil

    other = tmp_path / "other"
    assert _run("render", "--out", other, "--model", tmp_model_h5, "--shard-range", "0:1", "--yaw", "10",
                *ARGS).exit_code == 0
    merged = tmp_path / "merged"
    shutil.copytree(reference, merged)
    shutil.copy(other / "shard-00000.h5", merged / "shard-00000.h5")
    res = _run("verify", merged)
    assert res.exit_code == 1 and "BAD shard-00000.h5" in res.output and "other sampling settings" in res.output
    assert "BAD shard-00001.h5" not in res.output
    res = _run("render", "--out", merged, "--model", tmp_model_h5, *ARGS)
    assert res.exit_code == 0 and "2 shards were already done" in res.output, res.output
    _assert_same(_arrays(reference), _arrays(merged))


def test_clear_errors_touch_nothing(reference, tmp_path, tmp_model_h5):
    snapshot = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in reference.iterdir()}
    res = _run("render", "--out", reference, "--model", tmp_model_h5, "--lights", "laser", *ARGS)
    assert res.exit_code == 2 and "Invalid value for '--lights'" in res.output
    res = _run("render", "--out", reference, "--model", tmp_model_h5, "--n", "0")
    assert res.exit_code == 1 and "--n must be a positive integer, got 0" in res.output
    bad_model = tmp_path / "bad.h5"
    bad_model.write_bytes(b"not hdf5")
    res = _run("render", "--out", reference, "--model", bad_model, *ARGS)
    assert res.exit_code == 1 and "bad.h5" in res.output and "Traceback" not in res.output
    res = _run("render", "--out", reference, "--model", tmp_path / "missing.h5", *ARGS)
    assert res.exit_code == 1 and "missing.h5" in res.output
    res = _run("render", "--out", reference, "--model", tmp_model_h5, *ARGS[:-1], "4")  # another seed
    assert res.exit_code == 1 and "another configuration" in res.output and "seed" in res.output
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    res = _run("render", "--out", a_file / "shards", "--model", tmp_model_h5, *ARGS)
    assert res.exit_code == 1 and "not a directory" in res.output
    res = _run("render", "--out", reference, "--model", tmp_model_h5, "--background", "images", *ARGS)
    assert res.exit_code == 1 and "--background-dir" in res.output
    res = _run("render", "--out", reference, "--model", tmp_model_h5, "--jpeg-quality", "90", *ARGS)
    assert res.exit_code == 2 and "--jpeg-quality applies to --image-codec jpeg" in res.output
    res = _run("render", "--out", reference, "--model", tmp_model_h5, "--image-codec", "jpeg", *ARGS)
    assert res.exit_code == 1 and "differs in: layout_version, image_quality" in res.output
    res = _run("render", "--out", reference, "--model", tmp_model_h5, "--truncation", "-1", *ARGS)
    assert res.exit_code == 1 and "--truncation must be > 0 (or none), got -1.0" in res.output
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in reference.iterdir()} == snapshot
    # a background folder with a broken image, or given without --background images: refused before
    # anything is written (a typo'd folder would otherwise be recorded in a new dataset.json)
    folder = tmp_path / "bg"
    folder.mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "good.png")
    (folder / "broken.jpg").write_text("not a jpeg")
    fresh = tmp_path / "fresh"
    res = _run("render", "--out", fresh, "--model", tmp_model_h5, "--background-dir", folder, *ARGS)
    assert res.exit_code == 1 and "broken.jpg cannot be decoded" in res.output and "Traceback" not in res.output
    assert not fresh.exists()
    res = _run("render", "--out", fresh, "--model", tmp_model_h5, "--background", "noise", "--background-dir",
               tmp_path / "typo", "--n", "2", "--size", "32")  # not used with noise: ignored (a warning), as before
    assert res.exit_code == 0, res.output
    # a dataset.json that is not a manifest
    other = tmp_path / "other"
    other.mkdir()
    (other / "dataset.json").write_text("[1, 2]")
    res = _run("render", "--out", other, "--model", tmp_model_h5, *ARGS)
    assert res.exit_code == 1 and "is not a synth-cli dataset manifest" in res.output


def test_photo_colour_flags(tmp_path, tmp_model_h5):
    """--background-dir alone selects the folder; --no-specular and the specular ranges reach the
    stored parameters; the images are sRGB (the folder's colour comes back exactly)."""
    import json

    from PIL import Image

    folder = tmp_path / "bg"
    folder.mkdir()
    Image.fromarray(np.full((40, 40, 3), [10, 200, 30], np.uint8)).save(folder / "a.png")
    out = tmp_path / "s"
    res = _run("render", "--out", out, "--model", tmp_model_h5, "--n", "2", "--size", "32", "--background-dir", folder,
               "--occluders", "0", "--no-specular")
    assert res.exit_code == 0, res.output
    sampling = json.loads((out / "dataset.json").read_text())["sampling"]
    assert sampling["background"] == "images" and sampling["specular"] is False
    with ShardReader(out / "shard-00000.h5") as r:
        assert r.layout == 6
        for i in range(2):
            d = r.read(i, keys=("specular", "image", "mask"))
            assert d["specular"][0] == 0
            np.testing.assert_array_equal(d["image"][~d["mask"]], np.tile([10, 200, 30], ((~d["mask"]).sum(), 1)))
    out2 = tmp_path / "s2"
    res = _run("render", "--out", out2, "--model", tmp_model_h5, "--n", "2", "--size", "32",
               "--specular-strength", "0.3,0.3", "--shininess", "20,20")
    assert res.exit_code == 0, res.output
    with ShardReader(out2 / "shard-00000.h5") as r:
        np.testing.assert_allclose(r.read(1)["specular"], [0.3, 20.0], rtol=1e-6)
    res = _run("render", "--out", tmp_path / "s3", "--n", "2", "--specular-strength", "a,b")
    assert res.exit_code == 2 and "--specular-strength" in res.output
    # --cavity: the crease darkening reaches the manifest; a negative one is refused naming the flag
    res = _run("render", "--out", tmp_path / "s4", "--model", tmp_model_h5, "--n", "2", "--size", "32",
               "--cavity", "0")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "s4" / "dataset.json").read_text())["sampling"]["cavity"] == 0.0
    res = _run("render", "--out", tmp_path / "s5", "--n", "2", "--cavity", "-1")
    assert res.exit_code == 1 and "--cavity must be finite and >= 0, got -1.0" in res.output
    # --line-occluders, --facial-hair: in the manifest only when on (datasets written before them still
    # resume), and the shards verify
    for flag, key, bad in (("--line-occluders", "line_occluders", "2"), ("--facial-hair", "facial_hair", "-0.5")):
        assert key not in sampling
        res = _run("render", "--out", tmp_path / key, "--model", tmp_model_h5, "--n", "2", "--size", "32", flag, "1")
        assert res.exit_code == 0, res.output
        assert json.loads((tmp_path / key / "dataset.json").read_text())["sampling"][key] == 1.0
        res = _run("verify", tmp_path / key, "--maps", "--model", tmp_model_h5)
        assert res.exit_code == 0, res.output
        res = _run("render", "--out", tmp_path / f"{key}_bad", "--n", "2", flag, bad)
        assert res.exit_code == 1 and f"{flag} must be a probability in [0, 1], got {float(bad)}" in res.output


def test_verify_names_the_corrupted_shard(reference, tmp_path):
    import shutil

    out = tmp_path / "corrupt"
    shutil.copytree(reference, out)
    p = out / "shard-00001.h5"
    import h5py

    with h5py.File(p, "r") as f:  # the bytes of the first stored image chunk (not headers or free space)
        info = f["image"].id.get_chunk_info(0)
    data = bytearray(p.read_bytes())
    a, b = info.byte_offset, info.byte_offset + min(info.size, 200)
    data[a:b] = bytes(x ^ 0xFF for x in data[a:b])
    p.write_bytes(bytes(data))
    res = _run("verify", out)
    assert res.exit_code == 1
    assert "BAD shard-00001.h5" in res.output and "BAD shard-00000.h5" not in res.output


def test_preview_draws_a_grid(reference, tmp_path):
    from PIL import Image

    res = _run("preview", reference / "shard-00000.h5", "--out", tmp_path / "grid.png")
    assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "grid.png") as im:
        assert im.size[0] > 500 and im.size[1] > 300
    res = _run("preview", tmp_path / "none.h5", "--out", tmp_path / "g.png")
    assert res.exit_code == 1 and "does not exist" in res.output
    res = _run("preview", reference / "dataset.json", "--out", tmp_path / "g.png")  # not an HDF5 file
    assert res.exit_code == 1 and "dataset.json" in res.output and len(res.output.strip().splitlines()) == 1
    res = _run("preview", reference / "shard-00000.h5", "--out", tmp_path / "missing" / "g.png")
    assert res.exit_code == 1 and "g.png" in res.output and len(res.output.strip().splitlines()) == 1


def test_preview_and_verify_take_the_shards_model_file(reference, tmp_path, tmp_model_h5):
    res = _run("preview", reference / "shard-00000.h5", "--out", tmp_path / "grid.png", "--model", tmp_model_h5)
    assert res.exit_code == 0 and (tmp_path / "grid.png").is_file(), res.output
    res = _run("verify", reference, "--model", tmp_model_h5)
    assert res.exit_code == 0, res.output


def test_model_group_is_registered():
    res = _run("model", "--help")
    assert res.exit_code == 0 and "info" in res.output


def test_retired_framing_flags_name_their_replacement(tmp_path):
    for flag, value in (("--fov", "12,45"), ("--face-fraction", "0.6,0.8"), ("--jitter", "0.05")):
        res = _run("render", "--out", tmp_path / "x", flag, value, *ARGS)
        assert res.exit_code == 2 and f"{flag} was retired" in res.output and "--distance" in res.output
    res = _run("render", "--out", tmp_path / "x", "--distance", "500,100", *ARGS)
    assert res.exit_code == 1 and "--distance must be lo,hi" in res.output
    assert not (tmp_path / "x").exists()
