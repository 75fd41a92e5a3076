"""The landmark initialisation of CoarseNet: ``synth.camera.rotation_to_pose`` inverts
``rotation_matrix``; ``train.landmark_fit.fit_landmarks`` recovers pose, translation and shape from
exact projections (perspective and weak perspective), degrades gracefully with noise and ignores
points of weight 0; the soft-argmax reads a peaked heatmap at its cell centre; a network with
``landmark_init`` returns its points, starts from the fitted estimate (a detector's points with
their weights), round-trips through its hyperparameters, and its loss has the landmark term;
``--init`` loads the matching tensors of a checkpoint and leaves the head fresh."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synth.camera import intrinsics_matrix, project, rotation_matrix, rotation_to_pose, to_camera
from train.checkpoint import CheckpointError
from morphable_model.landmarks import mirror_permutation
from train.coarse_net import DETECTOR_FIT_WEIGHTS, IterativeCoarseNet, mirror_points, soft_argmax
from train.coarse_task import load_initial_weights
from train.landmark_fit import fit_landmarks
from train.losses import CoarseLoss, LossWeights
from train.params import ParamLayout, ParamStats


def _poses(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(-1.2, 1.2, n), rng.uniform(-1.4, 1.4, n), rng.uniform(-math.pi, math.pi, n)], 1)


def test_rotation_to_pose_inverts_rotation_matrix():
    poses = _poses(200)
    np.testing.assert_allclose(rotation_to_pose(rotation_matrix(poses)), poses, atol=1e-9)
    t = torch.tensor(poses, dtype=torch.float64)
    np.testing.assert_allclose(rotation_to_pose(rotation_matrix(t)).numpy(), poses, atol=1e-9)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 3\)"):
        rotation_to_pose(np.zeros((3, 2)))


def _landmark_bases(model, n_id, n_exp):
    lm = np.asarray(model.landmarks)
    mean = torch.tensor(model.mean_shape[lm], dtype=torch.float64)
    bid = torch.tensor((model.id_basis[:, :n_id] * model.id_std[:n_id]).reshape(-1, 3, n_id)[lm], dtype=torch.float64)
    bexp = torch.tensor((model.exp_basis[:, :n_exp] * model.exp_std[:n_exp]).reshape(-1, 3, n_exp)[lm], dtype=torch.float64)
    return mean, bid, bexp


def _scene(model, n, projection, seed=1, n_id=10, n_exp=5, coef_scale=1.0):
    """Random faces (first n_id / n_exp coefficients), poses within the training prior, the camera
    at ~600 mm with a 30-degree field of view (perspective) or 1.5 px/mm (weak), 64 px images."""
    rng = np.random.default_rng(seed)
    mean, bid, bexp = _landmark_bases(model, n_id, n_exp)
    a_id = torch.tensor(rng.normal(size=(n, n_id)) * coef_scale)
    a_exp = torch.tensor(rng.normal(size=(n, n_exp)) * coef_scale)
    pose = torch.tensor(np.stack([rng.uniform(-0.9, 0.9, n), rng.uniform(-0.4, 0.4, n), rng.uniform(-0.3, 0.3, n)], 1))
    f = 32 / math.tan(math.radians(15)) if projection == "perspective" else 1.5
    k = torch.tensor(intrinsics_matrix(f, f, 32.0, 32.0), dtype=torch.float64).expand(n, 3, 3).clone()
    depth = -600.0 if projection == "perspective" else -1.0
    t = torch.tensor(np.stack([rng.uniform(-20, 20, n), rng.uniform(-20, 20, n), depth + rng.uniform(-50, 50, n)], 1))
    x = mean + torch.einsum("ljk,bk->blj", bid, a_id) + torch.einsum("ljk,bk->blj", bexp, a_exp)
    uv, _ = project(to_camera(x, rotation_matrix(pose), t), k, projection)
    return dict(uv=uv, k=k, pose=pose, t=t, a_id=a_id, a_exp=a_exp, mean=mean, bid=bid, bexp=bexp)


@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
def test_fit_recovers_pose_and_landmarks_from_exact_points(tiny_model, projection):
    s = _scene(tiny_model, 32, projection)
    fit = fit_landmarks(s["uv"], s["k"], s["mean"], s["bid"], s["bexp"], projection=projection, rounds=6, sigma=1e-4)
    # measured RMS: perspective 0.04 px on average, 0.17 at most (the perspective correction is
    # iterated, not exact); weak perspective 0.29 / 1.25 (its scale is fixed by the intrinsics, the
    # rotation comes from the free-scale affine fit: the alternation converges slower)
    mean_px, max_px = (0.06, 0.25) if projection == "perspective" else (0.4, 1.6)
    assert fit.residual_px.mean() < mean_px and fit.residual_px.max() < max_px
    # the pose up to what 68 points cannot tell from the shape (yaw trades against the depth of
    # the face, e.g. the nose): measured 0.6 degrees on average, 3.6 at most (tiny model)
    assert (fit.pose - s["pose"]).abs().mean() < math.radians(1.5)
    assert (fit.pose - s["pose"]).abs().max() < math.radians(6.0)
    if projection == "perspective":
        # distance trades against the face's size (identity): measured up to 30 mm at ~600 mm
        assert (fit.translation - s["t"])[:, 2].abs().max() < 45.0
        assert (fit.translation - s["t"])[:, :2].norm(dim=-1).max() < 8.0  # measured <= 5.5 mm (with the yaw)
    else:  # no depth; the origin trades against the shape like the yaw (measured <= 5.8 mm)
        assert (fit.translation[:, :2] - s["t"][:, :2]).norm(dim=-1).max() < 8.0
    # the points are explained by the fitted shape: its landmarks project onto them
    x = s["mean"] + torch.einsum("ljk,bk->blj", s["bid"], fit.alpha_id) + torch.einsum("ljk,bk->blj", s["bexp"], fit.alpha_exp)
    uv, _ = project(to_camera(x, rotation_matrix(fit.pose), fit.translation), s["k"], projection)
    assert (uv - s["uv"]).norm(dim=-1).mean() < mean_px


def test_fit_without_shape_coefficients_and_with_noise(tiny_model):
    s = _scene(tiny_model, 32, "perspective", coef_scale=0.0)  # the mean face
    empty = s["bid"][..., :0]
    fit = fit_landmarks(s["uv"], s["k"], s["mean"], empty, empty, rounds=3)
    assert fit.alpha_id.shape == (32, 0) and fit.residual_px.max() < 0.1
    # 0.5 px of noise: the pose stays within a few degrees, the ridge keeps the shape near the prior
    s = _scene(tiny_model, 32, "perspective")
    noisy = s["uv"] + 0.5 * torch.randn(s["uv"].shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fit = fit_landmarks(noisy, s["k"], s["mean"], s["bid"], s["bexp"], sigma=0.02)
    assert (fit.pose - s["pose"]).abs().mean() < math.radians(4.0)
    assert fit.alpha_id.abs().max() < 6.0 and torch.isfinite(fit.translation).all()


@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
def test_weighted_fit_ignores_points_of_weight_zero(tiny_model, projection):
    """Weight 0 removes a point from every step: with the jaw's points moved far away and weighted 0
    the fit equals the fit of the other 51 points alone (and all ones equals no weights)."""
    s = _scene(tiny_model, 8, projection)
    noisy = s["uv"] + 0.3 * torch.randn(s["uv"].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    moved = noisy.clone()
    moved[:, :17] += 15.0  # a jaw the model's vertices cannot follow
    w = torch.ones(8, 68, dtype=torch.float64)
    w[:, :17] = 0.0
    kw = dict(projection=projection)
    fit_w = fit_landmarks(moved, s["k"], s["mean"], s["bid"], s["bexp"], weights=w, **kw)
    keep = slice(17, 68)
    fit_sub = fit_landmarks(noisy[:, keep], s["k"], s["mean"][keep], s["bid"][keep], s["bexp"][keep], **kw)
    for name in ("alpha_id", "alpha_exp", "pose", "translation", "residual_px"):
        torch.testing.assert_close(getattr(fit_w, name), getattr(fit_sub, name), rtol=1e-7, atol=1e-7)
    plain = fit_landmarks(moved, s["k"], s["mean"], s["bid"], s["bexp"], **kw)
    assert (plain.pose - s["pose"]).abs().mean() > 2 * (fit_w.pose - s["pose"]).abs().mean()  # the jaw pulled it
    ones = fit_landmarks(moved, s["k"], s["mean"], s["bid"], s["bexp"], weights=torch.ones(8, 68), **kw)
    torch.testing.assert_close(ones.pose, plain.pose, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ones.alpha_id, plain.alpha_id, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match=r"weights must be \(8, 68\)"):
        fit_landmarks(moved, s["k"], s["mean"], s["bid"], s["bexp"], weights=w[:, :51])
    with pytest.raises(ValueError, match="some positive weight"):
        fit_landmarks(moved, s["k"], s["mean"], s["bid"], s["bexp"], weights=torch.zeros(8, 68))


def test_fit_rejects_bad_shapes(tiny_model):
    s = _scene(tiny_model, 2, "perspective")
    with pytest.raises(ValueError, match=r"points must be \(B, L, 2\)"):
        fit_landmarks(s["uv"][..., :1], s["k"], s["mean"], s["bid"], s["bexp"])
    with pytest.raises(ValueError, match="lm_mean must be"):
        fit_landmarks(s["uv"], s["k"], s["mean"][:5], s["bid"], s["bexp"])
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        fit_landmarks(s["uv"], s["k"], s["mean"], s["bid"], s["bexp"], rounds=0)


def test_soft_argmax_reads_a_peaked_map_at_the_cell_centre():
    heat = torch.full((2, 3, 16, 16), -1e4)
    heat[0, 0, 5, 9] = 0.0  # row 5, column 9 of a 16-cell map over 64 px: centre (38, 22)
    heat[1, 2, 0, 15] = 0.0
    uv = soft_argmax(heat, (64, 64))
    assert uv.shape == (2, 3, 2)
    np.testing.assert_allclose(uv[0, 0].numpy(), [38.0, 22.0], atol=1e-4)
    np.testing.assert_allclose(uv[1, 2].numpy(), [62.0, 2.0], atol=1e-4)
    np.testing.assert_allclose(uv[0, 1].numpy(), [32.0, 32.0], atol=1e-4)  # a flat map: the centre


def _net(model, landmark_init, n_id=10, n_exp=5):
    layout = ParamLayout(n_id=n_id, n_exp=n_exp)
    stats = ParamStats.from_samples(np.zeros((4, 3)) + [[0.1, 0, 0], [-0.1, 0, 0], [0, 0.1, 0], [0, 0, 0.1]],
                                    np.tile([0.0, 0.0, -600.0], (4, 1)) + np.arange(12).reshape(4, 3),
                                    np.tile(intrinsics_matrix(120.0, 120.0, 32.0, 32.0), (4, 1, 1)), (64, 64))
    torch.manual_seed(0)
    return IterativeCoarseNet(model, layout, stats, iters=2, width_mult=0.125, norm="iter_batch",
                              landmark_init=landmark_init)


def test_network_with_landmark_init_starts_from_the_fit(tiny_model):
    net = _net(tiny_model, True).eval()
    assert net.hyperparameters()["landmark_init"] is True
    rebuilt = IterativeCoarseNet.from_hyperparameters(tiny_model, net.hyperparameters())
    assert rebuilt.landmark_head is not None
    rebuilt.load_state_dict(net.state_dict())  # the same tensors
    old = dict(net.hyperparameters())
    del old["landmark_init"]  # a checkpoint from before the option: no head
    assert IterativeCoarseNet.from_hyperparameters(tiny_model, old).landmark_head is None
    img = torch.rand(2, 3, 64, 64)
    k = torch.tensor(intrinsics_matrix(120.0, 120.0, 32.0, 32.0)).expand(2, 3, 3).clone()
    with torch.no_grad():
        ests, points = net(img, k, return_landmarks=True)
        assert len(ests) == 2 and points.shape == (2, 68, 2)
        assert ((points >= 0) & (points <= 64)).all()
        # iteration 1 = the fit of the head's points (the untrained update's albedo/SH slots are absent)
        torch.testing.assert_close(ests[0], net.fit_estimate(points, k, (64, 64)))
        assert torch.equal(net(img, k)[1], ests[1])  # the plain call returns the estimates alone
    assert _net(tiny_model, False)(img, k, return_landmarks=True)[1] is None


def test_mirror_points_maps_a_symmetric_face_onto_itself(tiny_model):
    # the built-in model is exactly mirror-symmetric: its mean face seen frontally with the principal
    # point at the image centre has mirror-image landmarks, which mirror_points must map onto themselves
    mean = torch.tensor(tiny_model.mean_shape[np.asarray(tiny_model.landmarks)], dtype=torch.float64)
    k = torch.tensor(intrinsics_matrix(120.0, 120.0, 32.0, 32.0)).expand(1, 3, 3)
    uv, _ = project(to_camera(mean[None], rotation_matrix(torch.zeros(1, 3, dtype=torch.float64)),
                              torch.tensor([[0.0, 5.0, -600.0]], dtype=torch.float64)), k, "perspective")
    partner = torch.from_numpy(mirror_permutation())
    assert float((uv[0, :, 0] - 32.0).abs().max()) > 5.0  # not all on the midline
    torch.testing.assert_close(mirror_points(uv, 64, partner), uv, atol=1e-9, rtol=0)
    shifted = uv + torch.tensor([3.0, 0.0], dtype=torch.float64)  # 3 px right -> its mirror image is 3 px left
    torch.testing.assert_close(mirror_points(shifted, 64, partner), uv - torch.tensor([3.0, 0.0], dtype=torch.float64))


def test_flip_test_averages_the_head_with_its_reading_of_the_mirrored_crop(tiny_model):
    net = _net(tiny_model, True).eval()
    img = torch.rand(2, 3, 64, 64)
    k = torch.tensor(intrinsics_matrix(120.0, 120.0, 30.0, 35.0)).expand(2, 3, 3).clone()  # off-centre principal point
    k_mirror = k.clone()
    k_mirror[:, 0, 2] = 64 - 30.0
    est0 = torch.zeros(2, net.layout.dim)
    with torch.no_grad():
        ests, plain = net(img, k, return_landmarks=True)
        mirrored = net.mirrored_points(img, k, est0)
        # the mirrored reading of the mirrored crop (under the mirrored camera) is the plain reading
        torch.testing.assert_close(mirror_points(net.mirrored_points(img.flip(-1), k_mirror, est0), 64, net.mirror),
                                   plain, atol=1e-4, rtol=0)
        assert float((mirrored - plain).abs().max()) > 1e-3  # an untrained head is not symmetric
        net.flip_test = True
        ests_flip, averaged = net(img, k, return_landmarks=True)
        torch.testing.assert_close(averaged, 0.5 * (plain + mirrored))
        torch.testing.assert_close(ests_flip[0], net.fit_estimate(averaged, k, (64, 64)))
    net.train()  # training ignores it: one reading, gradients to the head
    _, trained = net(img, k, return_landmarks=True)
    assert trained.requires_grad


def test_fit_points_replace_the_heads_points_per_row(tiny_model):
    """Given points (a detector's) are what the first iteration fits; a NaN row keeps the head's;
    the head's points are returned either way; the mirrored reading runs only for such a row."""
    net = _net(tiny_model, True).eval()
    net.flip_test = True
    img = torch.rand(2, 3, 64, 64)
    k = torch.tensor(intrinsics_matrix(120.0, 120.0, 32.0, 32.0)).expand(2, 3, 3).clone()
    calls = []
    mirrored = net.mirrored_points
    net.mirrored_points = lambda *a: calls.append(1) or mirrored(*a)
    with torch.no_grad():
        _, head = net(img, k, return_landmarks=True)
        assert len(calls) == 1
        given = _scene(tiny_model, 2, "perspective")["uv"].float()  # other points (a face), per row
        ests, points = net(img, k, return_landmarks=True, fit_points=given)
        assert len(calls) == 1  # every row given: no mirrored reading
        stages = net.net(net._input(img, k, torch.zeros(2, net.layout.dim)), 0, features=True)[1]
        torch.testing.assert_close(points, net.landmark_head(stages, (64, 64)))  # one plain reading
        n_id = net.layout.n_id
        # given points are a detector's: fitted with its weights (the jaw down-weighted)
        det_w = torch.tensor(DETECTOR_FIT_WEIGHTS, dtype=torch.float64)
        assert det_w[:17].max() < 1.0 and bool((det_w[17:] == 1.0).all())
        torch.testing.assert_close(ests[0][:, :n_id],
                                   net.fit_estimate(given, k, (64, 64), det_w.expand(2, 68))[:, :n_id])
        assert not torch.allclose(ests[0][:, :n_id], net.fit_estimate(given, k, (64, 64))[:, :n_id])
        mixed = given.clone()
        mixed[1] = float("nan")
        ests_mixed, _ = net(img, k, return_landmarks=True, fit_points=mixed)
        assert len(calls) == 2
        both = torch.stack([given[0], head[1]])
        weights = torch.stack([det_w, torch.ones(68, dtype=torch.float64)])  # the head's points: all alike
        torch.testing.assert_close(ests_mixed[0][:, :n_id], net.fit_estimate(both, k, (64, 64), weights)[:, :n_id])
        assert torch.isfinite(ests_mixed[1]).all()
        with pytest.raises(ValueError, match="fit_points must be"):
            net(img, k, fit_points=given[:, :51])
        with pytest.raises(ValueError, match="landmark head"):
            _net(tiny_model, False).eval()(img, k, fit_points=given)


def test_loss_has_the_landmark_term(tiny_model):
    net = _net(tiny_model, True)
    w = LossWeights(geo=1, proj=1, pose=1, cam=1, param=0, alb=1, sh=1, lmk=2.0)
    crit = CoarseLoss(tiny_model, net.layout, net.stats, w)
    b = 2
    k = torch.tensor(intrinsics_matrix(120.0, 120.0, 32.0, 32.0)).expand(b, 3, 3).clone()
    lm = torch.rand(b, 68, 2) * 64
    batch = {"alpha_id": torch.zeros(b, 10), "alpha_exp": torch.zeros(b, 5), "pose": torch.zeros(b, 3),
             "translation": torch.tensor([[0.0, 0.0, -600.0]] * b), "intrinsics": k, "image": torch.zeros(b, 3, 64, 64),
             "landmarks": lm}
    ests = [torch.zeros(b, net.layout.dim)] * 2
    assert "lmk" not in crit(ests, batch).terms
    exact = crit(ests, batch, lm)
    assert float(exact.terms["lmk"]) == 0.0
    off = crit(ests, batch, lm + torch.tensor([3.0, 4.0]))  # 5 px off everywhere: 5 / (0.1 * 64)
    assert float(off.terms["lmk"]) == pytest.approx(5 / 6.4)
    assert float(off.total - exact.total) == pytest.approx(2.0 * 5 / 6.4, rel=1e-5)


def test_init_loads_matching_tensors_and_leaves_the_head_fresh(tiny_model, tiny_coarse_weights, tmp_model_h5):
    from morphable_model import load_model
    from train.inference import load_coarse

    model = load_model(str(tmp_model_h5))
    src = load_coarse(tiny_coarse_weights, model)
    hp = dict(src.hyperparameters(), landmark_init=True)
    net = IterativeCoarseNet.from_hyperparameters(model, hp)
    fresh = load_initial_weights(net, str(tiny_coarse_weights), model)
    assert fresh and all(k.startswith("landmark_head.") for k in fresh)
    for name, v in src.state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], v)
    other = IterativeCoarseNet.from_hyperparameters(model, dict(hp, width_mult=0.25, layout={"n_id": 3, "n_exp": 2}))
    with pytest.raises(CheckpointError, match="--init .*no tensor of the checkpoint matches"):
        load_initial_weights(other, str(tiny_coarse_weights), model)


