"""``train-cli``: a tiny end-to-end ``coarse`` job, ``evaluate`` on its checkpoint (shards and
real photos, the JSON it writes, the shipped-checkpoint default), the error messages for bad
flags, a mismatched model and an existing run, and the flags generated from the job configs."""

from __future__ import annotations

import dataclasses
import json
import os

import click
import numpy as np
import pytest
from click.testing import CliRunner

from train.cli import coarse, evaluate, main, reconstruct_cmd
from train.config import CoarseConfig, EvaluateConfig, ReconstructConfig, field_docs

SIZE = 48


@pytest.fixture(scope="module")
def shards(tiny_shards):
    """24 samples at 48 px in 2 shards of 12, rendered by synth (shared: read-only)."""
    return tiny_shards(n=24, size=SIZE, seed=4)


def _tiny_flags(shards, model_h5, out):
    return ["coarse", "--data", str(shards), "--out", str(out), "--model", str(model_h5), "--iters", "2",
            "--size", "32", "--batch-size", "6", "--steps", "4", "--width-mult", "0.125", "--workers", "0",
            "--threads", "1", "--log-every", "1", "--val-data", str(shards), "--val-every", "2",
            "--val-samples", "6", "--no-progress"]


def test_coarse_end_to_end_then_evaluate(shards, tmp_model_h5, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(main, _tiny_flags(shards, tmp_model_h5, out))
    assert res.exit_code == 0, res.output
    assert "done: step 4" in res.output and "CoarseNet iteration 2" in res.output
    assert "mean face, true pose and camera" in res.output  # the reference row beside the network's
    for name in ("train.csv", "val.csv", "log.jsonl", "config.json", "curves.png", "checkpoints/last.pt"):
        assert (out / name).exists(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["iters"] == 2 and cfg["size"] == 32 and cfg["width_mult"] == 0.125  # flags -> config fields
    train_rows = (out / "train.csv").read_text().splitlines()
    assert train_rows[0].startswith("step,loss,") and len(train_rows) == 5
    assert "img_per_s" in train_rows[0]

    again = CliRunner().invoke(main, _tiny_flags(shards, tmp_model_h5, out))
    assert again.exit_code != 0 and "already holds a run" in again.output

    metrics = tmp_path / "m.json"
    ev = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--data",
                                   str(shards), "--model", str(tmp_model_h5), "--samples", "6", "--device", "cpu",
                                   "--json", str(metrics)])
    assert ev.exit_code == 0, ev.output
    got = json.loads(metrics.read_text())
    keys = ("depth_err_mean_pct", "depth_err_median_pct", "shape_err_aligned_mm", "shape_err_aligned_pct",
            "landmark_nme68", "landmark_nme51")
    assert got["n_samples"] == 6 and got["iterations_run"] == 2 and got["step"] == 4
    assert [r["iteration"] for r in got["iterations"]] == [1, 2]
    for k in keys:
        assert got[k] == got["iterations"][-1][k] and k in got["baselines"]["mean_face_true_pose"], k
    for k in ("depth_err_mean_pct", "landmark_nme51"):
        assert k in got["baselines"]["mean_face_pred_pose"] and len(got["baselines"]["mean_face_pred_pose"]["iterations"]) == 2
    val = (out / "val.csv").read_text().splitlines()
    header, last = val[0].split(","), val[-1].split(",")
    # evaluate on the same 6 samples reproduces the run's final validation
    for k in keys:
        assert got[k] == pytest.approx(float(last[header.index(f"{k}/it2")]), rel=1e-4), k
    assert "CoarseNet iteration 2" in ev.output and "mean face, pose of iteration 2" in ev.output


@pytest.mark.parametrize("flag,value,message", [
    ("--iters", "0", "--iters must be >= 1, got 0"),
    ("--size", "8", "--size must be >= 16, got 8"),
    ("--lr", "-1", "--lr must be > 0, got -1.0"),
    ("--crop-jitter", "0.5", "--crop-jitter must be in [0, 0.25], got 0.5"),
])
def test_bad_flags_are_named(flag, value, message, tmp_path):
    res = CliRunner().invoke(main, ["coarse", "--data", str(tmp_path), "--out", str(tmp_path / "o"), flag, value])
    assert res.exit_code != 0
    assert message in res.output


