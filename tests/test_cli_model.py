"""Tests for synth/cli_model.py (`synth-cli model info|export`) with click's CliRunner."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import trimesh
from click.testing import CliRunner

from synth.cli_model import model as model_group


@pytest.fixture()
def runner():
    return CliRunner()


def test_info_text_and_json(runner, tiny_model, tmp_model_h5):
    r = runner.invoke(model_group, ["info", "--model", str(tmp_model_h5)])
    assert r.exit_code == 0, r.output
    assert f"vertices:    {tiny_model.n_vertices}" in r.output
    assert f"triangles:   {tiny_model.n_triangles}" in r.output
    assert f"components:  id={tiny_model.n_id} exp={tiny_model.n_exp} albedo={tiny_model.n_albedo}" in r.output
    assert "unit:        mm" in r.output
    assert tiny_model.fingerprint in r.output
    r = runner.invoke(model_group, ["info", "--model", str(tmp_model_h5), "--json"])
    assert r.exit_code == 0, r.output
    facts = json.loads(r.output)
    assert facts["fingerprint"] == tiny_model.fingerprint and facts["landmarks"] == 68
    assert facts["source"] == tiny_model.source


def test_info_bad_model_names_flag(runner, tmp_path, tmp_model_h5):
    r = runner.invoke(model_group, ["info", "--model", str(tmp_path / "missing.h5")])
    assert r.exit_code == 2 and "--model" in r.output
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["shape/model/mean"] = np.zeros(9, np.float32)
    r = runner.invoke(model_group, ["info", "--model", str(bad)])
    assert r.exit_code == 2
    assert "Invalid value for --model" in r.output and "missing key '/shape/model/pcaBasis'" in r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("fmt", ["ply", "obj"])
def test_export_meshes(runner, tiny_model, tmp_model_h5, tmp_path, fmt):
    out = tmp_path / "meshes"
    args = ["export", "--out", str(out), "--samples", "2", "--seed", "7", "--model", str(tmp_model_h5), "--format", fmt]
    r = runner.invoke(model_group, args)
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"mean.{fmt}", f"sample-0000.{fmt}", f"sample-0001.{fmt}", "coefficients.npz"])
    mean = trimesh.load(out / f"mean.{fmt}", process=False)
    np.testing.assert_allclose(mean.vertices, tiny_model.mean_shape, atol=1e-4)
    np.testing.assert_array_equal(mean.faces, tiny_model.triangles)
    coef = np.load(out / "coefficients.npz")
    assert coef["alpha_id"].shape == (2, tiny_model.n_id) and str(coef["model_fingerprint"]) == tiny_model.fingerprint
    # sample 1 is drawn from default_rng([seed, 0, 1]), truncated at 3 std by default
    expected = tiny_model.sample(np.random.default_rng([7, 0, 1]), 1, truncation=3.0)
    np.testing.assert_array_equal(coef["alpha_id"][1], expected.alpha_id[0])
    s1 = trimesh.load(out / f"sample-0001.{fmt}", process=False)
    np.testing.assert_allclose(s1.vertices, tiny_model.shape(expected.alpha_id[0], expected.alpha_exp[0]), atol=1e-3)
    # vertex colours are the clipped albedo in 0..255 (1 level of rounding)
    colours = np.asarray(s1.visual.vertex_colors)[:, :3].astype(float)
    np.testing.assert_allclose(colours, tiny_model.albedo(expected.beta[0]) * 255, atol=1.01)
    assert colours.std() > 0  # not a constant colour


def test_export_is_deterministic_and_bad_flags(runner, tmp_model_h5, tmp_path):
    for d in ("a", "b"):
        r = runner.invoke(model_group, ["export", "--out", str(tmp_path / d), "--samples", "1", "--model",
                                        str(tmp_model_h5)])
        assert r.exit_code == 0, r.output
    assert (tmp_path / "a" / "sample-0000.ply").read_bytes() == (tmp_path / "b" / "sample-0000.ply").read_bytes()
    r = runner.invoke(model_group, ["export", "--out", str(tmp_path / "c"), "--samples", "-1", "--model",
                                    str(tmp_model_h5)])
    assert r.exit_code == 2 and "--samples" in r.output and "must be >= 0, got -1" in r.output
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    r = runner.invoke(model_group, ["export", "--out", str(afile), "--model", str(tmp_model_h5)])
    assert r.exit_code == 2 and "--out" in r.output
    r = runner.invoke(model_group, ["export", "--out", str(tmp_path / "d"), "--format", "stl", "--model",
                                    str(tmp_model_h5)])
    assert r.exit_code == 2 and "--format" in r.output
