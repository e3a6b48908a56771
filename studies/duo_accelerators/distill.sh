#!/usr/bin/env bash
# Distil the embedded Duo demo model (toolkit/assets/models/duo) with DCD: T=64, six rounds of 50
# steps (dt = 1/64 ... 32/64), teacher refreshed every round. ~5 CPU minutes at one thread.
# Usage: bash studies/duo_accelerators/distill.sh [OUT]
set -euo pipefail
out=${1:-runs/duo_accelerators/distilled}
python -m training.train init=duo distill=true distill_steps=64 teacher_every=50 max_steps=300 \
    batch_size=16 lr=3e-4 warmup_steps=20 eval_every=50 eval_batches=8 save_every=50 threads=1 out=$out
