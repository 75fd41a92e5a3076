"""synth.sampling: determinism per (seed, index), prior ranges, face framing, config validation."""
import math

import numpy as np
import pytest

from synth import camera as cam
from synth.sampling import STREAMS, SamplingConfig, face_framing, sample_params, sample_rng


def _same(a, b):
    for f in ("alpha_id", "alpha_exp", "beta", "pose", "translation", "intrinsics", "sh", "detail_weights",
              "background_color"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert a.background_seed == b.background_seed


def test_sample_depends_only_on_seed_and_index(tiny_model):
    cfg = SamplingConfig()
    later = [sample_params(tiny_model, cfg, 64, 5, i) for i in (3, 2, 1)]  # any order
    again = sample_params(tiny_model, cfg, 64, 5, 2)
    _same(later[1], again)
    other = sample_params(tiny_model, cfg, 64, 6, 2)
    assert not np.array_equal(other.alpha_id, again.alpha_id)
    assert not np.array_equal(later[0].pose, later[2].pose)


def test_streams_are_independent(tiny_model):
    # turning the detail off or changing the background must not change the face or the camera
    a = sample_params(tiny_model, SamplingConfig(), 64, 0, 9)
    b = sample_params(tiny_model, SamplingConfig(detail=False, background="solid"), 64, 0, 9)
    for f in ("alpha_id", "alpha_exp", "beta", "pose", "translation", "intrinsics", "sh"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert b.detail_weights is None
    assert len(set(STREAMS.values())) == len(STREAMS)
    assert sample_rng(1, "pose", 2).uniform() == np.random.default_rng([1, STREAMS["pose"], 2]).uniform()


def test_prior_ranges(tiny_model):
    cfg = SamplingConfig(yaw_deg=40, pitch_deg=10, roll_deg=5, truncation=1.5)
    ps = [sample_params(tiny_model, cfg, 64, 0, i) for i in range(40)]
    pose = np.degrees(np.stack([p.pose for p in ps]))
    assert np.all(np.abs(pose) <= [40, 10, 5]) and np.abs(pose[:, 0]).max() > 20
    coef = np.concatenate([np.concatenate([p.alpha_id, p.alpha_exp, p.beta]) for p in ps])
    assert np.abs(coef).max() <= 1.5 and coef.std() > 0.5
    assert ps[0].alpha_id.shape == (tiny_model.n_id,) and ps[0].alpha_id.dtype == np.float32
    assert ps[0].sh.shape == (9, 3)


@pytest.mark.parametrize("projection", ["perspective", "weak_perspective"])
def test_face_fills_the_requested_fraction(tiny_model, projection):
    # frontal, no jitter: the projected width of the mean face's region is fraction * size (perspective:
    # within the depth variation of the face, ~15%); its centre is the image centre
    size = 100
    cfg = SamplingConfig(yaw_deg=0, pitch_deg=0, roll_deg=0, jitter=0, face_fraction=(0.6, 0.6),
                         projection=projection, id_scale=0, exp_scale=0)
    frame = face_framing(tiny_model)
    p = sample_params(tiny_model, cfg, size, 0, 1, frame)
    v = tiny_model.mean_shape[tiny_model.face_region] if tiny_model.face_region is not None else tiny_model.mean_shape
    uv, d = cam.project(cam.to_camera(v, p.rotation, p.translation), p.intrinsics.astype(np.float64), projection)
    width = uv[:, 0].max() - uv[:, 0].min()
    assert abs(width / size - 0.6) < 0.1
    c_uv, _ = cam.project(cam.to_camera(frame.center[None], p.rotation, p.translation), p.intrinsics.astype(np.float64),
                          projection)
    np.testing.assert_allclose(c_uv[0], [50, 50], atol=1e-6)
    assert np.all(d > 0)


@pytest.mark.parametrize("kwargs, flag", [
    ({"lights": "laser"}, "--lights"), ({"id_scale": -1}, "--id-scale"), ({"yaw_deg": 120}, "--yaw"),
    ({"projection": "fisheye"}, "--projection"), ({"fov_deg": (50, 10)}, "--fov"),
    ({"background": "images"}, "--background-dir"), ({"occluders": 2}, "--occluders"),
    ({"truncation": 0}, "--truncation"),
])
def test_config_errors_name_the_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        SamplingConfig(**kwargs)


def test_config_roundtrips_through_dict():
    cfg = SamplingConfig(lights="point", fov_deg=(20, 30))
    again = SamplingConfig(**cfg.to_dict())
    assert again == cfg and math.isclose(again.fov_deg[0], 20)


def test_extreme_framing_keeps_the_mesh_in_front(tiny_model):
    # a face twice the image width at the widest field of view would need the camera inside the head
    cfg = SamplingConfig(face_fraction=(2.0, 2.0), fov_deg=(120, 120))
    frame = face_framing(tiny_model)
    for i in range(5):
        p = sample_params(tiny_model, cfg, 64, 0, i, frame)
        v = tiny_model.shape(p.alpha_id, p.alpha_exp)
        assert np.all(-cam.to_camera(v, p.rotation, p.translation)[:, 2] > 0)
