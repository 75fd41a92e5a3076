#!/usr/bin/env bash
# One CoarseNet training leg on a lent GPU machine, inside one device `run` call (<= 10 minutes):
# fresh renders on the machine's CPU cores, a short calibration of the step rate, then a leg from the
# shipped weights whose cosine schedule is sized to the time left, exported to $OUT (7 files:
# leg.log, last.pt, coarse_gpu.safetensors, the leg's config / train / val logs, the calibration's
# train log).
#
#   device `run`:  command "bash scripts/gpu_leg.sh", timeout_s 600 (nothing to carry)
#   then here:     train-cli evaluate --checkpoint <files_at>/last.pt --data val128 --samples 1000 ...
#
# Every setting is an environment variable (defaults in brackets): BUDGET_S [540] seconds for the
# whole script, RENDER_S [150] seconds of rendering, RENDER_WORKERS [CPUs - 1], SEED [30] (the
# renders' and the leg's seed: never one of a held-out set's), BATCH [128], LR [2e-3], INIT
# [train/weights/coarse.safetensors], TRAIN_WORKERS [12], CALIB_STEPS [240], VAL_N [256] held-out
# renders, THREADS [0: torch's default] CPU threads of the trainer, STEPS [sized to the time left],
# AMP [--no-amp: float32 like the CPU legs; bf16 heatmap logits may coarsen the landmark head (not measured),
# whose precision is the bottleneck], DEVICE [cuda], WORK [/tmp/gpu_leg], OUT [$OUT, else
# /tmp/gpu_leg_out]. The architecture and losses are the shipped CoarseNet's (docs/experiments.md:
# 64 px input, --width-mult 0.5, 2 iterations, landmark initialisation).
# On the CPU the same script is a smoke test (one core): OMP_NUM_THREADS=1 THREADS=1 DEVICE=cpu
# BUDGET_S=300 RENDER_S=40 RENDER_WORKERS=1 TRAIN_WORKERS=0 BATCH=2 CALIB_STEPS=12 VAL_N=16.
set -uo pipefail
T0=$SECONDS
BUDGET_S=${BUDGET_S:-540}
RENDER_S=${RENDER_S:-150}
NCPU=$(nproc 2>/dev/null || echo 2)
RENDER_WORKERS=${RENDER_WORKERS:-$((NCPU > 1 ? NCPU - 1 : 1))}
SEED=${SEED:-30}
BATCH=${BATCH:-128}
LR=${LR:-2e-3}
INIT=${INIT:-train/weights/coarse.safetensors}
TRAIN_WORKERS=${TRAIN_WORKERS:-12}
CALIB_STEPS=${CALIB_STEPS:-240}
VAL_N=${VAL_N:-256}
THREADS=${THREADS:-0}
AMP=${AMP:---no-amp}
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-/tmp/gpu_leg}
OUT=${OUT:-/tmp/gpu_leg_out}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK"
rm -rf "$WORK/calib" "$WORK/leg"  # a rerun on a warm machine: new runs (the renders are kept and extended)
log() { echo "[$((SECONDS - T0)) s] $*" | tee -a "$OUT/leg.log"; }
left() { echo $((BUDGET_S - (SECONDS - T0))); }

