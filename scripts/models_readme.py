"""Write src/qmarginal/models/README.md from the shipped model cards (run by ship_models.sh)."""

import json
from pathlib import Path

DEST = Path(__file__).resolve().parent.parent / "src" / "qmarginal" / "models"


def main() -> None:
    lines = [
        "# Shipped models",
        "",
        "Trained on this project's 2-core CPU machine by `scripts/train_models.sh` (the exact",
        "commands, resumable) and copied here by `scripts/ship_models.sh`. Each `.safetensors` file",
        "has a JSON card beside it: architecture, N, k, S, loss, data settings, samples seen,",
        "validation metrics (100 held-out samples per rank unless stated), software versions and",
        "the learning curve. `reconstruct(method=\"cdae\")` picks the card marked `default` for the",
        "problem's N (a k = N-1 model also serves smaller k, as in the paper).",
        "",
        "| model | N | k | variant | S | init from | samples | wall time (s) | val success | val F (all) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    curves = []
    for js in sorted(DEST.glob("*.json")):
        card = json.loads(js.read_text())
        tr, val = card.get("training", {}), card.get("validation", {})
        init = Path(tr["init_from"]).parent.name if tr.get("init_from") else "-"
        lines.append(
            f"| {js.stem}{' (default)' if card.get('default') else ''} | {card['n_qubits']} | "
            f"{card['k']} | {card.get('variant')} ({card['loss']['kind']}) | {card.get('scale')} | "
            f"{init} | {card.get('samples_seen')} | {tr.get('wall_time_s')} | "
            f"{val.get('success', float('nan')):.3f} | {val.get('fidelity', float('nan')):.4f} |")
        pts = card.get("learning_curve", [])
        if pts:
            curves.append(f"- {js.stem}: " + ", ".join(
                f"{int(float(p['samples_seen']))}: {float(p['val_fidelity']):.4f}" for p in pts))
    lines += ["", "Learning curves (samples seen: validation F over all outputs; epoch 0 is the",
              "starting point, for cdae_clip the clipped MIO output, for transfer runs the",
              "smaller model):", ""] + curves + [
        "", "Continue any of them with `RUNS=/work/runs scripts/train_models.sh` after raising",
        "`--epochs` there (runs resume from their last checkpoint), then `scripts/ship_models.sh`.", ""]
    (DEST / "README.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
