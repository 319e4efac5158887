"""The exact solver's settings (what a user chooses) and thresholds (how it is tuned).

:class:`ExactSettings` holds the options a user sets: tolerances, limits, forced path or rank.
:class:`Thresholds` holds every tuning constant of the solver in one place, each with the
measurement that set it; the defaults are :data:`THRESHOLDS`. Retuning means changing a field
here (or passing ``ExactSettings(thresholds=replace(THRESHOLDS, ...))``), never a constant
elsewhere; the tests assert certified results and the plan's decisions, not iteration counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import MarginalError
from .._api import IterativeSettings

__all__ = ["ExactSettings", "Thresholds", "THRESHOLDS", "PATHS"]

PATHS = ("auto", "convex", "factored", "matrix_free")


@dataclass(frozen=True)
class Thresholds:
    """Every tuning constant of the exact solver, with the measurement behind it.

    Routing (:func:`~qmarginal.solvers.exact.plan`):

    Attributes:
        direct_negative_mass: the factored path starts directly (no convex attempt) when the
            MIO of 1/D has negative mass sum |lambda_-| >= this and Levenberg-Marquardt fits
            the rank bound. Measured on qubit targets (N = 4-8, k = 2-4): rank 1-2 targets give
            0.09-1.4, targets the convex path finishes within its patience <= 0.08.
        convex_patience_newton: convex iterations before a slow convex attempt hands over to
            the factored path where Levenberg-Marquardt fits (it finishes a low-rank point in
            5-25 iterations, so a short look suffices; 6 measured best on the solver benchmark).
        convex_patience: the same where only L-BFGS factored steps fit (40: N10k9 mid ranks
            finish on the convex path within ~20-40 iterations).
        tentative_newton_size: a speculative factored attempt (a direct start, or after a
            slow convex attempt) takes Levenberg-Marquardt steps only while D r <= this, and the
            short convex patience applies only then (mid-rank qubit targets at D r = 1024 spent
            2-8 s in such an attempt; the convex path finishes them in ~0.05 s).
        handover_maxiter: iteration cap of a tentative factored attempt (after a handover or a
            direct start); what it leaves goes on to the restarts and the convex path.
        handover_growth: columns a tentative attempt may add (3: rank 1-4 targets from a rank
            bound of 1 finish within it on the benchmark's cases).
        handover_newton_iterations: a tentative Levenberg-Marquardt attempt must be on track
            after this many iterations (40: converging ones are quadratic by ~25).
        restart_starts: random starting points per rank in the restarts step (8: on 3-qubit
            rank-2 targets with 2-body marginals, 30-95 % of single random starts converge, so
            8 fail together with probability < 6 %; the ranks above add more chances).
        restart_extra_ranks: the restarts try the ranks bound .. bound + this.
        face_max_dim, face_max_entries: the face step runs when the face of a rank-deficient
            marginal has dimension D' <= face_max_dim (its normal matrix, D'^2 x D'^2, takes
            one eigendecomposition: 0.3 s at D' = 32) and the dense constraint map at most
            face_max_entries entries (128 MiB). On the sweep's two-marginal qutrit failures
            D' was 12-27.
        restart_maxiter: Levenberg-Marquardt iterations per restart round (converging starts
            need 9-33 on those targets; stalled ones are frozen after ~15).
        restart_max_size: restarts only where D r <= this (8 starts side by side cost 8 dense
            2Dr x 2Dr solves per iteration: at D r = 396, 199 s on a mid-rank qubit-qutrit
            target where the convex path that follows needed 0.05 s; the spurious minima seen
            without a rank-deficient marginal are at D r <= 64).
        restart_max_size_deficient: the same with a rank-deficient marginal, where every
            compatible state has low rank and the convex path rarely finishes (a rank-2
            target on 4 qutrits with two marginals, D r = 162: not certified without restarts,
            0.6 s with them).

    Convex path:

    Attributes:
        line_search_steps: step halvings of the backtracking line search.
        armijo: sufficient-decrease constant of the line search.
        reproject_every: iterations between exact re-projections onto the affine set (sheds
            rounding drift; the steps stay in the tangent space in exact arithmetic).
        slow_rate: with a patience, a geometric rate of f above this is slow (hand over).
        slow_factor: with a patience, slow also when the predicted iterations to the target
            exceed this many times the iterations done.
        convex_stall_window, convex_stall_ratio: with or without a patience, an element whose
            f fell by less than the factor ``convex_stall_ratio`` over ``convex_stall_window``
            iterations has stopped (f has a non-zero minimum over A: the marginals are
            incompatible or nearly so). A sublinear crawl towards a low-rank point, f ~ 1/k^2,
            falls by ~10 % over 50 iterations even at k = 1000. Measured on the Werner triangle
            just past its boundary: 5,000 iterations (36 s at D = 8) before this rule.
        plus_ratio: initial guess of deviation(X_+) / ||X_-||_F, which decides when the X_+
            exit is worth measuring (refined by every measurement).
        neg_evr_min_dim: on CPU, from this dimension on (and while at most half the spectrum
            is negative) only the negative eigenpairs are computed (LAPACK ?heevr restricted
            to (-inf, 0]): at D = 1024 with a quarter negative, about half a full eigh. Below,
            one batched eigh is faster.
        single_rel: decompositions in complex64 while ||X_-||_F > single_rel ||X||_F (their
            rounding, ~1e-7 ||X||, is then below ~1e-2 of the gradient); everything that
            decides is evaluated in complex128.
        single_min_dim: and only from this dimension on (below, decompositions are cheap and
            the extra iteration a coarse complex64 step can cost is not worth it).

    Factored path (L-BFGS beyond Levenberg-Marquardt's size):

    Attributes:
        lbfgs_window: iterations over which progress is judged (trim, grow, give up).
        lbfgs_slow_ratio: h fell by less than this factor over the window: slow (trim spurious
            columns, or give up when tentative).
        lbfgs_stuck_ratio: h fell by less than this factor: stuck (grow the rank).
        lbfgs_refresh_every: iterations between exact recomputations of the tracked products.
        trim_rel: columns of V with weight below this times the largest are dropped.
        start_noise: relative size of the random component of the factored starting columns
            (breaks symmetries of the start, e.g. those a site in no subset causes; 1e-2 fixed
            the saddle-point failures found by the robustness sweep).
        start_floor: starting columns without positive weight get this fraction of the mean
            weight, so that they can move.
        subspace_min_dim: the starting eigenvectors come from a block subspace iteration (12
            steps, 8 extra vectors) when D >= this and r <= D / 16, else from a full eigh.

    Levenberg-Marquardt (:mod:`._gauss_newton`):

    Attributes:
        gauss_newton_max_size: Levenberg-Marquardt steps while D r <= this (a dense 2Dr x 2Dr
            solve each); L-BFGS beyond (0: always L-BFGS). 1024: qutrit rank-13 targets with a
            rank-deficient marginal at D r = 702 took 22 Levenberg-Marquardt iterations (1.4 s)
            where L-BFGS failed after 10,000 (12-19 s); at 512 these were the sweep's failures.
        newton_entries: and while the Gauss-Newton matrix's N part has at most this many
            entries M n^2 (about 10 ns each per iteration; beyond, L-BFGS is as fast).
        sparse_entries: N is a product with a cached sparse matrix up to this many entries, a
            sum of strided views beyond.
        progress_window: iterations over which the geometric rate of h is measured (patience).
        mu_start: initial damping factor mu (lambda = mu sqrt(h)).
        stall_decrease: an accurate step that lowers h by less than this fraction is slow; two
            in a row mean a non-zero local minimum.
        probe_every, probe_slow, probe_shrink, probe_iterations, probe_limit: after a rank
            growth, every ``probe_every`` iterations at the new rank: if h fell by less than
            ``probe_slow`` over them and the smallest singular value of V shrank below
            ``probe_shrink`` times its previous value, try rank r - 1 from the truncated SVD
            for ``probe_iterations`` iterations; at most ``probe_limit`` probes per element.
        mobius_entries: the projection uses its Moebius form (one gather and scatter per
            subset size) only while the sequential composition touches at most this many
            entries (beyond, the data, not the number of calls, sets the time).
    """

    # routing
    direct_negative_mass: float = 0.09
    convex_patience_newton: int = 6
    convex_patience: int = 40
    tentative_newton_size: int = 512
    handover_maxiter: int = 400
    handover_growth: int = 3
    handover_newton_iterations: int = 40
    restart_starts: int = 8
    restart_extra_ranks: int = 2
    restart_maxiter: int = 100
    face_max_dim: int = 32
    face_max_entries: int = 1 << 23
    restart_max_size: int = 96
    restart_max_size_deficient: int = 512
    # convex path
    line_search_steps: int = 30
    armijo: float = 1e-4
    reproject_every: int = 20
    slow_rate: float = 0.97
    slow_factor: float = 4.0
    convex_stall_window: int = 50
    convex_stall_ratio: float = 1 - 1e-4
    plus_ratio: float = 1e-2
    neg_evr_min_dim: int = 64
    single_rel: float = 3e-5
    single_min_dim: int = 256
    # factored L-BFGS
    lbfgs_window: int = 25
    lbfgs_slow_ratio: float = 0.3
    lbfgs_stuck_ratio: float = 0.9
    lbfgs_refresh_every: int = 100
    trim_rel: float = 1e-10
    start_noise: float = 1e-2
    start_floor: float = 1e-3
    subspace_min_dim: int = 128
    # Levenberg-Marquardt
    gauss_newton_max_size: int = 1024
    newton_entries: int = 1 << 23
    sparse_entries: int = 1 << 22
    progress_window: int = 8
    mu_start: float = 0.1
    stall_decrease: float = 0.1
    probe_every: int = 8
    probe_slow: float = 1e-3
    probe_shrink: float = 0.95
    probe_iterations: int = 12
    probe_limit: int = 4
    mobius_entries: int = 1 << 15


#: the defaults
THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class ExactSettings(IterativeSettings):
    """Settings of the exact solver.

    Attributes:
        eig_tol: success needs lambda_min(rho) >= -eig_tol for the trace-normalised output
            (None: by the input precision, 1e-10 for complex128).
        marginal_tol: success needs max_J max |tr_{J^c} rho - sigma_J| <= marginal_tol (None:
            by the input precision, 1e-9 for complex128).
        maxiter: iteration cap of each step of the plan.
        time_limit: wall-clock seconds after which the solver returns its best iterate (None:
            no limit).
        safety: the solver stops at ``safety`` times each tolerance, so that the independent
            re-measurement passes with room to spare.
        rank: factored rank to start from (None: the lower bound from the marginals' ranks).
        max_rank: the factored path never exceeds this rank (None: D).
        rank_tol: relative tolerance of the numerical rank of a marginal (None: marginal_tol;
            the rounding of single-precision marginals, ~1e-8, must count as zero, or the rank
            bound is no lower bound).
        memory: L-BFGS memory (pairs kept).
        path: "auto" (the plan decides; the matrix-free factored path where D x D matrices
            would not fit, :func:`qmarginal.memory_plan.route`), "convex" or "factored" (force
            a dense path; the MIO of the seed is still accepted when it is already a state), or
            "matrix_free" (rho = V V^dagger without any D x D matrix,
            :mod:`qmarginal.solvers.matrix_free`; ``reconstruct`` returns a
            :class:`~qmarginal.report.FactoredReconstruction`).
        memory_budget: bytes a solve may plan to use (None: 80 % of the available memory);
            a path that cannot fit is refused before allocation
            (:class:`~qmarginal.InsufficientMemoryError`).
        seed: seed of the random components (starting columns, restarts, subspace iteration).
        thresholds: the tuning constants (:class:`Thresholds`).
    """

    eig_tol: float | None = None
    marginal_tol: float | None = None
    maxiter: int = 5000
    time_limit: float | None = None
    safety: float = 0.1
    rank: int | None = None
    max_rank: int | None = None
    rank_tol: float | None = None
    memory: int = 6
    path: str = "auto"
    seed: int = 0
    memory_budget: int | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)

    def __post_init__(self):
        super().__post_init__()
        if self.path not in PATHS:
            raise MarginalError(f"path must be one of {PATHS}, got {self.path!r}")
        if not (isinstance(self.safety, (int, float)) and 0 < self.safety <= 1):
            raise MarginalError(f"safety must be in (0, 1], got {self.safety!r}")
        if self.rank_tol is not None and not (isinstance(self.rank_tol, (int, float))
                                              and self.rank_tol > 0):
            raise MarginalError(f"rank_tol must be None or positive, got {self.rank_tol!r}")
        for name in ("rank", "max_rank"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise MarginalError(f"{name} must be None or an integer >= 1, got {v!r}")
        if self.memory_budget is not None and (isinstance(self.memory_budget, bool) or not
                                               isinstance(self.memory_budget, int)
                                               or self.memory_budget < 1):
            raise MarginalError(f"memory_budget must be None or a positive number of bytes, "
                                f"got {self.memory_budget!r}")
        if isinstance(self.memory, bool) or not isinstance(self.memory, int) or self.memory < 1:
            raise MarginalError(f"memory must be an integer >= 1, got {self.memory!r}")
        if not isinstance(self.thresholds, Thresholds):
            raise MarginalError(f"thresholds must be a Thresholds, got "
                                f"{type(self.thresholds).__name__}")
