"""The memory plan: which path of the exact solver fits, decided before anything large exists.

The dense paths (MIO, convex, factored with D x D products, the face step) hold D x D matrices:
their peak is about ``DENSE_BYTES_PER_ENTRY`` bytes per entry of one D x D matrix (iterates,
L-BFGS pairs, eigendecomposition workspace and the cached index tensors of the partial traces;
measured 0.8 KiB per entry at N = 10, k = 9: 0.85 GB at D = 1024 beyond the imports), so
D = 4096 needs ~16 GiB and D = 16384 ~256 GiB. The matrix-free factored path
(:mod:`qmarginal.solvers.matrix_free`) holds O(D r) plus the marginals
(:func:`factored_peak_bytes`).

:func:`route` picks the path for ``reconstruct(method="exact" | "auto")``: the dense solver
when it fits (from D = ``MATRIX_FREE_FIRST_MIN_DIM`` on after a short matrix-free attempt),
the matrix-free path when only that fits, and otherwise
:class:`~qmarginal.InsufficientMemoryError` with the numbers (bytes needed, available, what
would fit). The budget is ``memory_budget`` (bytes) when given, else
``AVAILABLE_FRACTION`` of the memory the operating system reports available.
"""

from __future__ import annotations

import math

from typing import TYPE_CHECKING

from .errors import InsufficientMemoryError
from .system_memory import AVAILABLE_FRACTION, available_bytes, budget_bytes, format_bytes as _gib

if TYPE_CHECKING:  # annotations only: the file reader uses this module, the problem imports it
    from .problem import MarginalProblem

__all__ = ["memory_summary", "budget_bytes", "available_bytes", "dense_peak_bytes", "factored_peak_bytes", "route", "require_dense",
           "purity_rank_bound", "DENSE_BYTES_PER_ENTRY", "AVAILABLE_FRACTION",
           "MATRIX_FREE_FIRST_MIN_DIM", "MATRIX_FREE_FIRST_MAXITER", "MATRIX_FREE_FIRST_MAX_RANK",
           "MATRIX_FREE_FIRST_SECONDS"]

#: bytes of peak memory per entry of one D x D matrix on the dense paths (64 complex128
#: matrices' worth: 53 measured at N = 10, k = 9, rank D/2, and the index tensors grow with
#: the number of subsets).
DENSE_BYTES_PER_ENTRY = 64 * 16
#: from this D on, path="auto" tries the matrix-free path first (a short attempt, see
#: ``MATRIX_FREE_FIRST_MAXITER`` and ``MATRIX_FREE_FIRST_SECONDS``) where the dense path would
#: also fit: pure targets from 2-body marginals at N = 10 took 5.7 s dense (the convex path,
#: index tensors built) and 0.2 s matrix-free; N = 12, k = 11, rank 1: 622 s dense, 4.7 s
#: matrix-free. What it does not certify goes on to the dense path.
MATRIX_FREE_FIRST_MIN_DIM = 1024
#: iteration and rank caps of that attempt; it runs only where the purity rank bound is at
#: most the rank cap. N = 10, k = 9 targets of rank 10 / 14 (purity bounds 7 / 10): 9.1 / 11.5 s
#: matrix-free against 38 / 45 s on the dense factored path.
MATRIX_FREE_FIRST_MAXITER = 2000
MATRIX_FREE_FIRST_MAX_RANK = 16
#: wall-clock cap of that attempt (seconds; a quarter of ``time_limit`` when that is smaller).
MATRIX_FREE_FIRST_SECONDS = 30.0


def dense_peak_bytes(D: int, batch: int = 1) -> int:
    """Planned peak of the dense paths for ``batch`` problems of dimension D."""
    return DENSE_BYTES_PER_ENTRY * D * D * max(batch, 1)


def factored_peak_bytes(D: int, rank: int, marginal_dims, memory: int = 8) -> int:
    """Planned peak of the matrix-free path: V and its companions (see
    :func:`qmarginal.solvers.matrix_free.peak_bytes`) plus three d_J x d_J matrices per
    marginal (the target, the difference and a line-search term)."""
    from .solvers.matrix_free import peak_bytes

    return peak_bytes(D, rank, memory) + 3 * 16 * sum(d * d for d in marginal_dims)


def purity_rank_bound(problem: MarginalProblem) -> int:
    """A lower bound on the rank of every state with these marginals, from purities alone
    (O(d_J^2) each, no eigenvalues): rank(sigma_J) >= 1 / tr(sigma_J^2) for a trace-1 sigma_J,
    and rank(rho) >= rank(sigma_J) / d_{J^c}."""
    import numpy as np

    from . import _backend as B

    D = math.prod(problem.dims)
    best = 1
    for s in problem.marginals.values():
        a = np.asarray(B.to_numpy(s), dtype=np.complex128)
        tr = float(np.trace(a).real)
        pur = float(np.vdot(a, a).real) / (tr * tr) if tr > 0 else 1.0
        dc = D // a.shape[-1]
        best = max(best, math.ceil((1.0 / pur) / dc - 1e-9))
    return best


