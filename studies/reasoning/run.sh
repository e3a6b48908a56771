#!/usr/bin/env bash
# The committed reasoning study (CPU): every family at two sizes fine-tuned on the toy arithmetic task
# along a ladder of step budgets, each rung scored on 300 held-out problems with each supported
# strategy at 8 and 32 steps. Safe to re-run: every task resumes. A few CPU hours on two cores.
# Run it as: setsid nohup bash studies/reasoning/run.sh > studies/reasoning/work/progress.log 2>&1 &
# `bash studies/reasoning/run.sh --summarise` only rebuilds results.*, accuracy.png and the README tables.
# Continue families still rising: `bash studies/reasoning/run.sh --families mdlm,duo --sizes demo --budgets 12000,16000`
# (their runs resume; work/settings.json records each invocation and refuses a changed recipe).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON_SET=${PYTHON:-}; PYTHON=${PYTHON:-python}
if [ -z "${PYTHON_SET:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
exec "$PYTHON" studies/reasoning/study.py "$@"
