"""The face step: the convex path restricted to the support every compatible state must have.

If a marginal sigma_J is rank-deficient, every state rho >= 0 with tr_{J^c} rho = sigma_J
vanishes on ker(sigma_J) (x) H_{J^c}, so rho lives on

    S = intersection over deficient J of range(sigma_J) (x) H_{J^c},    rho = Q Y Q^dagger,

Q an orthonormal basis of S (D x D'), Y >= 0 of size D' x D'. When D' is small (a few
marginals, one of low rank: 12-27 of D = 162-243 on the sweep's failures), the problem in Y is
tiny and, unlike the full problem, usually has interior points: the compatible states are
full-rank within the face. The constraints L(Y) = (tr_{J^c}(Q Y Q^dagger))_J = sigma are then a
dense linear map (built column by column from the regrouped columns of Q), the affine set
{Y : L(Y) = sigma} has the exact projection Y - L^+(L(Y) - sigma), and the convex path of
:mod:`._convex` runs on Y unchanged (this module provides the maps it calls). Measured on those
instances: certified in milliseconds where the factored and convex paths on the full problem
failed after 10-60 s.
"""

from __future__ import annotations

import math

import numpy as np

from ..._sites import complement, subset_dim

__all__ = ["face_basis", "FaceMaps", "face_factored"]


def face_basis(dims, sigmas: dict, rel_tol: float):
    """Q (D x D'), an orthonormal basis of S (numpy), or None when no marginal is deficient.

    ``sigmas``: {J: sigma_J} (numpy, one element). A marginal's kernel is spanned by its
    eigenvectors with eigenvalue <= rel_tol times the largest.
    """
    from ...partial_trace import embed

    D = math.prod(dims)
    G = np.zeros((D, D), dtype=np.complex128)
    any_kernel = False
    for J, s in sigmas.items():
        w, u = np.linalg.eigh(0.5 * (s + s.conj().T))
        ker = u[:, w <= rel_tol * max(w.max(), 0.0)]
        if ker.shape[1]:
            any_kernel = True
            G += embed(ker @ ker.conj().T, J, dims, n_sites=len(dims), normalize=False)
    if not any_kernel:
        return None
    # G = sum_J (kernel projector) (x) 1 is PSD with kernel S (eigenvalues are 0 or >= ~1)
    w, u = np.linalg.eigh(0.5 * (G + G.conj().T))
    return u[:, w < 0.5]


def _regroup(Q, J, dims):
    """Q's columns as d_J x d_{J^c} matrices: (D', d_J, d_{J^c})."""
    n = len(dims)
    Dp = Q.shape[1]
    t = Q.T.reshape((Dp,) + tuple(dims))
    order = (0,) + tuple(1 + s for s in J) + tuple(1 + s for s in complement(J, n))
    return t.transpose(order).reshape(Dp, subset_dim(J, dims), -1)


class FaceMaps:
    """The maps the convex path needs, for one problem restricted to its face (batch of 1).

    Args:
        Q: the face basis (numpy D x D').
        dims: local dimensions.
        sigmas: {J: sigma_J} (numpy).
        torch: the torch module.
    """

    def __init__(self, Q, dims, sigmas: dict, torch):
        self.torch = torch
        self.Q = Q
        Dp = Q.shape[1]
        self.D = Dp
        self.B = 1
        self.device = torch.device("cpu")
        blocks, rhs = [], []
        for J, s in sigmas.items():
            M = _regroup(Q, J, dims)  # (D', d_J, d_c)
            # L_J[(i, j), (a, b)] = sum_c M_a[i, c] conj(M_b[j, c]) = tr_{J^c}(q_a q_b^dagger)
            dJ = M.shape[1]
            Mf = M.reshape(Dp * dJ, -1)
            L = (Mf @ Mf.conj().T).reshape(Dp, dJ, Dp, dJ).transpose(1, 3, 0, 2)
            L = np.ascontiguousarray(L).reshape(-1, Dp * Dp)
            blocks.append(L)
            rhs.append(np.asarray(s, dtype=np.complex128).reshape(-1))
        L = np.concatenate(blocks)
        self.L = L
        self.s = np.concatenate(rhs)
        # L^+ through the normal matrix: Pi = projector onto range(L^dagger), y0 = L^+ s
        w, V = np.linalg.eigh(L.conj().T @ L)
        keep = w > 1e-12 * max(w.max(), 1e-300)
        Vk = V[:, keep]
        self.pinv = (Vk / w[keep]) @ Vk.conj().T @ L.conj().T  # (D'^2, m)
        self.Pi = Vk @ Vk.conj().T
        self.rows = Vk.conj().T  # orthonormal rows spanning range(L^dagger): (k, D'^2)
        self.y0 = self.pinv @ self.s
        T = torch.as_tensor
        self._Pi, self._y0, self._L, self._s = T(self.Pi), T(self.y0), T(L), T(self.s)

    def select(self, keep):
        return self  # one element

    def _flat(self, x):
        return x.reshape(x.shape[0], -1)

    def tangent(self, x):
        """x minus its component along range(L^dagger): every L-image zero."""
        y = self._flat(x)
        return (y - y @ self._Pi.T).reshape(x.shape)

    def project(self, x):
        """The Frobenius projection onto {Y : L(Y) = sigma}."""
        return self.tangent(x) + self._y0.reshape(x.shape[-2:])

    def deviation(self, x):
        """max |L(Y) - sigma| per element: the marginal deviation of Q Y Q^dagger."""
        r = self._flat(x) @ self._L.T - self._s
        return r.abs().amax(-1)

    def lift(self, y):
        """Q Y Q^dagger (torch, (B, D, D))."""
        Q = self.torch.as_tensor(self.Q)
        return Q @ y @ Q.mH

    @staticmethod
    def entries(dims, subsets, Dp: int) -> int:
        """Entries of the dense map L for a face of dimension D' (its memory bound)."""
        return sum(subset_dim(J, dims) ** 2 for J in subsets) * Dp * Dp


