#!/usr/bin/env bash
# The GPU check: run it first whenever a GPU is lent, and record its summary
# (README "The GPU check" and your note). About 10 minutes on one fresh H200 (measured
# 2026-11-30: pytest 31 s; the embedded default about 4 minutes, most of it fixed costs), so it
# runs in two calls where one command may take 10 minutes: GPU_CHECK_PARTS names the parts.
#
#   bash scripts/gpu_check.sh                  # with the project installed (scripts/setup.sh)
#   GPU_CHECK_PARTS="pytest_gpu embedded_default" bash scripts/gpu_check.sh   # then the others
#   PYTHON=python3 bash scripts/gpu_check.sh   # another interpreter that has the project's needs
#
# Parts (each with its own time limit; full output in $OUT, or runs/gpu-check, one log each;
# GPU_CHECK_WORK, if set, takes the benchmarks' and the run's folders):
#   1. pytest -m gpu: bf16 teacher against fp32 (tolerance measured against the spread between
#      sentences), DeepSpeed bf16 training steps at ZeRO 0/2/3, the bf16 online teacher, GPU
#      evaluation speed;
#   2. benchmarks/teacher_inference.py --gpu: a BERT-base-sized teacher in bf16, MFU against the
#      measured bf16 matmul peak on real tokens (target 50%);
#   3. benchmarks/training.py on the GPU: the stage on Ray Train + DeepSpeed against a plain
#      loop, ZeRO-0 (target steady ratio 0.95);
#   4. the embedded default with GPU settings (teacher actors on the GPU, a GPU training worker
#      on NCCL, GPU evaluation).
# A part whose imports are missing (Ray, DeepSpeed) is reported as skipped, not failed, so the
# rest still measure. Then one summary.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
LOGS="${OUT:-runs/gpu-check}"
# The benchmarks' and the run's folders (many files) go apart from the logs, so that a log folder
# fetched back from a lent machine holds only the logs and the summary.
WORK="${GPU_CHECK_WORK:-$LOGS}"
mkdir -p "$LOGS" "$WORK"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false \
       RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY=()
PARTS="${GPU_CHECK_PARTS:-pytest_gpu teacher_mfu training embedded_default}"

has() { "$PY" -c "import $1" >/dev/null 2>&1; }

# part NAME LIMIT_S NEEDS PATTERN -- COMMAND...: runs COMMAND into $LOGS/NAME.log; the summary
# gets its status, its seconds and the log lines matching PATTERN.
part() {
  local name=$1 limit=$2 needs=$3 pattern=$4
  shift 5
  case " $PARTS " in *" $name "*) ;; *) return ;; esac
  for module in $needs; do
    if ! has "$module"; then
      SUMMARY+=("== $name: SKIPPED ($module is not importable by $PY)")
      return
    fi
  done
  local start=$SECONDS
  timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  local state="ok"
  [ $rc -eq 124 ] && state="TIMED OUT after ${limit}s"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && state="FAILED (exit $rc)"
  SUMMARY+=("== $name: $state in $((SECONDS - start))s")
  while IFS= read -r line; do SUMMARY+=("   $line"); done \
    < <(grep -E "$pattern" "$LOGS/$name.log" | tail -n 12)
}

if ! "$PY" - <<'EOF' 2>&1 | tee "$LOGS/machine.log"; then
import sys, torch
print("torch", torch.__version__, "| CUDA", torch.version.cuda, "|",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")
sys.exit(0 if torch.cuda.is_available() else 1)
EOF
  echo "gpu_check: this script measures a GPU; none is visible to $PY" >&2
  exit 1
fi

part pytest_gpu 60 "torch transformers deepspeed" "passed|failed|error|skipped|FAILED|ERROR" -- \
  "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py
part teacher_mfu 200 "ray torch" "MFU|steady|all-in|machine|sentences" -- \
  "$PY" benchmarks/teacher_inference.py --gpu --sentences 100000 --workdir "$WORK/bench-teacher"
part training 130 "ray deepspeed" "steady|plain loop|ZeRO|fastest|machine" -- \
  "$PY" benchmarks/training.py --steps 300 --zero 0 --workdir "$WORK/bench-training"
part embedded_default 270 "ray deepspeed" "^\[xdistil\] (done|student|report|dev|.*: done in)" -- \
  "$PY" jobs/distill.py output="$WORK/run" train.use_gpu=true train.torch_threads=4 \
  teacher.inference.num_gpus_per_actor=0.5 teacher.inference.num_cpus_per_actor=1 \
  eval.num_gpus=1

echo
echo "================ GPU check summary ($(date -u +%Y-%m-%dT%H:%MZ)) ================"
cat "$LOGS/machine.log"
printf '%s\n' "${SUMMARY[@]}" | tee "$LOGS/summary.txt"
