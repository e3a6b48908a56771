#!/usr/bin/env bash
# The reasoning study's ladder at a larger size (the paper grid's 19M: 8 layers, d=384) on one GPU:
# the same tasks, outputs and resume as run.sh, four tasks at a time on the device, no compiling
# (each rung is a short process). Outputs go to studies/reasoning/work-gpu/ (results.* there too).
#   setsid nohup bash studies/reasoning/gpu.sh > studies/reasoning/work-gpu.log 2>&1 &
# Any study.py flag may follow (e.g. --budgets 500,1000 --families mdlm,duo; --device cpu with
# --pretrain model=cpu-4xs --pretrain max_steps=4 is the tests' tiny CPU run of this path).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON_SET=${PYTHON:-}; PYTHON=${PYTHON:-python}
if [ -z "${PYTHON_SET:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
exec "$PYTHON" studies/reasoning/study.py --profile gpu --work "${STUDY_WORK:-studies/reasoning/work-gpu}" "$@"
