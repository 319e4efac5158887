"""Distances between states and the paper's validity (success) test.

All functions are batched over leading axes and keep the input's library.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _backend as B
from ._sites import normalize_dims, normalize_subset, subset_dim
from .partial_trace import _check_square, partial_trace, trace_indices

__all__ = ["fidelity", "trace_distance", "state_report", "StateReport", "psd_sqrt",
           "nearest_density_matrix", "mean_marginal_fidelity"]

#: The paper's success threshold: minimum eigenvalue >= -1e-10 after hermitising and
#: normalising the trace.
VALIDITY_ATOL = 1e-10


def _psd_factor(h):
    """(Lambda, V, L) with h = V Lambda V^dagger (h Hermitian) and L = V sqrt(max(Lambda, 0)):
    L L^dagger is the PSD part of h and L V^dagger its square root."""
    w, v = B.eigh(h)
    s = B.sqrt(B.clip_min(w, 0.0))
    return w, v, (v * s[..., None, :].to(v.dtype) if B.is_torch(v) else v * s[..., None, :])


def psd_sqrt(rho):
    """Square root of the PSD part of the Hermitian part of ``rho``: V sqrt(max(L, 0)) V^dagger."""
    _, v, f = _psd_factor(B.hermitian_part(B.to_complex(rho)))
    return f @ B.dagger(v)


#: The eigenvalue route of :func:`fidelity` is taken when lambda_min(M) >= tau lambda_max(rho)
#: ||sigma||_F; its rounding error in sqrt(F) is then within about 1 / (2 sqrt(tau)) of the SVD
#: route's bound (50 for double precision, 5 for single), keyed by real precision (bytes).
_FIDELITY_TAU = {4: 1e-2, 8: 1e-4}


def fidelity(rho, sigma):
    """Uhlmann fidelity F(rho, sigma) = (tr sqrt(sqrt(rho) sigma sqrt(rho)))^2.

    With rho = V Lambda V^dagger and L = V sqrt(Lambda) (so sqrt(rho) = L V^dagger), the
    square root of F is the sum of the singular values of L^dagger sqrt(sigma), equivalently
    the sum of the square roots of the eigenvalues mu of M = L^dagger sigma L. Two routes:

    * eigenvalues, where M is well conditioned: mu_min >= tau lambda_max(rho) ||sigma||_F
      (tau = 1e-4 in double, 1e-2 in single precision). Then the error of sum sqrt(mu) is
      within about 1 / (2 sqrt(tau)) of the SVD route's bound, eps sqrt(lambda_max(rho)
      ||sigma||) per term. Costs one eigh, two products and one eigvalsh.
    * singular values otherwise: the squared nuclear norm ||L_rho^dagger L_sigma||_1^2, which
      stays accurate for rank-deficient and nearly pure inputs, where the eigenvalues of M are
      the squared singular values and a zero one comes out as sqrt(eps) (about 1e-8 in double
      precision, per dimension). Costs two eighs and one SVD.

    Both inputs are hermitised and their negative eigenvalues clipped; the trace is not
    renormalised. The result is clipped to [0, 1]: never NaN, never above 1.

    Args:
        rho, sigma: arrays ``(*batch, d, d)`` (batch shapes broadcast).

    Returns:
        Real array of shape ``batch`` (a float for unbatched numpy inputs).

    Example:
        >>> import numpy as np
        >>> round(float(fidelity(np.diag([1.0, 0.0]), np.eye(2) / 2)), 12)
        0.5
    """
    a = B.hermitian_part(B.to_complex(rho))
    b = B.hermitian_part(B.to_complex(sigma))
    is_torch = B.is_torch(a)
    if a.shape != b.shape:
        a, b = (B.torch_module().broadcast_tensors if is_torch else np.broadcast_arrays)(a, b)
    batch, d = tuple(a.shape[:-2]), a.shape[-1]
    a, b = a.reshape((-1, d, d)), b.reshape((-1, d, d))  # one batch axis, for the masks below
    w, _, la = _psd_factor(a)
    tau = _FIDELITY_TAU[w.dtype.itemsize]
    w_max = w[:, -1]
    ok = (w[:, 0] >= tau * w_max) & (w_max > 0)  # necessary: mu_min <= lambda_min ||sigma||
    root = None
    if ok.any():
        mu = B.eigvalsh(B.dagger(la) @ b @ la)
        fro = B.sqrt((B.abs_(b) ** 2).sum((-2, -1)))
        ok &= mu[:, 0] >= tau * w_max * fro
        root = B.sqrt(B.clip_min(mu, 0.0)).sum(-1)
    if root is None:
        root = _nuclear_norm_of_factors(la, b)
    elif not ok.all():
        if is_torch:
            idx = B.torch_module().nonzero(~ok, as_tuple=True)[0]
            root = root.index_put((idx,), _nuclear_norm_of_factors(la[idx], b[idx]))
        else:
            idx = np.flatnonzero(~ok)
            root[idx] = _nuclear_norm_of_factors(la[idx], b[idx])
    f = B.clip(root * root, 0.0, 1.0).reshape(batch)
    return f if is_torch or f.ndim else float(f)


def _nuclear_norm_of_factors(la, b):
    """||la^dagger L_b||_1 with L_b the factor of the PSD part of the Hermitian ``b``."""
    return B.svdvals(B.dagger(la) @ _psd_factor(b)[2]).sum(-1)


def trace_distance(rho, sigma):
    """Trace distance T = ||rho - sigma||_1 / 2 (of the Hermitian parts), batched."""
    w = B.eigvalsh(B.hermitian_part(B.to_complex(rho) - B.to_complex(sigma)))
    t = 0.5 * B.abs_(w).sum(-1)
    return t if B.is_torch(t) or np.ndim(t) else float(t)


@dataclass(frozen=True)
class StateReport:
    """The paper's validity test and the negative part of a (batch of) matrix(es).

    Attributes:
        valid: min eigenvalue >= -atol after hermitising and trace-normalising.
        min_eigenvalue: smallest eigenvalue after hermitising and trace-normalising.
        negative_count: number of eigenvalues below -atol.
        negative_sum: sum of the eigenvalues below -atol (<= 0).
        trace: real part of the trace before normalising.
        atol: the tolerance used.
    """

    valid: Any
    min_eigenvalue: Any
    negative_count: Any
    negative_sum: Any
    trace: Any
    atol: float


def state_report(rho, atol: float = VALIDITY_ATOL) -> StateReport:
    """The paper's success test: hermitise, divide by the trace, and require
    lambda_min >= -atol (default 1e-10); also count and sum the eigenvalues below -atol.

    A matrix whose trace is not positive is reported invalid (its trace is stated).
    """
    return _state_report(B.hermitian_part(B.to_complex(rho)), atol)


def _state_report(h, atol: float) -> StateReport:
    """:func:`state_report` of a Hermitian (complex) ``h``."""
    tr = B.real(B.trace(h))
    safe = B.clip_min(tr, 1e-300) if not B.is_torch(tr) else tr.clamp_min(1e-30)
    w = B.eigvalsh(h) / safe[..., None]
    neg = w < -atol
    wmin = w.min(-1).values if B.is_torch(w) else w.min(-1)
    count = neg.sum(-1)
    nsum = (w * neg).sum(-1)
    valid = (wmin >= -atol) & (tr > 0)
    to = (lambda a: a) if B.is_torch(w) or np.ndim(wmin) else (lambda a: a.item())
    return StateReport(to(valid), to(wmin), to(count), to(nsum), to(tr), float(atol))


def nearest_density_matrix(x):
    """The Frobenius-closest density matrix to the Hermitian part of ``x`` after dividing by its
    trace: argmin_{rho >= 0, tr rho = 1} ||rho - X||_F, by projecting the eigenvalues onto the
    probability simplex (Smolin, Gambetta and Smith, PRL 108, 070502 (2012)).
    """
    h = B.hermitian_part(B.to_complex(x))
    tr = B.real(B.trace(h))
    h = h / tr[..., None, None]
    w, v = B.eigh(h)
    p = _simplex_projection(w)
    return (v * (p[..., None, :].to(v.dtype) if B.is_torch(v) else p[..., None, :])) @ B.dagger(v)


def _simplex_projection(w):
    """Euclidean projection of each row of w onto {p >= 0, sum p = 1} (sort-based)."""
    if B.is_torch(w):
        torch = B.torch_module()
        u = torch.sort(w, dim=-1, descending=True).values
        css = u.cumsum(-1) - 1.0
        k = torch.arange(1, w.shape[-1] + 1, device=w.device, dtype=w.dtype)
        cond = u - css / k > 0
        r = cond.sum(-1, keepdim=True) - 1  # cond holds on a prefix of the sorted values
        theta = css.gather(-1, r) / (r + 1).to(w.dtype)
        return (w - theta).clamp_min(0.0)
    u = -np.sort(-w, axis=-1)
    css = np.cumsum(u, axis=-1) - 1.0
    k = np.arange(1, w.shape[-1] + 1)
    cond = u - css / k > 0
    r = cond.sum(-1, keepdims=True) - 1  # cond holds on a prefix of the sorted values
    theta = np.take_along_axis(css, r, axis=-1) / (r + 1)
    return np.maximum(w - theta, 0.0)


def mean_marginal_fidelity(rho, problem_marginals: dict, dims=2):
    """Mean over J of F(sigma_J, tr_{J^c} rho): the paper's per-sample F-bar (Section V).

    Args:
        rho: the global state(s) ``(*batch, D, D)``.
        problem_marginals: {J: sigma_J} (arrays ``(*batch, d_J, d_J)``).
        dims: one local dimension for all sites or one per site.

    Returns:
        Real array of the broadcast batch shape (a numpy scalar for unbatched numpy inputs).

    Example:
        >>> import numpy as np
        >>> rho = np.eye(4) / 4
        >>> round(float(mean_marginal_fidelity(rho, {(0,): np.diag([1.0, 0.0])})), 12)
        0.5
    """
    (fids,) = _per_marginal(rho, problem_marginals, dims, fidelity)
    return fids.mean(-1)


# ---------------------------------------------------------------- all marginals at once
#: largest gather index (entries) kept per group of equally sized subsets; a larger group is
#: traced one subset at a time (then the arithmetic, not the number of calls, sets the time).
_GATHER_MAX = 1 << 21

#: matrix entries per chunk of marginals: stacks small marginals into one LAPACK call each, and
#: takes large ones one at a time (batching them saves nothing and costs memory; numpy's stacked
#: eigh is even a little slower than a loop over 512 x 512 matrices).
_CHUNK_ENTRIES = 1 << 16


@functools.lru_cache(maxsize=32)
def _trace_plan(dims: tuple[int, ...], subsets: tuple[tuple[int, ...], ...]):
    """The subsets grouped by marginal size, with gather indices for the partial traces.

    Returns a tuple of ``(group, d_J, idx)``: ``group`` the positions (in ``subsets``) of the
    subsets of size d_J, ``idx`` None or integer array ``(len(group), d_{J^c}, d_J * d_J)`` of
    flat positions in a D x D matrix X with tr_{J^c}[X]_{a, b} = sum_c X.flat[idx[j, c, a d_J + b]]
    (None when the group's index would exceed ``_GATHER_MAX`` entries), from
    :func:`qmarginal.partial_trace.trace_indices` (the solver's maps use the same).
    """
    D = math.prod(dims)
    by_dim: dict[int, list] = {}
    for pos, J in enumerate(subsets):
        by_dim.setdefault(subset_dim(J, dims), []).append(pos)
    plan = []
    for dJ, group in by_dim.items():
        idx = None
        if len(group) * D * dJ <= _GATHER_MAX:
            idx = np.ascontiguousarray(np.stack([trace_indices(dims, subsets[pos]).T
                                                 for pos in group]))
        plan.append((tuple(group), dJ, idx))
    return tuple(plan)


@functools.lru_cache(maxsize=32)
def _structure(D: int, dims, keys: tuple):
    """(dims, subsets) normalised for a D x D matrix: the local dimensions as a tuple and the
    marginals' keys as sorted tuples of sites (checked once per structure)."""
    dims_t = normalize_dims(dims, total_dim=D)
    return dims_t, tuple(normalize_subset(J, len(dims_t), what="marginal subset") for J in keys)


@functools.lru_cache(maxsize=32)
def _torch_index(dims, subsets, device: str):
    """The gather indices of :func:`_trace_plan` as torch tensors on ``device``."""
    torch = B.torch_module()
    return tuple(None if idx is None else torch.as_tensor(idx, device=device)
                 for _, _, idx in _trace_plan(dims, subsets))


def _stack(arrays, like):
    """Stack ``(*batch, d, d)`` arrays along a new axis -3 in the library of ``like``."""
    if B.is_torch(like):
        torch = B.torch_module()
        return torch.stack([B.as_array(a, like=like) for a in arrays], dim=-3)
    return np.stack([np.asarray(a) for a in arrays], axis=-3)


def _cat_last(parts):
    if B.is_torch(parts[0]):
        return B.torch_module().cat(parts, dim=-1)
    return np.concatenate(parts, axis=-1)


def _per_marginal(rho, marginals: dict, dims, *fns):
    """Each ``fn(sigma, red)`` over all marginals, with red = tr_{J^c} rho.

    The marginals are grouped by size; each group's partial traces come from one gather (or,
    for large marginals, one :func:`~qmarginal.partial_trace.partial_trace` per subset), and
    every ``fn`` gets stacked arrays ``(*batch, m, d_J, d_J)`` and returns ``(*batch, m)``.
    Groups are split into chunks of about ``_CHUNK_ENTRIES`` matrix entries (at least one
    marginal).

    Returns:
        One array ``(*batch, M)`` per ``fn``, the M marginals in group order (and in input order
        within a group).
    """
    D = _check_square(rho)
    try:
        dims_t, subsets = _structure(D, dims, tuple(marginals))
    except TypeError:  # unhashable dims (a list, an array)
        dims_t, subsets = _structure(D, normalize_dims(dims, total_dim=D), tuple(marginals))
    sigmas = list(marginals.values())
    plan = _trace_plan(dims_t, subsets)
    torch_idx = _torch_index(dims_t, subsets, str(rho.device)) if B.is_torch(rho) else None
    rho = B.contiguous(rho)
    batch = tuple(rho.shape[:-2])
    flat = rho.reshape(batch + (D * D,))
    n_batch = max(math.prod(batch), math.prod(tuple(B.as_array(sigmas[0]).shape[:-2])))
    out: list[list] = [[] for _ in fns]
    for g, (group, dJ, idx) in enumerate(plan):
        step = max(1, _CHUNK_ENTRIES // (n_batch * dJ * dJ))
        for lo in range(0, len(group), step):
            part = group[lo:lo + step]
            if idx is not None:
                ix = torch_idx[g] if torch_idx is not None else idx
                red = flat[..., ix[lo:lo + step]].sum(-2)  # over c: adds whole rows
                red = red.reshape(batch + (len(part), dJ, dJ))
            else:
                red = _stack([partial_trace(rho, subsets[p], dims_t) for p in part], like=rho)
            sig = _stack([sigmas[p] for p in part], like=red)
            for o, fn in zip(out, fns):
                o.append(fn(sig, red))
    return tuple(o[0] if len(o) == 1 else _cat_last(o) for o in out)
