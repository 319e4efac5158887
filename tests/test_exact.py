"""method="exact": valid states with the given marginals on random feasible problems.

Every solve is checked independently of the solver: the paper's validity test through
``qmarginal.state_report`` (lambda_min >= -1e-10 after normalising) and the marginal deviation
through ``problem.marginal_deviation`` (<= 1e-9).
"""

import numpy as np
import pytest

import qmarginal as qm
from qmarginal import MarginalError, MarginalProblem, rank_mixture_state
from qmarginal.reconstruct import reconstruct
from qmarginal.solvers.exact import ExactSettings, solve

from conftest import tol_for

torch = pytest.importorskip("torch")

EIG_TOL = 1e-10
DEV_TOL = 1e-9


def _check(problem, state):
    rep = qm.state_report(state)
    assert np.all(np.asarray(qm._backend.to_numpy(rep.valid) if qm._backend.is_torch(rep.valid)
                             else rep.valid)), f"lambda_min = {rep.min_eigenvalue}"
    dev = problem.marginal_deviation(state)
    dev = qm._backend.to_numpy(dev) if qm._backend.is_torch(dev) else np.asarray(dev)
    assert np.all(dev <= DEV_TOL), f"marginal deviation {dev}"
    tr = np.asarray(qm._backend.to_numpy(qm._backend.trace(state)))
    assert np.allclose(tr, 1, atol=1e-12)
    s = qm._backend.to_numpy(state)
    assert np.allclose(s, np.conj(np.swapaxes(s, -1, -2)), atol=1e-14)


