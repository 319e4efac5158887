"""Dense rows: the exact solver against a plain reference solver, side by side, one thread.

The reference (``reference_solve``, ~50 lines, written for this benchmark and sharing no code
with qmarginal's solver): the MIO by numpy einsum (the composition of the single-marginal
projections Q_J, exact because they commute), then scipy's L-BFGS-B on

    f(Y) = ||(X0 + P_T(Y))_-||_F^2 / 2,   grad f = P_T(X_-),

over Hermitian Y (real-parametrised), X0 = MIO(1/D) and P_T the projection onto matrices with
zero partial traces; eigendecompositions by ``scipy.linalg.eigh(driver="evr")``. It stops when
lambda_min(X) >= -0.1 eig_tol, and its answer is certified by the same ``qmarginal.report``
measurement as the exact solver's (rows say whether it passed).

Per row: N, k, rank (1, 2, D/2, D), a target rank_mixture_state(2^N, r, seed), both solvers on
the same problem in the same process, the fastest of ``--repeats`` runs each (caches cleared),
reference time / exact time, and the peak RSS increase of each (``ru_maxrss`` is a high-water
mark: the rows run reference first, so the exact solver's figure is only an increase beyond
the reference's peak, 0 when below; ``--order exact-first`` swaps).

    python benchmarks/bench_dense.py --n 8 9 10 --ranks 1 2 half full

Writes benchmarks/results/bench_dense.csv (atomically; ``--append`` adds rows).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import numpy as np

FIELDS = ["n", "k", "rank_label", "rank", "seed", "exact_s", "reference_s", "ratio",
          "exact_path", "exact_certified", "reference_certified", "reference_iterations",
          "exact_peak_mib", "reference_peak_mib"]


def _ptrace(x, J, dims):
    """tr_{J^c} x by einsum on the site tensor (J sorted)."""
    n = len(dims)
    t = x.reshape(dims + dims)
    letters = "abcdefghijklmnopqrstuvwxyz"
    rows = list(letters[:n])
    cols = [rows[i] if i not in J else letters[n + i].upper() for i in range(n)]
    out = "".join(rows[i] for i in J) + "".join(cols[i] for i in J)
    m = np.einsum("".join(rows) + "".join(cols) + "->" + out, t)
    dJ = math.prod(dims[i] for i in J)
    return m.reshape(dJ, dJ)


def _embed(s, J, dims):
    """s (x) 1_{J^c} / d_{J^c} in the site order (einsum outer product with the identity)."""
    n = len(dims)
    rest = [i for i in range(n) if i not in J]
    D = math.prod(dims)
    dc = D // s.shape[0]
    full = np.kron(s, np.eye(dc)) / dc  # sites J first, then the rest
    order = list(J) + rest
    perm = np.argsort(order)
    t = full.reshape([dims[i] for i in order] * 2)
    return t.transpose(list(perm) + [n + p for p in perm]).reshape(D, D)


def reference_solve(sigmas: dict, dims: tuple, eig_tol: float, maxiter: int = 20000):
    from scipy.linalg import eigh
    from scipy.optimize import minimize

    D = math.prod(dims)

    def project_T(y):  # the direction space: compose y - tr_{J^c}(y) (x) 1 / d_{J^c}
        for J in sigmas:
            y = y - _embed(_ptrace(y, J, dims), J, dims)
        return y

    x0 = np.eye(D, dtype=complex) / D
    for J, s in sigmas.items():  # the MIO: Q_J(x) = x + (sigma_J - tr_{J^c} x) (x) 1 / d_{J^c}
        x0 = x0 + _embed(s - _ptrace(x0, J, dims), J, dims)
    stop = {"done": False}

    def unpack(z):
        m = z.reshape(2, D, D)
        y = m[0] + 1j * m[1]
        return 0.5 * (y + y.conj().T)

    def fun(z):
        x = x0 + project_T(unpack(z))
        w, v = eigh(x, driver="evr")
        neg = np.minimum(w, 0)
        if w[0] >= -0.1 * eig_tol:
            stop["done"] = True
            stop["x"] = x
        g = project_T((v * neg) @ v.conj().T)
        return 0.5 * float(neg @ neg), np.concatenate([g.real.ravel(), g.imag.ravel()])

    def callback(_):
        if stop["done"]:
            raise StopIteration

    res = minimize(fun, np.zeros(2 * D * D), jac=True, method="L-BFGS-B", callback=callback,
                   options={"maxiter": maxiter, "ftol": 0.0, "gtol": 0.0, "maxcor": 10})
    x = stop.get("x", x0 + project_T(unpack(res.x)))
    return x / np.trace(x).real, int(res.nit)


def _peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_row(n: int, k: int, rank_label: str, seed: int, repeats: int, order: str) -> dict:
    import qmarginal as qm
    from qmarginal.report import measure
    from qmarginal.solvers import exact

    D = 2 ** n
    r = {"half": D // 2, "full": D}.get(rank_label) or int(rank_label)
    p = qm.MarginalProblem.from_state(qm.rank_mixture_state(D, r, seed=seed), k=k)
    sig = {J: np.asarray(s) for J, s in p.marginals.items()}
    row = {"n": n, "k": k, "rank_label": rank_label, "rank": r, "seed": seed}

    def run_exact():
        best = math.inf
        for _ in range(repeats):
            exact.clear_cache()
            t = time.perf_counter()
            rec = qm.reconstruct(p, strict=False, check=False)
            best = min(best, time.perf_counter() - t)
        row.update(exact_s=best, exact_path=rec.report.info.get("path", ""),
                   exact_certified=bool(rec.report.certified))

    def run_reference():
        best = math.inf
        for _ in range(repeats):
            t = time.perf_counter()
            x, its = reference_solve(sig, p.dims, 1e-10)
            best = min(best, time.perf_counter() - t)
        _, rep = measure(p, x, eig_tol=1e-10, marginal_tol=1e-9)
        row.update(reference_s=best, reference_iterations=its,
                   reference_certified=bool(rep.certified))

    for name, fn in ((("reference", run_reference), ("exact", run_exact)) if order ==
                     "reference-first" else (("exact", run_exact), ("reference", run_reference))):
        before = _peak_mib()
        fn()
        row[f"{name}_peak_mib"] = max(0.0, _peak_mib() - before)
    row["ratio"] = row["reference_s"] / row["exact_s"]
    return row


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[8, 9, 10])
    ap.add_argument("--k", default="2,n-1", help="marginal sizes: comma list of ints or n-1")
    ap.add_argument("--ranks", nargs="+", default=["1", "2", "half", "full"])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--order", choices=["reference-first", "exact-first"],
                    default="reference-first")
    ap.add_argument("--output", default="benchmarks/results/bench_dense.csv")
    ap.add_argument("--append", action="store_true")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    out = Path(args.output)
    old = []
    if args.append and out.exists():
        with out.open(newline="") as fh:
            old = list(csv.DictReader(fh))
    run_row(4, 3, "2", 0, 1, args.order)  # warm-up: imports and first calls
    rows = []
    print(f"{'N':>3} {'k':>3} {'rank':>5} {'exact s':>9} {'ref s':>9} {'ref/exact':>9} "
          f"{'exact path':>24} {'cert':>10} {'peak MiB e/r':>14}")
    for n in args.n:
        ks = sorted({n - 1 if s.strip() == "n-1" else int(s) for s in args.k.split(",")})
        for k in ks:
            for i, rl in enumerate(args.ranks):
                row = run_row(n, k, rl, args.seed + i, args.repeats, args.order)
                rows.append(row)
                print(f"{n:>3} {k:>3} {rl:>5} {row['exact_s']:>9.3g} {row['reference_s']:>9.3g} "
                      f"{row['ratio']:>9.3g} {row['exact_path']:>24} "
                      f"{row['exact_certified']!s:>4}/{row['reference_certified']!s:<5} "
                      f"{row['exact_peak_mib']:>6.0f}/{row['reference_peak_mib']:<6.0f}",
                      flush=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_suffix(out.suffix + ".part")
                with tmp.open("w", newline="") as fh:
                    w = csv.DictWriter(fh, fieldnames=FIELDS)
                    w.writeheader()
                    w.writerows(old + rows)
                tmp.replace(out)
    print(f"\nwrote {out}")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
