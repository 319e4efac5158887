"""method="sdp": the paper's semidefinite program, Eq. (2), through CVXPY (the reference baseline).

    maximize  tr(rho)   subject to   tr_{J^c} rho = sigma_J  for every J,   rho >= 0.

The trace is fixed by the constraints, so this is a feasibility problem. Two formulations:

- ``form="paper"``: a Hermitian CVXPY variable and one nested ``cvxpy.partial_trace`` per
  traced site and marginal, as the paper's code writes it.
- ``form="sparse"`` (default): the real vectorisation v of rho (the real parts of the upper
  triangle with the diagonal, then the imaginary parts of the strict upper triangle: D^2 reals) is
  the only variable; one sparse real matrix maps v to every marginal entry (real and imaginary
  parts of each sigma_J's upper triangle), and positivity is the real 2D x 2D form
  [[Re rho, -Im rho], [Im rho, Re rho]] >= 0, an affine image of v. CVXPY compiles it much faster
  than the nested partial traces, and SCS's primal vector is v itself, so an initial guess
  ``x0`` can be handed to SCS.

Each problem is built once per structure (dims, subsets, form, solver) with the marginals as
``cvxpy.Parameter`` s and kept in a small cache, so solving another problem of the same structure
only updates the parameters (CVXPY's DPP path skips recompilation). Batches are solved one
element at a time. CVXPY is an optional dependency: ``pip install 'qmarginal[sdp]'``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .. import _backend as B
from .._sites import complement, subset_dim
from ..errors import MarginalError
from ..problem import MarginalProblem
from ._api import Settings, SolverOutput

__all__ = ["solve", "SDPSettings", "FORMS", "clear_cache"]

FORMS = ("sparse", "paper")
_SOLVERS = ("SCS", "CLARABEL", "MOSEK")
_CACHE_SIZE = 16
_CACHE: "OrderedDict[tuple, _Model]" = OrderedDict()


def _cvxpy():
    """Import CVXPY or fail with a message naming the extra."""
    try:
        import cvxpy
    except ImportError as exc:  # pragma: no cover - exercised only without cvxpy
        raise ImportError(
            "method='sdp' needs CVXPY and an SDP solver; install them with "
            "`pip install 'qmarginal[sdp]'`"
        ) from exc
    return cvxpy


@dataclass(frozen=True)
class SDPSettings(Settings):
    """Settings of the SDP baseline.

    Attributes:
        eig_tol, marginal_tol: the certification tolerances (None: by the input precision);
            the polishing step solves to them.
        form: "sparse" (one sparse linear map, default) or "paper" (nested partial traces).
        solver: "SCS" (default), "CLARABEL", or "MOSEK" (when installed).
        eps: the solver's feasibility/optimality tolerance (SCS: eps_abs = eps_rel = eps;
            Clarabel: tol_feas = tol_gap_abs = tol_gap_rel = eps); None keeps the solver's default.
        maxiter: the SDP solver's iteration limit (None: the solver's default).
        time_limit: seconds for the SDP solve and again for the polishing (None: no limit).
        polish: refine the SDP solver's answer with the exact solver warm-started from it
            (an SDP solver's solution meets its own tolerance, typically 1e-4 to 1e-8, not the
            certification tolerances; without polishing such an answer is "not certified").
        warm_start: pass ``warm_start=True`` to CVXPY (SCS restarts from the previous solution of
            the same cached structure).
        verbose: let the solver print its log.
        solver_options: any other keyword arguments for the solver, passed through.
    """

    form: str = "sparse"
    solver: str = "SCS"
    eps: float | None = None
    maxiter: int | None = None
    time_limit: float | None = None
    polish: bool = True
    warm_start: bool = False
    verbose: bool = False
    solver_options: dict = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        if self.form not in FORMS:
            raise MarginalError(f"unknown SDP form {self.form!r}; use one of {FORMS}")
        if not isinstance(self.solver, str) or self.solver.upper() not in _SOLVERS:
            raise MarginalError(f"unknown SDP solver {self.solver!r}; use one of {_SOLVERS}")
        if self.eps is not None and not (isinstance(self.eps, (int, float)) and self.eps > 0):
            raise MarginalError(f"eps must be positive, got {self.eps!r}")
        if self.maxiter is not None and (isinstance(self.maxiter, bool) or
                                         not isinstance(self.maxiter, int) or self.maxiter < 1):
            raise MarginalError(f"maxiter must be None or an integer >= 1, got {self.maxiter!r}")
        if self.time_limit is not None and not (isinstance(self.time_limit, (int, float))
                                                and self.time_limit > 0):
            raise MarginalError(f"time_limit must be positive, got {self.time_limit!r}")
        if not isinstance(self.solver_options, dict):
            raise MarginalError("solver_options must be a dict")

    def options(self) -> dict:
        """Keyword arguments for ``cvxpy.Problem.solve``."""
        name = self.solver.upper()
        opts: dict = {}
        if name == "SCS":
            if self.eps is not None:
                opts.update(eps_abs=self.eps, eps_rel=self.eps)
            if self.maxiter is not None:
                opts["max_iters"] = int(self.maxiter)
            if self.time_limit is not None:
                opts["time_limit_secs"] = float(self.time_limit)
        elif name == "CLARABEL":
            if self.eps is not None:
                opts.update(tol_feas=self.eps, tol_gap_abs=self.eps, tol_gap_rel=self.eps)
            if self.maxiter is not None:
                opts["max_iter"] = int(self.maxiter)
            if self.time_limit is not None:
                opts["time_limit"] = float(self.time_limit)
        else:  # MOSEK
            params = {}
            if self.eps is not None:
                params.update({"MSK_DPAR_INTPNT_CO_TOL_PFEAS": self.eps,
                               "MSK_DPAR_INTPNT_CO_TOL_DFEAS": self.eps,
                               "MSK_DPAR_INTPNT_CO_TOL_REL_GAP": self.eps})
            if self.maxiter is not None:
                params["MSK_IPAR_INTPNT_MAX_ITERATIONS"] = int(self.maxiter)
            if self.time_limit is not None:
                params["MSK_DPAR_OPTIMIZER_MAX_TIME"] = float(self.time_limit)
            if params:
                opts["mosek_params"] = params
        opts.update(self.solver_options)
        return opts


# ---------------------------------------------------------------------- the real vectorisation
def _upper(D: int):
    """Index arrays of the upper triangle with diagonal, and of the strict upper triangle."""
    return np.triu_indices(D), np.triu_indices(D, 1)


def _positions(D: int):
    """Where Re rho[i, j] and Im rho[i, j] live in v, and the sign of the imaginary part."""
    (iu, ju), (is_, js) = _upper(D)
    n_re = len(iu)
    pos_re = np.empty((D, D), dtype=np.int64)
    pos_re[iu, ju] = np.arange(n_re)
    pos_re[ju, iu] = np.arange(n_re)
    pos_im = np.zeros((D, D), dtype=np.int64)
    sign_im = np.zeros((D, D))
    pos_im[is_, js] = n_re + np.arange(len(is_))
    pos_im[js, is_] = n_re + np.arange(len(is_))
    sign_im[is_, js] = 1.0
    sign_im[js, is_] = -1.0
    return pos_re, pos_im, sign_im, n_re + len(is_)


def vectorize(rho) -> np.ndarray:
    """The real vectorisation v of a Hermitian matrix (see the module docstring)."""
    rho = np.asarray(rho)
    D = rho.shape[-1]
    (iu, ju), (is_, js) = _upper(D)
    return np.concatenate([rho[iu, ju].real, rho[is_, js].imag])


def devectorize(v, D: int) -> np.ndarray:
    """The Hermitian matrix with real vectorisation ``v``."""
    pos_re, pos_im, sign_im, _ = _positions(D)
    v = np.asarray(v, dtype=float)
    return v[pos_re] + 1j * sign_im * v[pos_im]


def _subset_indices(J, dims) -> np.ndarray:
    """idx[c, a]: the global basis index whose digits are a on the sites J and c on J^c."""
    n = len(dims)
    traced = complement(J, n)
    digits = np.indices(dims).reshape(n, -1)  # digits[s, i] of global index i
    a = np.ravel_multi_index(tuple(digits[s] for s in J), tuple(dims[s] for s in J)) if J else \
        np.zeros(digits.shape[1], dtype=np.int64)
    c = np.ravel_multi_index(tuple(digits[s] for s in traced), tuple(dims[s] for s in traced)) \
        if traced else np.zeros(digits.shape[1], dtype=np.int64)
    idx = np.empty((subset_dim(traced, dims), subset_dim(J, dims)), dtype=np.int64)
    idx[c, a] = np.arange(digits.shape[1])
    return idx


def marginal_map(dims, subsets) -> sp.csr_matrix:
    """The sparse real matrix A with A @ vectorize(rho) = marginal_vector(marginals of rho).

    Rows, for each J in order: Re sigma_J[a, b] for a <= b, then Im sigma_J[a, b] for a < b.
    """
    dims = tuple(dims)
    D = math.prod(dims)
    pos_re, pos_im, sign_im, n_v = _positions(D)
    rows, cols, vals = [], [], []
    offset = 0
    for J in subsets:
        idx = _subset_indices(J, dims)
        dJ = idx.shape[1]
        (ia, ib), (sa, sb) = _upper(dJ)
        # Re part: rows offset + k, sum over c of Re rho[idx[c, a], idx[c, b]]
        gi, gj = idx[:, ia], idx[:, ib]  # (d_Jc, n_upper)
        k = np.broadcast_to(np.arange(len(ia)), gi.shape)
        rows.append((offset + k).ravel())
        cols.append(pos_re[gi, gj].ravel())
        vals.append(np.ones(gi.size))
        offset += len(ia)
        gi, gj = idx[:, sa], idx[:, sb]
        k = np.broadcast_to(np.arange(len(sa)), gi.shape)
        rows.append((offset + k).ravel())
        cols.append(pos_im[gi, gj].ravel())
        vals.append(sign_im[gi, gj].ravel())
        offset += len(sa)
    A = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(offset, n_v)).tocsr()
    A.sum_duplicates()
    return A


def marginal_vector(marginals) -> np.ndarray:
    """The right-hand side of :func:`marginal_map`: the marginals' entries in the same order."""
    parts = []
    for sigma in marginals:
        s = np.asarray(sigma)
        d = s.shape[-1]
        (ia, ib), (sa, sb) = _upper(d)
        # the Hermitian part, so that slightly non-Hermitian input is read consistently
        parts += [0.5 * (s[ia, ib] + s[ib, ia].conj()).real,
                  0.5 * (s[sa, sb] + s[sb, sa].conj()).imag]
    return np.concatenate(parts)


