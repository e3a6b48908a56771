#!/usr/bin/env bash
# Reproduce the four embedded demo checkpoints (toolkit/assets/models/{ar,mdlm,duo,esolm}).
#
#   bash training/recipes/train_demo_models.sh          # runs in ./runs/demo-*, ~25 min on 2 idle cores, far longer on a busy machine
#
# Two trainings at a time, one thread each (the recipes set threads=1). Re-running resumes
# unfinished runs. Then the final checkpoints are copied without their optimizer state into
# the package and the model card (gui/MODEL_CARD.md) is recomputed from them.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs}
train() { python -m training.train config="training/recipes/demo-$1.yaml" out="$OUT/demo-$1" resume=true; }

( train duo && train mdlm ) & slow=$!
( train ar && train esolm ) & rest=$!
wait "$slow"
wait "$rest"

python -m training.recipes.demo_models export "$OUT"
python -m training.recipes.model_card --out gui/MODEL_CARD.md
