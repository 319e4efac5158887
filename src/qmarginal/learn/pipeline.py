"""``reconstruct(problem, method="cdae")`` and ``method="cdae+mio"`` (Sections IV and V).

cdae:      X = MIO(seed), Z = CDAE(X), rho = herm(Z) / tr herm(Z)
cdae+mio:  then rho' = MIO(rho) (the CDAE output as the seed of a second MIO pass; Fig. 4)

Batched over the problem's batch axes, on CPU or GPU; numpy problems give numpy states.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import _backend as B
from ..errors import MarginalError
from ..mio import impose
from ..problem import MarginalProblem
from ..reconstruct import SolverOutput
from .encoding import to_channels
from .train import predict_states

__all__ = ["solve_cdae", "solve_cdae_mio", "resolve_model"]


def resolve_model(problem: MarginalProblem, model=None, models_dir=None):
    """The network for ``problem``: a given module, a weights path, or the shipped model found
    by :func:`qmarginal.learn.weights.find_model`. Returns (module, description)."""
    from .weights import find_model, load_weights

    if isinstance(model, torch.nn.Module):
        return model, {"model": type(model).__name__}
    n = problem.n_sites
    k = max(len(J) for J in problem.subsets)
    if model is None:
        path = find_model(n, k, models_dir)
    elif isinstance(model, (str, Path)):
        path = Path(model)
    else:
        raise MarginalError(f"model must be None, a path or a torch Module, got {type(model).__name__}")
    net, card = load_weights(path)
    if card.get("n_qubits") not in (None, n):
        raise MarginalError(f"model {path} was trained for N = {card.get('n_qubits')}, "
                            f"the problem has N = {n}")
    return net, {"model": str(path), "trained_on": f"N{card.get('n_qubits')}k{card.get('k')}",
                 "samples_seen": card.get("samples_seen"),
                 "trained_seed_state": (card.get("data") or {}).get("seed_state")}


def _run(problem: MarginalProblem, *, model=None, seed_state=None, seed=None,
         device=None, batch_size: int = 1000, models_dir=None, mio_after: bool = False):
    from ..solvers.mio import seed_matrix

    if not isinstance(problem, MarginalProblem):
        raise MarginalError(f"problem must be a MarginalProblem, got {type(problem).__name__}")
    if any(d != 2 for d in problem.dims) or problem.n_sites < 3:
        raise MarginalError(f"the CDAE works on N >= 3 qubits; the problem has dims {problem.dims}")
    net, info = resolve_model(problem, model, models_dir)
    if seed_state is None:  # the seed the model was trained with (the paper's by default)
        seed_state = info.pop("trained_seed_state", None) or "hilbert_schmidt"
    info.pop("trained_seed_state", None)
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
    state = rho.cpu().numpy() if was_numpy else rho
    return SolverOutput(state, iterations=2 if mio_after else 1, converged=True, info=info)


def solve_cdae(problem: MarginalProblem, *, model=None, seed_state=None, seed=None,
               device=None, batch_size: int = 1000, models_dir=None) -> SolverOutput:
    """MIO, then the CDAE; the output hermitised and trace-normalised.

    Args:
        problem: N >= 3 qubits, possibly batched (numpy or torch).
        model: None (the shipped model for the problem's N and k, see
            :func:`~qmarginal.learn.weights.find_model`), a path to weights with their card, or a
            torch module taking ``(B, 2, D, D)`` images.
        seed_state: MIO seed, "hilbert_schmidt" (paper), "maximally_mixed", or a matrix; None
            (default) uses the seed the model was trained with (its card), else the paper's.
        seed: random seed of the Hilbert-Schmidt seed state.
        device: where to compute (default: the problem's device, CPU for numpy).
        batch_size: network batch size.
        models_dir: where to look for shipped models (default ``qmarginal/models``).

    Raises:
        MarginalError: not qubits or N < 3; no model for the problem (the message says how to
            train one); unreadable weights.
    """
    return _run(problem, model=model, seed_state=seed_state, seed=seed, device=device,
                batch_size=batch_size, models_dir=models_dir)


def solve_cdae_mio(problem: MarginalProblem, *, model=None, seed_state=None,
                   seed=None, device=None, batch_size: int = 1000, models_dir=None) -> SolverOutput:
    """MIO, the CDAE, then the MIO again with the CDAE's output as its seed (Fig. 4).

    The result has exactly the given marginals; arguments as :func:`solve_cdae`.
    """
    return _run(problem, model=model, seed_state=seed_state, seed=seed, device=device,
                batch_size=batch_size, models_dir=models_dir, mio_after=True)
