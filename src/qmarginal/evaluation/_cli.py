"""Evaluation subcommands: ``qmarginal evaluate``, ``qmarginal compare``, ``qmarginal figures``."""

from __future__ import annotations

import argparse
import sys

_METHODS = ["cdae", "model2", "cdae+mio", "model2+mio", "mio_random", "mio_mixed", "mio_clip",
            "random_guess", "exact", "maxent", "sdp"]
_DEFAULT_METHODS = ["cdae", "cdae+mio", "mio_random", "mio_mixed", "mio_clip", "random_guess"]


def add_commands(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="success rate and F_mean +- SD per case, method and rank (the paper's Section V)",
        description="Draw SAMPLES random targets of each rank (rank_mixture_state), give every "
                    "method all k-body marginals, and write one CSV row per case, method and "
                    "rank: the columns of the published published_fidelity.csv first, then "
                    "extra columns. F_mean +- SD is over valid outputs (as the paper) and, in "
                    "fidelity_mean_all, over all outputs.",
    )
    p.add_argument("--cases", nargs="+", default=["N3k2"], help="cases NxKy (default N3k2)")
    p.add_argument("--ranks", nargs="+", type=int, default=None,
                   help="target ranks (default: the published ranks of each case, else 1..2^N)")
    p.add_argument("--samples", type=int, default=1000, help="targets per rank (default 1000)")
    p.add_argument("--methods", nargs="+", default=_DEFAULT_METHODS, metavar="METHOD",
                   help=f"methods among {', '.join(_METHODS)} (cdae_then_mio is an alias of "
                        f"cdae+mio; default: {' '.join(_DEFAULT_METHODS)})")
    p.add_argument("--models", default=None,
                   help="folder of model1 weights, searched with find_model (default: shipped)")
    p.add_argument("--model2", default=None, help="model2 weights (.safetensors with its .json)")
    p.add_argument("--seed", type=int, default=0, help="seed of the targets and methods")
    p.add_argument("--time-limit", type=float, default=600.0,
                   help="seconds per method, case and rank (default 600; 0 = none); a method "
                        "stops when it is spent and the row says how many samples it did")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--reference", default=None,
                   help="folder with the published CSVs (default: the copy in the package)")
    p.add_argument("-o", "--output", default="results.csv", help="output CSV (default results.csv)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=_evaluate)

    p = sub.add_parser("compare", help="our results beside the published ones, row by row",
                       description="Match rows by (case, method, rank) and print both, the "
                                   "differences and a verdict (meets/beats or falls short).")
    p.add_argument("results", nargs="+", help="results CSV(s) of qmarginal evaluate")
    p.add_argument("--reference", default=None,
                   help="folder with published_fidelity.csv (default: the copy in the package)")
    p.add_argument("-o", "--output", default=None, help="also write the comparison as CSV")
    p.set_defaults(handler=_compare)

    p = sub.add_parser("figures", help="Figures 2-4 and a runtime figure (PNG and PDF)",
                       description="Draw our results (filled, mean +- SD band) beside the "
                                   "published values (hollow, dashed). Needs qmarginal[plot].")
    p.add_argument("--results", nargs="+", required=True, help="results CSV(s) of evaluate")
    p.add_argument("--bench", default=None,
                   help="benchmarks/results/bench_solvers.csv to draw in the runtime figure")
    p.add_argument("--reference", default=None,
                   help="folder with the published CSVs (default: the copy in the package)")
    p.add_argument("-o", "--output", default="docs/figures", help="folder (default docs/figures)")
    p.add_argument("--formats", nargs="+", default=["png", "pdf"], help="default: png pdf")
    p.set_defaults(handler=_figures)


def _read_results(paths):
    from .published import read_rows

    rows = []
    for path in paths:
        rows += read_rows(path)
    return rows


def _evaluate(args: argparse.Namespace) -> int:
    from ..errors import MarginalError
    from .evaluate import evaluate, write_csv
    from .methods import METHODS, cli_name
    from .published import load_fidelity

    methods = [cli_name(m) for m in args.methods]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise MarginalError(f"unknown method(s) {bad}; choose from {_METHODS}")
    if args.samples < 1:
        raise MarginalError("--samples must be >= 1")
    from ..files import check_output

    check_output(args.output, what="-o")  # before the evaluation, which can take hours
    rows = evaluate(args.cases, args.ranks, samples=args.samples, methods=methods,
                    models_dir=args.models, model2=args.model2, seed=args.seed,
                    time_limit=args.time_limit or None, published=load_fidelity(args.reference),
                    torch_threads=args.threads,
                    progress=None if args.quiet else (lambda s: print(s, flush=True)))
    write_csv(rows, args.output)
    print(f"wrote {args.output} ({len(rows)} rows)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .compare import compare_rows, format_comparison
    from .published import load_fidelity

    from ..files import atomic_write, check_output

    if args.output:
        check_output(args.output, inputs=args.results, what="-o")
    rows = compare_rows(_read_results(args.results), load_fidelity(args.reference))
    print(format_comparison(rows))
    if args.output:
        import csv

        with atomic_write(args.output, "w", newline="") as f:
            cols = list(rows[0]) if rows else ["case", "method", "rank", "verdict"]
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _figures(args: argparse.Namespace) -> int:
    from .figures import make_figures
    from .published import load_fidelity, load_runtimes, read_rows

    bench = read_rows(args.bench) if args.bench else None
    paths = make_figures(_read_results(args.results), args.output,
                         published=load_fidelity(args.reference),
                         published_runtimes=load_runtimes(args.reference), bench=bench,
                         formats=tuple(args.formats))
    for p in paths:
        print(f"wrote {p}")
    return 0
