"""method="exact": a certifying solver built on the exact projection onto the marginals.

Let A = {X : tr_{J^c} X = sigma_J for all J} and T its direction space (all partial traces zero).
The MIO composition ``impose`` is the Frobenius projection P_A onto A (see :mod:`qmarginal.mio`),
and P_T(X) = P_A(X) - P_A(0). The solver looks for rho in A with rho >= 0 by a sequence of
steps that a pure function, :func:`plan`, picks from features of the problem (the marginals'
ranks, the MIO of 1/D); ``info["path"]`` says which steps ran:

1. the MIO of the seed: rho = P_A(x0), x0 the warm start or 1/D; often already PSD for
   full-rank targets.
2. ``convex``: min_{X in A} ||X_-||_F^2 / 2 by L-BFGS (an accelerated alternating projection,
   :mod:`._convex`); fast when the compatible set has interior points (the usual full-rank
   case). It stops when lambda_min(X) >= -safety * eig_tol, or earlier when the PSD part X_+
   (trace-normalised), a state by construction, has marginal deviation <= safety *
   marginal_tol.
3. ``factored`` (Burer-Monteiro): rho = V V^dagger with V of r columns minimising
   h(V) = sum_J ||tr_{J^c}(V V^dagger) - sigma_J||_F^2: the low-rank regime, where the
   compatible set shrinks to a point and projections crawl. Levenberg-Marquardt steps on the
   exact Gauss-Newton model while D r is small (:mod:`._gauss_newton`: quadratic convergence,
   typically 5-25 iterations), L-BFGS with an exact quartic line search beyond
   (:mod:`._factored`). The rank starts at the lower bound max_J ceil(rank(sigma_J) / d_{J^c})
   and grows when h stalls at a non-zero value.
4. ``restarts``: Levenberg-Marquardt from random starting points at the ranks just above the
   bound, for targets where the first factored attempt met a spurious local minimum.
5. ``convex`` without patience: the last resort, to ``maxiter`` or the time limit.

A step that cannot finish (slow convex progress, a factored attempt off track) leaves its
elements to the next one. The output of every successful step is a state to ``safety`` times
the tolerances; :func:`qmarginal.reconstruct` re-measures it independently and certifies it.
All thresholds live in :class:`Thresholds`; the settings a user chooses in
:class:`ExactSettings`.

The projection P_A is the MIO composition evaluated with cached index tensors (:mod:`._maps`),
in its Moebius form (one gather and one scatter per subset size) for small problems with many
subsets. Arithmetic is complex128: torch on the problem's device (CPU for numpy input), in
inference mode, except Levenberg-Marquardt, which runs in numpy/scipy on the CPU.
"""

from __future__ import annotations

from .plan import Features, Step, plan
from .settings import PATHS, THRESHOLDS, ExactSettings, Thresholds


def __getattr__(name):
    # the driver (and torch with it) loads on first use: settings, the plan and the memory
    # plan are available without it (a refusal by the memory plan takes no torch import)
    if name in ("solve", "clear_cache"):
        from . import _driver

        return getattr(_driver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["solve", "ExactSettings", "Thresholds", "THRESHOLDS", "PATHS", "plan", "Features",
           "Step", "clear_cache"]
