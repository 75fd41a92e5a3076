"""CoarseNet: the network's shapes, the feedback renderer against shards rendered by synth
(pyrender), the iterative model and its hyperparameters, and the feedback-mesh decimation.
(Rotation, projection and normals are tested in their one home: tests/test_camera.py,
tests/test_geometry.py.)"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from morphable_model.geometry import vertex_normals
from synth import camera
from train.coarse_net import CoarseNet, FeedbackRenderer, IterativeCoarseNet, cluster_decimate
from train.data import ShardDataset, image_to_float
from train.params import CoarseParams, ParamLayout, ParamStats

SIZE = 64


@pytest.fixture(scope="module")
def shards(tiny_shards):
    """36 samples at 64 px in 3 shards of 12, rendered by synth: the set tests/test_data.py uses
    (rendered once per session). Sample i depends only on (seed, i), so samples 0..7 read here are
    the same as in a 24-sample set of the same seed."""
    return tiny_shards(n=36, size=SIZE, seed=3)


@pytest.fixture(scope="module")
def batch(shards, tiny_model):
    ds = ShardDataset(shards, fingerprint=tiny_model.fingerprint)
    b = torch.utils.data.default_collate([ds[i] for i in range(8)])
    b["image"] = image_to_float(b["image"], b.pop("color"))
    return b, ds


@pytest.mark.parametrize("bsz,size", [(1, 32), (3, 37)])
def test_coarse_net_shapes_and_zero_initial_update(bsz, size):
    torch.manual_seed(0)
    net = CoarseNet(in_channels=9, out_dim=21, width_mult=0.125)
    y = net(torch.randn(bsz, 9, size, size))
    assert y.shape == (bsz, 21)
    assert torch.count_nonzero(y) == 0  # last FC layer starts at 0: the first estimate is the mean
    with pytest.raises(ValueError, match=r"x must be \(B, 9, H, W\)"):
        net(torch.randn(bsz, 3, size, size))


def test_coarse_net_architecture_widths():
    net = CoarseNet(in_channels=9, out_dim=50)
    assert net.stem[0].kernel_size == (7, 7) and net.stem[0].stride == (2, 2) and net.stem[0].out_channels == 32
    assert [b.conv1.out_channels for b in net.blocks] == [32, 32, 64, 64, 128, 128, 256, 256]
    assert [b.conv1.stride[0] for b in net.blocks] == [1, 1, 2, 1, 2, 1, 2, 1]
    assert net.head_conv[0].out_channels == 50 and net.head_conv[0].kernel_size == (3, 3)
    assert sum(isinstance(m, torch.nn.Linear) for m in net.fc) == 3


def test_feedback_render_of_ground_truth_matches_synth_shards(batch, tiny_model):
    """The torch camera + rasterizer reproduce pyrender's mask, normals, PNCC and landmarks."""
    b, ds = batch
    from synth.shards import ShardReader

    reader = ShardReader(ds.paths[0])  # samples 0..7 are in the first shard (12 per shard)
    raw = [reader.read(i) for i in range(8)]
    fr = FeedbackRenderer(tiny_model, projection=ds.projection)
    p = CoarseParams(b["alpha_id"], b["alpha_exp"], b["pose"], b["translation"])
    maps = fr(p, b["intrinsics"], (SIZE, SIZE))  # (B, 6, H, W)
    assert maps.shape == (8, 6, SIZE, SIZE) and not maps.requires_grad
    ours = maps[:, 3:].norm(dim=1) > 0.5
    theirs = torch.tensor(np.stack([r["mask"] for r in raw]))
    iou = (ours & theirs).sum() / (ours | theirs).sum()
    assert iou > 0.98  # only edge pixels may differ (pixel-centre coverage rules)
    both = ours & theirs
    n_shard = torch.tensor(np.stack([r["normals"] for r in raw])).permute(0, 3, 1, 2)
    cos = (maps[:, 3:] * n_shard).sum(1)[both]
    assert cos.mean() > 0.99  # interpolated vertex normals vs pyrender's: same surface, same frame
    pncc_shard = torch.tensor(np.stack([r["pncc"] for r in raw])).permute(0, 3, 1, 2)
    assert (maps[:, :3] - pncc_shard).abs().permute(0, 2, 3, 1)[both].mean() < 0.02  # uint8 storage
    cam = camera.to_camera(fr.vertices(p.alpha_id, p.alpha_exp), camera.rotation_matrix(p.pose), p.translation)
    uv, _ = camera.project(cam[:, fr.landmarks], b["intrinsics"], ds.projection)
    err = (uv - b["landmarks"]).norm(dim=-1)  # pixels; synth adds fine detail displacement to the
    assert err.mean() < 0.05 and err.max() < 0.5  # surface, so landmarks may move by a fraction of a pixel


