"""method="exact": a certified first-order solver built on the exact projection onto the marginals.

Let A = {X : tr_{J^c} X = sigma_J for all J} and T its direction space (all partial traces zero).
The MIO composition ``impose`` is the Frobenius projection P_A onto A (see :mod:`qmarginal.mio`),
and P_T(X) = P_A(X) - P_A(0). The solver looks for rho in A with rho >= 0 along three paths,
picked automatically per problem (``info["path"]`` says which ran):

1. ``"mio"``: rho = P_A(x0), x0 the warm start or 1/D; often already PSD for full-rank targets.
2. ``"convex"``: the smooth convex problem

       min_{X in A} f(X) = ||X_-||_F^2 / 2,     grad f = P_T(X_-),

   (X_- the negative part) by L-BFGS with a backtracking line search, one eigendecomposition per
   function value (on CPU of the negative eigenpairs only; in complex64 far from the solution).
   The gradient is 1-Lipschitz and the unit gradient step X - P_T(X_-) = P_A(X_+) is the
   alternating projection, so L-BFGS is an accelerated alternating projection. It converges
   fast when the compatible set has interior points (the usual full-rank case). It stops when
   lambda_min(X) >= -safety * eig_tol, or earlier when the PSD part X_+ (trace-normalised), a
   state by construction, has marginal deviation <= safety * marginal_tol: X_+ is returned.
3. ``"factored"`` (Burer-Monteiro): rho = V V^dagger with V of r columns, minimising

       min_V h(V) = sum_J ||tr_{J^c}(V V^dagger) - sigma_J||_F^2,
       grad h = 4 (sum_J Delta_J (x) 1_{J^c}) V,   Delta_J = tr_{J^c}(V V^dagger) - sigma_J,

   This is the low-rank regime, where the compatible set shrinks to a point and projections
   crawl. While D r is small (``gauss_newton_max_size``, default 512) the steps are
   Levenberg-Marquardt steps on the exact Gauss-Newton model of h (one dense 2Dr x 2Dr solve
   each, :mod:`._gauss_newton`): h is a zero-residual least-squares problem, so they converge
   quadratically, typically in 5-15 iterations. Beyond, L-BFGS with an exact line search (h
   restricted to a line is a quartic polynomial). The rank r starts at the lower bound
   max_J ceil(rank(sigma_J) / d_{J^c}) and grows (new columns along the most negative
   eigenvectors of sum_J Delta_J (x) 1, the steepest rank-one directions) when h stops
   decreasing at a non-zero value. The output V V^dagger / tr(V V^dagger) is PSD by
   construction; the iteration stops when its marginal deviation is below
   ``safety * marginal_tol``.

Which path: if some marginal is rank-deficient, every compatible state vanishes on
ker(sigma_J) (x) H_{J^c}, the MIO of 1/D is rarely a state (it is when one marginal contains
all the others: sigma_J (x) 1/d; a Cholesky factorisation screens for that), and the factored
path runs directly. So it does, tentatively, when the MIO of 1/D is strongly indefinite
(negative mass >= DIRECT_NEGATIVE_MASS, the mark of a low-rank target) and Levenberg-Marquardt
fits the rank bound. Otherwise the MIO is tried, then the convex path; when its linear rate
predicts too many iterations (checked from ``convex_patience`` iterations on: 6 where
Levenberg-Marquardt would take over, else 40), the solution set is taken to be a low-rank point
and the factored path takes over, warm-started from the convex iterate's leading eigenvectors
(plus a small random component, 1e-2 of the norm, that breaks symmetries of the start such as
those that a site in no subset causes). On a tentative start (direct or handed over)
Levenberg-Marquardt may add at most three columns and must be on track after 40 iterations (h
falling geometrically fast enough to reach the tolerance within ``handover_maxiter``): elements
off track, like those the L-BFGS factored path cannot finish, resume the convex path without a
patience limit (thin but full-dimensional compatible sets end there). When such an attempt
outgrows Levenberg-Marquardt's size, the L-BFGS continuation keeps the attempt's rank and gives
up under the same on-track rule.
``info["path"]`` records the sequence, e.g. "convex+factored".

The projection P_A is the MIO composition evaluated with cached index tensors
(:mod:`._exact_maps`), in its Moebius form (one gather and one scatter per subset size) for
small problems with many subsets, where the number of calls, not the data, sets the time.

All internal arithmetic is complex128: torch on the problem's device (CPU for numpy input), in
inference mode, except Levenberg-Marquardt, which runs in numpy/scipy on the CPU
(:mod:`._gauss_newton`); numpy in gives numpy out.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .. import _backend as B
from ..errors import MarginalError
from ..problem import MarginalProblem
from ..reconstruct import SolverOutput
from ._exact_maps import MarginalMaps
from ._gauss_newton import levenberg_marquardt, newton_fits, off_track

try:  # with the module, so that the first solve's wall time is not charged for the import
    import torch  # noqa: F401
except ImportError:  # reported by B.torch_module() when a solve needs it
    pass

__all__ = ["ExactSettings", "clear_cache", "solve"]

PATHS = ("auto", "convex", "factored")

#: after a convex-to-factored handover, Levenberg-Marquardt must be on track after this many
#: iterations and may add this many columns, else the element goes back to the convex path
HANDOVER_NEWTON_ITERATIONS = 40
HANDOVER_GROWTH = 3
#: negative mass sum |lambda_-| of the MIO of 1/D from which the solver skips the convex
#: attempt and starts the factored path (where Levenberg-Marquardt fits); measured on qubit
#: targets (N = 4-8, k = 2-4): rank 1-2 targets give 0.09-1.4, targets that the convex path
#: finishes within its patience give <= 0.08, and those above 0.09 that need the convex path
#: (mid ranks) fall back to it after a short factored attempt
DIRECT_NEGATIVE_MASS = 0.09
#: relative size of the random component of the factored path's starting columns
START_NOISE = 1e-2


@dataclass(frozen=True)
class ExactSettings:
    """Settings of the exact solver.

    Attributes:
        eig_tol: success needs lambda_min(rho) >= -eig_tol for the trace-normalised output
            (the paper's test uses 1e-10).
        marginal_tol: success needs max_J max |tr_{J^c} rho - sigma_J| <= marginal_tol.
        safety: the solver stops at ``safety`` times each tolerance, so that the independent
            re-measurement in the report passes with room to spare.
        maxiter: iteration cap of the convex and of the factored phase (each).
        convex_patience: convex iterations before the solver may hand over to the factored path
            when progress is slow (``path="auto"`` only). None: 6 when the factored path would
            start with Levenberg-Marquardt steps (D * rank bound <= gauss_newton_max_size),
            which finish a low-rank point in a few iterations, else 40.
        handover_maxiter: iteration cap of the factored path after such a handover; elements
            it does not finish go back to the convex path (``path="auto"`` only).
        rank: factored rank to start from (None: chosen automatically).
        max_rank: the factored path never exceeds this rank (None: D).
        rank_tol: relative tolerance of the numerical rank of a marginal.
        memory: L-BFGS memory (pairs kept).
        path: "auto", "convex" or "factored" (force a path; the MIO of the seed is still
            accepted when it is already a state).
        time_limit: wall-clock seconds after which the solver returns its best iterate
            (None: no limit).
        seed: seed of the random block of the subspace iteration that starts the factored
            path on large problems.
        gauss_newton_max_size: the factored path takes Levenberg-Marquardt steps (a dense
            2 D r x 2 D r solve each, see :mod:`._gauss_newton`) while D * r <= this, and
            L-BFGS beyond (0: always L-BFGS).
    """

    eig_tol: float = 1e-10
    marginal_tol: float = 1e-9
    safety: float = 0.1
    maxiter: int = 5000
    convex_patience: int | None = None
    handover_maxiter: int = 400
    rank: int | None = None
    max_rank: int | None = None
    rank_tol: float = 1e-9
    memory: int = 6
    path: str = "auto"
    time_limit: float | None = None
    seed: int = 0
    gauss_newton_max_size: int = 512

    def __post_init__(self):
        if self.path not in PATHS:
            raise MarginalError(f"path must be one of {PATHS}, got {self.path!r}")
        for name in ("eig_tol", "marginal_tol", "safety"):
            if not getattr(self, name) > 0:
                raise MarginalError(f"{name} must be positive, got {getattr(self, name)}")
        if self.maxiter < 1 or self.memory < 1:
            raise MarginalError("maxiter and memory must be >= 1")


# ----------------------------------------------------------------------------- helpers
def _dot(a, b):
    """Batched real inner product Re tr(a^dagger b) over the last two axes: shape (B,)."""
    return (a.reshape(a.shape[0], 1, -1).conj() @ b.reshape(b.shape[0], -1, 1))[:, 0, 0].real


def _bcast(s, x):
    return s.reshape(s.shape + (1,) * (x.ndim - s.ndim))


def _flat_problem(problem: MarginalProblem, torch, device):
    """Subsets and marginals as complex128 tensors (B, d_J, d_J), batch flattened."""
    batch = problem.batch_shape
    Bn = math.prod(batch) if batch else 1
    subsets, sigmas = [], []
    for J, s in problem.marginals.items():
        t = s if B.is_torch(s) else torch.as_tensor(np.asarray(s))
        t = t.to(device=device, dtype=torch.complex128)
        subsets.append(J)
        sigmas.append(t.reshape((Bn,) + tuple(t.shape[-2:])))
    return Bn, subsets, sigmas


def _rank_bound(aff, rel_tol: float):
    """Lower bound max_J ceil(rank(sigma_J) / d_{J^c}) on the rank of every compatible state,
    and whether some marginal is rank-deficient, per batch element (one eigvalsh per group of
    equally sized marginals of ``aff``, a :class:`MarginalMaps`)."""
    torch = aff.torch
    lb = torch.ones(aff.B, dtype=torch.long, device=aff.device)
    deficient = torch.zeros(aff.B, dtype=torch.bool, device=aff.device)
    for idx, sig in aff.groups:
        dJ = math.isqrt(idx.shape[1])
        dc = aff.D // dJ
        w = torch.linalg.eigvalsh(sig.reshape(sig.shape[:2] + (dJ, dJ)))
        r = (w > rel_tol * w.amax(-1, keepdim=True)).sum(-1)  # (B, M)
        lb = torch.maximum(lb, ((r + dc - 1) // dc).amax(-1))
        deficient |= (r < dJ).any(-1)
    return lb, deficient


class _LBFGS:
    """Batched L-BFGS in the compact form (Byrd, Nocedal and Schnabel 1994).

    H g = gamma g + [S gamma Y] [[R^-T (D + gamma Y^T Y) R^-1, -R^-T], [-R^-1, 0]]
          [S^T g; gamma Y^T g],
    with the m latest pairs (s_i, y_i) as rows of S, Y (viewed as real vectors), R_ij = s_i.y_j
    (i <= j), D = diag(s_i.y_i). The pairs live in a ring buffer (a new pair overwrites the
    oldest row in place) and S Y^T, Y Y^T are updated on push, so that only the small m x m
    quantities are reordered: a push costs three and a direction four batched products.
    Pairs with s.y <= 0 for an element are replaced by (s, s) there (unit curvature).
    """

    def __init__(self, memory: int):
        self.memory = memory
        self.S = None  # (B, m, n) real, ring buffer
        self.Y = None
        self.sty = None  # (B, m, m): s_i . y_j, buffer order
        self.yty = None
        self.order: list = []  # buffer rows, oldest first

    @staticmethod
    def _real(x):
        torch = __import__("torch")
        return (torch.view_as_real(x.contiguous()) if x.is_complex() else x).reshape(
            x.shape[0], -1)

    def push(self, s, y):
        torch = __import__("torch")
        s, y = self._real(s), self._real(y)
        sy = (s[:, None, :] @ y[:, :, None])[:, 0, 0]
        bad = ~(sy > 1e-300)
        if bool(bad.any()):
            y = torch.where(bad[:, None], s, y)
        if self.S is None:
            Bn, n, m = s.shape[0], s.shape[1], self.memory
            self.S = s.new_zeros((Bn, m, n))
            self.Y = s.new_zeros((Bn, m, n))
            self.sty = s.new_zeros((Bn, m, m))
            self.yty = s.new_zeros((Bn, m, m))
        j = len(self.order) if len(self.order) < self.memory else self.order.pop(0)
        self.order.append(j)
        self.S[:, j] = s
        self.Y[:, j] = y
        self.sty[:, :, j] = (self.S @ y[:, :, None])[..., 0]  # s_i . y_new
        self.sty[:, j, :] = (self.Y @ s[:, :, None])[..., 0]  # s_new . y_i
        self.yty[:, :, j] = self.yty[:, j, :] = (self.Y @ y[:, :, None])[..., 0]

    def direction(self, g, default_scale=None):
        torch = __import__("torch")
        shape, cplx = g.shape, g.is_complex()
        gr = self._real(g)
        if not self.order:
            d = gr if default_scale is None else gr * default_scale
        else:
            o = torch.tensor(self.order, device=gr.device)
            S, Y = self.S, self.Y
            sty = self.sty[:, o][:, :, o]
            yty = self.yty[:, o][:, :, o]
            dg = torch.diagonal(sty, dim1=-2, dim2=-1)
            ok = dg > 0
            eye = torch.eye(sty.shape[-1], dtype=sty.dtype, device=sty.device)
            R = torch.triu(sty)
            R = torch.where(ok[:, None, :] | ~eye.bool(), R, eye.expand_as(R))
            yy_last = yty[:, -1, -1]
            gamma = torch.where(yy_last > 0, dg[:, -1] / yy_last.clamp_min(1e-300),
                                torch.ones_like(yy_last))
            a = (S @ gr[..., None])[:, o]  # (B, k, 1), chronological
            b = gamma[:, None, None] * (Y @ gr[..., None])[:, o]
            ria = torch.linalg.solve_triangular(R, a, upper=True)  # R^-1 a
            dmat = torch.diag_embed(dg * ok) + gamma[:, None, None] * yty
            p = torch.linalg.solve_triangular(R.mT, (dmat @ ria) - b, upper=False)
            q = -gamma[:, None, None] * ria
            # back to buffer rows (rows not yet filled get 0)
            pb = gr.new_zeros((gr.shape[0], self.memory, 1))
            qb = gr.new_zeros((gr.shape[0], self.memory, 1))
            pb[:, o], qb[:, o] = p, q
            d = gamma[:, None] * gr + (S.mT @ pb)[..., 0] + (Y.mT @ qb)[..., 0]
        d = -d
        if cplx:
            d = torch.view_as_complex(d.reshape(shape + (2,)))
        return d.reshape(shape)


# ----------------------------------------------------------------------------- convex path
#: on CPU, from this dimension on and while at most half the spectrum is negative, the negative
#: part comes from the negative eigenpairs alone (LAPACK ?heevr restricted to (-inf, 0], through
#: scipy); below, or with more negative, one (batched) torch eigh is faster
NEG_EVR_MIN_DIM = 64

#: the convex path decomposes in complex64 while ||X_-||_F > SINGLE_REL ||X||_F: its rounding
#: (~1e-7 ||X||) is then below ~1e-2 of the gradient. Whatever decides (the eigenvalue test, the
#: X_+ exit) is evaluated in complex128.
SINGLE_REL = 3e-5
#: and only from this dimension on: below, the decompositions are cheap, and the extra iteration
#: that a complex64 step landing coarsely on the solution can cost is not worth it
SINGLE_MIN_DIM = 256


def _neg_part(torch, x, single: bool = False, few: bool = False):
    """lambda_min, f = ||X_-||_F^2 / 2, the negative part X_- of the Hermitian part of x
    (B, D, D) and the largest number of negative eigenvalues in the batch; in complex64 when
    ``single``. ``few`` (at most half the spectrum negative, as at the previous call) on CPU
    with D >= NEG_EVR_MIN_DIM: only the negative eigenpairs are computed and X_- is built from
    them (at D = 1024 with a quarter negative, about half the time of a full eigh and rebuild)."""
    xh = 0.5 * (x + x.mH)
    Bn, D = x.shape[0], x.shape[-1]
    if few and x.device.type == "cpu" and D >= NEG_EVR_MIN_DIM:
        import scipy.linalg as sla

        xm = torch.zeros_like(xh)
        wmin = torch.zeros(Bn, dtype=torch.float64)
        f = torch.zeros(Bn, dtype=torch.float64)
        nneg = 0
        for b in range(Bn):
            a = xh[b].numpy()
            a = a.astype(np.complex64) if single else a
            w, u = sla.eigh(a, driver="evr", subset_by_value=(-np.inf, 0.0), overwrite_a=True,
                            check_finite=False)
            nneg = max(nneg, w.size)
            if w.size == 0:
                continue  # PSD: lambda_min >= 0 (reported as 0), X_- = 0
            w = torch.from_numpy(w.astype(np.float64))
            u = torch.from_numpy(u).to(x.dtype)
            wmin[b] = w[0]
            f[b] = 0.5 * (w ** 2).sum()
            xm[b] = (u * w.to(u.dtype)) @ u.mH
        return wmin, f, xm, nneg
    if single:
        w, u = torch.linalg.eigh(xh.to(torch.complex64))
        w, u = w.to(torch.float64), u.to(x.dtype)
    else:
        w, u = torch.linalg.eigh(xh)
    neg = w.clamp_max(0.0)
    xm = (u * neg.to(u.dtype)[..., None, :]) @ u.mH
    return w[..., 0], 0.5 * (neg ** 2).sum(-1), xm, int((w < 0).sum(-1).max())


def _convex(aff, x, st: ExactSettings, deadline, patience: int | None):
    """L-BFGS on f(X) = ||X_-||^2/2 over A, from x. Elements stop when lambda_min >= -safety *
    eig_tol (done), when the PSD part X_+ = X - X_-, trace-normalised, has marginal deviation
    <= safety * marginal_tol (done, X_+ returned: it is PSD by construction, and near a boundary
    solution its deviation O(||X_-||) reaches the tolerance well before lambda_min does), or,
    with ``patience``, when the linear rate predicts too many iterations or the line search
    fails (stalled). Returns (x, done, iters)."""
    torch = aff.torch
    Bn = x.shape[0]
    x = aff.project(x)
    wmin, f, xm, nneg = _neg_part(torch, x)  # a full eigh: counts the negative eigenvalues
    single = False
    xnorm = torch.linalg.matrix_norm(x)  # the scale for the complex64 switch (changes little)
    g = aff.tangent(xm)
    eig_stop = st.safety * st.eig_tol
    dev_stop = st.safety * st.marginal_tol
    done = wmin >= -eig_stop
    iters = torch.zeros(Bn, dtype=torch.long, device=x.device)
    mem = _LBFGS(st.memory)
    f_hist = [f.clone()]
    stalled = torch.zeros(Bn, dtype=torch.bool, device=x.device)
    # the X_+ exit: its deviation is measured (one partial trace) only where predicted to pass,
    # from the ratio deviation / ||X_-||_F of the last measurement (1e-2 before any)
    plus = None
    by_plus = torch.zeros(Bn, dtype=torch.bool, device=x.device)
    ratio = torch.full((Bn,), 1e-2, dtype=torch.float64, device=x.device)

    def try_plus():
        nonlocal plus, by_plus, done, ratio
        norm = (2 * f).sqrt()
        cand = ~done & ~stalled & (ratio * norm <= dev_stop)
        if single or not bool(cand.any()):
            return
        y = x - xm
        y = 0.5 * (y + y.mH)
        y = y / _bcast(B.trace(y).real, y).to(y.dtype)
        dev = aff.deviation(y)
        ratio = torch.where(cand, dev / norm.clamp_min(1e-300), ratio)
        newly = cand & (dev <= dev_stop)
        if bool(newly.any()):
            plus = y if plus is None else torch.where(_bcast(newly, y), y, plus)
            by_plus = by_plus | newly
            done = done | newly

    try_plus()
    k = 0
    while k < st.maxiter and not bool((done | stalled).all()):
        if deadline is not None and time.perf_counter() > deadline:
            break
        k += 1
        active = ~(done | stalled)
        d = mem.direction(g)
        gd = _dot(g, d)
        bad = gd >= 0
        if bool(bad.any()):  # not a descent direction: fall back to the gradient
            d = torch.where(_bcast(bad, d), -g, d)
            gd = _dot(g, d)
        single = x.shape[-1] >= SINGLE_MIN_DIM and bool(
            ((2 * f).sqrt() > SINGLE_REL * xnorm)[active].all())
        t = torch.ones(Bn, dtype=torch.float64, device=x.device)
        todo = active.clone()
        x_new, w_new, f_new, xm_new = x, wmin, f, xm
        for _ in range(30):
            # x is in A and d in T (a combination of gradients and steps, all in T), so
            # x + t d is in A: no projection (rounding drift is shed every 20 iterations)
            xt = x + _bcast(t, d).to(d.dtype) * d
            wt, ft, xmt, nneg = _neg_part(torch, xt, single, 2 * nneg <= x.shape[-1])
            ok = todo & (ft <= f + 1e-4 * t * gd)
            if bool(ok.all()):  # the usual case: the unit step, all elements
                x_new, xm_new, w_new, f_new = xt, xmt, wt, ft
            else:
                sel = _bcast(ok, x)
                x_new = torch.where(sel, xt, x_new)
                xm_new = torch.where(sel, xmt, xm_new)
                w_new = torch.where(ok, wt, w_new)
                f_new = torch.where(ok, ft, f_new)
            todo = todo & ~ok
            if not bool(todo.any()):
                break
            t = torch.where(todo, 0.5 * t, t)
        if single and bool(((w_new >= -eig_stop) |
                            (ratio * (2 * f_new).sqrt() <= dev_stop))[active].any()):
            # a complex64 value that would decide (lambda_min, the X_+ test): redo in complex128
            w_new, f_new, xm_new, nneg = _neg_part(torch, x_new, False, 2 * nneg <= x.shape[-1])
            single = False
        g_new = aff.tangent(xm_new)
        moved = active & ~todo
        if bool(moved.all()):
            mem.push(x_new - x, g_new - g)
        else:
            mem.push((x_new - x) * _bcast(moved, x), (g_new - g) * _bcast(moved, x))
        x, wmin, f, xm, g = x_new, w_new, f_new, xm_new, g_new
        if k % 20 == 0:
            x = aff.project(x)
        iters += active.long()
        if not single:
            done = done | (wmin >= -eig_stop)
        stalled = stalled | (todo & active)  # line search failed
        try_plus()
        f_hist.append(f.clone())
        if patience is not None and k >= patience:
            # predicted iterations to reach the target at the current linear rate
            f_then = f_hist[-patience // 2 - 1] if len(f_hist) > patience // 2 else f_hist[0]
            rate = (f / f_then.clamp_min(1e-300)).clamp(1e-300, 1.0) ** (1.0 / (patience // 2))
            target = 0.5 * eig_stop ** 2
            need = torch.log(target / f.clamp_min(1e-300)) / torch.log(rate.clamp_max(1 - 1e-12))
            slow = (need > 4 * k) | (rate > 0.97)
            stalled = stalled | (slow & ~done)
    x = aff.project(x)
    if plus is not None:
        x = torch.where(_bcast(by_plus, x), plus, x)
    return x, done, iters


# ----------------------------------------------------------------------------- factored path
def _quartic_min(coef):
    """Minimiser t >= 0 of c0 + c1 t + c2 t^2 + c3 t^3 + c4 t^4 for each row of ``coef``."""
    out = np.zeros(coef.shape[0])
    for i, (a0, a1, a2, a3, a4) in enumerate(coef):
        cands = [0.0]
        if a4 > 0:
            for r in np.roots([4 * a4, 3 * a3, 2 * a2, a1]):
                if abs(r.imag) <= 1e-8 * max(1.0, abs(r.real)) and r.real > 0:
                    cands.append(float(r.real))
        elif a2 > 0 and a1 < 0:
            cands.append(-a1 / (2 * a2))
        vals = [a0 + t * (a1 + t * (a2 + t * (a3 + t * a4))) for t in cands]
        out[i] = cands[int(np.argmin(vals))]
    return out


def _ldot(a, b):
    """sum over groups of Re<a_g, b_g> per batch element (one BLAS dot per group)."""
    return sum((x.reshape(x.shape[0], 1, -1).conj() @ y.reshape(y.shape[0], -1, 1))[:, 0, 0].real
               for x, y in zip(a, b))


class _Factored:
    """The factored iterate for a batch sharing one rank r.

    Objective h(V) = sum_J ||tr_{J^c}(V V^dagger) - sigma_J||_F^2, whose gradient is
    4 (sum_J Delta_J (x) 1) V; zero exactly on the compatible states of rank <= r.
    """

    def __init__(self, mp, v):
        self.mp = mp
        self.v = v
        self.refresh()

    def refresh(self):
        self.y = self.v @ self.v.mH
        self.res = self.mp.residual(self.y)
        self.h = _ldot(self.res, self.res)

    def grad(self):
        return 4 * (self.mp.adjoint(self.res) @ self.v)

    def line(self, p):
        """Exact line search along p (h on a line is a quartic): (t, increments)."""
        torch = self.mp.torch
        vp = self.v @ p.mH
        s1 = vp + vp.mH
        s2 = p @ p.mH
        t1 = self.mp.ptrace(s1)
        t2 = self.mp.ptrace(s2)
        c = torch.stack([self.h, 2 * _ldot(self.res, t1),
                         _ldot(t1, t1) + 2 * _ldot(self.res, t2), 2 * _ldot(t1, t2),
                         _ldot(t2, t2)], -1)
        t = torch.as_tensor(_quartic_min(c.cpu().numpy()), dtype=torch.float64,
                            device=self.v.device)
        return t, s1, s2, t1, t2

    def step(self, p, t, s1, s2, t1, t2):
        tt = _bcast(t, self.y).to(self.y.dtype)
        self.v = self.v + _bcast(t, p).to(p.dtype) * p
        self.y = self.y + tt * s1 + (tt * tt) * s2
        tr = t.to(self.y.dtype)
        self.res = [r + _bcast(tr, a) * a + _bcast(tr * tr, a) * b
                    for r, a, b in zip(self.res, t1, t2)]
        self.h = _ldot(self.res, self.res)

    def normalised_deviation(self):
        """max |tr_{J^c}(Y / tr Y) - sigma_J| per element, from the tracked residuals."""
        return self.mp.normalised_deviation(self.res, B.trace(self.y).real)

    def rho(self):
        tr = B.trace(self.y).real
        return self.y / _bcast(tr, self.y).to(self.y.dtype)


def _grow(fac: _Factored, add: int):
    """Add ``add`` columns along the most negative eigenvectors of sum_J Delta_J (x) 1 (the
    steepest directions for a new rank-one term), jointly scaled by an exact line search."""
    torch = fac.mp.torch
    w, u = fac.mp.descent_directions(fac.res)
    cols = u[..., :, :add]
    fac.v = torch.cat([fac.v, torch.zeros_like(cols)], dim=-1)
    p = torch.cat([torch.zeros_like(fac.v[..., :-add]), cols], dim=-1)
    t, *inc = fac.line(p)
    fac.step(p, t, *inc)


def _trim(fac: _Factored, rel: float = 1e-10):
    """Drop the directions of V whose weight is below ``rel`` times the largest (all elements
    must agree on the count to stay batched; the smallest count kept is the max over elements).
    Returns the number dropped."""
    torch = fac.mp.torch
    w, u = torch.linalg.eigh(fac.v.mH @ fac.v)  # ascending
    keep = (w > rel * w[..., -1:]).sum(-1).amax()
    r = fac.v.shape[-1]
    k = int(keep)
    if k >= r:
        return 0
    fac.v = fac.v @ u[..., :, r - k:]
    fac.refresh()
    return r - k


def _top_eigh(torch, x, r: int, seed: int):
    """The r largest eigenpairs (descending) of the Hermitian x: a full eigh, or for
    r << D a block subspace iteration on x + ||x||_F (PSD, same eigenvectors) with Rayleigh-Ritz."""
    D = x.shape[-1]
    x = 0.5 * (x + x.mH)
    if r > D // 16 or D < 128:
        w, u = torch.linalg.eigh(x)
        return w.flip(-1)[..., :r], u.flip(-1)[..., :r]
    shift = torch.linalg.matrix_norm(x)[..., None, None]
    gen = torch.Generator(device=x.device).manual_seed(seed)
    q = torch.randn(x.shape[:-1] + (r + 8,), dtype=x.dtype, device=x.device, generator=gen)
    q = torch.linalg.qr(q).Q
    for _ in range(12):
        q = torch.linalg.qr(x @ q + shift * q).Q
    w, z = torch.linalg.eigh(q.mH @ x @ q)
    u = q @ z
    return w.flip(-1)[..., :r], u.flip(-1)[..., :r]


def _start_columns(torch, x, r: int, seed: int):
    """V with r columns from the leading eigenpairs of the Hermitian part of x (x in A)."""
    w, u = _top_eigh(torch, x, r, seed)
    total = w.clamp_min(0).sum(-1, keepdim=True).clamp_min(1e-12)
    # columns without positive weight get a small weight so that they can move
    scale = w.clamp_min(1e-3 * total / r).sqrt()
    v = u * scale.to(u.dtype)[..., None, :]
    # a small random component breaks symmetries of x (e.g. a site no marginal covers makes the
    # spectrum degenerate and the leading eigenvectors a saddle point of h that steps preserve)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    noise = torch.randn(v.shape, dtype=v.dtype, device=v.device, generator=gen)
    size = START_NOISE * torch.linalg.matrix_norm(v)[..., None, None] / math.sqrt(v[0].numel())
    return v + size.to(v.dtype) * noise


def _factored(mp, v, st: ExactSettings, deadline, max_rank: int, maxiter: int,
              give_up: bool = False):
    """L-BFGS with exact line search on h(V); all elements share the rank, which is trimmed
    (spurious small columns) or grown (a stalled residual) when progress stalls. With
    ``give_up``, an element that stalls at ``max_rank`` with nothing to trim and whose h, at
    the geometric rate of the last window, would not reach the tolerance within ``maxiter``
    is left not done (the caller's convex path takes it).
    Returns (rho, done, iters, final rank, log of rank changes)."""
    torch = mp.torch
    Bn = v.shape[0]
    fac = _Factored(mp, v)
    tol = st.safety * st.marginal_tol
    done = torch.zeros(Bn, dtype=torch.bool, device=v.device)
    quit = torch.zeros_like(done)  # given up (``give_up``)
    iters = torch.zeros(Bn, dtype=torch.long, device=v.device)
    rho = torch.zeros_like(fac.y)
    mem = _LBFGS(st.memory)
    grad = fac.grad()
    hist: list = []
    window = 25
    log: list = []
    k = 0

    n_entries = sum(r[0].numel() for r in fac.res)

    def check():
        nonlocal done, rho
        if not bool((fac.h <= (1e2 * tol) ** 2 * n_entries).any()):
            return  # far from the tolerance: skip the exact measurement
        dev = fac.normalised_deviation()
        newly = ~done & (dev <= tol)
        if bool(newly.any()):
            rho = torch.where(_bcast(newly, rho), fac.rho(), rho)
            done = done | newly

    check()
    while k < maxiter and not bool((done | quit).all()):
        if deadline is not None and time.perf_counter() > deadline:
            break
        k += 1
        p = mem.direction(grad)
        bad = _dot(grad, p) >= 0
        if bool(bad.any()):
            p = torch.where(_bcast(bad, p), -grad, p)
        p = p * _bcast(~(done | quit), p).to(p.dtype)
        t, *inc = fac.line(p)
        v_old, g_old = fac.v, grad
        fac.step(p, t, *inc)
        if k % 100 == 0:
            fac.refresh()  # shed accumulated rounding
        grad = fac.grad()
        mem.push(fac.v - v_old, grad - g_old)
        iters += (~(done | quit)).long()
        check()
        hist.append(fac.h.clone())
        if len(hist) > window:
            ratio = fac.h / hist[-window - 1].clamp_min(1e-300)
            slow = ~(done | quit) & (ratio > 0.3)
            stuck = ~(done | quit) & (ratio > 0.9)
            if bool(slow.any()):
                dropped = _trim(fac)
                if dropped:
                    log.append(f"-{dropped}@{k}")
                elif bool(stuck.any()) and fac.v.shape[-1] < max_rank:
                    add = min(max(1, fac.v.shape[-1] // 4), max_rank - fac.v.shape[-1])
                    _grow(fac, add)
                    log.append(f"+{add}@{k}")
                else:
                    if give_up:
                        late = off_track(B.to_numpy(fac.h), B.to_numpy(hist[-window - 1]),
                                         window, k, maxiter, tol)
                        quit = quit | (slow & torch.as_tensor(late, device=slow.device))
                    hist = hist[-window:]
                    continue
                grad = fac.grad()
                mem = _LBFGS(st.memory)
                hist = []
    rho = torch.where(_bcast(done, rho), rho, fac.rho())
    return rho, done, iters, fac.v.shape[-1], log


# ----------------------------------------------------------------------------- entry point
def clear_cache() -> None:
    """Drop the cached index tensors of every problem structure (they are rebuilt on demand:
    a few milliseconds for small problems). Benchmarks call this to charge each solve for them."""
    from ._exact_maps import structure
    from ._gauss_newton import factored_maps

    structure.cache_clear()
    factored_maps.cache_clear()


def solve(problem: MarginalProblem, *, x0=None, settings: ExactSettings | None = None,
          **overrides) -> SolverOutput:
    """Find rho >= 0, tr rho = 1 with tr_{J^c} rho = sigma_J for all J (certified).

    Args:
        problem: the marginals (batched or not; numpy or torch on any device).
        x0: optional warm start, any ``(D, D)`` or ``(*batch, D, D)`` matrix (e.g. an
            autoencoder's output); the default is the maximally mixed state.
        settings: :class:`ExactSettings`; keyword ``overrides`` replace single fields
            (``reconstruct(p, method="exact", maxiter=100)``).

    Returns:
        :class:`SolverOutput` with the state (problem's library, device and batch shape),
        iterations and convergence per element (``converged`` is the final, independent check:
        lambda_min >= -eig_tol and marginal deviation <= marginal_tol), the tolerances, and
        ``info``: "path" (e.g. "mio", "convex", "factored", "convex+factored",
        "convex+factored+convex"), "seed", "rank" (final factored rank; 0 when the factored path
        did not run), "rank_lower_bound", "rank_changes" (growth log), "min_eigenvalue",
        "marginal_deviation", "time_s".

    Raises:
        MarginalError: bad settings or a warm start of the wrong shape.

    Example:
        >>> from qmarginal import MarginalProblem, rank_mixture_state
        >>> p = MarginalProblem.from_state(rank_mixture_state(8, 1, seed=0), k=2)
        >>> out = solve(p)
        >>> bool(out.converged), out.info["path"]
        (True, 'factored')
    """
    settings = settings or ExactSettings()
    if overrides:
        fields = asdict(settings)
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise MarginalError(f"unknown option(s) for method='exact': {unknown}; "
                                f"settings are {sorted(fields)}")
        settings = ExactSettings(**{**fields, **overrides})
    torch = B.torch_module()
    t_start = time.perf_counter()
    # no autograd bookkeeping in the inner loops (small problems are bound by per-call overhead)
    with torch.inference_mode():
        out = _solve(problem, x0, settings, torch, t_start)
    if B.is_torch(out.state):
        out.state = out.state.clone()  # an ordinary tensor again (usable with autograd)
    return out


def _solve(problem: MarginalProblem, x0, st: ExactSettings, torch, t_start: float):
    """The body of :func:`solve` (run in torch's inference mode)."""
    deadline = None if st.time_limit is None else t_start + st.time_limit

    sig = next(iter(problem.marginals.values()))
    device = sig.device if B.is_torch(sig) else "cpu"
    batch = problem.batch_shape
    D = problem.dim
    Bn, subsets, sigmas = _flat_problem(problem, torch, device)
    aff = MarginalMaps(problem.dims, subsets, sigmas, torch)

    # the seed
    if x0 is None:
        x = torch.eye(D, dtype=torch.complex128, device=device).expand(Bn, D, D) / D
        seed_name = "maximally_mixed"
    else:
        xt = x0 if B.is_torch(x0) else torch.as_tensor(np.asarray(x0))
        xt = xt.to(device=device, dtype=torch.complex128)
        if tuple(xt.shape[-2:]) != (D, D):
            raise MarginalError(f"warm start x0 must be {D} x {D}, got shape {tuple(xt.shape)}")
        try:
            xt = xt.expand(tuple(batch) + (D, D)).reshape(Bn, D, D)
        except RuntimeError as exc:
            raise MarginalError(f"warm start x0 of shape {tuple(xt.shape)} does not match the "
                                f"problem's batch shape {batch}") from exc
        x = 0.5 * (xt + xt.mH)
        seed_name = "given"

    eig_stop = st.safety * st.eig_tol
    # 1. the MIO of the seed (with a rank-deficient marginal, checked only when a Cholesky
    #    factorisation admits it: a PSD X with tr_{J^c} X = sigma_J vanishes on
    #    ker(sigma_J) (x) H, which the MIO of the maximally mixed state rarely does)
    lb, deficient = _rank_bound(aff, st.rank_tol)
    x = aff.project(x)
    done = torch.zeros(Bn, dtype=torch.bool, device=device)
    check_mio = ~deficient if x0 is None else torch.ones_like(done)
    if not bool(check_mio.all()):
        # with a rank-deficient marginal the MIO of 1/D is rarely a state, but it can be (a
        # marginal that contains all the others: sigma_J (x) 1/d); a Cholesky factorisation of
        # X + eig_stop 1 (a fraction of an eigendecomposition) screens for it
        eye = torch.eye(D, dtype=x.dtype, device=device)
        _, info = torch.linalg.cholesky_ex(0.5 * (x + x.mH) + eig_stop * eye)
        check_mio = check_mio | (info == 0)
    neg_mass = torch.zeros(Bn, dtype=torch.float64, device=device)
    if bool(check_mio.any()):
        w = torch.linalg.eigvalsh(0.5 * (x + x.mH))
        done = check_mio & (w[..., 0] >= -eig_stop)
        neg_mass = torch.where(check_mio, -w.clamp_max(0).sum(-1), neg_mass)
    rho = x.clone()
    iters = torch.zeros(Bn, dtype=torch.long, device=device)
    path = np.array(["mio"] * Bn, dtype=object)
    ranks = np.zeros(Bn, dtype=int)
    rank_log: list = []
    max_rank = st.max_rank or D

    # 2. convex phase for the elements without a rank-deficient marginal
    todo = ~done
    if st.path == "factored":
        convex_set = torch.zeros_like(todo)
    elif st.path == "convex":
        convex_set = todo
    else:
        convex_set = todo & ~deficient
    start = x.clone()
    rank_guess = lb.clone()
    # elements handed to the factored path on a guess; what it cannot finish goes (back) to the
    # convex path without a patience limit
    tentative = torch.zeros_like(todo)
    if st.path == "auto" and newton_fits(len(subsets), D, 1, st.gauss_newton_max_size):
        # a strongly indefinite MIO of 1/D (negative mass >= DIRECT_NEGATIVE_MASS) marks a
        # low-rank target: skip the convex attempt where Levenberg-Marquardt fits the rank bound
        fits = torch.tensor([newton_fits(len(subsets), D, int(r), st.gauss_newton_max_size)
                             for r in B.to_numpy(lb)], dtype=torch.bool, device=device)
        direct = convex_set & fits & (neg_mass >= DIRECT_NEGATIVE_MASS)
        convex_set = convex_set & ~direct
        tentative = tentative | direct
    if bool(convex_set.any()):
        idx = convex_set.nonzero().flatten()
        patience = None
        if st.path == "auto":
            small = newton_fits(len(subsets), D, int(lb[idx].min()), st.gauss_newton_max_size)
            patience = st.convex_patience or (6 if small else 40)
        xc, dc, ic = _convex(aff.select(idx), x[idx], st, deadline, patience)
        iters[idx] += ic
        rho[idx] = xc
        done[idx] = dc
        start[idx] = xc
        for j, i in enumerate(B.to_numpy(idx)):
            path[i] = "convex"
        tentative[idx] = True

    # 3. factored phase for the rest, grouped by starting rank
    if st.path != "convex":
        todo = ~done
        if st.rank is not None:
            rank_guess = torch.full_like(rank_guess, int(st.rank))
        rank_guess = rank_guess.clamp(1, max_rank)
        for r in sorted(set(B.to_numpy(rank_guess[todo]).tolist())):
            idx = (todo & (rank_guess == r)).nonzero().flatten()
            v = _start_columns(torch, start[idx], int(r), st.seed)
            handed = bool(tentative[idx].any())
            cap = min(st.maxiter, st.handover_maxiter) if handed and st.path == "auto" \
                else st.maxiter
            sub = aff.select(idx)
            rf = torch.zeros((len(idx), D, D), dtype=torch.complex128, device=device)
            df = torch.zeros(len(idx), dtype=torch.bool, device=device)
            itf = torch.zeros(len(idx), dtype=torch.long, device=device)
            newton = newton_fits(len(subsets), D, int(r), st.gauss_newton_max_size)
            # after a handover the compatible set may be thin but full-dimensional rather than
            # a low-rank point: a short attempt, then back to the convex path
            short = handed and st.path == "auto"
            stop_rank = min(max_rank, int(r) + HANDOVER_GROWTH) if short else max_rank
            gave_up = False
            if newton:
                v, df, itf, log = levenberg_marquardt(
                    sub, v, tol=st.safety * st.marginal_tol, maxiter=cap,
                    patience=HANDOVER_NEWTON_ITERATIONS if short else None,
                    max_rank=stop_rank, max_size=st.gauss_newton_max_size, deadline=deadline)
                rank_log.extend(log)
                y = v @ v.mH
                rf = y / _bcast(B.trace(y).real, y).to(y.dtype)
                # Levenberg-Marquardt stops early for L-BFGS only when the rank outgrew it
                outgrown = not newton_fits(len(subsets), D, v.shape[-1],
                                           st.gauss_newton_max_size)
                gave_up = short and not outgrown
            # columns in use per element (a lower-rank probe leaves a zero last column)
            rfin = B.to_numpy((v.abs().amax(-2) > 0).sum(-1)).copy()
            if not bool(df.all()) and not gave_up:
                # L-BFGS for what Levenberg-Marquardt left (or never took); after a short
                # Levenberg-Marquardt attempt that outgrew its size, only up to the attempt's
                # rank and while on track (a mid-rank target: the convex path is faster)
                rest = (~df).nonzero().flatten()
                short_lbfgs = newton and short
                rl, dl, itl, r_lbfgs, log = _factored(
                    sub.select(rest), v[rest], st, deadline,
                    max(stop_rank, v.shape[-1]) if short_lbfgs else max_rank, cap,
                    give_up=short_lbfgs)
                rank_log.extend(log)
                rf[rest], df[rest] = rl, dl
                itf[rest] += itl
                rfin[B.to_numpy(rest)] = r_lbfgs
            iters[idx] += itf
            rho[idx] = rf
            done[idx] = df
            for j, i in enumerate(B.to_numpy(idx)):
                path[i] = ("convex+" if path[i] == "convex" else "") + "factored"
                ranks[i] = rfin[j]

    # 4. fallback (auto): elements the factored path could not finish resume the convex path
    #    without a patience limit (thin but full-dimensional compatible sets end here)
    todo = ~done
    if st.path == "auto" and bool(todo.any()) and (deadline is None or
                                                    time.perf_counter() < deadline):
        idx = todo.nonzero().flatten()
        xc, dc, ic = _convex(aff.select(idx), start[idx], st, deadline, None)
        iters[idx] += ic
        keep = dc
        sel = idx[keep]
        rho[sel] = xc[keep]
        done[sel] = True
        for i in B.to_numpy(sel):
            path[i] = path[i] + "+convex"

    # measure what is returned
    rho = 0.5 * (rho + rho.mH)
    rho = rho / _bcast(B.trace(rho).real, rho)
    lam = torch.linalg.eigvalsh(rho)[..., 0]
    dev = aff.deviation(rho)
    ok = (lam >= -st.eig_tol) & (dev <= st.marginal_tol)

    out_dtype = sig.dtype if B.is_torch(sig) else None
    state = rho.reshape(tuple(batch) + (D, D))
    if B.is_torch(sig):
        state = state.to(out_dtype)
    else:
        state = state.cpu().numpy().astype(np.asarray(sig).dtype, copy=False)

    def per(a):
        a = B.to_numpy(a) if B.is_torch(a) else np.asarray(a)
        a = a.reshape(batch) if batch else a.reshape(())
        return a if batch else a.item()

    info: dict[str, Any] = {
        "path": per(path) if batch else path[0],
        "seed": seed_name,
        "rank": per(ranks),
        "rank_lower_bound": per(lb),
        "rank_changes": " ".join(rank_log) or "none",
        "min_eigenvalue": per(lam),
        "marginal_deviation": per(dev),
        "time_s": time.perf_counter() - t_start,
    }
    tolerances = {"eig_tol": st.eig_tol, "marginal_tol": st.marginal_tol, "safety": st.safety,
                  "maxiter": st.maxiter}
    return SolverOutput(state, iterations=per(iters), converged=per(ok), tolerances=tolerances,
                        info=info)
