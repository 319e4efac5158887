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
from .metrics import VALIDITY_ATOL, fidelity, state_report, trace_distance
from .partial_trace import partial_trace
from .problem import MarginalProblem

__all__ = ["reconstruct", "Reconstruction", "Report", "SolverOutput", "METHODS", "register_method"]

#: method name -> "module:function" (relative to the qmarginal package) of its solver.
METHODS: dict[str, str] = {
    "mio": "qmarginal.solvers.mio:solve",
    "exact": "qmarginal.solvers.exact:solve",
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


def _mean(values):
    if B.is_torch(values[0]):
        torch = B.torch_module()
        return torch.stack(values).mean(0)
    return np.mean(np.stack([np.asarray(v) for v in values]), axis=0)


def measure(problem: MarginalProblem, state, *, method: str = "", iterations=0, converged=True,
            wall_time: float = 0.0, tolerances: dict | None = None, info: dict | None = None,
            atol: float = VALIDITY_ATOL) -> tuple[Any, Report]:
    """Hermitise and trace-normalise ``state`` and measure it against ``problem``."""
    h = B.hermitian_part(B.to_complex(state))
    sr = state_report(h, atol=atol)
    tr = B.real(B.trace(h))
    rho = h / tr[..., None, None]
    fids, tds = [], []
    for J, sigma in problem.marginals.items():
        red = partial_trace(rho, J, problem.dims)
        sig = B.as_array(sigma, like=red)
        fids.append(fidelity(sig, red))
        tds.append(trace_distance(sig, red))
    to_py = (lambda a: a) if (B.is_torch(rho) or problem.batch_shape) else (
        lambda a: float(np.asarray(a)))
    report = Report(
        method=method,
        valid=sr.valid,
        min_eigenvalue=sr.min_eigenvalue,
        negative_count=sr.negative_count,
        negative_sum=sr.negative_sum,
        max_marginal_deviation=to_py(problem.marginal_deviation(rho)),
        mean_marginal_fidelity=to_py(_mean(fids)),
        mean_marginal_trace_distance=to_py(_mean(tds)),
        trace=sr.trace,
        iterations=iterations,
        converged=converged,
        wall_time=wall_time,
        tolerances={"validity_atol": atol, **(tolerances or {})},
        info=dict(info or {}),
    )
    return rho, report


def reconstruct(problem: MarginalProblem, method: str = "exact", **options) -> Reconstruction:
    """Find a global state with the marginals of ``problem`` by the named method.

    Args:
        problem: the marginals (possibly batched; numpy or torch, any device).
        method: one of :data:`METHODS` (``"exact"`` by default).
        **options: passed to the method's solver (see its documentation).

    Returns:
        :class:`Reconstruction` with the hermitised, trace-normalised state and its report.

    Raises:
        MarginalError: unknown method or invalid options/input.
        IncompatibleMarginalsError: when the method proves that no state has these marginals.
    """
    from .errors import MarginalError

    if not isinstance(problem, MarginalProblem):
        raise MarginalError(f"problem must be a MarginalProblem, got {type(problem).__name__}")
    if method not in METHODS:
        raise MarginalError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    module, func = METHODS[method].split(":")
    solve = getattr(import_module(module), func)
    t0 = time.perf_counter()
    out: SolverOutput = solve(problem, **options)
    wall = time.perf_counter() - t0
    rho, report = measure(problem, out.state, method=method, iterations=out.iterations,
                          converged=out.converged, wall_time=wall, tolerances=out.tolerances,
                          info=out.info)
    return Reconstruction(rho, report)