def test_iterative_net_feeds_back_and_backpropagates(batch, tiny_model):
    b, ds = batch
    stats = ParamStats.from_samples(b["pose"], b["translation"], b["intrinsics"], (SIZE, SIZE), ds.projection)
    torch.manual_seed(0)
    net = IterativeCoarseNet(tiny_model, ParamLayout(4, 2), stats, iters=3, width_mult=0.125)
    torch.nn.init.normal_(net.net.fc[-1].weight, std=0.1)  # a non-trivial update
    ests = net(b["image"][:3], b["intrinsics"][:3], b["mask"][:3])
    assert len(ests) == 3 and all(e.shape == (3, 4 + 2 + 6) for e in ests)
    assert not torch.equal(ests[0], ests[1])  # the feedback changes between iterations
    ests[-1].sum().backward()
    assert net.net.stem[0].weight.grad is not None
    assert len(net(b["image"][:3], b["intrinsics"][:3], iters=1)) == 1  # fewer iterations on request
    with pytest.raises(ValueError, match="iters must be >= 1"):
        IterativeCoarseNet(tiny_model, ParamLayout(4, 2), stats, iters=0)
    with pytest.raises(ValueError, match=r"intrinsics must be \(3, 3, 3\)"):
        net(b["image"][:3], b["intrinsics"][:2])


def test_hyperparameters_rebuild_the_same_network(batch, tiny_model):
    """What a checkpoint stores beside the weights rebuilds a network that computes the same."""
    b, ds = batch
    stats = ParamStats.from_samples(b["pose"], b["translation"], b["intrinsics"], (SIZE, SIZE), ds.projection)
    torch.manual_seed(0)
    net = IterativeCoarseNet(tiny_model, ParamLayout(4, 2, n_albedo=3), stats, iters=2, width_mult=0.125,
                             projection=ds.projection, mask_input=False, feedback_cell=8.0)
    torch.nn.init.normal_(net.net.fc[-1].weight, std=0.1)
    hp = net.hyperparameters()
    assert hp["layout"] == {"n_id": 4, "n_exp": 2, "n_albedo": 3, "n_sh": 0} and hp["feedback_cell"] == 8.0
    twin = IterativeCoarseNet.from_hyperparameters(tiny_model, hp)
    twin.load_state_dict(net.state_dict())
    net.eval(), twin.eval()
    for x, y in zip(net(b["image"][:2], b["intrinsics"][:2]), twin(b["image"][:2], b["intrinsics"][:2])):
        torch.testing.assert_close(x, y, rtol=0, atol=0)  # same arithmetic: bit-identical
    assert twin.mask_input is False and len(twin.render.render_triangles) == len(net.render.render_triangles)


def test_cluster_decimate(tiny_model):
    v, f = tiny_model.mean_shape, tiny_model.triangles
    same = cluster_decimate(v, f, 0.0)
    np.testing.assert_array_equal(same, f)
    np.testing.assert_array_equal(cluster_decimate(v, f, 1e-3), f)  # cells far below the edge length
    coarse = cluster_decimate(v, f, 20.0)
    assert 0 < len(coarse) < len(f) and coarse.max() < len(v)
    assert np.all(coarse[:, 0] != coarse[:, 1]) and len(np.unique(np.sort(coarse, 1), axis=0)) == len(coarse)
    # winding kept: the decimated triangles face the same way as the surface around them
    vn = vertex_normals(v.astype(np.float64), f)
    a, b, c = (v[coarse[:, k]].astype(np.float64) for k in range(3))
    fn = np.cross(b - a, c - a)
    assert np.mean((fn * vn[coarse].sum(1)).sum(1) > 0) > 0.95
    # a golden case: two triangles of a unit square, a cell larger than the square merges them
    sq = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    tri = np.array([[0, 1, 2], [0, 2, 3]])
    assert cluster_decimate(sq, tri, 0.5).tolist() == tri.tolist()
    assert cluster_decimate(sq, tri, 5.0).shape == (0, 3)


def test_decimated_feedback_close_to_full(batch, tiny_model):
    b, ds = batch
    p = CoarseParams(b["alpha_id"], b["alpha_exp"], b["pose"], b["translation"])
    full = FeedbackRenderer(tiny_model)(p, b["intrinsics"], (SIZE, SIZE))
    dec = FeedbackRenderer(tiny_model, cell_mm=8.0)  # tiny model: 12 mm grid, so 8 mm merges few
    assert len(dec.render_triangles) <= len(dec.triangles)
    maps = dec(p, b["intrinsics"], (SIZE, SIZE))
    m_full, m_dec = full[:, 3:].norm(dim=1) > 0.5, maps[:, 3:].norm(dim=1) > 0.5
    assert (m_full & m_dec).sum() / (m_full | m_dec).sum() > 0.9
