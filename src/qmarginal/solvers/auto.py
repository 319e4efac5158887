"""method="auto": the learned start (MIO, then the CDAE) refined by the exact solver.

Path "cdae->exact": for N >= 3 qubits with a trained model for N (see
:func:`qmarginal.learn.weights.find_model`), the MIO of the model's seed is passed through the
CDAE and its output is the warm start ``x0`` of :func:`qmarginal.solvers.exact.solve`.
Path "fallback:<reason>": otherwise (qudits, N < 3, no model for N, torch or the model cannot
be loaded) the exact solver runs from its default seed, the MIO of the maximally mixed state.
The exact solver certifies the result in both paths, so "auto" succeeds whenever "exact" does.
"""

from __future__ import annotations

import time

from ..errors import MarginalError
from ..problem import MarginalProblem
from ..reconstruct import SolverOutput
from . import exact

__all__ = ["solve"]


def _cdae_start(problem: MarginalProblem, model, models_dir, seed):
    """(state, info) of the CDAE, or (None, reason) when no model fits the problem."""
    if any(d != 2 for d in problem.dims):
        return None, f"qudits (dims {tuple(problem.dims)}): the CDAE is trained on qubits"
    if problem.n_sites < 3:
        return None, f"N = {problem.n_sites} < 3: no CDAE for fewer than 3 qubits"
    if model is None:
        try:
            from ..learn.weights import find_model
            find_model(problem.n_sites, max(len(J) for J in problem.subsets), models_dir)
        except ImportError as e:
            return None, f"torch/safetensors missing ({e})"
        except MarginalError:
            return None, f"no model for N={problem.n_sites} in {models_dir or 'qmarginal/models'}"
    try:
        from ..learn.pipeline import solve_cdae
        out = solve_cdae(problem, model=model, models_dir=models_dir, seed=seed)
    except ImportError as e:
        return None, f"torch/safetensors missing ({e})"
    except MarginalError as e:
        if model is not None:
            raise  # the user asked for this model: say why it does not fit
        return None, f"model unusable: {e}"
    return out.state, out.info


def solve(problem: MarginalProblem, *, model=None, models_dir=None, seed=0,
          settings: exact.ExactSettings | None = None, **overrides) -> SolverOutput:
    """Reconstruct with the exact solver, warm-started from the CDAE when a model fits.

    Args:
        problem: the marginals (batched or not; numpy or torch).
        model: None (the shipped model for N, if any), a weights path, or a torch module; an
            explicit model that does not fit raises instead of falling back.
        models_dir: where to look for models when ``model`` is None.
        seed: random seed of the CDAE's Hilbert-Schmidt seed state (if its card asks for one).
        settings, overrides: :class:`~qmarginal.solvers.exact.ExactSettings` of the exact phase.

    Returns:
        :class:`SolverOutput` of the exact solver; ``info`` adds "auto_path" ("cdae->exact" or
        "fallback:<reason>"), "cdae_time_s", "cdae" (the model's description), "exact_path",
        "exact_iterations", "exact_time_s".

    Raises:
        MarginalError: as :func:`qmarginal.solvers.exact.solve`; an explicit ``model`` that
            cannot be used for the problem.

    Example:
        >>> from qmarginal import MarginalProblem, rank_mixture_state
        >>> p = MarginalProblem.from_state(rank_mixture_state(27, 2, seed=0), k=2, dims=3)
        >>> out = solve(p)
        >>> bool(out.converged), out.info["auto_path"][:16]
        (True, 'fallback:qudits ')
    """
    t0 = time.perf_counter()
    x0, cinfo = _cdae_start(problem, model, models_dir, seed)
    t_cdae = time.perf_counter() - t0
    out = exact.solve(problem, x0=x0, settings=settings, **overrides)
    info = dict(out.info)
    info.update(auto_path="cdae->exact" if x0 is not None else f"fallback:{cinfo}",
                cdae_time_s=t_cdae if x0 is not None else 0.0,
                cdae=cinfo if x0 is not None else None,
                exact_path=out.info.get("path"), exact_iterations=out.iterations,
                exact_time_s=out.info.get("time_s"))
    return SolverOutput(out.state, iterations=out.iterations, converged=out.converged,
                        tolerances=out.tolerances, info=info)
