"""Scale: pure and low-rank targets far beyond a dense D x D matrix (the matrix-free path).

Each row: a random target rho = V0 V0^dagger / tr (V0 of D x r, Gaussian, seed per row), its
marginals (all k-body subsets) computed from V0 by ``qmarginal.factored.factor_marginal``, the
problem built without re-validation (the marginals are exact by construction), then
``qmarginal.reconstruct(problem)`` with default settings (its memory plan picks the path:
``--path`` forces one). Measured per row, one thread, in one process:

* time_s: the ``reconstruct`` call (the report included);
* peak_mib: the peak of memory allocated during the call, traced by ``tracemalloc`` (numpy's
  allocations; the problem's own marginals, allocated before, are not counted);
* path, rank, iterations, certified, max_marginal_deviation (re-measured from the factor by
  ``factor_marginal``), and the D x D matrix's size for comparison.

    python benchmarks/bench_scale.py                       # N = 10..18, k = 2; k = N-1 to 12
    python benchmarks/bench_scale.py --n 20 --k 2 --append # the 20-qubit row

Writes benchmarks/results/bench_scale.csv (atomically; --append adds rows).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
import time
import tracemalloc
from pathlib import Path

if __name__ == "__main__":
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import numpy as np

FIELDS = ["n", "k", "target_rank", "time_s", "peak_mib", "dense_matrix_gib", "path", "rank",
          "iterations", "certified", "max_marginal_deviation", "seed"]

#: (N, k, rank) rows of the default run
DEFAULT_ROWS = ([(n, 2, 1) for n in (10, 12, 14, 16, 18)] + [(n, 2, 2) for n in (10, 12, 14)]
                + [(n, n - 1, 1) for n in (10, 11, 12)] + [(10, 9, 2), (12, 11, 2)])


def problem_for(n: int, k: int, r: int, seed: int):
    import qmarginal as qm
    from qmarginal.factored import factor_marginal

    rng = np.random.default_rng(seed)
    D = 2 ** n
    v = rng.standard_normal((D, r)) + 1j * rng.standard_normal((D, r))
    v /= np.linalg.norm(v)
    dims = (2,) * n
    table = {J: factor_marginal(v, J, dims) for J in itertools.combinations(range(n), k)}
    return qm.MarginalProblem(table, dims, validate=False)


def run_row(n: int, k: int, r: int, seed: int, path: str = "auto") -> dict:
    import qmarginal as qm

    p = problem_for(n, k, r, seed)
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    try:
        rec = qm.reconstruct(p, path=path)
        err = ""
    except qm.QMarginalError as exc:
        rec, err = getattr(exc, "reconstruction", None), f"{type(exc).__name__}: {exc}"
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    rep = rec.report if rec is not None else None
    return {"n": n, "k": k, "target_rank": r, "time_s": dt, "peak_mib": peak / 2**20,
            "dense_matrix_gib": 16 * 4.0 ** n / 2**30,
            "path": (rep.info.get("path", "") if rep else "") or err[:80],
            "rank": rep.info.get("rank", "") if rep else "",
            "iterations": rep.iterations if rep else "",
            "certified": bool(rep.certified) if rep else False,
            "max_marginal_deviation": rep.max_marginal_deviation if rep else float("nan"),
            "seed": seed}


def table(rows: list[dict]) -> str:
    head = (f"{'N':>3} {'k':>3} {'r':>3} {'time s':>9} {'peak MiB':>9} {'rho GiB':>10} "
            f"{'path':>12} {'rank':>5} {'iters':>6} {'cert':>5} {'deviation':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['n']:>3} {r['k']:>3} {r['target_rank']:>3} {r['time_s']:>9.3g} "
                     f"{r['peak_mib']:>9.4g} {r['dense_matrix_gib']:>10.4g} {r['path']:>12} "
                     f"{r['rank']!s:>5} {r['iterations']!s:>6} {r['certified']!s:>5} "
                     f"{r['max_marginal_deviation']:>10.2e}")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="*", help="numbers of qubits (with --k, --rank)")
    ap.add_argument("--k", type=int, default=2, help="marginal size for --n (-1: N-1)")
    ap.add_argument("--rank", type=int, default=1, help="target rank for --n")
    ap.add_argument("--path", default="auto", help="the exact solver's path (auto: the plan)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--output", default="benchmarks/results/bench_scale.csv")
    ap.add_argument("--append", action="store_true")
    args = ap.parse_args(argv)
    specs = ([(n, n - 1 if args.k < 0 else args.k, args.rank) for n in args.n] if args.n
             else DEFAULT_ROWS)
    out = Path(args.output)
    old = []
    if args.append and out.exists():
        with out.open(newline="") as fh:
            old = list(csv.DictReader(fh))
    # warm-up: imports and first calls (dense and matrix-free) are not charged to a row
    run_row(4, 2, 1, 0)
    run_row(10, 2, 1, 0)
    rows = []
    for i, (n, k, r) in enumerate(specs):
        row = run_row(n, k, r, args.seed + i, args.path)
        rows.append(row)
        print(table([row]).splitlines()[-1], flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".part")
        with tmp.open("w", newline="") as fh:  # every row on disk as soon as it is measured
            w = csv.DictWriter(fh, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(old + rows)
        tmp.replace(out)
    print()
    print(table(rows))
    print(f"\nwrote {out}")
    return rows


if __name__ == "__main__":
    sys.exit(0 if all(r["certified"] for r in main()) else 1)
