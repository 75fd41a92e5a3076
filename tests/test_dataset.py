"""synth.dataset: the default shard size (from N only, recorded in the manifest, kept by a rerun) and
the worker processes' threads (one BLAS, one llvmpipe)."""
import json
import os

import numpy as np
import pytest

from synth.dataset import (SHARD_SIZE_RULE, DatasetConfig, _Workers, default_shard_size, prepare, render_dataset)
from synth.shards import ShardReader, list_shards


def test_default_shard_size_golden_values():
    # min(1000, max(32, 16 ceil(N / 1024))): >= 13 shards from N = 400 on, 43..64 from 2048 to 64000
    expected = {1: 32, 400: 32, 1000: 32, 1025: 32, 2048: 32, 2049: 48, 4000: 64, 20000: 320, 64000: 1000,
                100000: 1000, 10**6: 1000}
    assert {n: default_shard_size(n) for n in expected} == expected
    assert DatasetConfig(out="o", n=400).n_shards == 13 and DatasetConfig(out="o", n=4000).n_shards == 63


def test_default_shard_size_in_the_manifest_and_kept_by_a_rerun(tiny_model, tmp_path):
    out = tmp_path / "a"
    plan = prepare(DatasetConfig(out=str(out), n=70, size=16, workers=0), tiny_model)
    assert plan.config.shard_size == 32 and plan.todo == [0, 1, 2] and not plan.damaged
    assert plan.manifest["shard_size"] == 32 and plan.manifest["shard_size_rule"] == f"from N: {SHARD_SIZE_RULE}"

    # a dataset started with --shard-size 2: a rerun without the flag resumes it with shards of 2
    out = tmp_path / "b"
    render_dataset(DatasetConfig(out=str(out), n=5, size=16, shard_size=2, workers=0, shard_range=(0, 1)),
                   model=tiny_model)
    assert json.loads((out / "dataset.json").read_text())["shard_size_rule"] == "--shard-size"
    summary = render_dataset(DatasetConfig(out=str(out), n=5, size=16, workers=0), model=tiny_model)
    assert (summary.shards_skipped, summary.shards_rendered) == (1, 2)
    sizes = []
    for p in list_shards(out):
        with ShardReader(p) as r:
            sizes.append(len(r))
    assert sizes == [2, 2, 1]
    with pytest.raises(ValueError, match="differs in: shard_size"):
        prepare(DatasetConfig(out=str(out), n=5, size=16, shard_size=3, workers=0), tiny_model)
    # a dataset whose manifest predates detail bank 2 is not resumed with bank 2 (mixed folds)
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["detail_bank_version"] == 2
    with ShardReader(list_shards(out)[0]) as r:
        assert r.detail_bank_version == 2
    del manifest["detail_bank_version"]
    (out / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="detail_bank_version; it was rendered with detail bank 1, this synth-cli "
                                         "writes bank 2"):
        prepare(DatasetConfig(out=str(out), n=5, size=16, workers=0), tiny_model)
    # nor one of shard layout 3 (its shards stay readable)
    manifest.update(detail_bank_version=2, layout_version=3)
    (out / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"differs in: layout_version; its shards are layout 3 \(image lossless\), "
                                         r"this job writes layout 6 \(image lossless\); a dataset is written in one "
                                         r"layout and image codec \(older layouts are read, not extended\)"):
        prepare(DatasetConfig(out=str(out), n=5, size=16, workers=0), tiny_model)


