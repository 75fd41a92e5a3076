"""ShardDataset over shards rendered by synth: decoding, resizing with exact intrinsics, crop
jitter geometry, determinism, error messages naming the file, samplers and rank splits."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from synth import camera
from train.data import (
    Augment,
    ShardDataset,
    ShardError,
    StepBatchSampler,
    image_to_float,
    make_train_loader,
    rank_indices,
)

NATIVE = 64


@pytest.fixture(scope="module")
def shards(tiny_shards):
    """36 samples at 64 px in 3 shards of 12, rendered by synth (shared with tests/test_coarse_net.py:
    read-only; tests that modify shards copy the directory first)."""
    return tiny_shards(n=36, size=NATIVE, seed=3)


def _landmark_error(model, s) -> float:
    """Max pixel distance between the sample's landmarks and its GT mesh projected with its intrinsics."""
    verts = torch.tensor(model.shape(s["alpha_id"].numpy(), s["alpha_exp"].numpy()))[None]
    cam = camera.to_camera(verts, camera.rotation_matrix(s["pose"][None]), s["translation"][None])
    uv, _ = camera.project(cam[:, torch.tensor(model.landmarks)], s["intrinsics"][None])
    return float((uv[0] - s["landmarks"]).norm(dim=-1).max())


def test_dataset_native_size(shards, tiny_model):
    ds = ShardDataset(shards, fingerprint=tiny_model.fingerprint)
    assert len(ds) == 36 and ds.size == NATIVE and ds.projection == "perspective"
    s = ds[13]
    assert s["image"].shape == (3, NATIVE, NATIVE) and s["image"].dtype == torch.uint8
    assert s["mask"].shape == (NATIVE, NATIVE) and s["mask"].dtype == torch.bool
    assert s["color"].tolist() == [1.0] * 5  # no augmentation: identity colour transform
    assert s["alpha_id"].shape == (tiny_model.n_id,) and s["sh"].shape == (9, 3)
    assert int(s["index"]) == 13  # global index across shards
    raw = ds.read_raw(13)
    np.testing.assert_array_equal(s["image"].permute(1, 2, 0).numpy(), raw["image"])
    np.testing.assert_array_equal(s["mask"].numpy(), raw["mask"])
    assert _landmark_error(tiny_model, s) < 0.5


def test_resize_scales_intrinsics_and_landmarks_exactly(shards, tiny_model):
    ds = ShardDataset(shards, fingerprint=tiny_model.fingerprint, size=40)
    s = ds[5]
    assert s["image"].shape == (3, 40, 40) and s["mask"].shape == (40, 40)
    assert _landmark_error(tiny_model, s) < 0.5 * 40 / NATIVE + 1e-3  # the same geometry at 40 px
    native = ShardDataset(shards, fingerprint=tiny_model.fingerprint)[5]
    np.testing.assert_allclose(s["intrinsics"][:2].numpy(), native["intrinsics"][:2].numpy() * 40 / NATIVE, rtol=1e-6)
    frac = s["mask"].float().mean().item()
    assert frac == pytest.approx(native["mask"].float().mean().item(), abs=0.03)  # same face coverage


def test_crop_jitter_moves_principal_point_with_the_image(shards, tiny_model):
    plain = ShardDataset(shards, fingerprint=tiny_model.fingerprint)
    jit = ShardDataset(shards, fingerprint=tiny_model.fingerprint, augment=Augment(color_jitter=0.0, crop_jitter=0.1, photo=None), seed=1)
    a, b = plain[7], jit[(7, 0)]
    dx = int(round(float(b["intrinsics"][0, 2] - a["intrinsics"][0, 2])))
    dy = int(round(float(b["intrinsics"][1, 2] - a["intrinsics"][1, 2])))
    assert (dx, dy) != (0, 0) and abs(dx) <= 6 and abs(dy) <= 6
    shifted = torch.roll(a["image"], shifts=(dy, dx), dims=(1, 2))
    inner = (slice(None), slice(6, -6), slice(6, -6))  # away from the zero-filled border
    torch.testing.assert_close(b["image"][inner], shifted[inner])
    assert _landmark_error(tiny_model, b) < 0.5  # landmarks and intrinsics moved together


def test_augmentation_is_a_function_of_seed_epoch_index(shards, tiny_model):
    ds = ShardDataset(shards, fingerprint=tiny_model.fingerprint, augment=Augment(0.2, 0.05, photo=None), seed=3)
    for key in ("image", "color", "intrinsics"):
        torch.testing.assert_close(ds[(4, 1)][key], ds[(4, 1)][key], rtol=0, atol=0)
        assert not torch.equal(ds[(4, 1)][key], ds[(4, 2)][key])
    plain = ShardDataset(shards, fingerprint=tiny_model.fingerprint)[4]
    torch.testing.assert_close(ds[4]["image"], plain["image"])  # plain indices are never augmented
    torch.testing.assert_close(ds[4]["color"], plain["color"])


