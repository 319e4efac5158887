"""The exact solver's fast inner maps: Levenberg-Marquardt on V V^dagger and the Moebius form of
the MIO projection, each checked against the core's partial_trace / impose (independent code).

Tolerances: complex128 arithmetic, 1e-12 absolute on O(1) quantities (conftest TOL); the
gradient is compared with a central difference (error O(t^2), t = 1e-5: relative 1e-6).
"""

import numpy as np
import pytest

import qmarginal as qm
from qmarginal import MarginalProblem, rank_mixture_state

from conftest import tol_for

torch = pytest.importorskip("torch")

from dataclasses import replace  # noqa: E402

from qmarginal.reconstruct import reconstruct  # noqa: E402
from qmarginal.solvers.exact import THRESHOLDS, ExactSettings, clear_cache, solve  # noqa: E402
from qmarginal.solvers.exact._driver import _flat_problem  # noqa: E402
from qmarginal.solvers.exact._gauss_newton import (Backend, FactoredMaps,  # noqa: E402
                                                    levenberg_marquardt, _sq)
from qmarginal.solvers.exact._maps import MarginalMaps, structure  # noqa: E402


@pytest.fixture(params=["numpy", "torch"], autouse=True)
def backend(request, monkeypatch):
    """Every test here runs with the iteration in numpy (the CPU default) and in torch (the
    GPU path, exercised on the CPU)."""
    import qmarginal.solvers.exact._gauss_newton as gn

    monkeypatch.setattr(gn, "NUMPY_ON_CPU", request.param == "numpy")
    return request.param


def _t(x):
    """A torch tensor of a numpy or torch array."""
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x)


STRUCTURES = [
    ((2, 2, 2, 2, 2), 2, 2),           # N5k2, rank 2
    ((3, 2, 3), 2, 1),                 # qudits
    ((2, 2, 2, 2), 3, 3),
    ((2, 2, 3, 2), [(0, 1, 2), (2, 3), (0, 3), (1,)], 2),  # non-uniform subsets
]


def _maps(dims, k, rank, state_rank=2, seed=0, sparse_entries=THRESHOLDS.sparse_entries):
    D = int(np.prod(dims))
    rho = rank_mixture_state(D, state_rank, seed=seed)
    p = (MarginalProblem.from_state(rho, k=k, dims=dims) if isinstance(k, int)
         else MarginalProblem.from_state(rho, subsets=k, dims=dims))
    _, subsets, sigmas = _flat_problem(p, torch, "cpu")
    mp = MarginalMaps(dims, subsets, sigmas, torch)
    fm = FactoredMaps(dims, mp.group_subsets, rank, Backend(torch, "cpu"), sparse_entries)
    sig = [fm.backend.from_torch(s.reshape(s.shape[:2] + (int(round(s.shape[-1] ** 0.5)),) * 2))
           for _, s in mp.groups]
    return p, mp, fm, sig


def _ptraces(mp, y):
    """tr_{J^c} y from the core's partial_trace, in the maps' group order."""
    return [np.stack([qm.partial_trace(y, J, mp.dims) for J in Js]) for Js in mp.group_subsets]


@pytest.mark.parametrize("dims, k, rank", STRUCTURES)
def test_regrouped_products_are_partial_traces(dims, k, rank):
    _, mp, fm, sig = _maps(dims, k, rank)
    D = fm.D
    gen = torch.Generator().manual_seed(1)
    v = torch.randn((1, D, rank), dtype=torch.complex128, generator=gen)
    res = fm.residual(fm.regroup(fm.backend.from_torch(v)), sig)
    y = (v[0] @ v[0].mH).numpy()
    for got, want, s in zip(res, _ptraces(mp, y), sig):
        assert np.allclose(_t(got)[0].numpy() + _t(s)[0].numpy(), want, atol=tol_for(y))


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("dims, k, rank", STRUCTURES)
def test_gauss_newton_model(dims, k, rank, sparse):
    """b is the gradient of h (first difference) and 2 u^T H u = ||dR_lin||^2 with dR_lin
    built from partial_trace(V dV^dagger + dV V^dagger); N by the cached sparse matrix or
    strided views."""
    _, mp, fm, sig = _maps(dims, k, rank,
                           sparse_entries=THRESHOLDS.sparse_entries if sparse else 0)
    assert (fm.swap is not None) == sparse
    D, n = fm.D, fm.n
    gen = torch.Generator().manual_seed(2)
    v = torch.randn((1, D, rank), dtype=torch.complex128, generator=gen) / D
    u = torch.randn((1, 2 * n), dtype=torch.float64, generator=gen)
    u = u / torch.linalg.vector_norm(u)
    dz = torch.complex(u[:, :n], u[:, n:]).reshape(v.shape)
    vb = fm.backend.from_torch(v)
    vts = fm.regroup(vb)
    res = fm.residual(vts, sig)
    gz = _t(fm.gradient(vts, res))
    b = torch.cat([gz.real, gz.imag], -1)
    H = _t(fm.hessian(vb, vts))
    assert torch.allclose(H, H.mT, atol=1e-14)
    assert float(torch.linalg.eigvalsh(H).min()) > -1e-12  # positive semidefinite

    def h(x):
        return float(_sq(fm.residual(fm.regroup(fm.backend.from_torch(x)), sig))[0])

    t = 1e-5
    slope = (h(v + t * dz) - h(v - t * dz)) / (2 * t)
    assert slope == pytest.approx(4 * float((b * u).sum()), rel=1e-6, abs=1e-9)
    lin = (v[0] @ dz[0].mH + dz[0] @ v[0].mH).numpy()
    want = sum(float(np.sum(np.abs(p) ** 2)) for p in _ptraces(mp, lin))
    assert 2 * float(u[0] @ H[0] @ u[0]) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("dims, k", [((3, 3, 2), 2), ((2,) * 5, 2), ((2,) * 4, 3)])
