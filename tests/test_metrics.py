"""Validation metrics: golden values of the per-sample functions on hand-made inputs (Umeyama
alignment, aligned shape error, depth range, depth error, landmark NME on all 68 and the inner 51
points), and ``coarse_metrics`` on shards rendered by synth: zero error for the ground-truth
estimate, the reference estimates beside it, shape metrics that ignore the pose, and the report..
Phase 2: masked blur, high-pass, ``detail_recovered``, the detail depth errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synth import camera
from train.coarse_net import IterativeCoarseNet
from train.data import ShardDataset, image_to_float
from train.depth_render import rasterize
from train.metrics import (
    INNER_51,
    coarse_metrics,
    detail_depth_errors,
    detail_energies,
    detail_recovered,
    high_pass,
    masked_gaussian_blur,
    depth_error,
    landmark_nme,
    metrics_report,
    metrics_table,
    region_pixels,
    shape_error_aligned,
    umeyama,
    vertex_rmse,
    view_depth_range,
)
from train.params import ParamLayout, ParamStats, encode_params

SIZE = 64


def _similarity(b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pose = (torch.rand(b, 3, generator=g, dtype=torch.float64) - 0.5) * 4.0  # any rotation, up to +-115 degrees
    scale = 0.5 + 2.0 * torch.rand(b, generator=g, dtype=torch.float64)
    trans = 100.0 * torch.randn(b, 3, generator=g, dtype=torch.float64)
    return scale, camera.rotation_matrix(pose), trans


def test_umeyama_recovers_a_known_similarity():
    g = torch.Generator().manual_seed(1)
    src = torch.randn(3, 50, 3, generator=g, dtype=torch.float64) * 40.0
    scale, rot, trans = _similarity(3)
    dst = scale[:, None, None] * torch.einsum("bij,bnj->bni", rot, src) + trans[:, None]
    sim = umeyama(src, dst)
    # exact data: float64 round-off only
    torch.testing.assert_close(sim.scale, scale, rtol=1e-10, atol=0)
    torch.testing.assert_close(sim.rotation, rot, rtol=0, atol=1e-10)
    torch.testing.assert_close(sim.translation, trans, rtol=0, atol=1e-8)
    torch.testing.assert_close(sim.apply(src), dst, rtol=0, atol=1e-8)
    # a mirrored target: the best *rotation* (det +1), never a reflection
    mirror = src * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    r = umeyama(src, mirror).rotation
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match=r"src and dst must both be \(B, N, 3\)"):
        umeyama(src, dst[:, :10])


def test_shape_error_golden_saddle():
    """Ground truth: 4 points (+-1, 0, 0), (0, +-1, 0); prediction: the same with z = +h on the x
    axis and z = -h on the y axis (a saddle). By hand: the best similarity is the identity rotation
    with scale 1 / (1 + h^2), leaving every point h / sqrt(1 + h^2) away."""
    h = 1.0
    gt = torch.tensor([[[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]]], dtype=torch.float64)
    pred = gt.clone()
    pred[0, :2, 2], pred[0, 2:, 2] = h, -h
    err, sim = shape_error_aligned(pred, gt)
    assert float(sim.scale) == pytest.approx(1.0 / (1.0 + h * h), rel=1e-12)
    assert float(err) == pytest.approx(h / math.sqrt(1.0 + h * h), rel=1e-12)


def test_shape_error_is_zero_for_the_truth_and_ignores_a_similarity(tiny_model):
    g = torch.Generator().manual_seed(2)
    gt = torch.tensor(np.asarray(tiny_model.mean_shape), dtype=torch.float64)[None].repeat(3, 1, 1)
    gt = gt + torch.randn(gt.shape, generator=g, dtype=torch.float64)  # three different faces
    region = torch.tensor(np.asarray(tiny_model.face_region))
    assert torch.all(shape_error_aligned(gt, gt, region)[0] < 1e-9)
    pred = gt + 2.0 * torch.randn(gt.shape, generator=g, dtype=torch.float64)
    err, _ = shape_error_aligned(pred, gt, region)
    assert torch.all(err > 1.0)  # 2 mm noise per coordinate: ~3 mm, clearly non-zero
    scale, rot, trans = _similarity(3, seed=3)
    moved = scale[:, None, None] * torch.einsum("bij,bnj->bni", rot, pred) + trans[:, None]
    torch.testing.assert_close(shape_error_aligned(moved, gt, region)[0], err, rtol=1e-9, atol=0)
    # only the region counts: noise outside it changes nothing
    noisy_out = pred.clone()
    noisy_out[:, ~region] += 50.0
    torch.testing.assert_close(shape_error_aligned(noisy_out, gt, region)[0], err, rtol=1e-9, atol=0)
    with pytest.raises(ValueError, match=r"region must be \("):
        shape_error_aligned(pred, gt, region[:-1])


def test_view_depth_range_golden():
    cam = torch.tensor([[[0.0, 0, -500], [10, 0, -530], [0, 5, -470], [0, 0, -900]]])
    assert float(view_depth_range(cam)) == pytest.approx(430.0)
    assert float(view_depth_range(cam, torch.tensor([True, True, True, False]))) == pytest.approx(60.0)


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


def test_region_pixels_keep_the_region_triangles():
    """Two triangles side by side; the region holds the left one's vertices only."""
    verts = torch.tensor([[[-1.0, -1, -10], [0, -1, -10], [0, 1, -10], [1, -1, -10], [1, 1, -10]]])
    tris = torch.tensor([[0, 1, 2], [1, 3, 4], [1, 4, 2]])
    k = torch.tensor([[[80.0, 0, 8], [0, 80.0, 8], [0, 0, 1]]])
    fr = rasterize(verts, tris, k, (16, 16))
    region = torch.tensor([True, True, True, False, False])
    inner = region_pixels(fr, tris, region)
    assert inner.sum() > 0 and inner.sum() < fr.mask.sum()
    assert torch.all(fr.tri_id[inner] == 0) and torch.equal(region_pixels(fr, tris, None), fr.mask)


