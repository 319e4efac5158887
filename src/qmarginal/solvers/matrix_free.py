"""The matrix-free factored path: rho = V V^dagger with V of D x r, no D x D matrix anywhere.

Minimises, by L-BFGS with the exact line search (h on a line is a quartic),

    h(V) = sum_J ||V~_J V~_J^dagger - sigma_J||_F^2,   grad = 4 sum_J (Delta_J (x) 1) V,

where V~_J is V regrouped as d_J x (d_{J^c} r) (the sites J first): each marginal is one
product of that d_J-row matrix with its adjoint, and (Delta_J (x) 1) V is Delta_J times it,
regrouped back. Memory: V, the gradient, the L-BFGS pairs (``memory`` of each) and one regrouped
copy, O(D r) in all, plus the d_J x d_J marginals. Along a search direction P the marginals
are Delta_J + t B_J + t^2 C_J (B_J = V~ P~^dagger + P~ V~^dagger, C_J = P~ P~^dagger), so the
step costs one regrouping of P per subset and the new marginals come without regrouping V
(recomputed exactly every ``refresh_every`` iterations against rounding drift).

When h stalls above zero at rank r, a column is added along the most negative eigenvector of
sum_J Delta_J (x) 1 (Lanczos on the matrix-free operator): the steepest rank-one direction.

The answer is a :class:`qmarginal.factored.FactoredState`, certified from the factor alone (PSD
by construction; trace and marginals re-measured by :func:`qmarginal.factored.factor_marginal`,
an implementation independent of this module's).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .. import _backend as B
from .._sites import subset_dim
from ..errors import MarginalError
from ..factored import FactoredState, factor_marginal, regroup_order
from ..problem import MarginalProblem
from ._api import IterativeSettings
from .exact._factored import _quartic_min

__all__ = ["MatrixFreeSettings", "MatrixFreeResult", "FactorMaps", "solve", "peak_bytes"]


@dataclass(frozen=True)
class MatrixFreeSettings(IterativeSettings):
    """Settings of the matrix-free factored path.

    Attributes:
        rank: columns of V to start with (1: a pure state first).
        max_rank: the most columns V may grow to (None: D).
        memory: L-BFGS pairs kept.
        seed: seed of the random starting V.
        safety: the iteration stops at max deviation <= safety * marginal_tol (the certifying
            re-measurement then has margin).
        stall_window, stall_ratio: h fell by less than the factor stall_ratio over stall_window
            iterations: stalled at this rank (grow, or give up at max_rank).
        refresh_every: iterations between exact recomputations of the marginals.
        near: below this sqrt(h) the deviation is measured entry by entry every iteration
            and a stall ends the solve instead of growing the rank.
    """

    maxiter: int = 20000
    rank: int = 1
    max_rank: int | None = None
    memory: int = 8
    seed: int = 0
    safety: float = 0.1
    stall_window: int = 200
    stall_ratio: float = 0.5
    refresh_every: int = 25
    near: float = 1e-6

    def __post_init__(self):
        super().__post_init__()
        if not (isinstance(self.rank, int) and self.rank >= 1):
            raise MarginalError(f"rank must be an integer >= 1, got {self.rank!r}")
        if self.max_rank is not None and not (isinstance(self.max_rank, int)
                                              and self.max_rank >= self.rank):
            raise MarginalError(f"max_rank must be an integer >= rank, got {self.max_rank!r}")
        if not (isinstance(self.memory, int) and self.memory >= 1):
            raise MarginalError(f"memory must be an integer >= 1, got {self.memory!r}")


@dataclass
class MatrixFreeResult:
    """The matrix-free answer: the factored state and how it was measured.

    Attributes:
        state: the :class:`~qmarginal.factored.FactoredState` (``state.factor`` is V).
        certified: trace > 0 and every marginal within ``marginal_tol`` (PSD by construction).
        max_marginal_deviation: max_J max |tr_{J^c} rho - sigma_J|, re-measured from V.
        iterations, rank, time_s, reason: iterations done, final columns, wall time, and why it
            stopped when not certified ("" when certified).
        eig_tol, marginal_tol: the tolerances applied (lambda_min >= 0 > -eig_tol holds by
            construction).
    """

    state: FactoredState
    certified: bool
    max_marginal_deviation: float
    iterations: int
    rank: int
    time_s: float
    reason: str
    eig_tol: float
    marginal_tol: float

    @property
    def factor(self) -> np.ndarray:
        return self.state.factor


class FactorMaps:
    """Marginals of V V^dagger and the adjoint sum_J (Delta_J (x) 1) V, from V regrouped per
    subset (numpy; no D x D matrix)."""

    def __init__(self, dims, subsets):
        self.dims = tuple(dims)
        self.D = math.prod(self.dims)
        n = len(self.dims)
        self.items = []  # (J, axis order, inverse order, d_J, shape of the regrouped tensor)
        for J in subsets:
            J = tuple(J)
            order = regroup_order(J, n)
            inv = tuple(int(i) for i in np.argsort(order))
            shape = tuple(self.dims[i] for i in order[:-1])
            self.items.append((J, order, inv, subset_dim(J, self.dims), shape))

    def regroup(self, v, item):
        """V~_J: (d_J, d_{J^c} r)."""
        _, order, _, dJ, _ = item
        r = v.shape[1]
        return v.reshape(self.dims + (r,)).transpose(order).reshape(dJ, -1)

    def ungroup_add(self, out, w, item):
        """out += W regrouped back to (D, r) (W: (d_J, d_{J^c} r))."""
        _, _, inv, _, shape = item
        r = out.shape[1]
        out += w.reshape(shape + (r,)).transpose(inv).reshape(self.D, r)

    def marginals(self, v):
        return [(w := self.regroup(v, it)) @ w.conj().T for it in self.items]

    def adjoint(self, v, deltas):
        """sum_J (Delta_J (x) 1_{J^c}) V."""
        out = np.zeros_like(v)
        for it, d in zip(self.items, deltas):
            self.ungroup_add(out, d @ self.regroup(v, it), it)
        return out


def peak_bytes(D: int, rank: int, memory: int = 8) -> int:
    """Peak memory of the path beyond the problem: V, gradient, direction, new V, one regrouped
    copy, one adjoint accumulator and 2 ``memory`` L-BFGS pairs, complex128 D x rank each."""
    return 16 * D * rank * (6 + 2 * memory)


def _dot(a, b) -> float:
    return float(np.vdot(a, b).real)


def _quartic_step(c) -> float:
    """argmin_{t >= 0} of the quartic with coefficients c0..c4 (the exact line search shared
    with the dense factored path)."""
    return float(_quartic_min(np.asarray([c], dtype=float))[0])


def _lbfgs_direction(g, S, Y):
    """-H g by the two-loop recursion over the pairs (s, y) (real inner products)."""
    q = g.copy()
    alphas = []
    for s, y in zip(reversed(S), reversed(Y)):
        rho = 1.0 / _dot(y, s)
        a = rho * _dot(s, q)
        q -= a * y
        alphas.append((a, rho, s, y))
    if S:
        q *= _dot(S[-1], Y[-1]) / _dot(Y[-1], Y[-1])
    for a, rho, s, y in reversed(alphas):
        q += (a - rho * _dot(y, q)) * s
    return -q


def _steepest_column(fm: FactorMaps, deltas, rng):
    """The most negative eigenvector of sum_J Delta_J (x) 1 (Lanczos, matrix-free)."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    if fm.D <= 256:  # small: the operator densely (D matrix-vector products), one eigh
        w, u = np.linalg.eigh(fm.adjoint(np.eye(fm.D, dtype=np.complex128), deltas))
        return w[0], u[:, :1]

    def mv(x):
        return fm.adjoint(np.asarray(x, dtype=np.complex128).reshape(-1, 1), deltas)[:, 0]

    op = LinearOperator((fm.D, fm.D), matvec=mv, dtype=np.complex128)
    x0 = rng.standard_normal(fm.D) + 1j * rng.standard_normal(fm.D)
    w, u = eigsh(op, k=1, which="SA", v0=x0, tol=1e-6, maxiter=1000)
    return w[0], u[:, :1]