def test_a_dataset_resumed_on_another_cpu_keeps_its_model_identity(tiny_model, tiny_model_elsewhere, tmp_path):
    """A render resumed where the same model builds with round-off differences (another CPU: another
    exact fingerprint, same sketch) continues the dataset under the fingerprint it started with;
    its shards read and verify as one dataset. A model that is not the same is refused."""
    from synth.verify import verify_dir

    out = tmp_path / "a"
    render_dataset(DatasetConfig(out=str(out), n=5, size=16, shard_size=2, workers=0, shard_range=(0, 1)),
                   model=tiny_model)
    summary = render_dataset(DatasetConfig(out=str(out), n=5, size=16, workers=0), model=tiny_model_elsewhere)
    assert (summary.shards_skipped, summary.shards_rendered) == (1, 2)
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["model_fingerprint"] == tiny_model.fingerprint and manifest["model_sketch"] == tiny_model.sketch
    for p in list_shards(out):
        with ShardReader(p, model=tiny_model_elsewhere) as r:
            assert r.attrs["model_fingerprint"] == tiny_model.fingerprint and r.read(0)["depth"].shape == (16, 16)
    reports, problems = verify_dir(out, maps=True, model=tiny_model_elsewhere)
    assert not problems and len(reports) == 3 and all(r.ok for r in reports), (problems, reports)
    other = tiny_model.replace(id_basis=tiny_model.id_basis[:, ::-1].copy(), id_std=tiny_model.id_std[::-1].copy())
    with pytest.raises(ValueError, match="differs in: model_fingerprint"):
        prepare(DatasetConfig(out=str(out), n=5, size=16, workers=0), other)


def test_jpeg_images_write_layout_7_resume_and_refuse_another_codec(tiny_model, tmp_path):
    """--image-codec jpeg: layout-7 shards, the quality in the manifest and the shards, a rerun skips
    the finished shards (their quick check knows layout 7), another codec or quality is refused, and
    every key but the image reads as the lossless job's, bit for bit."""
    jpeg, lossless = tmp_path / "jpeg", tmp_path / "lossless"
    render_dataset(DatasetConfig(out=str(jpeg), n=5, size=24, shard_size=2, workers=0, image_codec="jpeg",
                                 jpeg_quality=90, shard_range=(0, 1)), model=tiny_model)
    manifest = json.loads((jpeg / "dataset.json").read_text())
    assert (manifest["layout_version"], manifest["image_codec"], manifest["image_quality"]) == (7, "jpeg", 90)
    summary = render_dataset(DatasetConfig(out=str(jpeg), n=5, size=24, workers=0, image_codec="jpeg",
                                           jpeg_quality=90), model=tiny_model)
    assert (summary.shards_skipped, summary.shards_rendered) == (1, 2)
    with pytest.raises(ValueError, match=r"differs in: image_quality; its shards are layout 7 \(image JPEG quality "
                                         r"90\), this job writes layout 7 \(image JPEG quality 80\)"):
        prepare(DatasetConfig(out=str(jpeg), n=5, size=24, workers=0, image_codec="jpeg", jpeg_quality=80), tiny_model)
    with pytest.raises(ValueError, match=r"differs in: layout_version, image_quality; its shards are layout 7 "
                                         r"\(image JPEG quality 90\), this job writes layout 6 \(image lossless\)"):
        prepare(DatasetConfig(out=str(jpeg), n=5, size=24, workers=0), tiny_model)
    # a finished layout-7 shard whose byte ranges are broken is found by the rerun's quick check and rendered again
    import h5py

    with h5py.File(jpeg / "shard-00001.h5", "r+") as f:
        del f["image_span"]
        f.create_dataset("image_span", data=np.zeros((2, 3), np.int64))
    summary = render_dataset(DatasetConfig(out=str(jpeg), n=5, size=24, workers=0, image_codec="jpeg",
                                           jpeg_quality=90), model=tiny_model)
    assert (summary.shards_skipped, summary.shards_rendered) == (2, 1)
    # synth-cli verify compares each shard's image quality with the manifest's
    from synth.verify import verify_dir

    with h5py.File(jpeg / "shard-00002.h5", "r+") as f:
        f.attrs["image_quality"] = 80
    reports, _ = verify_dir(jpeg)
    assert [r.problems for r in reports if not r.ok] == [["attribute image_quality=80, dataset manifest says 90"]]
    with h5py.File(jpeg / "shard-00002.h5", "r+") as f:
        f.attrs["image_quality"] = 90
    # the training loader reads layout 7 (in a DataLoader worker too: the readers reopen after pickling)
    import torch

    from train.data import ShardDataset

    data = ShardDataset(jpeg)
    with ShardReader(list_shards(jpeg)[2]) as r:
        want = torch.from_numpy(r.read(0, keys=("image",))["image"]).permute(2, 0, 1)
    batches = list(torch.utils.data.DataLoader(data, batch_size=5, num_workers=1))
    assert torch.equal(data[4]["image"], want) and torch.equal(batches[0]["image"][4], want)
    for bad, match in (({"image_codec": "png"}, "--image-codec must be one of lossless, jpeg"),
                       ({"image_codec": "jpeg", "jpeg_quality": 0},
                        r"--jpeg-quality must be an integer in \[1, 100\]")):
        with pytest.raises(ValueError, match=match):
            DatasetConfig(out=str(tmp_path / "x"), n=5, **bad)
    render_dataset(DatasetConfig(out=str(lossless), n=5, size=24, shard_size=2, workers=0), model=tiny_model)
    errors = []
    for a, b in zip(list_shards(jpeg), list_shards(lossless)):
        with ShardReader(a, model=tiny_model) as ra, ShardReader(b, model=tiny_model) as rb:
            assert (ra.layout, ra.attrs["image_quality"], ra.attrs["image_codec"], rb.layout) == (7, 90, "jpeg", 6)
            for i in range(len(ra)):
                da, db = ra.read(i), rb.read(i)
                assert da.keys() == db.keys()
                for key in da:
                    if key != "image":
                        np.testing.assert_array_equal(da[key], db[key], err_msg=key)
                errors.append(da["image"].astype(np.float64) - db["image"])
    rmse = float(np.sqrt(np.mean(np.square(errors))))
    # lossy, within a few levels and without a colour shift (measured: RMSE 5.1 at 24 px, where every
    # pixel is detail; 2.0 at 128 px and quality 95, docs/shards.md)
    assert 0 < rmse < 8.0 and abs(float(np.mean(errors))) < 1.0


