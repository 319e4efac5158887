"""method="cdae" and method="cdae+mio": the paper's learned pipelines (approximate methods).

cdae:      X = MIO(seed), Z = CDAE(X), rho = herm(Z) / tr herm(Z)
cdae+mio:  then rho' = MIO(rho) (Fig. 4)

The arrays come from :func:`qmarginal.learn.pipeline.cdae_states` (torch is imported only when
a solve runs); ``reconstruct`` measures and flags the output (``report.certified``) without
requiring it to be a state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import MarginalError
from ..problem import MarginalProblem
from ._api import Settings, SolverOutput

__all__ = ["CDAESettings", "solve", "solve_then_mio"]


@dataclass(frozen=True)
class CDAESettings(Settings):
    """Settings of the learned pipelines.

    Attributes:
        model: None (the shipped model for the problem's N and k), a path to weights with their
            card, or a torch module taking ``(B, 2, D, D)`` images.
        seed_state: MIO seed, "hilbert_schmidt" (paper), "maximally_mixed", or a matrix; None
            (default) uses the seed the model was trained with (its card), else the paper's.
        seed: random seed of the Hilbert-Schmidt seed state.
        device: where to compute (default: the problem's device, CPU for numpy).
        batch_size: network batch size.
        models_dir: where to look for shipped models (default ``qmarginal/models``).
    """

    model: Any = None
    seed_state: Any = None
    seed: int | None = None
    device: Any = None
    batch_size: int = 1000
    models_dir: Any = None

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or \
                self.batch_size < 1:
            raise MarginalError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")


def _run(problem, st: CDAESettings, mio_after: bool) -> SolverOutput:
    from ..learn.pipeline import cdae_states

    st = st or CDAESettings()
    states, info = cdae_states(problem, model=st.model, seed_state=st.seed_state, seed=st.seed,
                               device=st.device, batch_size=st.batch_size,
                               models_dir=st.models_dir, mio_after=mio_after)
    return SolverOutput(states, iterations=2 if mio_after else 1, converged=True, info=info)


def solve(problem: MarginalProblem, settings: CDAESettings | None = None, *,
          x0=None) -> SolverOutput:
    """MIO, then the CDAE; the output hermitised and trace-normalised.

    Raises:
        MarginalError: not qubits or N < 3; no model for the problem (the message says how to
            train one); unreadable weights.
    """
    return _run(problem, settings, mio_after=False)


def solve_then_mio(problem: MarginalProblem, settings: CDAESettings | None = None, *,
                   x0=None) -> SolverOutput:
    """MIO, the CDAE, then the MIO again with the CDAE's output as its seed (Fig. 4)."""
    return _run(problem, settings, mio_after=True)
