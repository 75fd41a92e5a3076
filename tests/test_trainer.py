"""The shared trainer, phase-agnostic: a toy regression task (a linear layer) is trained, logged,
validated, checkpointed and resumed exactly; a non-finite loss stops with a clear error; the loop
settings come from the job config; the cudnn flag is scoped to the run.
The trainer on CoarseNet is tested in tests/test_coarse_task.py."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch

from train.checkpoint import load_checkpoint
from train.config import CoarseConfig
from train.losses import LossOutput
from train.trainer import LoopConfig, Trainer, cosine_lambda, cudnn_benchmark

W_TRUE = torch.tensor([[1.5, -2.0, 0.5]])


class ToyTask:
    """y = x W^T + noise, fitted by a linear layer: the smallest task the trainer can drive."""

    name = "toy"
    curve_metrics = ("abs_err",)

    def __init__(self, nan_after: int | None = None):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        self.nan_after, self.calls = nan_after, 0

    def to(self, device):
        self.model.to(device)
        return self

    def prepare_batch(self, batch, device):
        return {k: v.to(device) for k, v in batch.items()}

    def forward(self, model, batch):
        return model(batch["image"])

    def loss(self, out, batch):
        self.calls += 1
        total = ((out - batch["y"]) ** 2).mean()
        if self.nan_after is not None and self.calls > self.nan_after:
            total = total * float("nan")
        return LossOutput(total=total, terms={"mse": total.detach()}, per_iter=[total.detach()])

    def metrics(self, out, batch):
        return {"abs_err/it1": (out - batch["y"]).abs()[:, 0]}

    def extra_state(self):
        return {"in_features": 3}


def _batch(step: int) -> dict[str, torch.Tensor]:
    """The batch of a step depends only on the step (like train.data.StepBatchSampler)."""
    g = torch.Generator().manual_seed(step)
    x = torch.randn(8, 3, generator=g)
    return {"image": x, "y": x @ W_TRUE.T + 0.01 * torch.randn(8, 1, generator=g)}


def _loop(out, **kw) -> LoopConfig:
    base = dict(out=str(out), total_steps=40, lr=0.3, weight_decay=0.0, warmup=0.0, min_lr=0.1, grad_clip=1.0,
                amp=True, log_every=5, val_every=20, ckpt_every=20, progress=False, stop_at=0)
    return LoopConfig(**{**base, **kw})


def _fit(out, task=None, resume=False, **kw):
    loop = _loop(out, **kw)
    state = load_checkpoint(out / "checkpoints" / "last.pt") if resume else None
    trainer = Trainer(task or ToyTask(), loop, lambda start: [_batch(s) for s in range(start, loop.total_steps)],
                      [_batch(1000 + i) for i in range(2)], torch.device("cpu"), {"job": "toy"}, "ab" * 32,
                      resume_state=state)
    return trainer.fit()


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cosine_schedule_golden():
    f = cosine_lambda(total=110, warmup_steps=10, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)


def test_toy_task_trains_logs_validates_and_checkpoints(tmp_path):
    res = _fit(tmp_path)
    assert res.step == 40 and [s for s, _ in res.losses] == list(range(5, 45, 5))
    assert res.losses[-1][1] < 0.01 * res.losses[0][1]  # a linear fit: the loss collapses
    rows = _rows(tmp_path / "train.csv")
    assert list(rows[0]) == ["step", "loss", "loss_mse", "loss_it1", "lr", "grad_norm", "img_per_s"]
    assert float(rows[0]["loss_mse"]) == pytest.approx(float(rows[0]["loss"]))
    val = _rows(tmp_path / "val.csv")
    assert [int(r["step"]) for r in val] == [20, 40] and res.val["n"] == 16
    assert res.val["abs_err/it1"] == float(val[-1]["abs_err/it1"]) < 0.5 * float(val[0]["abs_err/it1"])
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt", fingerprint="ab" * 32)
    assert ck["step"] == 40 and ck["task"] == "toy" and ck["task_state"] == {"in_features": 3}
    assert ck["config"] == {"job": "toy"} and res.checkpoint == tmp_path / "checkpoints" / "last.pt"
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "config.json").exists()
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 8 + 2  # train rows + val rows


def test_validate_reports_medians_and_set_level_metrics():
    from train.trainer import validate

    class Fixed(ToyTask):
        median_metrics = ("v",)

        def metrics(self, out, batch):
            return {"v": batch["v"], "w": 2 * batch["v"]}

        @staticmethod
        def summarize(means):
            return {"ratio": means["w"] / means["v"]}

    loader = [{"image": torch.zeros(3, 3), "v": torch.tensor([1.0, 100.0, float("nan")])},
              {"image": torch.zeros(2, 3), "v": torch.tensor([3.0, 4.0])}]
    res = validate(Fixed(), torch.nn.Linear(3, 1), loader, torch.device("cpu"))
    assert res["v"] == pytest.approx(27.0) and res["v_median"] == pytest.approx(3.5)  # NaN skipped
    assert res["ratio"] == pytest.approx(2.0) and res["n"] == 5 and "w_median" not in res


def test_resume_reproduces_the_uninterrupted_run_and_drops_stale_rows(tmp_path):
    _fit(tmp_path / "a")
    _fit(tmp_path / "b", stop_at=20)
    with open(tmp_path / "b" / "train.csv", "a") as f:  # a row written after the checkpoint by a run that died
        f.write("25,9.0,9.0,9.0,0.1,1.0,1.0\n")
    res = _fit(tmp_path / "b", resume=True)
    a, b = _rows(tmp_path / "a" / "train.csv"), _rows(tmp_path / "b" / "train.csv")
    assert [r["step"] for r in b] == [r["step"] for r in a]
    np.testing.assert_allclose([float(r["loss"]) for r in b], [float(r["loss"]) for r in a], rtol=1e-12)
    wa = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=0)
    assert res.losses[0][0] == 25  # this process's rows start after the checkpoint


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    with pytest.raises(FloatingPointError, match="training loss is nan at step 5; the last good checkpoint is"):
        _fit(tmp_path, task=ToyTask(nan_after=3))
    assert len(_rows(tmp_path / "train.csv")) == 1  # the row is written (and the file closed) before stopping


def test_non_finite_loss_between_log_steps_never_reaches_a_checkpoint(tmp_path):
    """--ckpt-every not a multiple of --log-every: the checkpoint step checks the loss first, so the
    last good checkpoint (step 10) is kept, not overwritten by NaN weights at step 20."""
    with pytest.raises(FloatingPointError, match="training loss is nan at step 20"):
        _fit(tmp_path, task=ToyTask(nan_after=17), log_every=7, ckpt_every=10)
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ck["step"] == 10 and all(torch.isfinite(v).all() for v in ck["model"].values())


class NanGradTask(ToyTask):
    """A finite loss whose gradient is NaN from step 20 on (d sqrt(x)/dx at 0 is inf, times 0)."""

    def loss(self, out, batch):
        lo = super().loss(out, batch)
        if self.calls > 19:
            w = self.model.weight
            lo = LossOutput(total=lo.total + 0.0 * torch.sqrt((w - w.detach()).abs().sum()), terms=lo.terms,
                            per_iter=lo.per_iter)
        return lo


def test_non_finite_gradient_with_a_finite_loss_never_reaches_a_checkpoint(tmp_path):
    with pytest.raises(FloatingPointError, match="gradient norm is nan at step 20"):
        _fit(tmp_path, task=NanGradTask(), log_every=7, ckpt_every=10)
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ck["step"] == 10 and all(torch.isfinite(v).all() for v in ck["model"].values())


def test_resume_takes_this_runs_lr_and_weight_decay_and_refuses_a_past_stop_at(tmp_path):
    """The optimizer state restored on --resume carries the old --lr / --weight-decay; the new
    flags take over (the schedule at each step is the one a run with them from the start has)."""
    _fit(tmp_path / "a", lr=0.1, weight_decay=0.05)
    _fit(tmp_path / "b", stop_at=20, lr=0.3, weight_decay=0.0)
    with pytest.raises(ValueError, match=r"--stop-at 20 is not after the step the run resumes from \(20\)"):
        _fit(tmp_path / "b", resume=True, stop_at=20)
    _fit(tmp_path / "b", resume=True, lr=0.1, weight_decay=0.05)
    a, b = _rows(tmp_path / "a" / "train.csv"), _rows(tmp_path / "b" / "train.csv")
    lr_a = {r["step"]: float(r["lr"]) for r in a}
    after = [r for r in b if int(r["step"]) > 20]
    assert after and all(float(r["lr"]) == pytest.approx(lr_a[r["step"]], rel=1e-12) for r in after)
    groups = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0] and groups[0]["initial_lr"] == 0.1


def test_apply_lr_flags_sets_the_rates_of_the_resumed_step_and_the_next():
    from train.trainer import _apply_lr_flags, _param_groups

    def make(lr, wd):
        model = torch.nn.Linear(3, 1)
        opt = torch.optim.AdamW(_param_groups(model, wd), lr=lr)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(40, 4, 0.1))

    old_opt, old_sched = make(0.3, 0.0)
    for _ in range(20):
        old_opt.step()
        old_sched.step()
    opt, sched = make(0.3, 0.0)
    opt.load_state_dict(old_opt.state_dict())
    sched.load_state_dict(old_sched.state_dict())
    loop = _loop("o", lr=0.1, weight_decay=0.05, total_steps=40, warmup=0.1)
    _apply_lr_flags(opt, sched, loop, 20)
    lam = cosine_lambda(40, 4, 0.1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * lam(20)] * 2)  # the first resumed step's
    assert sched.get_last_lr() == pytest.approx([0.1 * lam(20)] * 2)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * lam(21)] * 2)


def test_loop_settings_come_from_the_job_config(tmp_path):
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(LoopConfig))  # no second defaults
    cfg = CoarseConfig(data="d", out=str(tmp_path), lr=0.5, stop_at=3, progress=False)
    loop = LoopConfig.from_config(cfg, total_steps=77)
    assert loop.total_steps == 77 and loop.lr == 0.5 and loop.stop_at == 3 and loop.out == str(tmp_path)
    for f in dataclasses.fields(LoopConfig):
        if f.name != "total_steps":
            assert getattr(loop, f.name) == getattr(cfg, f.name), f.name


def test_cudnn_benchmark_is_scoped():
    before = torch.backends.cudnn.benchmark
    with cudnn_benchmark(True):
        assert torch.backends.cudnn.benchmark
    assert torch.backends.cudnn.benchmark == before
    with pytest.raises(RuntimeError), cudnn_benchmark(True):
        raise RuntimeError("a failing run")
    assert torch.backends.cudnn.benchmark == before
    with cudnn_benchmark(False):
        assert torch.backends.cudnn.benchmark == before


def test_distributed_leaves_the_group_it_joined_after_a_normal_end(monkeypatch, tmp_path):
    """``trainer.distributed`` (how ``train_coarse`` / ``train_fine`` join torchrun's group): the
    group it created is destroyed when the job ends normally (gloo's threads joined before the
    interpreter exits), kept when the job fails (the launcher ends the ranks; tearing down under
    a peer waiting in a collective can hang it), and a group the caller made is never touched.
    A one-process gloo group stands in for torchrun's."""
    import torch.distributed as dist

    from train import trainer

    real_init = dist.init_process_group
    store = tmp_path / "store"

    def one_process_group(backend, rank, world_size):  # torchrun's world of 2, as a world of 1
        real_init(backend, init_method=f"file://{store}", rank=0, world_size=1)

    monkeypatch.setattr(trainer.dist, "init_process_group", one_process_group)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    try:
        with trainer.distributed("cpu") as info:
            assert dist.is_initialized() and info.world == 2 and info.rank == 0
        assert not dist.is_initialized()

        store.unlink(missing_ok=True)
        with pytest.raises(RuntimeError, match="the job failed"):
            with trainer.distributed("cpu"):
                raise RuntimeError("the job failed")
        assert dist.is_initialized()  # left to the launcher
        with trainer.distributed("cpu"):  # a group that exists already is not this job's to leave
            pass
        assert dist.is_initialized()
    finally:
        if dist.is_initialized():  # the other tests run without a group
            dist.destroy_process_group()