def test_model_mismatch_names_the_shard(shards, ellipsoid_model, tmp_path):
    from morphable_model import save_bfm2017

    other = tmp_path / "other.h5"
    save_bfm2017(ellipsoid_model, other)
    res = CliRunner().invoke(main, ["coarse", "--data", str(shards), "--out", str(tmp_path / "o"), "--model", str(other),
                                    "--steps", "1", "--no-progress"])
    assert res.exit_code != 0
    assert "shard-00000.h5 was made with morphable model" in res.output


def test_missing_data_dir(tmp_path, tmp_model_h5):
    res = CliRunner().invoke(main, ["coarse", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
                                    "--model", str(tmp_model_h5), "--no-progress"])
    assert res.exit_code != 0 and "does not exist" in res.output


@pytest.mark.parametrize("command,config_cls", [(coarse, CoarseConfig), (evaluate, EvaluateConfig),
                                                (reconstruct_cmd, ReconstructConfig)])
def test_flags_are_generated_one_to_one_from_the_config(command, config_cls):
    """Each field is one flag: --kebab-case name, the field's type, default (as a run resolves it:
    click 8.2+ keeps a sentinel in Option.default, get_default(ctx) resolves it) and docstring.
    (``reconstruct`` also takes its photos as arguments, ahead of the options.)"""
    ctx = click.Context(command)
    docs = field_docs(config_cls)
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    options = [p for p in command.params if isinstance(p, click.Option)]
    assert [p.name for p in options] == list(fields)  # same names, same order
    for p in options:
        f = fields[p.name]
        flag = "--" + p.name.replace("_", "-")
        assert p.opts == [flag] and p.help == docs[p.name], p.name
        if f.type == "bool" and f.metadata.get("single_flag"):  # one flag, e.g. --no-fine
            assert p.is_flag and not p.secondary_opts, p.name
        elif f.type == "bool":  # an --x/--no-x pair
            assert p.secondary_opts == ["--no-" + flag[2:]], p.name
        else:
            assert not p.secondary_opts and not p.is_flag, p.name
        assert p.required == (f.default is dataclasses.MISSING), p.name
        if f.default is not dataclasses.MISSING:
            assert p.get_default(ctx) == f.default, p.name
    # parsing only the required flags (evaluate: one of --data / --photos) gives exactly the config's defaults
    arguments = ["photo.jpg"] * any(isinstance(p, click.Argument) for p in command.params)
    needed = {p.name for p in options if p.required} | ({"data"} if config_cls is EvaluateConfig else set())
    parsed = command.make_context(command.name, arguments + [a for n in sorted(needed) for a in ("--" + n.replace("_", "-"), "x")]).params
    parsed = {k: v for k, v in parsed.items() if k in fields}
    assert config_cls(**parsed) == config_cls(**{n: "x" for n in needed})


def test_flag_types_follow_the_annotations():
    ctx = coarse.make_context("coarse", ["--data", "d", "--out", "o", "--iters", "3", "--lr", "0.5", "--no-amp",
                                         "--n-exp", "7", "--device", "cpu", "--resume"])
    cfg = CoarseConfig(**ctx.params)
    assert (cfg.iters, cfg.lr, cfg.amp, cfg.n_exp, cfg.device, cfg.resume) == (3, 0.5, False, 7, "cpu", True)
    assert isinstance(cfg.iters, int) and isinstance(cfg.lr, float)
    res = CliRunner().invoke(main, ["coarse", "--data", "d", "--out", "o", "--device", "tpu"])
    assert res.exit_code == 2 and "'tpu' is not one of 'auto', 'cpu', 'cuda'" in res.output
    res = CliRunner().invoke(main, ["coarse", "--data", "d", "--out", "o", "--iters", "two"])
    assert res.exit_code == 2 and "'two' is not a valid integer" in res.output


