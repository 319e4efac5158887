"""method="exact": a certified first-order solver built on the exact projection onto the marginals.

Let A = {X : tr_{J^c} X = sigma_J for all J} and T its direction space (all partial traces zero).
The MIO composition ``impose`` is the Frobenius projection P_A onto A (see :mod:`qmarginal.mio`),
and P_T(X) = P_A(X) - P_A(0). The solver looks for rho in A with rho >= 0 along three paths,
picked automatically per problem (``info["path"]`` says which ran):

1. ``"mio"``: rho = P_A(x0), x0 the warm start or 1/D; often already PSD for full-rank targets.
2. ``"convex"``: the smooth convex problem

       min_{X in A} f(X) = ||X_-||_F^2 / 2,     grad f = P_T(X_-),

   (X_- the negative part) by L-BFGS with a backtracking line search, one eigendecomposition per
   function value. The gradient is 1-Lipschitz and the unit gradient step X - P_T(X_-) = P_A(X_+)
   is the alternating projection, so L-BFGS is an accelerated alternating projection. It
   converges fast when the compatible set has interior points (the usual full-rank case).
3. ``"factored"`` (Burer-Monteiro): rho = V V^dagger with V of r columns, minimising

       min_V h(V) = sum_J ||tr_{J^c}(V V^dagger) - sigma_J||_F^2,
       grad h = 4 (sum_J Delta_J (x) 1_{J^c}) V,   Delta_J = tr_{J^c}(V V^dagger) - sigma_J,

   by L-BFGS with an exact line search (h restricted to a line is a quartic polynomial). This is
   the low-rank regime, where the compatible set shrinks to a point and projections crawl. The
   rank r starts at the lower bound max_J ceil(rank(sigma_J) / d_{J^c}) and grows (new columns
   along the most negative eigenvectors of sum_J Delta_J (x) 1, the steepest rank-one
   directions) when h stops decreasing. The output V V^dagger / tr(V V^dagger) is PSD by
   construction; the iteration stops when its marginal deviation is below
   ``safety * marginal_tol``.

Which path: if some marginal is rank-deficient, every compatible state vanishes on
ker(sigma_J) (x) H_{J^c}, the MIO of 1/D is not a state, and the factored path runs directly.
Otherwise the MIO is tried, then the convex path; when its linear rate predicts too many
iterations (``convex_patience``), the solution set is taken to be a low-rank point and the
factored path takes over, warm-started from the convex iterate's leading eigenvectors. Elements
that the factored path cannot finish resume the convex path without a patience limit.
``info["path"]`` records the sequence, e.g. "convex+factored".

All internal arithmetic is torch complex128 on the problem's device (CPU for numpy input);
numpy in gives numpy out.
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

__all__ = ["ExactSettings", "solve"]

PATHS = ("auto", "convex", "factored")


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
            when progress is slow (``path="auto"`` only).
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
    """

    eig_tol: float = 1e-10
    marginal_tol: float = 1e-9
    safety: float = 0.1
    maxiter: int = 5000
    convex_patience: int = 40
    handover_maxiter: int = 400
    rank: int | None = None
    max_rank: int | None = None
    rank_tol: float = 1e-9
    memory: int = 6
    path: str = "auto"
    time_limit: float | None = None
    seed: int = 0

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