def test_levenberg_marquardt_pure_target(dims, k):
    """From a random start, a pure target's marginals are matched to the tolerance."""
    D = int(np.prod(dims))
    p, mp, _, _ = _maps(dims, k, 1, state_rank=1, seed=3)
    gen = torch.Generator().manual_seed(4)
    v0 = torch.randn((1, D, 1), dtype=torch.complex128, generator=gen) / D ** 0.5
    v, done, iters, _ = levenberg_marquardt(mp, v0, tol=1e-10, maxiter=200, max_rank=D,
                                            th=THRESHOLDS)
    assert bool(done.all()) and int(iters[0]) < 60
    rho = (v[0] @ v[0].mH).numpy()
    rho /= np.trace(rho).real
    assert np.max(p.marginal_deviation(rho)) <= 1e-9


def test_levenberg_marquardt_grows_the_rank():
    """Started at rank 1 on a rank-2 point (N6k3), the rank is grown and the solve finishes."""
    p, mp, _, _ = _maps((2,) * 6, 3, 1, state_rank=2, seed=5)
    gen = torch.Generator().manual_seed(6)
    v0 = torch.randn((1, 64, 1), dtype=torch.complex128, generator=gen) / 8
    v, done, _, log = levenberg_marquardt(mp, v0, tol=1e-10, maxiter=300, max_rank=64,
                                          th=THRESHOLDS)
    assert bool(done.all())
    assert v.shape[-1] >= 2 and log and log[0].startswith("+1@")
    rho = (v[0] @ v[0].mH).numpy()
    rho /= np.trace(rho).real
    assert np.max(p.marginal_deviation(rho)) <= 1e-9


def _handover_start(problem, settings=None):
    """The solver's output and the first (maps, columns, options) it hands to
    Levenberg-Marquardt."""
    import qmarginal.solvers.exact._driver as driver

    seen = []

    def record(mp, v, **kw):
        seen.append((mp, v.clone(), kw))
        return levenberg_marquardt(mp, v, **kw)

    original = driver.levenberg_marquardt
    driver.levenberg_marquardt = record
    try:
        out = solve(problem, settings)
    finally:
        driver.levenberg_marquardt = original
    return out, seen[0]


def _certified(problem, state):
    assert qm.state_report(state).valid
    assert np.max(problem.marginal_deviation(state)) <= 1e-9


def test_patience_freezes_slow_elements_and_spares_steady_ones():
    """A rank-2 three-qubit target (k = 2) whose handover start (without the random component
    of the starting columns) converges only linearly (about 0.76 per iteration at rank 3;
    formerly a failure, then a 23 s convex crawl): with a budget the geometric rate cannot meet,
    the element is frozen at `patience` iterations and left not done; with the solver's budget
    it finishes, and so does the solver."""
    th = replace(THRESHOLDS, start_noise=0.0, direct_negative_mass=float("inf"))
    p = MarginalProblem.from_state(rank_mixture_state(8, 2, seed=16840), k=2)
    out, (mp, v0, kw) = _handover_start(p, ExactSettings(thresholds=th))
    assert bool(out.converged)
    _certified(p, out.state)
    patience = THRESHOLDS.handover_newton_iterations
    assert kw["patience"] == patience
    opts = dict(tol=1e-10, max_rank=kw["max_rank"], th=THRESHOLDS, patience=patience)
    _, done, iters, _ = levenberg_marquardt(mp, v0, maxiter=50, **opts)
    assert not bool(done[0]) and int(iters[0]) == patience
    v, done, iters, _ = levenberg_marquardt(mp, v0, maxiter=400, **opts)
    assert bool(done[0]) and patience < int(iters[0]) < 400
    _, done, iters, _ = levenberg_marquardt(mp, v0, tol=1e-10, maxiter=50,
                                            max_rank=kw["max_rank"], th=THRESHOLDS)
    assert not bool(done[0]) and int(iters[0]) == 50  # no patience: runs to maxiter


