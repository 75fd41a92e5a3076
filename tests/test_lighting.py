"""synth.lighting: SH basis (vs scipy's complex Y_lm), shading formula, lighting priors."""
import math

import numpy as np
import pytest
import torch

from synth.lighting import (C0, C1, C2, C3, C4, LIGHT_MODES, LightingConfig, ambient_sh, directional_sh,
                            sample_sh, sh_basis, sh_basis_reference, shade)


def _unit(n, seed=0):
    v = np.random.default_rng(seed).standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_constants_are_the_real_sh_constants():
    np.testing.assert_allclose([C0, C1, C2, C3, C4], [0.282095, 0.488603, 1.092548, 0.315392, 0.546274], atol=1e-6)


def test_basis_matches_scipy_reference():
    n = _unit(50)
    np.testing.assert_allclose(sh_basis(n), sh_basis_reference(n), atol=1e-12)


def test_basis_golden_values_and_order():
    # +z: [C0, 0, C1, 0, 0, 0, 2 C3, 0, 0]; +x: Y11 = C1, Y22 = C4, Y20 = -C3; +y: Y1-1 = C1, Y22 = -C4
    np.testing.assert_allclose(sh_basis(np.array([0.0, 0, 1])), [C0, 0, C1, 0, 0, 0, 2 * C3, 0, 0], atol=1e-12)
    np.testing.assert_allclose(sh_basis(np.array([1.0, 0, 0])), [C0, 0, 0, C1, 0, 0, -C3, 0, C4], atol=1e-12)
    np.testing.assert_allclose(sh_basis(np.array([0.0, 1, 0])), [C0, C1, 0, 0, 0, 0, -C3, 0, -C4], atol=1e-12)
    s = 1 / math.sqrt(2)  # xy, yz, xz products
    np.testing.assert_allclose(sh_basis(np.array([s, s, 0]))[4], C2 / 2, atol=1e-12)
    np.testing.assert_allclose(sh_basis(np.array([0, s, s]))[5], C2 / 2, atol=1e-12)
    np.testing.assert_allclose(sh_basis(np.array([s, 0, s]))[7], C2 / 2, atol=1e-12)


def test_basis_torch_matches_numpy_and_has_gradients():
    n = _unit(7, 1).reshape(7, 1, 3)
    t = torch.tensor(n, requires_grad=True)
    out = sh_basis(t)
    assert out.shape == (7, 1, 9) and out.dtype == torch.float64
    np.testing.assert_allclose(out.detach().numpy(), sh_basis(n), atol=1e-12)
    out.sum().backward()
    assert torch.isfinite(t.grad).all()


def test_basis_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"normals must be \(\.\.\., 3\)"):
        sh_basis(np.zeros((4, 2)))


def test_basis_is_orthonormal_on_the_sphere():
    # Monte-Carlo integral of Y_i Y_j over the sphere = delta_ij (4 pi / M * sum); 200k samples -> ~1e-2
    n = _unit(200_000, 3)
    y = sh_basis(n)
    gram = 4 * math.pi * (y.T @ y) / len(n)
    np.testing.assert_allclose(gram, np.eye(9), atol=2e-2)


def test_directional_sh_approximates_clamped_cosine():
    # order-2 SH of max(0, n.d): known to be within ~0.1 of the exact irradiance everywhere (R&H 2001)
    d = np.array([0.3, 0.5, 0.8])
    d /= np.linalg.norm(d)
    sh = directional_sh(d, [1.0, 0.5, 2.0])
    n = _unit(2000, 4)
    approx = sh_basis(n) @ sh  # (M, 3)
    exact = np.clip(n @ d, 0, None)[:, None] * np.array([1.0, 0.5, 2.0])
    assert np.abs(approx - exact).max() < 0.11 * 2.0
    # facing the light: exact value 1 (x colour), SH approx within 10%
    np.testing.assert_allclose(sh_basis(d) @ sh, [1.0, 0.5, 2.0], rtol=0.1)


def test_ambient_sh_is_constant():
    sh = ambient_sh([0.2, 0.4, 0.6])
    np.testing.assert_allclose(sh_basis(_unit(10)) @ sh, np.tile([0.2, 0.4, 0.6], (10, 1)), atol=1e-12)


def test_shade_formula_and_clip():
    n = _unit(5, 2)
    alb = np.random.default_rng(0).uniform(0, 1, (5, 3))
    sh = directional_sh([0, 0, 1], [3.0, 3.0, 3.0])
    np.testing.assert_allclose(shade(alb, n, sh), np.clip(alb * (sh_basis(n) @ sh), 0, 1))
    with pytest.raises(ValueError, match="sh must be"):
        shade(alb, n, np.zeros((9,)))


