"""train.averaging and ``train-cli average``: the weights are the checkpoints' mean, the last one's
config and normalisation are kept, mismatched networks are refused in one line, and the
BatchNorm statistics are the plain average of the batches' statistics."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from click.testing import CliRunner

from train.averaging import average_checkpoints, recompute_batchnorm
from train.checkpoint import CheckpointError, load_inference_checkpoint, write_inference
from train.cli import main


def _perturbed(src, dst, seed, **task_state):
    """A copy of the inference checkpoint ``src`` with noise added to its float tensors (and
    ``task_state`` entries replaced), written to ``dst``."""
    ck = load_inference_checkpoint(src)
    g = torch.Generator().manual_seed(seed)
    ck["model"] = {k: (v + torch.randn(v.shape, generator=g).to(v.dtype)) if torch.is_floating_point(v) else v
                   for k, v in ck["model"].items()}
    ck["task_state"] = {**ck["task_state"], **task_state}
    return write_inference(ck, dst)


@pytest.fixture(scope="module")
def three(tiny_coarse_weights, tmp_path_factory):
    root = tmp_path_factory.mktemp("avg")
    a = _perturbed(tiny_coarse_weights, root / "a.safetensors", 1)
    stats = dict(load_inference_checkpoint(tiny_coarse_weights)["task_state"]["stats"])
    stats["pose_std"] = [2.0 * x for x in stats["pose_std"]]  # a leg's statistics differ a little
    b = _perturbed(tiny_coarse_weights, root / "b.safetensors", 2, stats=stats)
    return [str(tiny_coarse_weights), str(a), str(b)]


def test_average_is_the_mean_and_keeps_the_last_checkpoints_state(three, tiny_model, caplog):
    with caplog.at_level(logging.WARNING, logger="train.averaging"):
        avg, model = average_checkpoints(three, tiny_model)
    # b's pose_std is twice the others': both earlier checkpoints are named, by 0.50 (1 - 1/2)
    warned = [r.getMessage() for r in caplog.records if "parameter normalisation differs" in r.getMessage()]
    assert len(warned) == 2 and all("by 0.50 (pose_std)" in m for m in warned), warned
    with caplog.at_level(logging.WARNING, logger="train.averaging"):
        caplog.clear()
        average_checkpoints(three[:2], tiny_model)
    assert not caplog.records  # the same statistics: no warning
    cks = [load_inference_checkpoint(p) for p in three]
    n_float = 0
    for k, v in avg["model"].items():
        if torch.is_floating_point(v):
            mean = sum(ck["model"][k].double() for ck in cks) / 3
            torch.testing.assert_close(v, mean.to(v.dtype), rtol=0, atol=1e-6)
            n_float += 1
        else:  # BatchNorm batch counters: the last checkpoint's
            assert torch.equal(v, cks[-1]["model"][k])
    assert n_float > 10
    assert avg["task_state"] == cks[-1]["task_state"] and avg["config"] == cks[-1]["config"]
    assert avg["task_state"]["stats"] != cks[0]["task_state"]["stats"]  # the last one's statistics


def test_mismatched_networks_are_refused(three, tiny_coarse_weights, tmp_path, tiny_model):
    other = _perturbed(tiny_coarse_weights, tmp_path / "wide.safetensors", 3, width_mult=0.25)
    with pytest.raises(CheckpointError, match=r"wide\.safetensors: its network differs .* in width_mult"):
        average_checkpoints([other, three[0]], tiny_model)
    ck = load_inference_checkpoint(tiny_coarse_weights)
    name = next(k for k, v in ck["model"].items() if v.ndim == 4)
    ck["model"][name] = ck["model"][name][:1]
    cut = write_inference(ck, tmp_path / "cut.safetensors")
    with pytest.raises(CheckpointError, match=rf"cut\.safetensors: tensor {name} is"):
        average_checkpoints([cut, three[0]], tiny_model)
    with pytest.raises(ValueError, match="two or more"):
        average_checkpoints(three[:1], tiny_model)
    with pytest.raises(CheckpointError, match=r"a\.safetensors is given twice"):
        average_checkpoints([three[1], three[0], three[1]], tiny_model)


def test_batchnorm_statistics_are_the_average_over_the_batches():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU())
    net[1].running_mean.fill_(5.0)
    net[1].num_batches_tracked.fill_(100)  # a trained network's: without the reset its old statistics would weigh in
    batches = [torch.randn(4, 2, 8, 8) * (i + 1) + i for i in range(3)]
    n = recompute_batchnorm(net, batches, net)
    assert n == 3 and not net.training and net[1].momentum == 0.1
    with torch.no_grad():
        feats = [net[0](b) for b in batches]
    mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(net[1].running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net[1].running_var, var, rtol=1e-5, atol=1e-6)
    assert recompute_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3)), batches, lambda b: None) == 0
    with pytest.raises(ValueError, match="no batch"):
        recompute_batchnorm(net, [], net)


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_cli_average_writes_weights_that_load_and_run(three, tiny_shards, tiny_model, tmp_path):
    from train.data import ShardDataset, image_to_float
    from train.inference import load_coarse, reconstruct

    shards = tiny_shards(n=24, size=48, seed=4)
    out = tmp_path / "avg.safetensors"
    res = CliRunner().invoke(main, ["average", *three, "--out", str(out), "--data", str(shards), "--bn-batches", "2",
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "averaged 3 checkpoints" in res.output and "from 2 batches" in res.output
    ck = load_inference_checkpoint(out)
    plain, _ = average_checkpoints(three, tiny_model)
    bn = [k for k in ck["model"] if k.endswith("running_var")]
    assert bn and all(not torch.equal(ck["model"][k], plain["model"][k]) for k in bn)  # recomputed
    conv = next(k for k, v in ck["model"].items() if v.ndim == 4)
    assert torch.equal(ck["model"][conv], plain["model"][conv])  # the weights are the average
    from safetensors import safe_open
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["averaged_from"]) == three and meta["batchnorm_batches"] == "2"

    net = load_coarse(out, model=tiny_model)
    ds = ShardDataset(shards, fingerprint=tiny_model.fingerprint, size=32)
    batch = torch.utils.data.default_collate([ds[i] for i in range(2)])
    rec = reconstruct(net, image_to_float(batch["image"]), batch["intrinsics"])
    assert torch.isfinite(rec.vertices).all()

    keep = CliRunner().invoke(main, ["average", *three, "--out", str(tmp_path / "keep.safetensors"),
                                     "--bn-batches", "0", "--no-progress"])
    assert keep.exit_code == 0, keep.output
    kept = load_inference_checkpoint(tmp_path / "keep.safetensors")
    assert all(torch.equal(kept["model"][k], plain["model"][k]) for k in bn)


def test_cli_average_bad_input(three, tiny_shards, tmp_path):
    shards = tiny_shards(n=24, size=48, seed=4)
    r = CliRunner().invoke(main, ["average", *three, "--out", str(tmp_path / "a.pt")])
    assert r.exit_code != 0 and "must end in .safetensors" in r.output
    r = CliRunner().invoke(main, ["average", *three, "--out", str(tmp_path / "a.safetensors"), "--no-progress"])
    assert r.exit_code != 0 and "--data" in _one_line(r.output) and "BatchNorm" in r.output
    assert not (tmp_path / "a.safetensors").exists()
    r = CliRunner().invoke(main, ["average", three[0], "--out", str(tmp_path / "a.safetensors"), "--bn-batches", "0"])
    assert r.exit_code != 0 and "two or more" in _one_line(r.output)
    weak = [str(_perturbed(p, tmp_path / f"weak{i}.safetensors", i, projection="weak_perspective"))
            for i, p in enumerate(three[:2])]
    r = CliRunner().invoke(main, ["average", *weak, "--out", str(tmp_path / "a.safetensors"), "--data", str(shards),
                                  "--bn-batches", "1", "--no-progress"])
    assert r.exit_code != 0 and "perspective projection" in _one_line(r.output)
    assert not (tmp_path / "a.safetensors").exists()
