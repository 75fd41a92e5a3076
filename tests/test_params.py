"""The parameter vector: camera vector golden values and round trip, encode/decode round trip on
shards rendered by synth, normalisation statistics, layout validation and serialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train.params import (
    ParamLayout,
    ParamStats,
    cam_to_translation,
    decode_params,
    encode_params,
    translation_to_cam,
)

SIZE = 64


@pytest.fixture(scope="module")
def batch(tiny_shards, tiny_model):
    """8 samples of the 36-sample, 64 px set tests/test_data.py uses (rendered once per session)."""
    from train.data import ShardDataset

    ds = ShardDataset(tiny_shards(n=36, size=SIZE, seed=3), fingerprint=tiny_model.fingerprint)
    b = torch.utils.data.default_collate([ds[i] for i in range(8)])
    b["image"] = b["image"].float() / 255  # encode_params reads only the image size
    return b, ds


@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
def test_cam_vector_round_trip_and_golden(projection):
    k = torch.tensor([[[400.0, 0, 30.0], [0, 400.0, 34.0], [0, 0, 1]]] * 2, dtype=torch.float64)
    t = torch.tensor([[0.0, 0.0, -800.0], [12.0, -7.0, -650.0]], dtype=torch.float64)
    c = translation_to_cam(t, k, (64, 60), projection)
    np.testing.assert_allclose(cam_to_translation(c, k, (64, 60), projection).numpy(), t.numpy(), rtol=1e-12)
    # the model origin on the optical axis lands on the principal point
    assert c[0, 0].item() == pytest.approx(30.0 / 60) and c[0, 1].item() == pytest.approx(34.0 / 64)
    if projection == "perspective":  # apparent scale = fx / (d W) of the image width per mm
        assert c[0, 2].item() == pytest.approx(np.log(400.0 / (800.0 * 60)))
        assert c[1, 0].item() == pytest.approx((30.0 + 400.0 * 12 / 650) / 60)


def test_cam_vector_rejects_unknown_projection():
    k = torch.eye(3, dtype=torch.float64)[None]
    with pytest.raises(ValueError, match="projection must be 'perspective' or 'weak_perspective', got 'ortho'"):
        translation_to_cam(torch.tensor([[0.0, 0.0, -500.0]]), k, (32, 32), "ortho")


def test_encode_decode_round_trip(batch, tiny_model):
    b, ds = batch
    stats = ParamStats.from_samples(b["pose"], b["translation"], b["intrinsics"], (SIZE, SIZE), ds.projection, b["sh"])
    layout = ParamLayout(tiny_model.n_id, tiny_model.n_exp, n_albedo=3, n_sh=27)
    vec = encode_params(b, layout, stats, ds.projection)
    assert vec.shape == (8, layout.dim)
    # normalised pose/camera of the very samples the stats came from: mean 0, std 1
    s = layout.slices()
    np.testing.assert_allclose(vec[:, s["pose"]].mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(vec[:, s["cam"]].std(0, unbiased=False).numpy(), 1, atol=1e-4)
    p = decode_params(vec, layout, stats, b["intrinsics"], (SIZE, SIZE), ds.projection)
    np.testing.assert_allclose(p.translation.numpy(), b["translation"].numpy(), rtol=1e-4)
    np.testing.assert_allclose(p.pose.numpy(), b["pose"].numpy(), atol=1e-6)
    np.testing.assert_allclose(p.sh.numpy(), b["sh"].numpy(), atol=1e-5)
    np.testing.assert_allclose(p.beta.numpy(), b["beta"][:, :3].numpy())
    with pytest.raises(ValueError, match=r"vec must be \(B, "):
        decode_params(vec[:, 1:], layout, stats, b["intrinsics"], (SIZE, SIZE))


def test_encode_names_a_short_coefficient_array(batch, tiny_model):
    b, ds = batch
    stats = ParamStats.from_samples(b["pose"], b["translation"], b["intrinsics"], (SIZE, SIZE), ds.projection)
    too_many = ParamLayout(tiny_model.n_id + 1, tiny_model.n_exp)
    with pytest.raises(ValueError, match=f"alpha_id must have at least {tiny_model.n_id + 1} coefficients"):
        encode_params(b, too_many, stats, ds.projection)


def test_param_stats_dict_round_trip_and_fixed_components():
    st = ParamStats.from_samples(np.zeros((4, 3)), [[0, 0, -500.0]] * 4, [np.diag([100.0, 100.0, 1.0])] * 4, (32, 32))
    np.testing.assert_array_equal(st.pose_std.numpy(), 1.0)  # a fixed component keeps unit scale
    st2 = ParamStats.from_dict(st.to_dict())
    for name in ("pose_mean", "cam_mean", "cam_std", "sh_std"):
        np.testing.assert_array_equal(getattr(st2, name).numpy(), getattr(st, name).numpy())
    with pytest.raises(ValueError, match="pose must hold at least one sample"):
        ParamStats.from_samples(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3, 3)), (32, 32))


def test_layout_validation_and_dict_round_trip():
    with pytest.raises(ValueError, match="n_sh must be 0 or 27"):
        ParamLayout(3, 2, n_sh=9)
    with pytest.raises(ValueError, match="n_albedo must be >= 0, got -1"):
        ParamLayout(3, 2, n_albedo=-1)
    lay = ParamLayout(3, 2, n_albedo=4, n_sh=27)
    assert lay.dim == 3 + 2 + 3 + 3 + 4 + 27
    assert lay.slices()["cam"] == slice(8, 11) and lay.slices()["beta"] == slice(11, 15)
    assert ParamLayout.from_dict(lay.to_dict()) == lay
    # checkpoints written before the rename store the albedo count as n_alb
    assert ParamLayout.from_dict({"n_id": 3, "n_exp": 2, "n_alb": 4, "n_sh": 27}) == lay