def _embedding_map(D: int) -> sp.csr_matrix:
    """P with reshape(P @ v, (2D, 2D)) = [[Re rho, -Im rho], [Im rho, Re rho]] (row-major)."""
    pos_re, pos_im, sign_im, n_v = _positions(D)
    r = np.arange(D)[:, None] * (2 * D) + np.arange(D)[None, :]  # flat index of block (0, 0)
    blocks = [
        (r, pos_re, np.ones((D, D))),                      # (0, 0): Re
        (r + D, pos_im, -sign_im),                         # (0, 1): -Im
        (r + 2 * D * D, pos_im, sign_im),                  # (1, 0): Im
        (r + 2 * D * D + D, pos_re, np.ones((D, D))),      # (1, 1): Re
    ]
    rows = np.concatenate([b[0].ravel() for b in blocks])
    cols = np.concatenate([b[1].ravel() for b in blocks])
    vals = np.concatenate([b[2].ravel() for b in blocks])
    keep = vals != 0
    return sp.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=(4 * D * D, n_v))


# ---------------------------------------------------------------------- cached CVXPY problems
@dataclass
class _Model:
    problem: object
    params: list
    form: str
    D: int
    variable: object
    build_time: float
    rows: np.ndarray | None = None
    solves: int = 0

    def set_marginals(self, sigmas) -> None:
        if self.form == "sparse":
            b = marginal_vector(sigmas)
            self.params[0].value = b if self.rows is None else b[self.rows]
        else:
            for p, s in zip(self.params, sigmas):
                s = np.asarray(s)
                p.value = 0.5 * (s + s.conj().T)

    def state(self):
        val = self.variable.value
        if val is None:
            return None
        if self.form == "sparse":
            return devectorize(val, self.D)
        return np.asarray(val)