def _write_real_photos(folder):
    """Two public-domain portraits shipped in installed packages, written as files of a folder:
    scikit-image's astronaut (NASA) and matplotlib's Grace Hopper (US Navy)."""
    import matplotlib
    import shutil
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    shutil.copy(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"), folder / "grace_hopper.jpg")
    (folder / "notes.txt").write_text("not a photo")  # listed by name below: skipped with its reason
    return folder


def test_evaluate_on_real_photos(shards, tmp_model_h5, tmp_path):
    """--photos: the photo pipeline and the network on each crop; the 51-point NME of its projected
    landmarks against the detector's, per photo and median, in the same JSON as the shard metrics."""
    out = tmp_path / "run"
    assert CliRunner().invoke(main, _tiny_flags(shards, tmp_model_h5, out)).exit_code == 0
    photos = _write_real_photos(tmp_path / "photos")
    report = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--model",
                                    str(tmp_model_h5), "--data", str(shards), "--samples", "6", "--device", "cpu",
                                    "--photos", str(photos), "--photos", str(photos / "notes.txt"),
                                    "--cache-dir", str(tmp_path / "cache"), "--json", str(report)])
    assert res.exit_code == 0, res.output
    got = json.loads(report.read_text())
    assert got["n_samples"] == 6  # shards and photos in one report
    ph = got["photos"]
    assert ph["n_photos"] == 2 and ph["n_faces"] == 2
    assert sorted(os.path.basename(r["photo"]) for r in ph["per_photo"]) == ["astronaut.png", "grace_hopper.jpg"]
    assert [os.path.basename(s["photo"]) for s in ph["skipped"]] == ["notes.txt"]
    nme = [r["landmark_nme51"] for r in ph["per_photo"]]
    assert ph["landmark_nme51_median"] == pytest.approx(float(np.median(nme)))
    # an (almost untrained) tiny net: a finite error, of the order of the face's size, not 0
    assert all(0.01 < v < 10 for v in nme)
    assert len(ph["iterations"]) == 2 and ph["baselines"]["mean_face_pred_pose"]["landmark_nme51_median"] > 0
    assert "astronaut" in res.output and "median over 2 faces" in res.output


def test_evaluate_scores_hand_placed_landmarks(shards, tmp_model_h5, tmp_path):
    """A photo's ``<stem>.pts`` (iBUG, counted from 1) is a second reference beside the detector.
    Annotated with the detector's own points, the two references agree: the detector scores 0
    against it and the network exactly its detector figure (same points, same normalisation), which
    pins the +-0.5 pixel convention and the mapping into the crop; one face per batch, the annotated
    one second, checks that points and faces stay aligned across batches. Points on no detected face
    are listed, not used."""
    from train.photos import PhotoConfig, prepare_photos

    out = tmp_path / "run"
    assert CliRunner().invoke(main, _tiny_flags(shards, tmp_model_h5, out)).exit_code == 0
    photos = _write_real_photos(tmp_path / "photos")
    (photos / "notes.txt").unlink()
    cache = tmp_path / "cache"
    run = prepare_photos([photos / "grace_hopper.jpg"], PhotoConfig(size=32, cache_dir=str(cache)))
    lm = run.faces[0].landmarks + 0.5  # photo pixels -> the .pts convention
    body = "\n".join(f"{float(x)!r} {float(y)!r}" for x, y in lm)
    (photos / "grace_hopper.pts").write_text(f"version: 1\nn_points: 68\n{{\n{body}\n}}\n")
    far = "\n".join(f"{float(x) + 5000.0!r} {float(y)!r}" for x, y in lm)
    (photos / "astronaut.pts").write_text(f"version: 1\nn_points: 68\n{{\n{far}\n}}\n")
    report = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--model",
                                    str(tmp_model_h5), "--device", "cpu", "--photos", str(photos),
                                    "--batch-size", "1", "--cache-dir", str(cache), "--json", str(report)])
    assert res.exit_code == 0, res.output
    ph = json.loads(report.read_text())["photos"]
    assert [os.path.basename(r["photo"]) for r in ph["per_photo"]] == ["astronaut.png", "grace_hopper.jpg"]
    grace = ph["per_photo"][1]
    assert grace["annotated_detector_nme51"] < 1e-5
    assert grace["annotated_landmark_nme51"] == pytest.approx(grace["landmark_nme51"], rel=1e-4)
    assert grace["annotated_landmark_nme68"] == pytest.approx(grace["landmark_nme68"], rel=1e-4)
    assert grace["annotated_mean_face_pred_pose_nme51"] == pytest.approx(grace["mean_face_pred_pose_nme51"], rel=1e-4)
    assert not any(k.startswith("annotated_") for k in ph["per_photo"][0])
    assert ph["fit_landmarks"] is None  # the tiny network has no landmark head: nothing is fitted
    ann = ph["annotated"]
    assert ann["n_faces"] == 1 and ann["landmark_nme51_median"] == pytest.approx(grace["landmark_nme51"], rel=1e-4)
    assert [os.path.basename(s["photo"]) for s in ann["skipped"]] == ["astronaut.png"]
    assert "astronaut.pts: its points lie on no detected face" in ann["skipped"][0]["reason"]
    assert "median over 1 annotated face:" in res.output and "annotation not used" in res.output


