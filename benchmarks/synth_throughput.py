"""Synthetic-data throughput: samples/s for 1 and 2 workers at 128 and 224 px, with and without detail,
the time split (sampling, geometry, render, post, write), bytes per sample, and the pure-render ceiling
(the GLSL gl_PrimitiveID triangle-id pass alone) next to the full render, measured side by side on the
same model.

    python benchmarks/synth_throughput.py [--n 48] [--model PATH] [--sizes 128,224] [--workers 1,2]
                                          [--cli-n 400,4000] [--cli-only]
    # an older synth side by side (same script, same machine, one after the other):
    PYTHONPATH=/path/to/old/checkout python benchmarks/synth_throughput.py --skip-ceiling

"As a user runs it" (``--cli-n``): ``synth-cli render --out DIR --n N --workers W`` with every other
flag at its default (224 px, detail, sh9, the default shard size), in a subprocess with the
caller's environment (no thread variables added): wall-clock samples/s including Python start-up
and model loading, next to the steady rate read from the shard files' finishing times (from the
moment a quarter of the samples is done to the last shard), and the 1 -> 2 worker ratio of both.

"cpu ms" is the CPU time per sample of the rendering processes (robust when other jobs share the
machine: 2 workers scale as 2 x cpu(1 worker) / cpu(2 workers) when both have a free core).

Targets (issue 14), each printed as a ratio measured in this run:
1. the dataset job (1 worker, all outputs, default flags) >= 80 % of the id-pass ceiling (the GLSL
   gl_PrimitiveID pass alone on OSMesa, the raster ceiling of the GL design), >= 1.8x with 2 workers;
2. <= 60 kB/sample at 224 px: the job's (layout 6, lossless: the triangle ids recomputed on read)
   and, on the same renders, layout 7 (``--image-codec jpeg``: the image as JPEG quality 95,
   everything else as layout 6) and layout 4 (the ids stored, the default before), with the CPU ms
   of encoding a sample in each and the JPEG image's error (RMSE and peak, levels of 255);
3. reading: the keyed read training uses (image + mask + parameters + landmarks), the triangle ids
   (recomputed from layout 6 on) and the maps (recomputed from the ids from layout 3 on), ms/sample,
   the job's layout-6 shards next to layouts 7, 4, 3 and 2 written from the same renders in this run,
   with their kB/sample on those renders (`benchmarks/loader.py` compares reading with a training step);
4. 80 samples/s per core (1000 / CPU ms per sample of the 1-worker job).
Rates are "steady": measured from the first finished quarter of the samples to the last, so process
start-up and model loading are reported separately. Every process (the in-process 1-worker run
included) uses one BLAS and one llvmpipe thread, so "1 worker" is one core.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_USER_ENV = dict(os.environ)  # what `synth-cli` gets in the "as a user runs it" runs
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "LP_NUM_THREADS"):  # one core per worker
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402  (after the thread variables: OpenBLAS reads them when it loads)


def run_job(model, model_path, out: Path, n: int, size: int, detail: bool, workers: int, sampling=None,
            platform: str = "cpu") -> dict:
    from synth.dataset import DatasetConfig, default_shard_size, render_dataset
    from synth.sampling import SamplingConfig

    # synth-cli's default shard size for N (32 samples up to N = 2048, then 16 ceil(N / 1024); each
    # shard costs ~10 CPU ms to open and commit)
    shard = default_shard_size(n)
    cfg = DatasetConfig(out=str(out), n=n, size=size, shard_size=shard, workers=workers, model=model_path,
                        platform=platform, sampling=SamplingConfig(detail=detail, **(sampling or {})))
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


def _busy_seconds() -> float:
    """CPU seconds all processes of this machine have used since boot (/proc/stat)."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def run_cli(out: Path, n: int, workers: int) -> dict:
    """``synth-cli render --out OUT --n N --workers W``, default flags, as a user runs it. ``others``:
    the share of the machine's cores that other processes used meanwhile (0 = an idle machine)."""
    import resource

    exe = Path(sys.executable).with_name("synth-cli")
    cmd = [str(exe) if exe.exists() else "synth-cli", "render", "--out", str(out), "--n", str(n),
           "--workers", str(workers)]
    busy0, ru0 = _busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run(cmd, env=_USER_ENV, capture_output=True, text=True)
    wall = time.time() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)  # synth-cli and its workers
    others = max(0.0, _busy_seconds() - busy0 - ours) / (wall * (os.cpu_count() or 1))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    from synth.shards import ShardReader

    done = []  # (finishing time, samples) per shard
    for p in out.glob("shard-*.h5"):
        with ShardReader(p) as r:
            done.append((p.stat().st_mtime, len(r)))
    done.sort()
    count = 0
    for t_q, k in done:
        count += k
        if count >= n // 4:
            break
    t_end = done[-1][0]
    steady = (n - count) / (t_end - t_q) if t_end > t_q else float("nan")
    return {"wall": wall, "rate_wall": n / wall, "rate_steady": steady, "shards": len(done), "cpu": ours,
            "others": others}


