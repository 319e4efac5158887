"""method="mio": the MIO composition applied to a seed, as in the paper (Eq. (5)).

An approximate method: the result has exactly the given marginals (for a consistent set) and
trace 1, but it is positive semidefinite only for some seeds and targets. ``reconstruct``
measures and flags it like any other output (``report.certified``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import MarginalError
from ..mio import SEEDS, impose, seed_matrix
from ..problem import MarginalProblem
from ._api import Settings, SolverOutput

__all__ = ["MIOSettings", "solve", "seed_matrix", "SEEDS"]


@dataclass(frozen=True)
class MIOSettings(Settings):
    """Settings of the MIO.

    Attributes:
        seed_state: "maximally_mixed" (default), "hilbert_schmidt" (the paper), or a matrix.
        seed: random seed for "hilbert_schmidt".
        eig_tol, marginal_tol: the tolerances the output is measured against (it is not
            required to meet them).
    """

    seed_state: Any = "maximally_mixed"
    seed: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.seed_state, str) and self.seed_state not in SEEDS:
            raise MarginalError(f"unknown seed {self.seed_state!r}; use one of {SEEDS} or pass "
                                f"a matrix")


def solve(problem: MarginalProblem, settings: MIOSettings | None = None, *,
          x0=None) -> SolverOutput:
    """Q_{J_M} o ... o Q_{J_1}(seed).

    Example:
        >>> from qmarginal import MarginalProblem, hilbert_schmidt_state
        >>> p = MarginalProblem.from_state(hilbert_schmidt_state(8, seed=0), k=2)
        >>> solve(p).state.shape
        (8, 8)
    """
    st = settings or MIOSettings()
    x = seed_matrix(problem, st.seed_state, seed=st.seed)
    name = st.seed_state if isinstance(st.seed_state, str) else "given"
    return SolverOutput(impose(x, problem), iterations=1, converged=True, info={"seed": name})
