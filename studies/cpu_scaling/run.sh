#!/usr/bin/env bash
# The committed CPU scaling study: one iso-FLOP sweep of five variants, then its fits and plots.
# Re-running is safe: finished runs are skipped, interrupted ones resume from their checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m training.sweep \
  family=ar,mdlm,mdlm:loss=low_var,duo,esolm:loss=low_var \
  budgets=1e12,3e12,1e13 sizes=cpu-4xs,cpu-3xs,cpu-xxs,cpu-xs,cpu-s,cpu-m,cpu-l \
  batch_size=8 seq_len=128 lr=2e-3 min_steps=50 max_epochs=5 \
  eval_every=1000 eval_batches=38 log_every=50 save_every=250 \
  parallel=2 precision=fp32 out=studies/cpu_scaling/sweep "$@"
cp studies/cpu_scaling/sweep/results.csv studies/cpu_scaling/results.csv
python -m toolkit.scaling fit studies/cpu_scaling/results.csv --out studies/cpu_scaling \
  --bootstrap 1000 --approach3 --plots --compare mdlm_loss-low_var:mdlm
