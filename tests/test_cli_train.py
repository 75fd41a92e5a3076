"""``train-cli``: a tiny end-to-end ``coarse`` job, ``evaluate`` on its checkpoint, the error
messages for bad flags, a mismatched model and an existing run, and the flags generated from the
job configs."""

from __future__ import annotations

import dataclasses
import json

import click
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
    assert "done: step 4" in res.output and "vertex_rmse_mm/it2" in res.output
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
    ev = CliRunner().invoke(main, ["evaluate", "--ckpt", str(out / "checkpoints" / "last.pt"), "--data", str(shards),
                                   "--model", str(tmp_model_h5), "--samples", "6", "--device", "cpu",
                                   "--json-out", str(metrics)])
    assert ev.exit_code == 0, ev.output
    got = json.loads(metrics.read_text())
    val = (out / "val.csv").read_text().splitlines()
    header, last = val[0].split(","), val[-1].split(",")
    # evaluate on the same 6 samples reproduces the run's final validation
    want = float(last[header.index("depth_err_mean_pct/it2")])
    assert got["depth_err_mean_pct/it2"] == pytest.approx(want, rel=1e-4)


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
    # parsing only the required flags gives exactly the config's defaults
    arguments = ["photo.jpg"] * any(isinstance(p, click.Argument) for p in command.params)
    required = [a for p in options if p.required for a in (p.opts[0], "x")]
    parsed = command.make_context(command.name, arguments + required).params
    parsed = {k: v for k, v in parsed.items() if k in fields}
    assert config_cls(**parsed) == config_cls(**{p.name: "x" for p in options if p.required})


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