def _rank_bound(sigmas, D: int, rel_tol: float, torch):
    """Lower bound max_J ceil(rank(sigma_J) / d_{J^c}) on the rank of every compatible state,
    and whether some marginal is rank-deficient, per batch element."""
    Bn = sigmas[0].shape[0]
    dev = sigmas[0].device
    lb = torch.ones(Bn, dtype=torch.long, device=dev)
    deficient = torch.zeros(Bn, dtype=torch.bool, device=dev)
    for s in sigmas:
        w = torch.linalg.eigvalsh(s)
        r = (w > rel_tol * w.amax(-1, keepdim=True)).sum(-1)
        dJ = s.shape[-1]
        dc = D // dJ
        lb = torch.maximum(lb, (r + dc - 1) // dc)
        deficient |= r < dJ
    return lb, deficient


def _hermitian_eigh(torch, x):
    return torch.linalg.eigh(0.5 * (x + x.mH))


class _LBFGS:
    """Batched L-BFGS in the compact form (Byrd, Nocedal and Schnabel 1994).

    H g = gamma g + [S gamma Y] [[R^-T (D + gamma Y^T Y) R^-1, -R^-T], [-R^-1, 0]]
          [S^T g; gamma Y^T g],
    with the m latest pairs (s_i, y_i) as rows of S, Y (viewed as real vectors), R_ij = s_i.y_j
    (i <= j), D = diag(s_i.y_i). A handful of batched calls per direction, whatever m is.
    Pairs with s.y <= 0 for an element are replaced by (s, s) there (unit curvature).
    """

    def __init__(self, memory: int):
        self.memory = memory
        self.S = None  # (B, m, n) real
        self.Y = None

    @staticmethod
    def _real(x):
        return (x if not x.is_complex() else
                __import__("torch").view_as_real(x.contiguous())).reshape(x.shape[0], -1)

    def push(self, s, y):
        torch = __import__("torch")
        s, y = self._real(s), self._real(y)
        sy = (s * y).sum(-1)
        bad = ~(sy > 1e-300)
        if bool(bad.any()):
            y = torch.where(bad[:, None], s, y)
        s, y = s[:, None], y[:, None]
        if self.S is None:
            self.S, self.Y = s, y
        else:
            self.S = torch.cat([self.S, s], 1)[:, -self.memory:]
            self.Y = torch.cat([self.Y, y], 1)[:, -self.memory:]

    def direction(self, g, default_scale=None):
        torch = __import__("torch")
        shape, cplx = g.shape, g.is_complex()
        gr = self._real(g)
        if self.S is None:
            d = gr if default_scale is None else gr * default_scale
        else:
            S, Y = self.S, self.Y
            sty = S @ Y.mT  # (B, m, m): s_i . y_j
            yty = Y @ Y.mT
            dg = torch.diagonal(sty, dim1=-2, dim2=-1)
            ok = dg > 0
            eye = torch.eye(sty.shape[-1], dtype=sty.dtype, device=sty.device)
            R = torch.triu(sty)
            R = torch.where(ok[:, None, :] | ~eye.bool(), R, eye.expand_as(R))
            yy_last = yty[:, -1, -1]
            gamma = torch.where(yy_last > 0, dg[:, -1] / yy_last.clamp_min(1e-300),
                                torch.ones_like(yy_last))
            a = (S @ gr[..., None])[..., 0]
            b = gamma[:, None] * (Y @ gr[..., None])[..., 0]
            ria = torch.linalg.solve_triangular(R, a[..., None], upper=True)  # R^-1 a
            dmat = torch.diag_embed(dg * ok) + gamma[:, None, None] * yty
            p = torch.linalg.solve_triangular(R.mT, (dmat @ ria) - b[..., None], upper=False)
            q = -ria
            d = gamma[:, None] * gr + (S.mT @ p)[..., 0] + gamma[:, None] * (Y.mT @ q)[..., 0]
        d = -d
        if cplx:
            d = torch.view_as_complex(d.reshape(shape + (2,)))
        return d.reshape(shape)


# ----------------------------------------------------------------------------- convex path
def _neg_part(torch, x):
    w, u = _hermitian_eigh(torch, x)
    neg = w.clamp_max(0.0)
    xm = (u * neg.to(u.dtype)[..., None, :]) @ u.mH
    return w, u, 0.5 * (neg ** 2).sum(-1), xm


def _convex(aff, x, st: ExactSettings, deadline, patience: int | None):
    """L-BFGS on f(X) = ||X_-||^2/2 over A, from x. Elements stop when lambda_min >= -safety *
    eig_tol (done) or, with ``patience``, when the linear rate predicts too many iterations or
    the line search fails (stalled). Returns (x, done, iters, eigenvalues, eigenvectors)."""
    torch = aff.torch
    Bn = x.shape[0]
    x = aff.project(x)
    w, u, f, xm = _neg_part(torch, x)
    g = aff.tangent(xm)
    done = w[..., 0] >= -st.safety * st.eig_tol
    iters = torch.zeros(Bn, dtype=torch.long, device=x.device)
    mem = _LBFGS(st.memory)
    f_hist = [f.clone()]
    stalled = torch.zeros(Bn, dtype=torch.bool, device=x.device)
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
        t = torch.ones(Bn, dtype=torch.float64, device=x.device)
        todo = active.clone()
        x_new, w_new, u_new, f_new, xm_new = x, w, u, f, xm
        for _ in range(30):
            xt = aff.project(x + _bcast(t, d) * d)
            wt, ut, ft, xmt = _neg_part(torch, xt)
            ok = todo & (ft <= f + 1e-4 * t * gd)
            sel = _bcast(ok, x)
            x_new = torch.where(sel, xt, x_new)
            xm_new = torch.where(sel, xmt, xm_new)
            u_new = torch.where(sel, ut, u_new)
            w_new = torch.where(ok[:, None], wt, w_new)
            f_new = torch.where(ok, ft, f_new)
            todo = todo & ~ok
            if not bool(todo.any()):
                break
            t = torch.where(todo, 0.5 * t, t)
        g_new = aff.tangent(xm_new)
        moved = active & ~todo
        s = (x_new - x) * _bcast(moved, x)
        yv = (g_new - g) * _bcast(moved, x)
        mem.push(s, yv)
        x, w, u, f, xm, g = x_new, w_new, u_new, f_new, xm_new, g_new
        iters += active.long()
        done = done | (w[..., 0] >= -st.safety * st.eig_tol)
        stalled = stalled | (todo & active)  # line search failed
        f_hist.append(f.clone())
        if patience is not None and k >= patience:
            # predicted iterations to reach the target at the current linear rate
            f_then = f_hist[-patience // 2 - 1] if len(f_hist) > patience // 2 else f_hist[0]
            rate = (f / f_then.clamp_min(1e-300)).clamp(1e-300, 1.0) ** (1.0 / (patience // 2))
            target = 0.5 * (st.safety * st.eig_tol) ** 2
            need = torch.log(target / f.clamp_min(1e-300)) / torch.log(rate.clamp_max(1 - 1e-12))
            slow = (need > 4 * k) | (rate > 0.97)
            stalled = stalled | (slow & ~done)
    return x, done, iters, w, u


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
        tr = B.trace(self.y).real
        devs = []
        for r, (_, sig) in zip(self.res, self.mp.groups):
            d = (r + sig) / _bcast(tr, r).to(r.dtype) - sig
            devs.append(d.abs().amax(dim=(-2, -1)))
        return self.mp.torch.stack(devs).amax(0)

    def rho(self):
        tr = B.trace(self.y).real
        return self.y / _bcast(tr, self.y).to(self.y.dtype)


def _grow(fac: _Factored, add: int):
    """Add ``add`` columns along the most negative eigenvectors of sum_J Delta_J (x) 1 (the
    steepest directions for a new rank-one term), jointly scaled by an exact line search."""
    torch = fac.mp.torch
    h = fac.mp.adjoint(fac.res)
    w, u = _hermitian_eigh(torch, h)
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
    return u * scale.to(u.dtype)[..., None, :]


def _factored(mp, v, st: ExactSettings, deadline, max_rank: int, maxiter: int):
    """L-BFGS with exact line search on h(V); all elements share the rank, which is trimmed
    (spurious small columns) or grown (a stalled residual) when progress stalls.
    Returns (rho, done, iters, final rank, log of rank changes)."""
    torch = mp.torch
    Bn = v.shape[0]
    fac = _Factored(mp, v)
    tol = st.safety * st.marginal_tol
    done = torch.zeros(Bn, dtype=torch.bool, device=v.device)
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
    while k < maxiter and not bool(done.all()):
        if deadline is not None and time.perf_counter() > deadline:
            break
        k += 1
        p = mem.direction(grad)
        bad = _dot(grad, p) >= 0
        if bool(bad.any()):
            p = torch.where(_bcast(bad, p), -grad, p)
        p = p * _bcast(~done, p).to(p.dtype)
        t, *inc = fac.line(p)
        v_old, g_old = fac.v, grad
        fac.step(p, t, *inc)
        if k % 100 == 0:
            fac.refresh()  # shed accumulated rounding
        grad = fac.grad()
        mem.push(fac.v - v_old, grad - g_old)
        iters += (~done).long()
        check()
        hist.append(fac.h.clone())
        if len(hist) > window:
            ratio = fac.h / hist[-window - 1].clamp_min(1e-300)
            slow = (~done) & (ratio > 0.3)
            stuck = (~done) & (ratio > 0.9)
            if bool(slow.any()):
                dropped = _trim(fac)
                if dropped:
                    log.append(f"-{dropped}@{k}")
                elif bool(stuck.any()) and fac.v.shape[-1] < max_rank:
                    add = min(max(1, fac.v.shape[-1] // 4), max_rank - fac.v.shape[-1])
                    _grow(fac, add)
                    log.append(f"+{add}@{k}")
                else:
                    hist = hist[-window:]
                    continue
                grad = fac.grad()
                mem = _LBFGS(st.memory)
                hist = []
    rho = torch.where(_bcast(done, rho), rho, fac.rho())
    return rho, done, iters, fac.v.shape[-1], log


# ----------------------------------------------------------------------------- entry point
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
    st = settings
    torch = B.torch_module()
    t_start = time.perf_counter()
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
    # 1. the MIO of the seed (skipped when a rank-deficient marginal rules out the MIO of the
    #    maximally mixed state: a PSD X with tr_{J^c} X = sigma_J vanishes on ker(sigma_J) (x) H)
    lb, deficient = _rank_bound(sigmas, D, st.rank_tol, torch)
    x = aff.project(x)
    done = torch.zeros(Bn, dtype=torch.bool, device=device)
    check_mio = ~deficient if x0 is None else torch.ones_like(done)
    if bool(check_mio.any()):
        w = torch.linalg.eigvalsh(0.5 * (x + x.mH))
        done = check_mio & (w[..., 0] >= -eig_stop)
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
    if bool(convex_set.any()):
        idx = convex_set.nonzero().flatten()
        patience = st.convex_patience if st.path == "auto" else None
        xc, dc, ic, wc, uc = _convex(aff.select(idx), x[idx], st, deadline, patience)
        iters[idx] += ic
        rho[idx] = xc
        done[idx] = dc
        start[idx] = xc
        for j, i in enumerate(B.to_numpy(idx)):
            path[i] = "convex"

    # 3. factored phase for the rest, grouped by starting rank
    if st.path != "convex":
        todo = ~done
        if st.rank is not None:
            rank_guess = torch.full_like(rank_guess, int(st.rank))
        rank_guess = rank_guess.clamp(1, max_rank)
        for r in sorted(set(B.to_numpy(rank_guess[todo]).tolist())):
            idx = (todo & (rank_guess == r)).nonzero().flatten()
            v = _start_columns(torch, start[idx], int(r), st.seed)
            handed = any(path[i] == "convex" for i in B.to_numpy(idx))
            cap = min(st.maxiter, st.handover_maxiter) if handed and st.path == "auto" \
                else st.maxiter
            rf, df, itf, rfin, log = _factored(aff.select(idx), v, st, deadline, max_rank, cap)
            rank_log.extend(log)
            iters[idx] += itf
            rho[idx] = rf
            done[idx] = df
            for i in B.to_numpy(idx):
                path[i] = ("convex+" if path[i] == "convex" else "") + "factored"
                ranks[i] = rfin

    # 4. fallback (auto): elements the factored path could not finish resume the convex path
    #    without a patience limit (thin but full-dimensional compatible sets end here)
    todo = ~done
    if st.path == "auto" and bool(todo.any()) and (deadline is None or
                                                    time.perf_counter() < deadline):
        idx = todo.nonzero().flatten()
        xc, dc, ic, _, _ = _convex(aff.select(idx), start[idx], st, deadline, None)
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
