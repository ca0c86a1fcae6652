#!/usr/bin/env bash
# The whole GPU verification as one command, for the device machine (Python 3.12 with a
# CUDA torch, no network; what it lacks travels as wheels in .whl/, made here by
# benchmarks/gpu_wheels.sh):
#
#   benchmarks/gpu_check.sh            # on cuda; results under $OUT (default ./gpu-check-out)
#   benchmarks/gpu_check.sh --dry-run  # the same steps on the CPU with tiny sizes
#
# 1. the equivalence tests of the population engine, on the device (your own networks too);
# 2. benchmarks/engines.py side by side on the device: the textbook loop, the per-trial
#    engine, the population engine eager and compiled (CUDA graphs), fp32 (TF32) and bf16,
#    with FLOP/s against the measured matmul rate in each precision; then the same for a
#    `layers` CNN and a plugin network (fp32); and a short run of the population with and
#    without every data augmentation, eager and compiled, side by side (their epoch ratio);
# 3. torch.profiler over one epoch of the largest population (compiled);
# 4. a short end-to-end study: regtune tune --device cuda.
# The device tool brings back at most 8 files of $OUT, and what a timeout cuts short is lost,
# so $OUT holds four, each complete after every step: device.txt (the environment), run.log
# (every step's output in order), results.md (every step's markdown section in order) and
# check.tar.gz (each step's own log and section, refreshed after every step). A failed step is
# recorded and the rest still run; each step has a time limit (STEP_S), and no step starts
# past the deadline (DEADLINE_S after the start), so the files come back whole.
# Sized for about 8 minutes on an H200 (POP trials × 5 folds in one stack).
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
[[ "${1:-}" == "--dry-run" ]] && dry=1
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STEP_S=${STEP_S:-300}
DEADLINE_S=${DEADLINE_S:-$((dry ? 1800 : 540))}  # a slow CPU runs the dry run whole
: >"$OUT/run.log"
: >"$OUT/results.md"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
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
  aug_epochs=2
else
  device=cuda trials=8 pop=${POP:-512} epochs=10 tune_trials=16 threads=""
  tests="" net_pop=${NET_POP:-256} net_engines="" main_engines=""
  aug_epochs=3
fi
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
}
{
  echo "commit ${REGTUNE_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}, $(date -u)"
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
# shellcheck disable=SC2086
step equivalence env REGTUNE_TEST_DEVICE=$device "$PY" -m pytest -q -p no:cacheprovider \
  tests/test_population.py tests/test_compiled.py tests/test_networks.py \
  tests/test_augmentation.py ${tests:+-k "$tests"}
# shellcheck disable=SC2086
step engines "$PY" benchmarks/engines.py --device $device --trials $trials \
  --population-trials $pop --epochs $epochs --precision fp32,bf16 $threads \
  ${main_engines:+"$main_engines"} --append "$WORK/engines.md"
for net in layers-cnn plugin; do
  # shellcheck disable=SC2086
  step "engines-$net" "$PY" benchmarks/engines.py --device $device --model $net \
    --trials $trials --population-trials $net_pop --epochs $epochs $threads \
    ${net_engines:+"$net_engines"} \
    --append "$WORK/engines-$net.md"
done
augment="population P=$pop,population P=$pop augmented"
# The compiled pair only on the device: on a CPU its two first-time compiles are most of the
# dry run's time, and tests/test_compiled.py already trains an augmented trial compiled.
((dry)) || augment+=",population P=$pop compiled,population P=$pop compiled augmented"
# shellcheck disable=SC2086
step engines-augment "$PY" benchmarks/engines.py --device $device --trials $trials \
  --population-trials $pop --epochs $aug_epochs --augment --engines "$augment" $threads \
  --append "$WORK/engines-augment.md"
step profile "$PY" benchmarks/profile_epoch.py --device $device --trials $pop --compile \
  --append "$WORK/profile.md"
step tune "$PY" -m service tune --device $device --dataset builtin:digits --trials $tune_trials \
  --max-epochs $epochs --json
echo "results in $OUT"
exit $status
