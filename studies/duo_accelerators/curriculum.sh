#!/usr/bin/env bash
# Curriculum vs none: the demo Duo recipe, same seed, shortened to STEPS (default 400) with the
# curriculum over the repo's share of training (relaxed until 20%, temperature annealed from 10%).
# Usage: bash studies/duo_accelerators/curriculum.sh [OUT_ROOT] [STEPS]
set -euo pipefail
root=${1:-runs/duo_accelerators}; steps=${2:-400}
common=(config=training/recipes/demo-duo.yaml max_steps=$steps eval_every=50 threads=1)
python -m training.train "${common[@]}" out=$root/baseline &
python -m training.train "${common[@]}" out=$root/curriculum curriculum=true \
    curriculum_start=$((steps / 10)) curriculum_end=$((steps / 5)) &
wait
