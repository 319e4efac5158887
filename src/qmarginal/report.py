"""How a reconstruction is measured, and when a state counts as certified.

:func:`measure` takes a candidate state (any method's output), hermitises it, divides it by its
trace, and measures it against the problem's marginals independently of the solver that made
it: one ``eigvalsh`` for the spectrum and the library's partial traces for the marginals, all
in double precision whatever the input precision (a single-precision output is measured as the
single-precision matrix that is returned, upcast). The state is **certified** when

    every entry is finite, tr > 0,
    lambda_min(rho) >= -eig_tol,                                        (positivity)
    max_J max_{ab} |(tr_{J^c} rho - sigma_J)_{ab}| <= marginal_tol      (the marginals)

for the returned (Hermitian, trace-1) rho. The same :class:`Report` describes every method;
``report.verdict`` is the one line the command line prints first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from . import _backend as B
from .metrics import VALIDITY_ATOL, _per_marginal, _state_report, fidelity, trace_distance
from .problem import MarginalProblem

__all__ = ["Report", "Reconstruction", "FactoredReconstruction", "measure", "measure_factored",
           "VERDICT_CERTIFIED", "VERDICT_INCOMPATIBLE"]

VERDICT_CERTIFIED = "certified state"
VERDICT_INCOMPATIBLE = "incompatible (certificate verified)"


def _np(v):
    return np.asarray(B.to_numpy(v) if B.is_torch(v) else v)


@dataclass(frozen=True)
class Report:
    """Measurements of a reconstruction, the same for every method (batched entries are arrays).

    Attributes:
        method: the method's name.
        certified: the state meets the tolerances (see the module docstring), per element.
        verdict: one line: "certified state", "incompatible (certificate verified)" (a batch
            element proved incompatible), "not certified: <reason>", or, for the approximate
            methods, "approximate (<method>): not a certified state (...)"; per element.
        valid: the paper's test (lambda_min >= -1e-10 after hermitising and normalising).
        min_eigenvalue, negative_count, negative_sum: the spectrum of the returned state.
        max_marginal_deviation: max_J max |tr_{J^c} rho - sigma_J|.
        mean_marginal_fidelity, mean_marginal_trace_distance: over the marginals.
        trace: the real trace of the method's output before normalising.
        iterations, converged: the method's own count and stopping flag.
        wall_time: seconds for the whole call.
        tolerances: eig_tol, marginal_tol (certification) and validity_atol (the paper's test).
        settings: the method's settings as a dict.
        info: anything else the method reported.
    """

    method: str
    certified: Any
    verdict: Any
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
    settings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str]]:
        """(name, value) pairs for :meth:`table`; the verdict first."""
        def fmt(v):
            a = _np(v)
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
            if a.dtype.kind in "OUS":
                vals, counts = np.unique(a.astype(str), return_counts=True)
                return "; ".join(f"{c} x {v}" for v, c in zip(vals, counts))
            return f"min {a.min():.4g}, mean {a.mean():.4g}, max {a.max():.4g} (n={a.size})"

        eig = self.tolerances.get("eig_tol")
        marg = self.tolerances.get("marginal_tol")
        rows = [
            ("verdict", fmt(self.verdict)),
            ("method", self.method),
            (f"certified (lambda_min >= -{eig:g}, deviation <= {marg:g})", fmt(self.certified)),
            ("valid state (paper: lambda_min >= -1e-10)", fmt(self.valid)),
            ("min eigenvalue", fmt(self.min_eigenvalue)),
            ("negative eigenvalues (count)", fmt(self.negative_count)),
            ("negative eigenvalues (sum)", fmt(self.negative_sum)),
            ("max marginal deviation", fmt(self.max_marginal_deviation)),
            ("mean marginal fidelity", fmt(self.mean_marginal_fidelity)),
            ("mean marginal trace distance", fmt(self.mean_marginal_trace_distance)),
            ("trace (before normalising)", fmt(self.trace)),
            ("iterations", fmt(self.iterations)),
            ("converged (solver's own test)", fmt(self.converged)),
            ("wall time (s)", f"{self.wall_time:.4g}"),
        ]
        rows += [(f"setting: {k}", f"{v:g}" if isinstance(v, float) else str(v))
                 for k, v in self.settings.items() if k not in ("eig_tol", "marginal_tol")]
        rows += [(f"info: {k}", str(v)) for k, v in self.info.items()]
        return rows

    #: the rows of the short table (:meth:`table` with ``full=False``), by position in rows()
    SHORT_ROWS = ("verdict", "method", "certified", "min eigenvalue", "max marginal deviation",
                  "mean marginal fidelity", "mean marginal trace distance", "iterations",
                  "wall time (s)", "info: path", "info: route", "info: least_squares",
                  "info: auto_reason")

    def table(self, full: bool = True, width: int = 100) -> str:
        """The report as aligned text, one quantity per line, the verdict first.

        Args:
            full: every row (settings and solver info too); False: the main quantities only.
            width: values longer than this are cut (``to_dict`` holds them whole).
        """
        rows = self.rows()
        if not full:
            rows = [(k, v) for k, v in rows if k.startswith(self.SHORT_ROWS)]
        rows = [(k, v if len(v) <= width else v[:width - 3] + "...") for k, v in rows]
        pad = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{pad}}  {v}" for k, v in rows)

    def to_dict(self) -> dict:
        """The report as JSON-ready Python values (arrays become lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def _jsonable(v):
    if B.is_torch(v):
        v = B.to_numpy(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    return str(v)


@dataclass(frozen=True)
class Reconstruction:
    """A reconstructed global state and its :class:`Report`.

    ``state`` is Hermitian with trace 1 (the method's output, hermitised and trace-normalised),
    in the input's library, precision and device. For a certifying method it is certified
    (``report.certified``), except for the batch elements listed in ``errors`` and when
    ``strict=False`` returned a best iterate.

    Attributes:
        state: ``(*batch, D, D)``.
        report: the :class:`Report`.
        errors: {batch index: the error of that element} (IncompatibleMarginalsError or
            NotCertifiedError), for the elements that are not certified; empty otherwise.
    """

    state: Any
    report: Report
    errors: dict = field(default_factory=dict)

    @property
    def certified(self):
        """``report.certified``: a bool, or a boolean array over the batch."""
        return self.report.certified


class FactoredReconstruction(Reconstruction):
    """A reconstruction held as a factor, rho = V V^dagger / tr(V V^dagger) (the matrix-free
    path, which computes in numpy complex128 whatever the input's library and precision):
    ``factor`` is V (D x r), ``factored`` the
    :class:`~qmarginal.factored.FactoredState`; ``state`` materialises the dense rho on request,
    within :data:`qmarginal.factored.DENSE_MAX_BYTES` (beyond: a :class:`MarginalError` that
    names ``factor``; ``factored.state(max_bytes=...)`` for a larger budget)."""

    def __init__(self, factored, report: Report, errors: dict | None = None):
        object.__setattr__(self, "factored", factored)
        object.__setattr__(self, "report", report)
        object.__setattr__(self, "errors", dict(errors or {}))

    @property
    def state(self):
        return self.factored.state()

    @property
    def factor(self):
        return self.factored.factor

    def __repr__(self):
        return (f"FactoredReconstruction(D={self.factored.dim}, rank={self.factored.rank}, "
                f"verdict={self.report.verdict!r})")

    def __eq__(self, other):
        return self is other

    __hash__ = object.__hash__


#: measure_factored computes the fidelity and trace distance of marginals up to this size
#: densely (one eigendecomposition each); larger ones get the fidelity from the factor's
#: m x m Gram form and no trace distance.
FACTORED_DENSE_METRICS_MAX_DIM = 128


def measure_factored(problem: MarginalProblem, factored, *, eig_tol: float,
                     marginal_tol: float, method: str = "", certifies: bool = True,
                     iterations=0, converged=True, reason="", wall_time: float = 0.0,
                     settings: dict | None = None, info: dict | None = None) -> Report:
    """The :class:`Report` of a factored state, from its factor alone (no D x D matrix).

    rho = V V^dagger / ||V||_F^2 is positive semidefinite by construction (lambda_min >= 0,
    no eigenvalue computation); its marginals come from
    :func:`~qmarginal.factored.factor_marginal` (V contracted with its conjugate over the
    complement, independent of the solver's maps), and give the deviation, the fidelities and
    the trace distances, each d_J x d_J. Certified when the trace is positive and finite and
    every marginal is within ``marginal_tol``.
    """

    tr = factored.trace
    finite = bool(np.isfinite(factored.factor).all() and math.isfinite(tr) and tr > 0)
    devs, fids, tds = [], [], []
    skipped = []
    if finite:
        from .factored import regrouped

        for J, s in problem.marginals.items():
            s = np.asarray(B.to_numpy(s), dtype=np.complex128)
            red = factored.marginal(J)
            devs.append(float(np.abs(red - s).max()))
            d = s.shape[-1]
            if d <= FACTORED_DENSE_METRICS_MAX_DIM:
                fids.append(float(fidelity(red, s)))
                tds.append(float(trace_distance(red, s)))
                continue
            # a large marginal of a low-rank factor: red = A A^dagger with A of d x m, and
            # sqrt(F) = sum_i sqrt(mu_i), mu the eigenvalues of the m x m matrix A^dagger s A
            a = regrouped(factored.factor, J, factored.dims) / np.sqrt(tr)
            if a.shape[1] < d:
                mu = np.linalg.eigvalsh(a.conj().T @ s @ a)
                fids.append(float(min(1.0, np.sqrt(np.clip(mu, 0, None)).sum() ** 2)))
            else:
                fids.append(float(fidelity(red, s)))
            tds.append(math.nan)
            skipped.append(J)
    dev = max(devs) if finite else math.nan
    certified = finite and dev <= marginal_tol
    short = _shortfall(0.0, dev, eig_tol, marginal_tol, finite)
    nan = math.nan
    return Report(
        method=method, certified=certified,
        verdict=_verdict(method, certifies, certified, short, reason),
        valid=finite, min_eigenvalue=0.0 if finite else nan, negative_count=0,
        negative_sum=0.0 if finite else nan, max_marginal_deviation=dev,
        mean_marginal_fidelity=float(np.mean(fids)) if finite else nan,
        mean_marginal_trace_distance=(float(np.nanmean(tds)) if finite and len(skipped) <
                                      len(tds) else nan),
        trace=float(tr), iterations=iterations, converged=converged,
        wall_time=float(wall_time),
        tolerances={"eig_tol": float(eig_tol), "marginal_tol": float(marginal_tol),
                    "validity_atol": VALIDITY_ATOL},
        settings=dict(settings or {}),
        info={"positivity": "by construction (V V^dagger): no eigenvalue computation",
              "factor_shape": tuple(factored.factor.shape),
              **({"trace_distance": f"not computed for the {len(skipped)} marginals above "
                                    f"{FACTORED_DENSE_METRICS_MAX_DIM} x "
                                    f"{FACTORED_DENSE_METRICS_MAX_DIM} (one d_J^3 "
                                    "eigendecomposition each)"} if skipped else {}),
              **(info or {})},
    )


def _max_abs_deviation(sigma, red):
    """Largest |entry| of red - sigma over the last two axes."""
    d = B.abs_(red - sigma)
    return d.amax(dim=(-2, -1)) if B.is_torch(d) else d.max(axis=(-2, -1))


def _shortfall(lam, dev, eig_tol, marginal_tol, finite) -> str:
    if not finite:
        return "the output has non-finite entries or a trace <= 0"
    parts = []
    if not lam >= -eig_tol:
        parts.append(f"lambda_min {lam:.3g} < -{eig_tol:g}")
    if not dev <= marginal_tol:
        parts.append(f"marginal deviation {dev:.3g} > {marginal_tol:g}")
    return ", ".join(parts)


def _verdict(method, certifies, certified, shortfall, reason) -> str:
    if certified:
        return VERDICT_CERTIFIED
    if not certifies:
        return f"approximate ({method}): not a certified state ({shortfall})"
    return f"not certified: {reason or shortfall}" + (f" ({shortfall})" if reason else "")


def measure(problem: MarginalProblem, state, *, eig_tol: float, marginal_tol: float,
            method: str = "", certifies: bool = False, iterations=0, converged=True,
            reason="", wall_time: float = 0.0, settings: dict | None = None,
            info: dict | None = None, out_dtype=None) -> tuple[Any, Report]:
    """Hermitise and trace-normalise ``state``, measure it against ``problem``, certify it.

    Every partial trace tr_{J^c} rho is computed once (grouped by marginal size) and gives the
    marginal deviation, the fidelities and the trace distances; the spectrum comes from one
    eigvalsh. All of it in complex128.

    Args:
        problem: the marginals the state is measured against (numpy or torch, any batch).
        state: the candidate(s), ``(*batch, D, D)``, numpy or torch.
        eig_tol, marginal_tol: the certification tolerances.
        method, certifies, iterations, converged, reason, wall_time, settings, info: recorded
            in the report (``reason``, a string or one per element, says why a certifying
            method did not converge).
        out_dtype: the complex dtype of the returned state (default: the state's own precision,
            complex128 for real input); the state is measured as returned, after this cast.

    Returns:
        (rho, report): the Hermitian, trace-normalised state and its :class:`Report`.
    """
    x = B.to_complex(state)
    if B.is_torch(x):
        torch = B.torch_module()
        out_dtype = out_dtype or x.dtype
        x = x.to(torch.complex128)
    else:
        out_dtype = np.dtype(out_dtype or x.dtype)
        x = np.asarray(x, dtype=np.complex128)
    D = x.shape[-1]
    batch = tuple(x.shape[:-2])
    h = B.hermitian_part(x)
    tr = B.real(B.trace(h))
    finite = _finite(h) & (_np(tr) > 0)
    if not finite.all():  # measure a stand-in; the element is reported not certified
        eye = B.eye(D, like=h) / D
        keep = B.as_array(finite, like=tr) if B.is_torch(h) else finite
        if B.is_torch(h):
            h = torch.where(keep[..., None, None], h, eye)
            tr = torch.where(keep, tr, torch.ones_like(tr))
        else:
            h = np.where(keep[..., None, None], h, eye)
            tr = np.where(keep, tr, 1.0)
    rho = h / tr[..., None, None]
    if B.is_torch(rho):
        rho_out = rho.to(out_dtype)
        rho_meas = rho_out.to(torch.complex128)
    else:
        rho_out = rho.astype(out_dtype, copy=False)
        rho_meas = rho_out.astype(np.complex128, copy=False)
    sr = _state_report(rho_meas, VALIDITY_ATOL)
    marg = problem.marginals
    if B.is_torch(rho_meas) and not problem.is_torch:
        marg = {J: B.as_array(s, like=rho_meas) for J, s in marg.items()}
    elif not B.is_torch(rho_meas) and problem.is_torch:
        marg = {J: B.to_numpy(s) for J, s in marg.items()}
    marg = {J: (s.to(torch.complex128) if B.is_torch(s) else np.asarray(s, dtype=np.complex128))
            for J, s in marg.items()}
    devs, fids, tds = _per_marginal(rho_meas, marg, problem.dims,
                                    _max_abs_deviation, fidelity, trace_distance)
    dev = devs.amax(-1) if B.is_torch(devs) else devs.max(-1)
    shape = np.broadcast_shapes(np.shape(finite), np.shape(_np(dev)))
    batch = shape
    finite = np.broadcast_to(finite, shape)
    lam = np.broadcast_to(_np(sr.min_eigenvalue), shape)
    dev_np = np.broadcast_to(_np(dev), shape)
    certified = finite & (lam >= -eig_tol) & (dev_np <= marginal_tol)
    reasons = np.broadcast_to(np.asarray(reason, dtype=object), certified.shape) \
        if np.ndim(reason) else np.full(certified.shape, reason, dtype=object)
    verdicts = np.empty(certified.shape, dtype=object)
    for i in np.ndindex(certified.shape):
        short = _shortfall(float(lam[i]), float(dev_np[i]), eig_tol, marginal_tol, bool(finite[i]))
        verdicts[i] = _verdict(method, certifies, bool(certified[i]), short, reasons[i])

    def nan_bad(a):
        a = np.broadcast_to(_np(a).astype(float), shape)
        return np.where(finite, a, np.nan)

    single = not batch
    to_py = (lambda a: float(np.asarray(a))) if single else (lambda a: a)
    report = Report(
        method=method,
        certified=bool(certified) if single else certified,
        verdict=str(verdicts[()]) if single else verdicts,
        valid=bool(_np(sr.valid) & finite) if single else _np(sr.valid) & finite,
        min_eigenvalue=to_py(nan_bad(lam)),
        negative_count=int(_np(sr.negative_count)) if single else np.broadcast_to(
            _np(sr.negative_count), shape).copy(),
        negative_sum=to_py(nan_bad(sr.negative_sum)),
        max_marginal_deviation=to_py(nan_bad(dev_np)),
        mean_marginal_fidelity=to_py(nan_bad(_np(fids).mean(-1))),
        mean_marginal_trace_distance=to_py(nan_bad(_np(tds).mean(-1))),
        trace=to_py(np.broadcast_to(_np(B.real(B.trace(B.hermitian_part(x)))), shape).copy()),
        iterations=iterations,
        converged=converged,
        wall_time=float(wall_time),
        tolerances={"eig_tol": float(eig_tol), "marginal_tol": float(marginal_tol),
                    "validity_atol": VALIDITY_ATOL},
        settings=dict(settings or {}),
        info=dict(info or {}),
    )
    return rho_out, report


def _finite(h) -> np.ndarray:
    """Per element of a batch of matrices: every entry finite."""
    if B.is_torch(h):
        torch = B.torch_module()
        return _np(torch.isfinite(torch.view_as_real(h)).flatten(-3).all(-1))
    return np.isfinite(h).all(axis=(-2, -1))
