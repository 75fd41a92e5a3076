"""Job configs: errors name the flag, every field documents its flag, the saved config does not
depend on the machine (``workers`` stays automatic until the run resolves it), old saved configs
load."""

from __future__ import annotations

import dataclasses

import pytest

from train.config import CoarseConfig, EvaluateConfig, FineConfig, ReconstructConfig, field_docs


def test_coarse_config_errors_name_the_flag():
    with pytest.raises(ValueError, match="--iters must be >= 1, got 0"):
        CoarseConfig(data="d", out="o", iters=0)
    with pytest.raises(ValueError, match="--steps and --epochs are exclusive"):
        CoarseConfig(data="d", out="o", steps=3, epochs=1.0)
    with pytest.raises(ValueError, match="--device must be one of auto, cpu, cuda, got 'tpu'"):
        CoarseConfig(data="d", out="o", device="tpu")
    with pytest.raises(ValueError, match="--workers must be >= 0, got -1"):
        CoarseConfig(data="d", out="o", workers=-1)
    with pytest.raises(ValueError, match="--w-alb must be >= 0, got -0.5"):
        CoarseConfig(data="d", out="o", w_alb=-0.5)
    assert CoarseConfig(data="d", out="o", epochs=2.0, batch_size=10).total_steps(25) == 5
    assert CoarseConfig(data="d", out="o").total_steps(25) == 10000


def test_run_folder_that_is_a_file_is_refused_before_any_work(tmp_path):
    from train.trainer import resume_state_for

    (tmp_path / "f").write_text("x")
    for cls in (CoarseConfig, FineConfig):
        kwargs = dict(data="d") if cls is CoarseConfig else dict(synthetic="s")
        config = cls(out=str(tmp_path / "f"), **kwargs)  # a saved config naming such a path still loads
        with pytest.raises(ValueError, match=f"--out {tmp_path / 'f'} is a file, expected a run folder"):
            resume_state_for(config, "fingerprint")


def test_evaluate_config_errors_name_the_flag():
    with pytest.raises(ValueError, match="--samples must be >= 1, got 0"):
        EvaluateConfig(checkpoint="c.pt", data="d", samples=0)
    with pytest.raises(ValueError, match="--device must be one of auto, cpu, cuda, got 'gpu'"):
        EvaluateConfig(checkpoint="c.pt", data="d", device="gpu")
    with pytest.raises(ValueError, match="--data or --photos must be given"):
        EvaluateConfig(checkpoint="c.pt")
    assert EvaluateConfig(photos=["a.jpg", "b"]).photos == ("a.jpg", "b")  # --photos may repeat


def test_norm_choices_are_named():
    with pytest.raises(ValueError, match="--norm must be one of batch, iter_batch, group, got 'layer'"):
        CoarseConfig(data="d", out="o", norm="layer")


def test_reconstruct_config_errors_name_the_flag():
    with pytest.raises(ValueError, match="--turntable-frames must be >= 4, got 2"):
        ReconstructConfig(out="o", turntable_frames=2)
    with pytest.raises(ValueError, match="--min-score must be in"):
        ReconstructConfig(out="o", min_score=1.5)
    assert ReconstructConfig(out="o", no_fine=True).fine is None


@pytest.mark.parametrize("cls", [CoarseConfig, EvaluateConfig, ReconstructConfig])
def test_every_field_has_a_one_line_doc(cls):
    docs = field_docs(cls)
    assert set(docs) == {f.name for f in dataclasses.fields(cls)}
    assert all(d and "\n" not in d and "  " not in d for d in docs.values())
    assert not any(d.startswith("--") for d in docs.values())  # the flag name is derived, not repeated


def test_workers_stay_automatic_in_the_saved_config(monkeypatch):
    cfg = CoarseConfig(data="d", out="o")
    assert cfg.to_dict()["workers"] is None  # what config.json and checkpoints store
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert cfg.loader_workers() == 3  # min(8, CPUs - 1), on this machine, when the run starts
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert cfg.loader_workers() == 8
    assert CoarseConfig(data="d", out="o", workers=2).loader_workers() == 2
    assert cfg.to_dict()["workers"] is None


def test_saved_config_round_trips_and_old_keys_are_ignored():
    cfg = CoarseConfig(data="d", out="o", iters=3, predict_sh=True)
    assert CoarseConfig.from_dict(cfg.to_dict()) == cfg
    assert CoarseConfig.from_dict({**cfg.to_dict(), "a_removed_flag": 1}) == cfg
    # an old config's removed oracle flag is dropped here; the network refuses such a checkpoint
    # (tests/test_coarse_net.py::test_checkpoints_trained_with_the_oracle_mask_are_refused)
    assert CoarseConfig.from_dict({**cfg.to_dict(), "mask_input": True}) == cfg