def test_landmark_nme_golden():
    gt = torch.zeros(1, 68, 2)
    gt[0, 36] = torch.tensor([10.0, 20.0])
    gt[0, 45] = torch.tensor([50.0, 20.0])  # inter-ocular 40 px
    pred = gt.clone()
    pred[0, :, 0] += 4.0  # every landmark 4 px off -> 0.1
    assert landmark_nme(pred, gt).item() == pytest.approx(0.1)
    assert landmark_nme(pred, gt, points=INNER_51).item() == pytest.approx(0.1)
    vis = torch.zeros(1, 68, dtype=torch.bool)
    vis[0, :2] = True
    pred2 = gt.clone()
    pred2[0, 0, 1] += 8.0  # visible landmark 0 off by 8, landmark 5 (invisible) off by 100
    pred2[0, 5, 1] += 100.0
    assert landmark_nme(pred2, gt, vis).item() == pytest.approx(4.0 / 40.0)
    # the jaw line (0-16) is not in the 51 inner points: 17 points 20 px off count 17 / 68 of 0.5
    jaw = gt.clone()
    jaw[0, :17, 0] += 20.0
    assert landmark_nme(jaw, gt, points=INNER_51).item() == 0.0
    assert landmark_nme(jaw, gt).item() == pytest.approx(17 / 68 * 0.5)
    assert math.isnan(landmark_nme(pred2, gt, vis, points=INNER_51).item())  # no visible inner point


