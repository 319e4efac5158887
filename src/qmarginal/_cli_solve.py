"""Solver subcommands: ``qmarginal reconstruct`` and ``qmarginal check``.

Exit status (both commands; documented in the README):

- 0: a certified state (``check``: compatible); for an approximate method (mio, cdae,
  cdae+mio), the output was produced (its verdict says whether it is a certified state);
- 1: incompatible, with a verified certificate;
- 3: not certified / undetermined (no certified state and no certificate within the limits);
- 2: bad input or usage (unreadable file, unknown method or option, missing extra).

``reconstruct`` prints the verdict, then :meth:`Report.table`, and writes the state with
``--output state.npz`` (array ``state`` and the report as JSON in the array ``report_json``;
the same JSON beside it as ``state.report.json``) only when it is certified (or for an
approximate method, or with ``--no-strict``: the best iterate). ``check`` prints the decision
and the certificate.
"""

from __future__ import annotations

import argparse

from ._cli_core import add_atol, add_reporting, emit, load_problem, say

#: exit status by outcome
EXIT_OK, EXIT_INCOMPATIBLE, EXIT_USAGE, EXIT_NOT_CERTIFIED, EXIT_NOT_UNIQUE = 0, 1, 2, 3, 4

_FLAG_OPTIONS = [("seed_state", "seed_state"), ("form", "form"), ("solver", "solver"),
                 ("eps", "eps"), ("maxiter", "maxiter"), ("time_limit", "time_limit"),
                 ("marginal_tol", "marginal_tol"), ("eig_tol", "eig_tol")]


