"""method="mio": the MIO composition applied to a seed, as in the paper (Eq. (5)).

The result has exactly the given marginals (for a consistent set) and trace 1, but it is
positive semidefinite only for some seeds and targets.
"""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from ..errors import MarginalError
from ..mio import impose
from ..problem import MarginalProblem
from ..reconstruct import SolverOutput
from ..states import hilbert_schmidt_state

SEEDS = ("maximally_mixed", "hilbert_schmidt")


def seed_matrix(problem: MarginalProblem, seed_state="maximally_mixed", *, seed=None):
    """The MIO seed for ``problem``: the maximally mixed state 1/D, a Hilbert-Schmidt random
    state per batch element (the paper's choice; reproducible from ``seed``), or a given matrix.

    The result follows the problem's library, precision and device.
    """
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


def solve(problem: MarginalProblem, *, seed_state="maximally_mixed", seed=None) -> SolverOutput:
    """Q_{J_M} o ... o Q_{J_1}(seed).

    Args:
        seed_state: "maximally_mixed" (default), "hilbert_schmidt" (the paper), or a matrix.
        seed: random seed for "hilbert_schmidt".
    """
    x = seed_matrix(problem, seed_state, seed=seed)
    name = seed_state if isinstance(seed_state, str) else "given"
    return SolverOutput(impose(x, problem), iterations=1, converged=True, info={"seed": name})
