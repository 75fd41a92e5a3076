"""Run-directory logs: CSV + JSON-lines rows, the header kept on append, truncation after a
checkpoint step, reading columns back, and curves drawn without pyplot."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from train.logs import RunLog, plot_curves, read_csv, truncate_logs


def _write(out, steps, start_val=0):
    log = RunLog(out, enabled=True)
    for s in steps:
        log.train_row({"step": s, "loss": 10.0 / s, "loss_geo": 5.0 / s})
        if s % 2 == 0:
            log.val_row({"step": s, "rmse/it1": 3.0 / s, "rmse/it2": 2.0 / s, "n": 4.0})
    log.close()


def test_rows_round_trip_and_append_keeps_the_header(tmp_path):
    _write(tmp_path, [1, 2])
    _write(tmp_path, [3, 4])  # a resumed run appends under the existing header
    tr = read_csv(tmp_path / "train.csv")
    np.testing.assert_array_equal(tr["step"], [1, 2, 3, 4])
    np.testing.assert_allclose(tr["loss"], [10.0, 5.0, 10 / 3, 2.5])
    assert (tmp_path / "train.csv").read_text().count("step,") == 1
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in rows] == [("train", 1), ("train", 2), ("val", 2), ("train", 3),
                                                     ("train", 4), ("val", 4)]
    assert read_csv(tmp_path / "missing.csv") == {}
    silent = RunLog(tmp_path / "nowhere", enabled=False)  # another rank: writes nothing
    silent.train_row({"step": 1})
    silent.close()
    assert not (tmp_path / "nowhere").exists()


def test_rows_with_new_columns_widen_the_file(tmp_path):
    """A run resumed by a version that logs more metrics keeps them: the header gains the new
    columns, the earlier rows read back blank (NaN) there, and the file still truncates."""
    _write(tmp_path, [1, 2])
    log = RunLog(tmp_path, enabled=True)
    log.val_row({"step": 4, "rmse/it1": 0.75, "rmse/it2": 0.5, "n": 4.0, "detail_pooled": 0.6})
    log.val_row({"step": 6, "rmse/it1": 0.5, "rmse/it2": 0.25, "n": 4.0, "detail_pooled": 0.7, "extra": 1.0})
    log.close()
    text = (tmp_path / "val.csv").read_text()
    assert text.count("step,") == 1 and text.splitlines()[0] == "step,rmse/it1,rmse/it2,n,detail_pooled,extra"
    va = read_csv(tmp_path / "val.csv")
    np.testing.assert_array_equal(va["step"], [2, 4, 6])
    np.testing.assert_array_equal(va["rmse/it1"], [1.5, 0.75, 0.5])
    np.testing.assert_array_equal(va["detail_pooled"], [np.nan, 0.6, 0.7])
    np.testing.assert_array_equal(va["extra"], [np.nan, np.nan, 1.0])
    truncate_logs(tmp_path, 4)
    np.testing.assert_array_equal(read_csv(tmp_path / "val.csv")["detail_pooled"], [np.nan, 0.6])


def test_truncate_drops_rows_after_the_checkpoint(tmp_path):
    _write(tmp_path, [1, 2, 3, 4])
    truncate_logs(tmp_path, 2)
    np.testing.assert_array_equal(read_csv(tmp_path / "train.csv")["step"], [1, 2])
    np.testing.assert_array_equal(read_csv(tmp_path / "val.csv")["step"], [2])
    assert [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()] == [1, 2, 2]


def test_plot_curves_leaves_pyplot_alone(tmp_path):
    """Curves are drawn without pyplot (no backend switch, no global figure state): checked in a
    fresh interpreter, where nothing else could have imported pyplot."""
    _write(tmp_path, [1, 2, 3, 4])
    code = ("import sys; from train.logs import plot_curves; p = plot_curves(sys.argv[1]); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; print(p)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "curves.png").stat().st_size > 0
    (tmp_path / "curves.png").unlink()
    assert plot_curves(tmp_path, metrics=["rmse"]).stat().st_size > 0  # one metric panel, its two iterations
    assert plot_curves(tmp_path, metrics=[]).exists()  # the loss panel alone
