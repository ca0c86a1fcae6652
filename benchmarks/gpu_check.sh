#!/usr/bin/env bash
# The whole GPU verification, for the device machine (Python 3.12 with a CUDA torch, no
# network; what it lacks travels as wheels in .whl/, made here by benchmarks/gpu_wheels.sh).
# benchmarks/GPU.md says how to run it and what to read first.
#
#   benchmarks/gpu_check.sh --part 1   # one device call: correctness and the MLP engines
#   benchmarks/gpu_check.sh --part 2   # the next: other networks, the P scan, the profiles
#   benchmarks/gpu_check.sh --dry-run  # both parts on the CPU with tiny sizes (a test runs it)
#
# Part 1: the equivalence tests that train on the device (tests/device_tests.py selects them
#   and prints their largest differences); a short study end to end, regtune tune --device
#   cuda; benchmarks/engines.py side by side on the device (textbook, per-trial, population
#   eager and compiled with CUDA graphs, fp32 with TF32 and bf16; FLOP/s against the measured
#   matmul rate; peak memory beside the memory model;
#   torch.compile's counters: graphs, graph breaks, recompiles, cudagraph skips, with
#   TORCH_LOGS=recompiles,graph_breaks,cudagraphs where torch knows them, in the step's log).
# Part 2: the engines for a `layers` CNN and a plugin network; every data augmentation on and
#   off, eager and compiled; an eager scan over P = 16, 64, 256, 512; torch.profiler over one
#   epoch of the MLP (compiled) and of the CNN (eager).
#
# The device tool brings back at most 8 files of $OUT and loses what a timeout cuts short, so
# $OUT holds at most five, each whole after every step: device.txt (the environment),
# run.log (every step's output in order), results.md (every step's markdown in order),
# check.tar.gz (each step's own log and markdown) and inductor-cache.tar.gz (torch.compile's
# cache, when under 15 MiB: carried into the next call as .inductor-cache/, it spares that
# call its compiles). A failed step is recorded and the rest still run; each step runs under
# `timeout STEP_S`, and none starts past DEADLINE_S seconds after the call's start, so a call
# ends well inside the device's 10-minute limit with its files whole.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0 parts="1 2"
while (($#)); do
  case $1 in
    --dry-run) dry=1 ;;
    --part) parts=$2 && shift ;;
    *) echo "usage: $0 [--dry-run] [--part 1|2]" >&2 && exit 2 ;;
  esac
  shift
done
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STEP_S=${STEP_S:-240}
DEADLINE_S=${DEADLINE_S:-$((dry ? 1800 : 330))}  # a slow CPU runs the dry run whole
CACHE_MIB=15
: >"$OUT/run.log"
: >"$OUT/results.md"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# torch.compile's caches (inductor's FX graphs, AOTAutograd's, Triton's kernels) in one
# folder that can travel between the two calls.
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$PWD/.inductor-cache}
export TRITON_CACHE_DIR=$TORCHINDUCTOR_CACHE_DIR/triton
mkdir -p "$TORCHINDUCTOR_CACHE_DIR"
if [[ -d .whl ]] && ! "$PY" -c "import optuna, pydantic_settings" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ((dry)); then
  device=cpu trials=2 pop=3 epochs=2 tune_trials=2 threads="--threads 1"
  tests="refilled or layer_runs" net_pop=2 net_engines="--engines=textbook,population P=2"
  # One first-time compile, not two (bf16 too): each costs ~45 s of a CPU's dry run.
  main_engines="--engines=textbook,per-trial,population P=3,population P=3 compiled"
  main_engines+=",population P=3 bf16,population P=2,population P=2 ×2 processes"
  aug_epochs=2 scan=1,2 profile_compile=""  # the engines step compiles already
else
  device=cuda trials=8 pop=${POP:-512} epochs=10 tune_trials=16 threads=""
  tests="" net_pop=${NET_POP:-256} net_engines="" main_engines=""
  aug_epochs=3 scan=${SCAN:-16,64,256,512} profile_compile=--compile
