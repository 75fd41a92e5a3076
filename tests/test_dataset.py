"""synth.dataset: the default shard size (from N only, recorded in the manifest, kept by a rerun) and
the worker processes' threads (one BLAS, one llvmpipe)."""
import json
import os

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
    with pytest.raises(ValueError, match=r"differs in: layout_version; its shards are layout 3, this synth-cli writes "
                                         r"layout 4 \(older layouts are read, not extended\)"):
        prepare(DatasetConfig(out=str(out), n=5, size=16, workers=0), tiny_model)


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
