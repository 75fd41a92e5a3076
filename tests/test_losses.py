"""CoarseLoss: zero at the target, analytic values per term, normalisation, iteration sum, the
optional heads; LossWeights from the job config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synth import camera
from train.config import CoarseConfig
from train.losses import CoarseLoss, LossWeights, prior_vertex_variance
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
