"""Site bookkeeping shared by every kernel: local dimensions and subsets of sites.

Convention (used everywhere in qmarginal): an N-site Hilbert space is
H = H_0 (x) H_1 (x) ... (x) H_{N-1}; site 0 is the leftmost, most significant tensor factor,
so the basis index of |i_0 i_1 ... i_{N-1}> is sum_s i_s * prod_{t>s} d_t.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from .errors import MarginalError

__all__: list[str] = []


def infer_n_sites(total_dim: int, d: int) -> int:
    """The N with d**N == total_dim, or a clear error."""
    if d < 2:
        raise MarginalError(f"local dimension must be >= 2, got {d}")
    n = round(math.log(total_dim, d)) if total_dim > 0 else 0
    if n < 1 or d**n != total_dim:
        raise MarginalError(
            f"matrix dimension {total_dim} is not a power of the local dimension {d}; "
            "pass dims as one int per site"
        )
    return n


def normalize_dims(dims: int | Sequence[int], total_dim: int | None = None,
                   n_sites: int | None = None) -> tuple[int, ...]:
    """Local dimensions as a tuple, one per site.

    Args:
        dims: one local dimension for all sites, or one per site.
        total_dim: the full Hilbert-space dimension, used to infer N when ``dims`` is an int.
        n_sites: the number of sites, when known.

    Raises:
        MarginalError: inconsistent or invalid dimensions.
    """
    if isinstance(dims, (int,)) or (hasattr(dims, "__index__") and not hasattr(dims, "__len__")):
        d = int(dims)
        if n_sites is None:
            if total_dim is None:
                raise MarginalError("dims is an int: n_sites or the full dimension is needed")
            n_sites = infer_n_sites(total_dim, d)
        if d < 2:
            raise MarginalError(f"local dimension must be >= 2, got {d}")
        out = (d,) * n_sites
    else:
        out = tuple(int(v) for v in dims)
        if not out:
            raise MarginalError("dims must name at least one site")
        bad = [v for v in out if v < 2]
        if bad:
            raise MarginalError(f"every local dimension must be >= 2, got dims={out}")
        if n_sites is not None and len(out) != n_sites:
            raise MarginalError(f"dims has {len(out)} entries but there are {n_sites} sites")
    if total_dim is not None and math.prod(out) != total_dim:
        raise MarginalError(
            f"dims {out} give total dimension {math.prod(out)}, but the matrix is "
            f"{total_dim} x {total_dim}"
        )
    return out


def normalize_subset(subset: Iterable[int], n_sites: int, *, what: str = "subset",
                     allow_empty: bool = True) -> tuple[int, ...]:
    """A subset of sites as a sorted tuple of distinct, in-range site indices.

    A sequence must already be in increasing order (the order of the tensor factors); a set is
    sorted.

    Raises:
        MarginalError: an index out of [0, n_sites), a repeated index, an unsorted sequence, or a
            non-integer.
    """
    if isinstance(subset, (int,)):
        subset = (subset,)
    is_set = isinstance(subset, (set, frozenset))
    try:
        items = [int(s) for s in subset]
    except (TypeError, ValueError) as exc:
        raise MarginalError(f"{what} {subset!r} must be a sequence of site indices") from exc
    for s in items:
        if not 0 <= s < n_sites:
            raise MarginalError(
                f"{what} {tuple(items)}: site index {s} is out of range for {n_sites} sites "
                f"(valid: 0..{n_sites - 1})"
            )
    if len(set(items)) != len(items):
        raise MarginalError(f"{what} {tuple(items)} repeats a site index")
    if not items and not allow_empty:
        raise MarginalError(f"{what} is empty")
    if not is_set and items != sorted(items):
        raise MarginalError(
            f"{what} {tuple(items)} is not sorted; list its sites in increasing order "
            f"({tuple(sorted(items))}), the order of the tensor factors"
        )
    return tuple(sorted(items))


def complement(subset: Sequence[int], n_sites: int) -> tuple[int, ...]:
    keep = set(subset)
    return tuple(s for s in range(n_sites) if s not in keep)


def subset_dim(subset: Sequence[int], dims: Sequence[int]) -> int:
    return math.prod(dims[s] for s in subset)