@pytest.mark.parametrize("mode", LIGHT_MODES)
def test_sample_sh_deterministic_plausible(mode):
    cfg = LightingConfig(mode=mode)
    a = sample_sh(np.random.default_rng([1, 3, 7]), cfg)
    b = sample_sh(np.random.default_rng([1, 3, 7]), cfg)
    assert a.shape == (9, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    n = _unit(500, 5)
    n[:, 2] = np.abs(n[:, 2])  # camera-facing hemisphere
    for i in range(30):
        sh = sample_sh(np.random.default_rng([0, 3, i]), cfg)
        shading = sh_basis(n) @ sh
        assert shading.min() > 0.0 and shading.max() < 3.0
        if mode == "ambient":
            assert np.count_nonzero(sh[1:]) == 0


def test_sh9_is_mostly_frontal_top():
    # the average over draws of the dipole (Y1-1 = y, Y10 = z) coefficients points up and toward the camera
    cfg = LightingConfig(mode="sh9")
    sh = np.stack([sample_sh(np.random.default_rng([0, 3, i]), cfg) for i in range(200)])
    assert sh[:, 1].mean() > 0 and sh[:, 2].mean() > 0
    # colour variation: channels differ
    assert np.abs(sh[:, 0, 0] - sh[:, 0, 2]).mean() > 1e-3


def test_lighting_config_validation():
    with pytest.raises(ValueError, match="--lights must be one of"):
        LightingConfig(mode="sun")


# ---------------------------------------------------------------------------- specular term
def test_dominant_light_recovers_a_directional_light():
    from synth.lighting import dominant_light

    d = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
    color = np.array([0.6, 0.5, 0.3])
    sh = directional_sh(d, color) + ambient_sh([0.4, 0.35, 0.3])  # ambient lives in band 0 only
    direction, got = dominant_light(sh)
    np.testing.assert_allclose(direction, d, atol=1e-12)
    np.testing.assert_allclose(got, color, atol=1e-12)
    t_dir, t_col = dominant_light(torch.tensor(np.stack([sh, sh])))  # batched torch
    np.testing.assert_allclose(t_dir.numpy(), np.stack([d, d]), atol=1e-12)
    np.testing.assert_allclose(t_col.numpy(), np.stack([color, color]), atol=1e-12)
    # no band 1: no light colour (so no highlight), direction +z by convention
    direction, got = dominant_light(ambient_sh([1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(direction, [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(got, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"sh must be \(\.\.\., 9, 3\)"):
        dominant_light(np.zeros((9, 2)))


def test_blinn_phong_golden_values():
    from synth.lighting import blinn_phong

    light = np.array([0.0, 0.0, 1.0])
    color = np.array([1.0, 0.5, 0.25])
    view = np.array([0.0, 0.0, 1.0])
    s = 1 / np.sqrt(2)
    normals = np.array([[0, 0, 1.0], [s, 0, s], [0, 0, -1.0]])
    out = blinn_phong(normals, np.broadcast_to(view, (3, 3)), light, color, 0.5, 16.0)
    # half vector = +z: peak 0.5 * colour facing it, cos(45 deg)^16 = 2^-8 at 45 deg, 0 facing away
    np.testing.assert_allclose(out, [0.5 * color, 0.5 * color * 2.0 ** -8, [0, 0, 0]], atol=1e-12)
    # light from the side (+x), viewer at +z: the highlight is on the normal half way between
    side = blinn_phong(np.array([s, 0, s]), view, np.array([1.0, 0, 0]), color, 1.0, 50.0)
    np.testing.assert_allclose(side, color, atol=1e-12)
    t = blinn_phong(torch.tensor(normals), torch.tensor(np.broadcast_to(view, (3, 3)).copy()), torch.tensor(light),
                    torch.tensor(color), 0.5, 16.0)
    np.testing.assert_allclose(t.numpy(), out, atol=1e-12)


def test_view_directions_point_to_the_camera():
    from synth import camera as cam
    from synth.lighting import view_directions

    k = cam.intrinsics_matrix(100.0, 100.0, 16.0, 16.0)
    c = np.arange(32) + 0.5
    uv = np.stack(np.meshgrid(c, c), axis=-1)  # (32, 32, 2) pixel centres (u, v)
    v = view_directions(uv, k, "perspective")
    assert v.shape == (32, 32, 3)
    np.testing.assert_allclose(np.linalg.norm(v, axis=-1), 1.0, atol=1e-12)
    # a point on the ray of pixel (row 3, col 20) projects back to that pixel, and the view vector is -p / |p|
    p = -v[3, 20] * 500.0
    uv_p, _ = cam.project(p[None], k, "perspective")
    np.testing.assert_allclose(uv_p[0], [20.5, 3.5], atol=1e-9)
    np.testing.assert_array_equal(view_directions(uv, k, "weak_perspective")[..., 2], 1.0)
    t = view_directions(torch.tensor(uv), torch.tensor(k), "perspective")
    np.testing.assert_allclose(t.numpy(), v, atol=1e-12)
