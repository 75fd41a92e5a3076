"""Validation metrics: golden values of the per-sample functions on hand-made inputs, and
``coarse_metrics`` on shards rendered by synth (zero error for the ground-truth estimate, a
clear error for the iteration-0 estimate).
Phase 2: masked blur, high-pass, ``detail_recovered``, the detail depth errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train.coarse_net import IterativeCoarseNet
from train.data import ShardDataset, image_to_float
from train.metrics import (coarse_metrics, depth_error, detail_depth_errors, detail_recovered, high_pass,
                           landmark_nme, masked_gaussian_blur, vertex_rmse)
from train.params import ParamLayout, ParamStats, encode_params

SIZE = 64


def test_vertex_rmse_golden():
    gt = torch.zeros(2, 4, 3)
    pred = gt.clone()
    pred[0, :, 0] = 3.0  # every vertex 3 mm off
    pred[1, 0] = torch.tensor([0.0, 4.0, 0.0])  # one vertex 4 mm off: rms = sqrt(16 / 4) = 2
    np.testing.assert_allclose(vertex_rmse(pred, gt).numpy(), [3.0, 2.0], rtol=1e-6)
    region = torch.tensor([False, True, True, True])
    np.testing.assert_allclose(vertex_rmse(pred, gt, region).numpy(), [3.0, 0.0], atol=1e-6)


def test_depth_error_golden():
    gt = torch.zeros(1, 4, 4)
    gt[0, 1:3, 1:3] = torch.tensor([[100.0, 110.0], [120.0, 140.0]])  # range 40 mm
    mask = gt > 0
    pred = gt.clone()
    pred[0, 1, 1] += 4.0  # 10 % of the range at one of four pixels
    e = depth_error(pred, gt, mask, align=False)
    assert e.mean_pct.item() == pytest.approx(2.5) and e.median_pct.item() == pytest.approx(0.0)
    assert e.coverage.item() == 1.0
    shifted = gt + 7.0 * mask  # a pure depth offset disappears with alignment
    assert depth_error(shifted, gt, mask).mean_pct.item() == pytest.approx(0.0, abs=1e-5)
    assert depth_error(shifted, gt, mask, align=False).mean_pct.item() == pytest.approx(17.5)
    half = pred.clone()
    half[0, 2] = 0  # prediction misses the lower row
    assert depth_error(half, gt, mask).coverage.item() == pytest.approx(0.5)


def test_landmark_nme_golden():
    gt = torch.zeros(1, 68, 2)
    gt[0, 36] = torch.tensor([10.0, 20.0])
    gt[0, 45] = torch.tensor([50.0, 20.0])  # inter-ocular 40 px
    pred = gt.clone()
    pred[0, :, 0] += 4.0  # every landmark 4 px off -> 0.1
    assert landmark_nme(pred, gt).item() == pytest.approx(0.1)
    vis = torch.zeros(1, 68, dtype=torch.bool)
    vis[0, :2] = True
    pred2 = gt.clone()
    pred2[0, 0, 1] += 8.0  # visible landmark 0 off by 8, landmark 5 (invisible) off by 100
    pred2[0, 5, 1] += 100.0
    assert landmark_nme(pred2, gt, vis).item() == pytest.approx(4.0 / 40.0)


def test_metric_shapes_are_checked():
    with pytest.raises(ValueError, match=r"pred and gt must both be \(B, N, 3\)"):
        vertex_rmse(torch.zeros(2, 4, 3), torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match=r"gt_mask must be \(1, 4, 4\)"):
        depth_error(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4), torch.zeros(1, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"pred and gt must both be \(B, 68, 2\)"):
        landmark_nme(torch.zeros(1, 5, 2), torch.zeros(1, 5, 2))


def test_coarse_metrics_zero_for_the_truth_and_large_for_iteration_0(tiny_shards, tiny_model):
    ds = ShardDataset(tiny_shards(n=36, size=SIZE, seed=3), fingerprint=tiny_model.fingerprint)
    b = torch.utils.data.default_collate([ds[i] for i in range(4)])
    b["image"] = image_to_float(b["image"], b.pop("color"))
    stats = ParamStats.from_samples(b["pose"], b["translation"], b["intrinsics"], (SIZE, SIZE), ds.projection)
    layout = ParamLayout(tiny_model.n_id, tiny_model.n_exp)  # every coefficient: the truth is reachable
    net = IterativeCoarseNet(tiny_model, layout, stats, iters=1, width_mult=0.125, projection=ds.projection)
    truth = encode_params(b, layout, stats, ds.projection)
    m = coarse_metrics(net, [torch.zeros_like(truth), truth], b, tiny_model.face_region)
    assert all(v.shape == (4,) for v in m.values())
    # float32 round trip through the normalised vector: well below a micrometre / a pixel
    assert float(m["vertex_rmse_mm/it2"].max()) < 1e-3
    assert float(m["depth_err_mean_pct/it2"].max()) < 0.01 and float(m["depth_coverage/it2"].min()) > 0.999
    # the landmarks stored in the shards include synth's fine detail displacement (tests/test_coarse_net.py)
    assert float(m["landmark_nme/it2"].max()) < 0.01
    # iteration 0 (the mean face at the mean pose) is clearly off on every metric
    assert float(m["vertex_rmse_mm/it1"].min()) > 1.0 and float(m["landmark_nme/it1"].min()) > 0.02


# --------------------------------------------------------------------------------------------
# Phase 2: masked blur, high-pass, detail_recovered, the detail depth errors
# --------------------------------------------------------------------------------------------


def _disc(h=40, w=48, r=15.0):
    i, j = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return (((i - h / 2) ** 2 + (j - w / 2) ** 2) < r * r)[None], i, j


def test_masked_blur_does_not_leak_across_the_outline():
    mask, i, j = _disc()
    x = torch.where(mask, torch.full_like(mask, 7.0, dtype=torch.float64), torch.full_like(mask, 1e6, dtype=torch.float64))
    out = masked_gaussian_blur(x, mask, sigma=2.0)
    assert torch.allclose(out[mask], torch.full((int(mask.sum()),), 7.0, dtype=torch.float64))  # constant stays
    assert (out[~mask] == 0).all()
    assert (high_pass(x, mask)[mask].abs() < 1e-9).all()


def test_high_pass_removes_smooth_shapes_inside_and_keeps_fine_ones():
    mask, i, j = _disc()
    plane = 3.0 * i - 2.0 * j
    hp = high_pass(plane[None], mask)
    inner = mask & (((i - 20) ** 2 + (j - 24) ** 2) < 6.0 ** 2)  # the whole 13x13 window on the disc
    assert hp[inner].abs().max() < 1e-9  # a symmetric window reproduces a plane
    ripple = torch.cos(torch.pi * j)[None]  # +-1 every pixel: far above the cut-off
    assert torch.allclose(high_pass(ripple, mask)[inner], ripple[inner], atol=0.02)


def test_detail_recovered_values():
    mask, i, j = _disc()
    g = torch.Generator().manual_seed(0)
    coarse = (0.05 * (i - 20) ** 2 + 0.03 * (j - 24) ** 2)[None]
    detail = 0.5 * torch.cos(1.3 * j)[None] * torch.sin(0.9 * i)[None]
    gt = coarse + detail
    assert torch.allclose(detail_recovered(gt, gt, mask), torch.ones(1, dtype=torch.float64))
    # with the bases: the coarse depth scores exactly 0, all detail 1, half of it 0.75, noise < 0
    kw = dict(pred_base=coarse, gt_base=coarse)
    assert torch.allclose(detail_recovered(coarse, gt, mask, **kw), torch.zeros(1, dtype=torch.float64))
    assert torch.allclose(detail_recovered(gt, gt, mask, **kw), torch.ones(1, dtype=torch.float64))
    assert torch.allclose(detail_recovered(coarse + 0.5 * detail, gt, mask, **kw), torch.tensor([0.75], dtype=torch.float64))
    noise = 0.5 * torch.randn(gt.shape, generator=g, dtype=torch.float64)
    assert float(detail_recovered(coarse + noise, gt, mask, **kw)) < 0
    # without bases the coarse curvature counts as "detail" already matched: > 0 for the coarse depth
    assert float(detail_recovered(coarse, gt, mask)) > 0
    empty = detail_recovered(gt, gt, torch.zeros_like(mask))
    assert torch.isnan(empty).all()
    with pytest.raises(ValueError, match="pass both pred_base and gt_base"):
        detail_recovered(gt, gt, mask, pred_base=coarse)


def test_detail_depth_errors_use_the_coarse_metric():
    mask, i, j = _disc()
    gt = (600.0 + 0.05 * (i - 20) ** 2)[None] * mask
    coarse = (gt + 2.0 * torch.sin(0.5 * j)[None]) * mask
    fine = (gt + 0.5 * torch.sin(0.5 * j)[None]) * mask
    out = detail_depth_errors(coarse, fine, gt, mask)
    assert set(out) == {"depth_err_detail_coarse_pct", "depth_err_detail_fine_pct"}
    assert torch.allclose(out["depth_err_detail_coarse_pct"], depth_error(coarse, gt, mask, coarse > 0).mean_pct)
    assert torch.allclose(out["depth_err_detail_fine_pct"], depth_error(fine, gt, mask, coarse > 0).mean_pct)
    assert float(out["depth_err_detail_fine_pct"]) < float(out["depth_err_detail_coarse_pct"])
