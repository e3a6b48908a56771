#!/bin/bash
# SLURM array for one iso-FLOP sweep, written by training.sweep: task i runs line i+1 of
# commands.txt (an ordinary training.train invocation with resume=true, so a requeued or
# repeated task continues from its last checkpoint). Add your site's partition, account and
# time limit below. Collect results afterwards by re-running the sweep with launcher=print.
#SBATCH --job-name={{NAME}}
#SBATCH --array={{ARRAY}}
#SBATCH --output={{LOGS}}/%A_%a.log
#SBATCH --ntasks=1
{{GPUS}}
#SBATCH --requeue
set -euo pipefail
cd {{WORKDIR}}
CMD=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {{COMMANDS}})
echo "task ${SLURM_ARRAY_TASK_ID}: ${CMD}"
eval "${CMD}"
