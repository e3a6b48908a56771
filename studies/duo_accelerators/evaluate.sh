#!/usr/bin/env bash
# Few-step Gen PPL at matched entropy of the teacher (embedded duo) and a distilled student at 2, 4, 8 and 16
# steps, 3 seeds x 48 samples of 128 tokens, judge: the embedded AR model; fp32, one thread. The teacher is
# matched to 3.6 nats; the student is taken at T = 1 (it cannot reach 3.6 nats at 2 steps) and the teacher is
# matched to its entropy there. Appends to matched.csv (finished cells are skipped).
# Usage: evaluate.sh STUDENT_CHECKPOINT [LABEL]   (the teacher's row at LABEL's entropy: teacher_at_LABEL_entropy,
# teacher_at_student_entropy for the main student, full_schedule)
set -euo pipefail
here=$(dirname "$0"); student=${1:-runs/duo_accelerators/distilled/checkpoint}; label=${2:-full_schedule}
teacher_label=teacher_at_${label}_entropy; [ "$label" = full_schedule ] && teacher_label=teacher_at_student_entropy
PY=${PYTHON:-python}; [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
run() { OMP_NUM_THREADS=1 $PY "$here/matched.py" --steps 2,4,8,16 --seeds 3 --samples 48 --length 128 \
    --tolerance 0.01 --csv "$here/matched.csv" "$@"; }
run --model teacher=duo --target 3.6
run --model "$label=$student" --target t1
# LOWEST_T: the search's lower end for the teacher (a collapsed student's entropy needs a colder teacher)
run --model "$teacher_label=duo" --target "from:$label" --lowest-temperature "${LOWEST_T:-0.25}"