# 1. The checkout on the path, no pip install: the machine cannot download, and its own torch, numpy,
# numba, h5py, scipy, Pillow, scikit-image ... are used (/work/.library/device/KINDS.md). It lacks
# hdf5plugin, so the shards are written with --compression gzip (plain h5py). Wheels carried in .whl/
# (the device README's recipe) are installed first when present.
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { log "installing the wheels of .whl/ failed"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 - "$DEVICE" <<'EOF' 2>&1 | tee -a "$OUT/leg.log" || exit 1
import sys, importlib
for name in ("numpy", "torch", "numba", "h5py", "scipy", "PIL", "click", "tqdm", "safetensors", "skimage"):
    m = importlib.import_module(name)
    print(f"{name} {getattr(m, '__version__', '?')}")
import torch
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    sys.exit("DEVICE=cuda but torch sees no GPU")
print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
EOF

# 2. Held-out monitor renders (its own seed, 256) in this process: also compiles the numba kernels
# once (cache=True) before the workers start.
log "rendering the validation set"
python3 -m synth.cli render --out "$WORK/val" --n "$VAL_N" --size 128 --workers 0 --seed 2 --shard-size "$VAL_N" --compression gzip \
  > "$WORK/render_val.log" 2>&1 || { tail -n 5 "$WORK/render_val.log"; log "validation render failed"; exit 1; }

# 3. Fresh training renders for RENDER_S seconds: timeout interrupts the job's whole process group;
# finished shards are complete files (a shard is renamed into place when written), the rest is dropped.
log "rendering training data for ${RENDER_S} s with ${RENDER_WORKERS} workers"
timeout -s INT -k 15 "$RENDER_S" python3 -m synth.cli render --out "$WORK/train" --n 2000000 --size 128 \
  --workers "$RENDER_WORKERS" --seed "$SEED" --shard-size 250 --compression gzip > "$WORK/render_train.log" 2>&1
sleep 2
SHARDS=$(compgen -G "$WORK/train/shard-*.h5" | wc -l)
log "$SHARDS shards ($((SHARDS * 250)) renders): $(tr '\r' '\n' < "$WORK/render_train.log" | grep 'sample/s' | tail -n 1)"
[ "$SHARDS" -ge 1 ] || { tail -c 600 "$WORK/render_train.log"; log "no shard finished in RENDER_S seconds"; exit 1; }

COMMON=(--data "$WORK/train" --size 64 --width-mult 0.5 --batch-size "$BATCH" --lr "$LR" --iters 2
        --feedback-cell 2 --norm iter_batch --w-param 1.0 --landmark-init --w-lmk 4 --init "$INIT"
        --device "$DEVICE" "$AMP" --threads "$THREADS" --workers "$TRAIN_WORKERS" --seed "$SEED" --no-progress)

# 4. Calibration: the step rate of this machine, from the second half of a throw-away run's steps
# (the first ones are served from the loader's prefetch queue, 4 batches per worker, and flatter it).
log "calibrating (${CALIB_STEPS} steps)"
timeout -s INT -k 15 $(( $(left) / 3 )) python3 -m train.cli coarse "${COMMON[@]}" --out "$WORK/calib" \
  --steps "$CALIB_STEPS" --log-every $(( CALIB_STEPS / 12 > 0 ? CALIB_STEPS / 12 : 1 )) --ckpt-every 100000 \
  --stats-samples 500 > "$WORK/calib.log" 2>&1 || log "calibration stopped early (rc $?): its logged steps decide"
[ -f "$WORK/calib/train.csv" ] && cp "$WORK/calib/train.csv" "$OUT/calib_train.csv"
RATE=$(python3 - "$WORK/calib/train.csv" "$CALIB_STEPS" <<'EOF'
import csv, sys
try:
    rows = list(csv.DictReader(open(sys.argv[1])))
except OSError:
    sys.exit(1)
late = [r for r in rows if int(r["step"]) > int(sys.argv[2]) // 2] or rows[1:]
if not late:
    sys.exit(1)
print(sum(float(r["img_per_s"]) for r in late) / len(late))
EOF
) || { tail -n 20 "$WORK/calib.log"; log "calibration logged too few steps to measure a rate"; exit 1; }
# what is left, less the start-up (~the calibration's own), the validation and the export
TRAIN_S=$(( $(left) - 60 ))
[ "$TRAIN_S" -ge 60 ] || { log "only ${TRAIN_S} s left for the leg: raise BUDGET_S or lower RENDER_S"; exit 1; }
STEPS=${STEPS:-$(python3 -c "print(max(20, int($RATE * $TRAIN_S * 0.8 / $BATCH)))")}
log "rate ${RATE} img/s; ${TRAIN_S} s left for training: --steps ${STEPS}"

# 5. The leg, in the foreground under timeout (which, unlike a background job of a script, gets
# SIGINT delivered): 25 s before the budget it is interrupted, and the checkpoint of every 100 steps stays.
timeout -s INT -k 20 $(( $(left) - 25 )) python3 -m train.cli coarse "${COMMON[@]}" --out "$WORK/leg" \
  --steps "$STEPS" --val-data "$WORK/val" --val-every "$STEPS" --val-samples "$VAL_N" --ckpt-every 100 \
  > "$WORK/leg.log" 2>&1
RC=$?
tail -n 12 "$WORK/leg.log" | tee -a "$OUT/leg.log"
log "training exited with $RC (124: interrupted at the time limit)"

# 6. What comes back (at most 8 files, none deeper than $OUT/a/b).
CK="$WORK/leg/checkpoints/last.pt"
if [ -f "$CK" ]; then
  cp "$CK" "$OUT/last.pt"
  python3 -m train.cli export "$CK" "$OUT/coarse_gpu.safetensors" >> "$OUT/leg.log" 2>&1 || log "export failed"
fi
for f in config.json train.csv val.csv; do [ -f "$WORK/leg/$f" ] && cp "$WORK/leg/$f" "$OUT/leg_$f"; done
log "done"