class _Dense:
    """One marginal with d_J <= d_{J^c} r: Delta_J (d_J x d_J) kept and advanced along the
    line (Delta + t B + t^2 C) without regrouping V."""

    def __init__(self, sigma, w):
        self.sigma = sigma
        self.refresh(w)

    def refresh(self, w):
        self.delta = w @ w.conj().T - self.sigma

    def h(self) -> float:
        return _dot(self.delta, self.delta)

    def max_dev(self) -> float:
        return float(np.abs(self.delta).max())

    def grad(self, w):
        return self.delta @ w

    def coeffs(self, w, q):
        d = self.delta
        x = w @ q.conj().T
        b = x + x.conj().T
        cc = q @ q.conj().T
        c = [_dot(d, d), 2 * _dot(d, b), _dot(b, b) + 2 * _dot(d, cc), 2 * _dot(b, cc),
             _dot(cc, cc)]
        return c, (b, cc)

    def advance(self, t, ctx, w_new):
        """Move to v + t p (``w_new()`` regroups it; not needed here)."""
        b, cc = ctx
        self.delta = self.delta + t * b + (t * t) * cc

    def final_dev(self, w_new) -> float:
        return self.max_dev()


class _Gram:
    """One marginal with d_J > d_{J^c} r (the marginal has low rank): everything through the
    m x m Gram matrices of V~_J (d_J x m) and sigma_J V~_J, never a d_J x d_J difference."""

    def __init__(self, sigma, w):
        self.sigma = sigma
        self.s2 = _dot(sigma, sigma)
        self.refresh(w)

    def refresh(self, w):
        self.sw = self.sigma @ w
        self.gww = w.conj().T @ w
        self.tr_wsw = float(np.trace(w.conj().T @ self.sw).real)

    def h(self) -> float:
        return max(_dot(self.gww, self.gww) - 2 * self.tr_wsw + self.s2, 0.0)

    def max_dev(self) -> float:
        return math.sqrt(self.h())  # ||Delta||_F >= max |entry| (exact check: final_dev)

    def grad(self, w):
        return w @ self.gww - self.sw

    def coeffs(self, w, q):
        gww = self.gww
        gpw = q.conj().T @ w
        gpp = q.conj().T @ q
        sq = self.sigma @ q
        c0 = self.h()
        c1 = 2 * 2 * (float(np.trace(gpw @ gww).real) - float(np.trace(q.conj().T @ self.sw).real))
        c2 = (2 * float(np.trace(gpw @ gpw).real) + 2 * float(np.trace(gww @ gpp).real)
              + 2 * (_dot(gpw, gpw) - float(np.trace(q.conj().T @ sq).real)))
        c3 = 2 * 2 * float(np.trace(gpw @ gpp).real)
        c4 = _dot(gpp, gpp)
        return [c0, c1, c2, c3, c4], (q, sq)

    def advance(self, t, ctx, w_new):
        self.refresh(w_new())  # the Gram terms from the new W (O(d_J^2 m))

    def final_dev(self, w_new) -> float:
        w = w_new()
        return float(np.abs(w @ w.conj().T - self.sigma).max())


