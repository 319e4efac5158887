"""Benchmark of the reconstruction methods on random feasible problems, on one core.

    python benchmarks/bench_solvers.py                  # all cases, writes benchmarks/results/bench_solvers.csv
    python benchmarks/bench_solvers.py --quick          # N3k2, N4k3, N5k2; a minute or two
    python benchmarks/bench_solvers.py --cases N10k9 --ranks 1,full --no-sdp

Targets: rho = rank_mixture_state(2^N, rank, seed=...) (the paper's rank-r mixtures), problem =
all k-body marginals of rho. For each case (NxKy) and target rank (1, 2, half = 2^N/2, full =
2^N) it times ``reconstruct(problem, method=...)`` on several instances and records iterations,
success (the report's validity test lambda_min >= -1e-10 after normalising AND max marginal
deviation <= 1e-9) and the path the exact solver took.

The SDP baseline (method="sdp", CVXPY + SCS at its default accuracy) runs in two forms: "paper"
(nested partial traces, the paper's code) and "sparse" (one sparse linear map). Its problem cache
is cleared before every instance, so each SDP time includes building the CVXPY problem, as the
paper's code does per sample (the build and solve parts are recorded separately); likewise the
exact solver's cached index tensors are cleared before every instance (--warm-cache keeps them).
SDP runs only
on --sdp-instances instances and only while it finishes within --sdp-time-limit: once one
instance of a form takes longer, that form is skipped for the larger cases. Rows are skipped
cleanly when qmarginal.solvers.sdp or CVXPY is missing.

With --repeats R every timed run (exact and SDP alike, caches cleared before each) is repeated
R times and the shortest time is recorded, as timeit does: on a shared machine other tenants only
ever add time, and single runs here vary by +-40 %.

The table prints the median time per method, the success counts and the ratio of the median
SDP time to the median exact time measured in this run (compare ratios, not absolute times:
the machine may be shared).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import csv  # noqa: E402
import importlib.util  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402


import qmarginal as qm  # noqa: E402
from qmarginal.reconstruct import reconstruct  # noqa: E402
from qmarginal.solvers import exact as exact_mod  # noqa: E402

ALL_CASES = ["N3k2", "N4k3", "N5k2", "N6k3", "N7k4", "N8k4", "N8k7", "N10k9"]
QUICK_CASES = ["N3k2", "N4k3", "N5k2"]
RANKS = ["1", "2", "half", "full"]
MARGINAL_TOL = 1e-9
FIELDS = ["case", "n", "k", "rank_label", "rank", "method", "instance", "seed", "time_s",
          "build_s", "solve_s", "iterations", "valid", "min_eigenvalue", "max_marginal_deviation",
          "success", "path", "status", "repeats"]


def parse_case(case: str) -> tuple[int, int]:
    n, k = case.upper().lstrip("N").split("K")
    return int(n), int(k)


def rank_value(label: str, dim: int) -> int:
    return {"half": dim // 2, "full": dim}.get(label) or int(label)


def sdp_available() -> bool:
    return (importlib.util.find_spec("qmarginal.solvers.sdp") is not None
            and importlib.util.find_spec("cvxpy") is not None)


def run_best(problem, method: str, repeats: int, clear, **options) -> dict:
    """run_one ``repeats`` times (``clear()`` before each) and keep the fastest run (the runs
    are deterministic: same result, iterations and path); a run that raised is returned at
    once."""
    best = None
    for _ in range(repeats):
        clear()
        r = run_one(problem, method, **options)
        if str(r.get("status", "")).startswith("error"):
            return {**r, "repeats": repeats}
        if best is None or r["time_s"] < best["time_s"]:
            best = r
    return {**best, "repeats": repeats}


def run_one(problem, method: str, **options) -> dict:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # strict=False: a failure is measured, not raised; the SDP baseline runs as the
            # paper's (SCS alone: polish=False, no compatibility check)
            extra = {"polish": False, "check": False} if method == "sdp" else {}
            check = extra.pop("check", True)
            rec = reconstruct(problem, method=method, strict=False, check=check,
                              **extra, **options)
        except Exception as exc:  # a failed solve is a result, not a crash of the benchmark
            return {"time_s": time.perf_counter() - t0, "success": False, "valid": False,
                    "status": f"error: {type(exc).__name__}: {exc}"[:120]}
    wall = time.perf_counter() - t0
    rep = rec.report
    dev = float(rep.max_marginal_deviation)
    return {
        "time_s": wall,
        "build_s": rep.info.get("build_time_s", ""),
        "solve_s": rep.info.get("solve_time_s", ""),
        "iterations": rep.iterations,
        "valid": bool(rep.valid),
        "min_eigenvalue": float(rep.min_eigenvalue),
        "max_marginal_deviation": dev,
        "success": bool(rep.certified) if method != "sdp" else (bool(rep.valid) and
                                                                  dev <= MARGINAL_TOL),
        "path": rep.info.get("path", ""),
        "status": rep.info.get("status", "converged" if rep.converged else "not converged"),
    }


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(ALL_CASES), help="comma-separated NxKy cases")
    p.add_argument("--ranks", default=",".join(RANKS), help="comma-separated: ints, half, full")
    p.add_argument("--instances", type=int, default=3, help="instances per case and rank (exact)")
    p.add_argument("--sdp-instances", type=int, default=1, help="instances per case and rank (SDP)")
    p.add_argument("--sdp-time-limit", type=float, default=120.0,
                   help="seconds; an SDP form slower than this is skipped for larger cases")
    p.add_argument("--sdp-forms", default="paper,sparse", help="SDP forms to run")
    p.add_argument("--no-sdp", action="store_true", help="exact solver only")
    p.add_argument("--exact-time-limit", type=float, default=300.0,
                   help="time_limit passed to the exact solver (seconds)")
    p.add_argument("--warm-cache", action="store_true",
                   help="keep the exact solver's cached index tensors between instances of one "
                        "structure (default: cleared, so each time includes building them, as "
                        "each SDP time includes building the CVXPY problem)")
    p.add_argument("--repeats", type=int, default=1,
                   help="time every run this many times (caches cleared before each) and record "
                        "the fastest, for exact and SDP alike")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the one-core numbers)")
    p.add_argument("--seed", type=int, default=1000, help="first target seed")
    p.add_argument("--quick", action="store_true", help="small cases, 2 instances")
    p.add_argument("--output", default=str(Path(__file__).parent / "results" / "bench_solvers.csv"))
    p.add_argument("--append", action="store_true",
                   help="add the rows to an existing CSV (the table shows this run's rows)")
    return p


def main(args) -> list[dict]:
    import torch

    torch.set_num_threads(args.threads)
    cases = QUICK_CASES if args.quick and args.cases == ",".join(ALL_CASES) else \
        [c.strip() for c in args.cases.split(",") if c.strip()]
    ranks = [r.strip() for r in args.ranks.split(",") if r.strip()]
    instances = min(args.instances, 2) if args.quick else args.instances
    forms = [] if args.no_sdp else [f.strip() for f in args.sdp_forms.split(",") if f.strip()]
    if forms and not sdp_available():
        print("# qmarginal.solvers.sdp or cvxpy is missing: SDP rows skipped")
        forms = []
    too_slow: dict[str, int] = {}  # form -> smallest dimension at which it exceeded the limit
    if forms:
        from qmarginal.solvers import sdp as sdp_mod

    rows: list[dict] = []
    out = Path(args.output)
    previous = _read(out) if args.append and out.exists() else []
    out.parent.mkdir(parents=True, exist_ok=True)
    # warm-up (imports: scipy's eigensolver on D >= 64, CVXPY and SCS; first torch calls) so
    # that the first case of each method is not charged for them
    reconstruct(qm.MarginalProblem.from_state(qm.rank_mixture_state(8, 1, seed=0), k=2))
    reconstruct(qm.MarginalProblem.from_state(qm.rank_mixture_state(64, 2, seed=0), k=3))
    for form in forms:
        run_one(qm.MarginalProblem.from_state(qm.rank_mixture_state(8, 2, seed=0), k=2),
                "sdp", form=form, solver="SCS")

    for case in cases:
        n, k = parse_case(case)
        dim = 2 ** n
        for label in ranks:
            rank = rank_value(label, dim)
            for i in range(instances):
                seed = args.seed + 7919 * i + rank
                rho = qm.rank_mixture_state(dim, rank, seed=seed)
                problem = qm.MarginalProblem.from_state(rho, k=k)
                base = {"case": case, "n": n, "k": k, "rank_label": label, "rank": rank,
                        "instance": i, "seed": seed}
                clear_exact = (lambda: None) if args.warm_cache else exact_mod.clear_cache
                r = run_best(problem, "exact", args.repeats, clear_exact,
                             time_limit=args.exact_time_limit)
                rows.append({**base, "method": "exact", **r})
                print(f"{case:>6} rank {label:>4} #{i} exact      {r['time_s']:9.4f}s "
                      f"ok={r['success']} path={r.get('path', '')} it={r.get('iterations', '')}",
                      flush=True)
                if i >= args.sdp_instances:
                    continue
                for form in forms:
                    if form in too_slow and dim >= too_slow[form]:
                        continue
                    r = run_best(problem, "sdp", args.repeats, sdp_mod.clear_cache, form=form,
                                 solver="SCS", time_limit=args.sdp_time_limit)
                    rows.append({**base, "method": f"sdp-{form}", **r})
                    print(f"{case:>6} rank {label:>4} #{i} sdp-{form:<6} {r['time_s']:9.4f}s "
                          f"ok={r['success']} status={r.get('status', '')}", flush=True)
                    if r["time_s"] > args.sdp_time_limit:
                        too_slow[form] = min(too_slow.get(form, dim + 1), dim + 1)
            _write(previous + rows, out)

    _write(previous + rows, out)
    print()
    print(table(rows))
    print(f"\nwrote {out}")
    return rows


def _read(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _write(rows, out: Path) -> None:
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def table(rows: list[dict]) -> str:
    """Median time, success count per (case, rank, method), and SDP/exact time ratios."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["case"], r["rank_label"]), {}).setdefault(r["method"], []).append(r)
    methods = ["exact"] + sorted({r["method"] for r in rows} - {"exact"})
    head = f"{'case':>6} {'rank':>5} " + " ".join(f"{m + ' s':>14} {'ok':>5}" for m in methods)
    head += "".join(f" {m.replace('sdp-', '') + '/exact':>13}" for m in methods[1:])
    head += f" {'exact path':>16}"
    lines = [head, "-" * len(head)]
    for (case, label), by in groups.items():
        ex = by.get("exact", [])
        t_ex = statistics.median(r["time_s"] for r in ex) if ex else float("nan")
        cells = []
        for m in methods:
            rs = by.get(m, [])
            if rs:
                t = statistics.median(r["time_s"] for r in rs)
                cells.append(f"{t:>14.4g} {sum(bool(r['success']) for r in rs):>2}/{len(rs):<2}")
            else:
                cells.append(f"{'-':>14} {'-':>5}")
        ratios = []
        for m in methods[1:]:
            rs = by.get(m, [])
            ratios.append(f"{statistics.median(r['time_s'] for r in rs) / t_ex:>13.4g}"
                          if rs and ex else f"{'-':>13}")
        paths = sorted({str(r.get("path", "")) for r in ex})
        lines.append(f"{case:>6} {label:>5} " + " ".join(cells) + "".join(f" {x}" for x in ratios)
                     + f" {'/'.join(paths):>16}")
    return "\n".join(lines)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
