"""``make demo``: the whole pipeline at small scale, calling the CLIs as a user would.

Stages (each skipped when it already finished: a stamp ``DEMO/.done/<stage>`` is written after
it succeeds; an interrupted training run resumes from its last checkpoint):

1. ``photos``      the offline photos: scikit-image's ``astronaut.png`` and matplotlib's
                   ``sample_data/grace_hopper.jpg`` (both public domain) -> ``DEMO/photos/``;
2. ``render``      ``synth-cli render``: training shards (``--n-train``), validation shards (seed 1)
                   and held-out test shards (seed 2), at ``--size``, with fine detail;
3. ``coarse``      ``train-cli coarse`` briefly (``--coarse-steps``, width ``--coarse-width``, no
                   mask in the input), then ``train-cli export`` -> ``DEMO/weights/coarse.safetensors``;
4. ``fine``        ``train-cli fine`` on the offline photos + the training renders, with the coarse
                   network frozen, then ``train-cli export`` -> ``DEMO/weights/fine.safetensors``
                   (skipped with its reason when this version has no ``train-cli fine``);
5. ``reconstruct`` ``train-cli reconstruct`` on the offline photos with the demo's own weights
                   (never the shipped ones) -> ``DEMO/reconstruct/``;
6. ``evaluate``    ``train-cli evaluate`` on the held-out test renders -> ``DEMO/eval_*.json``;
7. ``report``      ``DEMO/report.json`` (commit, machine, wall time per stage, the settings, the
                   training and evaluation numbers, the reconstructions) and ``DEMO/index.html``
                   (the same, with the training curves and each photo's comparison and turntable).

Everything is written under ``DEMO`` (default ``demo/``, git-ignored); the shipped checkpoints in
``train/weights/`` are only ever read by ``reconstruct`` when no ``--coarse``/``--fine`` is given,
which this script always gives. Sized for a 2-core machine in about 30 minutes.

    python scripts/demo.py [--out demo] [--size 96] [--n-train 3000] [--coarse-steps 400] [--threads 2] ...

Sizing (dev machine, CPU time measured on a shared machine, commit in report.json): rendering at
96 px ~0.06 s of CPU per sample; a CoarseNet step (16 images, width x0.5, feedback cell 2 mm)
~2.1 s of CPU (~3 s with the full feedback mesh).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import html
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Demo:
    out: Path
    size: int
    n_train: int
    n_val: int
    n_test: int
    workers: int
    threads: int
    coarse_steps: int
    coarse_width: float
    coarse_batch: int
    coarse_feedback_cell: float
    fine_steps: int
    fine_width: float
    fine_batch: int
    seed: int

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)


def cli(name: str) -> str:
    """The console script ``name`` of this environment (next to the Python running this script)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"demo: {name} not found; run `make install` first")
    return found


def run(cmd: list[str], log: Path) -> None:
    """Run one CLI, its output appended to ``log`` (and its last lines shown if it fails)."""
    print("  $ " + " ".join([Path(cmd[0]).name, *cmd[1:]]), flush=True)
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        res = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if res.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise SystemExit("demo: command failed (exit %d): %s\n%s" % (res.returncode, " ".join(cmd), "\n".join(tail)))


class Stages:
    """Runs the stages in order, skipping finished ones; keeps their wall times in DEMO/stages.json.

    A stage's stamp holds its ``key``: it is skipped only when it finished with the same key (the
    reconstructions and evaluations made without FineNet are redone once FineNet weights exist).
    A stage returning ``NOT_DONE`` (with a note) leaves no stamp: it is tried again next time."""

    def __init__(self, demo: Demo):
        self.demo = demo
        self.done_dir = demo.path(".done")
        self.done_dir.mkdir(parents=True, exist_ok=True)
        self.times_path = demo.path("stages.json")
        self.times = json.loads(self.times_path.read_text()) if self.times_path.exists() else {}

    def __call__(self, name: str, fn, key: str = "done") -> None:
        stamp = self.done_dir / name
        if stamp.exists() and stamp.read_text() == key:
            print(f"[{name}] done earlier ({self.times.get(name, {}).get('wall_s', '?')} s): skipped", flush=True)
            return
        print(f"[{name}]", flush=True)
        t0 = time.time()
        note = fn()
        wall = round(time.time() - t0, 1)
        done = not (isinstance(note, tuple) and note[0] is NOT_DONE)
        note = note[1] if not done else note
        self.times[name] = {"wall_s": wall, "finished": datetime.datetime.now().isoformat(timespec="seconds"),
                            "key": key, "load_average": [round(x, 1) for x in os.getloadavg()],
                            **({"note": note} if note else {})}
        self.times_path.write_text(json.dumps(self.times, indent=1))
        if done:
            stamp.write_text(key)
        else:
            stamp.unlink(missing_ok=True)
        print(f"[{name}] {wall:.0f} s" + (f" ({note})" if note else ""), flush=True)