def test_metric_shapes_are_checked():
    with pytest.raises(ValueError, match=r"pred and gt must both be \(B, N, 3\)"):
        vertex_rmse(torch.zeros(2, 4, 3), torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match=r"pred and gt must both be \(B, N, 3\)"):
        shape_error_aligned(torch.zeros(2, 4, 3), torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match=r"gt_mask must be \(1, 4, 4\)"):
        depth_error(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4), torch.zeros(1, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"pred and gt must both be \(B, 68, 2\)"):
        landmark_nme(torch.zeros(1, 5, 2), torch.zeros(1, 5, 2))


@pytest.fixture(scope="module")
def setup(tiny_shards, tiny_model):
    ds = ShardDataset(tiny_shards(n=36, size=SIZE, seed=3), fingerprint=tiny_model.fingerprint)
    b = torch.utils.data.default_collate([ds[i] for i in range(4)])
    b["image"] = image_to_float(b["image"], b.pop("color"))
    stats = ParamStats.from_samples(b["pose"], b["translation"], b["intrinsics"], (SIZE, SIZE), ds.projection)
    layout = ParamLayout(tiny_model.n_id, tiny_model.n_exp)  # every coefficient: the truth is reachable
    net = IterativeCoarseNet(tiny_model, layout, stats, iters=1, width_mult=0.125, projection=ds.projection)
    return b, net, encode_params(b, layout, stats, ds.projection), layout


def test_coarse_metrics_zero_for_the_truth_and_large_for_iteration_0(setup, tiny_model):
    b, net, truth, _ = setup
    m = coarse_metrics(net, [torch.zeros_like(truth), truth], b, tiny_model.face_region)
    assert all(v.shape == (4,) for v in m.values())
    # float32 round trip through the normalised vector: well below a micrometre / a pixel
    for name in ("vertex_rmse_mm", "shape_err_aligned_mm"):
        assert float(m[f"{name}/it2"].max()) < 1e-3, name
    for name in ("depth_err_mean_pct", "depth_err_aligned_mean_pct", "shape_err_aligned_pct"):
        assert float(m[f"{name}/it2"].max()) < 0.01, name
    assert float(m["depth_coverage/it2"].min()) > 0.999
    # the landmarks stored in the shards include synth's fine detail displacement (tests/test_coarse_net.py)
    assert float(m["landmark_nme68/it2"].max()) < 0.01 and float(m["landmark_nme51/it2"].max()) < 0.01
    # iteration 0 (the mean face at the mean pose) is clearly off on every metric
    assert float(m["vertex_rmse_mm/it1"].min()) > 1.0 and float(m["landmark_nme68/it1"].min()) > 0.02
    assert float(m["shape_err_aligned_mm/it1"].min()) > 0.5


def test_reference_estimates_and_pose_independent_shape_metrics(setup, tiny_model):
    """The mean face with the true pose is a reference row; its shape metrics equal those of any
    mean-face estimate whatever its pose (iteration 0 here), and the mean face placed with the
    true pose scores its pose-dependent metrics exactly as the true-pose reference. A true shape
    with a wrong pose keeps zero shape error while the pose-dependent errors grow."""
    b, net, truth, layout = setup
    s = layout.slices()
    wrong_pose = truth.clone()
    wrong_pose[:, s["pose"]] += 0.5  # half a prior std off in yaw, pitch and roll
    m = coarse_metrics(net, [torch.zeros_like(truth), truth, wrong_pose], b, tiny_model.face_region)
    ref = {k.split("/")[1]: v for k, v in m.items() if k.startswith("mean_face_true_pose/")}
    assert {"shape_err_aligned_mm", "shape_err_aligned_pct", "depth_err_mean_pct", "depth_err_aligned_mean_pct",
            "landmark_nme51", "landmark_nme68"} <= set(ref)
    for name in ("shape_err_aligned_mm", "shape_err_aligned_pct", "depth_err_aligned_mean_pct", "vertex_rmse_mm"):
        torch.testing.assert_close(m[f"{name}/it1"], ref[name], rtol=1e-4, atol=1e-4)  # float32 rendering
        assert float(ref[name].min()) > 0  # the mean face is not the truth
    for name in ("depth_err_mean_pct", "landmark_nme51", "landmark_nme68"):  # the true pose, decoded from float32
        torch.testing.assert_close(m[f"mean_face_pred_pose/{name}/it2"], ref[name], rtol=1e-3, atol=1e-3)
    assert not any(k.startswith("mean_face_pred_pose/shape") for k in m)  # pose-independent: not repeated
    assert float(m["shape_err_aligned_mm/it3"].max()) < 1e-3 and float(m["depth_err_aligned_mean_pct/it3"].max()) < 0.01
    assert float(m["landmark_nme51/it3"].min()) > 0.02 and float(m["depth_err_mean_pct/it3"].min()) > 0.5
    assert not any(k.startswith("mean_face") for k in coarse_metrics(net, [truth], b, baselines=False))