def face_factored(fm: FaceMaps, y, rank: int, tol: float, maxiter: int, seed: int,
                  deadline=None):
    """Levenberg-Marquardt on Y = V V^dagger over the face (numpy): the residual is the
    component of vec(Y) - Y0 along range(L^dagger) (its norm is the Frobenius distance of Y to
    the affine set), V of ``rank`` columns from the leading eigenvectors of ``y`` (the convex
    iterate), one column added when the residual stalls, up to D'.

    Returns:
        (Y normalised to trace 1 or None, done, iterations, final rank).
    """
    import time

    Dp = fm.D
    P = fm.rows.reshape(-1, Dp, Dp)  # (k, D', D')
    y0 = fm.y0
    rng = np.random.default_rng(seed)
    h = 0.5 * (y + y.conj().T)
    w, u = np.linalg.eigh(h)
    r = max(1, min(rank, Dp))
    V = u[:, ::-1][:, :r] * np.sqrt(np.clip(w[::-1][:r], 1e-3 / Dp, None))

    def residual(V):
        return fm.rows @ (V @ V.conj().T).reshape(-1) - fm.rows @ y0

    res = residual(V)
    cost = float(np.vdot(res, res).real)
    mu, it, stall = 1e-3, 0, 0
    done = False
    while it < maxiter:
        Y = V @ V.conj().T
        if float(np.max(np.abs(fm.L @ Y.reshape(-1) - fm.s))) <= tol:
            done = True
            break
        if deadline is not None and time.perf_counter() > deadline:
            break
        it += 1
        # dR = sum X (A + C) + i Y (A - C) for the direction E = X + i Y
        A = np.einsum("mab,bk->mak", P, V.conj()).reshape(P.shape[0], -1)
        C = np.einsum("mab,ak->mbk", P, V).reshape(P.shape[0], -1)
        Jc = np.concatenate([A + C, 1j * (A - C)], axis=1)
        J = np.concatenate([Jc.real, Jc.imag])
        rr = np.concatenate([res.real, res.imag])
        g = J.T @ rr
        H = J.T @ J
        accepted = False
        while mu < 1e12:
            step = np.linalg.solve(H + mu * (np.trace(H) / H.shape[0] + 1e-300)
                                   * np.eye(H.shape[0]), -g)
            n = Dp * r
            Vn = V + (step[:n] + 1j * step[n:]).reshape(Dp, r)
            rn = residual(Vn)
            cn = float(np.vdot(rn, rn).real)
            if cn < cost:
                accepted = True
                stall = stall + 1 if cn > 0.5 * cost else 0
                V, res, cost = Vn, rn, cn
                mu = max(mu / 3, 1e-12)
                break
            mu *= 4
        if not accepted or stall >= 8:
            if r >= Dp:
                if not accepted:
                    break
                continue
            # stalled: one more column (small, random)
            col = (rng.standard_normal((Dp, 1)) + 1j * rng.standard_normal((Dp, 1))) * 1e-2
            V = np.concatenate([V, col / math.sqrt(Dp)], axis=1)
            r += 1
            res = residual(V)
            cost = float(np.vdot(res, res).real)
            mu, stall = 1e-3, 0
    if not done:
        return None, False, it, r
    Y = V @ V.conj().T
    return Y / np.trace(Y).real, True, it, r