NOT_DONE = object()


# ------------------------------------------------------------------------------ stages
def stage_photos(d: Demo) -> None:
    from train.photos import write_sample_photos

    write_sample_photos(d.path("photos"), ("astronaut", "grace_hopper"))


def stage_render(d: Demo, log: Path) -> None:
    for split, n, seed in (("train", d.n_train, d.seed), ("val", d.n_val, d.seed + 1), ("test", d.n_test, d.seed + 2)):
        run([cli("synth-cli"), "render", "--out", str(d.path("shards", split)), "--n", str(n), "--size", str(d.size),
             "--workers", str(d.workers), "--seed", str(seed), "--shard-size", "500"], log)


def _train(d: Demo, log: Path, kind: str, flags: list[str]) -> Path:
    """``train-cli <kind>`` into DEMO/runs/<kind> (resumed when a checkpoint is there), then export."""
    out = d.path("runs", kind)
    last = out / "checkpoints" / "last.pt"
    resume = ["--resume"] if last.exists() else []
    if out.exists() and not resume:
        shutil.rmtree(out)  # a run that never reached a checkpoint: start again
    run([cli("train-cli"), kind, "--out", str(out), *flags, "--threads", str(d.threads), "--no-progress", *resume], log)
    weights = d.path("weights", f"{kind}.safetensors")
    weights.parent.mkdir(parents=True, exist_ok=True)
    run([cli("train-cli"), "export", str(last), str(weights)], log)
    return weights