def test_init_with_more_iterations_starts_them_from_the_last_iterations_norms(tiny_coarse_weights, tmp_model_h5,
                                                                              tmp_path):
    """``--iters 3 --init`` a 2-iteration ``iter_batch`` run: the third iteration's norms start as the
    second's, so the new network computes what the checkpoint computes with ``--iters 3``."""
    from morphable_model import load_model
    from train.checkpoint import load_inference_checkpoint, write_inference

    model = load_model(str(tmp_model_h5))
    ck = load_inference_checkpoint(tiny_coarse_weights)
    hp = dict(ck["task_state"], norm="iter_batch", iters=2)
    src = IterativeCoarseNet.from_hyperparameters(model, hp)
    gen = torch.Generator().manual_seed(0)
    for name, t in src.state_dict().items():  # distinct norms per iteration, an output layer that is not 0
        if ".bns." in name and t.is_floating_point():
            t.copy_(torch.rand(t.shape, generator=gen) * 0.5 + (0.75 if name.endswith(("weight", "running_var")) else 0))
        elif name.startswith("net.fc.") and t.is_floating_point():
            t.copy_(torch.randn(t.shape, generator=gen) * 0.05)
    path = write_inference(dict(ck, model=src.state_dict(), task_state=hp), tmp_path / "two.safetensors")
    net = IterativeCoarseNet.from_hyperparameters(model, dict(hp, iters=3))
    assert load_initial_weights(net, str(path), model) == []
    src.eval(), net.eval()
    image = torch.rand(2, 3, 32, 32, generator=gen)
    k = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]]).expand(2, 3, 3).clone()
    with torch.no_grad():
        want, got = src(image, k, iters=3), net(image, k)
        assert not torch.allclose(want[2], src(image, k, iters=2)[1])  # a third iteration does change it
    assert len(got) == 3
    for a, b in zip(want, got):
        torch.testing.assert_close(a, b)
    fresh = IterativeCoarseNet.from_hyperparameters(model, dict(hp, iters=3))  # the copy is what made them equal
    fresh.load_state_dict(src.state_dict(), strict=False)
    fresh.eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(image, k)[2], want[2])