fi
# torch refuses to import under a TORCH_LOGS name it does not know: only the ones this
# torch registers (cudagraphs, recompiles and graph_breaks are in torch 2.13's registry).
torch_logs=$("$PY" -c "from torch._logging._internal import log_registry as r
print(','.join(n for n in ('recompiles', 'graph_breaks', 'cudagraphs') if r.is_artifact(n)))" \
  2>/dev/null)
status=0
step() {  # step NAME COMMAND...: run it (under STEP_S, not past the deadline), log it
  local name=$1
  shift
  if ((SECONDS >= DEADLINE_S)); then
    echo "== $name skipped: past the deadline of $DEADLINE_S s" | tee -a "$OUT/run.log"
    status=1
    return
  fi
  echo "== $name: $*" | tee -a "$OUT/run.log"
  local started=$SECONDS
  timeout "$STEP_S" "$@" 2>&1 | tee "$WORK/$name.log"
  if ((PIPESTATUS[0] == 0)); then
    echo "== $name passed in $((SECONDS - started)) s" | tee -a "$WORK/$name.log"
  else
    echo "== $name FAILED in $((SECONDS - started)) s" | tee -a "$WORK/$name.log"
    status=1
  fi
  cat "$WORK/$name.log" >>"$OUT/run.log"
  if [[ -f "$WORK/$name.md" ]]; then
    cat "$WORK/$name.md" >>"$OUT/results.md"
  fi
  tar -czf "$OUT/check.tar.gz.part" -C "$WORK" . && mv "$OUT/check.tar.gz.part" "$OUT/check.tar.gz"
  keep_cache
}
keep_cache() {  # the compile cache into $OUT, whole, if it is small enough to come back
  # Not packed at all when far too large (packing costs seconds a step).
  if (($(du -sm "$TORCHINDUCTOR_CACHE_DIR" | cut -f1) <= 8 * CACHE_MIB)) &&
    tar -czf "$WORK/cache.tar.gz" -C "$TORCHINDUCTOR_CACHE_DIR" . 2>/dev/null &&
    (($(stat -c %s "$WORK/cache.tar.gz") <= CACHE_MIB * 1024 * 1024)); then
    mv "$WORK/cache.tar.gz" "$OUT/inductor-cache.tar.gz"
  else
    echo "== the compile cache is over $CACHE_MIB MiB packed: not kept" >>"$OUT/run.log"
    rm -f "$WORK/cache.tar.gz"
  fi
}
{
  echo "commit ${REGTUNE_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}, $(date -u)"
  echo "parts $parts; compile cache carried in: $(du -sh "$TORCHINDUCTOR_CACHE_DIR" | cut -f1)"
  "$PY" - <<'PROBE'
import shutil

import torch

print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("cudnn", torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
try:
    import triton

    print("triton", triton.__version__)
except ImportError:
    print("triton absent")
if torch.cuda.is_available():
    free, total = torch.cuda.mem_get_info()
    print(f"{torch.cuda.get_device_name()}: {free / 2**30:.1f} of {total / 2**30:.1f} GiB free")
print("git", shutil.which("git"), "gcc", shutil.which("gcc"))
PROBE
} >"$OUT/device.txt" 2>&1

part1() {
  # shellcheck disable=SC2086
  step equivalence env REGTUNE_TEST_DEVICE=$device "$PY" -m pytest -q -p no:cacheprovider \
    tests/test_population.py tests/test_networks.py tests/test_augmentation.py \
    tests/test_max_norm.py tests/test_width.py ${tests:+-k "$tests"}
  # End to end before the benchmarks: if the deadline comes, it is a benchmark that waits.
  step tune "$PY" -m service tune --device $device --dataset builtin:digits \
    --trials $tune_trials --max-epochs $epochs --json
  # shellcheck disable=SC2086
  step engines env TORCH_LOGS="$torch_logs" "$PY" benchmarks/engines.py \
    --device $device --trials $trials --population-trials $pop --epochs $epochs \
    --precision fp32,bf16 $threads ${main_engines:+"$main_engines"} --append "$WORK/engines.md"
}

part2() {
  for net in layers-cnn plugin; do
    # shellcheck disable=SC2086
    step "engines-$net" "$PY" benchmarks/engines.py --device $device --model $net \
      --trials $trials --population-trials $net_pop --epochs $epochs $threads \
      ${net_engines:+"$net_engines"} --append "$WORK/engines-$net.md"
  done
  augment="population P=$pop,population P=$pop augmented"
  # The compiled pair only on the device: on a CPU its two first-time compiles are most of the
  # dry run's time, and tests/test_compiled.py already trains an augmented trial compiled.
  ((dry)) || augment+=",population P=$pop compiled,population P=$pop compiled augmented"
  # shellcheck disable=SC2086
  step engines-augment "$PY" benchmarks/engines.py --device $device --trials $trials \
    --population-trials $pop --epochs $aug_epochs --augment --engines "$augment" $threads \
    --append "$WORK/engines-augment.md"
  # Eager stacks of growing P: where the step stops getting cheaper per model.
  # shellcheck disable=SC2086
  step engines-scan "$PY" benchmarks/engines.py --device $device --epochs 2 --scan "$scan" \
    --engines "$(sed 's/[0-9][0-9]*/population P=&/g' <<<"$scan")" $threads \
    --append "$WORK/engines-scan.md"
  # shellcheck disable=SC2086
  step profile "$PY" benchmarks/profile_epoch.py --device $device --trials $pop $profile_compile \
    --append "$WORK/profile.md"
  step profile-cnn "$PY" benchmarks/profile_epoch.py --device $device --model layers-cnn \
    --trials $net_pop --append "$WORK/profile-cnn.md"
}

for part in $parts; do
  "part$part"
done
echo "results in $OUT"
exit $status
