#!/usr/bin/env bash
# The committed reasoning study: fine-tune the four embedded models on the toy arithmetic task
# (equal steps x batch x length, so equal training FLOPs by the toolkit's count), then score
# 500 held-out problems at several sampling step counts. Safe to re-run: every phase resumes.
# Progress goes to stdout (run it as: setsid nohup bash studies/reasoning/run.sh > studies/reasoning/progress.log 2>&1 &).
# `bash studies/reasoning/run.sh --summarise` only rebuilds results.csv/results.md/accuracy.png and the README table.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON_SET=${PYTHON:-}; PYTHON=${PYTHON:-python}
if [ -z "${PYTHON_SET:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
exec "$PYTHON" studies/reasoning/study.py "$@"
