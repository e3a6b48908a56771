#!/usr/bin/env bash
# Gen PPL (judge: the embedded AR model) and unigram entropy of the teacher (embedded duo) and the
# distilled student, 32 samples of 128 tokens each, same seed. Usage: evaluate.sh STUDENT_CHECKPOINT
set -euo pipefail
here=$(dirname "$0"); student=${1:-runs/duo_accelerators/distilled}
common=(--metrics gen_ppl,entropy --num-samples 32 --seed 0 --threads 1 --json)
python -m toolkit.evaluate duo --steps 1,2,4,8,16,32,64 "${common[@]}" > "$here/genppl_teacher.json"
python -m toolkit.evaluate "$student" --steps 1,2,4,8,16 "${common[@]}" > "$here/genppl_student.json"
