"""The partial trace over arbitrary sites and its adjoint, the embedding sigma_J (x) 1.

Sites are numbered 0..N-1 from the leftmost (most significant) tensor factor:
H = H_0 (x) ... (x) H_{N-1}. For a subset J of sites with complement J^c,

    tr_{J^c}[rho]_{a,b} = sum_{c} rho_{(a,c),(b,c)}                       (Eq. (1) of the paper)

and the embedding is E_J(sigma) = sigma_J (x) 1_{J^c} / d_{J^c}, with the factors put back at their
positions. Since <tr_{J^c} X, Y>_HS = <X, Y (x) 1_{J^c}>_HS, the embedding is the Hilbert-Schmidt
adjoint of the partial trace divided by d_{J^c} (``normalize=False`` gives the adjoint itself).

Both are computed without Kronecker products: the matrix is viewed as a tensor with one row and
one column axis per site, and the traced sites' (row, column) axis pairs are fused into diagonal
axes of a strided view. A partial trace is a sum over that view; an embedding writes into it.
The cost is O(D^2 / d_{J^c}) for a D x D matrix, against O(D^3) or worse for Kronecker products.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from . import _backend as B
from ._sites import complement, normalize_dims, normalize_subset, subset_dim
from .errors import MarginalError

__all__ = ["partial_trace", "embed"]


def _check_square(x, what: str = "rho") -> int:
    shape = tuple(x.shape)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise MarginalError(f"{what} must be a square matrix (or a batch of them), got shape {shape}")
    return shape[-1]


def site_tensor(x, dims: Sequence[int]):
    """View ``(*batch, D, D)`` as ``(*batch, d_0..d_{N-1}, d_0..d_{N-1})``."""
    batch = tuple(x.shape[:-2])
    return x.reshape(batch + tuple(dims) + tuple(dims))


def _coalesce(shape: list[int], strides: list[int]) -> tuple[list[int], list[int]]:
    """Merge neighbouring axes i, i+1 with stride[i] == stride[i+1] * shape[i+1]."""
    out_shape: list[int] = []
    out_strides: list[int] = []
    for n, st in zip(shape, strides):
        if out_shape and out_strides[-1] == st * n:
            out_shape[-1] *= n
            out_strides[-1] = st
        else:
            out_shape.append(n)
            out_strides.append(st)
    return out_shape, out_strides


def traced_diagonal(t, traced: Sequence[int], n_sites: int, *, writeable: bool = False):
    """Strided view of a site tensor with the traced sites' (row, column) pairs on a diagonal.

    For a C-contiguous site tensor ``t`` of shape ``(*batch, d_0..d_{N-1}, d_0..d_{N-1})``
    returns ``(view, kept_shape, n_traced_axes)``: ``view`` has shape
    ``(*batch, *kept_shape, *kept_shape, *traced_axes)`` and its element ``[..., a, b, c]`` is
    ``t[..., (a, c), (b, c)]`` (a, b run over the kept sites, c over the traced ones). Runs of
    neighbouring sites are merged into one axis (``kept_shape`` holds the merged sizes), so the
    loops stay long. Writing to the view writes into ``t``.
    """
    nb = t.ndim - 2 * n_sites
    if not (t.is_contiguous() if B.is_torch(t) else t.flags.c_contiguous):
        raise ValueError("traced_diagonal needs a C-contiguous tensor")  # internal invariant
    traced_set = set(traced)
    kept = [s for s in range(n_sites) if s not in traced_set]
    dims = [t.shape[nb + s] for s in range(n_sites)]
    # strides in elements of a C-contiguous tensor
    site_stride = [0] * n_sites
    acc = 1
    for s in reversed(range(n_sites)):
        site_stride[s] = acc
        acc *= dims[s]
    row = [site_stride[s] * acc for s in range(n_sites)]
    col = site_stride
    k_shape, k_row = _coalesce([dims[s] for s in kept], [row[s] for s in kept])
    _, k_col = _coalesce([dims[s] for s in kept], [col[s] for s in kept])
    t_shape, t_str = _coalesce([dims[s] for s in sorted(traced)],
                               [row[s] + col[s] for s in sorted(traced)])
    batch_shape = list(t.shape[:nb])
    batch_str = []
    acc2 = acc * acc
    for n in reversed(batch_shape):
        batch_str.insert(0, acc2)
        acc2 *= n
    shape = batch_shape + k_shape + k_shape + t_shape
    strides = batch_str + k_row + k_col + t_str
    if B.is_torch(t):
        v = t.as_strided(shape, strides, t.storage_offset())
    else:
        item = t.itemsize
        v = np.lib.stride_tricks.as_strided(t, shape=shape, strides=[st * item for st in strides],
                                            writeable=writeable)
    return v, tuple(k_shape), len(t_shape)


def trace_indices(dims: Sequence[int], keep: Sequence[int]) -> np.ndarray:
    """Flat positions idx ``(d_J * d_J, d_{J^c})`` in a D x D matrix X with

        tr_{J^c}[X]_{a, b} = sum_c X.flat[idx[a d_J + b, c]],

    J = ``keep`` (sorted sites) in the convention of :func:`partial_trace` (site 0 most
    significant, kept sites in increasing order). Gathering with it evaluates many partial
    traces in one call; the index is D^2 entries per subset, for cached use on small systems."""
    dims = tuple(int(d) for d in dims)
    keep = tuple(keep)
    D = math.prod(dims)
    # flat offsets of (kept digits, traced digits): kept[a] + traced[c]
    grid = np.arange(D, dtype=np.int64).reshape(dims).transpose(
        keep + complement(keep, len(dims))).reshape(math.prod(dims[s] for s in keep), -1)
    kept, traced = grid[:, 0], grid[0]
    idx = (kept[:, None, None] + traced) * D + kept[None, :, None] + traced
    return idx.reshape(len(kept) ** 2, len(traced))


def _traced_first(v, nb: int, nt: int):
    """Move the nt trailing (traced) axes of v to just after its nb batch axes."""
    order = list(range(nb)) + list(range(v.ndim - nt, v.ndim)) + list(range(nb, v.ndim - nt))
    return v.permute(order) if B.is_torch(v) else v.transpose(order)


def resolve(x, keep, dims, n_sites=None):
    """Normalise ``dims`` and ``keep`` for a matrix ``x``; returns (dims, keep, traced)."""
    total = _check_square(x) if n_sites is None else None
    dims_t = normalize_dims(dims, total_dim=total, n_sites=n_sites)
    keep_t = normalize_subset(keep, len(dims_t), what="keep")
    return dims_t, keep_t, complement(keep_t, len(dims_t))


def partial_trace(rho, keep, dims: int | Sequence[int] = 2):
    """The reduced state on the sites in ``keep``: tr_{keep^c}[rho].

    Sites are numbered 0..N-1 from the leftmost tensor factor; the result's factors are the kept
    sites in increasing order. Batched over leading axes, differentiable in torch, and it keeps
    the input's library, dtype and device.

    Args:
        rho: array of shape ``(*batch, D, D)``, D = prod(dims).
        keep: the sites to keep, a sorted sequence (or a set) of distinct indices; ``()`` gives
            the trace as a ``(*batch, 1, 1)`` array.
        dims: one local dimension for all sites (N is then inferred from D) or one per site.

    Returns:
        Array of shape ``(*batch, d_keep, d_keep)``, d_keep = prod(dims[s] for s in keep).

    Raises:
        MarginalError: non-square input, dims that do not multiply to D, a site out of range,
            a repeated or unsorted site.

    Example:
        >>> import numpy as np
        >>> a = np.diag([1.0, 0.0]); b = np.eye(2) / 2
        >>> np.allclose(partial_trace(np.kron(a, b), keep=[0]), a)
        True
    """
    dims_t, keep_t, traced = resolve(rho, keep, dims)
    batch = tuple(rho.shape[:-2])
    d_keep = subset_dim(keep_t, dims_t)
    if not traced:
        return B.copy(rho)
    t = site_tensor(B.contiguous(rho), dims_t)
    v, _, nt = traced_diagonal(t, traced, len(dims_t))
    nb = len(batch)
    v = _traced_first(v, nb, nt)
    axes = tuple(range(nb, nb + nt))
    red = v.sum(dim=axes) if B.is_torch(v) else np.add.reduce(v, axis=axes)
    return red.reshape(batch + (d_keep, d_keep))


def embed(sigma, keep, dims: int | Sequence[int] = 2, *, n_sites: int | None = None,
          normalize: bool = True):
    """The embedding sigma_J (x) 1_{J^c} / d_{J^c}, with sigma_J on the sites ``keep`` = J.

    With ``normalize=False`` returns sigma_J (x) 1_{J^c}, the Hilbert-Schmidt adjoint of
    ``partial_trace(., keep)``: <tr_{J^c} X, S> = <X, S (x) 1>. With ``normalize=True`` the trace
    is preserved and ``partial_trace(embed(s, J), J) == s``.

    Args:
        sigma: array ``(*batch, d_J, d_J)``.
        keep: the sites J that sigma lives on (sorted, distinct).
        dims: one local dimension for all sites (then ``n_sites`` is required) or one per site.
        n_sites: number of sites N when ``dims`` is an int.
        normalize: divide by d_{J^c} (default) or not.

    Returns:
        Array ``(*batch, D, D)`` in sigma's library, dtype and device.

    Raises:
        MarginalError: bad dims or sites, or sigma of the wrong shape for J.

    Example:
        >>> import numpy as np
        >>> s = np.array([[0.7, 0.1], [0.1, 0.3]])
        >>> np.allclose(embed(s, keep=[1], dims=2, n_sites=2), np.kron(np.eye(2) / 2, s))
        True
    """
    if isinstance(dims, (int, np.integer)) and n_sites is None:
        raise MarginalError("embed: dims is an int, so n_sites must be given")
    dims_t = normalize_dims(dims, n_sites=n_sites)
    n = len(dims_t)
    keep_t = normalize_subset(keep, n, what="keep")
    traced = complement(keep_t, n)
    d_keep = subset_dim(keep_t, dims_t)
    d_tr = subset_dim(traced, dims_t)
    if tuple(sigma.shape[-2:]) != (d_keep, d_keep):
        raise MarginalError(
            f"marginal on sites {keep_t} must be {d_keep} x {d_keep}, got shape {tuple(sigma.shape)}"
        )
    batch = tuple(sigma.shape[:-2])
    D = math.prod(dims_t)
    out = B.zeros(batch + (D, D), like=sigma)
    if not traced:
        return out + sigma
    t = site_tensor(out, dims_t)
    v, kept_shape, nt = traced_diagonal(t, traced, n, writeable=True)
    s = sigma.reshape(batch + kept_shape + kept_shape + (1,) * nt)
    scale = 1.0 / d_tr if normalize else 1.0
    if B.is_torch(v):
        v.copy_((s * scale).expand(v.shape))
    else:
        v[...] = s * scale
    return out