def test_photo_degradations_in_the_loader(shards, tiny_model):
    """Photo augmentation: a pure function of (seed, epoch, index), applied to the image only, on
    top of the shift/colour draws (its own stream), never on plain indices; off = identity."""
    import dataclasses

    from train.augment import PhotoAugment
    from train.config import CoarseConfig

    photo = dataclasses.replace(PhotoAugment.from_config(CoarseConfig(data="d", out="o")), p=1.0)
    base = ShardDataset(shards, fingerprint=tiny_model.fingerprint, augment=Augment(0.2, 0.05, photo=None), seed=3)
    ds = ShardDataset(shards, fingerprint=tiny_model.fingerprint, augment=Augment(0.2, 0.05, photo=photo), seed=3)
    a, b = ds[(4, 1)], ds[(4, 1)]
    torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)
    assert not torch.equal(a["image"], ds[(4, 2)]["image"]) and not torch.equal(a["image"], ds[(5, 1)]["image"])
    plain = base[(4, 1)]
    assert not torch.equal(a["image"], plain["image"])  # degraded ...
    for key in ("color", "intrinsics", "landmarks", "mask"):  # ... and nothing else changed
        torch.testing.assert_close(a[key], plain[key], rtol=0, atol=0)
    want = photo(plain["image"].permute(1, 2, 0).numpy(), np.random.default_rng([3, 13, 1, 4]))
    np.testing.assert_array_equal(a["image"].permute(1, 2, 0).numpy(), want)  # the documented stream
    torch.testing.assert_close(ds[4]["image"], base[4]["image"], rtol=0, atol=0)  # plain index: never
    off = ShardDataset(shards, fingerprint=tiny_model.fingerprint,
                       augment=Augment(0.2, 0.05, photo=dataclasses.replace(photo, p=0.0)), seed=3)
    torch.testing.assert_close(off[(4, 1)]["image"], plain["image"], rtol=0, atol=0)


def test_image_to_float_applies_the_colour_jitter():
    rng = np.random.default_rng(0)
    img = torch.tensor(rng.integers(0, 256, (2, 3, 5, 4)), dtype=torch.uint8)
    torch.testing.assert_close(image_to_float(img), img.float() / 255)
    color = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0], [1.1, 0.9, 1.0, 0.8, 1.05]])
    out = image_to_float(img, color)
    torch.testing.assert_close(out[0], img[0].float() / 255)
    x = img[1].double() / 255  # the formula by hand, one image
    gain = torch.tensor([1.1, 0.9, 1.0], dtype=torch.float64)[:, None, None]
    want = (((x * gain - x.mean()) * 0.8 + x.mean()) * 1.05).clamp(0, 1)
    torch.testing.assert_close(out[1].double(), want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"color must be \(2, 5\)"):
        image_to_float(img, color[:1])


def test_fingerprint_mismatch_names_the_file(shards):
    with pytest.raises(ShardError, match=r"shard .*shard-00000\.h5 was made with morphable model"):
        ShardDataset(shards, fingerprint="0" * 64)


def test_shards_of_the_same_model_built_on_another_cpu_are_read(shards, tiny_model, tiny_model_elsewhere):
    """Shards record the model's sketch beside its fingerprint: the same model rebuilt with
    round-off differences (another CPU) reads them, their maps included; a fingerprint string
    still needs the exact one."""
    from synth.shards import ShardReader

    ds = ShardDataset(shards, fingerprint=tiny_model_elsewhere, size=32)
    assert ds.attrs[0]["model_sketch"] == tiny_model.sketch
    with ShardReader(ds.paths[0], model=tiny_model_elsewhere) as r:
        assert r.read(0)["normals"].shape[-1] == 3
    with pytest.raises(ShardError, match="was made with morphable model"):
        ShardDataset(shards, fingerprint=tiny_model_elsewhere.fingerprint)


