"""Inference: ``reconstruct`` on images rendered by synth, and ``load_coarse`` from a checkpoint
(the same network back, the model taken from the checkpoint's config, a mismatched model named)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train.checkpoint import CheckpointError, save_checkpoint
from train.coarse_net import IterativeCoarseNet
from train.data import ShardDataset, image_to_float
from train.inference import load_coarse, reconstruct
from train.params import ParamLayout, ParamStats

SIZE = 48


@pytest.fixture(scope="module")
def batch(tiny_shards, tiny_model):
    ds = ShardDataset(tiny_shards(n=24, size=SIZE, seed=4), fingerprint=tiny_model.fingerprint)
    b = torch.utils.data.default_collate([ds[i] for i in range(3)])
    b["image"] = image_to_float(b["image"], b.pop("color"))
    return b, ds


def _net(tiny_model, b, ds, iters=2):
    stats = ParamStats.from_samples(b["pose"], b["translation"], b["intrinsics"], (SIZE, SIZE), ds.projection)
    torch.manual_seed(0)
    return IterativeCoarseNet(tiny_model, ParamLayout(4, 2), stats, iters=iters, width_mult=0.125,
                              projection=ds.projection)


def test_untrained_net_reconstructs_the_mean_face_at_the_mean_pose(batch, tiny_model):
    """The last FC layer starts at zero: every estimate is 0 in normalised units, i.e. the mean
    face at the mean pose, and the depth map is that mesh rendered."""
    b, ds = batch
    net = _net(tiny_model, b, ds, iters=3)
    rec = reconstruct(net, b["image"], b["intrinsics"], iters=2)
    assert len(rec.params) == 2 and net.training  # iters override; the mode is restored
    assert rec.vertices.shape == (3, tiny_model.n_vertices, 3) and rec.depth.shape == (3, SIZE, SIZE)
    np.testing.assert_allclose(rec.vertices.numpy(), np.broadcast_to(tiny_model.mean_shape, (3, tiny_model.n_vertices, 3)),
                               atol=1e-3)  # float32 model evaluation of millimetre coordinates
    np.testing.assert_allclose(rec.params[-1].pose.numpy(), np.tile(net.stats.pose_mean.numpy(), (3, 1)), atol=1e-6)
    assert rec.mask.any(dim=(1, 2)).all()
    depth_on = rec.depth[rec.mask]
    # depth is the distance along the optical axis of the camera-frame vertices that cover the pixels
    assert float(depth_on.min()) >= float((-rec.vertices_cam[..., 2]).min()) - 1e-3
    assert float(depth_on.max()) <= float((-rec.vertices_cam[..., 2]).max()) + 1e-3
    assert (rec.depth[~rec.mask] == 0).all()


def test_load_coarse_returns_the_saved_network(batch, tiny_model, tmp_model_h5, tmp_path):
    b, ds = batch
    net = _net(tiny_model, b, ds)
    torch.nn.init.normal_(net.net.fc[-1].weight, std=0.1)  # a non-trivial network
    path = save_checkpoint(tmp_path / "last.pt", {
        "task": "coarse", "step": 1, "model": net.state_dict(), "config": {"model": str(tmp_model_h5)},
        "task_state": net.hyperparameters(), "model_fingerprint": tiny_model.fingerprint})
    loaded = load_coarse(path)  # the model comes from the checkpoint's config
    assert not loaded.training
    want = reconstruct(net.eval(), b["image"], b["intrinsics"])
    got = reconstruct(loaded, b["image"], b["intrinsics"])
    torch.testing.assert_close(got.vertices, want.vertices, rtol=0, atol=0)
    torch.testing.assert_close(got.depth, want.depth, rtol=0, atol=0)


def test_load_coarse_names_a_mismatched_model(batch, tiny_model, ellipsoid_model, tmp_path):
    b, ds = batch
    net = _net(tiny_model, b, ds)
    path = save_checkpoint(tmp_path / "last.pt", {
        "task": "coarse", "step": 1, "model": net.state_dict(), "config": {},
        "task_state": net.hyperparameters(), "model_fingerprint": tiny_model.fingerprint})
    with pytest.raises(CheckpointError, match=r"last\.pt was trained with morphable model .* the model given is"):
        load_coarse(path, model=ellipsoid_model)


def test_load_coarse_accepts_the_same_model_built_on_another_cpu(batch, tiny_model, tiny_model_elsewhere, tmp_path):
    """A checkpoint records its model's sketch: the same model rebuilt with round-off differences
    (another CPU: another exact fingerprint) loads it; without the sketch it is refused."""
    b, ds = batch
    net = _net(tiny_model, b, ds)
    state = {"task": "coarse", "step": 1, "model": net.state_dict(), "config": {},
             "task_state": net.hyperparameters(), "model_fingerprint": tiny_model.fingerprint}
    path = save_checkpoint(tmp_path / "last.pt", {**state, "model_sketch": tiny_model.sketch})
    load_coarse(path, model=tiny_model_elsewhere)
    old = save_checkpoint(tmp_path / "old.pt", state)
    with pytest.raises(CheckpointError, match=r"old\.pt was trained with morphable model"):
        load_coarse(old, model=tiny_model_elsewhere)


def test_depth_in_another_view_is_that_view_rendered(batch, tiny_model):
    """``depth_view``: the same estimate's depth map rendered at another size with scaled intrinsics
    equals rasterizing the returned camera-frame mesh there; the parameters do not change."""
    from train import depth_render

    b, ds = batch
    net = _net(tiny_model, b, ds)
    torch.nn.init.normal_(net.net.fc[-1].weight, std=0.05)
    k2 = b["intrinsics"].clone().float()
    k2[:, :2] *= 0.5  # the same crop at half the size
    rec = reconstruct(net, b["image"], b["intrinsics"], iters=2)
    half = reconstruct(net, b["image"], b["intrinsics"], iters=2, depth_view=(k2, (SIZE // 2, SIZE // 2)))
    torch.testing.assert_close(half.vertices_cam, rec.vertices_cam)
    assert half.depth.shape == (3, SIZE // 2, SIZE // 2)
    frags = depth_render.rasterize(rec.vertices_cam, net.render.triangles, k2, (SIZE // 2, SIZE // 2))
    torch.testing.assert_close(half.depth, frags.depth)
    assert float(half.mask.float().mean()) == pytest.approx(float(rec.mask.float().mean()), abs=0.05)  # same face, smaller