def _ranks(dim):
    return sorted({1, 2, dim // 2, dim})


def _cases(ns):
    return [(n, k, r) for n in ns for k in range(1, n) for r in _ranks(2 ** n)]


# ----------------------------------------------------------------------------- the index maps
def test_maps_agree_with_the_core(rng):
    from qmarginal.solvers._exact_maps import MarginalMaps

    dims = (2, 3, 2)
    D = 12
    subsets = [(0, 1), (1, 2), (0,), (0, 1, 2)]
    rho = qm.hilbert_schmidt_state(D, seed=3)
    p = MarginalProblem.from_state(rho, subsets=subsets, dims=dims)
    sig = [torch.as_tensor(p.marginals[J])[None] for J in subsets]
    mp = MarginalMaps(dims, subsets, sig, torch)
    x = rng.standard_normal((D, D)) + 1j * rng.standard_normal((D, D))
    xt = torch.as_tensor(x)[None]
    for Js, tr in zip(mp.group_subsets, mp.ptrace(xt)):
        for J, got in zip(Js, tr[0]):
            assert np.allclose(got.numpy(), qm.partial_trace(x, J, dims).reshape(-1),
                               atol=tol_for(x))
    # the adjoint: sum_J Delta_J (x) 1
    deltas = [torch.as_tensor(rng.standard_normal(s.shape) + 0j) for _, s in mp.groups]
    want = 0
    for Js, dl in zip(mp.group_subsets, deltas):
        for J, d in zip(Js, dl[0]):
            dJ = int(np.prod([dims[s] for s in J]))
            want = want + qm.embed(d.numpy().reshape(dJ, dJ), J, dims, normalize=False)
    assert np.allclose(mp.adjoint(deltas)[0].numpy(), want, atol=tol_for(x))
    # the projection is impose
    assert np.allclose(mp.project(xt)[0].numpy(), qm.impose(x, p), atol=tol_for(x))
    assert np.allclose(mp.tangent(xt)[0].numpy(),
                       qm.impose(x, {J: 0 * s for J, s in p.marginals.items()}, dims),
                       atol=tol_for(x))


# ----------------------------------------------------------------------------- random problems
# the default run: every k and rank for N = 3..6 (N5k2 rank 2, where the compatible set turns
# from a point into a thin full-dimensional set, is the slowest: ~10^3 iterations); N = 7 is slow
_SLOW = _cases([7])


@pytest.mark.parametrize("n, k, rank", _cases([3, 4, 5, 6]))
def test_random_feasible_qubits(n, k, rank):
    rho = rank_mixture_state(2 ** n, rank, seed=100 * n + 10 * k + rank)
    p = MarginalProblem.from_state(rho, k=k)
    out = solve(p)
    assert out.converged
    _check(p, out.state)


@pytest.mark.slow
@pytest.mark.parametrize("n, k, rank", _SLOW)
def test_random_feasible_qubits_slow(n, k, rank):
    rho = rank_mixture_state(2 ** n, rank, seed=100 * n + 10 * k + rank)
    p = MarginalProblem.from_state(rho, k=k)
    out = solve(p)
    assert out.converged
    _check(p, out.state)


@pytest.mark.parametrize("k, rank", [(4, 1), (6, 1), (6, 2)])
def test_random_feasible_seven_qubits_quick(k, rank):
    rho = rank_mixture_state(128, rank, seed=7 + k + rank)
    p = MarginalProblem.from_state(rho, k=k)
    out = solve(p)
    assert out.converged
    _check(p, out.state)


@pytest.mark.parametrize("rank", [1, 2, 13, 27])
def test_qutrits(rank):
    rho = rank_mixture_state(27, rank, seed=rank)
    p = MarginalProblem.from_state(rho, k=2, dims=(3, 3, 3))
    out = solve(p)
    assert out.converged
    _check(p, out.state)


@pytest.mark.parametrize("rank", [1, 2, 32, 64])
def test_ring_of_pairs(rank):
    n = 6
    ring = [tuple(sorted((i, (i + 1) % n))) for i in range(n)]
    rho = rank_mixture_state(2 ** n, rank, seed=40 + rank)
    p = MarginalProblem.from_state(rho, subsets=ring)
    out = solve(p)
    assert out.converged
    _check(p, out.state)


def test_mixed_subset_sizes():
    subsets = [(0, 1, 2), (2, 3), (3, 4), (0, 4)]
    rho = rank_mixture_state(32, 2, seed=5)
    p = MarginalProblem.from_state(rho, subsets=subsets)
    out = solve(p)
    assert out.converged
    _check(p, out.state)


# ----------------------------------------------------------------------------- paths and options
def test_paths_are_reported():
    full = MarginalProblem.from_state(rank_mixture_state(32, 32, seed=1), k=2)
    assert solve(full).info["path"] == "mio"
    pure = MarginalProblem.from_state(rank_mixture_state(16, 1, seed=1), k=3)
    out = solve(pure)
    assert out.info["path"] == "factored" and out.info["rank"] == 1


@pytest.mark.parametrize("path", ["convex", "factored"])
def test_forced_path(path):
    rho = rank_mixture_state(16, 8, seed=2)
    p = MarginalProblem.from_state(rho, k=3)
    out = solve(p, path=path)
    assert out.converged
    assert path in out.info["path"]
    _check(p, out.state)


def test_warm_start():
    rho = rank_mixture_state(32, 1, seed=9)
    p = MarginalProblem.from_state(rho, k=2)
    exact = solve(p, x0=rho)
    assert exact.info["path"] == "mio" and exact.iterations == 0
    _check(p, exact.state)
    noisy = rho + 1e-3 * qm.hilbert_schmidt_state(32, seed=1)
    out = solve(p, x0=noisy)
    assert out.converged and out.info["seed"] == "given"
    _check(p, out.state)
    with pytest.raises(MarginalError, match="warm start"):
        solve(p, x0=np.eye(8))


def test_batch():
    ranks = [1, 2, 16, 32]
    rhos = np.stack([rank_mixture_state(32, r, seed=20 + r) for r in ranks])
    p = MarginalProblem.from_state(rhos, k=2)
    assert p.batch_shape == (4,)
    out = solve(p)
    assert out.state.shape == (4, 32, 32)
    assert np.all(out.converged)
    _check(p, out.state)
    paths = list(out.info["path"])
    assert paths[-1] == "mio" and "factored" in paths[0]


def test_torch_in_torch_out():
    rho = rank_mixture_state(16, 2, seed=4)
    p = MarginalProblem.from_state(rho, k=3).to_torch()
    out = solve(p)
    assert torch.is_tensor(out.state) and out.state.dtype == torch.complex128
    assert out.state.device == next(iter(p.marginals.values())).device
    _check(p, out.state)


def test_numpy_in_numpy_out():
    p = MarginalProblem.from_state(rank_mixture_state(8, 2, seed=4), k=2)
    out = solve(p)
    assert isinstance(out.state, np.ndarray) and out.state.dtype == np.complex128


def test_reconstruct_default_is_exact():
    p = MarginalProblem.from_state(rank_mixture_state(16, 1, seed=11), k=2)
    rec = reconstruct(p)
    assert rec.report.method == "exact"
    assert rec.report.valid and rec.report.max_marginal_deviation <= DEV_TOL
    assert rec.report.tolerances["eig_tol"] == 1e-10
    assert rec.report.tolerances["marginal_tol"] == 1e-9


def test_settings_and_options():
    p = MarginalProblem.from_state(rank_mixture_state(8, 1, seed=1), k=2)
    with pytest.raises(MarginalError, match="unknown option"):
        solve(p, bogus=1)
    with pytest.raises(MarginalError, match="path"):
        ExactSettings(path="newton")
    out = solve(p, settings=ExactSettings(marginal_tol=1e-6, eig_tol=1e-6))
    assert out.tolerances["marginal_tol"] == 1e-6
    assert out.converged


def test_maxiter_reports_honestly():
    # a unique low-rank point cannot be reached in one iteration: not converged, and said so
    p = MarginalProblem.from_state(rank_mixture_state(64, 2, seed=3), k=3)
    out = solve(p, maxiter=1)
    assert not out.converged
