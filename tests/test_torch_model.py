"""Tests for morphable_model.torch_model (MorphableModelModule) against the numpy model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morphable_model.torch_model import MorphableModelModule


@pytest.fixture(scope="module")
def module(tiny_model):
    return MorphableModelModule(tiny_model)


@pytest.mark.parametrize("batch", [1, 3])
def test_forward_matches_numpy(tiny_model, module, batch):
    rng = np.random.default_rng(0)
    a_id = rng.standard_normal((batch, tiny_model.n_id)).astype(np.float32)
    a_exp = rng.standard_normal((batch, tiny_model.n_exp)).astype(np.float32)
    v = module(torch.from_numpy(a_id), torch.from_numpy(a_exp))
    assert v.shape == (batch, tiny_model.n_vertices, 3) and v.dtype == torch.float32
    ref = tiny_model.shape(a_id, a_exp)
    # both float32; relative 1e-5 of the ~100 mm coordinate range (summation order differs)
    scale = float(np.abs(ref).max())
    np.testing.assert_allclose(v.numpy(), ref, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(module(torch.from_numpy(a_id)).numpy(), tiny_model.shape(a_id), atol=1e-5 * scale)


def test_albedo_matches_numpy(tiny_model, module):
    beta = np.random.default_rng(1).standard_normal((2, tiny_model.n_albedo)).astype(np.float32) * 3
    for clip in (True, False):
        a = module.albedo(torch.from_numpy(beta), clip=clip)
        np.testing.assert_allclose(a.numpy(), tiny_model.albedo(beta, clip=clip), atol=1e-5)
    assert module.albedo(torch.zeros(tiny_model.n_albedo)).shape == (tiny_model.n_vertices, 3)


def test_float64_matches_numpy_float64_reference(tiny_model):
    m64 = MorphableModelModule(tiny_model, dtype=torch.float64)
    rng = np.random.default_rng(2)
    a_id = rng.standard_normal((2, tiny_model.n_id))
    a_exp = rng.standard_normal((2, tiny_model.n_exp))
    v = m64(torch.from_numpy(a_id), torch.from_numpy(a_exp)).numpy()
    ref = (
        tiny_model.mean_shape.astype(np.float64).reshape(-1)
        + (a_id * tiny_model.id_std) @ tiny_model.id_basis.astype(np.float64).T
        + (a_exp * tiny_model.exp_std) @ tiny_model.exp_basis.astype(np.float64).T
    ).reshape(2, -1, 3)  # (2, 3N) -> (2, N, 3)
    np.testing.assert_allclose(v, ref, rtol=1e-12, atol=1e-10)


def test_buffers_dtype_and_to(tiny_model, module):
    names = {n for n, _ in module.named_buffers()}
    assert {"mean_shape", "id_basis", "id_std", "exp_basis", "exp_std", "albedo_mean", "albedo_basis",
            "albedo_std", "pncc_colors", "triangles", "landmarks"} <= names
    assert module.triangles.dtype == torch.long and module.triangles.shape == (tiny_model.n_triangles, 3)
    assert module.state_dict() == {}  # buffers are not persistent: checkpoints stay small
    m64 = MorphableModelModule(tiny_model).to(torch.float64)
    assert m64.id_basis.dtype == torch.float64 and m64.triangles.dtype == torch.long
    assert m64.landmarks.dtype == torch.long
    v = m64(torch.zeros(1, 2, dtype=torch.float64))
    assert v.dtype == torch.float64
    np.testing.assert_allclose(v[0].numpy(), tiny_model.mean_shape, atol=1e-6)
    np.testing.assert_array_equal(module.triangles.numpy(), tiny_model.triangles)
    np.testing.assert_array_equal(module.landmarks.numpy(), tiny_model.landmarks)
    np.testing.assert_allclose(module.pncc_colors.numpy(), tiny_model.pncc_colors)


def test_gradients_flow(tiny_model):
    m64 = MorphableModelModule(tiny_model, dtype=torch.float64)
    a_id = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    a_exp = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    beta = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    loss = m64(a_id, a_exp).square().sum() + m64.albedo(beta, clip=False).sum()
    loss.backward()
    assert a_id.grad.abs().sum() > 0 and a_exp.grad.abs().sum() > 0 and beta.grad.abs().sum() > 0
    # the map is linear: gradcheck in float64 on a 2-coefficient slice
    assert torch.autograd.gradcheck(lambda a, e: m64(a, e)[:, :20], (a_id[:, :2].detach().requires_grad_(),
                                                                      a_exp[:, :2].detach().requires_grad_()))
    # analytic: d/d a_k of sum(shape) = std_k * sum(basis[:, k])
    a = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    m64(a).sum().backward()
    expected = tiny_model.id_std[:3] * tiny_model.id_basis[:, :3].astype(np.float64).sum(0)
    np.testing.assert_allclose(a.grad[0].numpy(), expected, rtol=1e-6, atol=1e-6)


def test_landmark_points(tiny_model, module):
    v = module(torch.zeros(3, 1))
    lm = module.landmark_points(v)
    assert lm.shape == (3, 68, 3)
    np.testing.assert_allclose(lm[0].numpy(), tiny_model.mean_shape[tiny_model.landmarks], atol=1e-5)
    with pytest.raises(ValueError, match=r"vertices must be \(\.\.\., \d+, 3\)"):
        module.landmark_points(torch.zeros(3, 5, 3))


def test_bad_input(tiny_model, module):
    with pytest.raises(ValueError, match=r"alpha_id must have at most \d+ coefficients"):
        module(torch.zeros(2, tiny_model.n_id + 1))
    with pytest.raises(ValueError, match=r"alpha_id must be \(k,\) or \(B, k\)"):
        module(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="alpha_exp must match alpha_id's batch shape"):
        module(torch.zeros(2, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="model must be a MorphableModel"):
        MorphableModelModule("not a model")
