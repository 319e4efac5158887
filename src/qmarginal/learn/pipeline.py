"""The paper's pipelines as arrays: MIO, then the CDAE (Sections IV and V).

cdae:      X = MIO(seed), Z = CDAE(X), rho = herm(Z) / tr herm(Z)
cdae+mio:  then rho' = MIO(rho) (the CDAE output as the seed of a second MIO pass; Fig. 4)

Batched over the problem's batch axes, on CPU or GPU. ``reconstruct(method="cdae")`` (in
:mod:`qmarginal.solvers.cdae`) measures and flags the output like any method's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import _backend as B
from ..errors import MarginalError
from ..mio import impose, seed_matrix
from ..problem import MarginalProblem
from .encoding import to_channels
from .train import predict_states

__all__ = ["cdae_states", "resolve_model", "trained_seed_state"]

#: the MIO seed assumed for a network whose card does not say (the paper's)
DEFAULT_SEED_STATE = "hilbert_schmidt"


def trained_seed_state(card: dict | None) -> str | None:
    """The MIO seed a model was trained with, from its card (None when the card is silent)."""
    data = (card or {}).get("data") or {}
    return data.get("seed_state") if isinstance(data, dict) else None


def resolve_model(problem: MarginalProblem, model=None, models_dir=None):
    """The network for ``problem``: a given module, a weights path, or the shipped model found
    by :func:`qmarginal.learn.weights.find_model`.

    A path is checked by :func:`~qmarginal.learn.weights.load_weights` (card schema, header
    against the architecture, SHA-256) and its card must be for the problem's N and for k' >= the
    problem's k, the same rule :func:`~qmarginal.learn.weights.find_model` applies.

    Returns:
        (module, description); the description's "trained_seed_state" is the seed from the
        model's card (a module loaded by :func:`~qmarginal.learn.weights.load_weights` carries
        its card as ``module.card``).

    Raises:
        MarginalError: no usable model (``NoModelError``), a bad card or weights file
            (``ModelCardError``), a model for another N or a smaller k.
    """
    from .weights import find_model, load_weights

    if isinstance(model, torch.nn.Module):
        card = getattr(getattr(model, "module", model), "card", None)
        return model, {"model": type(model).__name__,
                       "trained_seed_state": trained_seed_state(card)}
    n = problem.n_sites
    k = max(len(J) for J in problem.subsets)
    if model is None:
        path = find_model(n, k, models_dir)
    elif isinstance(model, (str, Path)):
        path = Path(model)
    else:
        raise MarginalError(f"model must be None, a path or a torch Module, got "
                            f"{type(model).__name__}")
    net, card = load_weights(path)
    if card["n_qubits"] != n or card["k"] < k:
        raise MarginalError(f"model {path} was trained for N = {card['n_qubits']}, "
                            f"k = {card['k']}; the problem has N = {n}, k = {k} (a model serves "
                            f"its own N and k up to its own)")
    return net, {"model": str(path), "trained_on": f"N{card['n_qubits']}k{card['k']}",
                 "samples_seen": card.get("samples_seen"),
                 "trained_seed_state": trained_seed_state(card)}


def cdae_states(problem: MarginalProblem, *, model=None, seed_state=None, seed=None,
                device=None, batch_size: int = 1000, models_dir=None, mio_after: bool = False):
    """MIO of the seed, then the CDAE (then the MIO again with ``mio_after``).

    Args:
        problem: N >= 3 qubits, possibly batched (numpy or torch).
        model: None (the shipped model for the problem's N and k), a weights path, or a torch
            module taking ``(B, 2, D, D)`` images.
        seed_state: MIO seed, "hilbert_schmidt" (paper), "maximally_mixed", or a matrix; None
            uses the seed the model was trained with (its card), else the paper's.
        seed: random seed of the Hilbert-Schmidt seed state.
        device: where to compute (default: the problem's device, CPU for numpy).
        batch_size: network batch size.
        models_dir: where to look for shipped models.
        mio_after: apply the MIO to the network's output (the paper's Fig. 4).

    Returns:
        (states, info): complex128 states ``(*batch, D, D)`` (hermitised, trace-normalised; numpy
        for a numpy problem) and a description of the model and seed used.

    Raises:
        MarginalError: not qubits or N < 3; no model for the problem; unreadable weights.
    """
    if not isinstance(problem, MarginalProblem):
        raise MarginalError(f"problem must be a MarginalProblem, got {type(problem).__name__}")
    if any(d != 2 for d in problem.dims) or problem.n_sites < 3:
        raise MarginalError(f"the CDAE works on N >= 3 qubits; the problem has dims {problem.dims}")
    net, info = resolve_model(problem, model, models_dir)
    trained = info.pop("trained_seed_state", None)
    if seed_state is None:  # the seed the model was trained with (the paper's if unknown)
        seed_state = trained or DEFAULT_SEED_STATE
    was_numpy = not problem.is_torch
    if device is None:
        device = next(iter(problem.marginals.values())).device if problem.is_torch else "cpu"
    device = torch.device(device)
    pt = problem.to_torch(device=device, dtype=torch.complex128)
    x0 = seed_matrix(pt, seed_state, seed=seed)
    X = impose(B.as_array(x0, like=next(iter(pt.marginals.values()))).to(torch.complex128), pt)
    D = problem.dim
    batch = tuple(X.shape[:-2])
    flat = X.reshape(-1, D, D)
    net_dev = next(net.parameters()).device
    net = net.to(device)
    was_training = net.training
    net.eval()
    outs = []
    with torch.no_grad():
        for lo in range(0, flat.shape[0], batch_size):
            outs.append(predict_states(net, to_channels(flat[lo:lo + batch_size], torch.float32)))
    net.train(was_training)
    net.to(net_dev)
    Z = torch.cat(outs).reshape(batch + (D, D))
    H = 0.5 * (Z + Z.mH)
    rho = H / H.diagonal(dim1=-2, dim2=-1).sum(-1).real[..., None, None]
    if mio_after:
        rho = impose(rho, pt)
    info.update(seed=seed_state if isinstance(seed_state, str) else "given", device=str(device))
    return (rho.cpu().numpy() if was_numpy else rho), info
