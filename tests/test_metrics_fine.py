"""Phase-2 metrics of train.metrics: masked blur, high-pass, detail_recovered, detail depth errors."""

from __future__ import annotations

import pytest
import torch

from train.metrics import depth_error, detail_depth_errors, detail_recovered, high_pass, masked_gaussian_blur


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
