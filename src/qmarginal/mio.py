"""The Marginal Imposition Operator (MIO), Eqs. (3)-(5) of the paper.

For one marginal sigma_J on the sites J,

    Q_J(X) = X - tr_{J^c}[X] (x) 1_{J^c}/d_{J^c} + sigma_J (x) 1_{J^c}/d_{J^c}.       (3)

Q_J is the Hilbert-Schmidt orthogonal projection onto the affine set
A_J = {X : tr_{J^c} X = sigma_J}:

    Q_J(X) = argmin_{Y in A_J} ||Y - X||_F,

because the correction X - Q_J(X) = Delta (x) 1/d_{J^c} lies in the range of the adjoint of the
partial trace, the normal space of A_J. Written in a product operator basis whose local elements
include 1/sqrt(d), the linear part of Q_J removes exactly the components supported inside J;
these linear parts commute for all J, so for a consistent set of marginals the composition
Q_{J_M} o ... o Q_{J_1} (Eqs. (4)-(5)) does not depend on the order and is the orthogonal
projection onto the intersection of the A_J: the closest matrix (in Frobenius norm) to X that has
all the given marginals. Applying it twice changes nothing (idempotence).

Cost: each step reads and writes only the D^2/d_{J^c} entries on the traced diagonal, in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from . import _backend as B
from ._sites import complement, normalize_dims, normalize_subset, subset_dim
from .errors import MarginalError
from .partial_trace import _check_square, _traced_first, site_tensor, traced_diagonal

__all__ = ["impose", "seed_matrix", "SEEDS"]

#: the named MIO seeds of :func:`seed_matrix`
SEEDS = ("maximally_mixed", "hilbert_schmidt")


def _items(marginals):
    if hasattr(marginals, "marginals") and hasattr(marginals, "dims"):  # a MarginalProblem
        return list(marginals.marginals.items()), marginals.dims
    if not isinstance(marginals, Mapping):
        raise MarginalError(
            "marginals must be a mapping {subset of sites: sigma} or a MarginalProblem, "
            f"got {type(marginals).__name__}"
        )
    return list(marginals.items()), None


def _broadcast_batch(shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError as exc:
        raise MarginalError(f"batch shapes {list(shapes)} do not broadcast together") from exc


def torch_contiguous():
    return B.torch_module().contiguous_format


def impose(x, marginals, dims: int | Sequence[int] = 2):
    """Impose marginals on ``x`` with the MIO composition Q_{J_M} o ... o Q_{J_1}(x).

    The result is the Frobenius-closest matrix to ``x`` whose partial traces are the given
    marginals (for a consistent set; see the module docstring). It is Hermitian when ``x`` is,
    has trace 1 when the marginals do, and is usually not positive semidefinite.

    Args:
        x: seed matrix, shape ``(*batch, D, D)``.
        marginals: ``{J: sigma_J}`` with J a sorted tuple of sites and sigma_J of shape
            ``(*batch_J, d_J, d_J)``, or a :class:`MarginalProblem`. Batch shapes broadcast.
        dims: local dimensions (int or one per site); taken from the problem when one is given.

    Returns:
        Complex array of shape ``(*broadcast batch, D, D)`` in x's library, precision and device;
        differentiable in torch with respect to ``x`` and the marginals.

    Raises:
        MarginalError: bad shapes, sites or dimensions.

    Example:
        >>> import numpy as np
        >>> from qmarginal import partial_trace
        >>> s = np.diag([0.9, 0.1]).astype(complex)
        >>> y = impose(np.eye(4) / 4, {(0,): s}, dims=2)
        >>> np.allclose(partial_trace(y, keep=[0]), s)
        True
    """
    items, problem_dims = _items(marginals)
    D = _check_square(x, "seed x")
    dims_t = normalize_dims(problem_dims if problem_dims is not None else dims, total_dim=D)
    n = len(dims_t)
    out = B.to_complex(x)
    prepared = []
    for key, sigma in items:
        J = normalize_subset(key, n, what="marginal subset")
        dJ = subset_dim(J, dims_t)
        sigma = B.as_array(sigma, like=out)
        if tuple(sigma.shape[-2:]) != (dJ, dJ):
            raise MarginalError(
                f"marginal on sites {J} must be {dJ} x {dJ}, got shape {tuple(sigma.shape)}"
            )
        prepared.append((J, sigma))
    batch = _broadcast_batch([tuple(out.shape[:-2])] + [tuple(s.shape[:-2]) for _, s in prepared])
    if B.is_torch(out):
        out = out.expand(batch + (D, D)).clone(memory_format=torch_contiguous())
    else:
        out = np.array(np.broadcast_to(out, batch + (D, D)), copy=True, order="C")
    t = site_tensor(out, dims_t)
    for J, sigma in prepared:
        sigma = sigma.to(out.dtype) if B.is_torch(sigma) else sigma.astype(out.dtype, copy=False)
        traced = complement(J, n)
        if not traced:  # the whole system is given: Q_J(X) = sigma
            if B.is_torch(out):
                out = sigma.expand(batch + (D, D)).clone(memory_format=torch_contiguous())
            else:
                out = np.array(np.broadcast_to(sigma, batch + (D, D)), copy=True, order="C")
            t = site_tensor(out, dims_t)
            continue
        v, kept, nt = traced_diagonal(t, traced, n, writeable=True)
        # traced axes first: the sum and the update then run along long kept-site rows
        nb = len(batch)
        v = _traced_first(v, nb, nt)
        s = sigma.reshape(tuple(sigma.shape[:-2]) + kept + kept)
        scale = 1.0 / subset_dim(traced, dims_t)
        red = tuple(range(nb, nb + nt))
        if B.is_torch(v):
            delta = (v.sum(dim=red, keepdim=True) - s.reshape(
                tuple(sigma.shape[:-2]) + (1,) * nt + kept + kept)) * scale
            v.sub_(delta)
        else:
            delta = np.add.reduce(v, axis=red, keepdims=True)
            delta -= s.reshape(tuple(sigma.shape[:-2]) + (1,) * nt + kept + kept)
            delta *= scale
            v -= delta
    return out


def seed_matrix(problem, seed_state="maximally_mixed", *, seed=None):
    """The MIO seed for ``problem``: the maximally mixed state 1/D, a Hilbert-Schmidt random
    state per batch element (the paper's choice; reproducible from ``seed``), or a given matrix.

    The result follows the problem's library, precision and device.

    Raises:
        MarginalError: an unknown seed name, or a matrix of the wrong size.

    Example:
        >>> from qmarginal import MarginalProblem, hilbert_schmidt_state
        >>> p = MarginalProblem.from_state(hilbert_schmidt_state(8, seed=0), k=2)
        >>> seed_matrix(p).shape
        (8, 8)
    """
    from .states import hilbert_schmidt_state

    sig = next(iter(problem.marginals.values()))
    D = problem.dim
    batch = problem.batch_shape
    if isinstance(seed_state, str):
        if seed_state == "maximally_mixed":
            eye = B.eye(D, like=sig) / D
            return eye if not batch else (eye.expand(batch + (D, D)) if B.is_torch(eye)
                                          else np.broadcast_to(eye, batch + (D, D)))
        if seed_state == "hilbert_schmidt":
            x = hilbert_schmidt_state(D, batch=batch or None, seed=seed)
            return B.as_array(x, like=sig).to(sig.dtype) if B.is_torch(sig) else x.astype(sig.dtype)
        raise MarginalError(f"unknown seed {seed_state!r}; use one of {SEEDS} or pass a matrix")
    x = B.as_array(seed_state, like=sig)
    if tuple(x.shape[-2:]) != (D, D):
        raise MarginalError(f"seed matrix must be {D} x {D}, got shape {tuple(x.shape)}")
    return x
