#!/usr/bin/env bash
# Every GPU check of the toolkit in one go, for a short lease on one CUDA GPU:
#   bash benchmarks/gpu_session.sh [OUT_DIR] [REFERENCE_DIR]
# 1. python -m toolkit.bench --device cuda: the GPU's measured matmul peaks, 170M training at
#    T=2048 (compiled and eager), forward-only throughput, xformers/SDPA/math parity, sampling, and
#    with REFERENCE_DIR (a clone of s-sahoo/scaling-dllms) its backbone's forward and compiled
#    FlexAttention training step on the same GPU. The JSON is rewritten after every part.
# 2. TRAINER_CHECK=1: also 40 steps of every family through `python -m training.train` on the
#    embedded corpus (attention=xformers when installed), to see the trainer's own run line.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results}"
ref="${2:-}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/card.txt"
# shellcheck disable=SC2086  # BENCH_ARGS holds several flags
timeout "${BENCH_TIMEOUT:-480}" "$py" -m toolkit.bench --device cuda ${ref:+--reference "$ref"} \
  --families "${FAMILIES:-mdlm,ar}" ${BENCH_ARGS:-} --json "$out/bench_gpu.json" >"$out/bench_gpu.txt" 2>"$out/bench_gpu.log"
echo "bench exit status $?" | tee -a "$out/bench_gpu.log"
tail -40 "$out/bench_gpu.txt"
if [ "${TRAINER_CHECK:-0}" = 1 ]; then
  backend=$("$py" -c "from toolkit.model.attention import xformers_available as a; print('xformers' if a() else 'sdpa')")
  runs="/tmp/gpu_session_runs/$$"
  for spec in ar mdlm duo "esolm alpha_0=0.5"; do
    family=${spec%% *}
    # shellcheck disable=SC2086  # $spec holds the family and its options as separate words
    timeout 60 "$py" -m training.train family=$spec model=cpu-l data=austen max_steps=40 \
      batch_size=32 seq_len=256 eval_every=40 eval_batches=4 log_every=20 save_every=1000 \
      attention="$backend" out="$runs/$family" 2>&1 | grep -oE "(run|done|error): .*"
    tail -1 "$runs/$family/metrics.jsonl"
  done 2>&1 | tee "$out/train.log"
fi
