#!/usr/bin/env bash
# Every GPU check of the toolkit in one go, for a short lease on one CUDA GPU:
#   bash benchmarks/gpu_session.sh [OUT_DIR]
# 1. benchmarks/gpu_check.py eagerly and with torch.compile (backend parity, 170M tokens/s and MFU);
# 2. the trainer itself on the GPU: 40 steps of every family with attention=xformers (sdpa when
#    xformers is missing), bf16 autocast, on the embedded corpus; the run info shows the backend.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/card.txt"

timeout 200 "$py" benchmarks/gpu_check.py --out "$out/eager" 2>&1 | tee "$out/eager.log"
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
timeout 200 "$py" benchmarks/gpu_check.py --compile --out "$out/compile" 2>&1 | tee "$out/compile.log"
