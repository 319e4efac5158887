#!/usr/bin/env bash
# Copy the best weights of the runs made by scripts/train_models.sh into the package
# (src/qmarginal/models/<run>.safetensors + .json), marking them as the default models.
set -euo pipefail
RUNS="${RUNS:-/work/runs}"
DEST="$(cd "$(dirname "$0")/.." && pwd)/src/qmarginal/models"
mkdir -p "$DEST"
for run in n3k2_clip n4k3_clip n5k4_clip n3k2_paper_model1 n3k2_paper_model2; do
  [ -f "$RUNS/$run/model.safetensors" ] || { echo "skip $run (not trained)"; continue; }
  cp "$RUNS/$run/model.safetensors" "$DEST/$run.safetensors"
  python - "$RUNS/$run/model.json" "$DEST/$run.json" "$RUNS/$run/log.csv" <<'PY'
import csv, json, sys
card = json.load(open(sys.argv[1]))
card["default"] = "_clip" in sys.argv[2]
card["weights"] = sys.argv[2].rsplit("/", 1)[-1].replace(".json", ".safetensors")
card["learning_curve"] = [
    {k: row[k] for k in ("epoch", "samples_seen", "wall_time", "val_success", "val_fidelity")}
    for row in csv.DictReader(open(sys.argv[3]))]
json.dump(card, open(sys.argv[2], "w"), indent=2)
PY
  echo "shipped $run"
done
python "$(dirname "$0")/models_readme.py"