@pytest.mark.parametrize("dims, subsets, seed", [
    # a rank-deficient marginal: the factored path from the start
    ((2, 2, 3, 2), [(0, 1, 3), (1, 2, 3), (1, 3), (2,)], 847405473),
    # all pairs of a qutrit and two qubits: the MIO of 1/D is strongly indefinite
    ((3, 2, 2), [(0, 1), (1, 2), (0, 2)], 979057343),
])
def test_lower_rank_probe_finishes_a_vanishing_column(dims, subsets, seed):
    """Rank-3 qudit targets where Levenberg-Marquardt stalls at rank 3, grows to 4 and then
    heads for a rank-3 state, the fourth column vanishing slowly (formerly 5,000-10,000
    iterations and a failure). The lower-rank probe finishes them from the truncated SVD:
    Levenberg-Marquardt alone, from the solver's start, ends at a rank-3 state. (The factored
    path is forced: the plan may send a rank-deficient marginal to the face step first.)"""
    D = int(np.prod(dims))
    p = MarginalProblem.from_state(rank_mixture_state(D, 3, seed=seed), dims=dims,
                                   subsets=subsets)
    out, (mp, v0, kw) = _handover_start(p, ExactSettings(path="factored"))
    assert bool(out.converged)
    _certified(p, out.state)
    v, done, _, log = levenberg_marquardt(mp, v0, **kw)
    assert bool(done.all()) and log and log[0].startswith("+1@")  # it grew, then came back
    y = (v[0] @ v[0].mH).numpy()
    rho = y / np.trace(y).real
    _certified(p, rho)
    # the finished state has rank 3 (the padded column is zero)
    w = np.linalg.eigvalsh(out.state)
    assert w[-4] <= 1e-12 < w[-3]


def test_lower_rank_probe_in_a_batch():
    """The probe acts per element: a batch mixing the stalling target above with targets that
    converge at the rank bound is solved element by element, each to the tolerance (the factored
    path forced, as above)."""
    dims, subsets = (2, 2, 3, 2), [(0, 1, 3), (1, 2, 3), (1, 3), (2,)]
    rhos = np.stack([rank_mixture_state(24, 3, seed=s) for s in (847405473, 1, 2, 3)])
    p = MarginalProblem.from_state(rhos, dims=dims, subsets=subsets)
    out = solve(p, ExactSettings(path="factored"))
    assert np.all(out.converged) and list(out.info["rank"]) == [3, 3, 3, 3]  # lowest ranks
    for b in range(4):
        pb = MarginalProblem.from_state(rhos[b], dims=dims, subsets=subsets)
        assert np.max(pb.marginal_deviation(out.state[b])) <= 1e-9
        assert qm.state_report(out.state[b]).valid


def test_uncovered_site_does_not_trap_the_factored_start():
    """Site 0 is in no subset, so the MIO of 1/D is 1/2 (x) (...) and its leading eigenvectors
    come in degenerate pairs: started exactly there, V V^dagger stays 1 (x) (rank one) and
    Levenberg-Marquardt stalled and grew to L-BFGS (formerly 10,000 iterations, a failure). The
    random component of the starting columns breaks the symmetry: solved at the rank bound."""
    dims, subsets = (2, 3, 3, 2, 3), [(1, 2, 3), (1, 3, 4), (3, 4)]
    p = MarginalProblem.from_state(rank_mixture_state(108, 2, seed=503943302), dims=dims,
                                   subsets=subsets)
    rec = reconstruct(p)
    assert rec.report.certified and rec.report.info["rank"] == 2
    _certified(p, rec.state)


