"""Slow, obvious reference implementations built from explicit Kronecker products.

They share no code with qmarginal's kernels: a permutation matrix reorders the tensor factors
so that the kept sites come first, then the traced factor is removed with explicit
(1 (x) <j|) . (1 (x) |j>) products.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def permutation_matrix(dims, order):
    """P with P |i_0 ... i_{N-1}> = |i_{order[0]} ... i_{order[N-1]}> (explicit basis loop)."""
    D = math.prod(dims)
    new_dims = [dims[s] for s in order]
    P = np.zeros((D, D))
    for idx in itertools.product(*[range(d) for d in dims]):
        src = np.ravel_multi_index(idx, dims)
        dst = np.ravel_multi_index(tuple(idx[s] for s in order), new_dims)
        P[dst, src] = 1.0
    return P


def ref_partial_trace(rho, keep, dims):
    n = len(dims)
    traced = [s for s in range(n) if s not in keep]
    P = permutation_matrix(dims, list(keep) + traced)
    r = P @ rho @ P.T
    dk = math.prod(dims[s] for s in keep)
    dt = math.prod(dims[s] for s in traced)
    out = np.zeros((dk, dk), dtype=complex)
    for j in range(dt):
        e = np.zeros((dt, 1))
        e[j] = 1
        L = np.kron(np.eye(dk), e)  # (1 (x) |j>)
        out += L.T @ r @ L
    return out


def ref_embed(sigma, keep, dims, normalize=True):
    n = len(dims)
    traced = [s for s in range(n) if s not in keep]
    P = permutation_matrix(dims, list(keep) + traced)
    dt = math.prod(dims[s] for s in traced)
    big = np.kron(sigma, np.eye(dt) / (dt if normalize else 1))
    return P.T @ big @ P


def ref_impose(x, marginals, dims):
    """Eq. (3) composed, each step with the reference partial trace and embedding."""
    y = np.array(x, dtype=complex)
    for J, sigma in marginals.items():
        y = y - ref_embed(ref_partial_trace(y, J, dims), J, dims) + ref_embed(sigma, J, dims)
    return y
