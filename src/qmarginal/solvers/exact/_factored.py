"""The factored path beyond Levenberg-Marquardt's size: rho = V V^dagger by L-BFGS on

    h(V) = sum_J ||tr_{J^c}(V V^dagger) - sigma_J||_F^2,
    grad h = 4 (sum_J Delta_J (x) 1_{J^c}) V,   Delta_J = tr_{J^c}(V V^dagger) - sigma_J,

with an exact line search (h restricted to a line is a quartic polynomial). The rank grows (new
columns along the most negative eigenvectors of sum_J Delta_J (x) 1, the steepest rank-one
directions) when h stops decreasing at a non-zero value, and spurious small columns are trimmed.
Also the starting columns of every factored attempt (:func:`start_columns`, from the leading
eigenvectors of a matrix in the affine set; :func:`random_columns` for restarts).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ... import _backend as B
from ._convex import bcast, dot
from ._gauss_newton import off_track
from ._lbfgs import LBFGS

__all__ = ["start_columns", "random_columns", "lbfgs_factored"]


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
        tt = bcast(t, self.y).to(self.y.dtype)
        self.v = self.v + bcast(t, p).to(p.dtype) * p
        self.y = self.y + tt * s1 + (tt * tt) * s2
        tr = t.to(self.y.dtype)
        self.res = [r + bcast(tr, a) * a + bcast(tr * tr, a) * b
                    for r, a, b in zip(self.res, t1, t2)]
        self.h = _ldot(self.res, self.res)

    def normalised_deviation(self):
        """max |tr_{J^c}(Y / tr Y) - sigma_J| per element, from the tracked residuals."""
        return self.mp.normalised_deviation(self.res, B.trace(self.y).real)

    def rho(self):
        tr = B.trace(self.y).real
        return self.y / bcast(tr, self.y).to(self.y.dtype)


def _grow(fac: _Factored, add: int):
    """Add ``add`` columns along the most negative eigenvectors of sum_J Delta_J (x) 1 (the
    steepest directions for a new rank-one term), jointly scaled by an exact line search."""
    torch = fac.mp.torch
    _, u = fac.mp.descent_directions(fac.res)
    cols = u[..., :, :add]
    fac.v = torch.cat([fac.v, torch.zeros_like(cols)], dim=-1)
    p = torch.cat([torch.zeros_like(fac.v[..., :-add]), cols], dim=-1)
    t, *inc = fac.line(p)
    fac.step(p, t, *inc)


def _trim(fac: _Factored, rel: float):
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


def _top_eigh(torch, x, r: int, seed: int, min_dim: int):
    """The r largest eigenpairs (descending) of the Hermitian x: a full eigh, or for
    r << D (D >= min_dim) a block subspace iteration on x + ||x||_F (PSD, same eigenvectors)
    with Rayleigh-Ritz."""
    D = x.shape[-1]
    x = 0.5 * (x + x.mH)
    if r > D // 16 or D < min_dim:
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


def start_columns(torch, x, r: int, seed: int, th):
    """V with r columns from the leading eigenpairs of the Hermitian part of x (x in A)."""
    w, u = _top_eigh(torch, x, r, seed, th.subspace_min_dim)
    total = w.clamp_min(0).sum(-1, keepdim=True).clamp_min(1e-12)
    # columns without positive weight get a small weight so that they can move
    scale = w.clamp_min(th.start_floor * total / r).sqrt()
    v = u * scale.to(u.dtype)[..., None, :]
    # a small random component breaks symmetries of x (e.g. a site no marginal covers makes the
    # spectrum degenerate and the leading eigenvectors a saddle point of h that steps preserve)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    noise = torch.randn(v.shape, dtype=v.dtype, device=v.device, generator=gen)
    size = th.start_noise * torch.linalg.matrix_norm(v)[..., None, None] / math.sqrt(v[0].numel())
    return v + size.to(v.dtype) * noise


def lbfgs_factored(mp, v, st, th, deadline, max_rank: int, maxiter: int,
                   give_up: bool = False):
    """L-BFGS with exact line search on h(V); all elements share the rank, which is trimmed
    (spurious small columns) or grown (a stalled residual) when progress stalls. With
    ``give_up``, an element that stalls at ``max_rank`` with nothing to trim and whose h, at
    the geometric rate of the last window, would not reach the tolerance within ``maxiter``
    is left not done (the caller's next step takes it). The same happens, with or without
    ``give_up``, once a growth is trimmed away again (the iterate heads for the old rank but
    converges slowly there; growing again would only repeat the cycle: the robustness sweep
    found it alternating +1/-1 until maxiter).
    ``st``: the ExactSettings, ``th``: the Thresholds.
    Returns (rho, done, iters, final rank, log of rank changes)."""
    torch = mp.torch
    Bn = v.shape[0]
    fac = _Factored(mp, v)
    tol = st.safety * st.marginal_tol
    done = torch.zeros(Bn, dtype=torch.bool, device=v.device)
    quit = torch.zeros_like(done)  # given up (``give_up``)
    iters = torch.zeros(Bn, dtype=torch.long, device=v.device)
    rho = torch.zeros_like(fac.y)
    mem = LBFGS(st.memory)
    grad = fac.grad()
    hist: list = []
    window = th.lbfgs_window
    grown_from: set = set()  # ranks the iteration grew from
    cycling = False  # a growth was trimmed away again: no more growth in this call
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
            rho = torch.where(bcast(newly, rho), fac.rho(), rho)
            done = done | newly

    check()
    while k < maxiter and not bool((done | quit).all()):
        if deadline is not None and time.perf_counter() > deadline:
            break
        k += 1
        p = mem.direction(grad)
        bad = dot(grad, p) >= 0
        if bool(bad.any()):
            p = torch.where(bcast(bad, p), -grad, p)
        p = p * bcast(~(done | quit), p).to(p.dtype)
        t, *inc = fac.line(p)
        v_old, g_old = fac.v, grad
        fac.step(p, t, *inc)
        if k % th.lbfgs_refresh_every == 0:
            fac.refresh()  # shed accumulated rounding
        grad = fac.grad()
        mem.push(fac.v - v_old, grad - g_old)
        iters += (~(done | quit)).long()
        check()
        hist.append(fac.h.clone())
        if len(hist) > window:
            ratio = fac.h / hist[-window - 1].clamp_min(1e-300)
            slow = ~(done | quit) & (ratio > th.lbfgs_slow_ratio)
            stuck = ~(done | quit) & (ratio > th.lbfgs_stuck_ratio)
            if bool(slow.any()):
                r_now = fac.v.shape[-1]
                dropped = _trim(fac, th.trim_rel)
                if dropped:
                    log.append(f"-{dropped}@{k}")
                    if fac.v.shape[-1] in grown_from:
                        cycling = True  # the columns just grown vanished again
                elif bool(stuck.any()) and r_now < max_rank and not cycling:
                    add = min(max(1, r_now // 4), max_rank - r_now)
                    grown_from.add(r_now)
                    _grow(fac, add)
                    log.append(f"+{add}@{k}")
                else:
                    if give_up or cycling:
                        # off track where nothing is left to try here (the rank cannot grow,
                        # or growing only adds columns that vanish again): the next step of
                        # the plan takes over
                        late = off_track(B.to_numpy(fac.h), B.to_numpy(hist[-window - 1]),
                                         window, k, maxiter, tol)
                        quit = quit | (slow & torch.as_tensor(late, device=slow.device))
                    hist = hist[-window:]
                    continue
                grad = fac.grad()
                mem = LBFGS(st.memory)
                hist = []
    rho = torch.where(bcast(done, rho), rho, fac.rho())
    return rho, done, iters, fac.v.shape[-1], log


def random_columns(torch, n: int, D: int, r: int, seed: int, device):
    """n random V (D x r), complex Gaussian, with tr V V^dagger = 1 (restart points)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    v = torch.randn((n, D, r), dtype=torch.complex128, device=device, generator=gen)
    return v / torch.linalg.matrix_norm(v)[:, None, None]
