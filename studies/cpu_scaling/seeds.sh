#!/usr/bin/env bash
# Training seeds for the points the study's claims rest on: every variant's best size per budget
# (from the seed-0 sweep), re-trained with seeds 1 and 2 (data order, initialisation and noise draws
# all follow `seed`). Pinned: precision=fp32, threads=1, one process (parallel=1). Restartable like
# run.sh: finished runs are skipped, interrupted ones resume. Order: the 1e13 points first (the
# orderings and the low-variance saving at the largest budget), then 3e12, then 1e12.
# Run it as: setsid nohup bash studies/cpu_scaling/seeds.sh > studies/cpu_scaling/seeds/progress.log 2>&1 &
# or, on two cores: SEEDS=1 ... > seeds/progress1.log & and SEEDS=2 ... > seeds/progress2.log &
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}; [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
SEEDS=${SEEDS:-1 2}
COMMON="batch_size=8 seq_len=128 lr=2e-3 min_steps=50 max_epochs=5 eval_every=1000 eval_batches=38
        log_every=50 save_every=250 parallel=1 threads=1 precision=fp32"
# budget  variant:size pairs (the best size of each variant at that budget in the seed-0 results.csv),
# the variants whose order is closest first (the masked variants, then Duo, then AR, which leads by 0.75 nat)
POINTS=(
  "1e13 mdlm:cpu-xs mdlm@loss=low_var:cpu-xs esolm@loss=low_var:cpu-xs duo:cpu-xs ar:cpu-xs"
  "3e12 mdlm:cpu-3xs mdlm@loss=low_var:cpu-4xs esolm@loss=low_var:cpu-4xs duo:cpu-xxs ar:cpu-xxs"
  "1e12 mdlm:cpu-3xs mdlm@loss=low_var:cpu-4xs esolm@loss=low_var:cpu-4xs duo:cpu-xxs ar:cpu-3xs"
)
# SEEDS="1" and SEEDS="2" may run as two processes at once (one core each): their runs do not overlap.
# A point already in results.csv (collected from an earlier checkout's seeds/) is not trained again.
collected() {   # variant size budget seed -> 0 when results.csv holds that finished run
  awk -F, -v v="$1" -v s="$2" -v b="$3" -v seed="$4" 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
    $c["variant"] == v && $c["size"] == s && $c["budget"] + 0 == b + 0 && $c["seed"] == seed &&
    $c["status"] == "finished" { found = 1 } END { exit !found }' studies/cpu_scaling/results.csv
}
for line in "${POINTS[@]}"; do
  read -r budget rest <<< "$line"
  for seed in $SEEDS; do
    for pair in $rest; do
      variant=${pair%%:cpu*}; variant=${variant//@/:}; sz=${pair##*:}
      name=${variant//:/_}; name=${name//=/-}
      if collected "$name" "$sz" "$budget" "$seed"; then echo "[$(date +%T)] seed $seed  $variant  $sz  $budget: in results.csv"; continue; fi
      echo "[$(date +%T)] seed $seed  $variant  $sz  $budget"
      # shellcheck disable=SC2086
      $PY -m training.sweep family="$variant" budgets="$budget" sizes="$sz" seed="$seed" $COMMON \
        out=studies/cpu_scaling/seeds/seed$seed
    done
  done
done
echo "[$(date +%T)] all seeds done"
