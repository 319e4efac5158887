"""Learned warm starts: cold vs warm iterations and time, exact solver and SCS, on one core.

    python benchmarks/bench_warmstart.py                 # N3k2, N4k3, N5k4 (where models exist)
    python benchmarks/bench_warmstart.py --cases N3k2 --instances 2 --no-sdp
    python benchmarks/bench_warmstart.py --models-dir /work/runs/models

Targets: rho = rank_mixture_state(2^N, rank, seed) for rank 1, 2, half, full; problem = all
k-body marginals. Per instance, in the same run:

* exact, cold: ``exact.solve(p)`` (its default seed, the MIO of 1/D);
* exact, warm: ``exact.solve(p, x0=Z)`` with Z the CDAE's output (``cdae_states``, the model
  loaded once beforehand); the warm total time counts the CDAE's time too;
* SCS (form="sparse", eps=--sdp-eps; the CVXPY problem built and cached untimed per case), cold; warm from Z; warm from the exact solution (best case).

Success for the exact solver is its certified test (lambda_min >= -1e-10, marginal deviation
<= 1e-9; same settings cold and warm); for SCS it is status "optimal" at the same eps. Ratios
(cold / warm, warm total including the CDAE) are medians over instances of per-instance ratios
measured in this run; "sum ratio" is total cold time / total warm time over the instances.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import csv  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bench_warmstart.csv"
FIELDS = ["case", "rank", "instance", "solver", "start", "success", "iterations", "time_s",
          "cdae_time_s", "total_s", "path", "max_marginal_deviation"]


def get_args_parser():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="N3k2,N4k3,N5k4")
    ap.add_argument("--ranks", default="1,2,half,full")
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--models-dir", default=None, help="default: qmarginal/models")
    ap.add_argument("--no-sdp", action="store_true")
    ap.add_argument("--sdp-eps", type=float, default=1e-6)
    ap.add_argument("--sdp-max-n", type=int, default=5, help="largest N for SCS")
    ap.add_argument("--output", default=str(RESULTS))
    return ap


def _rank(spec, D):
    return {"half": D // 2, "full": D}.get(spec) or int(spec)


def _exact(p, x0):
    from qmarginal.solvers import exact
    t = time.perf_counter()
    out = exact.solve(p, x0=x0)
    dt = time.perf_counter() - t
    return dict(success=bool(out.converged), iterations=int(out.iterations), time_s=dt,
                path=out.info.get("path"),
                max_marginal_deviation=float(out.info.get("marginal_deviation", np.nan)))


def _scs(p, x0, eps):
    from qmarginal.solvers import sdp
    t = time.perf_counter()
    # the SDP solver alone (no polishing): the baseline the learned start is meant to help
    out = sdp.solve(p, sdp.SDPSettings(eps=eps, maxiter=100000, polish=False), x0=x0)
    dt = time.perf_counter() - t
    return dict(success=bool(out.converged), iterations=int(out.iterations), time_s=dt,
                path=out.info.get("status"),
                max_marginal_deviation=float(np.max(p.marginal_deviation(out.state))))


def main(args):
    import torch

    torch.set_num_threads(1)
    from qmarginal import MarginalError, MarginalProblem, rank_mixture_state
    from qmarginal.learn.pipeline import cdae_states
    from qmarginal.learn.weights import find_model, load_weights

    rows = []
    for case in args.cases.split(","):
        n, k = (int(s) for s in case[1:].split("k"))
        try:
            path = find_model(n, k, args.models_dir)
        except MarginalError as e:
            print(f"{case}: skipped ({str(e).splitlines()[0][:80]})")
            continue
        net, card = load_weights(path)
        seed_state = (card.get("data") or {}).get("seed_state") or "hilbert_schmidt"
        D = 2 ** n
        if not args.no_sdp and n <= args.sdp_max_n:  # build + cache the CVXPY problem untimed
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _scs(MarginalProblem.from_state(rank_mixture_state(D, D, seed=0), k=k), None,
                     args.sdp_eps)
        for rspec in args.ranks.split(","):
            r = _rank(rspec, D)
            for i in range(args.instances):
                p = MarginalProblem.from_state(rank_mixture_state(D, r, seed=1000 * r + i), k=k)
                base = dict(case=case, rank=rspec, instance=i)
                t = time.perf_counter()
                Z, _ = cdae_states(p, model=net, seed_state=seed_state, seed=i)
                t_cdae = time.perf_counter() - t
                cold = _exact(p, None)
                warm = _exact(p, Z)
                rows.append({**base, "solver": "exact", "start": "mio(1/D)", **cold,
                             "cdae_time_s": 0.0, "total_s": cold["time_s"]})
                rows.append({**base, "solver": "exact", "start": "cdae", **warm,
                             "cdae_time_s": t_cdae, "total_s": warm["time_s"] + t_cdae})
                if args.no_sdp or n > args.sdp_max_n:
                    continue
                from qmarginal.solvers.exact import solve as exact_solve
                best = exact_solve(p).state
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for start, x0, extra in (("cold", None, 0.0), ("cdae", Z, t_cdae),
                                             ("exact solution", best, 0.0)):
                        res = _scs(p, x0, args.sdp_eps)
                        rows.append({**base, "solver": f"scs eps={args.sdp_eps:g}", "start": start,
                                     **res, "cdae_time_s": extra, "total_s": res["time_s"] + extra})
            _print_group(rows, case, rspec)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    print(f"wrote {out}")
    return rows


_HEADER = False


def _print_group(rows, case, rspec):
    global _HEADER
    if not _HEADER:
        print(f"{'case':6} {'rank':5} {'solver':14} {'start':15} {'ok':>5} {'iters':>7} "
              f"{'time_ms':>8} {'total_ms':>9} {'iter ratio':>10} {'time ratio':>10} {'sum ratio':>9}")
        _HEADER = True
    sel = [r for r in rows if r["case"] == case and r["rank"] == rspec]
    for solver in dict.fromkeys(r["solver"] for r in sel):
        cold_start = "mio(1/D)" if solver == "exact" else "cold"
        cold = {r["instance"]: r for r in sel if r["solver"] == solver and r["start"] == cold_start}
        for start in dict.fromkeys(r["start"] for r in sel if r["solver"] == solver):
            g = [r for r in sel if r["solver"] == solver and r["start"] == start]
            it = statistics.median(r["iterations"] for r in g)
            tm = statistics.median(r["time_s"] for r in g) * 1e3
            tot = statistics.median(r["total_s"] for r in g) * 1e3
            ir = statistics.median(cold[r["instance"]]["iterations"] / max(r["iterations"], 1)
                                   for r in g)
            tr = statistics.median(cold[r["instance"]]["total_s"] / r["total_s"] for r in g)
            sr = (sum(cold[r["instance"]]["total_s"] for r in g) / sum(r["total_s"] for r in g))
            ok = f"{sum(r['success'] for r in g)}/{len(g)}"
            print(f"{case:6} {rspec:5} {solver:14} {start:15} {ok:>5} {it:7.0f} {tm:8.1f} "
                  f"{tot:9.1f} {ir:10.2f} {tr:10.2f} {sr:9.2f}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