def test_corrupt_shard_names_the_file(shards, tiny_model, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    data = (bad / "shard-00001.h5").read_bytes()
    (bad / "shard-00001.h5").write_bytes(data[: len(data) // 3])  # truncated copy
    with pytest.raises(ShardError, match=r"shard-00001\.h5"):
        ShardDataset(bad, fingerprint=tiny_model.fingerprint)


def test_corrupt_sample_names_file_and_sample(shards, tiny_model, tmp_path):
    import h5py

    bad = tmp_path / "bad_sample"
    shutil.copytree(shards, bad)
    with h5py.File(bad / "shard-00002.h5", "r+") as f:
        del f["pose"]  # structurally valid file, a sample key missing
    ds = ShardDataset(bad, fingerprint=tiny_model.fingerprint)
    ds[0]
    with pytest.raises(ShardError, match=r"shard-00002\.h5: sample 1 cannot be read: .*lacks the datasets \['pose'\]"):
        ds[25]
    with pytest.raises(ShardError, match=r"shard-00002\.h5: sample 1 cannot be read: .*lacks the datasets \['pose'\]"):
        ds.__getitems__([0, 25, 26])  # a batch: the error still names the sample


def test_samples_match_the_full_shard_decoding(shards, tiny_model):
    """The keyed read (only the datasets CoarseNet needs) gives exactly what converting the full
    decoding of ShardReader.read gives, augmented or not."""
    from synth.shards import ShardReader

    ds = ShardDataset(shards, fingerprint=tiny_model.fingerprint, size=40, augment=Augment(0.1, 0.05, photo=None))
    for item in (0, 17, (30, 2)):
        i, epoch = item if isinstance(item, tuple) else (item, None)
        k, j = ds.locate(i)
        with ShardReader(ds.paths[k]) as r:
            full = r.read(j)
        rng = None if epoch is None else np.random.default_rng([ds.seed, 12, epoch, i])
        want, got = ds.convert(full, rng), ds[item]
        assert want.keys() == got.keys()
        for key in got:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)


def test_batched_items_equal_single_items(shards, tiny_model):
    """DataLoader asks for a batch through __getitems__ (samples of one shard read together): the
    same tensors as ds[x] one by one, in the batch's order, across shards, augmented or not."""
    ds = ShardDataset(shards, fingerprint=tiny_model.fingerprint, size=40, augment=Augment(0.1, 0.05, photo=None))
    items = [(30, 2), (1, 0), (13, 1), (1, 0), (35, 3), (12, 1)]
    for batch in (items, [i for i, _ in items]):
        got = ds.__getitems__(batch)
        for x, g in zip(batch, got):
            want = ds[x]
            assert want.keys() == g.keys()
            for key in g:
                torch.testing.assert_close(g[key], want[key], rtol=0, atol=0)
    loaded = next(iter(make_train_loader(ds, np.arange(36), 6, seed=0, total_steps=1, workers=0)))
    batch = StepBatchSampler(np.arange(36), 6, seed=0, total_steps=1).batch(0)
    torch.testing.assert_close(loaded["image"], torch.stack([ds[x]["image"] for x in batch]), rtol=0, atol=0)


def test_missing_or_empty_directory(tmp_path):
    with pytest.raises(ShardError, match="does not exist"):
        ShardDataset(tmp_path / "nope")
    with pytest.raises(ShardError, match="holds no shard"):
        ShardDataset(tmp_path)


def test_step_batch_sampler_epochs_and_resume():
    idx = np.arange(10, 20)
    full = list(StepBatchSampler(idx, 4, seed=7, total_steps=10))
    assert len(full) == 10 and all(len(b) == 4 for b in full)
    stream = [i for b in full for i, _ in b]
    assert sorted(stream[:10]) == list(range(10, 20))  # epoch 0 covers every sample once
    assert sorted(stream[10:20]) == list(range(10, 20))
    assert stream[:10] != stream[10:20]  # reshuffled each epoch
    assert [e for _, e in full[2]] == [0, 0, 1, 1]  # positions 8..11 straddle the epoch boundary
    resumed = list(StepBatchSampler(idx, 4, seed=7, total_steps=10, start_step=6))
    assert resumed == full[6:]


def test_rank_indices_split_shards_or_samples(shards, tiny_model):
    ds = ShardDataset(shards, fingerprint=tiny_model.fingerprint)
    parts = [rank_indices(ds, r, 2) for r in range(2)]
    assert set(parts[0]).isdisjoint(parts[1]) and len(parts[0]) + len(parts[1]) == 36
    assert set(parts[1]) == set(range(12, 24))  # shard 1 goes to rank 1 (round-robin of whole shards)
    parts4 = [rank_indices(ds, r, 4) for r in range(4)]  # fewer shards than ranks: sample slices
    assert sorted(np.concatenate(parts4).tolist()) == list(range(36))
    with pytest.raises(ValueError, match="rank must be in"):
        rank_indices(ds, 2, 2)


def test_loader_workers_match_in_process(shards, tiny_model):
    """Per-worker lazy h5 handles: 2 workers return exactly what the main process reads."""
    ds = ShardDataset(shards, fingerprint=tiny_model.fingerprint, size=32, augment=Augment(0.1, 0.05, photo=None))
    ds[0]  # opens a handle in the parent: workers must not reuse it
    idx = np.arange(36)
    a = list(make_train_loader(ds, idx, 6, seed=0, total_steps=4, workers=0))
    b = list(make_train_loader(ds, idx, 6, seed=0, total_steps=4, workers=2))
    for x, y in zip(a, b):
        torch.testing.assert_close(x["image"], y["image"], rtol=0, atol=0)
        torch.testing.assert_close(x["intrinsics"], y["intrinsics"], rtol=0, atol=0)


def test_augment_validation_names_flag():
    with pytest.raises(ValueError, match="--crop-jitter must be in"):
        Augment(color_jitter=0.0, crop_jitter=0.5, photo=None)


def test_augment_takes_the_job_config_values():
    import dataclasses

    from train.config import CoarseConfig

    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(Augment))  # no second defaults
    cfg = CoarseConfig(data="d", out="o")
    from train.augment import PhotoAugment

    assert Augment.from_config(cfg) == Augment(cfg.color_jitter, cfg.crop_jitter, PhotoAugment.from_config(cfg))
    assert Augment.from_config(cfg).photo is not None  # photo degradations on by default
    assert Augment.from_config(CoarseConfig(data="d", out="o", photo_aug=False)).photo is None