def independent_rows(A, max_entries: float = 5e7):
    """Indices of a maximal set of linearly independent rows of A (pivoted QR of A^T), or None
    when A is too large for a dense factorisation."""
    import scipy.linalg as sla

    if A.shape[0] * A.shape[1] > max_entries:
        return None
    _, R, piv = sla.qr(A.toarray().T, mode="economic", pivoting=True)
    d = np.abs(np.diag(R))
    rank = int((d > d[0] * 1e-10).sum()) if d.size else 0
    return np.sort(piv[:rank])


def _build(dims, subsets, form, solver="SCS") -> _Model:
    cp = _cvxpy()
    t0 = time.perf_counter()
    D = math.prod(dims)
    n = len(dims)
    rows = None
    if form == "sparse":
        A = marginal_map(dims, subsets)
        if solver != "SCS":
            # interior-point solvers fail on the redundant rows (overlapping marginals repeat
            # the same entries; measured: Clarabel reports a solver error at N5k2 without this)
            rows = independent_rows(A)
            if rows is not None:
                A = A[rows]
        v = cp.Variable(A.shape[1], name="v")
        b = cp.Parameter(A.shape[0], name="marginals")
        P = _embedding_map(D)
        R = cp.reshape(P @ v, (2 * D, 2 * D), order="C")
        # maximise the trace as in Eq. (2): with a zero objective SCS crawls (measured: 23,000
        # iterations instead of 175 at N3k2, rank 2)
        (iu, ju), _ = _upper(D)
        c = np.zeros(A.shape[1])
        c[: len(iu)] = iu == ju
        prob = cp.Problem(cp.Maximize(c @ v), [A @ v == b, R >> 0])
        params, var = [b], v
    else:
        rho = cp.Variable((D, D), hermitian=True, name="rho")
        cons = [rho >> 0]
        params = []
        for J in subsets:
            expr, cur = rho, list(dims)
            for s in reversed(complement(J, n)):  # trace out the highest sites first
                expr = cp.partial_trace(expr, tuple(cur), axis=s)
                cur.pop(s)
            dJ = subset_dim(J, dims)
            p = cp.Parameter((dJ, dJ), hermitian=True, name=f"sigma_{'_'.join(map(str, J))}")
            params.append(p)
            cons.append(expr == p)
        prob = cp.Problem(cp.Maximize(cp.real(cp.trace(rho))), cons)
        var = rho
    return _Model(prob, params, form, D, var, time.perf_counter() - t0, rows)


