"""A 300-instance slice of the robustness sweep (benchmarks/sweep_exact.py, seed 7): random
compatible problems (N = 3..6; qubits, qutrits, mixed; k-body, rings, random subsets; ranks 1,
2, 3, D/4, D/2, D; complex128 and complex64), each answered with a certified state that an
independent re-check accepts. The full sweep (10,000 instances) is in the README."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "sweep_exact.py"
_spec = importlib.util.spec_from_file_location("sweep_exact", _PATH)
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)

INSTANCES = sweep.instances(seed=7, count=300)


@pytest.mark.parametrize("index", range(0, 300, 50))
def test_sweep_slice(index):
    """50 instances per test (six tests), so that a failure names its block."""
    bad = []
    for i in range(index, index + 50):
        row = sweep.run_one(INSTANCES[i], time_limit=120.0)
        if row["outcome"] != "certified":
            bad.append((i, row["outcome"], row.get("message", "")))
    assert not bad, bad


def test_generator_covers_the_families():
    kinds = {(i["dims_kind"], i["dtype"]) for i in INSTANCES}
    assert {("qubits", "complex128"), ("qutrits", "complex128"), ("mixed", "complex128"),
            ("qubits", "complex64")} <= kinds
    assert {i["rank_kind"] for i in INSTANCES} == set(sweep.RANK_KINDS)
    assert {i["n"] for i in INSTANCES} == {3, 4, 5, 6}
    assert any(i["structure"] == "ring" for i in INSTANCES)
    assert any(i["structure"] == "random" for i in INSTANCES)
