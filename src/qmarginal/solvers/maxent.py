"""method="maxent": the maximum-entropy state with the given marginals.

Among all states with tr_{J^c} rho = sigma_J, the one of largest von Neumann entropy is a Gibbs
state rho_h = exp(-H) / tr exp(-H) of a Hamiltonian H = sum_J h_J (x) 1_{J^c} whose terms act on
the given subsets (Jaynes). The h_J minimise the smooth convex dual

    F(h) = log tr exp(-H) + sum_J tr(h_J sigma_J),    grad_{h_J} F = sigma_J - tr_{J^c} rho_h,

so a stationary point has exactly the given marginals. We minimise F with L-BFGS-B (one ``eigh``
of H per evaluation gives exp(-H), log Z and, with the partial traces, the gradient), then polish
with a few Newton-CG steps whose Hessian-vector products use the Daleckii-Krein formula in the
eigenbasis of H; a step is accepted when it lowers the largest marginal deviation.

Rank-deficient targets: if no full-rank state has the marginals (e.g. a pure target with k-body
marginals that fix it), the maximum-entropy state is rank-deficient and the optimal H diverges
(some eigenvalues of H go to +infinity). The dual then has no minimiser; the iterates creep
towards infinity and the marginal deviation decreases only slowly. The solver returns the best
Gibbs state found (smallest deviation) with ``converged=False`` and the reason; ``reconstruct``
then raises :class:`~qmarginal.NotCertifiedError` (or :class:`~qmarginal.IncompatibleMarginalsError`
when a certificate proves that no state has the marginals), never returning it as an answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from .._sites import subset_dim
from ..errors import MarginalError
from ..partial_trace import embed, partial_trace
from ..problem import MarginalProblem
from ._api import IterativeSettings, SolverOutput

__all__ = ["solve", "MaxEntSettings", "entropy"]


@dataclass(frozen=True)
class MaxEntSettings(IterativeSettings):
    """Settings of the maximum-entropy solver.

    Attributes:
        eig_tol, marginal_tol: the certification tolerances (None: by the input precision).
        maxiter: L-BFGS-B iteration limit.
        time_limit: seconds after which the best Gibbs state found is returned (None: none).
        safety: the solver stops when the marginal deviation is <= safety * marginal_tol, so
            that the independent re-measurement passes with room to spare.
        newton_steps: Newton-CG polishing steps after L-BFGS-B.
        memory: L-BFGS memory (number of correction pairs).
    """

    maxiter: int = 5000
    safety: float = 0.1
    newton_steps: int = 30
    memory: int = 30

    def __post_init__(self):
        super().__post_init__()
        if not (isinstance(self.safety, (int, float)) and 0 < self.safety <= 1):
            raise MarginalError(f"safety must be in (0, 1], got {self.safety!r}")
        for name in ("newton_steps", "memory"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "newton_steps"
                                                                       else 1):
                raise MarginalError(f"{name} must be a non-negative integer, got {v!r}")


def entropy(rho, base: float = np.e) -> float:
    """Von Neumann entropy -tr(rho log rho) of the Hermitian part (negative eigenvalues clipped)."""
    w = np.clip(np.linalg.eigvalsh(0.5 * (rho + np.conj(np.swapaxes(rho, -1, -2)))), 0, None)
    w = w[w > 0]
    return float(-(w * np.log(w)).sum() / np.log(base))


class _Dual:
    """F(h), its gradient and Hessian-vector products for one (unbatched) problem.

    h_J is parametrised by a real d_J x d_J matrix M_J: h_J = (M + M^T)/2 + i (M - M^T)/2, an
    isometry from real matrices onto Hermitian ones, so the gradient is Re S + Im S with
    S = sigma_J - tr_{J^c} rho.
    """

    def __init__(self, problem: MarginalProblem):
        self.dims = problem.dims
        self.D = problem.dim
        self.subsets = problem.subsets
        self.sigmas = [np.asarray(s, dtype=np.complex128) for s in problem.marginals.values()]
        self.sizes = [subset_dim(J, self.dims) for J in self.subsets]
        self.offsets = np.cumsum([0] + [d * d for d in self.sizes])
        self.n = int(self.offsets[-1])
        self.cache_x = None
        self.evals = 0

    def unpack(self, x):
        out = []
        for J, d, o in zip(self.subsets, self.sizes, self.offsets):
            M = x[o:o + d * d].reshape(d, d)
            out.append(0.5 * (M + M.T) + 0.5j * (M - M.T))
        return out

    def pack(self, mats):
        return np.concatenate([(S.real + S.imag).ravel() for S in mats])

    def hamiltonian(self, hs):
        H = np.zeros((self.D, self.D), dtype=np.complex128)
        for J, h in zip(self.subsets, hs):
            H += embed(h, J, self.dims, normalize=False)
        return H

    def evaluate(self, x):
        """F, gradient, and the state; cached for the last x."""
        if self.cache_x is not None and np.array_equal(x, self.cache_x):
            return self.cache
        self.evals += 1
        hs = self.unpack(x)
        H = self.hamiltonian(hs)
        w, V = np.linalg.eigh(H)
        wmin = w[0]
        e = np.exp(-(w - wmin))
        Zr = e.sum()
        p = e / Zr
        rho = (V * p) @ V.conj().T
        logZ = -wmin + np.log(Zr)
        reds = [partial_trace(rho, J, self.dims) for J in self.subsets]
        F = logZ + sum(float(np.real(np.vdot(h.conj().T, s)))  # tr(h sigma)
                       for h, s in zip(hs, self.sigmas))
        S = [s - r for s, r in zip(self.sigmas, reds)]
        grad = self.pack(S)
        dev = max(float(np.abs(d).max()) for d in S)
        self.cache_x = x.copy()
        self.cache = (F, grad, rho, dev, w, V, p)
        return self.cache

    def hessp(self, x, v):
        """Hessian of F at x times v: -T^*(tr_{J^c} d rho[T v])."""
        _, _, rho, _, w, V, p = self.evaluate(x)
        dH = self.hamiltonian(self.unpack(v))
        dHe = V.conj().T @ dH @ V
        delta = w[:, None] - w[None, :]
        safe = np.where(delta == 0, 1.0, delta)
        # (p_i - p_j) / (w_i - w_j), computed without overflow; -p_i on the diagonal
        with np.errstate(over="ignore", invalid="ignore"):  # the unused branch may overflow
            pos = p[None, :] * np.expm1(-safe) / safe
            neg = -p[:, None] * np.expm1(safe) / safe
            F1 = np.where(delta >= 0, pos, neg)
        F1 = np.where(np.abs(delta) < 1e-12, -0.5 * (p[:, None] + p[None, :]), F1)
        drho = V @ (F1 * dHe) @ V.conj().T + rho * np.real(np.trace(rho @ dH))
        return self.pack([-partial_trace(drho, J, self.dims) for J in self.subsets])


def _cg(hessp, g, maxiter: int, rtol: float = 1e-6):
    """Conjugate gradients for hessp(d) = -g (the Hessian is PSD, possibly singular)."""
    d = np.zeros_like(g)
    r = -g.copy()
    q = r.copy()
    rr = r @ r
    stop = (rtol ** 2) * rr
    for _ in range(maxiter):
        Hq = hessp(q)
        qHq = q @ Hq
        if qHq <= 1e-300:
            break
        a = rr / qHq
        d += a * q
        r -= a * Hq
        rr_new = r @ r
        if rr_new <= stop:
            break
        q = r + (rr_new / rr) * q
        rr = rr_new
    return d


def _solve_one(problem: MarginalProblem, s: MaxEntSettings):
    dual = _Dual(problem)
    x = np.zeros(dual.n)
    best = {"dev": np.inf, "x": x}
    tol = s.safety * s.marginal_tol
    deadline = None if s.time_limit is None else time.perf_counter() + s.time_limit

    def late() -> bool:
        return deadline is not None and time.perf_counter() > deadline

    def fun(xx):
        F, g, _, dev, *_ = dual.evaluate(xx)
        if dev < best["dev"]:
            best.update(dev=dev, x=xx.copy())
        return F, g

    def callback(intermediate_result):
        if best["dev"] <= tol or late():
            raise StopIteration

    res = minimize(fun, x, jac=True, method="L-BFGS-B", callback=callback,
                   options={"maxiter": int(s.maxiter), "maxcor": s.memory, "ftol": 0.0,
                            "gtol": tol * 1e-2, "maxfun": 4 * int(s.maxiter)})
    iterations = int(res.nit)
    lbfgs_message = str(res.message)
    x = best["x"]
    newton = 0
    while best["dev"] > tol and newton < s.newton_steps and not late():
        _, g, _, dev, *_ = dual.evaluate(x)
        d = _cg(lambda v: dual.hessp(x, v), g, maxiter=min(200, dual.n))
        accepted = False
        for step in (1.0, 0.5, 0.25, 0.125):
            xn = x + step * d
            _, _, _, devn, *_ = dual.evaluate(xn)
            if devn < dev:
                x, accepted = xn, True
                if devn < best["dev"]:
                    best.update(dev=devn, x=xn.copy())
                break
        newton += 1
        if not accepted:
            break
    F, _, rho, dev, w, _, p = dual.evaluate(best["x"])
    converged = dev <= tol
    info = {"dual_value": float(F), "lbfgs": lbfgs_message, "newton_steps": newton,
            "evaluations": dual.evals, "entropy": float(-(p[p > 0] * np.log(p[p > 0])).sum()),
            "hamiltonian_spread": float(w[-1] - w[0])}
    reason = ""
    if not converged:
        if late():
            reason = f"time limit ({s.time_limit:g} s) reached"
        else:
            reason = ("the marginal deviation stalled above the tolerance: no full-rank state "
                      "has these marginals (rank-deficient targets: the maximum-entropy "
                      "Hamiltonian diverges) or none at all")
    return rho, iterations + newton, converged, reason, info


def solve(problem: MarginalProblem, settings: MaxEntSettings | None = None, *,
          x0=None) -> SolverOutput:
    """The maximum-entropy state rho = exp(-H)/Z with the marginals of ``problem``.

    Args:
        problem: one (unbatched) problem, numpy complex128 (``reconstruct`` splits batches).
        settings: :class:`MaxEntSettings`.

    Returns:
        SolverOutput; ``converged`` is False when the deviation stays above
        ``safety * marginal_tol`` (``reason`` says why; rank-deficient targets do this, see the
        module docstring); ``info`` holds the entropy (nats), the dual value and the spread of
        H's spectrum.

    Example:
        >>> from qmarginal import MarginalProblem, hilbert_schmidt_state
        >>> p = MarginalProblem.from_state(hilbert_schmidt_state(8, seed=0), k=2)
        >>> bool(solve(p).converged)
        True
    """
    s = settings or MaxEntSettings()
    if s.eig_tol is None or s.marginal_tol is None:
        s = s.resolved(next(iter(problem.marginals.values())).dtype)
    if problem.batch_shape:
        raise MarginalError("maxent solves one problem at a time (reconstruct splits batches)")
    rho, it, conv, reason, info = _solve_one(problem.to_numpy() if problem.is_torch else problem,
                                             s)
    return SolverOutput(rho, iterations=it, converged=conv, reason=reason, info=info)
