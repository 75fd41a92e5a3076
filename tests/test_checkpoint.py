"""train.checkpoint: checkpoints load with the safe loader and never run code; a pickle that would
run code is refused in one line by every entry point that takes a checkpoint; RNG states survive
the safe format; exported safetensors weights give the same network; old (format 1) checkpoints
convert only on explicit request and then resume."""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import random
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from train.checkpoint import (FORMAT_VERSION, CheckpointError, UnsafeCheckpointError, convert_checkpoint,
                              load_checkpoint, load_inference_checkpoint, rng_state, save_checkpoint, set_rng_state)
from train.cli import main

SIZE = 48


class _TouchOnUnpickle:
    """Unpickling this creates ``marker`` (``pathlib.Path.touch``): a stand-in for any code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _evil_checkpoint(path, marker, kind="zip"):
    """A checkpoint with every key a real one has, whose config hides a code-running object.
    ``kind``: ``zip`` (torch.save), ``legacy`` (torch.save's old format) or ``raw`` (pickle.dump)."""
    state = {"format_version": FORMAT_VERSION, "task": "coarse", "step": 1, "model": {"w": torch.zeros(2)},
             "optimizer": {}, "scheduler": {}, "config": {"size": 32, "note": _TouchOnUnpickle(marker)},
             "task_state": {}, "model_fingerprint": "ab" * 32, "rng": {}}
    if kind == "raw":
        with open(path, "wb") as f:
            pickle.dump(state, f)
    else:
        torch.save(state, path, _use_new_zipfile_serialization=kind == "zip")
    return path


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture(scope="module")
def shards(tiny_shards):
    return tiny_shards(n=24, size=SIZE, seed=4)  # shared with test_cli_train (read-only)


def _coarse_flags(shards, model_h5, out, *extra):
    return ["coarse", "--data", str(shards), "--out", str(out), "--model", str(model_h5), "--iters", "2",
            "--size", "32", "--batch-size", "6", "--steps", "3", "--width-mult", "0.125", "--workers", "0",
            "--threads", "1", "--log-every", "1", "--no-progress", "--stats-samples", "24", *extra]


@pytest.fixture(scope="module")
def run(shards, tmp_model_h5, tmp_path_factory):
    """A tiny CoarseNet run stopped at step 2 of 3 (so it can be resumed): its OUT directory."""
    out = tmp_path_factory.mktemp("ckpt_run") / "run"
    res = CliRunner().invoke(main, _coarse_flags(shards, tmp_model_h5, out, "--stop-at", "2"))
    assert res.exit_code == 0, res.output
    return out


# ---------------------------------------------------------------------------- the format
def test_training_checkpoint_is_plain_data(run):
    path = run / "checkpoints" / "last.pt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []  # nothing beyond torch's allow-list
    ck = torch.load(path, weights_only=True)
    assert ck["format_version"] == FORMAT_VERSION == 2 and ck["step"] == 2 and ck["task"] == "coarse"
    assert set(ck["scheduler"]["lr_lambdas"]) == {None}  # LambdaLR stores no callable (a closure is not saved)
    assert ck["scheduler"]["last_epoch"] == 2 and len(ck["optimizer"]["state"]) > 0  # AdamW moments present
    assert ck["rng"]["numpy"]["key"].shape == (624,) and ck["rng"]["python"]["internal"].shape == (625,)


def test_rng_states_survive_the_safe_format(tmp_path):
    random.seed(3)
    random.gauss(0, 1)  # leaves a cached second Gaussian in random's state (gauss_next)
    np.random.seed(4)
    np.random.standard_normal()  # ... and in numpy's (has_gauss = 1)
    torch.manual_seed(5)
    torch.save(rng_state(), tmp_path / "rng.pt")

    def draws():
        return (random.random(), random.gauss(0, 1), np.random.standard_normal(), np.random.rand(3).tolist(),
                torch.rand(3).tolist())

    want = draws()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() == want


def test_save_refuses_what_the_safe_loader_would_refuse(tmp_path):
    state = {"step": 1, "model": {}, "config": {"out": pathlib.Path("runs/a")}, "model_fingerprint": "ab" * 32}
    with pytest.raises(ValueError, match=r"state\['config'\]\['out'\] is a pathlib\.\w*Path"):
        save_checkpoint(tmp_path / "c.pt", state)
    assert not list(tmp_path.iterdir())  # nothing written


# ---------------------------------------------------------------------------- code never runs
@pytest.mark.parametrize("kind", ["zip", "legacy", "raw"])
def test_library_loaders_refuse_code(kind, tmp_path, tiny_model):
    from train.inference import load_coarse

    marker = tmp_path / "pwned"
    path = _evil_checkpoint(tmp_path / "evil.pt", marker, kind)
    if kind != "raw":  # control: the file does run code when fully unpickled
        torch.load(path, weights_only=False)
        assert marker.exists()
        marker.unlink()
    for load in (load_checkpoint, load_inference_checkpoint, lambda p: load_coarse(p, model=tiny_model)):
        with pytest.raises(UnsafeCheckpointError) as e:
            load(path)
        msg = _one_line(str(e.value))
        assert msg.startswith(f"checkpoint {path} may contain code and was not loaded")
        assert "pathlib" in msg and "nothing was executed" in msg  # names what it would import
    assert not marker.exists()


def _entry_points(evil, shards, model_h5, tmp_path):
    """Every train-cli command that opens a checkpoint, pointed at ``evil`` (``coarse --resume``
    finds it at OUT/checkpoints/last.pt)."""
    resume_out = tmp_path / "resume_run"
    (resume_out / "checkpoints").mkdir(parents=True, exist_ok=True)
    if evil.exists():
        shutil.copy(evil, resume_out / "checkpoints" / "last.pt")
    return {
        "evaluate": ["evaluate", "--checkpoint", str(evil), "--data", str(shards), "--model", str(model_h5),
                     "--samples", "6", "--device", "cpu"],
        "coarse": _coarse_flags(shards, model_h5, resume_out, "--resume"),
        "export": ["export", str(evil), str(tmp_path / "out.safetensors")],
        "average": ["average", str(evil), str(evil), "--out", str(tmp_path / "avg.safetensors"), "--no-progress"],
        "convert-checkpoint": ["convert-checkpoint", str(evil), str(tmp_path / "new.pt")],  # without the trust flag
        "fine": ["fine", "--out", str(tmp_path / "fine_run"), "--synthetic", str(shards), "--model", str(model_h5),
                 "--coarse", str(evil), "--size", "48", "--steps", "1", "--no-progress"],
        "reconstruct": ["reconstruct", str(tmp_path), "--out", str(tmp_path / "recon"), "--coarse", str(evil),
                        "--no-fine"],
    }


def test_every_cli_entry_point_refuses_code(shards, tmp_model_h5, tmp_path):
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker)
    for name, args in _entry_points(evil, shards, tmp_model_h5, tmp_path).items():
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1, (name, res.output)
        msg = _one_line(res.output)
        if name == "convert-checkpoint":
            assert "--i-trust-this-file" in msg, msg
        else:
            where = tmp_path / "resume_run" / "checkpoints" / "last.pt" if name == "coarse" else evil
            assert f"checkpoint {where} may contain code and was not loaded" in msg, (name, msg)
        assert not marker.exists(), name
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "new.pt").exists()
    assert not (tmp_path / "avg.safetensors").exists()
    assert not (tmp_path / "recon").exists()  # reconstruct stopped before writing anything