def _step(fm, v, g, p, t, terms, ctxs, it, st, S, Y, terms_at, gradient):
    """v + t p, its marginal terms and gradient, and the L-BFGS pair."""
    v_new = v + t * p
    if it % st.refresh_every == 0:
        terms = terms_at(v_new)
    else:
        for item, term, ctx in zip(fm.items, terms, ctxs):
            term.advance(t, ctx, lambda item=item: fm.regroup(v_new, item))
    g_new = gradient(v_new, terms)
    S.append(v_new - v)
    Y.append(g_new - g)
    if _dot(S[-1], Y[-1]) <= 1e-300:
        S.pop()
        Y.pop()
    if len(S) > st.memory:
        S.pop(0)
        Y.pop(0)
    return v_new, g_new, sum(term.h() for term in terms), S, Y, terms


def solve(problem: MarginalProblem, settings: MatrixFreeSettings | None = None,
          *, x0=None) -> MatrixFreeResult:
    """A state with the problem's marginals as a factor V (D x r), never forming D x D.

    Args:
        problem: one marginal problem (not batched; numpy or torch marginals).
        settings: :class:`MatrixFreeSettings`.
        x0: a starting factor ``(D, r0)`` (default: random, ``settings.rank`` columns).

    Returns:
        :class:`MatrixFreeResult` (``certified`` False with the reason when the tolerances
        were not reached within the limits; the caller decides whether that raises).
    """
    st = settings or MatrixFreeSettings()
    if problem.batch_shape:
        raise MarginalError("the matrix-free path takes one problem, not a batch")
    t0 = time.perf_counter()
    dims = problem.dims
    D = math.prod(dims)
    sig = {J: np.asarray(B.to_numpy(s), dtype=np.complex128) for J, s in problem.marginals.items()}
    st = st.resolved(next(iter(problem.marginals.values())).dtype)
    eig_tol, marginal_tol = st.eig_tol, st.marginal_tol
    max_rank = min(st.max_rank or D, D)
    deadline = None if st.time_limit is None else t0 + st.time_limit
    fm = FactorMaps(dims, list(sig))
    sigmas = list(sig.values())
    rng = np.random.default_rng(st.seed)
    if x0 is not None:
        v = np.array(x0, dtype=np.complex128).reshape(D, -1)
    else:
        v = rng.standard_normal((D, st.rank)) + 1j * rng.standard_normal((D, st.rank))
        v /= np.linalg.norm(v)
    target = st.safety * marginal_tol

    def terms_at(v):
        out = []
        for item, s in zip(fm.items, sigmas):
            w = fm.regroup(v, item)
            out.append(_Dense(s, w) if item[3] <= w.shape[1] else _Gram(s, w))
        return out

    def gradient(v, terms):
        g = np.zeros_like(v)
        for item, term in zip(fm.items, terms):
            fm.ungroup_add(g, term.grad(fm.regroup(v, item)), item)
        return 4 * g

    def exact_dev(v, terms) -> float:
        return max(term.final_dev(lambda item=item: fm.regroup(v, item))
                   for item, term in zip(fm.items, terms))

    terms = terms_at(v)
    h = sum(term.h() for term in terms)
    g = gradient(v, terms)
    S, Y = [], []
    history = [h]
    it = 0
    reason = "iteration limit"
    while True:
        # near the target, the deviation entry by entry (the Gram terms' h is a difference of
        # O(1) numbers: it cannot resolve h below ~1e-16, so it only says when to look)
        near = math.sqrt(h) <= st.near
        if near or max(term.max_dev() for term in terms) <= target:
            terms = terms_at(v)  # confirm without the recurrence's rounding
            if exact_dev(v, terms) <= target:
                reason = ""
                break
        if it >= st.maxiter:
            break
        if deadline is not None and time.perf_counter() > deadline:
            reason = f"time limit ({st.time_limit:g} s)"
            break
        it += 1
        p = _lbfgs_direction(g, S, Y)
        if _dot(p, g) >= 0:  # not a descent direction: restart the memory
            S, Y = [], []
            p = -g
        # h(v + t p) as a quartic in t, from the regrouped v and p
        c = np.zeros(5)
        ctxs = []
        for item, term in zip(fm.items, terms):
            ci, ctx = term.coeffs(fm.regroup(v, item), fm.regroup(p, item))
            c += ci
            ctxs.append(ctx)
        t = _quartic_step(c)
        stalled = False
        if t <= 0:
            if S:
                S, Y = [], []
                continue
            stalled = True  # a stationary point at this rank (h > 0): grow
        else:
            v, g, h, S, Y, terms = _step(fm, v, g, p, t, terms, ctxs, it, st, S, Y, terms_at,
                                         gradient)
            history.append(h)
            stalled = (len(history) > st.stall_window
                       and h > st.stall_ratio * history[-st.stall_window])
            if stalled and near:
                reason = "stalled within rounding of the target"
                break
        if stalled:
            # one column along the steepest rank-one direction
            if v.shape[1] >= max_rank:
                reason = f"stalled at the largest rank ({max_rank})"
                break
            lam, u = _steepest_column(fm, [m - s for m, s in zip(fm.marginals(v), sigmas)],
                                      rng)
            if lam >= 0:
                reason = "stalled at a point with no descending rank-one direction"
                break
            v = np.concatenate([v, 1e-3 * math.sqrt(max(h, 1e-30)) * u], axis=1)
            terms = terms_at(v)
            g = gradient(v, terms)
            S, Y = [], []
            h = sum(term.h() for term in terms)
            history = [h]
    state = FactoredState(v, dims)
    dev = measured_deviation(state, sig)
    certified = bool(state.trace > 0 and np.isfinite(dev) and dev <= marginal_tol)
    if not certified and not reason:
        reason = f"marginal deviation {dev:.3g} > {marginal_tol:g} when re-measured"
    return MatrixFreeResult(state, certified, dev, it, v.shape[1], time.perf_counter() - t0,
                            "" if certified else reason, eig_tol, marginal_tol)


def measured_deviation(state: FactoredState, sig: dict) -> float:
    """max_J max |tr_{J^c} rho - sigma_J| of the normalised factored state, by
    :func:`~qmarginal.factored.factor_marginal` (independent of :class:`FactorMaps`)."""
    tr = state.trace
    if not tr > 0:
        return math.inf
    return max(float(np.abs(factor_marginal(state.factor, J, state.dims) / tr - s).max())
               for J, s in sig.items())
