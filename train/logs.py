"""The logs of a run directory: ``train.csv`` / ``val.csv`` (one row per log step / validation),
``log.jsonl`` (every row of both), their truncation when a run resumes from an earlier checkpoint,
and ``curves.png``.

The curves are drawn on a ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot, no backend
switch, nothing global.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["RunLog", "truncate_logs", "read_csv", "plot_curves"]


class RunLog:
    """Appends rows to ``OUT/train.csv`` / ``OUT/val.csv`` (header from the first row, or the
    existing file's; a row with new columns widens the file, earlier rows blank there) and to
    ``OUT/log.jsonl`` (every row, with its ``kind``), flushed per row.
    ``enabled=False`` (the ranks other than 0) writes nothing."""

    def __init__(self, out: Path, enabled: bool):
        self.out, self.enabled = out, enabled
        self._files: dict[str, Any] = {}
        self._writers: dict[str, csv.DictWriter] = {}
        self._jsonl = open(out / "log.jsonl", "a") if enabled else None

    def _row(self, table: str, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        path = self.out / f"{table}.csv"
        if table not in self._writers:
            fields = list(row)
            if path.exists() and path.stat().st_size > 0:
                with open(path) as f:
                    fields = next(csv.reader(f))
            new = not path.exists() or path.stat().st_size == 0
            self._open(table, path, fields, header=new)
        added = [k for k in row if k not in self._writers[table].fieldnames]
        if added:  # e.g. a run resumed by a version that logs more metrics: widen the file, old rows blank there
            self._files[table].close()
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            fields = list(self._writers[table].fieldnames) + added
            tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
                w.writeheader()
                w.writerows(rows)
            os.replace(tmp, path)
            self._open(table, path, fields, header=False)
        self._writers[table].writerow(row)
        self._files[table].flush()
        self._jsonl.write(json.dumps({"kind": table, **row}) + "\n")
        self._jsonl.flush()

    def _open(self, table: str, path: Path, fields: list[str], header: bool) -> None:
        self._files[table] = open(path, "a", newline="")
        self._writers[table] = csv.DictWriter(self._files[table], fieldnames=fields, lineterminator="\n")
        if header:
            self._writers[table].writeheader()

    def train_row(self, row: dict[str, Any]) -> None:
        self._row("train", row)

    def val_row(self, row: dict[str, Any]) -> None:
        self._row("val", row)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        if self._jsonl is not None:
            self._jsonl.close()


def truncate_logs(out: Path, step: int) -> None:
    """Drop log rows after ``step`` (written by a run that died after its last checkpoint), and a
    last line that a kill cut short (no newline). Each file is replaced atomically, so a kill
    during the truncation leaves either the old or the new file."""
    def complete_lines(path: Path) -> list[str]:
        lines = path.read_text().split("\n")
        return [ln for ln in lines[:-1] if ln.strip()]  # lines[-1]: "" or a line cut short

    def replace(path: Path, lines: list[str]) -> None:
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(ln + "\n" for ln in lines))
        os.replace(tmp, path)

    for name in ("train.csv", "val.csv"):
        path = out / name
        if not path.exists():
            continue
        lines = complete_lines(path)
        if not lines:  # empty, or a header cut short: the next row writes a new header
            replace(path, [])
            continue
        width = len(next(csv.reader([lines[0]])))
        keep = [lines[0]] + [ln for ln, row in zip(lines[1:], csv.reader(lines[1:]))
                             if len(row) == width and int(float(row[0])) <= step]
        replace(path, keep)
    path = out / "log.jsonl"
    if path.exists():
        replace(path, [ln for ln in complete_lines(path) if json.loads(ln).get("step", 0) <= step])


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Columns of a log CSV as float arrays (empty dict when the file is missing)."""
    if not Path(path).exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows]) for k in rows[0]}


def plot_curves(out: str | os.PathLike, metrics: Sequence[str] | None = None) -> Path:
    """``OUT/curves.png``: training loss (log scale) and the validation metrics per iteration.

    ``metrics``: the metric names to plot (columns ``<name>/it<k>`` of ``val.csv``, or ``<name>``
    itself for a metric without iterations); None = every ``/it`` name in the file (reference
    estimates excluded). A reference column ``mean_face_true_pose/<name>``, when there is one, is
    drawn dashed beside them. Drawn on a ``matplotlib.figure.Figure`` with the Agg canvas, so the
    process's pyplot state and matplotlib backend are left alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out)
    tr, va = read_csv(out / "train.csv"), read_csv(out / "val.csv")
    if metrics is None:
        metrics = sorted({k.split("/it")[0] for k in va if "/it" in k and not k.startswith("mean_face")})
    fig = Figure(figsize=(5 * (1 + len(metrics)), 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 1 + len(metrics), squeeze=False)[0]
    ax = axes[0]
    if tr:
        ax.plot(tr["step"], tr["loss"], label="total")
        for k in tr:
            if k.startswith("loss_") and not k.startswith("loss_it"):
                ax.plot(tr["step"], tr[k], label=k[5:], alpha=0.6)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel("step")
    ax.set_title("training loss")
    for ax, m in zip(axes[1:], metrics):
        cols = sorted((k for k in va if k.startswith(m + "/it")), key=lambda k: int(k.rsplit("it", 1)[1]))
        for k in cols:
            ax.plot(va["step"], va[k], marker="o", label=k.split("/")[1])
        ref = f"mean_face_true_pose/{m}"
        if ref in va:
            ax.plot(va["step"], va[ref], "k--", label="mean face, true pose")
        if not cols and m in va:  # a metric without iterations (the fine stage's)
            ax.plot(va["step"], va[m], marker="o")
        ax.set_title(f"val {m}")
        ax.set_xlabel("step")
        if cols:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=80)
    return path
