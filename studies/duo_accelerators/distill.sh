#!/usr/bin/env bash
# Distil the embedded Duo demo model (toolkit/assets/models/duo) with DCD on the Duo repository's full
# schedule, scaled to the demo (README.md, "The schedule"): T = 64, five rounds of 32 steps (gap 1/64 ...
# 16/64), the teacher reset to the student at each round, lr 2e-4 after 2 warm-up steps. fp32, one thread
# (measured on an AMD EPYC, 2 cores, AVX2, no native bf16). Extra arguments override (the variants).
# Usage: bash studies/duo_accelerators/distill.sh [OUT] [KEY=VALUE ...]
set -euo pipefail
out=${1:-runs/duo_accelerators/distilled}; shift || true
PY=${PYTHON:-python}; [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
OMP_NUM_THREADS=1 $PY -m training.train init=duo distill=true distill_steps=64 teacher_every=32 max_steps=160 \
    batch_size=16 lr=2e-4 warmup_steps=2 eval_every=32 eval_batches=8 save_every=32 precision=fp32 threads=1 \
    out="$out" "$@"