def test_evaluate_defaults_to_the_shipped_checkpoint(shards, tmp_model_h5, tmp_path, monkeypatch):
    from train import evaluate as evaluate_module
    from train.checkpoint import CheckpointError
    from train.inference import SHIPPED_CHECKPOINT, shipped_checkpoint

    # where the package data is looked up, and the one-line error while it is missing
    with pytest.raises(CheckpointError) as e:
        shipped_checkpoint(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "weights" / "coarse.safetensors") in msg and "--checkpoint" in msg
    assert SHIPPED_CHECKPOINT == "weights/coarse.safetensors"
    try:  # by default, package data of the installed train package (present or not)
        where = str(shipped_checkpoint())
    except CheckpointError as e:
        where = str(e)
    assert os.path.join("train", "weights", "coarse.safetensors") in where
    out = tmp_path / "run"
    assert CliRunner().invoke(main, _tiny_flags(shards, tmp_model_h5, out)).exit_code == 0
    weights = tmp_path / "pkg" / "weights" / "coarse.safetensors"
    weights.parent.mkdir(parents=True)
    assert CliRunner().invoke(main, ["export", str(out / "checkpoints" / "last.pt"), str(weights)]).exit_code == 0
    (tmp_path / "file").write_text("x")
    bad = CliRunner().invoke(main, ["export", str(out / "checkpoints" / "last.pt"), str(tmp_path / "file" / "w.safetensors")])
    assert bad.exit_code == 1 and "cannot write" in bad.output and len(bad.output.strip().splitlines()) == 1, bad.output
    assert shipped_checkpoint(tmp_path / "pkg") == weights
    args = ["evaluate", "--data", str(shards), "--model", str(tmp_model_h5), "--samples", "6", "--device", "cpu"]
    monkeypatch.setattr(evaluate_module, "shipped_checkpoint", lambda: shipped_checkpoint(tmp_path / "missing"))
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "no --checkpoint given" in res.output and len(res.output.strip().splitlines()) == 1
    monkeypatch.setattr(evaluate_module, "shipped_checkpoint", lambda: shipped_checkpoint(tmp_path / "pkg"))
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert f"checkpoint {weights} (step 4)" in res.output


@pytest.mark.parametrize("where, words", [("missing/r.json", "a file in an existing, writable folder"),
                                          (".", "a file name, not a folder")])
def test_evaluate_json_path_is_checked_before_the_work(tmp_path, where, words):
    res = CliRunner().invoke(main, ["evaluate", "--data", str(tmp_path / "no-shards"), "--json",
                                    str(tmp_path / where)])
    assert res.exit_code == 1 and f"--json must be {words}" in res.output, res.output
