#!/usr/bin/env bash
# Regenerate the evaluation results and the committed figures (docs/figures/) from the shipped
# models, with one command:  bash scripts/reproduce.sh
#
# Environment (all optional):
#   SAMPLES     targets per rank (default 1000, as the paper)
#   CASES       cases to evaluate (default: the N = 3..5 cases of Figures 2-4 and the published CSV)
#   METHODS     methods (default: every cheap method; exact/maxent/sdp are added with SLOW=1)
#   SLOW=1      also evaluate exact, maxent and sdp (each under TIME_LIMIT seconds per case and rank)
#   TIME_LIMIT  seconds per method, case and rank (default 600)
#   MODEL2      model2 weights (.safetensors with its .json) for the model2 rows of Figure 2
#   MODELS      folder of model1 weights (default: the shipped qmarginal/models)
#   THREADS     torch CPU threads (default 2)
#   OUT         results folder (default docs/results), FIGURES (default docs/figures)
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLES="${SAMPLES:-1000}"
CASES="${CASES:-N3k1 N3k2 N4k2 N4k3 N5k2 N5k3 N5k4}"  # N5k1 (all 32 ranks) takes long; add it by hand
METHODS="${METHODS:-cdae cdae+mio mio_random mio_mixed mio_clip random_guess}"
TIME_LIMIT="${TIME_LIMIT:-600}"
THREADS="${THREADS:-2}"
OUT="${OUT:-docs/results}"
FIGURES="${FIGURES:-docs/figures}"
mkdir -p "$OUT" "$FIGURES"

extra=()
[ -n "${MODELS:-}" ] && extra+=(--models "$MODELS")
if [ -n "${MODEL2:-}" ]; then
  extra+=(--model2 "$MODEL2")
  METHODS="$METHODS model2"
fi
[ "${SLOW:-0}" = 1 ] && METHODS="$METHODS exact maxent sdp"

# shellcheck disable=SC2086
qmarginal evaluate --cases $CASES --samples "$SAMPLES" --methods $METHODS \
    --time-limit "$TIME_LIMIT" --threads "$THREADS" "${extra[@]}" -o "$OUT/results.csv"
qmarginal compare "$OUT/results.csv" -o "$OUT/comparison.csv" | tee "$OUT/comparison.txt"
bench=()
[ -f benchmarks/results/bench_solvers.csv ] && bench=(--bench benchmarks/results/bench_solvers.csv)
qmarginal figures --results "$OUT/results.csv" "${bench[@]}" --output "$FIGURES"
