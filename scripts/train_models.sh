#!/usr/bin/env bash
# Train the shipped models with the transfer-learning chain of Section IV C (N = 3 -> 4 -> 5),
# one CPU thread each. Resumable: rerun the same script and every run continues from its last
# checkpoint (`--resume`); a finished run is left as it is. Outputs go to $RUNS (default
# /work/runs, outside the repository); scripts/ship_models.sh copies the weights into the package.
set -euo pipefail
RUNS="${RUNS:-/work/runs}"
mkdir -p "$RUNS"
common=(--model cdae_clip -S 4 --seed-state maximally_mixed --lr 1e-3 --threads 1 --no-progress)

run() {  # run NAME ARGS... : start, or resume when a checkpoint exists
  local name=$1; shift
  local out="$RUNS/$name"
  if [ -f "$out/last.pt" ]; then
    qmarginal train "$@" --output-dir "$out" --resume
  else
    qmarginal train "$@" --output-dir "$out"
  fi
}

run n3k2_clip -N 3 -k 2 "${common[@]}" --epochs 20 --samples-per-epoch 10000 --seed 0
run n4k3_clip -N 4 -k 3 "${common[@]}" --epochs 10 --samples-per-epoch 10000 --seed 1 \
    --init-from "$RUNS/n3k2_clip/model.safetensors" --freeze none
run n5k4_clip -N 5 -k 4 "${common[@]}" --epochs 6 --samples-per-epoch 5000 --seed 2 \
    --init-from "$RUNS/n4k3_clip/model.safetensors" --freeze none --val-per-rank 20

# The paper's own configuration for Fig. 2 (model1 vs model2: same data, same initial weights;
# the paper trains S = 10 for 10^8 samples, we train S = 4 for 1.5 10^5 on one CPU thread).
paper=(--model cdae -S 4 --seed-state hilbert_schmidt --lr 1e-4 --threads 1 --no-progress
       --epochs 15 --samples-per-epoch 10000 --seed 0)
run n3k2_paper_model1 -N 3 -k 2 "${paper[@]}" --loss model1
run n3k2_paper_model2 -N 3 -k 2 "${paper[@]}" --loss model2