def _model(dims, subsets, form, solver) -> tuple[_Model, bool]:
    key = (tuple(dims), tuple(subsets), form, solver)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key], True
    model = _build(dims, subsets, form, solver)
    _CACHE[key] = model
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return model, False


def clear_cache() -> None:
    """Forget every cached CVXPY problem."""
    _CACHE.clear()


def _inject_x0(model: _Model, x0) -> None:
    """Hand SCS an initial point: x = vectorize(x0), s = b - A x (its slack), y = 0.

    Uses CVXPY's solver cache (the mechanism behind ``warm_start=True``); form="sparse" only,
    where SCS's primal vector is v itself.
    """
    cp = _cvxpy()
    x = vectorize(0.5 * (x0 + x0.conj().T))
    data, _, _ = model.problem.get_problem_data(cp.SCS)
    if data["A"].shape[1] != x.size:  # pragma: no cover - CVXPY changed its canonical form
        raise MarginalError("x0 is not supported by this CVXPY version's SCS canonical form")
    s = data["b"] - data["A"] @ x
    model.problem._solver_cache["SCS"] = {"x": x, "y": np.zeros_like(s), "s": s}


def solve(problem: MarginalProblem, settings: SDPSettings | None = None, *,
          x0=None) -> SolverOutput:
    """Solve Eq. (2) with CVXPY (find rho >= 0 with tr_{J^c} rho = sigma_J), then polish.

    Args:
        problem: one (unbatched) problem, numpy complex128 (``reconstruct`` splits batches).
        settings: :class:`SDPSettings`.
        x0: initial guess, a D x D matrix; SCS with form="sparse" only.

    Returns:
        SolverOutput with the (polished) solution, complex128 numpy; ``iterations`` the SDP
        solver's; ``converged`` whether the final state meets the tolerances by the solver's
        own measure (the certificate is ``reconstruct``'s); ``info``: the SDP status, solve,
        setup and build times, whether the cached problem was reused, the SDP answer's
        lambda_min and marginal deviation, and what the polishing did.

    Raises:
        ImportError: CVXPY missing (install ``qmarginal[sdp]``).
        MarginalError: bad options, a solver that is not installed.
    """
    st = settings or SDPSettings()
    if st.eig_tol is None or st.marginal_tol is None:
        st = st.resolved(next(iter(problem.marginals.values())).dtype)
    if problem.batch_shape:
        raise MarginalError("sdp solves one problem at a time (reconstruct splits batches)")
    problem = problem.to_numpy() if problem.is_torch else problem
    solver = st.solver.upper()
    cp = _cvxpy()
    if solver not in cp.installed_solvers():
        raise MarginalError(f"SDP solver {solver} is not installed "
                            f"(installed: {cp.installed_solvers()})")
    if x0 is not None and (st.form != "sparse" or solver != "SCS"):
        raise MarginalError("x0 is supported with form='sparse' and solver='SCS' only")
    D = problem.dim
    sigmas = [np.asarray(s, dtype=np.complex128) for s in problem.marginals.values()]
    if x0 is not None:
        x0 = np.asarray(B.to_numpy(x0), dtype=np.complex128)
        if x0.shape != (D, D):
            raise MarginalError(f"x0 must be {D} x {D}, got shape {x0.shape}")
    model, reused = _model(problem.dims, problem.subsets, st.form, solver)
    model.set_marginals(sigmas)
    if x0 is not None:
        _inject_x0(model, x0)
    try:
        with warnings.catch_warnings():
            # the status ("optimal_inaccurate", ...) is reported in info instead
            warnings.filterwarnings("ignore", message="Solution may be inaccurate")
            model.problem.solve(solver=solver, warm_start=st.warm_start or x0 is not None,
                                verbose=st.verbose, **st.options())
        status = model.problem.status
    except cp.error.SolverError as exc:
        status = f"solver_error: {exc}"
    model.solves += 1
    stats = model.problem.solver_stats
    info = {
        "solver": solver,
        "form": st.form,
        "status": status,
        "solve_time_s": float(getattr(stats, "solve_time", None) or float("nan")),
        "setup_time_s": float(getattr(stats, "setup_time", None) or float("nan")),
        "build_time_s": 0.0 if reused else model.build_time,
        "reused_problem": reused,
    }
    iterations = int(getattr(stats, "num_iters", None) or -1)
    rho = model.state()
    infeasible = status in ("infeasible", "infeasible_inaccurate")
    if rho is None or not np.all(np.isfinite(rho)):
        from ..mio import impose

        rho = impose(np.eye(D, dtype=np.complex128) / D, problem)  # a stand-in iterate
        info["sdp_solution"] = "none (the MIO of 1/D stands in)"
    lam, dev = _measure(problem, rho)
    info.update(sdp_min_eigenvalue=lam, sdp_marginal_deviation=dev)
    ok = lam >= -st.eig_tol and dev <= st.marginal_tol
    reason = ""
    if infeasible:
        reason = f"the SDP solver reports the marginals infeasible (status {status})"
    elif not ok and st.polish:
        rho, ok, reason = _polish(problem, rho, st, info)
    elif not ok:
        reason = (f"the SDP solution (status {status}) misses the tolerances and polish=False "
                  f"(lambda_min {lam:.2g}, marginal deviation {dev:.2g})")
    return SolverOutput(rho, iterations=iterations, converged=bool(ok), reason=reason,
                        info=info)


def _measure(problem, rho) -> tuple[float, float]:
    """lambda_min and marginal deviation of the hermitised, trace-normalised rho."""
    h = 0.5 * (rho + rho.conj().T)
    h = h / np.real(np.trace(h))
    lam = float(np.linalg.eigvalsh(h)[0])
    dev = float(np.max(problem.marginal_deviation(h)))
    return lam, dev


def _polish(problem, rho, st: SDPSettings, info: dict):
    """The exact solver warm-started from the SDP answer, to the certification tolerances.
    Returns (state, ok, reason); the SDP answer itself when polishing is unavailable."""
    try:
        from . import exact
    except ImportError as exc:  # pragma: no cover - torch missing
        info["polish"] = f"unavailable ({exc}); install qmarginal[torch]"
        return rho, False, "the SDP solution misses the tolerances and polishing needs torch"
    out = exact.solve(problem, exact.ExactSettings(eig_tol=st.eig_tol, marginal_tol=st.marginal_tol,
                                                   time_limit=st.time_limit), x0=rho)
    info.update(polish="exact solver from the SDP solution", polish_path=out.info["path"],
                polish_iterations=out.iterations, polish_time_s=out.info["time_s"])
    return out.state, bool(out.converged), out.reason
