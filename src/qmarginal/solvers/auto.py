"""method="auto": the learned start (MIO, then the CDAE) refined by the exact solver.

Path "cdae->exact": for N >= 3 qubits with a trained model for N (see
:func:`qmarginal.learn.weights.find_model`), the MIO of the model's seed is passed through the
CDAE and its output is the warm start ``x0`` of :func:`qmarginal.solvers.exact.solve`.
Path "fallback:<reason>": otherwise (qudits, N < 3, no valid model for N, torch missing, the
model refused on load or failing) the exact solver runs from its default seed, the MIO of the
maximally mixed state; ``info["auto_reason"]`` holds the reason alone (a card that
:func:`~qmarginal.learn.weights.find_model` skipped is named there with why, besides its
warning). Only an explicit ``model=`` that cannot be used raises.
A certifying method: the exact solver's result is certified by ``reconstruct`` in both paths,
so "auto" succeeds whenever "exact" does, and raises as "exact" does otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

from ..errors import MarginalError
from ..problem import MarginalProblem
from . import exact
from ._api import SolverOutput

__all__ = ["AutoSettings", "solve"]


@dataclass(frozen=True)
class AutoSettings(exact.ExactSettings):
    """The exact solver's settings (:class:`~qmarginal.solvers.exact.ExactSettings`) plus:

    Attributes:
        model: None (the shipped model for N, if any), a weights path, or a torch module; an
            explicit model that does not fit raises instead of falling back.
        models_dir: where to look for models when ``model`` is None.
        cdae_seed: random seed of the CDAE's Hilbert-Schmidt seed state (if its card asks for
            one).
    """

    model: Any = None
    models_dir: Any = None
    cdae_seed: int = 0

    def exact_settings(self) -> exact.ExactSettings:
        names = {f.name for f in fields(exact.ExactSettings)}
        return exact.ExactSettings(**{n: getattr(self, n) for n in names})


def _no_model_reason(problem: MarginalProblem, st: AutoSettings, exc: MarginalError) -> str:
    reason = f"no model for N={problem.n_sites} in {st.models_dir or 'qmarginal/models'}"
    skipped = getattr(exc, "skipped", ())
    if skipped:
        reason += "; skipped unusable card(s): " + "; ".join(
            f"{path.name} ({why if len(why) <= 200 else why[:197] + '...'})"
            for path, why in skipped)
    return reason


def _cdae_start(problem: MarginalProblem, st: AutoSettings):
    """(state, info) of the CDAE, or (None, reason) when no model fits the problem.

    With ``st.model`` None, any failure (no valid card, a card or weights file refused on
    load, torch missing, an error in the network) is a reason to fall back, never an error: the
    exact solver runs either way and certifies its own result. An explicit ``st.model`` that
    cannot be used raises.
    """
    if any(d != 2 for d in problem.dims):
        return None, f"qudits (dims {tuple(problem.dims)}): the CDAE is trained on qubits"
    if problem.n_sites < 3:
        return None, f"N = {problem.n_sites} < 3: no CDAE for fewer than 3 qubits"
    model = st.model
    try:
        if model is None:
            from ..learn.weights import find_model
            try:
                model = find_model(problem.n_sites, max(len(J) for J in problem.subsets),
                                   st.models_dir)
            except MarginalError as e:
                return None, _no_model_reason(problem, st, e)
        from ..learn.pipeline import cdae_states
        state, info = cdae_states(problem, model=model, models_dir=st.models_dir,
                                  seed=st.cdae_seed)
    except ImportError as e:
        return None, f"torch/safetensors missing ({e})"
    except MarginalError as e:
        if st.model is not None:
            raise  # the user asked for this model: say why it does not fit
        return None, f"model unusable: {e}"
    except Exception as e:  # a warm start is optional: the exact solver runs regardless
        if st.model is not None:
            raise
        return None, f"model unusable: {type(e).__name__}: {e}"
    return state, info


def solve(problem: MarginalProblem, settings: AutoSettings | None = None, *,
          x0=None) -> SolverOutput:
    """Reconstruct with the exact solver, warm-started from the CDAE when a model fits.

    Returns:
        :class:`~qmarginal.solvers._api.SolverOutput` of the exact solver; ``info`` adds
        "auto_path" ("cdae->exact" or "fallback:<reason>"), "auto_reason" (the reason of a
        fallback, None on the cdae path), "cdae_time_s", "cdae" (the model's description),
        "exact_path", "exact_iterations", "exact_time_s".

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
    st = settings or AutoSettings()
    t0 = time.perf_counter()
    start, cinfo = _cdae_start(problem, st)
    t_cdae = time.perf_counter() - t0
    out = exact.solve(problem, st.exact_settings(), x0=start)
    info = dict(out.info)
    info.update(auto_path="cdae->exact" if start is not None else f"fallback:{cinfo}",
                auto_reason=None if start is not None else cinfo,
                cdae_time_s=t_cdae if start is not None else 0.0,
                cdae=cinfo if start is not None else None,
                exact_path=out.info.get("path"), exact_iterations=out.iterations,
                exact_time_s=out.info.get("time_s"))
    return SolverOutput(out.state, iterations=out.iterations, converged=out.converged,
                        reason=out.reason, info=info)
