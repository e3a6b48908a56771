#!/usr/bin/env bash
# Re-train and re-evaluate one committed point of the reasoning study with its seeds, and print
# committed vs re-run with the verdict (exit 0: the re-run's seed mean is inside the committed seed
# range; 2: outside). Usage: bash studies/reasoning/reproduce.sh demo-mdlm-2000 [--work DIR]
# A demo point costs its seeds' fine-tuning and evaluation again (about 3 x 10 minutes at 2000 steps
# on one loaded CPU thread). --results DIR compares against another study's ladder.csv/study.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON_SET=${PYTHON:-}; PYTHON=${PYTHON:-python}
if [ -z "${PYTHON_SET:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$PYTHON" studies/reasoning/reproduce.py "$@"