def test_metrics_report_and_table(setup, tiny_model):
    b, net, truth, _ = setup
    m = coarse_metrics(net, [torch.zeros_like(truth), truth], b, tiny_model.face_region)
    flat = {k: float(v.mean()) for k, v in m.items()}
    flat["n"] = 4.0
    rep = metrics_report(flat)
    assert rep["n_samples"] == 4 and rep["iterations_run"] == 2
    for key in ("depth_err_mean_pct", "depth_err_median_pct", "shape_err_aligned_mm", "shape_err_aligned_pct",
                "landmark_nme68", "landmark_nme51"):
        assert rep[key] == flat[f"{key}/it2"] == rep["iterations"][1][key]
        assert rep["iterations"][0][key] == flat[f"{key}/it1"]
    assert [r["iteration"] for r in rep["iterations"]] == [1, 2]
    base = rep["baselines"]
    assert base["mean_face_true_pose"]["shape_err_aligned_mm"] == flat["mean_face_true_pose/shape_err_aligned_mm"]
    assert base["mean_face_pred_pose"]["landmark_nme51"] == flat["mean_face_pred_pose/landmark_nme51/it2"]
    assert [r["iteration"] for r in base["mean_face_pred_pose"]["iterations"]] == [1, 2]
    table = metrics_table(rep).splitlines()
    assert table[0].startswith("4 samples") and "shape %" in table[0] and "NME51" in table[0]
    assert table[1].startswith("mean face, true pose and camera")
    assert any(line.startswith("CoarseNet iteration 2") for line in table)
    assert any(line.startswith("  mean face, pose of iteration 2") for line in table)


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


def test_pooled_detail_weighs_images_by_their_detail():
    # two images: one with detail, recovered in half (0.75 per image); one with almost none, where
    # a little invented detail is a large negative ratio. The per-image mean is dominated by the
    # second; the pooled share 1 - sum(error) / sum(energy) is not.
    mask, i, j = _disc()
    coarse = (0.05 * (i - 20) ** 2)[None].repeat(2, 1, 1)
    detail = torch.cos(1.3 * j)[None] * torch.sin(0.9 * i)[None]
    gt = coarse + torch.cat([0.5 * detail, 0.01 * detail])
    pred = coarse + torch.cat([0.25 * detail, 0.05 * detail])
    m = mask.expand(2, -1, -1)
    kw = dict(pred_base=coarse, gt_base=coarse)
    per_image = detail_recovered(pred, gt, m, **kw)
    err, energy = detail_energies(pred, gt, m, **kw)
    assert torch.allclose(per_image, 1 - err / energy)
    assert float(per_image[0]) == pytest.approx(0.75) and float(per_image[1]) == pytest.approx(-15.0)
    pooled = 1 - float(err.sum() / energy.sum())
    assert pooled == pytest.approx(1 - (0.25 * 0.5 ** 2 + 16 * 0.01 ** 2) / (0.5 ** 2 + 0.01 ** 2))
    assert pooled > 0.7 and float(per_image.mean()) < -7


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
