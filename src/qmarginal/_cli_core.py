"""Core subcommands: ``qmarginal example`` and ``qmarginal info``."""

from __future__ import annotations

import argparse
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
                   help="output file, .json or .npz (default: problem.json)")
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

    p = sub.add_parser("info", help="validate a problem file and describe it")
    p.add_argument("problem", help="problem file (.json or .npz)")
    p.add_argument("--atol", type=float, default=None,
                   help="one absolute tolerance for every validation check (default 1e-10, "
                        "overlaps 1e-9)")
    p.set_defaults(handler=_info)


def load_problem(path: str, atol: float | None = None):
    """Read a problem file for the CLI, with one tolerance for all checks when given."""
    from .problem import MarginalProblem, Tolerances

    kwargs = {}
    if atol is not None:
        kwargs["tolerances"] = Tolerances(atol, atol, atol, atol)
    return MarginalProblem.load(path, **kwargs)


def _example(args: argparse.Namespace) -> int:
    import math

    from .problem import MarginalProblem
    from .states import rank_mixture_state

    out = Path(args.output)
    if not args.generate:
        problem = MarginalProblem.load(example_path(args.name))
        problem.save(out)
        print(f"wrote {out} (shipped example {args.name}: {EXAMPLES[args.name]})")
        return 0
    dims = args.dims * args.n_sites if len(args.dims) == 1 else args.dims
    if len(dims) != args.n_sites:
        from .errors import MarginalError

        raise MarginalError(f"--dims has {len(dims)} entries for {args.n_sites} sites")
    k = args.k if args.k is not None else args.n_sites - 1
    D = math.prod(dims)
    rho = rank_mixture_state(D, args.rank, seed=args.seed)
    problem = MarginalProblem.from_state(rho, k=k, dims=dims)
    problem.save(out)
    print(f"wrote {out}: N = {args.n_sites}, dims = {dims}, k = {k}, "
          f"{len(problem.marginals)} marginals of a random state of rank "
          f"{args.rank if args.rank else 'drawn uniformly'} (seed {args.seed})")
    return 0


def _info(args: argparse.Namespace) -> int:
    problem = load_problem(args.problem, args.atol)
    print(f"{args.problem}: valid marginal problem")
    print(problem.describe())
    return 0
