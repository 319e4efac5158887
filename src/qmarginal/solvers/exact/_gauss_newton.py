"""Levenberg-Marquardt (damped Gauss-Newton) on the factored problem, for small D * r.

The factored path of the exact solver looks for rho = V V^dagger with V in C^{D x r} and

    h(V) = sum_J ||R_J||_F^2,     R_J = tr_{J^c}(V V^dagger) - sigma_J.

Regroup the sites of V as (J, J^c) and fold J^c into the columns: V~_J in C^{d_J x d_{J^c} r}.
Then tr_{J^c}(V V^dagger) = V~_J V~_J^dagger, a product of a d_J x (d_{J^c} r) matrix with its
adjoint (no D x D matrix is formed). For a step dV (dV~_J regrouped alike) with
E_J = dV~_J V~_J^dagger,

    h(V + dV) = h(V) + 4 Re <G_J, dV~_J> + 2 ||E_J||^2 + 2 Re tr(E_J^2) + O(|dV|^3),
    G_J = R_J V~_J,
    ||E_J||^2      = sum_a dV~_J[a,:] W_J dV~_J[a,:]^dagger,   W_J = V~_J^dagger V~_J,
    Re tr(E_J^2)   = Re sum conj(V~_J[a,k]) conj(V~_J[b,l]) dV~_J[a,l] dV~_J[b,k],

summed over J: the Gauss-Newton model, exact up to the quartic term that the linearisation drops.
In the real coordinates u = (Re dV, Im dV) of all D r entries it is h + 4 b.u + 2 u^T H u with
H = H_M + H_N positive semidefinite:

    H_M = [[Re M, -Im M], [Im M, Re M]],   M = sum_J 1_J (x) W_J^T      (Hermitian),
    H_N = [[Re N, -Im N], [-Im N, -Re N]], N = sum_J conj(V~_J (x) V~_J) regrouped (symmetric).

Each step solves (H + lambda I) u = -b with the Levenberg-Marquardt damping
lambda = mu sqrt(h) (Fan and Yuan: quadratic convergence to zero-residual solutions under a local
error bound, which the gauge freedom V -> V U does not spoil) and mu adapted by the ratio of
actual to predicted decrease. A D r x D r dense solve per iteration: the method is for D r up to
a few hundred (Thresholds.gauss_newton_max_size), where it needs 5-30 iterations against
hundreds of first-order ones. When h stops decreasing at a non-zero value (the rank is too small)
a column is added along the most negative eigenvector of sum_J R_J (x) 1, scaled by the exact
line search of the quartic h along it. A grown V may then head for a state of the old rank: its
new singular direction shrinks and convergence turns slow (the error bound fails where a column
vanishes). That is detected from the smallest singular value every few iterations, and the
iteration is retried from the truncated SVD at the lower rank, where it is quadratic again.

The iteration runs in numpy/scipy on the CPU and in torch on other devices (:class:`Backend`
names the few operations spelled differently; the rest is written once): for the D r of this
method the time is set by the per-call overhead of many small operations, about three times
lower in numpy.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import scipy.sparse
from scipy.linalg import lapack

from ..._sites import complement, subset_dim

def off_track(h, h_before, window: int, k: int, maxiter: int, tol: float) -> np.ndarray:
    """Per element (numpy): h, falling at the geometric rate it fell over the last ``window``
    iterations (from ``h_before``), would not reach tol^2 by iteration ``maxiter`` (now ``k``),
    or it did not fall at all. The patience rule of both factored paths."""
    rate = np.clip(h / np.maximum(h_before, 1e-300), 1e-300, 1.0)
    with np.errstate(divide="ignore"):
        left = window * np.log(np.maximum(h, 1e-300) / tol ** 2) / -np.log(rate)
    return (rate >= 1.0) | (k + left > maxiter)


def newton_fits(n_subsets: int, D: int, rank: int, th) -> bool:
    """Whether Levenberg-Marquardt takes the factored problem at this rank (``th``: the
    :class:`~.settings.Thresholds`)."""
    return D * rank <= th.gauss_newton_max_size and n_subsets * (D * rank) ** 2 <= th.newton_entries


class Backend:
    """The few array operations of the iteration whose spelling differs between torch (any
    device) and numpy/scipy (CPU), so that everything else is written once for both. On the
    CPU the iteration runs in numpy: its small operations cost a third of torch's per-call
    overhead, which sets the time of problems with D r up to a few hundred.

    Args:
        torch: the torch module (conversions at the boundary).
        device: the torch device of the caller's tensors; numpy is used on the CPU when
            ``NUMPY_ON_CPU`` is set.
    """

    def __init__(self, torch, device, numpy_on_cpu: bool | None = None):
        self.torch = torch
        self.device = torch.device(device)
        on_cpu = NUMPY_ON_CPU if numpy_on_cpu is None else numpy_on_cpu
        self.numpy = self.device.type == "cpu" and on_cpu

    # conversions ------------------------------------------------------------------------
    def from_torch(self, t):
        return t.detach().numpy() if self.numpy else t

    def to_torch(self, a):
        return self.torch.from_numpy(a) if self.numpy else a

    def host(self, a) -> np.ndarray:
        """A numpy copy or view of a (small) array."""
        return a if self.numpy else a.detach().cpu().numpy()

    def index(self, a: np.ndarray):
        """An integer index array (built in numpy) for indexing this backend's arrays."""
        return a if self.numpy else self.torch.as_tensor(a, device=self.device)

    def mask(self, m: np.ndarray):
        return m if self.numpy else self.torch.as_tensor(m, device=self.device)

    # array operations -------------------------------------------------------------------
    def adjoint(self, x):
        """Conjugate transpose of the last two axes."""
        return np.conj(np.swapaxes(x, -1, -2)) if self.numpy else x.mH

    def cat(self, xs, axis: int):
        return np.concatenate(xs, axis) if self.numpy else self.torch.cat(xs, axis)

    def stack(self, xs, axis: int = 0):
        return np.stack(xs, axis) if self.numpy else self.torch.stack(xs, axis)

    def where(self, mask: np.ndarray, a, b):
        """a where the per-element ``mask`` (numpy, (B,)) holds, else b."""
        m = self.mask(mask).reshape((-1,) + (1,) * (a.ndim - 1))
        return np.where(m, a, b) if self.numpy else self.torch.where(m, a, b)

    def empty(self, shape, like):
        """An uninitialised array of ``like``'s dtype (and device)."""
        if self.numpy:
            return np.empty(shape, dtype=like.dtype)
        return self.torch.empty(shape, dtype=like.dtype, device=like.device)

    def permute(self, x, order):
        return x.transpose(order) if self.numpy else x.permute(order)

    def sparse_ones(self, crow: np.ndarray, cols: np.ndarray, shape):
        """The CSR matrix with ones at (row, cols[crow[row]:crow[row + 1]]) (repeats add)."""
        if self.numpy:  # complex values: scipy multiplies complex by complex fastest
            return scipy.sparse.csr_matrix((np.ones(len(cols), dtype=complex), cols, crow),
                                           shape=shape)
        values = np.ones(len(cols))
        torch = self.torch
        with warnings.catch_warnings():  # "sparse CSR support is in beta state"
            warnings.simplefilter("ignore")
            return torch.sparse_csr_tensor(*(torch.as_tensor(a, device=self.device)
                                             for a in (crow, cols, values)), shape)

    def spmm(self, S, x):
        """S @ x for a real sparse S and a complex dense x (p x c)."""
        if self.numpy:
            return S @ x
        torch = self.torch
        xr = torch.view_as_real(x.contiguous()).reshape(x.shape[0], -1)
        return torch.view_as_complex((S @ xr).reshape(S.shape[0], x.shape[1], 2))

    def damped_solve(self, H, lam: np.ndarray, b):
        """u = -(H + diag(lambda)) \\ b per element (B, 2n), by Cholesky; an element whose
        damped matrix is not numerically positive definite falls back to least squares."""
        if self.numpy:
            out = np.empty_like(b)
            for i in range(H.shape[0]):
                a = H[i].copy()
                a.flat[:: a.shape[0] + 1] += lam[i]
                _, x, info = lapack.dposv(a, -b[i], lower=1)
                if info != 0:
                    a = H[i] + np.diag(np.full(a.shape[0], lam[i]))
                    x = np.linalg.lstsq(a, -b[i], rcond=None)[0]
                out[i] = x
            return out
        torch = self.torch
        damped = H.clone()
        damped.diagonal(0, -2, -1).add_(torch.as_tensor(lam, dtype=H.dtype,
                                                        device=H.device)[:, None])
        chol, info = torch.linalg.cholesky_ex(damped)
        u = torch.cholesky_solve(-b[..., None], chol)[..., 0]
        bad = info > 0
        if bool(bad.any()):
            u[bad] = torch.linalg.lstsq(damped[bad], -b[bad][..., None]).solution[..., 0]
        return u