@pytest.mark.parametrize("platform, llvmpipe", [("osmesa", 1), ("cpu", 0)])
def test_workers_run_one_blas_and_one_llvmpipe_thread(tiny_model, tmp_path, platform, llvmpipe):
    """A spawned worker, its renderer warmed up, has one BLAS thread and (OSMesa) one llvmpipe thread
    (this machine's default would be one per core) or (the compiled CPU rasterizer) no OpenGL at
    all, and the parent's environment is left as it was."""
    before = dict(os.environ)
    plan = prepare(DatasetConfig(out=str(tmp_path / "w"), n=4, size=16, workers=2, platform=platform), tiny_model)
    workers = _Workers(plan.config, tiny_model, 1)
    try:
        workers.begin(plan.config, plan.manifest, [])  # no shard to take: it reports its threads and exits
        msg = workers.results.get(timeout=120)
    finally:
        workers.stop()
    assert msg == ("exit", {"blas": 1, "llvmpipe": llvmpipe})
    assert dict(os.environ) == before


def test_a_worker_error_stops_the_run_with_its_message(tiny_model, ellipsoid_model, tmp_path):
    """A spawned worker that fails (here: it loads another model than the run's) stops the run with
    its error, raised in the calling process; no temporary file is left behind."""
    from morphable_model import save_bfm2017
    from synth.dataset import _render

    other = tmp_path / "other.h5"
    save_bfm2017(ellipsoid_model, other)
    out = tmp_path / "w"
    plan = prepare(DatasetConfig(out=str(out), n=64, size=16, shard_size=2, workers=2), tiny_model)
    out.mkdir()
    workers = _Workers(plan.config, str(other), 1)

    def progress(n):  # the calling process waits until the worker has failed and exited, so its error
        workers.procs[0].join(timeout=300)  # is there before every shard could be done without it

    try:
        with pytest.raises(ValueError, match="changed while rendering"):
            _render(plan.config, tiny_model, plan.manifest, plan.todo, workers, progress, {})
    finally:
        workers.stop()
    assert not list(out.glob(".tmp-*"))
