#!/usr/bin/env bash
# Few-step Gen PPL at matched entropy (3.6 nats) of the teacher (embedded duo) and a distilled student, at
# 2, 4, 8 and 16 steps, 3 seeds x 48 samples of 128 tokens, judge: the embedded AR model; fp32, one thread.
# Appends to matched.csv (resumes: finished cells are skipped). Usage: evaluate.sh STUDENT_CHECKPOINT [LABEL]
set -euo pipefail
here=$(dirname "$0"); student=${1:-runs/duo_accelerators/distilled/checkpoint}; label=${2:-full_schedule}
OMP_NUM_THREADS=1 python "$here/matched.py" --model teacher=duo --model "$label=$student" --steps 2,4,8,16 \
    --seeds 3 --samples 48 --length 128 --target 3.6 --tolerance 0.01 --csv "$here/matched.csv"
