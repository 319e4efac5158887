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
Gibbs state found (smallest deviation), sets ``converged=False`` and says so in ``info["note"]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from .. import _backend as B
from .._sites import subset_dim
from ..errors import MarginalError
from ..partial_trace import embed, partial_trace
from ..problem import MarginalProblem
from ..reconstruct import SolverOutput

__all__ = ["solve", "MaxEntSettings", "entropy"]


@dataclass(frozen=True)
class MaxEntSettings:
    """Settings of the maximum-entropy solver.

    Attributes:
        tol: stop when max_J max |tr_{J^c} rho - sigma_J| <= tol.
        max_iter: L-BFGS-B iteration limit.
        newton_steps: Newton-CG polishing steps after L-BFGS-B.
        memory: L-BFGS memory (number of correction pairs).
    """

    tol: float = 1e-10
    max_iter: int = 5000
    newton_steps: int = 30
    memory: int = 30

    def __post_init__(self):
        if not self.tol > 0:
            raise MarginalError(f"tol must be positive, got {self.tol}")
        if int(self.max_iter) < 1:
            raise MarginalError(f"max_iter must be >= 1, got {self.max_iter}")


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

    def fun(xx):
        F, g, _, dev, *_ = dual.evaluate(xx)
        if dev < best["dev"]:
            best.update(dev=dev, x=xx.copy())
        return F, g

    def callback(intermediate_result):
        if best["dev"] <= s.tol:
            raise StopIteration

    res = minimize(fun, x, jac=True, method="L-BFGS-B", callback=callback,
                   options={"maxiter": int(s.max_iter), "maxcor": s.memory, "ftol": 0.0,
                            "gtol": s.tol * 1e-2, "maxfun": 4 * int(s.max_iter)})
    iterations = int(res.nit)
    lbfgs_message = str(res.message)
    x = best["x"]
    newton = 0
    while best["dev"] > s.tol and newton < s.newton_steps:
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
    converged = dev <= s.tol
    info = {"dual_value": float(F), "lbfgs": lbfgs_message, "newton_steps": newton,
            "evaluations": dual.evals, "entropy": float(-(p[p > 0] * np.log(p[p > 0])).sum()),
            "hamiltonian_spread": float(w[-1] - w[0])}
    if not converged:
        info["note"] = ("marginal deviation above tol: the targets are probably rank-deficient "
                        "(the maximum-entropy Hamiltonian diverges); returned the best Gibbs state")
    return rho, iterations + newton, converged, dev, info


def solve(problem: MarginalProblem, *, tol: float = 1e-10, max_iter: int = 5000,
          newton_steps: int = 30, memory: int = 30) -> SolverOutput:
    """The maximum-entropy state rho = exp(-H)/Z with the marginals of ``problem``.

    Args:
        problem: the marginals (numpy or torch; computed in float64 numpy, batches one by one).
        tol: target max absolute marginal deviation (default 1e-10).
        max_iter: L-BFGS-B iteration limit.
        newton_steps: Newton-CG polishing steps.
        memory: L-BFGS memory.

    Returns:
        SolverOutput; ``converged`` is False when the deviation stays above ``tol``, which is
        what happens for rank-deficient targets (see the module docstring); ``info`` holds the
        entropy (nats), the dual value and the spread of H's spectrum.
    """
    s = MaxEntSettings(tol=tol, max_iter=max_iter, newton_steps=newton_steps, memory=memory)
    like = next(iter(problem.marginals.values()))
    npb = problem.to_numpy() if problem.is_torch else problem
    batch = problem.batch_shape
    if not batch:
        rho, it, conv, dev, info = _solve_one(npb, s)
        state = rho
    else:
        flat = int(np.prod(batch))
        table = {J: np.asarray(a).reshape((flat,) + a.shape[-2:]) for J, a in npb.marginals.items()}
        outs = []
        for i in range(flat):
            one = MarginalProblem({J: a[i] for J, a in table.items()}, npb.dims, validate=False)
            outs.append(_solve_one(one, s))
        state = np.stack([o[0] for o in outs]).reshape(batch + (problem.dim,) * 2)
        it = np.array([o[1] for o in outs]).reshape(batch)
        conv = np.array([o[2] for o in outs]).reshape(batch)
        info = {"entropy": np.array([o[4]["entropy"] for o in outs]).reshape(batch)}
        if not conv.all():
            info["note"] = ("some batch elements did not reach tol: probably rank-deficient "
                            "targets (the maximum-entropy Hamiltonian diverges)")
    if B.is_torch(like):
        state = B.as_array(state, like=like).to(like.dtype)
    return SolverOutput(state, iterations=it, converged=conv,
                        tolerances={"max_marginal_deviation": s.tol, "max_iter": s.max_iter},
                        info=info)
