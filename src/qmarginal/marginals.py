"""Marginals of a global state: sigma_J = tr_{J^c}[rho] for a collection of subsets J."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from ._sites import normalize_subset
from .errors import MarginalError
from .partial_trace import partial_trace, resolve

__all__ = ["marginals", "k_body_subsets"]


def k_body_subsets(n_sites: int, k: int) -> list[tuple[int, ...]]:
    """All C(N, k) subsets of k sites out of N, in lexicographic order.

    Raises:
        MarginalError: k outside 1..N.

    Example:
        >>> k_body_subsets(3, 2)
        [(0, 1), (0, 2), (1, 2)]
    """
    if n_sites < 1:
        raise MarginalError(f"n_sites must be >= 1, got {n_sites}")
    if not 1 <= k <= n_sites:
        raise MarginalError(f"k must be between 1 and N = {n_sites}, got k = {k}")
    return list(itertools.combinations(range(n_sites), k))


def marginals(rho, subsets: Iterable[Sequence[int]] | None = None,
              dims: int | Sequence[int] = 2, *, k: int | None = None) -> dict:
    """The marginals {J: tr_{J^c}[rho]} of a global state on the given subsets of sites.

    Args:
        rho: array ``(*batch, D, D)``.
        subsets: the subsets J (each sorted); or None together with ``k`` for all k-body subsets.
        dims: local dimension(s), as for :func:`partial_trace`.
        k: all k-body marginals, when ``subsets`` is None.

    Returns:
        dict mapping each J (a sorted tuple) to an array ``(*batch, d_J, d_J)``, in insertion
        order of ``subsets`` (lexicographic for ``k``).

    Raises:
        MarginalError: neither or both of ``subsets`` and ``k``; invalid or repeated subsets.

    Example:
        >>> import numpy as np
        >>> sorted(marginals(np.eye(8) / 8, k=2))
        [(0, 1), (0, 2), (1, 2)]
    """
    dims_t, _, _ = resolve(rho, (), dims)
    n = len(dims_t)
    if (subsets is None) == (k is None):
        raise MarginalError("give exactly one of `subsets` or `k`")
    if subsets is None:
        subsets = k_body_subsets(n, k)
    out = {}
    for J in subsets:
        Jt = normalize_subset(J, n, what="subset")
        if Jt in out:
            raise MarginalError(f"subset {Jt} is listed twice")
        out[Jt] = partial_trace(rho, Jt, dims_t)
    return out
