"""Robustness sweep of the certifying solver: random compatible problems, every answer checked.

Each instance draws a structure and a target: N = 3..6 sites, all qubits, all qutrits or mixed
dimensions 2 and 3 (total dimension D <= --max-dim, 243 by default: the qutrit N = 6 case,
D = 729, is left out), the marginals all k-body subsets for a random k, a ring of neighbouring
pairs, or 2-5 random overlapping subsets (nested, sites left uncovered); the target
rho = rank_mixture_state(D, r) with r in {1, 2, 3, D/4, D/2, D}; the marginals in complex128, or
(one instance in five) rounded to complex64. Every instance is a compatible problem, solved by
``reconstruct(method=...)`` (default "exact", default settings plus --time-limit), and the
answer is re-checked independently (``state_report`` and ``MarginalProblem.marginal_deviation``
against the complex128 marginals, at the certification tolerances of the input precision).
Outcomes: "certified" (and re-checked), "false incompatible" (IncompatibleMarginalsError on a
compatible problem: must never happen), "not certified" (NotCertifiedError), "wrong" (a state
returned as certified that the re-check rejects: must never happen). ``certified_by`` says whose
state it is: the method's, or "check" where the method failed and ``reconstruct``'s
compatibility check found the certified state (the contract's rescue).

    python benchmarks/sweep_exact.py --seed 7 --count 10000

prints failures and slow instances as it goes, then a table by family and writes one CSV row
per instance (benchmarks/results/sweep_exact.csv). ``tests/test_sweep.py`` runs a 300-instance
slice of the same generator in the default test suite.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import statistics
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # BLAS threads as --threads (before numpy loads its BLAS)
    _threads = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--threads"),
                    "1")
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _threads)

import numpy as np

import qmarginal as qm
from qmarginal.solvers._api import TOLERANCES

FIELDS = ["index", "n", "dims_kind", "dims", "structure", "subsets", "rank_kind", "rank",
          "dtype", "seed", "time_s", "outcome", "iterations", "plan", "path", "rank_final",
          "max_marginal_deviation", "min_eigenvalue", "certified_by", "message"]
MAX_DIM = 243
RANK_KINDS = ("1", "2", "3", "D/4", "D/2", "D")


def _rank(kind: str, D: int) -> int:
    return max(1, {"1": 1, "2": 2, "3": 3, "D/4": D // 4, "D/2": D // 2, "D": D}[kind])


def draw(rng, max_dim: int = MAX_DIM) -> dict:
    """One random compatible instance: its description (see the module docstring)."""
    while True:
        n = int(rng.integers(3, 7))
        dims_kind = str(rng.choice(["qubits", "qutrits", "mixed"], p=[0.45, 0.2, 0.35]))
        if dims_kind == "qubits":
            dims = (2,) * n
        elif dims_kind == "qutrits":
            dims = (3,) * n
        else:
            dims = tuple(int(d) for d in rng.choice([2, 3], size=n))
            if len(set(dims)) == 1:
                continue
        if math.prod(dims) <= max_dim:
            break
    D = math.prod(dims)
    structure = str(rng.choice(["k-body", "ring", "random"], p=[0.5, 0.2, 0.3]))
    if structure == "k-body":
        k = int(rng.integers(1, n))
        subsets = list(itertools.combinations(range(n), k))
        structure = f"{k}-body"
    elif structure == "ring":
        subsets = sorted({tuple(sorted((i, (i + 1) % n))) for i in range(n)})
    else:
        chosen: set = set()
        target = int(rng.integers(2, 6))
        while len(chosen) < target:
            size = int(rng.integers(1, n))
            chosen.add(tuple(sorted(int(i) for i in rng.choice(n, size=size, replace=False))))
        subsets = sorted(chosen)
    rank_kind = str(rng.choice(RANK_KINDS))
    dtype = "complex64" if rng.random() < 0.2 else "complex128"
    return {"n": n, "dims_kind": dims_kind, "dims": dims, "structure": structure,
            "subsets": subsets, "rank_kind": rank_kind, "rank": _rank(rank_kind, D),
            "dtype": dtype, "seed": int(rng.integers(1_000_000_000))}


def problems(inst: dict):
    """(the problem as solved, the complex128 problem the answer is re-checked against)."""
    D = math.prod(inst["dims"])
    rho = qm.rank_mixture_state(D, inst["rank"], seed=inst["seed"])
    exact = qm.MarginalProblem.from_state(rho, dims=inst["dims"], subsets=inst["subsets"])
    if inst["dtype"] == "complex128":
        return exact, exact
    table = {J: s.astype(np.complex64) for J, s in exact.marginals.items()}
    return qm.MarginalProblem(table, inst["dims"]), exact


def run_one(inst: dict, method: str = "exact", time_limit: float | None = 120.0) -> dict:
    """Solve one instance and classify the answer (see the module docstring)."""
    problem, exact = problems(inst)
    eig_tol, marginal_tol = TOLERANCES[inst["dtype"]]
    row = {k: inst[k] for k in ("n", "dims_kind", "structure", "rank_kind", "rank", "dtype",
                                "seed")}
    row.update(dims="x".join(map(str, inst["dims"])),
               subsets=" ".join("".join(map(str, J)) for J in inst["subsets"]))
    options = {} if time_limit is None else {"time_limit": time_limit}
    t0 = time.perf_counter()
    try:
        rec = qm.reconstruct(problem, method, **options)
    except qm.IncompatibleMarginalsError as exc:
        row.update(time_s=time.perf_counter() - t0, outcome="false incompatible",
                   message=str(exc)[:200])
        return row
    except qm.NotCertifiedError as exc:
        rep = exc.reconstruction.report
        row.update(time_s=time.perf_counter() - t0, outcome="not certified",
                   message=exc.reason[:200], max_marginal_deviation=rep.max_marginal_deviation,
                   min_eigenvalue=rep.min_eigenvalue, plan=rep.info.get("plan"),
                   path=rep.info.get("path"))
        return row
    wall = time.perf_counter() - t0
    state = np.asarray(rec.state).astype(np.complex128)
    dev = float(np.max(exact.marginal_deviation(state)))
    lam = float(np.linalg.eigvalsh(0.5 * (state + state.conj().T))[0])
    ok = (bool(rec.report.certified) and lam >= -eig_tol and dev <= marginal_tol
          and abs(np.trace(state).real - 1) <= 10 * np.finfo(rec.state.dtype).eps * D_of(inst))
    info = rec.report.info
    row.update(time_s=wall, outcome="certified" if ok else "wrong",
               iterations=int(rec.report.iterations), plan=info.get("plan"),
               path=info.get("path"), rank_final=info.get("rank"),
               max_marginal_deviation=dev, min_eigenvalue=lam,
               # the method's own state, or the compatibility check's (reconstruct's rescue)
               certified_by="check" if "rescued" in info else method, message="")
    return row


def D_of(inst: dict) -> int:
    return math.prod(inst["dims"])


def instances(seed: int, count: int, max_dim: int = MAX_DIM) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [draw(rng, max_dim) for _ in range(count)]


def _table(rows: list[dict], key) -> list[str]:
    groups: dict = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    out = [f"| {'family':<28} | instances | certified | false incompatible | not certified | "
           f"wrong | median s | max s |", "|---|---|---|---|---|---|---|---|"]
    for name in sorted(groups):
        sel = groups[name]
        times = [r["time_s"] for r in sel]
        count = {o: sum(r["outcome"] == o for r in sel) for o in
                 ("certified", "false incompatible", "not certified", "wrong")}
        out.append(f"| {name:<28} | {len(sel)} | {count['certified']} | "
                   f"{count['false incompatible']} | {count['not certified']} | {count['wrong']} | "
                   f"{statistics.median(times):.3f} | {max(times):.2f} |")
    return out


def summary(rows: list[dict]) -> str:
    lines = ["By total dimension, structure and rank:", ""]
    lines += _table(rows, lambda r: f"N={r['n']} {r['dims_kind']}")
    lines += [""]
    lines += _table(rows, lambda r: r["structure"] if not r["structure"].endswith("-body")
                    else "k-body")
    lines += [""]
    lines += _table(rows, lambda r: f"rank {r['rank_kind']}")
    lines += [""]
    lines += _table(rows, lambda r: r["dtype"])
    lines += [""]
    lines += _table(rows, lambda r: "all")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=7, help="seed of the instance generator")
    p.add_argument("--count", type=int, default=300, help="number of instances")
    p.add_argument("--start", type=int, default=0, help="skip the first START instances")
    p.add_argument("--method", default="exact", help="certifying method to sweep")
    p.add_argument("--max-dim", type=int, default=MAX_DIM, help="largest total dimension D")
    p.add_argument("--time-limit", type=float, default=120.0, help="method time_limit (s)")
    p.add_argument("--slow", type=float, default=2.0, help="report instances slower than this")
    p.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    p.add_argument("--output", default="benchmarks/results/sweep_exact.csv")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    # warm-up: imports and first calls are not charged to the first instance
    qm.reconstruct(qm.MarginalProblem.from_state(qm.rank_mixture_state(64, 2, seed=0), k=3),
                   args.method)
    todo = instances(args.seed, args.start + args.count, args.max_dim)[args.start:]
    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".part")
    rows = []
    t_all = time.perf_counter()
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        for i, inst in enumerate(todo, start=args.start):
            row = run_one(inst, args.method, args.time_limit)
            row["index"] = i
            rows.append(row)
            w.writerow(row)
            fh.flush()
            if row["outcome"] != "certified" or row["time_s"] > args.slow:
                print(f"{row['outcome']} #{i} dims={row['dims']} subsets={row['subsets']} "
                      f"rank={row['rank']} {row['dtype']} seed={row['seed']} "
                      f"{row['time_s']:.2f}s plan={row.get('plan')} {row.get('message', '')}",
                      flush=True)
    tmp.replace(out_path)
    print()
    print(summary(rows))
    bad = sum(r["outcome"] != "certified" for r in rows)
    times = [r["time_s"] for r in rows]
    rescued = sum(r.get("certified_by") == "check" for r in rows)
    print(f"\n{len(rows)} instances in {time.perf_counter() - t_all:.0f} s: "
          f"{len(rows) - bad} certified ({rescued} by the compatibility check after the "
          f"method failed), {bad} not; time per instance median "
          f"{statistics.median(times):.3f} s, max {max(times):.2f} s; wrote {out_path}")
    return rows


if __name__ == "__main__":
    sys.exit(0 if all(r["outcome"] == "certified" for r in main()) else 1)
