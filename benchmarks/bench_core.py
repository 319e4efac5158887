"""Benchmark of the numerical core: all (N-1)-body marginals and one full MIO composition
(k = N-1), qmarginal's strided kernels against the dense Kronecker / swap-gate construction that
the paper's code uses (one sample at a time), on one core.

    python benchmarks/bench_core.py                 # N = 3..12, writes benchmarks/results/bench_core.csv
    python benchmarks/bench_core.py --max-n 8 --quick

Times are medians over repeats, per call; "per instance" divides a batched call by its batch.
The baseline is written here only (never used by the library): partial traces by sums of
(1 (x) <i| (x) 1) X (1 (x) |i> (x) 1) over one traced site at a time, and the embedding by
sigma (x) 1 moved into place with dense SWAP gates G X G, as in the paper's public code.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import csv  # noqa: E402
import itertools  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import qmarginal as qm  # noqa: E402

# ----------------------------------------------------------------------------- the baseline


def _bra_trace_one(x, d, site, n):
    """tr over one site by explicit Kronecker bras (1_left (x) <i| (x) 1_right)."""
    left, right = np.eye(d**site), np.eye(d ** (n - site - 1))
    out = 0
    for i in range(d):
        e = np.zeros((1, d))
        e[0, i] = 1
        bra = np.kron(left, np.kron(e, right))
        out = out + bra @ x @ bra.T
    return out


def kron_partial_trace(x, keep, d, n):
    traced = [s for s in range(n) if s not in keep]
    for removed, s in enumerate(sorted(traced)):
        x = _bra_trace_one(x, d, s - removed, n - removed)
    return x


def _swap_gate(d):
    g = np.zeros((d * d, d * d))
    for i, j in itertools.product(range(d), range(d)):
        g[i * d + j, j * d + i] = 1
    return g


def kron_embed(sigma, keep, d, n):
    """sigma (x) 1 / d^(n-k), then dense adjacent SWAP gates bring the factors into place."""
    k = len(keep)
    m = np.kron(sigma, np.eye(d ** (n - k)) / d ** (n - k))
    swap = _swap_gate(d)
    # factor j (0-based among the first k) must move from position j to keep[j]; go right to left
    for j in reversed(range(k)):
        for pos in range(j, keep[j]):
            g = np.kron(np.kron(np.eye(d**pos), swap), np.eye(d ** (n - pos - 2)))
            m = g @ m @ g
    return m


def kron_mio(x, marginals, d, n):
    for J, sigma in marginals.items():
        x = x - kron_embed(kron_partial_trace(x, J, d, n), J, d, n) + kron_embed(sigma, J, d, n)
    return x


# ----------------------------------------------------------------------------- timing


def median_time(fn, repeats: int, budget: float) -> float:
    fn()  # warm-up (allocations, imports)
    times = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget:
            break
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-n", type=int, default=3)
    ap.add_argument("--max-n", type=int, default=12)
    ap.add_argument("--max-kron-n", type=int, default=8, help="largest N for the Kronecker baseline")
    ap.add_argument("--max-batch-n", type=int, default=10, help="largest N for batch 100")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--output", default=str(Path(__file__).parent / "results" / "bench_core.csv"))
    args = ap.parse_args(argv)
    repeats = 3 if args.quick else args.repeats

    import torch

    torch.set_num_threads(1)
    rows = []
    header = ["N", "op", "batch", "qmarginal_numpy_s", "qmarginal_torch_s", "kron_baseline_s",
              "speedup_vs_kron"]
    print(f"{'N':>3} {'op':<10} {'batch':>5} {'numpy/inst':>12} {'torch/inst':>12} "
          f"{'kron/inst':>12} {'speedup':>9}")
    for n in range(args.min_n, args.max_n + 1):
        D = 2**n
        subsets = qm.k_body_subsets(n, n - 1)
        for batch in (1, 100):
            if batch > 1 and n > args.max_batch_n:
                continue
            rho = qm.hilbert_schmidt_state(D, batch=batch if batch > 1 else None, seed=n)
            problem = qm.MarginalProblem.from_state(rho, k=n - 1, validate=False)
            seed = qm.hilbert_schmidt_state(D, batch=batch if batch > 1 else None, seed=100 + n)
            rho_t, seed_t, problem_t = torch.as_tensor(rho), torch.as_tensor(seed), problem.to_torch()
            budget = 20.0
            ops = {
                "marginals": (lambda: qm.marginals(rho, subsets),
                              lambda: qm.marginals(rho_t, subsets)),
                "mio": (lambda: qm.impose(seed, problem), lambda: qm.impose(seed_t, problem_t)),
            }
            for op, (f_np, f_t) in ops.items():
                t_np = median_time(f_np, repeats, budget) / batch
                t_t = median_time(f_t, repeats, budget) / batch
                t_k = float("nan")
                if n <= args.max_kron_n:
                    r0 = rho if batch == 1 else rho[0]
                    s0 = seed if batch == 1 else seed[0]
                    m0 = {J: qm.partial_trace(r0, J) for J in subsets}
                    if op == "marginals":
                        fk = lambda: [kron_partial_trace(r0, J, 2, n) for J in subsets]  # noqa: E731
                    else:
                        fk = lambda: kron_mio(s0, m0, 2, n)  # noqa: E731
                    t_k = median_time(fk, max(1, repeats // 2), 60.0)
                    if op == "mio":  # the baseline is right: same result as ours
                        assert np.allclose(kron_mio(s0, m0, 2, n), qm.impose(s0, m0), atol=1e-10)
                speed = t_k / min(t_np, t_t)
                rows.append([n, op, batch, t_np, t_t, t_k, speed])
                print(f"{n:>3} {op:<10} {batch:>5} {t_np:>12.3e} {t_t:>12.3e} {t_k:>12.3e} "
                      f"{speed:>9.1f}", flush=True)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
