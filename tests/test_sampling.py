"""synth.sampling: determinism per (seed, index), prior ranges, face framing, config validation."""
import math

import numpy as np
import pytest

from synth import camera as cam
from synth import framing
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
def test_render_is_the_framing_rules_crop(tiny_model, projection):
    # with --framing-jitter 0 the rule on the sample's projected landmarks is exactly the image frame:
    # centre (size/2, size/2), side = size (up to float32 intrinsics: 1e-3 px)
    size = 100
    cfg = SamplingConfig(projection=projection, framing_jitter=0.0)
    frame = face_framing(tiny_model)
    for i in range(4):
        p = sample_params(tiny_model, cfg, size, 0, i, frame)
        v = tiny_model.shape(p.alpha_id, p.alpha_exp)[tiny_model.landmarks]
        uv, d = cam.project(cam.to_camera(v, p.rotation, p.translation), p.intrinsics.astype(np.float64), projection)
        crop = framing.crop_from_landmarks(uv)
        np.testing.assert_allclose(crop.center, [size / 2, size / 2], atol=1e-3)
        assert abs(crop.side - size) < 1e-3 and np.all(d > 0)


def test_framing_jitter_follows_the_measured_detector_spread(tiny_model):
    # the jitter is drawn from the camera stream: offsets / side and log side ratios over 200 samples
    # have the configured bias and standard deviation (sampling error of a std over 200 draws ~5 %,
    # clipping at 2.5 sigma lowers it ~4 %: 20 % tolerance)
    from synth.sampling import DETECTOR_LOG_SCALE_BIAS, DETECTOR_LOG_SCALE_STD, DETECTOR_SHIFT_STD

    size = 64
    frame = face_framing(tiny_model)
    exact, jittered = SamplingConfig(framing_jitter=0.0), SamplingConfig(framing_jitter=1.0)
    rows = []
    for i in range(200):
        a = sample_params(tiny_model, exact, size, 3, i, frame)
        b = sample_params(tiny_model, jittered, size, 3, i, frame)
        np.testing.assert_array_equal(a.translation, b.translation)  # same pose and distance
        # the same camera in both: the crop of b, seen in a's image, is where b's image frame lies in a's
        sa, sb = a.intrinsics[0, 0], b.intrinsics[0, 0]
        ca = a.intrinsics[:2, 2]
        cb = b.intrinsics[:2, 2]
        # b's frame in a's pixels: centre = ca + (size/2 - cb) * sa / sb, side = size * sa / sb
        center = ca + (size / 2 - cb) * (sa / sb)
        side = size * sa / sb
        rows.append([(center[0] - size / 2) / size, (center[1] - size / 2) / size, np.log(side / size)])
    r = np.array(rows)
    assert abs(r[:, 2].mean() - DETECTOR_LOG_SCALE_BIAS) < 0.2 * DETECTOR_LOG_SCALE_STD
    np.testing.assert_allclose(r.std(axis=0), [*DETECTOR_SHIFT_STD, DETECTOR_LOG_SCALE_STD], rtol=0.2)


def test_specular_and_occluder_priors(tiny_model):
    """Specular: strength ~ U(0, 0.5), shininess log-uniform in [4, 64], its own stream (switching it
    off keeps every other draw and the shininess); occluders in ~20 % of the samples, 80 % textured."""
    on, off = SamplingConfig(), SamplingConfig(specular=False)
    ps = [sample_params(tiny_model, on, 32, 0, i) for i in range(300)]
    strength = np.array([p.specular_strength for p in ps])
    shininess = np.array([p.shininess for p in ps])
    assert 0 <= strength.min() and strength.max() <= 0.5 and abs(strength.mean() - 0.25) < 0.03  # std/sqrt(300) = 0.008
    assert 4 <= shininess.min() and shininess.max() <= 64
    assert abs(np.log(shininess).mean() - np.log(16)) < 0.15  # log-uniform: mean log = log(sqrt(4 * 64)); std 0.8/sqrt(300)
    q = sample_params(tiny_model, off, 32, 0, 7)
    assert q.specular_strength == 0 and q.shininess == ps[7].shininess
    for f in ("alpha_id", "pose", "translation", "intrinsics", "sh", "background_color"):
        np.testing.assert_array_equal(getattr(q, f), getattr(ps[7], f))
    occluded = [p for p in ps if p.occluders]
    assert 0.14 < len(occluded) / len(ps) < 0.27  # 0.2 +- 3 sigma (0.023)
    shapes = [o for p in occluded for o in p.occluders]
    assert 0.65 < np.mean([o.texture_seed is not None for o in shapes]) < 0.95
    assert ps[0].background_kind == "photos"


@pytest.mark.parametrize("kwargs, flag", [
    ({"lights": "laser"}, "--lights"), ({"id_scale": -1}, "--id-scale"), ({"yaw_deg": 120}, "--yaw"),
    ({"projection": "fisheye"}, "--projection"), ({"distance_mm": (500, 100)}, "--distance"),
    ({"distance_mm": (0, 100)}, "--distance"), ({"framing_jitter": -1}, "--framing-jitter"),
    ({"background": "images"}, "--background-dir"), ({"occluders": 2}, "--occluders"),
    ({"truncation": 0}, "--truncation"), ({"specular_strength": (0.5, 0.1)}, "--specular-strength"),
    ({"shininess": (0.5, 10)}, "--shininess"), ({"background": "plaid"}, "--background"),
])
def test_config_errors_name_the_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        SamplingConfig(**kwargs)


def test_config_roundtrips_through_dict():
    cfg = SamplingConfig(lights="point", distance_mm=(200, 900))
    again = SamplingConfig(**cfg.to_dict())
    assert again == cfg and math.isclose(again.distance_mm[0], 200)


def test_extreme_framing_keeps_the_mesh_in_front(tiny_model):
    # a camera 10 mm from the face would be inside the head: the distance is raised to 1.1 x its radius
    cfg = SamplingConfig(distance_mm=(10.0, 10.0))
    frame = face_framing(tiny_model)
    for i in range(5):
        p = sample_params(tiny_model, cfg, 64, 0, i, frame)
        v = tiny_model.shape(p.alpha_id, p.alpha_exp)
        assert np.all(-cam.to_camera(v, p.rotation, p.translation)[:, 2] > 0)
