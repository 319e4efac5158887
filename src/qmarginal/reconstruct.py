"""One entry point for every reconstruction method: ``reconstruct(problem, method=...)``.

Each method is a function ``solve(problem, **options) -> SolverOutput`` registered by name in
:data:`METHODS` as ``"module:function"`` and imported only when called, so optional heavy
dependencies (cvxpy, torch) are loaded only by the methods that need them. ``reconstruct``
times the call and measures the result the same way for every method (:class:`Report`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

import numpy as np

from . import _backend as B
from .metrics import VALIDITY_ATOL, _per_marginal, _state_report, fidelity, trace_distance
from .problem import MarginalProblem

__all__ = ["reconstruct", "Reconstruction", "Report", "SolverOutput", "METHODS", "register_method"]

#: method name -> "module:function" (relative to the qmarginal package) of its solver.
METHODS: dict[str, str] = {
    "mio": "qmarginal.solvers.mio:solve",
    "exact": "qmarginal.solvers.exact:solve",
    "auto": "qmarginal.solvers.auto:solve",
    "sdp": "qmarginal.solvers.sdp:solve",
    "maxent": "qmarginal.solvers.maxent:solve",
    "cdae": "qmarginal.learn.pipeline:solve_cdae",
    "cdae+mio": "qmarginal.learn.pipeline:solve_cdae_mio",
}


def register_method(name: str, target: str) -> None:
    """Register ``target`` ("package.module:function") as the solver for ``method=name``."""
    METHODS[name] = target


@dataclass
class SolverOutput:
    """What a solver returns to :func:`reconstruct`.

    Attributes:
        state: the candidate global state(s), ``(*batch, D, D)``.
        iterations: iterations used (int, or per batch element).
        converged: whether the solver's own stopping test was met (bool or per batch element).
        tolerances: the tolerances the solver used, by name.
        info: anything else worth reporting (path taken, objective values, ...).
    """

    state: Any
    iterations: Any = 0
    converged: Any = True
    tolerances: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    """Measurements of a reconstruction, the same for every method (batched entries are arrays).

    ``valid`` is the paper's test (hermitise, normalise the trace, lambda_min >= -1e-10).
    Marginal measures compare tr_{J^c} rho of the hermitised, trace-normalised state with sigma_J.
    """

    method: str
    valid: Any
    min_eigenvalue: Any
    negative_count: Any
    negative_sum: Any
    max_marginal_deviation: Any
    mean_marginal_fidelity: Any
    mean_marginal_trace_distance: Any
    trace: Any
    iterations: Any
    converged: Any
    wall_time: float
    tolerances: dict
    info: dict

    def rows(self) -> list[tuple[str, str]]:
        def fmt(v):
            a = np.asarray(B.to_numpy(v) if B.is_torch(v) else v)
            if a.ndim == 0:
                x = a.item()
                if isinstance(x, (bool, np.bool_)):
                    return str(bool(x))
                if isinstance(x, (int, np.integer)):
                    return str(int(x))
                if isinstance(x, float):
                    return f"{x:.6g}"
                return str(x)
            if a.dtype == bool:
                return f"{int(a.sum())}/{a.size} true"
            return f"min {a.min():.4g}, mean {a.mean():.4g}, max {a.max():.4g} (n={a.size})"

        rows = [
            ("method", self.method),
            ("valid state (lambda_min >= -1e-10)", fmt(self.valid)),
            ("min eigenvalue", fmt(self.min_eigenvalue)),
            ("negative eigenvalues (count)", fmt(self.negative_count)),
            ("negative eigenvalues (sum)", fmt(self.negative_sum)),
            ("max marginal deviation", fmt(self.max_marginal_deviation)),
            ("mean marginal fidelity", fmt(self.mean_marginal_fidelity)),
            ("mean marginal trace distance", fmt(self.mean_marginal_trace_distance)),
            ("trace (before normalising)", fmt(self.trace)),
            ("iterations", fmt(self.iterations)),
            ("converged", fmt(self.converged)),
            ("wall time (s)", f"{self.wall_time:.4g}"),
        ]
        rows += [(f"tolerance: {k}", f"{v:g}" if isinstance(v, float) else str(v))
                 for k, v in self.tolerances.items()]
        rows += [(f"info: {k}", str(v)) for k, v in self.info.items()]
        return rows

    def table(self) -> str:
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


@dataclass(frozen=True)
class Reconstruction:
    """A reconstructed global state and its :class:`Report`.

    ``state`` is Hermitian with trace 1 (the solver's output, hermitised and trace-normalised);
    check ``report.valid`` for positivity.
    """

    state: Any
    report: Report


def _max_abs_deviation(sigma, red):
    """Largest |entry| of red - sigma over the last two axes."""
    d = B.abs_(red - sigma)
    return d.amax(dim=(-2, -1)) if B.is_torch(d) else d.max(axis=(-2, -1))


def measure(problem: MarginalProblem, state, *, method: str = "", iterations=0, converged=True,
            wall_time: float = 0.0, tolerances: dict | None = None, info: dict | None = None,
            atol: float = VALIDITY_ATOL) -> tuple[Any, Report]:
    """Hermitise and trace-normalise ``state`` and measure it against ``problem``.

    Every partial trace tr_{J^c} rho is computed once (grouped by marginal size, see
    :func:`qmarginal.metrics.mean_marginal_fidelity`) and gives the marginal deviation, the
    fidelities and the trace distances; the state's spectrum comes from one eigvalsh.
    """
    h = B.hermitian_part(B.to_complex(state))
    sr = _state_report(h, atol)
    tr = B.real(B.trace(h))
    rho = h / tr[..., None, None]
    devs, fids, tds = _per_marginal(rho, problem.marginals, problem.dims,
                                    _max_abs_deviation, fidelity, trace_distance)
    to_py = (lambda a: a) if (B.is_torch(rho) or problem.batch_shape) else (
        lambda a: float(np.asarray(a)))
    report = Report(
        method=method,
        valid=sr.valid,
        min_eigenvalue=sr.min_eigenvalue,
        negative_count=sr.negative_count,
        negative_sum=sr.negative_sum,
        max_marginal_deviation=to_py(devs.amax(-1) if B.is_torch(devs) else devs.max(-1)),
        mean_marginal_fidelity=to_py(fids.mean(-1)),
        mean_marginal_trace_distance=to_py(tds.mean(-1)),
        trace=sr.trace,
        iterations=iterations,
        converged=converged,
        wall_time=wall_time,
        tolerances={"validity_atol": atol, **(tolerances or {})},
        info=dict(info or {}),
    )
    return rho, report


#: methods meant to return a valid state: when one of them does not, reconstruct() checks the
#: input's compatibility (the MIO and learned methods make no such promise).
STATE_METHODS = {"exact", "sdp", "maxent"}

#: marginal deviation above which a STATE_METHODS result triggers the compatibility check.
CHECK_DEVIATION = 1e-6


def _split_batch(problem: MarginalProblem):
    """The elements of a (possibly batched) problem as a flat list, and the batch shape."""
    batch = problem.batch_shape
    if not batch:
        return [problem], batch
    flat = int(np.prod(batch))
    table = {J: s.reshape((flat,) + tuple(s.shape[-2:])) for J, s in problem.marginals.items()}
    return [MarginalProblem({J: a[i] for J, a in table.items()}, problem.dims,
                            tolerances=problem.tolerances, validate=False)
            for i in range(flat)], batch


def _failed(report: Report):
    """Per batch element: the solver did not report convergence and the result is not a valid
    state with the marginals (to CHECK_DEVIATION). A converged result is trusted, so the
    compatible path pays nothing."""
    def arr(v):
        return np.asarray(B.to_numpy(v) if B.is_torch(v) else v)

    valid = arr(report.valid).astype(bool)
    dev = arr(report.max_marginal_deviation).astype(float)
    conv = arr(report.converged).astype(bool)
    bad = ~valid | ~(dev <= CHECK_DEVIATION)
    return np.ravel(np.broadcast_to(~conv, bad.shape) & bad)


def _incompatible_error(problem, results, indices):
    from .errors import IncompatibleMarginalsError

    bad = [i for i, r in zip(indices, results) if not r.compatible]
    first = results[[r.compatible for r in results].index(False)]
    where = f" (batch elements {bad})" if problem.batch_shape else ""
    cert = first.certificate
    how = (f"certificate: lambda_min(W) = {cert.lambda_min:.6g} > sum_J tr(w_J sigma_J) = "
           f"{cert.energy:.6g}" if cert is not None and cert.verified else
           f"least-squares residual {first.residual_norm:.3g}, no certificate verified")
    result = first if not problem.batch_shape else results
    return IncompatibleMarginalsError(
        f"no state has these marginals{where}: {how}; least-squares distance to the nearest "
        f"compatible marginals {first.residual_norm:.3g} (pass least_squares=True to reconstruct "
        f"a state with those)", result)


def reconstruct(problem: MarginalProblem, method: str = "exact", *, least_squares: bool = False,
                check: bool | None = None, **options) -> Reconstruction:
    """Find a global state with the marginals of ``problem`` by the named method.

    Incompatible input. For the methods that promise a valid state (:data:`STATE_METHODS`:
    "exact", "sdp", "maxent"), a result that the solver does not call converged and that is not
    a valid state with the marginals (to :data:`CHECK_DEVIATION`) triggers
    :func:`qmarginal.check_compatibility` (a solver that proves infeasibility, as the SDP does,
    triggers it too); when it finds the
    input incompatible, :class:`IncompatibleMarginalsError` is raised carrying the
    :class:`~qmarginal.CompatibilityResult` (certificate, nearest marginals, a state with them).
    The compatible path pays nothing for this. With ``least_squares=True`` the check runs first
    and, for incompatible input, the method is applied to the nearest compatible marginals (in
    least squares) instead; the report then measures the state against those marginals and says
    so in ``info`` (``least_squares``, ``distance_to_targets``). Should the method fail on them
    (they lie on the boundary of the compatible set), the least-squares state itself is returned.

    Args:
        problem: the marginals (possibly batched; numpy or torch, any device).
        method: one of :data:`METHODS` (``"exact"`` by default).
        least_squares: reconstruct from the nearest compatible marginals when the input is
            incompatible (for noisy, measured marginals; build those problems with
            ``validate=False``).
        check: run the compatibility check after solving: None (default) when a state-method's
            result fails, True always, False never.
        **options: passed to the method's solver (see its documentation).

    Returns:
        :class:`Reconstruction` with the hermitised, trace-normalised state and its report.

    Raises:
        MarginalError: unknown method or invalid options/input.
        IncompatibleMarginalsError: no state has these marginals (and ``least_squares`` is off).
    """
    from .errors import IncompatibleMarginalsError, MarginalError

    if not isinstance(problem, MarginalProblem):
        raise MarginalError(f"problem must be a MarginalProblem, got {type(problem).__name__}")
    if method not in METHODS:
        raise MarginalError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    module, func = METHODS[method].split(":")
    solve = getattr(import_module(module), func)
    t0 = time.perf_counter()
    target = problem
    extra_info: dict = {}
    ls_results = None
    if least_squares:
        from .compatibility import check_compatibility

        parts, batch = _split_batch(problem.to_numpy() if problem.is_torch else problem)
        ls_results = [check_compatibility(p) for p in parts]
        if not all(r.compatible for r in ls_results):
            table = {J: np.stack([r.nearest_marginals[J] for r in ls_results]).reshape(
                batch + tuple(s.shape[-2:])) for J, s in problem.marginals.items()}
            if problem.is_torch:
                like = next(iter(problem.marginals.values()))
                table = {J: B.as_array(a, like=like).to(like.dtype) for J, a in table.items()}
            target = problem.with_marginals(table, validate=False)
            dist = [r.residual_norm for r in ls_results]
            extra_info.update(least_squares=True,
                              distance_to_targets=dist[0] if not batch else np.array(dist),
                              input_status=[r.status for r in ls_results] if batch
                              else ls_results[0].status)
    try:
        out: SolverOutput = solve(target, **options)
    except IncompatibleMarginalsError as exc:
        if target is not problem and ls_results is not None:
            out = None  # the method failed on the nearest marginals: use the least-squares state
        else:
            if exc.result is not None:
                raise
            from .compatibility import check_compatibility

            parts, _ = _split_batch(problem.to_numpy() if problem.is_torch else problem)
            results = [check_compatibility(p) for p in parts]
            if all(r.compatible for r in results):
                raise
            raise _incompatible_error(problem, results, range(len(parts))) from exc
    if out is None:  # fall back to the least-squares states
        st = np.stack([r.state for r in ls_results])
        st = st.reshape(problem.batch_shape + st.shape[-2:]) if problem.batch_shape else st[0]
        if problem.is_torch:
            like = next(iter(problem.marginals.values()))
            st = B.as_array(st, like=like).to(like.dtype)
        out = SolverOutput(st, iterations=0, converged=False,
                           info={"fallback": f"{method} failed on the nearest marginals; "
                                             "returned the least-squares state"})
    wall = time.perf_counter() - t0
    rho, report = measure(target, out.state, method=method, iterations=out.iterations,
                          converged=out.converged, wall_time=wall, tolerances=out.tolerances,
                          info={**out.info, **extra_info})
    if target is not problem and not np.all(np.asarray(B.to_numpy(report.valid) if B.is_torch(
            report.valid) else report.valid)):
        # the method failed on the (boundary) nearest marginals: use the least-squares states
        st = np.stack([r.state for r in ls_results])
        st = st.reshape(problem.batch_shape + st.shape[-2:]) if problem.batch_shape else st[0]
        if problem.is_torch:
            like = next(iter(problem.marginals.values()))
            st = B.as_array(st, like=like).to(like.dtype)
        rho, report = measure(target, st, method=method, iterations=out.iterations,
                              converged=out.converged, wall_time=time.perf_counter() - t0,
                              tolerances=out.tolerances,
                              info={**out.info, **extra_info,
                                    "fallback": f"{method} gave no valid state for the nearest "
                                                "marginals; returned the least-squares state"})
    run_check = (check is True) or (check is None and method in STATE_METHODS)
    if run_check and ls_results is None:
        failed = _failed(report) if check is None else np.ones(
            int(np.prod(problem.batch_shape)) if problem.batch_shape else 1, dtype=bool)
        if failed.any():
            from .compatibility import check_compatibility

            parts, _ = _split_batch(problem.to_numpy() if problem.is_torch else problem)
            idx = [int(i) for i in np.flatnonzero(failed)]
            results = [check_compatibility(parts[i]) for i in idx]
            if not all(r.compatible for r in results):
                raise _incompatible_error(problem, results, idx)
            note = (f"input checked compatible ({results[0].method}, residual "
                    f"{max(r.residual_norm for r in results):.2e})")
            if _failed(report).any():
                note += f"; the {method} result itself is not a valid state to tolerance"
            report.info["compatibility"] = note
    elif least_squares and ls_results is not None and "least_squares" not in extra_info:
        report.info["compatibility"] = "input compatible (least_squares not needed)"
    return Reconstruction(rho, report)
