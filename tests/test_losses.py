"""CoarseLoss: zero at the target, analytic values per term, normalisation, iteration sum, the
optional heads; LossWeights from the job config. Phase 2 (FineNet): E_sh with least-squares
lighting on renders, E_f, E_sm (golden Laplacian), the masks, gradcheck of each term in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synth import camera
from synth.color import srgb_to_linear
from train.config import CoarseConfig
from train.losses import (LAPLACIAN_KERNEL, SH_LEVELS, CoarseLoss, FineLoss, FineLossWeights, LossWeights,
                          fidelity_loss, fine_targets, landmark_exclusion_mask, laplacian, pixel_size_mm,
                          prior_vertex_variance, refine_mask, robust_penalty, shade_sh, shading_loss,
                          shading_mask, smoothness_loss)
from train.params import ParamLayout, ParamStats, encode_params

SIZE = 48
DEFAULT = LossWeights.from_config(CoarseConfig(data="-", out="-"))  # the weights of train-cli's defaults


def _only(**kw) -> LossWeights:
    """Weights with every term off but the given ones."""
    return LossWeights(**{"geo": 0.0, "proj": 0.0, "pose": 0.0, "cam": 0.0, "param": 0.0, "alb": 0.0, "sh": 0.0, **kw})


def _batch(model, n=6, seed=0):
    """Ground-truth parameters like synth draws them, with a 48-px camera."""
    from synth.sampling import SamplingConfig, sample_params

    ps = [sample_params(model, SamplingConfig(), SIZE, seed, i) for i in range(n)]
    b = {k: torch.tensor(np.stack([getattr(p, k) for p in ps])) for k in
         ("alpha_id", "alpha_exp", "beta", "sh", "pose", "translation", "intrinsics")}
    b["image"] = torch.zeros(n, 3, SIZE, SIZE)
    return b


@pytest.fixture(scope="module")
def setup(tiny_model):
    b = _batch(tiny_model)
    stats = ParamStats.from_samples(b["pose"], b["translation"], b["intrinsics"], (SIZE, SIZE), sh=b["sh"])
    layout = ParamLayout(tiny_model.n_id, tiny_model.n_exp)
    return b, stats, layout


def test_loss_is_zero_at_the_target(tiny_model, setup):
    b, stats, layout = setup
    loss = CoarseLoss(tiny_model, layout, stats, DEFAULT)
    target = encode_params(b, layout, stats)
    out = loss([target, target], b)
    assert out.total.item() == pytest.approx(0.0, abs=1e-6)
    assert set(out.terms) == {"geo", "proj", "pose", "cam"} and len(out.per_iter) == 2


def test_geo_term_costs_what_a_coefficient_moves_the_surface(tiny_model, setup):
    """One std-unit error in identity component k costs std_k^2 |b_k|^2 / M / sigma_v^2."""
    b, stats, layout = setup
    loss = CoarseLoss(tiny_model, layout, stats, _only(geo=1))
    target = encode_params(b, layout, stats)
    m = loss.n_sub
    for k in (0, tiny_model.n_id - 1):
        est = target.clone()
        est[:, k] += 1.0
        basis_k = loss.id_basis[:, k].double()  # (3M,) already scaled by std_k
        want = float((basis_k**2).sum() / m / loss.sigma_v2)
        assert loss([est], b).terms["geo"].item() == pytest.approx(want, rel=1e-4)
    # a coefficient that moves the surface more costs more: identity std decreases with k
    costs = []
    for k in range(tiny_model.n_id):
        est = target.clone()
        est[:, k] += 1.0
        costs.append(loss([est], b).terms["geo"].item())
    assert costs[0] > costs[-1]


def test_prior_vertex_variance_matches_monte_carlo(tiny_model):
    rng = np.random.default_rng(0)
    var = prior_vertex_variance(tiny_model.id_basis, tiny_model.id_std, tiny_model.exp_basis, tiny_model.exp_std)
    a_id = rng.standard_normal((4000, tiny_model.n_id))
    a_exp = rng.standard_normal((4000, tiny_model.n_exp))
    d = tiny_model.shape(a_id, a_exp).astype(np.float64) - tiny_model.mean_shape  # (S, N, 3)
    mc = (d**2).sum(-1).mean()
    assert var == pytest.approx(mc, rel=0.05)  # 4000 samples: a few % sampling error


def test_pose_and_camera_terms_are_normalised_squared_errors(tiny_model, setup):
    b, stats, layout = setup
    loss = CoarseLoss(tiny_model, layout, stats, _only(pose=1, cam=1))
    target = encode_params(b, layout, stats)
    s = layout.slices()
    est = target.clone()
    est[:, s["pose"]] += 0.5  # 0.5 std in each angle
    est[:, s["cam"]] -= 2.0
    out = loss([est], b)
    assert out.terms["pose"].item() == pytest.approx(0.25, rel=1e-5)
    assert out.terms["cam"].item() == pytest.approx(4.0, rel=1e-5)
    assert out.total.item() == pytest.approx(4.25, rel=1e-5)


def test_projection_term_in_pixels(tiny_model, setup):
    """Moving the camera vector's u0 by one pixel moves the model origin one pixel sideways at its
    depth d0, so a vertex at depth d moves d0 / d pixels (perspective): the term is
    mean((d0 / d)^2) / (0.1 * size)^2."""
    b, stats, layout = setup
    loss = CoarseLoss(tiny_model, layout, stats, _only(proj=1))
    target = encode_params(b, layout, stats)
    est = target.clone()
    est[:, layout.slices()["cam"].start] += (1.0 / SIZE) / stats.cam_std[0]
    got = loss([est], b).terms["proj"].item()
    cam = camera.to_camera(loss.subset_vertices(b["alpha_id"], b["alpha_exp"]), camera.rotation_matrix(b["pose"]),
                           b["translation"])
    shift = -b["translation"][:, 2:3] / -cam[..., 2]  # (B, M) = d0 / d
    assert got == pytest.approx(float((shift**2).mean()) / (0.1 * SIZE) ** 2, rel=1e-3)


def test_losses_sum_over_iterations_and_backpropagate(tiny_model, setup):
    b, stats, layout = setup
    loss = CoarseLoss(tiny_model, layout, stats, DEFAULT)
    est = torch.zeros(6, layout.dim, requires_grad=True)
    one = loss([est], b).total
    two = loss([est, est], b).total
    assert two.item() == pytest.approx(2 * one.item(), rel=1e-6)
    two.backward()
    assert est.grad is not None and torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0


def test_truncated_prediction_keeps_the_unreachable_residual(tiny_model, setup):
    b, stats, _ = setup
    lay = ParamLayout(2, tiny_model.n_exp)
    loss = CoarseLoss(tiny_model, lay, stats, _only(geo=1))
    out = loss([encode_params(b, lay, stats)], b)
    assert out.terms["geo"].item() > 0.01  # components 2.. cannot be predicted


def test_loss_weights_come_from_the_job_config_and_name_the_flag():
    cfg = CoarseConfig(data="-", out="-", w_geo=2.0, w_param=0.5)
    w = LossWeights.from_config(cfg)
    assert (w.geo, w.proj, w.param, w.alb) == (2.0, cfg.w_proj, 0.5, cfg.w_alb)
    with pytest.raises(ValueError, match="--w-geo must be finite and >= 0, got -1"):
        _only(geo=-1.0)


def test_optional_albedo_and_sh_heads(tiny_model, setup):
    b, stats, _ = setup
    lay = ParamLayout(tiny_model.n_id, tiny_model.n_exp, n_albedo=5, n_sh=27)
    loss = CoarseLoss(tiny_model, lay, stats, _only(alb=2.0, sh=1.0))
    target = encode_params(b, lay, stats)
    assert loss([target], b).total.item() == pytest.approx(0.0, abs=1e-8)
    s = lay.slices()
    est = target.clone()
    est[:, s["beta"]] += 0.5  # 0.5 std on every predicted albedo coefficient
    est[:, s["sh"]] -= 1.0  # one normalised unit on every SH coefficient
    out = loss([est], b)
    assert out.terms["alb"].item() == pytest.approx(0.25) and out.terms["sh"].item() == pytest.approx(1.0)
    assert out.total.item() == pytest.approx(2.0 * 0.25 + 1.0)


# --------------------------------------------------------------------------------------------
# Phase 2 (FineNet): E_sh with least-squares lighting on renders, E_f, E_sm, the masks, gradcheck
# --------------------------------------------------------------------------------------------


def _sample(reader, i):
    """One shard sample as a batch of 1 in float64: image (linear), depths, mask, albedo, K, landmarks."""
    s = reader.read(i)
    t = lambda a: torch.from_numpy(np.asarray(a))[None]  # noqa: E731
    return {"image": srgb_to_linear(t(s["image"]).double() / 255.0),  # shards store sRGB
            "depth": t(s["depth"]).double(), "depth_coarse": t(s["depth_coarse"]).double(),
            "mask": t(s["mask"]), "albedo": t(s["albedo"]).double(), "normals": t(s["normals"]).double(),
            "sh": t(s["sh"]).double(), "K": t(s["intrinsics"]).double(), "landmarks": t(s["landmarks"]).double()}


@pytest.fixture(scope="module")
def renders(detail_shards, face_model_2mm):
    """The detail renders as batches of 1, ``mask`` restricted to the inner face (the ground-truth
    mesh's refinable triangles: no scalp, ears, neck, eyes, mouth interior), as FineNet sees it."""
    from morphable_model.torch_model import MorphableModelModule
    from synth.shards import ShardReader
    from train.fine_task import refinable_pixels, refinable_triangles

    morph = MorphableModelModule(face_model_2mm)
    refinable = torch.tensor(refinable_triangles(face_model_2mm))
    reader = ShardReader(sorted(detail_shards.glob("shard-*.h5"))[0])
    out = []
    for i in range(len(reader)):
        b = _sample(reader, i)
        s = reader.read(i, keys=("alpha_id", "alpha_exp", "pose", "translation"))
        t = {k: torch.from_numpy(np.asarray(s[k]))[None] for k in s}
        b["mask"] = b["mask"] & refinable_pixels(morph, refinable, t["alpha_id"], t["alpha_exp"], t["pose"],
                                              t["translation"], b["K"], b["mask"].shape[1:], reader.attrs["projection"])
        out.append(b)
    return out


def test_shading_formula_reproduces_the_render(renders):
    # With the stored normals, albedo and lighting, shade_sh reproduces the 8-bit image up to
    # quantisation (measured RMS 0.33-0.48 levels); a wrong basis order or sign gives tens of levels.
    for b in renders:
        t = fine_targets(b["image"], b["depth_coarse"], b["mask"], b["albedo"], b["K"], landmarks=b["landmarks"])
        r = (shade_sh(b["albedo"], b["normals"], b["sh"]) - b["image"]) * SH_LEVELS
        assert float(r[t.sh_mask].pow(2).mean().sqrt()) < 0.7


def test_e_sh_small_on_the_detailed_depth_and_larger_on_the_coarse(renders):
    # The stored renders, lighting from the coarse normals and the true albedo (what training
    # does). On the ground-truth detailed depth E_sh is at the level of the renderer's own
    # shading-vs-depth mismatch (it shades interpolated vertex normals; the depth's facets differ by
    # ~1.5 degrees): measured 0.22, 0.99, 0.45 levels^2, so "~0" is E_sh < 1.5 (RMS < 1.25 levels).
    # Without the detail (coarse depth): measured 1.20, 1.07, 0.85, +87 % in total (detail bank
    # version 1, ~1 mm creases: +21 %), required +10 %.
    e_gt, e_coarse = [], []
    for b in renders:
        t = fine_targets(b["image"], b["depth_coarse"], b["mask"], b["albedo"], b["K"], landmarks=b["landmarks"])
        e_gt.append(float(shading_loss(b["depth"], t.image_linear, t.albedo, t.sh, t.sh_mask, t.intrinsics)))
        e_coarse.append(float(shading_loss(b["depth_coarse"], t.image_linear, t.albedo, t.sh, t.sh_mask, t.intrinsics)))
    assert max(e_gt) < 1.5, e_gt
    assert sum(e_coarse) > 1.1 * sum(e_gt), (e_coarse, e_gt)


def test_e_sh_is_zero_on_the_detailed_depth_of_a_consistent_image(renders):
    # The renders re-shaded from the normals of their own detailed depth (what E_sh assumes): with
    # the true lighting E_sh on the detailed depth is 0 to round-off; with the lighting fitted on the
    # coarse normals it stays below 0.08 levels^2 (measured 0.047, 0.010, 0.013: the folds tilt the
    # normals the fit sees), while the coarse depth costs at least 8x more in every sample (measured
    # 0.96, 0.12, 0.44: >= 11x).
    from train.depth_geometry import depth_normals

    for b in renders:
        dn = depth_normals(b["depth"], b["K"])
        image = torch.where(dn.mask[..., None], shade_sh(b["albedo"], dn.normals, b["sh"]), b["image"])
        t = fine_targets(image, b["depth_coarse"], b["mask"], b["albedo"], b["K"], landmarks=b["landmarks"])
        exact = float(shading_loss(b["depth"], image, t.albedo, b["sh"], t.sh_mask, t.intrinsics))
        fitted = float(shading_loss(b["depth"], image, t.albedo, t.sh, t.sh_mask, t.intrinsics))
        coarse = float(shading_loss(b["depth_coarse"], image, t.albedo, t.sh, t.sh_mask, t.intrinsics))
        assert exact < 1e-9 and fitted < 0.08 and coarse > 8 * fitted, (exact, fitted, coarse)


def test_fitted_lighting_is_as_good_as_the_true_one(renders):
    # fit_sh on the coarse normals (not the true ones): E_sh on the detailed depth with the fitted
    # lighting is within 25 % of E_sh with the stored lighting (measured +17 %, -10 %, -1 %: the
    # folds of detail bank 2 tilt the normals the fit does not see; bank 1: 0-11 % lower).
    for b in renders:
        t = fine_targets(b["image"], b["depth_coarse"], b["mask"], b["albedo"], b["K"], landmarks=b["landmarks"])
        fit = float(shading_loss(b["depth"], t.image_linear, t.albedo, t.sh, t.sh_mask, t.intrinsics))
        true = float(shading_loss(b["depth"], t.image_linear, t.albedo, b["sh"], t.sh_mask, t.intrinsics))
        assert fit < 1.25 * true, (fit, true)


def test_total_is_the_weighted_sum_and_zero_residual_costs_nothing(renders):
    b = renders[0]
    t = fine_targets(b["image"], b["depth_coarse"], b["mask"], b["albedo"], b["K"], landmarks=b["landmarks"],
                     depth_gt=b["depth"], depth_gt_coarse=b["depth_coarse"])
    w = FineLossWeights(sh=2.0, fid=0.5, smooth=3.0, sup=0.25)
    out = FineLoss(w)(b["depth"], t)  # huber 0: plain squares
    assert set(out.terms) == {"sh", "fid", "smooth", "sup"} and out.per_iter == []
    expected = sum(getattr(w, k) * v for k, v in out.terms.items())
    assert torch.allclose(out.total, expected)
    at_coarse = FineLoss(w)(b["depth_coarse"], t)  # zero residual: E_f = E_sm = 0
    assert float(at_coarse.terms["fid"]) == 0 and float(at_coarse.terms["smooth"]) == 0
    assert float(out.terms["sup"]) == 0  # the ground truth against itself
    assert float(FineLoss(w, smooth_on="depth")(b["depth_coarse"], t).terms["smooth"]) > 0  # the face is curved
    with pytest.raises(ValueError, match="--smooth-on must be one of"):
        FineLoss(w, smooth_on="normals")
    with pytest.raises(ValueError, match="--w-fid must be finite and >= 0"):
        FineLossWeights(sh=1.0, fid=-1.0, smooth=1.0)
    with pytest.raises(ValueError, match="--sh-huber must be finite and >= 0"):
        FineLossWeights(sh=1.0, fid=1.0, smooth=1.0, huber=float("nan"))


def test_pixel_unit(renders):
    b = renders[0]
    u = pixel_size_mm(b["depth_coarse"], b["mask"], b["K"])
    expected = b["depth_coarse"][b["mask"]].median() / (0.5 * (b["K"][0, 0, 0] + b["K"][0, 1, 1]))
    assert torch.allclose(u, expected[None])
    k = torch.tensor([[[4.0, 0, 8], [0, 4.0, 8], [0, 0, 1]]])
    assert torch.allclose(pixel_size_mm(torch.ones(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool), k,
                                        "weak_perspective"), torch.tensor([0.25]))


def test_laplacian_golden():
    # The kernel applied to x^2 + 3 y^2 (unit pixels) is 2 * (2 + 6) = 16 everywhere inside.
    assert sum(sum(r) for r in LAPLACIAN_KERNEL) == 0
    i, j = torch.meshgrid(torch.arange(6.0), torch.arange(7.0), indexing="ij")
    z = (j ** 2 + 3 * i ** 2)[None].double()
    lap = laplacian(z)[0]
    assert torch.allclose(lap[1:-1, 1:-1], torch.full((4, 5), 16.0, dtype=torch.float64))
    assert (lap[0] == 0).all() and (lap[:, -1] == 0).all()
    assert torch.allclose(laplacian((2 * i - j + 5)[None])[0, 1:-1, 1:-1], torch.zeros(4, 5))  # planes: 0


def test_fidelity_and_smoothness_values_in_pixel_units():
    z0 = torch.full((2, 6, 6), 100.0, dtype=torch.float64)
    mask = torch.ones(2, 6, 6, dtype=torch.bool)
    mask[1] = False  # an image without pixels is left out of the mean
    unit = torch.tensor([0.5, 1.0], dtype=torch.float64)
    assert float(fidelity_loss(z0 + 1.0, z0, mask, unit)) == pytest.approx(4.0)  # (1 mm / 0.5 mm)^2
    bump = z0.clone()
    bump[0, 3, 3] += 1.0  # Laplacian -6 at the bump, 1 or 0.5 around; pixels with a full 3x3: 4x4 = 16
    expected = (6 + 4 * 1 + 4 * 0.5) / 0.5 / 16
    assert float(smoothness_loss(bump, mask, unit)) == pytest.approx(expected)


def test_robust_penalty():
    r = torch.tensor([-3.0, -1.0, 0.5, 2.0])
    assert torch.equal(robust_penalty(r, 0.0), r * r)
    assert torch.allclose(robust_penalty(r, 1.0), torch.tensor([5.0, 1.0, 0.25, 3.0]))  # 2|r| - 1 beyond 1


def test_landmark_exclusion_covers_the_features_not_the_cheeks():
    # A frontal face: the model's 68-point template (mm, y up) drawn at 0.5 px/mm in a 128 px image.
    from morphable_model.landmarks import frontal_template_mm

    tmpl = torch.tensor(frontal_template_mm(), dtype=torch.float32)
    lm = torch.stack([64.0 + 0.5 * tmpl[:, 0], 64.0 - 0.5 * tmpl[:, 1]], -1)[None]  # (1, 68, 2) u, v
    ex = landmark_exclusion_mask(lm.expand(2, 68, 2), (128, 128))
    assert ex.shape == (2, 128, 128) and torch.equal(ex[0], ex[1])
    ex = ex[0]
    at = lambda p: bool(ex[int(p[1]), int(p[0])])  # noqa: E731  pixel (row = v, col = u)
    for idx in ([36, 39], [42, 45], [48, 54, 51, 57], [17, 19, 21], [22, 24, 26], [31, 33, 35]):
        for k in idx:  # eyes, lips, brows, nostrils
            assert at(lm[0, k]), k
        assert at(lm[0, idx].mean(0)), idx
    cheek = 0.5 * (lm[0, 2] + lm[0, 31])  # between the jaw line and the nose wing
    nose_bridge = lm[0, 28]
    forehead = lm[0, 27] + (lm[0, 27] - lm[0, 30])  # above the nose, one nose length
    chin = lm[0, 8] + 0.3 * (lm[0, 57] - lm[0, 8])
    for p in (cheek, nose_bridge, forehead, chin):
        assert not at(p), p
    unknown = lm.clone()
    unknown[0, 5] = float("nan")  # a photo without detector landmarks: nothing excluded
    assert not landmark_exclusion_mask(unknown, (128, 128)).any()
    with pytest.raises(ValueError, match=r"landmarks must be \(B, 68, 2\)"):
        landmark_exclusion_mask(lm[:, :60], (128, 128))


def test_masks(renders):
    b = renders[0]
    refine, dn = refine_mask(b["depth_coarse"], b["mask"], b["K"])
    assert not (refine & ~b["mask"]).any() and refine.sum() > 0.6 * b["mask"].sum()
    img = b["image"].clone()
    img[0, 60:64, 60:64] = 1.0  # saturated patch
    m = shading_mask(img, refine)
    assert not m[0, 60:64, 60:64].any() and m.sum() < refine.sum()
    with_lm = shading_mask(img, refine, b["landmarks"])
    assert with_lm.sum() < m.sum() and not (with_lm & ~m).any()


def test_fine_targets_on_a_given_refinement_mask(renders):
    """FineModel hands its refinement mask (restricted to the refinable region) and the coarse
    normals to fine_targets: the same targets as computing them there, and a smaller mask is
    what every term and the lighting fit look at."""
    b = renders[0]
    args = (b["image"], b["depth_coarse"], b["mask"], b["albedo"], b["K"])
    own = fine_targets(*args, landmarks=b["landmarks"])
    refine, dn = refine_mask(b["depth_coarse"], b["mask"], b["K"])
    given = fine_targets(*args, landmarks=b["landmarks"], refine=refine, normals=dn.normals)
    for key in ("mask", "sh_mask", "sh", "unit"):
        torch.testing.assert_close(getattr(given, key), getattr(own, key), rtol=0, atol=0, msg=key)
    half = refine.clone()
    half[:, :, : refine.shape[2] // 2] = False  # the right half of the image only
    t = fine_targets(*args, landmarks=b["landmarks"], refine=half, normals=dn.normals)
    assert torch.equal(t.mask, half) and not (t.sh_mask & ~half).any() and t.sh_mask.any()
    assert not torch.allclose(t.sh, own.sh)  # lit from the right half's pixels
    with pytest.raises(ValueError, match="pass both refine and normals"):
        fine_targets(*args, refine=refine)
    with pytest.raises(ValueError, match="normals must start with"):
        fine_targets(*args, refine=refine, normals=dn.normals[:, 1:])


def _tiny_scene(seed=0, h=5, w=6):
    g = torch.Generator().manual_seed(seed)
    i, j = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    base = 300.0 + 0.3 * (i - 2) ** 2 + 0.2 * (j - 3) ** 2
    depth = base + 0.3 * torch.rand(2, h, w, generator=g, dtype=torch.float64)
    k = torch.tensor([[150.0, 0, w / 2], [0, 150.0, h / 2], [0, 0, 1]], dtype=torch.float64).expand(2, 3, 3)
    image = 0.2 + 0.6 * torch.rand(2, h, w, 3, generator=g, dtype=torch.float64)
    albedo = 0.4 + 0.4 * torch.rand(2, h, w, 3, generator=g, dtype=torch.float64)
    sh = 0.3 * torch.rand(2, 9, 3, generator=g, dtype=torch.float64)
    sh[:, 0] += 1.5
    mask = torch.ones(2, h, w, dtype=torch.bool)
    mask[0, 0, :3] = False
    return depth, base.expand(2, h, w), image, albedo, sh, mask, k


def test_gradcheck_each_term():
    depth, base, image, albedo, sh, mask, k = _tiny_scene()
    unit = torch.tensor([0.7, 1.3], dtype=torch.float64)
    z = depth.clone().requires_grad_(True)
    # E_sh with and without the Huber penalty (residuals of tens of levels cross the threshold)
    for huber in (0.0, 20.0):
        assert torch.autograd.gradcheck(lambda d: shading_loss(d, image, albedo, sh, mask, k, huber=huber), (z,),
                                        fast_mode=True)
    assert torch.autograd.gradcheck(lambda d: fidelity_loss(d, base, mask, unit), (z,))
    assert torch.autograd.gradcheck(lambda d: smoothness_loss(d - base, mask, unit), (z,))  # |.| away from 0
    alb = albedo.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: shading_loss(depth, image, a, sh, mask, k), (alb,), fast_mode=True)
