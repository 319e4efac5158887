"""The convex path: L-BFGS on f(X) = ||X_-||_F^2 / 2 over the affine set A of matrices with the
marginals.

grad f = P_T(X_-) (T the direction space of A, X_- the negative part), 1-Lipschitz; the unit
gradient step X - P_T(X_-) = P_A(X_+) is the alternating projection, so L-BFGS is an
accelerated alternating projection. One eigendecomposition per function value (on CPU of the
negative eigenpairs only while few are negative; in complex64 far from the solution). An element
stops when lambda_min >= -safety * eig_tol, or earlier when the PSD part X_+ (trace-normalised),
a state by construction, has marginal deviation <= safety * marginal_tol (X_+ is returned: near a
boundary solution its deviation O(||X_-||) reaches the tolerance well before lambda_min does).
"""

from __future__ import annotations

import time

import numpy as np

from ... import _backend as B
from ._lbfgs import LBFGS

__all__ = ["convex", "dot", "bcast"]


def dot(a, b):
    """Batched real inner product Re tr(a^dagger b) over the last two axes: shape (B,)."""
    return (a.reshape(a.shape[0], 1, -1).conj() @ b.reshape(b.shape[0], -1, 1))[:, 0, 0].real


def bcast(s, x):
    """``s`` (B,) reshaped to broadcast against ``x`` (B, ...)."""
    return s.reshape(s.shape + (1,) * (x.ndim - s.ndim))


def _neg_part(torch, x, th, single: bool = False, few: bool = False):
    """lambda_min, f = ||X_-||_F^2 / 2, the negative part X_- of the Hermitian part of x
    (B, D, D) and the largest number of negative eigenvalues in the batch; in complex64 when
    ``single``. ``few`` (at most half the spectrum negative, as at the previous call) on CPU
    with D >= th.neg_evr_min_dim: only the negative eigenpairs are computed and X_- is built
    from them."""
    xh = 0.5 * (x + x.mH)
    Bn, D = x.shape[0], x.shape[-1]
    if few and x.device.type == "cpu" and D >= th.neg_evr_min_dim:
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


def convex(aff, x, st, th, deadline, patience: int | None, maxiter: int):
    """L-BFGS on f over A from x (B, D, D); ``aff`` the problem's MarginalMaps, ``st`` the
    ExactSettings, ``th`` the Thresholds. Elements stop when lambda_min >= -safety * eig_tol
    (done), when X_+ passes (done, X_+ returned), or, with ``patience``, when the linear rate
    predicts too many iterations or the line search fails (stalled).

    Returns:
        (x, done, iters, stalled): the iterates (X_+ where that exit was taken), per-element
        success, iterations, and whether the element stalled (rather than hit ``maxiter``).
    """
    torch = aff.torch
    Bn = x.shape[0]
    x = aff.project(x)
    wmin, f, xm, nneg = _neg_part(torch, x, th)  # a full eigh: counts the negative eigenvalues
    single = False
    xnorm = torch.linalg.matrix_norm(x)  # the scale for the complex64 switch (changes little)
    g = aff.tangent(xm)
    eig_stop = st.safety * st.eig_tol
    dev_stop = st.safety * st.marginal_tol
    done = wmin >= -eig_stop
    iters = torch.zeros(Bn, dtype=torch.long, device=x.device)
    mem = LBFGS(st.memory)
    f_hist = [f.clone()]
    stalled = torch.zeros(Bn, dtype=torch.bool, device=x.device)
    # the X_+ exit: its deviation is measured (one partial trace) only where predicted to pass,
    # from the ratio deviation / ||X_-||_F of the last measurement
    plus = None
    by_plus = torch.zeros(Bn, dtype=torch.bool, device=x.device)
    ratio = torch.full((Bn,), th.plus_ratio, dtype=torch.float64, device=x.device)

    def try_plus():
        nonlocal plus, by_plus, done, ratio
        norm = (2 * f).sqrt()
        cand = ~done & ~stalled & (ratio * norm <= dev_stop)
        if single or not bool(cand.any()):
            return
        y = x - xm
        y = 0.5 * (y + y.mH)
        y = y / bcast(B.trace(y).real, y).to(y.dtype)
        dev = aff.deviation(y)
        ratio = torch.where(cand, dev / norm.clamp_min(1e-300), ratio)
        newly = cand & (dev <= dev_stop)
        if bool(newly.any()):
            plus = y if plus is None else torch.where(bcast(newly, y), y, plus)
            by_plus = by_plus | newly
            done = done | newly

    try_plus()
    k = 0
    while k < maxiter and not bool((done | stalled).all()):
        if deadline is not None and time.perf_counter() > deadline:
            break
        k += 1
        active = ~(done | stalled)
        d = mem.direction(g)
        gd = dot(g, d)
        bad = gd >= 0
        if bool(bad.any()):  # not a descent direction: fall back to the gradient
            d = torch.where(bcast(bad, d), -g, d)
            gd = dot(g, d)
        single = x.shape[-1] >= th.single_min_dim and bool(
            ((2 * f).sqrt() > th.single_rel * xnorm)[active].all())
        t = torch.ones(Bn, dtype=torch.float64, device=x.device)
        todo = active.clone()
        x_new, w_new, f_new, xm_new = x, wmin, f, xm
        for _ in range(th.line_search_steps):
            # x is in A and d in T (a combination of gradients and steps, all in T), so
            # x + t d is in A: no projection (rounding drift is shed every reproject_every)
            xt = x + bcast(t, d).to(d.dtype) * d
            wt, ft, xmt, nneg = _neg_part(torch, xt, th, single, 2 * nneg <= x.shape[-1])
            ok = todo & (ft <= f + th.armijo * t * gd)
            if bool(ok.all()):  # the usual case: the unit step, all elements
                x_new, xm_new, w_new, f_new = xt, xmt, wt, ft
            else:
                sel = bcast(ok, x)
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
            w_new, f_new, xm_new, nneg = _neg_part(torch, x_new, th, False,
                                                   2 * nneg <= x.shape[-1])
            single = False
        g_new = aff.tangent(xm_new)
        moved = active & ~todo
        if bool(moved.all()):
            mem.push(x_new - x, g_new - g)
        else:
            mem.push((x_new - x) * bcast(moved, x), (g_new - g) * bcast(moved, x))
        x, wmin, f, xm, g = x_new, w_new, f_new, xm_new, g_new
        if k % th.reproject_every == 0:
            x = aff.project(x)
        iters += active.long()
        if not single:
            done = done | (wmin >= -eig_stop)
        stalled = stalled | (todo & active)  # line search failed
        try_plus()
        f_hist.append(f.clone())
        w = th.convex_stall_window
        if k > w:
            # f no longer falls: a non-zero minimum of ||X_-|| over A (no PSD matrix in A)
            stalled = stalled | (~done & (f > th.convex_stall_ratio * f_hist[-w - 1]))
        if patience is not None and k >= patience:
            # predicted iterations to reach the target at the current linear rate
            half = patience // 2
            f_then = f_hist[-half - 1] if len(f_hist) > half else f_hist[0]
            rate = (f / f_then.clamp_min(1e-300)).clamp(1e-300, 1.0) ** (1.0 / half)
            target = 0.5 * eig_stop ** 2
            need = torch.log(target / f.clamp_min(1e-300)) / torch.log(rate.clamp_max(1 - 1e-12))
            slow = (need > th.slow_factor * k) | (rate > th.slow_rate)
            stalled = stalled | (slow & ~done)
    x = aff.project(x)
    if plus is not None:
        x = torch.where(bcast(by_plus, x), plus, x)
    return x, done, iters, stalled