def pure_render_rate(model, size: int, n: int) -> dict[str, float]:
    """Samples per CPU second in this process on the same parameters, interleaved in 4 rounds (so a change of load
    hits every figure alike): the GL id pass alone (OSMesa: the ceiling of the GL design), the
    compiled CPU rasterizer alone, ``FaceRenderer.render`` on the ``cpu`` platform with all maps and
    with what layout 6 stores (``maps=False, stable=True``; model arrays batched as the dataset does)."""
    from synth.render import GEOMETRY_BATCH, FaceRenderer
    from synth.sampling import SamplingConfig, face_framing, sample_params

    cfg = SamplingConfig()
    framing = face_framing(model)
    params = [sample_params(model, cfg, size, 0, i, framing) for i in range(n)]
    secs = {"gl_id_pass": 0.0, "cpu_id_pass": 0.0, "render_all_maps": 0.0, "render_layout3": 0.0}
    with FaceRenderer(model, size, platform="osmesa") as gl, FaceRenderer(model, size, platform="cpu") as r:
        for x in (gl, r):
            x.warm_up(detail=True)
        geo = [r.geometry(p) for p in params]
        for x in (gl, r):  # warm-up: GL set-up, kernel compilation / cache load
            x.render_ids(geo[0][0], params[0].intrinsics.astype(float), "perspective")
        r.render(params[0])
        for _ in range(4):
            # CPU time of this process (llvmpipe's threads included): robust when other jobs share the cores
            for name, x in (("gl_id_pass", gl), ("cpu_id_pass", r)):
                t0 = time.process_time()
                for p, g in zip(params, geo):
                    x.render_ids(g[0], p.intrinsics.astype(float), p.projection)
                secs[name] += time.process_time() - t0
            for name, maps in (("render_all_maps", True), ("render_layout3", False)):
                t0 = time.process_time()
                for b in range(0, n, GEOMETRY_BATCH):
                    chunk = params[b:b + GEOMETRY_BATCH]
                    for p, a in zip(chunk, r.model_arrays(chunk)):
                        r.render(p, a, maps=maps, stable=not maps)
                secs[name] += time.process_time() - t0
    return {k: 4 * n / v for k, v in secs.items()}


