"""Core subcommands (``qmarginal example``, ``qmarginal info``) and the options every
problem-reading command shares (``--atol``, ``--json``, ``--quiet``, ``--verbose``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .examples import EXAMPLES, example_path


def add_commands(sub) -> None:
    p = sub.add_parser(
        "example",
        help="write a sample marginal problem file",
        description="Copy a shipped example problem (default) or generate one from a random "
                    "global state (--generate).",
    )
    p.add_argument("-o", "--output", default="problem.json",
                   help="output file, .json or .npz (default: problem.json); an existing file "
                        "is kept unless --force")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("--name", default="n4k3_rank2", choices=sorted(EXAMPLES),
                   help="shipped example to copy (default: n4k3_rank2)")
    p.add_argument("--generate", action="store_true",
                   help="generate a new problem instead of copying a shipped one")
    p.add_argument("--n-sites", type=int, default=3, help="sites N (with --generate)")
    p.add_argument("--dims", type=int, nargs="+", default=[2],
                   help="local dimension, one for all sites or one per site (with --generate)")
    p.add_argument("-k", type=int, default=None, help="k-body marginals (default N-1)")
    p.add_argument("--rank", type=int, default=None,
                   help="rank of the random global state (default: drawn as in the paper)")
    p.add_argument("--seed", type=int, default=0, help="random seed (with --generate)")
    p.set_defaults(handler=_example)

    p = sub.add_parser("info", help="validate a problem file and describe it (sizes, spectra, "
                                    "the memory each path needs)")
    p.add_argument("problem", help="problem file (.json or .npz)")
    add_atol(p)
    add_reporting(p)
    p.set_defaults(handler=_info)


ATOL_HELP = ("one absolute tolerance for every check of the input's validity (Hermitian, trace "
             "1, PSD, overlaps agree; default 1e-10, overlaps 1e-9); a finite number > 0. Not "
             "the solver's tolerances (--eig-tol, --marginal-tol)")


def add_atol(p: argparse.ArgumentParser) -> None:
    """``--atol`` (validation of the input) and ``--no-validate``, alike in every command."""
    p.add_argument("--atol", type=float, default=None, help=ATOL_HELP)
    p.add_argument("--no-validate", action="store_true",
                   help="load without the validity checks (noisy, measured marginals; shapes and "
                        "finite entries are still checked)")


def add_reporting(p: argparse.ArgumentParser) -> None:
    """``--json``, ``--quiet`` and ``--verbose``, alike in every command that reports."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true",
                   help="print the full result as one JSON document on stdout (nothing else)")
    g.add_argument("-q", "--quiet", action="store_true",
                   help="print only the verdict line")
    g.add_argument("-v", "--verbose", action="store_true",
                   help="print every row of the report (settings and solver details too)")


def emit(args: argparse.Namespace, verdict: str, body: str, doc: dict) -> None:
    """Print a command's result: the verdict line, then ``body``; or ``doc`` as JSON."""
    if getattr(args, "json", False):
        json.dump(doc, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
        return
    print(verdict)
    if body and not getattr(args, "quiet", False):
        print(body)


def say(args: argparse.Namespace, text: str) -> None:
    """A side note (files written, ...): on stdout, or stderr with --json; none with --quiet."""
    if getattr(args, "quiet", False):
        return
    print(text, file=sys.stderr if getattr(args, "json", False) else sys.stdout)


def load_problem(path: str, atol: float | None = None, validate: bool = True):
    """Read a problem file for the CLI, with one tolerance for all validity checks when given.

    Raises:
        MarginalError: the file, or ``--atol`` (not a finite number > 0).
    """
    from .problem import MarginalProblem, Tolerances

    kwargs = {}
    if atol is not None:
        from .errors import MarginalError

        try:
            kwargs["tolerances"] = Tolerances(atol, atol, atol, atol)
        except MarginalError as exc:
            raise MarginalError(f"--atol {atol}: must be a finite number > 0") from exc
    return MarginalProblem.load(path, validate=validate, **kwargs)


def _example(args: argparse.Namespace) -> int:
    import math

    from .files import check_output
    from .problem import MarginalProblem
    from .states import rank_mixture_state

    out = check_output(args.output, overwrite=args.force, what="-o")
    if out.suffix not in (".json", ".npz"):
        from .errors import MarginalError

        raise MarginalError(f"-o {out}: use a .json or .npz file name")
    if not args.generate:
        problem = MarginalProblem.load(example_path(args.name))
        problem.save(out)
        print(f"wrote {out} (shipped example {args.name}: {EXAMPLES[args.name]})")
        return 0
    from .errors import MarginalError

    if args.n_sites < 1 or args.n_sites > 64:
        raise MarginalError(f"--n-sites {args.n_sites}: must be between 1 and 64")
    dims = args.dims * args.n_sites if len(args.dims) == 1 else args.dims
    if len(dims) != args.n_sites:
        raise MarginalError(f"--dims has {len(dims)} entries for {args.n_sites} sites")
    if min(dims) < 2:
        raise MarginalError(f"--dims {dims}: every local dimension must be >= 2")
    k = args.k if args.k is not None else args.n_sites - 1
    if not 1 <= k <= args.n_sites:
        raise MarginalError(f"-k {k}: must be between 1 and N = {args.n_sites}")
    D = math.prod(dims)
    if args.rank is not None and not 1 <= args.rank <= D:
        raise MarginalError(f"--rank {args.rank}: must be between 1 and D = {D}")
    from .system_memory import budget_bytes, format_bytes as _gib

    need = 64 * D * D  # the random global state and its partial traces
    budget, _ = budget_bytes()
    if budget is not None and need > budget:
        raise MarginalError(f"--generate at D = {D} builds a D x D global state: about "
                            f"{_gib(need)}, above the budget {_gib(budget)}")
    rho = rank_mixture_state(D, args.rank, seed=args.seed)
    problem = MarginalProblem.from_state(rho, k=k, dims=dims)
    problem.save(out)
    print(f"wrote {out}: N = {args.n_sites}, dims = {dims}, k = {k}, "
          f"{len(problem.marginals)} marginals of a random state of rank "
          f"{args.rank if args.rank else 'drawn uniformly'} (seed {args.seed})")
    return 0


def _info(args: argparse.Namespace) -> int:
    from .memory_plan import memory_summary

    problem = load_problem(args.problem, args.atol, not args.no_validate)
    plan = memory_summary(problem)
    word = "valid marginal problem" if not args.no_validate else \
        "marginal problem (validity not checked: --no-validate)"
    doc = {"file": args.problem, "valid": None if args.no_validate else True,
           "n_sites": problem.n_sites, "dims": list(problem.dims), "dim": problem.dim,
           "subsets": [list(J) for J in problem.subsets],
           "batch_shape": list(problem.batch_shape), "memory": plan}
    body = problem.describe() + "\nmemory: " + "; ".join(
        v for k, v in plan.items() if k.endswith("_text"))
    emit(args, f"{args.problem}: {word}", body, doc)
    return 0