def test_mid_rank_target_leaves_the_factored_attempt():
    """A rank-18 target on a qubit-qutrit system (all 3-body marginals, D = 72, a strongly
    indefinite MIO of 1/D): the direct factored attempt grows to rank 8, where D r outgrows
    Levenberg-Marquardt; the L-BFGS continuation is capped at that rank and gives up once off
    track (formerly it grew further and ran 330 iterations to the handover cap, 2 s), and a
    later step finishes. The time this saves is measured by benchmarks/sweep_exact.py."""
    dims = (2, 3, 3, 2, 2)
    p = MarginalProblem.from_state(rank_mixture_state(72, 18, seed=246163659), dims=dims, k=3)
    rec = reconstruct(p)
    assert rec.report.certified
    _certified(p, rec.state)


def test_rank_deficient_marginal_containing_all_others_is_solved_by_the_mio():
    """(0,) within (0, 1, 2) and site 3 free: the MIO of 1/D is sigma_012 (x) 1/2, a state,
    though sigma_012 is rank-deficient (formerly 5,000 factored iterations, 17 s)."""
    dims, subsets = (3, 3, 3, 2), [(0,), (0, 1, 2)]
    p = MarginalProblem.from_state(rank_mixture_state(54, 13, seed=470766590), dims=dims,
                                   subsets=subsets)
    out = solve(p)
    assert bool(out.converged) and out.info["plan"] == "none"  # the MIO is the answer
    want = np.kron(p.marginals[(0, 1, 2)], np.eye(2) / 2)
    assert np.allclose(out.state, want, atol=1e-12)


# ----------------------------------------------------------------------------- Moebius projection
@pytest.mark.parametrize("dims, subsets", [
    ((2,) * 5, 2),
    ((2,) * 6, 3),
    ((2,) * 6, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (0, 5)]),  # a ring: empty intersections
    ((2,) * 6, [(0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
                (0, 1), (2, 3), (4, 5)]),  # nested and mixed sizes
])
def test_mobius_projection_is_impose(dims, subsets, rng):
    D = int(np.prod(dims))
    rho = qm.hilbert_schmidt_state(D, seed=7)
    p = (MarginalProblem.from_state(rho, k=subsets, dims=dims) if isinstance(subsets, int)
         else MarginalProblem.from_state(rho, subsets=subsets, dims=dims))
    _, subs, sigmas = _flat_problem(p, torch, "cpu")
    clear_cache()
    mp = MarginalMaps(dims, subs, sigmas, torch)
    x = rng.standard_normal((D, D)) + 1j * rng.standard_normal((D, D))
    xt = torch.as_tensor(x)[None]
    # a first projection composes the Q_J (the Moebius form is built on first use of tangent)
    assert not mp._structure.mobius_built
    assert np.allclose(mp.project(xt)[0].numpy(), qm.impose(x, p), atol=tol_for(x))
    zero = {J: 0 * s for J, s in p.marginals.items()}
    assert np.allclose(mp.tangent(xt)[0].numpy(), qm.impose(x, zero, dims), atol=tol_for(x))
    assert mp._structure.mobius  # the Moebius form is the one under test
    assert np.allclose(mp.project(xt)[0].numpy(), qm.impose(x, p), atol=tol_for(x))


def test_structure_cache_keeps_marginals_apart(rng):
    """Two problems with one structure share the index tensors, not the marginals."""
    ps = [MarginalProblem.from_state(rank_mixture_state(32, 3, seed=s), k=2) for s in (1, 2)]
    maps = []
    for p in ps:
        _, subs, sigmas = _flat_problem(p, torch, "cpu")
        maps.append(MarginalMaps(p.dims, subs, sigmas, torch))
    key = (ps[0].dims, tuple(ps[0].marginals), "cpu")
    assert structure(*key) is structure(*key)
    x = rng.standard_normal((32, 32)) + 0j
    for p, mp in zip(ps, maps):
        assert np.allclose(mp.project(torch.as_tensor(x)[None])[0].numpy(), qm.impose(x, p),
                           atol=1e-12)


# ----------------------------------------------------------------------------- through the solver
@pytest.mark.parametrize("max_size", [0, 512])
def test_low_rank_with_and_without_levenberg_marquardt(max_size):
    """N6k3, rank 2: Levenberg-Marquardt (default) or L-BFGS only (max_size=0) both certify."""
    p = MarginalProblem.from_state(rank_mixture_state(64, 2, seed=8), k=3)
    th = replace(THRESHOLDS, gauss_newton_max_size=max_size)
    rec = reconstruct(p, thresholds=th)
    assert rec.report.certified and rec.report.info["rank"] == 2
    _certified(p, rec.state)
