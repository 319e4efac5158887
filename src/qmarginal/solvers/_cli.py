"""Solver subcommands: ``qmarginal reconstruct`` and ``qmarginal check``.

``reconstruct`` prints :meth:`Report.table` and writes the state (``--output state.npz``: array
``state`` and the report as JSON in the array ``report_json``; the same JSON is written beside
it as ``state.report.json``). ``check`` prints the compatibility decision and the certificate;
exit status 0 compatible, 1 incompatible (or undetermined), 2 error.
"""

from __future__ import annotations

import argparse

_METHOD_HELP = "reconstruction method (default: exact)"


def add_commands(sub) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="reconstruct a global state from a problem file and print the report",
        description="Find a density matrix with the marginals of PROBLEM and print the report "
                    "table. Method options not listed below can be given as --option NAME=VALUE.",
    )
    p.add_argument("problem", help="problem file (.json or .npz)")
    p.add_argument("--method", default="exact", help=_METHOD_HELP + "; e.g. exact, mio, sdp, maxent")
    p.add_argument("-o", "--output", default=None,
                   help="write the state to this .npz (array 'state', report JSON inside and beside)")
    p.add_argument("--least-squares", action="store_true",
                   help="for incompatible input, reconstruct from the nearest compatible marginals")
    p.add_argument("--no-validate", action="store_true",
                   help="load without validating (noisy marginals; use with --least-squares)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed for methods that use one (mio with a random seed state, exact)")
    p.add_argument("--atol", type=float, default=None,
                   help="one absolute tolerance for every validation check")
    # common method options
    p.add_argument("--seed-state", default=None,
                   help="mio: maximally_mixed (default) or hilbert_schmidt")
    p.add_argument("--form", default=None, help="sdp: sparse (default) or paper")
    p.add_argument("--solver", default=None, help="sdp: SCS (default), CLARABEL or MOSEK")
    p.add_argument("--eps", type=float, default=None, help="sdp: solver tolerance")
    p.add_argument("--max-iters", type=int, default=None, help="sdp: iteration limit")
    p.add_argument("--time-limit", type=float, default=None, help="sdp: seconds per solve")
    p.add_argument("--tol", type=float, default=None, help="maxent: marginal deviation tolerance")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="any other method option (value parsed as int, float, bool or string)")
    p.set_defaults(handler=_reconstruct)

    p = sub.add_parser(
        "check",
        help="decide whether a state with the given marginals exists, with a certificate",
        description="Exit status 0: compatible; 1: incompatible (or undetermined); 2: error.",
    )
    p.add_argument("problem", help="problem file (.json or .npz)")
    p.add_argument("--no-validate", action="store_true",
                   help="load without validating (noisy marginals whose overlaps disagree)")
    p.add_argument("--atol", type=float, default=1e-8,
                   help="compatible means a state within this residual norm (default 1e-8)")
    p.add_argument("--max-iter", type=int, default=20000, help="least-squares iteration limit")
    p.add_argument("-o", "--output", default=None,
                   help="write the nearest compatible marginals' state and certificate (.npz)")
    p.set_defaults(handler=_check)


def _parse_value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _load(path: str, atol, no_validate: bool):
    from .._cli_core import load_problem
    from ..problem import MarginalProblem

    if no_validate:
        return MarginalProblem.load(path, validate=False)
    return load_problem(path, atol)


def _jsonable(v):
    import numpy as np

    from .. import _backend as B

    if B.is_torch(v):
        v = B.to_numpy(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    return str(v)


def report_dict(report) -> dict:
    """The report as a JSON-ready dict."""
    from dataclasses import fields

    return {f.name: _jsonable(getattr(report, f.name)) for f in fields(report)}


def _accepts(method: str, name: str) -> bool:
    import inspect
    from importlib import import_module

    from ..reconstruct import METHODS

    if method not in METHODS:
        return False
    module, func = METHODS[method].split(":")
    try:
        params = inspect.signature(getattr(import_module(module), func)).parameters
    except (ImportError, AttributeError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _reconstruct(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from .. import _backend as B
    from ..errors import MarginalError
    from ..reconstruct import reconstruct

    problem = _load(args.problem, args.atol, args.no_validate)
    options = {}
    for name, key in [("seed_state", "seed_state"), ("form", "form"), ("solver", "solver"),
                      ("eps", "eps"), ("max_iters", "max_iters"), ("time_limit", "time_limit"),
                      ("tol", "tol")]:
        v = getattr(args, name)
        if v is not None:
            options[key] = v
    if args.seed is not None and _accepts(args.method, "seed"):
        options["seed"] = args.seed
    for item in args.option:
        if "=" not in item:
            raise MarginalError(f"--option expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        options[k.strip().replace("-", "_")] = _parse_value(v.strip())
    try:
        result = reconstruct(problem, args.method, least_squares=args.least_squares, **options)
    except TypeError as exc:  # an option the method does not take
        raise MarginalError(f"method {args.method!r}: {exc}") from exc
    print(result.report.table())
    if args.output:
        out = Path(args.output)
        if out.suffix != ".npz":
            out = out.with_suffix(".npz")
        doc = json.dumps(report_dict(result.report), indent=1)
        np.savez_compressed(out, state=B.to_numpy(result.state), report_json=np.array(doc))
        side = out.with_suffix(".report.json")
        side.write_text(doc)
        print(f"wrote {out} and {side}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from ..compatibility import check_compatibility

    problem = _load(args.problem, None, args.no_validate)
    if problem.batch_shape:
        from ..errors import MarginalError

        raise MarginalError("qmarginal check takes one problem, not a batch")
    res = check_compatibility(problem, atol=args.atol, max_iter=args.max_iter)
    word = {"compatible": "compatible", "incompatible": "INCOMPATIBLE",
            "undetermined": "undetermined (no state and no certificate found)"}[res.status]
    print(f"{args.problem}: {word}")
    print(res.summary())
    if args.output:
        out = Path(args.output)
        arrays = {"state": res.state, "residual_norm": np.array(res.residual_norm),
                  "status": np.array(res.status)}
        for i, (J, m) in enumerate(res.nearest_marginals.items()):
            arrays[f"sites_{i}"] = np.array(J, dtype=np.int64)
            arrays[f"nearest_{i}"] = m
            if res.certificate is not None:
                arrays[f"w_{i}"] = res.certificate.w[J]
        np.savez_compressed(out, **arrays)
        print(f"wrote {out}")
    return 0 if res.compatible else 1
