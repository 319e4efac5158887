r"""States of rank at most r with the given marginals: the pure-state marginal problem and beyond.

``reconstruct(problem, rank=r)`` asks for a certified state of rank <= r. It is searched for as
rho = V V^dagger / tr with V of D x r (rank <= r by construction, PSD by construction), on the
matrix-free factored path (:mod:`qmarginal.solvers.matrix_free`, no D x D matrix) from random
starting factors, until one certifies; otherwise :class:`~qmarginal.NotCertifiedError` says no
such state was found, with the best deviation and the number of restarts: *not found is not a
proof that none exists*. Before any search, cheap necessary conditions are checked; where one
fails the request is refused with :class:`~qmarginal.IncompatibleMarginalsError` and the
condition named (a proof):

- rank: every state of rank <= r has rank(sigma_J) <= r d_{J^c} for every J whose marginal is
  given or obtained from a given superset.
- pure (r = 1): complementary marginals (K and K^c both known) have the same nonzero spectrum
  (the Schmidt decomposition); for qubits, the one-qubit marginals' smallest eigenvalues obey the polygon
  inequalities lambda_i <= sum_{j != i} lambda_j of Higuchi, Sudbery and Szulc, Phys. Rev. Lett.
  90, 107902 (2003) (necessary and sufficient for the one-body problem).

Eigenvalues count as nonzero, and inequalities as violated, only beyond a margin of
``10 d marginal_tol`` (the marginals' own uncertainty), so a refusal is a proof for every
problem within the tolerance of the given one.

    >>> import itertools, numpy as np, qmarginal as qm
    >>> ame = {J: np.eye(4) / 4 for J in itertools.combinations(range(5), 2)}
    >>> r = qm.reconstruct(qm.MarginalProblem(ame, dims=2), rank=1)  # an AME(5,2) state
    >>> r.report.certified, r.factor.shape
    (True, (32, 1))
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np

from . import _backend as B
from ._sites import complement, subset_dim
from .errors import IncompatibleMarginalsError, MarginalError, NotCertifiedError
from .partial_trace import partial_trace
from .problem import MarginalProblem

__all__ = ["RankSettings", "rank_obstruction", "find_low_rank"]


@dataclass(frozen=True)
class RankSettings:
    """Settings of the rank-constrained search.

    Attributes:
        rank: the largest rank allowed (1: a pure state).
        restarts: random starting factors tried (each a full matrix-free solve).
        maxiter: iterations of each attempt.
        time_limit: seconds for all attempts together (None: no limit).
        seed: seed of the first attempt (attempt i uses seed + i).
        eig_tol, marginal_tol: the certification tolerances.
    """

    rank: int = 1
    restarts: int = 16
    maxiter: int = 5000
    time_limit: float | None = None
    seed: int = 0
    eig_tol: float = 1e-10
    marginal_tol: float = 1e-9

    def __post_init__(self):
        for name in ("rank", "restarts", "maxiter"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise MarginalError(f"{name} must be an integer >= 1, got {v!r}")
        if self.time_limit is not None and not (isinstance(self.time_limit, (int, float))
                                                and math.isfinite(self.time_limit)
                                                and self.time_limit > 0):
            raise MarginalError(f"time_limit must be a positive finite number, got "
                                f"{self.time_limit!r}")


def _known_marginals(problem: MarginalProblem) -> dict:
    """Every marginal the problem fixes: the given ones and all their sub-marginals."""
    out = {}
    for J, s in problem.marginals.items():
        a = np.asarray(B.to_numpy(s), dtype=np.complex128)
        sub_dims = [problem.dims[i] for i in J]
        for size in range(1, len(J) + 1):
            for K in itertools.combinations(range(len(J)), size):
                key = tuple(J[i] for i in K)
                if key not in out:
                    out[key] = a if size == len(J) else partial_trace(a, list(K), sub_dims)
    return out


def _spectrum(a: np.ndarray) -> np.ndarray:
    return np.linalg.eigvalsh(0.5 * (a + a.conj().T))[::-1]


def rank_obstruction(problem: MarginalProblem, rank: int, marginal_tol: float = 1e-9) -> str:
    """The first necessary condition for a state of rank <= ``rank`` that the marginals
    violate (module docstring), in words; "" when none does (which proves nothing)."""
    n = problem.n_sites
    D = problem.dim
    known = _known_marginals(problem)
    spec = {K: _spectrum(a) for K, a in known.items()}

    def margin(K):
        return 10 * subset_dim(K, problem.dims) * marginal_tol + 1e-12

    def rank_of(K):  # eigenvalues certainly nonzero
        return int((spec[K] > margin(K)).sum())

    for K in known:
        dc = D // subset_dim(K, problem.dims)
        if rank_of(K) > rank * dc:
            return (f"the marginal on sites {K} has rank {rank_of(K)} (eigenvalues above "
                    f"{margin(K):.1e}), above rank x d_(complement) = {rank} x {dc}")
    for K in known:
        Kc = complement(K, n)
        if not Kc or Kc not in known or K > Kc:
            continue
        if rank == 1:
            m = max(len(spec[K]), len(spec[Kc]))
            sa = np.pad(spec[K], (0, m - len(spec[K])))
            sb = np.pad(spec[Kc], (0, m - len(spec[Kc])))
            gap = float(np.abs(sa - sb).max())
            if gap > margin(K) + margin(Kc):
                return (f"a pure state has equal spectra on complementary subsets (Schmidt "
                        f"decomposition), but the marginals on {K} and {Kc} differ by "
                        f"{gap:.3g} in an eigenvalue")
    if rank == 1 and all(problem.dims[i] == 2 for i in range(n)) and n >= 2:
        if all((i,) in known for i in range(n)):
            lam = [float(spec[(i,)][-1]) for i in range(n)]
            tot = sum(lam)
            for i, li in enumerate(lam):
                slack = li - (tot - li)
                if slack > (n + 1) * margin((i,)):
                    return (f"the one-qubit marginals' smallest eigenvalues violate the polygon "
                            f"inequality of Higuchi, Sudbery and Szulc (PRL 90, 107902, 2003) "
                            f"for qubit {i}: {li:.6g} > sum of the others {tot - li:.6g}")
    return ""


def find_low_rank(problem: MarginalProblem, settings: RankSettings | None = None):
    """A certified state of rank <= ``settings.rank`` as a factored reconstruction.

    Returns:
        (FactoredState, Report, info) of the first attempt that certifies.

    Raises:
        IncompatibleMarginalsError: a necessary condition fails (:func:`rank_obstruction`;
            the message names it). NotCertifiedError: no attempt certified (best deviation and
            the number of restarts in the message; not a proof).
    """
    from .report import measure_factored
    from .solvers.matrix_free import MatrixFreeSettings
    from .solvers.matrix_free import solve as mf_solve

    st = settings or RankSettings()
    if problem.batch_shape:
        raise MarginalError("a rank-constrained reconstruction takes one problem, not a batch")
    t0 = time.perf_counter()
    why = rank_obstruction(problem, st.rank, st.marginal_tol)
    if why:
        raise IncompatibleMarginalsError(f"no state of rank <= {st.rank} has these marginals: "
                                         f"{why}")
    r = min(st.rank, problem.dim)
    best = None
    tried = 0
    for i in range(st.restarts):
        left = None if st.time_limit is None else st.time_limit - (time.perf_counter() - t0)
        if left is not None and left <= 0:
            break
        mst = MatrixFreeSettings(eig_tol=st.eig_tol, marginal_tol=st.marginal_tol,
                                 maxiter=st.maxiter, time_limit=left, rank=r, max_rank=r,
                                 seed=st.seed + i)
        res = mf_solve(problem, mst)
        tried += 1
        if best is None or res.max_marginal_deviation < best.max_marginal_deviation:
            best = res
        if res.certified:
            break
    info = {"path": "matrix_free (rank-constrained)", "rank_limit": st.rank,
            "restarts": tried, "solver_time_s": time.perf_counter() - t0}
    report = measure_factored(problem, best.state, eig_tol=st.eig_tol,
                              marginal_tol=st.marginal_tol, method="exact", certifies=True,
                              iterations=best.iterations, converged=best.certified,
                              reason=best.reason, wall_time=time.perf_counter() - t0, info=info)
    if not report.certified:
        from .report import FactoredReconstruction

        raise NotCertifiedError(
            f"no state of rank <= {st.rank} found after {tried} random restart(s): best "
            f"marginal deviation {best.max_marginal_deviation:.3g} (marginal_tol "
            f"{st.marginal_tol:g}); this is not a proof that none exists",
            reason=f"rank <= {st.rank} not found", reconstruction=FactoredReconstruction(
                best.state, report))
    return best.state, report, info
