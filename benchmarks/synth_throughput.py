"""Synthetic-data throughput: samples/s for 1 and 2 workers at 128 and 224 px, with and without detail,
the time split (sampling, geometry, render, post, write), bytes per sample, and the pure-render ceiling
(the GLSL gl_PrimitiveID triangle-id pass alone) next to the full render, measured side by side on the
same model.

    python benchmarks/synth_throughput.py [--n 48] [--model PATH] [--sizes 128,224] [--workers 1,2]
    # an older synth side by side (same script, same machine, one after the other):
    PYTHONPATH=/path/to/old/checkout python benchmarks/synth_throughput.py --skip-ceiling

"cpu ms" is the CPU time per sample of the rendering processes (robust when other jobs share the
machine: 2 workers scale as 2 x cpu(1 worker) / cpu(2 workers) when both have a free core).

Targets (issue): >= 80 samples/s per core at 224 with all outputs, >= 1.8x from 1 to 2 workers,
<= 60 kB/sample. Rates are "steady": measured from the first finished quarter of the samples to the
last, so process start-up and model loading are reported separately. Every process (the in-process
1-worker run included) uses one BLAS and one llvmpipe thread, so "1 worker" is one core.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "LP_NUM_THREADS"):  # one core per worker
    os.environ.setdefault(_var, "1")


def run_job(model, model_path, out: Path, n: int, size: int, detail: bool, workers: int, sampling=None) -> dict:
    from synth.dataset import DatasetConfig, render_dataset
    from synth.sampling import SamplingConfig

    shard = max(n // 8, 1)
    cfg = DatasetConfig(out=str(out), n=n, size=size, shard_size=shard, workers=workers, model=model_path,
                        sampling=SamplingConfig(detail=detail, **(sampling or {})))
    stamps = []

    def progress(k: int) -> None:
        stamps.append((time.perf_counter(), k))

    t0 = time.perf_counter()
    summary = render_dataset(cfg, model=None if model_path else model, progress=progress)
    wall = time.perf_counter() - t0
    # steady rate: from the stamp where a quarter of the samples is done (all workers running) to the end
    done = 0
    for t_a, k in stamps:
        done += k
        if done >= n // 4:
            break
    steady = (n - done) / max(stamps[-1][0] - t_a, 1e-9) if done < n else n / wall
    nbytes = sum(p.stat().st_size for p in out.glob("shard-*.h5"))
    return {"wall": wall, "rate_wall": n / wall, "rate_steady": steady, "timings": summary.timings,
            "bytes_per_sample": nbytes / n}


def pure_render_rate(model, size: int, n: int) -> dict[str, float]:
    """Samples/s in this process on the same parameters: the id pass alone and the full
    ``FaceRenderer.render`` (model arrays batched as the dataset does)."""
    from synth.render import GEOMETRY_BATCH, FaceRenderer
    from synth.sampling import SamplingConfig, face_framing, sample_params

    cfg = SamplingConfig()
    framing = face_framing(model)
    params = [sample_params(model, cfg, size, 0, i, framing) for i in range(n)]
    rates = {}
    with FaceRenderer(model, size) as r:
        r.warm_up(detail=True)
        geo = [r.geometry(p) for p in params]
        r.render_ids(geo[0][0], params[0].intrinsics.astype(float), "perspective")  # warm-up / GL setup
        t0 = time.perf_counter()
        for p, g in zip(params, geo):
            r.render_ids(g[0], p.intrinsics.astype(float), p.projection)
        rates["primitive_id"] = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for b in range(0, n, GEOMETRY_BATCH):
            chunk = params[b:b + GEOMETRY_BATCH]
            for p, a in zip(chunk, r.model_arrays(chunk)):
                r.render(p, a)
        rates["full"] = n / (time.perf_counter() - t0)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=48, help="samples per configuration (8 shards)")
    ap.add_argument("--model", default=None, help="BFM file (default: the built-in model)")
    ap.add_argument("--sizes", default="128,224")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--sampling", default="",
                    help="SamplingConfig overrides, e.g. 'background=\"noise\",occluders=0,specular=False' "
                         "(the look before photo colour)")
    ap.add_argument("--skip-ceiling", action="store_true",
                    help="only the dataset jobs (e.g. to time an older synth on PYTHONPATH side by side)")
    args = ap.parse_args()
    from morphable_model import load_model

    t0 = time.perf_counter()
    model = load_model(args.model)
    import synth

    print(f"synth from {Path(synth.__file__).parent}")
    print(f"model: {model} (loaded in {time.perf_counter() - t0:.1f} s); cores: {os.cpu_count()}")
    import ast

    overrides = {}
    for item in filter(None, args.sampling.split(",")):
        key, _, value = item.partition("=")
        overrides[key.strip()] = ast.literal_eval(value.strip())
    if overrides:
        print(f"sampling overrides: {overrides}")
    sizes = [int(s) for s in args.sizes.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="synth-bench-"))
    try:
        print(f"{'size':>5} {'detail':>6} {'workers':>7} {'samples/s':>10} {'(wall)':>8} {'per core':>9} "
              f"{'kB/sample':>9} {'cpu ms':>7}  split ms/sample (sampling geometry render post write)")
        rates = {}
        for size in sizes:
            for detail in (True, False):
                for w in workers:
                    out = tmp / f"s{size}-d{int(detail)}-w{w}"
                    r = run_job(model, args.model, out, args.n, size, detail, w, overrides)
                    rates[(size, detail, w)] = r["rate_steady"]
                    t = r["timings"]
                    split = " ".join(f"{1000 * t[k] / args.n:6.1f}" for k in ("sampling", "geometry", "render",
                                                                              "post", "write"))
                    print(f"{size:>5} {str(detail):>6} {w:>7} {r['rate_steady']:>10.1f} {r['rate_wall']:>8.1f} "
                          f"{r['rate_steady'] / w:>9.1f} {r['bytes_per_sample'] / 1000:>9.1f} "
                          f"{1000 * t.get('cpu', float('nan')) / args.n:>7.1f}  {split}", flush=True)
                    shutil.rmtree(out)
        if 1 in workers and 2 in workers:
            for size in sizes:
                for detail in (True, False):
                    ratio = rates[(size, detail, 2)] / rates[(size, detail, 1)]
                    print(f"speed-up 1 -> 2 workers at {size} px, detail={detail}: {ratio:.2f}x (target >= 1.8x)")
        for size in [] if args.skip_ceiling else sizes:
            r = pure_render_rate(model, size, max(args.n // 2, 16))
            print(f"{size} px, one process: id pass alone {r['primitive_id']:.1f}/s (GLSL gl_PrimitiveID, indexed; "
                  f"the pure-render ceiling); full render() {r['full']:.1f}/s -> "
                  f"{r['full'] / r['primitive_id']:.0%} of the ceiling")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