def read_rates(model, out: Path, size: int, n: int) -> dict[str, float]:
    """CPU ms per sample of keyed reads: layout 6 (shards of ``out``), layout 7 (JPEG image), layouts 4
    and 3 (the ids stored) and layout 2 (the same samples rendered here and written as layout 7 writes
    them, as layouts 4 and 3 wrote them — Zstandard-1 — and as layout 2 did: quantised maps, gzip-1),
    interleaved; plus the kB/sample of the five layouts on those ``n`` renders, the CPU ms of encoding
    a sample in layouts 6, 7 and 4, and the JPEG image's RMSE and peak error (levels of 255)."""
    from synth.codecs import DEFAULT_JPEG_QUALITY, JPEG_LAYOUT, LAYOUT_VERSION, encode_sample
    from synth.dataset import _ShardRenderer, DatasetConfig  # noqa: F401  (same renderer set-up as the job)
    from synth.detail import N_FIELDS
    from synth.render import FaceRenderer
    from synth.sampling import SamplingConfig, face_framing, sample_params
    from synth.shards import ShardReader, ShardWriter, list_shards, read_samples

    train_keys = ("image", "mask", "landmarks", "landmarks_visible", "intrinsics", "alpha_id", "alpha_exp", "beta",
                  "sh", "pose", "translation", "index")
    map_keys = ("depth", "depth_coarse", "albedo")  # what the fine stage reads besides
    cfg = SamplingConfig()
    framing = face_framing(model)
    dims = {"alpha_id": model.n_id, "alpha_exp": model.n_exp, "beta": model.n_albedo, "detail_weights": N_FIELDS}
    attrs = {"size": size, "projection": "perspective", "model_fingerprint": model.fingerprint,
             "model_source": model.source}
    files = {layout: out / f"layout{layout}.h5" for layout in (LAYOUT_VERSION, JPEG_LAYOUT, 4, 3, 2)}
    encode_s = {LAYOUT_VERSION: 0.0, JPEG_LAYOUT: 0.0, 4: 0.0}
    images = []  # the rendered images, to measure the JPEG error
    with FaceRenderer(model, size) as r, \
            ShardWriter(files[LAYOUT_VERSION], n, size, dims, True, attrs, compression="zstd") as w6, \
            ShardWriter(files[JPEG_LAYOUT], n, size, dims, True, attrs, compression="zstd", layout=JPEG_LAYOUT,
                        image_quality=DEFAULT_JPEG_QUALITY) as w7, \
            ShardWriter(files[4], n, size, dims, True, attrs, compression="zstd", layout=4) as w4, \
            ShardWriter(files[3], n, size, dims, True, attrs, compression="zstd", layout=3) as w3, \
            ShardWriter(files[2], n, size, dims, True, attrs, compression="gzip", layout=2) as w2:
        for i in range(n):
            p = sample_params(model, cfg, size, 0, i, framing)
            o = r.render(p, stable=True)
            for w, layout in ((w6, LAYOUT_VERSION), (w7, JPEG_LAYOUT), (w4, 4), (w3, 3), (w2, 2)):
                t0 = time.process_time()
                enc = encode_sample(p, o, layout=layout, image_quality=DEFAULT_JPEG_QUALITY)
                if layout in encode_s:
                    encode_s[layout] += time.process_time() - t0
                w.write(i, enc)
            images.append(o.image)
        for w in (w6, w7, w4, w3, w2):
            w.commit()
    readers = {f"layout {LAYOUT_VERSION}": [ShardReader(p, model=model) for p in list_shards(out)],
               f"layout {JPEG_LAYOUT}": [ShardReader(files[JPEG_LAYOUT], model=model)],
               "layout 4": [ShardReader(files[4], model=model)],
               "layout 3": [ShardReader(files[3], model=model)], "layout 2": [ShardReader(files[2])]}
    res = {f"layout{k}_kB": f.stat().st_size / n / 1000 for k, f in files.items()}
    res.update({f"encode_ms_layout{k}": 1000 * v / n for k, v in encode_s.items()})
    diff = np.stack([readers[f"layout {JPEG_LAYOUT}"][0].read(i, keys=("image",))["image"].astype(np.float64) - im
                     for i, im in enumerate(images)])
    res.update(jpeg_rmse=float(np.sqrt(np.mean(diff ** 2))), jpeg_peak=float(np.abs(diff).max()))
    for rs in readers.values():
        for rd in rs:
            rd.read(0, keys=train_keys + map_keys)  # open files, fill caches, build the recomputing renderer
    secs: dict[str, float] = {}
    for _ in range(2):
        for name, rs in readers.items():
            labels = (("train keys", train_keys), ("+ depth, depth_coarse, albedo", train_keys + map_keys))
            if name != "layout 2":
                labels += (("tri_id", ("tri_id",)),)
            for label, keys in labels:
                t0 = time.process_time()  # CPU time of this process: robust when other jobs share the cores
                count = 0
                for rd in rs:
                    for i in range(len(rd)):
                        rd.read(i, keys=keys)
                        count += 1
                secs[f"{name}, {label}"] = secs.get(f"{name}, {label}", 0.0) + (time.process_time() - t0) / count / 2
            # what the fine stage's loader does (ShardDataset.__getitems__): batches of 16 drawn at
            # random across the shards, read together (synth.shards.read_samples)
            label = f"{name}, + depth, depth_coarse, albedo, random batches of 16 (read_samples)"
            pairs = [(rd, i) for rd in rs for i in range(len(rd))]
            order = np.random.default_rng(0).permutation(len(pairs))
            t0 = time.process_time()
            for b in range(0, len(order), 16):
                read_samples([pairs[n] for n in order[b:b + 16]], train_keys + map_keys)
            secs[label] = secs.get(label, 0.0) + (time.process_time() - t0) / len(pairs) / 2
    res.update({k: 1000 * v for k, v in secs.items()})
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=128,
                    help="samples per configuration (in synth-cli's default shards: 32 samples up to 2048)")
    ap.add_argument("--model", default=None, help="BFM file (default: the built-in model)")
    ap.add_argument("--sizes", default="128,224")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--sampling", default="",
                    help="SamplingConfig overrides, e.g. 'background=\"noise\",occluders=0,specular=False' "
                         "(the look before photo colour)")
    ap.add_argument("--skip-ceiling", action="store_true",
                    help="only the dataset jobs (e.g. to time an older synth on PYTHONPATH side by side)")
    ap.add_argument("--platform", default="cpu", help="the dataset jobs' --platform (cpu | osmesa)")
    ap.add_argument("--no-detail-off", action="store_true", help="skip the detail-off rows")
    ap.add_argument("--cli-n", default="400,4000", help="N of the synth-cli runs with default flags ('' = none)")
    ap.add_argument("--cli-only", action="store_true", help="only the synth-cli runs")
    ap.add_argument("--repeat", type=int, default=1, help="synth-cli runs per configuration, alternating "
                    "1 and 2 workers (on a shared machine: the median and the best are printed)")
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
        cli_ns = [int(v) for v in args.cli_n.split(",") if v.strip()]
        if cli_ns:
            print(f"load average before the synth-cli runs: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
            print(f"{'synth-cli, default flags':>26} {'wall s':>7} {'samples/s':>10} {'steady/s':>9} {'shards':>6} "
                  f"{'cpu s':>6} {'others':>6}  (others: share of the cores other processes used meanwhile)")
        for n in cli_ns:
            res: dict[int, list[dict]] = {w: [] for w in workers}
            for _ in range(args.repeat):  # alternating, so that a change of load hits both worker counts
                for w in workers:
                    out = tmp / f"cli-n{n}-w{w}"
                    r = run_cli(out, n, w)
                    res[w].append(r)
                    print(f"{f'--n {n} --workers {w}':>26} {r['wall']:>7.1f} {r['rate_wall']:>10.1f} "
                          f"{r['rate_steady']:>9.1f} {r['shards']:>6} {r['cpu']:>6.1f} {r['others']:>6.0%}",
                          flush=True)
                    shutil.rmtree(out)
            if 1 in res and 2 in res:
                for how, pick in (("median", lambda v: float(np.median(v))), ("best", max)):
                    wall = pick([r["rate_wall"] for r in res[2]]) / pick([r["rate_wall"] for r in res[1]])
                    steady = pick([r["rate_steady"] for r in res[2]]) / pick([r["rate_steady"] for r in res[1]])
                    print(f"synth-cli --n {n}, 1 -> 2 workers ({how} of {args.repeat}): wall-clock {wall:.2f}x "
                          f"(target >= 1.7x at N = 400), steady {steady:.2f}x", flush=True)
        if cli_ns:
            print(f"load average after the synth-cli runs: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        if args.cli_only:
            return
        print(f"{'size':>5} {'detail':>6} {'workers':>7} {'samples/s':>10} {'(wall)':>8} {'per core':>9} "
              f"{'kB/sample':>9} {'cpu ms':>7}  split ms/sample (sampling geometry render post write)")
        rates, cpu_ms, kbs, jpeg = {}, {}, {}, {}
        details = (True,) if args.no_detail_off else (True, False)
        for size in sizes:
            for detail in details:
                for w in workers:
                    out = tmp / f"s{size}-d{int(detail)}-w{w}"
                    r = run_job(model, args.model, out, args.n, size, detail, w, overrides,
                                **({"platform": args.platform} if args.platform != "cpu" else {}))
                    rates[(size, detail, w)] = r["rate_steady"]
                    cpu_ms[(size, detail, w)] = 1000 * r["timings"].get("cpu", float("nan")) / args.n
                    kbs[(size, detail)] = r["bytes_per_sample"] / 1000
                    t = r["timings"]
                    split = " ".join(f"{1000 * t[k] / args.n:6.1f}" for k in ("sampling", "geometry", "render",
                                                                              "post", "write"))
                    print(f"{size:>5} {str(detail):>6} {w:>7} {r['rate_steady']:>10.1f} {r['rate_wall']:>8.1f} "
                          f"{r['rate_steady'] / w:>9.1f} {r['bytes_per_sample'] / 1000:>9.1f} "
                          f"{1000 * t.get('cpu', float('nan')) / args.n:>7.1f}  {split}", flush=True)
                    if detail and w == workers[0] and not args.skip_ceiling:
                        r_read = read_rates(model, out, size, min(args.n, 32))
                        jpeg[size] = r_read
                        print("        reading, CPU ms/sample (layout 6 of the job vs layouts 7, 4, 3 and 2 of the "
                              "same renders): "
                              + "; ".join(f"{k} {v:.2f}" for k, v in r_read.items() if not k.endswith("_kB")
                                          and not k.startswith(("encode_", "jpeg_")))
                              + f"; kB/sample of the same {min(args.n, 32)} renders: layout 6 "
                              f"{r_read['layout6_kB']:.1f}, layout 7 (JPEG 95) {r_read['layout7_kB']:.1f}, layout 4 "
                              f"{r_read['layout4_kB']:.1f}, layout 3 {r_read['layout3_kB']:.1f}, layout 2 "
                              f"{r_read['layout2_kB']:.1f}", flush=True)
                    shutil.rmtree(out)
        if 1 in workers and 2 in workers:
            for size in sizes:
                for detail in details:
                    ratio = rates[(size, detail, 2)] / rates[(size, detail, 1)]
                    cpu_ratio = 2 * cpu_ms[(size, detail, 1)] / cpu_ms[(size, detail, 2)]
                    print(f"target 1b: speed-up 1 -> 2 workers at {size} px, detail={detail}: {ratio:.2f}x steady "
                          f"(2 x CPU-ms ratio {cpu_ratio:.2f}x; target >= 1.8x)")
        for size in sizes:
            print(f"target 2: {size} px {kbs[(size, True)]:.1f} kB/sample, the job's shards (layout 6, lossless; "
                  f"target <= 60)")
            if size in jpeg:
                j = jpeg[size]
                print(f"target 2, same {min(args.n, 32)} renders: layout 6 {j['layout6_kB']:.1f} kB/sample vs layout 4 "
                      f"(ids stored) {j['layout4_kB']:.1f} ({j['layout6_kB'] / j['layout4_kB']:.2f}x; target <= 60); "
                      f"encoding {j['encode_ms_layout6']:.2f} vs {j['encode_ms_layout4']:.2f} CPU ms/sample")
                print(f"target 2, --image-codec jpeg (layout 7, quality 95; same {min(args.n, 32)} renders): "
                      f"{j['layout7_kB']:.1f} kB/sample vs layout 6 {j['layout6_kB']:.1f} "
                      f"({j['layout7_kB'] / j['layout6_kB']:.2f}x); encoding "
                      f"{j['encode_ms_layout7']:.2f} vs {j['encode_ms_layout6']:.2f} CPU ms/sample; image error "
                      f"RMSE {j['jpeg_rmse']:.2f}, peak {j['jpeg_peak']:.0f} levels of 255")
            if 1 in workers:
                print(f"target 4: {size} px {1000 / cpu_ms[(size, True, 1)]:.1f} samples/s per CPU core "
                      f"(1000 / CPU ms of the 1-worker job; target 80)")
        for size in [] if args.skip_ceiling else sizes:
            n_pure = max(args.n // 4, 8)
            r = pure_render_rate(model, size, n_pure)
            print(f"{size} px, one process, {n_pure} samples x 4 interleaved rounds, per CPU second: GL id pass alone (OSMesa) "
                  f"{r['gl_id_pass']:.1f}/s = the ceiling; CPU id pass alone {r['cpu_id_pass']:.1f}/s "
                  f"({r['cpu_id_pass'] / r['gl_id_pass']:.2f}x); render() all maps {r['render_all_maps']:.1f}/s "
                  f"({r['render_all_maps'] / r['gl_id_pass']:.0%}), render(maps=False, stable=True) {r['render_layout3']:.1f}/s "
                  f"({r['render_layout3'] / r['gl_id_pass']:.0%} of the ceiling)")
            if 1 in workers:
                job = rates[(size, True, 1)]
                job = 1000 / cpu_ms[(size, True, 1)]
                print(f"target 1: {size} px dataset job, 1 worker, all outputs: {job:.1f} samples per CPU second = "
                      f"{job / r['gl_id_pass']:.0%} of the GL id-pass ceiling (target >= 80 %; both CPU time, the "
                      f"ceiling measured after the job, in this process)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
