#!/usr/bin/env bash
# Distributed `grasptpu tune` on a SLURM allocation: the chief (KerasTuner's oracle) on the first
# node, one worker per remaining task. Every node must see the project folder (its .venv) and the
# recording on a shared file system; results land in MODELS_DIR on the chief's node.
#
#   sbatch --nodes=3 --ntasks-per-node=2 --cpus-per-task=4 tools/slurm_tune.sh data/ZRec50.neo.mat object
#
# Task 0 is the chief (it trains nothing: give it a small share, or keep it on a login-class node);
# tasks 1.. are workers running --cpus-per-task TensorFlow ops side by side, each op on one thread.
# A worker that dies is dropped by the chief after WORKER_TIMEOUT seconds without a report (its
# trial retried once, then failed), so the search finishes its budget with the workers that remain.
# Every worker trains the chief's layer: LSTM=fused-bf16 (or fused, ...) chooses it; unset, the
# chief node's CPU decides (fused-bf16 where it multiplies bfloat16 natively), which matters when
# the chief runs on a different kind of node than the workers.
#SBATCH --job-name=grasptpu-tune
#SBATCH --output=grasptpu-tune-%j.log
set -euo pipefail

RECORDING=${1:?usage: sbatch tools/slurm_tune.sh RECORDING [TASK] [MAX_TRIALS] [EPOCHS]}
TASK=${2:-object}
MAX_TRIALS=${3:-20}
EPOCHS=${4:-30}
PORT=${PORT:-8470}
MODELS_DIR=${MODELS_DIR:-models}
WORKER_TIMEOUT=${WORKER_TIMEOUT:-3600}
SEED=${SEED:-0}
LSTM=${LSTM:-}
GRASPTPU=${GRASPTPU:-.venv/bin/grasptpu}

CHIEF_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
SEARCH=("$RECORDING" --task "$TASK" --max-trials "$MAX_TRIALS" --epochs "$EPOCHS" --seed "$SEED")

# One srun, one task per role: SLURM_PROCID 0 is the chief, the others are workers that wait for it.
srun --kill-on-bad-exit=0 bash -c '
  if [ "$SLURM_PROCID" -eq 0 ]; then
    exec '"$GRASPTPU"' tune '"${SEARCH[*]@Q}"' --models-dir '"$MODELS_DIR"' --workers 0 \
      --chief-address 0.0.0.0:'"$PORT"' --worker-timeout '"$WORKER_TIMEOUT"' '"${LSTM:+--lstm $LSTM}"'
  else
    exec '"$GRASPTPU"' tune-worker '"${SEARCH[*]@Q}"' --chief '"$CHIEF_HOST"':'"$PORT"' \
      --id "tuner$SLURM_PROCID" --threads "${SLURM_CPUS_PER_TASK:-1}" --wait-s 300
  fi'