def test_the_entry_point_list_covers_every_checkpoint_flag(shards, tmp_model_h5, tmp_path):
    """A new command that takes a checkpoint must join test_every_cli_entry_point_refuses_code."""
    tested = set(_entry_points(tmp_path / "x.pt", shards, tmp_model_h5, tmp_path))
    words = ("ckpt", "checkpoint", "resume", "weights", "old", "coarse", "fine")
    takes = {name for name, cmd in main.commands.items()
             if any(w in p.name.lower() for p in cmd.params for w in words)}
    assert takes and takes <= tested, takes - tested


def test_checkpoint_errors_name_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"step": 1, "model": {}, "config": {}, "model_fingerprint": "ab" * 32})
    assert load_checkpoint(path)["step"] == 1
    with pytest.raises(CheckpointError, match=r"c\.pt was trained with morphable model abab"):
        load_checkpoint(path, fingerprint="cd" * 32)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"bad\.pt is unreadable"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"step": 3}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"partial\.pt must hold keys"):
        load_checkpoint(tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


# ---------------------------------------------------------------------------- safetensors export
def test_export_round_trip_gives_the_same_network(run, shards, tmp_model_h5, tiny_model, tmp_path):
    from safetensors import safe_open

    from train.inference import load_coarse, reconstruct
    from train.data import ShardDataset, image_to_float

    pt = run / "checkpoints" / "last.pt"
    st = tmp_path / "coarse.safetensors"
    res = CliRunner().invoke(main, ["export", str(pt), str(st)])
    assert res.exit_code == 0, res.output
    assert st.read_bytes()[8:9] == b"{"  # safetensors: header length then a JSON header, no pickle
    with safe_open(str(st), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "detailface-inference" and meta["format_version"] == "2" and meta["task"] == "coarse"
    assert meta["model_fingerprint"] == tiny_model.fingerprint and json.loads(meta["config"])["size"] == 32
    assert meta["model_sketch"] == tiny_model.sketch  # written by the trainer, kept by the export

    a, b = load_inference_checkpoint(pt), load_inference_checkpoint(st)
    assert a.keys() == b.keys() and a["config"] == b["config"] and a["task_state"] == b["task_state"]
    assert a["step"] == b["step"] == 2 and a["model"].keys() == b["model"].keys()
    net_pt, net_st = load_coarse(pt, model=tiny_model), load_coarse(st, model=tiny_model)
    ds = ShardDataset(shards, fingerprint=tiny_model.fingerprint, size=32)
    batch = torch.utils.data.default_collate([ds[i] for i in range(3)])
    img = image_to_float(batch["image"])
    ra = reconstruct(net_pt, img, batch["intrinsics"])
    rb = reconstruct(net_st, img, batch["intrinsics"])
    # the same bits in, the same float32 ops on the same machine: identical outputs
    assert torch.equal(ra.vertices, rb.vertices) and torch.equal(ra.depth, rb.depth)
    assert ra.params[-1].pose.abs().sum() > 0  # a real estimate, not an all-zero one

    with pytest.raises(CheckpointError, match="training cannot resume from them"):
        load_checkpoint(st)
    bad = CliRunner().invoke(main, ["export", str(pt), str(tmp_path / "w.pt")])
    assert bad.exit_code != 0 and "must end in .safetensors" in bad.output


def test_evaluate_accepts_safetensors(run, shards, tmp_model_h5, tmp_path):
    st = tmp_path / "coarse.safetensors"
    assert CliRunner().invoke(main, ["export", str(run / "checkpoints" / "last.pt"), str(st)]).exit_code == 0
    got = {}
    for name, ckpt in (("pt", run / "checkpoints" / "last.pt"), ("st", st)):
        out = tmp_path / f"{name}.json"
        res = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ckpt), "--data", str(shards), "--model",
                                        str(tmp_model_h5), "--samples", "6", "--device", "cpu", "--json", str(out)])
        assert res.exit_code == 0, res.output
        got[name] = json.loads(out.read_text())
    assert got["pt"].pop("checkpoint") != got["st"].pop("checkpoint")
    assert got["pt"] == got["st"] and got["st"]["iterations"][1]["iteration"] == 2


