"""The exact solver's routing: problem features in, a sequence of steps out (a pure function).

Each batch element is solved by the first step of its plan that reaches the tolerances; the
steps after it do not run. The steps:

- ``convex``: L-BFGS on ||X_-||^2 / 2 over the affine set of matrices with the marginals
  (accelerated alternating projection). With a ``patience`` it hands over after that many
  iterations when its linear rate predicts too many more (the mark of a low-rank point);
  without one it runs to ``maxiter`` (thin but full-dimensional compatible sets end here).
- ``factored``: rho = V V^dagger with V of ``rank`` columns grown up to ``max_rank`` when the
  residual stalls; Levenberg-Marquardt while it fits, L-BFGS beyond. ``tentative``: a short
  attempt that gives up when off track, so that the next step takes over.
- ``face``: the convex path on the face every compatible state lives on when a marginal is
  rank-deficient (:mod:`._face`): rho = Q Y Q^dagger with Y of the face's small dimension.
- ``restarts``: Levenberg-Marquardt from ``Thresholds.restart_starts`` random starting points
  at each rank ``rank`` .. ``max_rank`` (no growth): for targets where the first factored
  attempt met a spurious local minimum.

The rules (``path="auto"``), in the order tried:

1. the MIO of the seed is already a state: no step;
2. some marginal is rank-deficient (every compatible state has low rank): when the face
   those states live on is small (``face_max_dim``), the face step first; then, where
   Levenberg-Marquardt takes the rank bound cheaply, a tentative factored attempt, restarts,
   then the full factored step (Levenberg-Marquardt while it fits, up to
   ``gauss_newton_max_size``); elsewhere the full factored step; then convex without patience;
3. the MIO of 1/D is strongly indefinite (negative mass >= ``direct_negative_mass``) and
   Levenberg-Marquardt takes the rank bound cheaply (D r <= ``tentative_newton_size``): a
   tentative factored start, [convex with ``convex_patience``, restarts], convex;
4. otherwise: convex with patience, a tentative factored attempt from the convex iterate,
   [convex with ``convex_patience``, restarts], convex without patience.

In 3 and 4 the convex attempt before the restarts lets the mid- and high-rank targets it
finishes skip them (4-qubit targets of rank 8 with 3-body marginals: 0.18 s with the restarts
first, 0.05 s without).

Restarts appear only where D r is small (``restart_max_size``; ``restart_max_size_deficient``
with a rank-deficient marginal): elsewhere they would cost more than the convex path they
precede. ``path="convex"`` is one convex step without
patience; ``path="factored"`` is the full factored step, then the restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._gauss_newton import newton_fits
from .settings import ExactSettings, Thresholds

__all__ = ["Features", "Step", "plan"]


@dataclass(frozen=True)
class Features:
    """What the plan depends on, for one problem (one batch element).

    Attributes:
        dim: D, the global dimension.
        n_subsets: the number of marginals.
        rank_bound: max_J ceil(rank(sigma_J) / d_{J^c}), a lower bound on the rank of every
            compatible state.
        deficient: some marginal is rank-deficient.
        negative_mass: sum of |negative eigenvalues| of the MIO of 1/D (0 when not computed).
        mio_is_state: the MIO of the seed is already a state to the tolerances.
        support_bound: min over deficient J of rank(sigma_J) d_{J^c}, an upper bound on the
            dimension of the face every compatible state lives on (D when none is deficient).
        face_entries: entries of the dense constraint map on a face of that dimension.
    """

    dim: int
    n_subsets: int
    rank_bound: int
    deficient: bool
    negative_mass: float
    mio_is_state: bool
    support_bound: int = 0
    face_entries: int = 0


@dataclass(frozen=True)
class Step:
    """One step of a plan (see the module docstring).

    Attributes:
        kind: "convex", "face", "factored" or "restarts".
        maxiter: iteration cap of the step.
        patience: convex, face: iterations after which slow progress hands over (None: none).
        rank: factored: the starting rank; restarts: the first rank tried.
        max_rank: factored: the largest rank it may grow to; restarts: the last rank tried.
        tentative: factored: give up when off track (the next step takes over).
        newton: factored: Levenberg-Marquardt steps while they fit (else L-BFGS only).
    """

    kind: str
    maxiter: int
    patience: int | None = None
    rank: int = 0
    max_rank: int = 0
    tentative: bool = False
    newton: bool = True

    def __str__(self) -> str:
        if self.kind == "convex":
            return "convex" if self.patience is None else f"convex(patience {self.patience})"
        if self.kind == "face":
            return f"face(patience {self.patience})"
        if self.kind == "restarts":
            return f"restarts(rank {self.rank}..{self.max_rank})"
        what = "tentative " if self.tentative else ""
        return f"{what}factored(rank {self.rank}..{self.max_rank})"


def plan(f: Features, st: ExactSettings, th: Thresholds) -> tuple[Step, ...]:
    """The steps that solve the problem with features ``f`` (see the module docstring).

    Example:
        >>> from qmarginal.solvers.exact import ExactSettings, THRESHOLDS
        >>> f = Features(dim=8, n_subsets=3, rank_bound=1, deficient=True, negative_mass=0.0,
        ...              mio_is_state=False)
        >>> [s.kind for s in plan(f, ExactSettings(), THRESHOLDS)]
        ['factored', 'restarts', 'factored', 'convex']
    """
    if f.mio_is_state:
        return ()
    D = f.dim
    max_rank = min(st.max_rank or D, D)
    lb = max(1, min(st.rank or f.rank_bound, max_rank))

    def fits(r: int) -> bool:  # Levenberg-Marquardt takes rank r
        return newton_fits(f.n_subsets, D, r, th)

    def cheap(r: int) -> bool:  # and cheaply enough for a speculative attempt
        return fits(r) and D * r <= th.tentative_newton_size

    if st.path == "convex":
        return (Step("convex", maxiter=st.maxiter),)
    full = Step("factored", maxiter=st.maxiter, rank=lb, max_rank=max_rank, newton=fits(lb))
    restarts = ()
    # restarts pay where they are cheap, or where a rank-deficient marginal makes every
    # compatible state low-rank (then the factored path is the only way there)
    size = th.restart_max_size_deficient if f.deficient else th.restart_max_size
    if fits(lb) and D * lb <= size:
        top = lb
        while (top < min(max_rank, lb + th.restart_extra_ranks) and fits(top + 1)
               and D * (top + 1) <= size):
            top += 1
        restarts = (Step("restarts", maxiter=min(st.maxiter, th.restart_maxiter), rank=lb,
                         max_rank=top),)
    if st.path == "factored":
        return (full,) + restarts
    # a short factored attempt: Levenberg-Marquardt may grow a few columns; the L-BFGS
    # factored path (where it does not fit) keeps its full rank range but the short budget
    tentative = Step("factored", maxiter=min(st.maxiter, th.handover_maxiter), rank=lb,
                     max_rank=min(max_rank, lb + th.handover_growth) if cheap(lb) else max_rank,
                     tentative=True, newton=cheap(lb))
    last = (Step("convex", maxiter=st.maxiter),)
    if f.deficient:
        # every compatible state has low rank: factored steps first, the short one (with the
        # cheap restarts after it) before the long one; before them the small face, if any
        face = ()
        if 0 < f.support_bound <= th.face_max_dim and f.face_entries <= th.face_max_entries:
            face = (Step("face", maxiter=st.maxiter, patience=th.convex_patience, rank=lb),)
        if cheap(lb):
            return face + (tentative,) + restarts + (full,) + last
        return face + (full,) + last
    # before the restarts, a convex attempt with the longer patience: the mid- and high-rank
    # targets it finishes never pay for them (the restarts are for low-rank points)
    if restarts:
        restarts = (Step("convex", maxiter=st.maxiter, patience=th.convex_patience),) + restarts
    if cheap(lb) and f.negative_mass >= th.direct_negative_mass:
        return (tentative,) + restarts + last
    patience = th.convex_patience_newton if cheap(lb) else th.convex_patience
    return (Step("convex", maxiter=st.maxiter, patience=patience), tentative) + restarts + last
