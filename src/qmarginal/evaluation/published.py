"""The published results of the paper (``reference/`` beside this module, or a given folder)."""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["default_reference_dir", "load_fidelity", "load_runtimes", "read_rows"]


def default_reference_dir() -> Path:
    """The copy of the published CSVs shipped with the package."""
    return Path(__file__).resolve().parent / "reference"


def _num(v: str):
    if v is None or v.strip() == "":
        return None
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


def read_rows(path) -> list[dict]:
    """Rows of a CSV file with numbers parsed (empty cells become None)."""
    with open(path, newline="") as f:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]


def load_fidelity(directory=None) -> list[dict]:
    """``published_fidelity.csv``: case, N, k, method, rank, fidelity_mean, fidelity_sd, samples,
    success_rate_percent (None where the paper gives no value)."""
    return read_rows(Path(directory or default_reference_dir()) / "published_fidelity.csv")


def load_runtimes(directory=None) -> list[dict]:
    """``published_runtimes.csv``: case, method, instances, median_s, min_s, max_s."""
    return read_rows(Path(directory or default_reference_dir()) / "published_runtimes.csv")