#: run the iteration in numpy/scipy for problems on the CPU (False: torch everywhere; the tests
#: run both)
NUMPY_ON_CPU = True


class FactoredMaps:
    """Index maps V (B, D, r) -> V~_J (B, M, d_J, d_{J^c} r) for fixed dims, subsets and rank,
    and the sparse matrices that assemble the gradient and the Gauss-Newton matrix.

    Args:
        dims: local dimensions.
        group_subsets: the subsets as groups of equal d_J (the order of
            :attr:`MarginalMaps.group_subsets`, so residuals share its layout).
        rank: the number of columns r of V.
        backend: the :class:`Backend` of the arrays.
        sparse_entries: N is a product with a cached sparse matrix up to this many entries
            M n^2, a sum of strided views beyond (``Thresholds.sparse_entries``).
    """

    def __init__(self, dims, group_subsets, rank: int, backend: Backend, sparse_entries: int):
        be = self.backend = backend
        self.dims = tuple(dims)
        self.rank = rank
        n_sites = len(self.dims)
        self.D = math.prod(self.dims)
        self.n = n = self.D * rank
        ar = np.arange(n).reshape(self.dims + (rank,))
        self.n_subsets = sum(len(g) for g in group_subsets)
        self.perms = []  # per group: (M, dJ, m) positions in V of the entries of V~_J
        for subsets in group_subsets:
            perms = []
            for J in subsets:
                dJ = subset_dim(J, self.dims)
                perms.append(ar.transpose(tuple(J) + complement(J, n_sites) + (n_sites,))
                             .reshape(dJ, (self.D // dJ) * rank))
            self.perms.append(np.stack(perms))
        # the gradient b = sum_J R_J V~_J put back at V's positions: a sum over the entries
        # of every (R_J V~_J), whose column in the concatenation of all groups is its index
        flat = np.concatenate([p.reshape(-1) for p in self.perms])
        order = np.argsort(flat, kind="stable")
        self.scatter = be.sparse_ones(np.searchsorted(flat[order], np.arange(n + 1)), order,
                                      (n, len(flat)))
        # M = sum_J 1_J (x) W_J^T: M[p[a, k], p[a, l]] += W_J[l, k], one sparse matrix from the
        # flattened W of all groups (at most one entry per subset and row)
        rows, cols, off = [], [], 0
        for perm in self.perms:
            M, dJ, m = perm.shape
            jj = np.arange(M)[:, None, None, None]
            kk = np.arange(m)[None, None, :, None]
            ll = np.arange(m)[None, None, None, :]
            rows.append((perm[:, :, :, None] * n + perm[:, :, None, :]).reshape(-1))
            cols.append(np.broadcast_to(off + jj * m * m + ll * m + kk, (M, dJ, m, m))
                        .reshape(-1))
            off += M * m * m
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        order = np.argsort(rows, kind="stable")
        self.mix = be.sparse_ones(np.searchsorted(rows[order], np.arange(n * n + 1)),
                                  cols[order], (n * n, off))
        # N = sum_J N_J, N_J[x, y] = O[y_J + x_C, x_J + y_C] with O = conj(v) conj(v)^T: the
        # outer product with the J axes swapped between its row and column halves. Small
        # problems take it as one product with a cached sparse matrix; large ones add strided
        # views (no index)
        self.swap = None  # (n^2, n^2) sparse: N.flat = swap @ O.flat
        self.swap_axes = []  # else: per subset, the axis order of O that swaps the J axes
        if self.n_subsets * n * n > sparse_entries:
            for subsets in group_subsets:
                for J in subsets:
                    order = list(range(2 * n_sites + 2))
                    for i in J:
                        order[i], order[n_sites + 1 + i] = n_sites + 1 + i, i
                    self.swap_axes.append(order)
        else:
            # flat position of O[x', y'] for x' = x with its J digits taken from y (and y'
            # alike): with P_J[x] = sum_{i in J} x_i s_i (s_i the stride of site i in V),
            # x' n + y' = ((x - P_J[x]) n + P_J[x]) + (P_J[y] n + y - P_J[y])
            idx = np.arange(n)
            strides = [math.prod(self.dims[i + 1:]) * rank for i in range(n_sites)]
            place = np.stack([idx // s % d * s for s, d in zip(strides, self.dims)])
            member = np.array([[i in J for i in range(n_sites)] for g in group_subsets
                               for J in g], dtype=np.int64)
            pj = (member @ place).T  # (n, M)
            row = (idx[:, None] - pj) * n + pj
            col = pj * n + idx[:, None] - pj
            # row (x, y) of the sparse matrix holds the M positions O[swap_J(x, y)] (repeats
            # add up in the product)
            swap_cols = (row[:, None, :] + col[None, :, :]).reshape(-1)
            self.swap = be.sparse_ones(np.arange(0, len(swap_cols) + 1, self.n_subsets),
                                       swap_cols, (n * n,) * 2)
        self.perms = [be.index(p) for p in self.perms]

    def regroup(self, v):
        """[V~_J stacked per group: (B, M, d_J, d_{J^c} r)]."""
        flat = v.reshape(v.shape[0], -1)
        return [flat[:, perm] for perm in self.perms]

    def residual(self, vts, sigmas):
        """[R_J = V~_J V~_J^dagger - sigma_J per group: (B, M, d_J, d_J)]."""
        return [vt @ self.backend.adjoint(vt) - s for vt, s in zip(vts, sigmas)]

    def gradient(self, vts, res):
        """b_z = sum_J (R_J V~_J) put back at V's positions: (B, D r) complex."""
        be = self.backend
        Bn = vts[0].shape[0]
        parts = [(r @ vt).reshape(Bn, -1) for vt, r in zip(vts, res)]
        parts = parts[0] if len(parts) == 1 else be.cat(parts, -1)
        return be.spmm(self.scatter, parts.T).T

    def hessian(self, v, vts):
        """The real (B, 2n, 2n) Gauss-Newton matrix H = H_M + H_N of the module docstring."""
        be = self.backend
        Bn, n = v.shape[0], self.n
        w = [(be.adjoint(vt) @ vt).reshape(Bn, -1) for vt in vts]  # W_J of all groups (B, .)
        w = w[0] if len(w) == 1 else be.cat(w, -1)
        m_z = be.spmm(self.mix, w.T)  # (n^2, B)
        vc = v.conj().reshape(Bn, n)
        if self.swap is not None:
            vt = vc.T  # (n, B): the product takes the elements' O = conj(v) conj(v)^T as columns
            n_z = be.spmm(self.swap, (vt[:, None, :] * vt[None, :, :]).reshape(n * n, Bn))
        else:
            o = (vc[:, :, None] * vc[:, None, :]).reshape((Bn,) + (self.dims + (self.rank,)) * 2)
            n_z = None
            for order in self.swap_axes:
                term = be.permute(o, [0] + [1 + i for i in order])
                if n_z is None:
                    n_z = term + 0
                else:
                    n_z += term
            n_z = n_z.reshape(Bn, n * n).T
        p_z = (m_z + n_z).T.reshape(Bn, n, n)
        q_z = (m_z - n_z).T.reshape(Bn, n, n)
        H = be.empty((Bn, 2 * n, 2 * n), p_z.real)
        H[:, :n, :n] = p_z.real
        H[:, :n, n:] = -p_z.imag
        H[:, n:, :n] = q_z.imag
        H[:, n:, n:] = q_z.real
        return H


def _sq(res):
    """h = sum_J ||R_J||_F^2 per element."""
    return sum((r.real ** 2 + r.imag ** 2).sum((-3, -2, -1)) for r in res)


def _grow(be: Backend, mp, v, res):
    """Add one column along the most negative eigenvector u of G = sum_J R_J (x) 1, scaled by
    the minimiser s of h + 2 s u^dagger G u + s^2 sum_J ||tr_{J^c} u u^dagger||^2 (in torch,
    with the problem's :class:`MarginalMaps`)."""
    torch = mp.torch
    w, u = mp.descent_directions([be.to_torch(r) for r in res])
    u0, w0 = u[..., :, 0], w[..., 0]
    uu = u0[..., :, None] * u0.conj()[..., None, :]
    q = sum((t.abs() ** 2).sum((-2, -1)) for t in mp.ptrace(uu))
    s = (-w0).clamp_min(0) / q.clamp_min(1e-300)
    col = u0 * s.sqrt().to(u0.dtype)[:, None]
    return be.from_torch(torch.cat([be.to_torch(v), col[..., None]], -1))


def _probe_lower_rank(be: Backend, mp, v, active, sig_check, *, tol, th, deadline):
    """Try rank r - 1 from the truncated SVD of V for the ``active`` elements (numpy mask) whose
    smallest singular value shrank (see ``Thresholds.probe_every``). Returns (v, finished, extra iterations,
    the new smallest singular values), all but v as numpy arrays; a finished element's V is
    its rank r - 1 solution padded with a zero column (the same V V^dagger)."""
    torch = mp.torch
    vt_ = be.to_torch(v)
    u, s, _ = torch.linalg.svd(vt_, full_matrices=False)
    smin = s[:, -1].cpu().numpy()
    finished = np.zeros(v.shape[0], dtype=bool)
    extra = np.zeros(v.shape[0], dtype=np.int64)
    if sig_check is None:
        return v, finished, extra, smin
    shrinking = active & (smin < th.probe_shrink * sig_check)
    if not shrinking.any():
        return v, finished, extra, smin
    pos = np.flatnonzero(shrinking)
    idx = torch.as_tensor(pos, device=vt_.device)
    r = v.shape[-1]
    start = u[idx, :, : r - 1] * s[idx, None, : r - 1].to(u.dtype)
    v2, d2, it2, _ = levenberg_marquardt(mp.select(idx), start, tol=tol,
                                         maxiter=th.probe_iterations, max_rank=r - 1, th=th,
                                         deadline=deadline)
    extra[pos] = it2.cpu().numpy()
    d2 = d2.cpu().numpy()
    if d2.any():
        win = torch.as_tensor(pos[d2], device=vt_.device)
        v2 = v2[torch.as_tensor(d2, device=vt_.device)]
        vt_ = vt_.clone()
        vt_[win] = torch.cat([v2, torch.zeros_like(v2[..., :1])], -1)
        finished[pos[d2]] = True
    return be.from_torch(vt_), finished, extra, smin


@functools.lru_cache(maxsize=4)
def factored_maps(dims: tuple, group_subsets: tuple, rank: int, device: str,
                  numpy_on_cpu: bool = True, sparse_entries: int = 1 << 22) -> FactoredMaps:
    """The cached :class:`FactoredMaps` of a structure and rank (in the :class:`Backend` of
    ``device``; ``numpy_on_cpu`` and ``sparse_entries`` are part of the key)."""
    import torch

    return FactoredMaps(dims, group_subsets, rank, Backend(torch, device, numpy_on_cpu),
                        sparse_entries)


def levenberg_marquardt(mp, v, *, tol: float, maxiter: int, max_rank: int, th,
                        deadline=None, patience: int | None = None):
    """Minimise h(V) from V (B, D, r) until every element's normalised deviation <= tol.

    Args:
        mp: the :class:`MarginalMaps` of the problem (its groups give the residual layout).
        v: starting columns, complex (B, D, r).
        tol: stop when max_J max |tr_{J^c} rho - sigma_J| <= tol for rho = V V^dagger / tr.
        maxiter: iteration cap.
        max_rank: the rank is never grown beyond this; elements that stall at it are frozen
            (left not done) while the others go on.
        th: the :class:`~.settings.Thresholds`. Levenberg-Marquardt steps are taken while
            ``newton_fits``; stalled where the next rank does not fit, the iteration adds the
            column and stops (the caller goes on with L-BFGS). After a growth, elements heading
            for the old rank are probed there (``probe_every``); those finished at rank r - 1
            come back with a zero last column.
        deadline: perf_counter time after which to stop.
        patience: None, or the iterations after which an element must be on track: its h, at
            the geometric rate of the last ``th.progress_window`` iterations, must reach tol^2
            within ``maxiter``; elements off track are frozen (left not done) so that the
            caller can try another method on them.

    Returns:
        (v, done, iters, log): the final columns, per-element success, iterations, and the
        rank changes as strings such as "+1@12".
    """
    import time

    torch = mp.torch
    Bn, D = v.shape[0], v.shape[1]
    dev = v.device
    be = Backend(torch, dev)
    host = be.host
    sigmas = [be.from_torch(sig.reshape(sig.shape[:2] + (int(math.isqrt(sig.shape[-1])),) * 2))
              for _, sig in mp.groups]

    groups = tuple(tuple(tuple(J) for J in g) for g in mp.group_subsets)

    def maps(r):
        return factored_maps(mp.dims, groups, r, str(dev), be.numpy, th.sparse_entries)

    def deviation(v, res):
        trace = be.to_torch((v.real ** 2 + v.imag ** 2).sum((-2, -1)))
        return mp.normalised_deviation([be.to_torch(r) for r in res], trace).cpu().numpy()

    # the iterate lives in the backend's arrays (numpy on the CPU); the per-element
    # bookkeeping (damping, acceptance, stall and patience tests: a dozen operations on B
    # numbers per iteration) in numpy
    v = be.from_torch(v)
    fm = maps(v.shape[-1])
    vts = fm.regroup(v)
    res = fm.residual(vts, sigmas)
    h = host(_sq(res))
    done = deviation(v, res) <= tol
    iters = np.zeros(Bn, dtype=np.int64)
    mu = np.full(Bn, th.mu_start)
    nu = np.full(Bn, 2.0)
    slow = np.zeros(Bn, dtype=np.int64)  # accurate but tiny steps in a row
    hist = [h]
    log = []
    model = None  # (b, H, max diag H) at the current V; kept through rejected steps
    # the deviation is measured only once h is small enough for it to be near the tolerance
    near = (1e2 * tol) ** 2 * sum(s[0].size if be.numpy else s[0].numel() for s in sigmas)
    quit = np.zeros_like(done)  # frozen: off track after `patience`, or stalled at max_rank
    r_start = v.shape[-1]
    probes = np.zeros(Bn, dtype=np.int64)
    at_rank = 0  # iterations since the last growth
    sig_check = None  # smallest singular value of V at the last probe check
    k = 0
    while k < maxiter and not (done | quit).all():
        if deadline is not None and time.perf_counter() > deadline:
            break
        k += 1
        n = fm.n
        active = ~(done | quit)
        if model is None:
            gz = fm.gradient(vts, res)
            H = fm.hessian(v, vts)
            model = (be.cat([gz.real, gz.imag], -1), H,
                     host(H.diagonal(0, -2, -1)).max(-1))
        bvec, H, hdiag = model
        # H is PSD but singular (the gauge V -> V U): keep lambda above rounding level
        lam = np.maximum(mu * np.sqrt(h), 1e-13 * hdiag)
        u = be.damped_solve(H, lam, bvec)
        # the model decrease -(4 b.u + 2 u.H u), with u.H u = -b.u - lambda |u|^2
        bu, uu = host(be.stack([(bvec * u).sum(-1), (u * u).sum(-1)]))
        pred = -2 * bu + 2 * lam * uu
        dz = (u[:, :n] + 1j * u[:, n:]).reshape(v.shape)
        if not active.all():
            dz = be.where(active, dz, 0 * dz)
        v_new = v + dz
        vts_new = fm.regroup(v_new)
        res_new = fm.residual(vts_new, sigmas)
        h_new = host(_sq(res_new))
        ratio = (h - h_new) / np.maximum(pred, 1e-300)
        accept = (ratio > 1e-4) & active
        # Nielsen's damping update: shrink smoothly on good steps, grow geometrically on bad
        shrink = np.maximum(1 - (2 * np.clip(ratio, 0, 1) - 1) ** 3, 1 / 3)
        mu = np.where(accept, np.maximum(mu * shrink, 1e-12), np.minimum(mu * nu, 1e12))
        nu = np.where(accept, 2.0, np.minimum(nu * 2, 2.0 ** 20))
        tiny = accept & (ratio > 0.5) & (h - h_new < th.stall_decrease * h)
        slow = np.where(tiny, slow + 1, np.where(accept, 0, slow))
        if accept.all():
            v, vts, res = v_new, vts_new, res_new
            model = None
        elif accept.any():
            v = be.where(accept, v_new, v)
            vts = [be.where(accept, a, b) for a, b in zip(vts_new, vts)]
            res = [be.where(accept, a, b) for a, b in zip(res_new, res)]
            model = None
        h = np.where(accept, h_new, h)
        iters += active
        if (h <= near).any():
            done = done | (deviation(v, res) <= tol)
        hist.append(h)
        # a stall at h > 0 (the model is accurate but h hardly moves, or no step is accepted,
        # or slow progress over a window): too few columns
        window = th.progress_window
        if patience is not None and k >= patience and len(hist) > window:
            late = off_track(h, hist[-1 - window], window, k, maxiter, tol)
            quit = quit | (~done & late)
        if (done | quit).all():
            break
        active = ~done & ~quit
        stalled = active & ((slow >= 2) | (nu > 2 ** 6))
        if len(hist) > 8:
            stalled |= active & (h > 0.5 * hist[-9])
        r = v.shape[-1]
        at_rank += 1
        if r > r_start and at_rank % th.probe_every == 0:
            candidates = active & (probes < th.probe_limit) & (
                h > th.probe_slow * hist[-1 - th.probe_every])
            probed = _probe_lower_rank(be, mp, v, candidates, sig_check, tol=tol, th=th,
                                       deadline=deadline)
            v, finished, extra, sig_check = probed
            iters += extra
            probes += extra > 0
            if finished.any():
                done = done | finished
                vts = fm.regroup(v)
                res = fm.residual(vts, sigmas)
                h = host(_sq(res))
                model = None
                if (done | quit).all():
                    break
                stalled = stalled & ~finished
        if stalled.any() and r >= max_rank:
            # stalled at the largest rank allowed: frozen (the caller takes over), the others
            # go on
            quit = quit | stalled
            if (done | quit).all():
                break
            continue
        if stalled.any() and not newton_fits(fm.n_subsets, D, r + 1, th):
            v = _grow(be, mp, v, res)  # too large for these steps: the caller goes on
            log.append(f"+1@{k}")
            break
        if stalled.any():
            v = _grow(be, mp, v, res)
            at_rank = 0
            sig_check = torch.linalg.svdvals(be.to_torch(v))[:, -1].cpu().numpy()
            fm = maps(r + 1)
            vts = fm.regroup(v)
            res = fm.residual(vts, sigmas)
            h = host(_sq(res))
            mu = np.full(Bn, th.mu_start)
            nu = np.full(Bn, 2.0)
            slow = np.zeros(Bn, dtype=np.int64)
            hist = [h]
            model = None
            log.append(f"+1@{k}")
    return (be.to_torch(v), torch.as_tensor(done, device=dev), torch.as_tensor(iters, device=dev),
            log)


__all__ = ["FactoredMaps", "levenberg_marquardt", "newton_fits"]
