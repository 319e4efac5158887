"""Per-method predictions for the evaluation: ``predict(name, problem, context) -> states``.

Every function takes a batched :class:`~qmarginal.MarginalProblem` (numpy, batch of n) and an
:class:`Context` and returns the candidate global states ``(n, D, D)``; the evaluation measures
them all the same way (:func:`qmarginal.report.measure`).

Names (CLI) and the name written in the CSV ("method" column; the paper's methods keep their
published names):

============  ==============  ==========================================================
CLI           CSV             what
============  ==============  ==========================================================
cdae          cdae            MIO of a seed, then model1 (the shipped model for (N, k))
model2        model2          the same with the model2 weights given by ``--model2``
cdae+mio      cdae_then_mio   cdae, then one more MIO pass (the paper's Fig. 4)
mio_random    mio_random      MIO of a Hilbert-Schmidt random seed (the paper's MIO)
mio_mixed     mio_mixed       MIO of the maximally mixed state
mio_clip      mio_clip        mio_mixed, then the nearest density matrix (Smolin et al.)
random_guess  random_guess    an unrelated random full-rank Hilbert-Schmidt state
exact         exact           ``reconstruct(method="exact")``
maxent        maxent          ``reconstruct(method="maxent")`` (one problem at a time)
sdp           sdp             ``reconstruct(method="sdp")`` (CVXPY + SCS, one at a time)
============  ==============  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import MarginalError

__all__ = ["METHODS", "Context", "csv_name", "predict", "SLOW"]

#: CLI name -> CSV name, where they differ.
_CSV = {"cdae+mio": "cdae_then_mio", "model2+mio": "model2_then_mio"}
_ALIAS = {v: k for k, v in _CSV.items()}

#: methods that solve one problem at a time (evaluated in small, growing chunks under the
#: time limit).
SLOW = {"exact", "maxent", "sdp"}


def csv_name(method: str) -> str:
    """The name written in the CSV for a CLI method name."""
    return _CSV.get(method, method)


def cli_name(method: str) -> str:
    """The CLI name for a CLI or CSV method name."""
    return _ALIAS.get(method, method)


@dataclass
class Context:
    """What a method needs besides the problem.

    Attributes:
        seed: a numpy Generator for the method's own randomness (seed states, random guesses).
        models: loaded networks by role ("model1", "model2"), or None where absent.
        options: extra options per method name (passed to ``reconstruct``).
    """

    rng: np.random.Generator
    models: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)


def _seed(ctx: Context) -> int:
    return int(ctx.rng.integers(2**31 - 1))


def _reconstruct(problem, method, ctx, **kw):
    from ..reconstruct import reconstruct

    opts = {**kw, **ctx.options.get(method, {})}
    # every element's answer (a not-certified one as its best iterate), no compatibility check
    return np.asarray(reconstruct(problem, method, strict=False, check=False, **opts).state)


def _mio(problem, ctx, seed_state):
    from ..mio import impose, seed_matrix

    x0 = seed_matrix(problem, seed_state, seed=_seed(ctx))
    return np.asarray(impose(np.ascontiguousarray(x0), problem))


def _cdae(problem, ctx, role, mio_after=False):
    from ..learn.pipeline import cdae_states

    net = ctx.models.get(role)
    if net is None:
        raise MarginalError(f"no {role} network for this case")
    states, _ = cdae_states(problem, model=net, seed=_seed(ctx), mio_after=mio_after,
                            **ctx.options.get(role, {}))
    return np.asarray(states)


def _random_guess(problem, ctx):
    from ..states import hilbert_schmidt_state

    n = problem.batch_shape[0]
    return hilbert_schmidt_state(problem.dim, batch=n, seed=_seed(ctx))


def _clip(problem, ctx):
    from ..metrics import nearest_density_matrix

    return np.asarray(nearest_density_matrix(_mio(problem, ctx, "maximally_mixed")))


METHODS: dict[str, Callable[[Any, Context], np.ndarray]] = {
    "cdae": lambda p, c: _cdae(p, c, "model1"),
    "model2": lambda p, c: _cdae(p, c, "model2"),
    "cdae+mio": lambda p, c: _cdae(p, c, "model1", mio_after=True),
    "model2+mio": lambda p, c: _cdae(p, c, "model2", mio_after=True),
    "mio_random": lambda p, c: _mio(p, c, "hilbert_schmidt"),
    "mio_mixed": lambda p, c: _mio(p, c, "maximally_mixed"),
    "mio_clip": _clip,
    "random_guess": _random_guess,
    "exact": lambda p, c: _reconstruct(p, "exact", c),
    "maxent": lambda p, c: _reconstruct(p, "maxent", c),
    "sdp": lambda p, c: _reconstruct(p, "sdp", c),
}


def predict(method: str, problem, ctx: Context) -> np.ndarray:
    """Candidate states of ``method`` (CLI or CSV name) for the batched ``problem``."""
    name = cli_name(method)
    if name not in METHODS:
        raise MarginalError(f"unknown evaluation method {method!r}; choose from {sorted(METHODS)}")
    return METHODS[name](problem, ctx)