def stage_coarse(d: Demo, log: Path) -> None:
    _train(d, log, "coarse", [
        "--data", str(d.path("shards", "train")), "--val-data", str(d.path("shards", "val")), "--size", str(d.size),
        "--steps", str(d.coarse_steps), "--batch-size", str(d.coarse_batch), "--width-mult", str(d.coarse_width),
        "--feedback-cell", str(d.coarse_feedback_cell), "--workers", "1", "--seed", str(d.seed), "--val-every", str(max(1, d.coarse_steps // 4)),
        "--val-samples", str(d.n_val), "--ckpt-every", str(max(1, d.coarse_steps // 4)), "--log-every", "10"])


def has_fine() -> bool:
    """Whether this version's train-cli has the ``fine`` command (FineNet, phase 2)."""
    res = subprocess.run([cli("train-cli"), "fine", "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return res.returncode == 0


def stage_fine(d: Demo, log: Path):
    if not has_fine():
        return NOT_DONE, "skipped: this version has no `train-cli fine` (FineNet); reconstructions are coarse only"
    _train(d, log, "fine", [
        "--photos", str(d.path("photos")), "--coarse", str(d.path("weights", "coarse.safetensors")),
        "--synthetic", str(d.path("shards", "train")), "--val-data", str(d.path("shards", "val")),
        "--size", str(d.size), "--steps", str(d.fine_steps), "--batch-size", str(d.fine_batch),
        "--width-mult", str(d.fine_width), "--workers", "1", "--seed", str(d.seed),
        "--val-every", str(max(1, d.fine_steps // 4)), "--val-samples", str(d.n_val),
        "--ckpt-every", str(max(1, d.fine_steps // 4)), "--log-every", "10",
        "--photo-cache", str(d.path("cache"))])
    return None


def fine_weights(d: Demo) -> Path | None:
    p = d.path("weights", "fine.safetensors")
    return p if p.exists() else None


def stage_reconstruct(d: Demo, log: Path) -> None:
    out = d.path("reconstruct")
    if out.exists():
        shutil.rmtree(out)  # an earlier run's files (e.g. coarse only) would stay listed
    fine = fine_weights(d)
    run([cli("train-cli"), "reconstruct", str(d.path("photos")), "--out", str(out),
         "--coarse", str(d.path("weights", "coarse.safetensors")),
         *(["--fine", str(fine)] if fine else ["--no-fine"]),
         "--threads", str(d.threads), "--cache-dir", str(d.path("cache")), "--no-progress"], log)


def stage_evaluate(d: Demo, log: Path) -> None:
    test = str(d.path("shards", "test"))
    d.path("eval_fine.json").unlink(missing_ok=True)
    run([cli("train-cli"), "evaluate", "--checkpoint", str(d.path("weights", "coarse.safetensors")), "--data", test,
         "--samples", str(d.n_test), "--device", "cpu", "--json", str(d.path("eval_coarse.json"))], log)
    fine = fine_weights(d)
    if fine:
        run([cli("train-cli"), "evaluate", "--checkpoint", str(d.path("weights", "coarse.safetensors")), "--fine", str(fine),
             "--data", test, "--samples", str(d.n_test), "--device", "cpu",
             "--json", str(d.path("eval_fine.json"))], log)


# ------------------------------------------------------------------------------ report
def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__}


def _last_row(csv_path: Path) -> dict:
    if not csv_path.exists():
        return {}
    rows = csv_path.read_text().splitlines()
    if len(rows) < 2:
        return {}
    head, last = rows[0].split(","), rows[-1].split(",")
    out = {}
    for k, v in zip(head, last):
        try:
            out[k] = round(float(v), 4)
        except ValueError:
            out[k] = v
    return out


def _metrics_table(metrics: dict) -> str:
    """A ``train-cli evaluate`` report as a table: a row per metric, a column per iteration and
    the mean-face reference (true pose); the fine stage's numbers (``"fine"``) below."""
    e = html.escape
    its = metrics.get("iterations", [])
    ref = metrics.get("baselines", {}).get("mean_face_true_pose", {})
    names = [k for k in (its[-1] if its else {}) if k != "iteration"]
    head = ("<tr><th>metric</th>" + "".join(f"<th>iteration {r['iteration']}</th>" for r in its)
            + "<th>mean face, true pose</th></tr>")

    def cell(v) -> str:
        return f"<td>{v:.4g}</td>" if isinstance(v, (int, float)) else "<td></td>"

    body = "".join(f"<tr><td>{e(n)}</td>" + "".join(cell(r.get(n)) for r in its) + cell(ref.get(n)) + "</tr>"
                   for n in names)
    fine = metrics.get("fine") or {}
    body += "".join(f"<tr><td>{e(k)}</td>{cell(v)}</tr>" for k, v in fine.items() if isinstance(v, (int, float)))
    return f"<table>{head if its else ''}{body}</table>"


def stage_report(d: Demo, stages: Stages, total_s: float) -> tuple[Path, Path]:
    from train import report

    recon = []
    for p in sorted(d.path("reconstruct").glob("*.json")):
        doc = json.loads(p.read_text())
        if doc.get("format") == report.RESULT_FORMAT:
            recon.append({"name": doc["name"], "photo": Path(doc["photo"]).name, "pose_deg": doc["params"]["pose_deg"],
                          "fine": doc["fine"], "timings_ms": doc["timings_ms"]})
    evals = {k: json.loads(d.path(f"eval_{k}.json").read_text())
             for k in ("coarse", "fine") if d.path(f"eval_{k}.json").exists()}
    doc = {
        "commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": _machine(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(d).items()},
        "stages": stages.times, "wall_s_this_invocation": round(total_s, 1),
        "wall_s_all_stages": round(sum(t.get("wall_s", 0.0) for t in stages.times.values()), 1),
        "coarse_training": {"train_last": _last_row(d.path("runs", "coarse", "train.csv")),
                            "val_last": _last_row(d.path("runs", "coarse", "val.csv"))},
        "fine_training": {"train_last": _last_row(d.path("runs", "fine", "train.csv")),
                          "val_last": _last_row(d.path("runs", "fine", "val.csv"))} if d.path("runs", "fine").exists() else None,
        "evaluation_test_renders": evals, "reconstructions": recon,
    }
    json_path = d.path("report.json")
    json_path.write_text(json.dumps(doc, indent=1))

    e = html.escape
    rows = "".join(f"<tr><td>{e(k)}</td><td>{v.get('wall_s', '?')} s</td><td>{e(v.get('note', ''))}</td></tr>"
                   for k, v in stages.times.items())
    ev = "".join(f"<h3>{e(kind)}: {d.n_test} held-out renders (test seed)</h3>{_metrics_table(m)}"
                 for kind, m in evals.items())
    curves = "".join(f'<figure><img src="runs/{k}/curves.png" alt="{k} training curves"><figcaption>{k} training'
                     f"</figcaption></figure>" for k in ("coarse", "fine") if d.path("runs", k, "curves.png").exists())
    m = doc["machine"]
    body = (f'<p class="meta">commit {e(doc["commit"][:12])}{" (dirty)" if doc["dirty"] else ""} &middot; {e(doc["date"])} '
            f'&middot; {e(str(m["cpu"]))}, {m["cpus"]} CPUs{", " + e(m["gpu"]) if m["gpu"] else ""} &middot; '
            f'all stages {doc["wall_s_all_stages"] / 60:.1f} min &middot; <a href="report.json">report.json</a> &middot; '
            f'settings: {e(", ".join(f"{k}={v}" for k, v in doc["settings"].items() if k != "out"))}</p>'
            f'<h2>Reconstructions of the offline photos</h2>'
            f'<p class="meta"><a href="reconstruct/index.html">the reconstruction folder\'s own page</a></p>'
            + report.faces_html(d.path("reconstruct"), base="reconstruct/")
            + f"<h2>Evaluation</h2>{ev or '<p>none</p>'}"
            f'<h2>Training</h2><div class="pics">{curves}</div>'
            f"<h2>Stages</h2><table>{rows}</table>")
    page = report.write_page(d.path("index.html"), "detailface demo", body)
    return json_path, page


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo", help="demo folder (default demo/)")
    ap.add_argument("--size", type=int, default=96, help="render and network size, pixels")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-val", type=int, default=128)
    ap.add_argument("--n-test", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="render worker processes")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the training/inference CLIs")
    ap.add_argument("--coarse-steps", type=int, default=400)
    ap.add_argument("--coarse-width", type=float, default=0.5)
    ap.add_argument("--coarse-batch", type=int, default=16)
    ap.add_argument("--coarse-feedback-cell", type=float, default=2.0,
                    help="feedback maps from a mesh clustered at this cell size (mm): ~1.4x faster steps here")
    ap.add_argument("--fine-steps", type=int, default=300)
    ap.add_argument("--fine-width", type=float, default=0.25)
    ap.add_argument("--fine-batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    d = Demo(out=(ROOT / a.out).resolve() if not Path(a.out).is_absolute() else Path(a.out), size=a.size,
             n_train=a.n_train, n_val=a.n_val, n_test=a.n_test, workers=a.workers, threads=a.threads,
             coarse_steps=a.coarse_steps, coarse_width=a.coarse_width, coarse_batch=a.coarse_batch,
             coarse_feedback_cell=a.coarse_feedback_cell,
             fine_steps=a.fine_steps, fine_width=a.fine_width, fine_batch=a.fine_batch, seed=a.seed)
    d.out.mkdir(parents=True, exist_ok=True)
    settings = d.path("settings.json")
    mine = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(d).items()}
    if settings.exists() and json.loads(settings.read_text()) != mine:
        raise SystemExit(f"demo: {d.out} was made with other settings ({settings}); use another --out or delete it")
    settings.write_text(json.dumps(mine, indent=1))
    log = d.path("demo.log")
    t0 = time.time()
    stages = Stages(d)
    stages("photos", lambda: stage_photos(d))
    stages("render", lambda: stage_render(d, log))
    stages("coarse", lambda: stage_coarse(d, log))
    stages("fine", lambda: stage_fine(d, log))
    with_fine = "with FineNet" if fine_weights(d) else "coarse only"
    stages("reconstruct", lambda: stage_reconstruct(d, log), key=with_fine)
    stages("evaluate", lambda: stage_evaluate(d, log), key=with_fine)
    json_path, page = stage_report(d, stages, time.time() - t0)
    total = sum(t.get("wall_s", 0.0) for t in stages.times.values())
    print(f"demo done: all stages {total / 60:.1f} min (this run {(time.time() - t0) / 60:.1f} min); log {log}")
    print(f"  report: {json_path}")
    print(f"  page:   {page}")


if __name__ == "__main__":
    main()