def add_commands(sub) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="reconstruct a certified global state from a problem file and print the report",
        description="Find a density matrix with the marginals of PROBLEM and print the verdict "
                    "and the report. Exit status: 0 certified (approximate methods: produced); "
                    "1 incompatible (certificate verified); 3 not certified; 2 bad input or "
                    "usage. Method options not listed below can be given as --option NAME=VALUE.",
    )
    p.add_argument("problem", help="problem file (.json or .npz)")
    p.add_argument("--method", default="exact",
                   help="reconstruction method (default: exact); certifying: exact, auto, sdp, "
                        "maxent; approximate: mio, cdae, cdae+mio")
    p.add_argument("-o", "--output", default=None,
                   help="write the state to this .npz (array 'state', or 'factor' V with rho = "
                        "V V^dagger / tr on the matrix-free path; report JSON inside and "
                        "beside as .report.json); only a certified state unless --no-strict. "
                        "Checked before the solve; written atomically; never the input file")
    p.add_argument("--least-squares", action="store_true",
                   help="for incompatible input, reconstruct from the nearest compatible marginals")
    add_atol(p)
    add_reporting(p)
    p.add_argument("--no-strict", action="store_true",
                   help="when no certified state is found, write the best iterate anyway "
                        "(the exit status still says 3)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed for methods that use one (mio with a random seed state, exact)")
    # common method options
    p.add_argument("--eig-tol", dest="eig_tol", type=float, default=None,
                   help="certified: lambda_min >= -EIG_TOL (default 1e-10; 1e-6 for complex64)")
    p.add_argument("--marginal-tol", "--tol", dest="marginal_tol", type=float, default=None,
                   help="certified: marginal deviation <= MARGINAL_TOL (default 1e-9; 1e-6 for "
                        "complex64)")
    p.add_argument("--maxiter", "--max-iters", dest="maxiter", type=int, default=None,
                   help="iteration limit of the method")
    p.add_argument("--time-limit", type=float, default=None, help="seconds for the method")
    p.add_argument("--seed-state", default=None,
                   help="mio: maximally_mixed (default) or hilbert_schmidt")
    p.add_argument("--form", default=None, help="sdp: sparse (default) or paper")
    p.add_argument("--solver", default=None, help="sdp: SCS (default), CLARABEL or MOSEK")
    p.add_argument("--eps", type=float, default=None, help="sdp: the SDP solver's tolerance")
    p.add_argument("--rank", type=int, default=None,
                   help="a certified state of rank <= RANK (1: pure), from random restarts; "
                        "exit 1 where a necessary condition proves none exists, 3 where none "
                        "was found (not a proof)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="any other method option (value parsed as int, float, bool or string)")
    p.set_defaults(handler=_reconstruct)

    p = sub.add_parser(
        "check",
        help="decide whether a state with the given marginals exists, with a certificate",
        description="Exit status 0: compatible (a certified state); 1: incompatible "
                    "(certificate verified); 3: undetermined; 2: error.",
    )
    p.add_argument("problem", help="problem file (.json or .npz)")
    add_atol(p)
    add_reporting(p)
    p.add_argument("--eig-tol", dest="eig_tol", type=float, default=None,
                   help="compatible: a state with lambda_min >= -EIG_TOL (default 1e-10)")
    p.add_argument("--marginal-tol", dest="marginal_tol", type=float, default=None,
                   help="compatible: marginal deviation <= MARGINAL_TOL (default 1e-9)")
    p.add_argument("--maxiter", "--max-iter", dest="maxiter", type=int, default=20000,
                   help="least-squares iteration limit")
    p.add_argument("--time-limit", type=float, default=None, help="seconds for the check")
    p.add_argument("-o", "--output", default=None,
                   help="write the nearest compatible marginals' state and certificate (.npz; "
                        "checked before the check runs, written atomically)")
    p.add_argument("--unique", action="store_true",
                   help="also decide whether the state is the only one: 'unique' with a "
                        "verified certificate (exit 0), 'not unique' with two states (exit 4), "
                        "'undetermined' (exit 3)")
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


def _state_paths(output: str, problem: str) -> tuple:
    """The state file and its report beside it, both checked before any work."""
    from pathlib import Path

    from .errors import OutputPathError
    from .files import check_output

    out = Path(output)
    if out.suffix != ".npz":
        raise OutputPathError(f"-o {out}: the state is written as .npz; name the file "
                              f"{out.with_suffix('.npz').name}", path=out)
    side = out.with_suffix(".report.json")
    for path in (out, side):
        check_output(path, inputs=[problem], what="-o")
    return out, side


def _write_state(out, side, result) -> list[str]:
    import json

    import numpy as np

    from . import _backend as B
    from .files import atomic_write, write_text

    doc = json.dumps(result.report.to_dict(), indent=1)
    with atomic_write(out, "wb") as f:
        if hasattr(result, "factor"):  # matrix-free: rho = V V^dagger / tr, stored as V
            np.savez_compressed(f, factor=result.factor, report_json=np.array(doc))
        else:
            np.savez_compressed(f, state=B.to_numpy(result.state), report_json=np.array(doc))
    write_text(side, doc)
    return [str(out), str(side)]


def _reconstruct(args: argparse.Namespace) -> int:
    import numpy as np

    from .errors import IncompatibleMarginalsError, MarginalError
    from .reconstruct import reconstruct
    from .solvers._api import method_spec

    from ._progress import elapsed

    paths = _state_paths(args.output, args.problem) if args.output else None
    problem = load_problem(args.problem, args.atol, not args.no_validate)
    spec = method_spec(args.method)
    fields = {f for f in spec.settings_class().__dataclass_fields__}
    options = {}
    for name, key in _FLAG_OPTIONS:
        v = getattr(args, name)
        if v is not None:
            options[key] = v
    if args.seed is not None and "seed" in fields:
        options["seed"] = args.seed
    for item in args.option:
        if "=" not in item:
            raise MarginalError(f"--option expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        options[k.strip().replace("-", "_")] = _parse_value(v.strip())
    with elapsed(f"reconstruct ({args.method})", not (args.quiet or args.json)):
        if args.rank is not None:
            try:
                result = reconstruct(problem, args.method, rank=args.rank, strict=False,
                                     **options)
            except IncompatibleMarginalsError as exc:  # a necessary condition fails
                raise IncompatibleMarginalsError(str(exc)) from None
        else:
            result = reconstruct(problem, args.method, least_squares=args.least_squares,
                                 strict=False, **options)
    report = result.report
    certified = np.asarray(report.certified, dtype=bool).ravel()
    if not spec.certifies or certified.all():
        status = EXIT_OK
    elif all(isinstance(e, IncompatibleMarginalsError) for e in result.errors.values()):
        status = EXIT_INCOMPATIBLE
    else:
        status = EXIT_NOT_CERTIFIED
    errors = [f"error{' at batch element ' + str(index) if index else ''}: {err}"
              for index, err in sorted(result.errors.items())]
    shown = errors[:10] + ([f"... and {len(errors) - 10} more errors"] if len(errors) > 10
                           else [])
    table = report.table(full=args.verbose)
    verdict_line = f"{args.problem}: {report.rows()[0][1]}"
    body = "\n".join(table.splitlines()[1:] + shown)
    written = []
    if paths and (certified.all() or not spec.certifies or args.no_strict):
        written = _write_state(*paths, result)
    emit(args, verdict_line, body,
         {"file": args.problem, "exit_status": status, "verdict": report.to_dict()["verdict"],
          "report": report.to_dict(), "errors": {str(k): str(v) for k, v in
                                                 result.errors.items()}, "written": written})
    if written:
        say(args, f"wrote {written[0]} and {written[1]}")
    elif paths:
        say(args, f"not written: {args.output} (no certified state; --no-strict writes the best "
                  "iterate)")
    return status


def _check(args: argparse.Namespace) -> int:
    import numpy as np

    from .compatibility import check_compatibility
    from .errors import MarginalError

    from ._progress import elapsed
    from .files import atomic_write, check_output

    out = check_output(args.output, inputs=[args.problem], what="-o") if args.output else None
    problem = load_problem(args.problem, args.atol, not args.no_validate)
    if problem.batch_shape:
        raise MarginalError("qmarginal check takes one problem, not a batch")
    options = {k: getattr(args, k) for k in ("eig_tol", "marginal_tol", "maxiter", "time_limit")
               if getattr(args, k) is not None}
    with elapsed("check", not (args.quiet or args.json)):
        res = check_compatibility(problem, **options)
    word = {"compatible": "compatible (a certified state)",
            "incompatible": "incompatible (certificate verified)",
            "undetermined": "undetermined (no certified state and no verified certificate)"}
    status = {"compatible": EXIT_OK, "incompatible": EXIT_INCOMPATIBLE}.get(res.status,
                                                                              EXIT_NOT_CERTIFIED)
    uniq = None
    if args.unique and res.status == "compatible":
        from .uniqueness import check_uniqueness

        with elapsed("check --unique", not (args.quiet or args.json)):
            uniq = check_uniqueness(problem, res.state)
        status = {"unique": EXIT_OK, "not unique": EXIT_NOT_UNIQUE}.get(uniq.status,
                                                                       EXIT_NOT_CERTIFIED)
    written = []
    if out is not None:
        arrays = {"state": res.state, "residual_norm": np.array(res.residual_norm),
                  "status": np.array(res.status)}
        if uniq is not None:  # the uniqueness answer: its certificate's w_J or the 2nd state
            arrays["uniqueness"] = np.array(uniq.status)
            if uniq.states:
                arrays["second_state"] = uniq.states[1]
            if uniq.certificate is not None:
                for i, J in enumerate(problem.subsets):
                    if J in uniq.certificate.w:
                        arrays[f"unique_w_{i}"] = uniq.certificate.w[J]
        for i, (J, m) in enumerate(res.nearest_marginals.items()):
            arrays[f"sites_{i}"] = np.array(J, dtype=np.int64)
            arrays[f"nearest_{i}"] = m
            if res.certificate is not None:
                arrays[f"w_{i}"] = res.certificate.w[J]
        with atomic_write(out, "wb") as f:
            np.savez_compressed(f, **arrays)
        written = [str(out)]
    cert = res.certificate
    verdict = f"{args.problem}: {word[res.status]}" + (f"; {uniq.status}" if uniq else "")
    emit(args, verdict, res.summary() + ("\n" + uniq.summary() if uniq else ""),
         {"file": args.problem, "exit_status": status, "status": res.status,
          "residual_norm": float(res.residual_norm),
          "certificate": None if cert is None else {
              "lambda_min": float(cert.lambda_min), "energy": float(cert.energy),
              "gap": float(cert.gap), "margin": float(cert.margin),
              "w": {str(list(J)): {"real": np.real(w).tolist(), "imag": np.imag(w).tolist()}
                    for J, w in cert.w.items()}},
          "summary": res.summary(), "written": written,
          "uniqueness": None if uniq is None else _uniqueness_doc(uniq)})
    if written:
        say(args, f"wrote {out}")
    return status


def _uniqueness_doc(u) -> dict:
    import numpy as np

    doc = {"status": u.status, "unique": u.unique, "distance": u.distance,
           "info": {k: (v if isinstance(v, (int, float, str, type(None))) else str(v))
                    for k, v in u.info.items()}}
    c = u.certificate
    if c is not None:
        doc["certificate"] = {
            "how": c.how, "support_dim": c.support_dim, "gap": c.gap, "ground": c.ground,
            "energy": c.energy, "injectivity": c.injectivity, "margin": c.margin,
            "radius": c.radius, "verified": c.verified,
            "w": {str(list(J)): {"real": np.real(w).tolist(), "imag": np.imag(w).tolist()}
                  for J, w in c.w.items()}}
    return doc
