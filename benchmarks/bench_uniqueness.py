"""Uniqueness over random instances: how often check_uniqueness decides, and how fast.

Instances (N = 3..6, seeds 0..count-1 per class and N):
- pure-k2: a Haar-random pure state and its 2-body marginals;
- rank2-k(N-1): a random rank-2 state and its (N-1)-body marginals;
- full-k2: a random full-rank state and its 2-body marginals (never unique for N >= 3);
- ghz-k2: cos a |0..0> + e^{i phi} sin a |1..1> with random a, phi (never unique: the
  coherence is invisible to 2-body marginals).

Per row: the class, N, instances, the counts of "unique", "not unique", "undetermined", the
median and largest time, and how the unique ones were certified. One thread.

    python benchmarks/bench_uniqueness.py --n 3 4 5 6 --count 10

Writes benchmarks/results/bench_uniqueness.csv (atomically).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

if __name__ == "__main__":
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import numpy as np

FIELDS = ["class", "n", "instances", "unique", "not_unique", "undetermined", "median_s",
          "max_s", "certified_by"]


def instance(kind: str, n: int, seed: int):
    import qmarginal as qm

    D = 2**n
    if kind == "pure-k2":
        return qm.haar_pure_state(D, seed=seed), 2
    if kind == "rank2-kN-1":
        return qm.rank_mixture_state(D, 2, seed=seed), n - 1
    if kind == "full-k2":
        return qm.rank_mixture_state(D, D, seed=seed), 2
    if kind == "ghz-k2":
        rng = np.random.default_rng(seed)
        a, phi = rng.uniform(0.2, 1.3), rng.uniform(0, 2 * np.pi)
        v = np.zeros(D, complex)
        v[0], v[-1] = np.cos(a), np.exp(1j * phi) * np.sin(a)
        return np.outer(v, v.conj()), 2
    raise ValueError(kind)


def main(argv=None) -> int:
    import qmarginal as qm
    from qmarginal.files import write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[3, 4, 5, 6])
    ap.add_argument("--count", type=int, default=10, help="instances per class and N")
    ap.add_argument("--classes", nargs="+",
                    default=["pure-k2", "rank2-kN-1", "full-k2", "ghz-k2"])
    ap.add_argument("--output", default="benchmarks/results/bench_uniqueness.csv")
    args = ap.parse_args(argv)
    rows = []
    print(f"{'class':<12}{'N':>3}{'inst':>6}{'unique':>8}{'not':>6}{'undet':>7}"
          f"{'median s':>10}{'max s':>8}  certified by")
    for kind in args.classes:
        for n in args.n:
            status, times, how = Counter(), [], Counter()
            for seed in range(args.count):
                rho, k = instance(kind, n, seed)
                p = qm.MarginalProblem.from_state(rho, k=k)
                t0 = time.perf_counter()
                res = qm.check_uniqueness(p, rho)
                times.append(time.perf_counter() - t0)
                status[res.status] += 1
                if res.certificate is not None:
                    how[res.certificate.how] += 1
            row = {"class": kind, "n": n, "instances": args.count,
                   "unique": status["unique"], "not_unique": status["not unique"],
                   "undetermined": status["undetermined"],
                   "median_s": f"{statistics.median(times):.3g}", "max_s": f"{max(times):.3g}",
                   "certified_by": "; ".join(f"{c} x {h}" for h, c in how.items())}
            rows.append(row)
            print(f"{kind:<12}{n:>3}{args.count:>6}{row['unique']:>8}{row['not_unique']:>6}"
                  f"{row['undetermined']:>7}{row['median_s']:>10}{row['max_s']:>8}  "
                  f"{row['certified_by']}", flush=True)
    total = sum(r["instances"] for r in rows)
    undet = sum(r["undetermined"] for r in rows)
    print(f"total {total} instances, undetermined {undet} ({100 * undet / total:.1f} %)")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS)
    w.writeheader()
    w.writerows(rows)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, buf.getvalue())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