def test_safetensors_errors_name_the_file(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match=r"foreign\.safetensors is a safetensors file without detailface"):
        load_inference_checkpoint(foreign)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(foreign.read_bytes()[:-4])  # truncated data
    with pytest.raises(CheckpointError, match=r"cut\.safetensors is unreadable"):
        load_inference_checkpoint(cut)


# ---------------------------------------------------------------------------- format 1 -> 2
def _write_format1(src_pt, dst):
    """Rewrite a format-2 checkpoint as detailface's format 1 wrote it: the RNG states as the raw
    ``random.getstate()`` / ``np.random.get_state()`` tuples (a numpy pickle)."""
    ck = torch.load(src_pt, weights_only=True)
    random.seed(11)
    np.random.seed(12)
    ck["format_version"] = 1
    ck["rng"] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save(ck, dst)
    return ck


def test_convert_format1_then_resume(run, shards, tmp_model_h5, tmp_path):
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    shutil.copytree(run, old_dir)
    shutil.copytree(run, new_dir)
    old_ck = _write_format1(run / "checkpoints" / "last.pt", old_dir / "checkpoints" / "last.pt")
    old_path = old_dir / "checkpoints" / "last.pt"

    with pytest.raises(UnsafeCheckpointError) as e:
        load_checkpoint(old_path)
    msg = _one_line(str(e.value))
    assert "old pickled format 1" in msg
    assert f"train-cli convert-checkpoint {old_path} NEW.pt --i-trust-this-file" in msg
    refused = CliRunner().invoke(main, _coarse_flags(shards, tmp_model_h5, old_dir, "--resume"))
    assert refused.exit_code == 1 and "convert-checkpoint" in _one_line(refused.output)

    res = CliRunner().invoke(main, ["convert-checkpoint", str(old_path), str(old_path), "--i-trust-this-file"])
    assert res.exit_code == 0, res.output
    new_ck = load_checkpoint(old_path)
    assert new_ck["format_version"] == 2 and new_ck["step"] == old_ck["step"]
    for k, v in old_ck["model"].items():
        assert torch.equal(new_ck["model"][k], v), k
    # the converted RNG states continue exactly where format 1's tuples would have
    random.setstate(old_ck["rng"]["python"])
    np.random.set_state(old_ck["rng"]["numpy"])
    want = (random.random(), np.random.rand(2).tolist())
    set_rng_state(new_ck["rng"])
    assert (random.random(), np.random.rand(2).tolist()) == want

    # the converted run resumes, and reaches the step-3 loss of the never-converted run
    for out in (old_dir, new_dir):
        res = CliRunner().invoke(main, _coarse_flags(shards, tmp_model_h5, out, "--resume"))
        assert res.exit_code == 0, res.output
        assert "done: step 3" in res.output
    rows = [(out / "train.csv").read_text().splitlines() for out in (old_dir, new_dir)]
    assert rows[0][0] == rows[1][0] and rows[0][-1].split(",")[:2] == rows[1][-1].split(",")[:2]


