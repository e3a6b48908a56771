#!/usr/bin/env bash
# What the Duo paper's set-up suggests when the student does not win: each variant of the full schedule
# (distill.sh) distilled and then judged like the main student (evaluate.sh: the student at T = 1, the
# teacher matched to its entropy at 2, 4, 8 and 16 steps, 3 seeds). fp32, one thread; restartable
# (finished distillations and finished cells are skipped). Run from the repository root:
#   setsid nohup bash studies/duo_accelerators/variants.sh > runs/duo_accel/variants.log 2>&1 &
#   more_rounds:   7 rounds instead of 5 (the gap doubles up to 64/64 = the whole interval)
#   finer_teacher: T = 128, the teacher's step halved in every round
#   ema_teacher:   each round's teacher is the student's EMA (decay 0.7: the repo's 0.999 horizon, 10% of a
#                  round, scaled to 32-step rounds) instead of the student itself
set -euo pipefail
here=$(dirname "$0"); root=${ROOT:-runs/duo_accel}
# name, override, the lowest temperature the teacher is searched at (the 7-round student's entropy is
# below what T >= 0.25 gives the teacher)
VARIANTS=("more_rounds max_steps=224 0.02" "finer_teacher distill_steps=128 0.25" "ema_teacher teacher_ema=0.7 0.25")
for line in "${VARIANTS[@]}"; do
  read -r name overrides _ <<< "$line"
  echo "[$(date +%T)] distil $name ($overrides)"
  # shellcheck disable=SC2086
  [ -f "$root/$name/DONE" ] || { bash "$here/distill.sh" "$root/$name" $overrides && touch "$root/$name/DONE"; }
done
for line in "${VARIANTS[@]}"; do
  read -r name _ lowest <<< "$line"
  echo "[$(date +%T)] judge $name"
  LOWEST_T=$lowest bash "$here/evaluate.sh" "$root/$name/checkpoint" "$name"
done
echo "[$(date +%T)] variants done"