def require_dense(problem: MarginalProblem, what: str, memory_budget: int | None = None, *,
                  bytes_per_entry: int = DENSE_BYTES_PER_ENTRY, fits: str = "") -> int:
    """Raise :class:`~qmarginal.InsufficientMemoryError` when ``what`` (which needs D x D
    matrices, ``bytes_per_entry`` bytes per entry at its peak) cannot fit; return the planned
    bytes otherwise.

    Args:
        fits: what would fit instead, for the message (default: the matrix-free path).
    """
    D = math.prod(problem.dims)
    batch = math.prod(problem.batch_shape) if problem.batch_shape else 1
    budget, _ = budget_bytes(memory_budget)
    need = D * D * int(bytes_per_entry)  # batches are checked one element at a time
    if budget is not None and need > budget:
        largest = math.isqrt(budget // int(bytes_per_entry))
        raise InsufficientMemoryError(
            f"{what} needs D x D matrices: about {_gib(need)} at D = {D}"
            + (f" (per element of the batch of {batch})" if batch > 1 else "")
            + f", above the budget {_gib(budget)} (D up to about {largest} fits); "
            + (fits or "reconstruct's matrix-free path (method 'exact') certifies a low-rank "
               "state from its factor"),
            needed=need, available=budget)
    return need


def route(problem: MarginalProblem, path: str = "auto", rank: int | None = None,
          memory_budget: int | None = None) -> str:
    """"dense", "matrix_free" or "matrix_free_first" (a short matrix-free attempt, then dense)
    for this problem and requested path, or raise.

    Args:
        problem: the marginals (a batch counts each element).
        path: the exact solver's ``path`` ("auto", "convex", "factored": dense; "matrix_free").
        rank: the factored rank asked for (None: :func:`purity_rank_bound`, where the
            matrix-free path starts).
        memory_budget: bytes the solve may use (None: ``AVAILABLE_FRACTION`` of
            :func:`available_bytes`; no limit when that is unknown).

    Raises:
        InsufficientMemoryError: the requested path, or every path, needs more than the budget.
    """
    D = math.prod(problem.dims)
    batch = math.prod(problem.batch_shape) if problem.batch_shape else 1
    budget, avail = budget_bytes(memory_budget)
    single = not problem.batch_shape  # the matrix-free path takes one unbatched problem
    r = rank or (purity_rank_bound(problem) if single else 1)
    dense = dense_peak_bytes(D, batch)
    factored = factored_peak_bytes(D, r, [s.shape[-1] for s in problem.marginals.values()])
    fits_dense = budget is None or dense <= budget
    fits_factored = (budget is None or factored <= budget) and single
    where = (f"budget {_gib(budget)}" + ("" if memory_budget is not None else
                                          f" ({AVAILABLE_FRACTION:.0%} of {_gib(avail)} "
                                          f"available)"))
    if path == "matrix_free":
        if not single:
            raise InsufficientMemoryError(
                "the matrix-free path takes one problem at a time; this one is a batch of "
                f"shape {problem.batch_shape}", needed=factored, available=budget or 0)
        if fits_factored:
            return "matrix_free"
        raise InsufficientMemoryError(
            f"the matrix-free path at rank {r} needs {_gib(factored)} (D = {D}), above the "
            f"{where}; a lower rank or a smaller problem would fit", needed=factored,
            available=budget or 0)
    if fits_dense:
        # (not for torch input: its answer stays in torch, on its device, on the dense path)
        if (path == "auto" and single and fits_factored and D >= MATRIX_FREE_FIRST_MIN_DIM
                and r <= MATRIX_FREE_FIRST_MAX_RANK and not problem.is_torch):
            return "matrix_free_first"
        return "dense"
    if path == "auto" and fits_factored:
        return "matrix_free"
    alt = (f"the matrix-free factored path (path='matrix_free') at rank {r} needs "
           f"{_gib(factored)}" + (" and fits" if fits_factored else ", which does not fit either"))
    raise InsufficientMemoryError(
        f"path {path!r} needs about {_gib(dense)} (D x D matrices, D = {D}"
        + (f", a batch of {batch}" if batch > 1 else "") + f"), above the {where}; {alt}"
        + ("" if fits_factored else "; a smaller problem (fewer sites) is needed"),
        needed=dense, available=budget or 0)


def memory_summary(problem: MarginalProblem, memory_budget: int | None = None) -> dict:
    """What each path would need for ``problem``, beside the budget (``qmarginal info``).

    Returns:
        {"dense_bytes", "matrix_free_rank", "matrix_free_bytes", "budget_bytes",
        "available_bytes", "fits": [paths that fit], "*_text": the same in words}.
    """
    D = math.prod(problem.dims)
    batch = math.prod(problem.batch_shape) if problem.batch_shape else 1
    budget, avail = budget_bytes(memory_budget)
    r = purity_rank_bound(problem) if not problem.batch_shape else 1
    dense = dense_peak_bytes(D, 1)
    factored = factored_peak_bytes(D, r, [s.shape[-1] for s in problem.marginals.values()])
    fits = [name for name, need in (("dense", dense), ("matrix_free", factored))
            if budget is None or need <= budget]
    return {
        "dense_bytes": dense, "matrix_free_rank": r, "matrix_free_bytes": factored,
        "budget_bytes": budget, "available_bytes": avail, "batch": batch, "fits": fits,
        "dense_text": f"dense paths ~{_gib(dense)} per problem",
        "matrix_free_text": f"matrix-free path at rank {r} ~{_gib(factored)}",
        "budget_text": f"budget {_gib(budget)} ({'fits: ' + ', '.join(fits) if fits else 'neither fits'})",
    }
