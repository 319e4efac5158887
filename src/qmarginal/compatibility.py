"""Is there a state with these marginals? A decision with a checkable certificate either way.

Least squares. Let A(rho) = (tr_{J^c} rho)_J. We solve

    rho* = argmin_{rho >= 0, tr rho = 1}  f(rho) = 1/2 sum_J ||tr_{J^c} rho - sigma_J||_F^2

by accelerated projected gradient (FISTA with adaptive restart; the projection onto density
matrices is :func:`qmarginal.nearest_density_matrix`, one eigendecomposition per iteration;
the step is 1/L with L = sum_J d_{J^c}, the exact Lipschitz constant of grad f). The gradient is
W = sum_J w_J (x) 1_{J^c} with w_J = tr_{J^c} rho - sigma_J (``embed(..., normalize=False)``).

Certificate. For any Hermitian w_J, if

    sum_J tr(w_J sigma_J) < lambda_min(W),     W = sum_J w_J (x) 1_{J^c},

no state has the marginals sigma_J: a state with them would have
tr(W rho) = sum_J tr(w_J sigma_J) < lambda_min(W) <= tr(W rho). At the least-squares optimum the
KKT conditions give tr(W rho*) = lambda_min(W), hence
sum_J tr(w_J sigma_J) = lambda_min(W) - sum_J ||w_J||^2: the gap is the squared residual. For
any iterate, gap = 2 f(rho) - (tr(W rho) - lambda_min(W)), and tr(W rho) - lambda_min(W) >= 0
bounds f(rho) - f(rho*) (it is the Frank-Wolfe duality gap), so the certificate appears as soon
as the iterate is closer to optimal than the residual is large. Before reporting "incompatible"
the inequality is re-checked with an independent eigenvalue routine (LAPACK's ``syevr`` via
scipy, beside numpy's ``syevd``) and must hold with a margin larger than their rounding error.

Compatible. The problem is reported compatible when a certified state is found: the same test
as :func:`qmarginal.reconstruct`'s (Hermitian, trace 1, lambda_min >= -eig_tol, every marginal
within marginal_tol in its largest absolute entry), with a rounding margin: a state that meets
a tolerance only within the rounding error of measuring it gives "undetermined", not
"compatible". So "compatible" means "compatible to within the tolerances": strictly
incompatible marginals closer than the tolerances to compatible ones (a Werner family a hair
past its boundary) are reported compatible, with the state that shows it. Tried in order: the
MIO of the maximally mixed state (exact marginals; often PSD for full-rank targets), a short
least-squares run (which also certifies clearly incompatible input), the exact solver when torch
is installed, then the long least-squares run. Deciding compatibility exactly is QMA-hard in
general; "undetermined" is reported when neither a certified state nor a verified certificate
is found within the limits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._sites import complement, subset_dim
from .errors import MarginalError
from .metrics import nearest_density_matrix
from .mio import impose
from .partial_trace import embed, partial_trace
from .problem import MarginalProblem
from .solvers._api import IterativeSettings, apply_options

__all__ = ["check_compatibility", "CompatibilityResult", "CompatibilitySettings", "Certificate",
           "verify_certificate"]


@dataclass(frozen=True)
class CompatibilitySettings(IterativeSettings):
    """Settings of :func:`check_compatibility`.

    Attributes:
        eig_tol, marginal_tol: "compatible" means a certified state with these tolerances (as
            in :func:`qmarginal.reconstruct`; None: by the input precision).
        maxiter: least-squares iteration limit.
        time_limit: seconds for the whole check (None: no limit).
        kkt_rtol: for incompatible input, iterate until the duality gap tr(W rho) -
            lambda_min(W) is below kkt_rtol times the squared residual (so the nearest marginals
            are accurate).
        nearest: for incompatible input, go on until the nearest compatible marginals are that
            accurate (False: stop at the first verified certificate; the residual is then an
            upper bound on the distance to the nearest compatible marginals).
        use_exact: try the exact solver (when torch is installed) before the long
            least-squares run.
        exact_time_limit: seconds given to the exact solver (None: its own limits).
        quick_iter: least-squares iterations tried before the exact solver (certifies clearly
            incompatible input quickly).
        check_every: iterations between residual/certificate checks.
    """

    maxiter: int = 20000
    kkt_rtol: float = 1e-4
    nearest: bool = True
    use_exact: bool = True
    exact_time_limit: float | None = 60.0
    quick_iter: int = 300
    check_every: int = 10

    def __post_init__(self):
        super().__post_init__()
        if not (isinstance(self.kkt_rtol, (int, float)) and self.kkt_rtol > 0):
            raise MarginalError(f"kkt_rtol must be positive, got {self.kkt_rtol!r}")
        for name in ("quick_iter", "check_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise MarginalError(f"{name} must be an integer >= 1, got {v!r}")
        if self.exact_time_limit is not None and not self.exact_time_limit > 0:
            raise MarginalError(f"exact_time_limit must be positive, got {self.exact_time_limit!r}")


#: old option names of check_compatibility still accepted (DeprecationWarning)
_ALIASES = {"max_iter": "maxiter"}


@dataclass(frozen=True)
class Certificate:
    """A witness W = sum_J w_J (x) 1 of incompatibility, valid when ``gap`` > ``margin``.

    Attributes:
        w: {J: w_J}, Hermitian d_J x d_J matrices.
        lambda_min: smallest eigenvalue of W (the smaller of two independent computations).
        energy: sum_J tr(w_J sigma_J), the "energy" the marginals would give W.
        gap: lambda_min - energy; positive means incompatible.
        margin: bound on the rounding error of gap; the certificate is trusted when gap > margin.
        verified: gap > margin.
    """

    w: dict
    lambda_min: float
    energy: float
    gap: float
    margin: float
    verified: bool


@dataclass(frozen=True)
class CompatibilityResult:
    """The answer of :func:`check_compatibility`.

    Attributes:
        compatible: a certified state was found (status "compatible").
        status: "compatible" (a certified state, in ``state``), "incompatible" (certificate
            verified) or "undetermined" (neither, within the limits; ``info["reason"]`` says
            why).
        certificate: the :class:`Certificate` from the least-squares residual (None when the
            problem was shown compatible before any least-squares iteration).
        nearest_marginals: {J: tr_{J^c} rho*}, the closest compatible marginals in least squares
            (the targets themselves, to within the tolerances, when compatible).
        state: a density matrix with ``nearest_marginals`` (a certified state for the targets
            when compatible).
        residual_norm: sqrt(sum_J ||tr_{J^c} state - sigma_J||_F^2).
        max_deviation: max_J max |tr_{J^c} state - sigma_J| (the certification's measure).
        iterations: least-squares iterations used.
        method: how the answer was reached ("mio", "exact", "least-squares").
        info: tolerances, times, duality gap, and for "undetermined" the reason.
    """

    compatible: bool
    status: str
    certificate: Certificate | None
    nearest_marginals: dict
    state: Any
    residual_norm: float
    iterations: int
    method: str
    info: dict = field(default_factory=dict)
    max_deviation: float = float("nan")

    def nearest_problem(self, like: MarginalProblem) -> MarginalProblem:
        """A problem with the structure of ``like`` and the nearest compatible marginals."""
        return MarginalProblem(self.nearest_marginals, like.dims, tolerances=like.tolerances,
                               validate=False)

    def summary(self) -> str:
        lines = [f"status: {self.status}",
                 f"residual norm (least squares): {self.residual_norm:.3e}",
                 f"max marginal deviation: {self.max_deviation:.3e}",
                 f"decided by: {self.method}, iterations: {self.iterations}"]
        c = self.certificate
        if c is not None and self.status != "compatible":
            lines += [f"certificate lambda_min(W): {c.lambda_min:.12g}",
                      f"certificate sum_J tr(w_J sigma_J): {c.energy:.12g}",
                      f"certificate gap: {c.gap:.6e} (margin {c.margin:.1e}, "
                      f"{'verified' if c.verified else 'NOT verified'})"]
        return "\n".join(lines)


def _witness(w: dict, dims) -> np.ndarray:
    n = len(dims)
    D = int(np.prod(dims))
    W = np.zeros((D, D), dtype=np.complex128)
    for J, wJ in w.items():
        W += embed(wJ, J, dims, n_sites=n, normalize=False)
    return 0.5 * (W + W.conj().T)


def verify_certificate(w: dict, marginals: dict, dims) -> Certificate:
    """Check sum_J tr(w_J sigma_J) < lambda_min(W) with two eigenvalue routines and a margin.

    The margin, 100 * D * eps * (||W||_2 + sum_J ||w_J||_F ||sigma_J||_F), bounds the rounding
    error of both sides (eigvalsh is backward stable).
    """
    import scipy.linalg as sla

    dims = tuple(dims)
    w = {J: 0.5 * (np.asarray(v) + np.asarray(v).conj().T) for J, v in w.items()}
    W = _witness(w, dims)
    lam1 = float(np.linalg.eigvalsh(W)[0])
    lam2 = float(sla.eigh(W, eigvals_only=True, driver="evr", subset_by_index=[0, 0])[0])
    lam = min(lam1, lam2)
    energy = float(sum(np.real(np.vdot(w[J], np.asarray(s))) for J, s in marginals.items()))
    D = W.shape[0]
    scale = max(abs(lam1), abs(float(np.linalg.eigvalsh(W)[-1]))) + sum(
        np.linalg.norm(w[J]) * np.linalg.norm(np.asarray(s)) for J, s in marginals.items())
    margin = 100.0 * D * np.finfo(float).eps * scale + 1e-300
    gap = lam - energy
    return Certificate(dict(w), lam, energy, gap, float(margin), bool(gap > margin))


def _residuals(rho, marginals: dict, dims) -> dict:
    return {J: partial_trace(rho, J, dims) - s for J, s in marginals.items()}


def _max_deviation(r: dict) -> float:
    return max(float(np.abs(v).max()) for v in r.values())


def _certified(x, sig, dims, eig_tol: float, marginal_tol: float):
    """(state, verdict) for a candidate x: the hermitised, trace-normalised state and
    "certified", "rounding" (meets a tolerance only within the rounding error of measuring it)
    or "no"."""
    if x is None or not np.all(np.isfinite(x)):
        return None, "no"
    h = 0.5 * (x + x.conj().T)
    tr = float(np.real(np.trace(h)))
    if not tr > 0:
        return None, "no"
    h = h / tr
    lam = float(np.linalg.eigvalsh(h)[0])
    dev = _max_deviation(_residuals(h, sig, dims))
    if lam < -eig_tol or dev > marginal_tol:
        return h, "no"
    D = h.shape[-1]
    rounding = 64 * D * np.finfo(float).eps  # eigvalsh and partial traces of a trace-1 matrix
    if lam < -eig_tol + rounding or dev > marginal_tol - rounding:
        return h, "rounding"
    return h, "certified"


def _least_squares(sig: dict, dims, rho0, max_iter: int, marginal_tol: float, kkt_rtol: float,
                   check_every: int, deadline=None, nearest: bool = True):
    """FISTA on f(rho) = 1/2 sum_J ||tr_{J^c} rho - sigma_J||^2 over density matrices.
    Returns (x, status, certificate, iterations, duality gap)."""
    n = len(dims)
    L = float(sum(subset_dim(complement(J, n), dims) for J in sig))
    x = nearest_density_matrix(rho0)
    y = x.copy()
    t = 1.0
    cert = None
    it = 0
    status = "undetermined"

    def objective(r):
        return 0.5 * sum(float(np.linalg.norm(v) ** 2) for v in r.values())

    for it in range(1, max_iter + 1):
        ry = _residuals(y, sig, dims)
        grad = _witness(ry, dims)
        x_new = nearest_density_matrix(y - grad / L)
        t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        # adaptive (gradient) restart: drop the momentum when it points uphill
        if np.real(np.vdot(grad, x_new - x)) > 0:
            t_new, y = 1.0, x_new.copy()
        else:
            y = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
        out_of_time = deadline is not None and time.perf_counter() > deadline
        if it % check_every and it != max_iter and not out_of_time:
            continue
        r = _residuals(x, sig, dims)
        f = objective(r)
        if _max_deviation(r) <= 0.1 * marginal_tol:
            status = "compatible"  # (the caller certifies the state)
            break
        W = _witness(r, dims)
        lam = float(np.linalg.eigvalsh(W)[0])
        fw_gap = float(np.real(np.vdot(W, x))) - lam  # tr(W x) - lambda_min(W) >= 0
        if 2 * f - fw_gap > 0:  # candidate certificate: verify it properly
            cert = verify_certificate(r, sig, dims)
            if cert.verified and (fw_gap <= kkt_rtol * 2 * f or not nearest):
                status = "incompatible"
                break
        if out_of_time:
            break
    r = _residuals(x, sig, dims)
    if cert is None or status != "incompatible":
        c2 = verify_certificate(r, sig, dims)
        if c2.verified or cert is None:
            cert = c2
        if status == "undetermined" and cert.verified:
            status = "incompatible"
    W = _witness(r, dims)
    fw_gap = float(np.real(np.vdot(W, x))) - float(np.linalg.eigvalsh(W)[0])
    return x, status, cert, it, fw_gap


def check_compatibility(problem: MarginalProblem, settings: CompatibilitySettings | None = None,
                        **options):
    """Decide whether a state has the marginals of ``problem``; certify the answer.

    Accepts problems built with ``validate=False`` (noisy, measured marginals whose overlaps
    disagree): the least-squares answer is then the closest set of compatible marginals.

    Args:
        problem: the marginals; a batched problem gives a list of results, one per element.
        settings: :class:`CompatibilitySettings`; keyword ``options`` replace single fields
            (``eig_tol``, ``marginal_tol``, ``maxiter``, ``time_limit``, ``use_exact``, ...).

    Returns:
        :class:`CompatibilityResult` (or a list of them for a batched problem): "compatible"
        with a certified state, "incompatible" with a verified certificate, or "undetermined".

    Raises:
        MarginalError: not a MarginalProblem, or bad settings.

    Example:
        >>> from qmarginal import MarginalProblem, hilbert_schmidt_state
        >>> p = MarginalProblem.from_state(hilbert_schmidt_state(8, seed=0), k=2)
        >>> check_compatibility(p).status
        'compatible'
    """
    if not isinstance(problem, MarginalProblem):
        raise MarginalError(f"problem must be a MarginalProblem, got {type(problem).__name__}")
    st = apply_options(CompatibilitySettings, settings, options, aliases=_ALIASES,
                       what="check_compatibility")
    from .memory_plan import require_dense

    require_dense(problem, "check_compatibility",  # D x D throughout: refuse early if no fit
                  fits="no compatibility check is possible at this size (reconstruct's "
                  "matrix-free path certifies a low-rank state from its factor)")
    npb = problem.to_numpy() if problem.is_torch else problem
    st = st.resolved(next(iter(npb.marginals.values())).dtype)
    if npb.batch_shape:
        flat = int(np.prod(npb.batch_shape))
        table = {J: np.asarray(a).reshape((flat,) + a.shape[-2:]) for J, a in npb.marginals.items()}
        return [check_compatibility(
            MarginalProblem({J: a[i] for J, a in table.items()}, npb.dims,
                            tolerances=npb.tolerances, validate=False), st)
            for i in range(flat)]
    t0 = time.perf_counter()
    deadline = None if st.time_limit is None else t0 + st.time_limit
    dims = npb.dims
    D = npb.dim
    sig = {J: np.asarray(s, dtype=np.complex128) for J, s in npb.marginals.items()}
    info = {"eig_tol": st.eig_tol, "marginal_tol": st.marginal_tol, "maxiter": st.maxiter,
            "kkt_rtol": st.kkt_rtol}
    near_miss = []  # candidates that met a tolerance only within rounding

    def done(state, status, method, cert=None, iterations=0, **extra):
        r = _residuals(state, sig, dims)
        res = float(np.sqrt(sum(np.linalg.norm(v) ** 2 for v in r.values())))
        nearest = {J: partial_trace(state, J, dims) for J in sig}
        info.update(extra, wall_time_s=time.perf_counter() - t0)
        if status == "undetermined":
            info.setdefault("reason", "no certified state and no verified certificate within "
                                      "the limits" + (" (time limit)" if deadline is not None and
                                                      time.perf_counter() > deadline else "")
                            + ("; a state met the tolerances only within rounding"
                               if near_miss else ""))
        return CompatibilityResult(status == "compatible", status, cert, nearest, state, res,
                                   iterations, method, info, _max_deviation(r))

    def accept(x):
        h, verdict = _certified(x, sig, dims, st.eig_tol, st.marginal_tol)
        if verdict == "rounding":
            near_miss.append(h)
        return h if verdict == "certified" else None

    def late():
        return deadline is not None and time.perf_counter() > deadline

    # 1. the MIO of the maximally mixed state (exact marginals for a consistent set)
    x_mio = impose(np.eye(D, dtype=np.complex128) / D, sig, dims)
    h = accept(x_mio)
    if h is not None:
        return done(h, "compatible", "mio")
    # 2. a short least-squares run: obviously incompatible sets are certified here, before
    #    the exact solver spends its time on them
    x, status, cert, it, fw_gap = _least_squares(sig, dims, x_mio, min(st.quick_iter, st.maxiter),
                                                 st.marginal_tol, st.kkt_rtol, st.check_every,
                                                 deadline, st.nearest)
    res2 = sum(float(np.linalg.norm(v) ** 2) for v in _residuals(x, sig, dims).values())
    if status == "incompatible" and (fw_gap <= st.kkt_rtol * res2 or not st.nearest):
        return done(x, status, "least-squares", cert, it, duality_gap=fw_gap)
    h = accept(x)
    if h is not None:
        return done(h, "compatible", "least-squares", cert, it)
    # 3. the exact solver (torch)
    if st.use_exact and status == "undetermined" and not late():
        try:
            from .solvers import exact
        except ImportError as exc:  # pragma: no cover - torch missing
            info["exact_error"] = f"not available: {exc}"
        else:
            limits = [v for v in (st.exact_time_limit, None if deadline is None else
                                  deadline - time.perf_counter()) if v is not None]
            out = exact.solve(npb, exact.ExactSettings(
                eig_tol=st.eig_tol, marginal_tol=st.marginal_tol,
                time_limit=max(min(limits), 1e-3) if limits else None))
            h = accept(np.asarray(out.state))
            if h is not None:
                return done(h, "compatible", "exact")
            info["exact"] = out.reason
    # 4. least squares with the certificate
    x, status, cert, it2, fw_gap = _least_squares(sig, dims, x, max(st.maxiter - it, 1),
                                                  st.marginal_tol, st.kkt_rtol, st.check_every,
                                                  deadline, st.nearest)
    if status != "incompatible":
        h = accept(x)  # the least-squares iterate is a state: certified when close enough
        status = "compatible" if h is not None else "undetermined"
        x = h if h is not None else x
    return done(x, status, "least-squares", cert, it + it2, duality_gap=fw_gap)