def test_convert_needs_trust_and_a_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match="pass --i-trust-this-file"):
        convert_checkpoint(evil, tmp_path / "new.pt")
    assert not marker.exists() and not (tmp_path / "new.pt").exists()
    torch.save({"step": 1}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"partial\.pt must hold keys"):
        convert_checkpoint(tmp_path / "partial.pt", tmp_path / "new.pt", trust=True)
    assert not (tmp_path / "new.pt").exists()


@pytest.mark.parametrize("name,task", [("coarse", "coarse"), ("fine", "fine")])
def test_shipped_weights_are_safetensors_of_the_builtin_model(name, task):
    """The weights shipped as package data (train/weights/, the defaults of reconstruct and
    evaluate): safetensors (no pickle), at most 20 MB, the right network, trained with the default
    built-in model (its source recorded in the config), loadable without building that model."""
    import train
    from train.checkpoint import _is_safetensors, load_inference_checkpoint

    path = pathlib.Path(train.__file__).parent / "weights" / f"{name}.safetensors"
    assert path.is_file(), f"{path} is not shipped"
    assert _is_safetensors(path) and path.stat().st_size <= 20 * 2**20
    ck = load_inference_checkpoint(path, task=task)
    assert ck["step"] > 0 and len(ck["model_fingerprint"]) == 64
    assert ck["config"].get("model") is None  # trained with the default (built-in) model
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
