"""method="exact": certified states on random feasible problems, and the plan function.

Every solve goes through ``reconstruct`` (which certifies) and is checked again independently
of both the solver and the certification: the paper's validity test through
``qmarginal.state_report`` (lambda_min >= -1e-10 after normalising) and the marginal deviation
through ``problem.marginal_deviation`` (one ``partial_trace`` per marginal, <= 1e-9). The
routing is tested through :func:`qmarginal.solvers.exact.plan` (features in, steps out), not
through path strings or iteration counts.
"""

import numpy as np
import pytest

import qmarginal as qm
from qmarginal import MarginalError, MarginalProblem, rank_mixture_state
from qmarginal.reconstruct import reconstruct
from qmarginal.solvers.exact import THRESHOLDS, ExactSettings, Features, plan, solve

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


def certified(problem, **options):
    """reconstruct(problem, "exact"), asserted certified and checked independently."""
    rec = reconstruct(problem, "exact", **options)
    assert np.all(rec.report.certified), rec.report.verdict
    _check(problem, rec.state)
    return rec


def _ranks(dim):
    return sorted({1, 2, dim // 2, dim})


def _cases(ns):
    return [(n, k, r) for n in ns for k in range(1, n) for r in _ranks(2 ** n)]


# ----------------------------------------------------------------------------- the index maps
def test_maps_agree_with_the_core(rng):
    from qmarginal.solvers.exact._maps import MarginalMaps

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
    certified(p)


@pytest.mark.slow
@pytest.mark.parametrize("n, k, rank", _SLOW)
def test_random_feasible_qubits_slow(n, k, rank):
    rho = rank_mixture_state(2 ** n, rank, seed=100 * n + 10 * k + rank)
    p = MarginalProblem.from_state(rho, k=k)
    certified(p)


@pytest.mark.parametrize("k, rank", [(4, 1), (6, 1), (6, 2)])
def test_random_feasible_seven_qubits_quick(k, rank):
    rho = rank_mixture_state(128, rank, seed=7 + k + rank)
    p = MarginalProblem.from_state(rho, k=k)
    certified(p)


@pytest.mark.parametrize("rank", [1, 2, 13, 27])
def test_qutrits(rank):
    rho = rank_mixture_state(27, rank, seed=rank)
    p = MarginalProblem.from_state(rho, k=2, dims=(3, 3, 3))
    certified(p)


@pytest.mark.parametrize("rank", [1, 2, 32, 64])
def test_ring_of_pairs(rank):
    n = 6
    ring = [tuple(sorted((i, (i + 1) % n))) for i in range(n)]
    rho = rank_mixture_state(2 ** n, rank, seed=40 + rank)
    p = MarginalProblem.from_state(rho, subsets=ring)
    certified(p)


def test_mixed_subset_sizes():
    subsets = [(0, 1, 2), (2, 3), (3, 4), (0, 4)]
    rho = rank_mixture_state(32, 2, seed=5)
    p = MarginalProblem.from_state(rho, subsets=subsets)
    certified(p)


# ----------------------------------------------------------------------------- the plan
def _features(**kw):
    base = dict(dim=32, n_subsets=10, rank_bound=1, deficient=False, negative_mass=0.0,
                mio_is_state=False)
    base.update(kw)
    return Features(**base)


def _kinds(f, **settings):
    return [s.kind for s in plan(f, ExactSettings(**settings), THRESHOLDS)]


def test_plan_mio_state_needs_no_step():
    assert plan(_features(mio_is_state=True), ExactSettings(), THRESHOLDS) == ()


def test_plan_rank_deficient_starts_factored_and_ends_convex():
    steps = plan(_features(deficient=True, rank_bound=2), ExactSettings(), THRESHOLDS)
    assert [s.kind for s in steps] == ["factored", "restarts", "factored", "convex"]
    short, restarts, full = steps[:3]
    assert short.tentative and short.rank == 2
    assert short.max_rank == 2 + THRESHOLDS.handover_growth
    top = min(2 + THRESHOLDS.restart_extra_ranks, THRESHOLDS.restart_max_size_deficient // 32)
    assert restarts.rank == 2 and restarts.max_rank == top
    assert not full.tentative and full.rank == 2 and full.max_rank == 32
    assert steps[-1].patience is None  # the last resort runs without patience
    # beyond Levenberg-Marquardt's size: the full factored step alone, then convex
    big = _features(dim=4096, deficient=True, rank_bound=2)
    assert [s.kind for s in plan(big, ExactSettings(), THRESHOLDS)] == ["factored", "convex"]


def test_plan_strongly_indefinite_mio_starts_factored_tentatively():
    steps = plan(_features(negative_mass=THRESHOLDS.direct_negative_mass), ExactSettings(),
                 THRESHOLDS)
    assert [s.kind for s in steps] == ["factored", "convex", "restarts", "convex"]
    assert steps[0].tentative
    assert steps[0].max_rank == 1 + THRESHOLDS.handover_growth
    assert steps[0].maxiter == THRESHOLDS.handover_maxiter
    # the convex attempt before the restarts has patience; the last one has none
    assert steps[1].patience == THRESHOLDS.convex_patience and steps[-1].patience is None


def test_plan_restarts_only_where_cheap():
    th = THRESHOLDS
    small = _features(dim=16, rank_bound=2, negative_mass=1.0)
    kinds = _kinds(small)
    assert kinds == ["factored", "convex", "restarts", "convex"]
    # D r above restart_max_size (but Levenberg-Marquardt still fits): no restarts
    mid = _features(dim=th.restart_max_size, rank_bound=2, negative_mass=1.0)
    assert _kinds(mid) == ["factored", "convex"]


def test_plan_mildly_indefinite_mio_tries_convex_first():
    steps = plan(_features(negative_mass=0.01), ExactSettings(), THRESHOLDS)
    assert [s.kind for s in steps] == ["convex", "factored", "convex", "restarts", "convex"]
    assert steps[0].patience == THRESHOLDS.convex_patience_newton
    assert steps[1].tentative and steps[-1].patience is None
    assert steps[2].patience == THRESHOLDS.convex_patience


def test_plan_large_problems_skip_newton_only_steps():
    # D r beyond Levenberg-Marquardt's size: no direct start, no restarts, the longer patience
    f = _features(dim=2048, rank_bound=1, negative_mass=1.0)
    steps = plan(f, ExactSettings(), THRESHOLDS)
    assert [s.kind for s in steps] == ["convex", "factored", "convex"]
    assert steps[0].patience == THRESHOLDS.convex_patience
    assert steps[1].max_rank == 2048  # the L-BFGS factored path keeps its full rank range


def test_plan_forced_paths_and_ranks():
    f = _features(negative_mass=1.0, rank_bound=2)
    assert _kinds(f, path="convex") == ["convex"]
    steps = plan(f, ExactSettings(path="factored", rank=3, max_rank=4), THRESHOLDS)
    assert [s.kind for s in steps] == ["factored", "restarts"]
    assert steps[0].rank == 3 and steps[0].max_rank == 4
    assert steps[1].max_rank == min(4, THRESHOLDS.restart_max_size // 32)
    no_restarts = ExactSettings(thresholds=__import__("dataclasses").replace(
        THRESHOLDS, gauss_newton_max_size=0))
    assert "restarts" not in [s.kind for s in plan(f, no_restarts, no_restarts.thresholds)]


# ----------------------------------------------------------------------------- restarts
@pytest.mark.parametrize("seed", [60, 72, 120, 250])
def test_spurious_local_minima_are_escaped(seed):
    """3-qubit rank-2 targets whose first factored attempt met a spurious local minimum at
    rank 2 (formerly a false "incompatible" for 60, 120, 250 and deviation 4.5e-6 reported
    valid for 72): the restarts find the state."""
    p = MarginalProblem.from_state(rank_mixture_state(8, rank=2, seed=seed), k=2)
    rec = certified(p)
    assert rec.report.info["rank"] <= 2


# ----------------------------------------------------------------------------- paths and options
def test_pure_target_found_at_rank_one():
    pure = MarginalProblem.from_state(rank_mixture_state(16, 1, seed=1), k=3)
    rec = certified(pure)
    assert rec.report.info["rank"] == 1
    assert np.linalg.matrix_rank(rec.state, tol=1e-6) == 1


@pytest.mark.parametrize("path", ["convex", "factored"])
def test_forced_path(path):
    rho = rank_mixture_state(16, 8, seed=2)
    p = MarginalProblem.from_state(rho, k=3)
    rec = certified(p, path=path)
    assert rec.report.info["plan"].split(" > ")[0].startswith(path)


def test_warm_start():
    rho = rank_mixture_state(32, 1, seed=9)
    p = MarginalProblem.from_state(rho, k=2)
    exact = certified(p, x0=rho)
    assert exact.report.info["plan"] == "none"  # the MIO of the exact answer is a state
    noisy = rho + 1e-3 * qm.hilbert_schmidt_state(32, seed=1)
    rec = certified(p, x0=noisy)
    assert rec.report.info["seed"] == "given"
    with pytest.raises(MarginalError, match="warm start"):
        reconstruct(p, x0=np.eye(8))


def test_batch():
    ranks = [1, 2, 16, 32]
    rhos = np.stack([rank_mixture_state(32, r, seed=20 + r) for r in ranks])
    p = MarginalProblem.from_state(rhos, k=2)
    assert p.batch_shape == (4,)
    rec = certified(p)
    assert rec.state.shape == (4, 32, 32) and rec.report.certified.shape == (4,)
    assert rec.report.info["plan"][-1] == "none" and rec.report.info["rank"][0] == 1


def test_torch_in_torch_out():
    rho = rank_mixture_state(16, 2, seed=4)
    p = MarginalProblem.from_state(rho, k=3).to_torch()
    rec = certified(p)
    assert torch.is_tensor(rec.state) and rec.state.dtype == torch.complex128
    assert rec.state.device == next(iter(p.marginals.values())).device


def test_numpy_in_numpy_out():
    p = MarginalProblem.from_state(rank_mixture_state(8, 2, seed=4), k=2)
    rec = certified(p)
    assert isinstance(rec.state, np.ndarray) and rec.state.dtype == np.complex128
    out = solve(p)  # the solver alone: numpy in, numpy out too
    assert isinstance(out.state, np.ndarray) and out.converged


def test_reconstruct_default_is_exact():
    p = MarginalProblem.from_state(rank_mixture_state(16, 1, seed=11), k=2)
    rec = reconstruct(p)
    assert rec.report.method == "exact"
    assert rec.report.valid and rec.report.max_marginal_deviation <= DEV_TOL
    assert rec.report.tolerances["eig_tol"] == 1e-10
    assert rec.report.tolerances["marginal_tol"] == 1e-9


def test_settings_and_options():
    p = MarginalProblem.from_state(rank_mixture_state(8, 1, seed=1), k=2)
    with pytest.raises(MarginalError, match="unknown option.*valid options: eig_tol"):
        reconstruct(p, bogus=1)
    with pytest.raises(MarginalError, match="path"):
        ExactSettings(path="newton")
    with pytest.raises(MarginalError, match="maxiter"):
        reconstruct(p, maxiter=0)
    rec = reconstruct(p, settings=ExactSettings(marginal_tol=1e-6, eig_tol=1e-6))
    assert rec.report.tolerances["marginal_tol"] == 1e-6 and rec.report.certified


def test_maxiter_reports_honestly():
    # a unique low-rank point cannot be reached in one iteration: not certified, and said so
    p = MarginalProblem.from_state(rank_mixture_state(64, 2, seed=3), k=3)
    with pytest.raises(qm.NotCertifiedError) as info:
        reconstruct(p, maxiter=1, check=False)
    assert not info.value.reconstruction.report.certified
    out = solve(p, ExactSettings(maxiter=1))
    assert not out.converged and out.reason


# ----------------------------------------------------------------------------- sweep failures
# found by a 6,000-instance survey of random compatible problems (the code before the plan
# function): rank-deficient qutrit marginals where the L-BFGS factored path grew and trimmed a
# column in a loop until maxiter (12-60 s, then a failure), and a small target whose first
# factored attempt met a spurious minimum
@pytest.mark.parametrize("dims, k, subsets, rank, seed", [
    ((3, 3, 3, 2), 3, None, 13, 3),
    ((3, 3, 3, 2), None, [(1,), (1, 2), (0, 1, 2), (1, 2, 3)], 13, 1435594833),
    ((3, 3, 2, 3, 3), None, [(0, 2), (0, 1, 3, 4)], 3, 1957260428),
    ((2, 3, 2), None, [(0,), (1,), (0, 2), (1, 2)], 2, 357504912),
    pytest.param((3, 3, 3, 3, 3), None, [(4,), (1, 3), (0, 2, 3, 4)], 3, 1349014100,
                 marks=pytest.mark.slow),  # ~20 s: Levenberg-Marquardt at D r = 972
])
def test_survey_failures(dims, k, subsets, rank, seed):
    D = int(np.prod(dims))
    p = MarginalProblem.from_state(rank_mixture_state(D, rank, seed=seed), dims=dims, k=k,
                                   subsets=subsets)
    certified(p, check=False)  # by the solver itself, not rescued by the compatibility check


def test_single_precision_rounding_does_not_inflate_the_rank_bound():
    """Rounded to complex64, the zero eigenvalues of a rank-2 target's marginals become ~1e-8;
    counted at a relative 1e-9 they made the rank bound 13 (and the solve loop for a minute)."""
    rho = rank_mixture_state(243, 2, seed=905456881)
    p = MarginalProblem.from_state(rho, dims=(3,) * 5, subsets=[(2, 4), (0, 1, 4), (0, 1, 3, 4)])
    single = MarginalProblem({J: s.astype(np.complex64) for J, s in p.marginals.items()}, dims=3,
                             n_sites=5)
    rec = reconstruct(single, check=False)
    assert rec.report.certified and rec.report.info["rank_lower_bound"] == 2
    assert rec.state.dtype == np.complex64


def test_two_marginal_qutrit_target_needs_the_restarts():
    """A rank-2 target on 4 qutrits given by two overlapping marginals, one of rank 6 of 27:
    the factored attempts and the convex path all fail (compatibility undetermined, 49 s,
    found by the 10,000-instance sweep); restarts at D r = 162 find the state."""
    p = MarginalProblem.from_state(rank_mixture_state(81, 2, seed=438894381), dims=(3,) * 4,
                                   subsets=[(0, 1, 3), (2, 3)])
    certified(p, check=False)


# ----------------------------------------------------------------------------- the face step
def test_face_maps_against_a_dense_reference(rng):
    """face_basis spans the support every compatible state must have, and FaceMaps' projection
    is the Frobenius projection onto {Y : tr_{J^c}(Q Y Q^dagger) = sigma_J} (checked with an
    explicit Kronecker-built least-squares solve)."""
    from qmarginal.solvers.exact._face import FaceMaps, face_basis

    from reference import ref_partial_trace

    dims, subsets = (3, 3, 2), [(0, 1), (1, 2)]  # sigma_01: rank 4 of 9
    rho = rank_mixture_state(18, 2, seed=3)
    p = MarginalProblem.from_state(rho, subsets=subsets, dims=dims)
    sig = {J: np.asarray(s) for J, s in p.marginals.items()}
    Q = face_basis(dims, sig, 1e-9)
    assert Q.shape[1] < 18 and np.allclose(Q.conj().T @ Q, np.eye(Q.shape[1]), atol=1e-12)
    assert np.allclose(Q @ (Q.conj().T @ rho) @ Q @ Q.conj().T, rho, atol=1e-12)  # rho in S
    fm = FaceMaps(Q, dims, sig, torch)
    Dp = Q.shape[1]
    Y = rng.standard_normal((Dp, Dp)) + 1j * rng.standard_normal((Dp, Dp))
    Y = Y + Y.conj().T
    got = fm.project(torch.as_tensor(Y)[None])[0].numpy()
    # reference: the same linear map from explicit partial traces, least-norm correction
    cols = []
    for a in range(Dp):
        for b in range(Dp):
            E = np.outer(Q[:, a], Q[:, b].conj())
            cols.append(np.concatenate([ref_partial_trace(E, list(J), list(dims)).ravel()
                                        for J in subsets]))
    L = np.array(cols).T
    s = np.concatenate([sig[J].ravel() for J in subsets])
    want = Y.ravel() - np.linalg.pinv(L) @ (L @ Y.ravel() - s)
    assert np.allclose(got.ravel(), want, atol=1e-10)
    assert float(fm.deviation(torch.as_tensor(got)[None])[0]) < 1e-12
    lifted = fm.lift(torch.as_tensor(got)[None])[0].numpy()
    assert np.max(p.marginal_deviation(lifted)) < 1e-12


def test_face_factored_against_explicit_partial_traces():
    """face_factored returns a PSD, trace-1 Y on the face whose lift has the given marginals,
    checked with explicit partial traces of Q Y Q^dagger (a reference independent of FaceMaps);
    started from the maximally mixed Y, it also works without a convex iterate."""
    from qmarginal.solvers.exact._face import FaceMaps, face_basis, face_factored

    from reference import ref_partial_trace

    dims, subsets = (3, 3, 2), [(0, 1), (1, 2)]
    p = MarginalProblem.from_state(rank_mixture_state(18, 2, seed=5), subsets=subsets,
                                   dims=dims)
    sig = {J: np.asarray(s) for J, s in p.marginals.items()}
    Q = face_basis(dims, sig, 1e-9)
    fm = FaceMaps(Q, dims, sig, torch)
    Dp = Q.shape[1]
    Y, done, its, rank = face_factored(fm, np.eye(Dp) / Dp, 1, 1e-11, 500, seed=0)
    assert done and 1 <= rank <= Dp and its > 0
    assert np.allclose(Y, Y.conj().T, atol=1e-14) and abs(np.trace(Y) - 1) < 1e-12
    assert np.linalg.eigvalsh(Y).min() > -1e-12  # V V^dagger: PSD by construction
    rho = Q @ Y @ Q.conj().T
    for J in subsets:
        assert np.max(np.abs(ref_partial_trace(rho, list(J), list(dims)) - sig[J])) < 1e-10


@pytest.mark.parametrize("dims, subsets, rank, seed", [
    ((3, 3, 2, 3, 3), [(0, 2), (0, 1, 3, 4)], 3, 1957260428),
    ((3, 3, 3, 3, 3), [(4,), (1, 3), (0, 2, 3, 4)], 3, 1349014100),
    # the face (D' = 27) holds only low-rank compatible states: the convex step stalls there
    # and Levenberg-Marquardt on Y = V V^dagger in the face finishes (sweep instance 7,599:
    # formerly 233 s, not certified)
    ((3, 3, 3, 3, 3), [(0, 1, 2, 3), (0, 4)], 3, 982243427),
])
def test_face_step_certifies_few_marginal_qutrit_targets(dims, subsets, rank, seed):
    """Two or three marginals, one of rank 6-9 of 81: every compatible state lives on a face
    of dimension 12-27 of D = 162-243, where the compatible set has interior points. Formerly
    failures or 20 s; the face step certifies them directly."""
    D = int(np.prod(dims))
    p = MarginalProblem.from_state(rank_mixture_state(D, rank, seed=seed), dims=dims,
                                   subsets=subsets)
    rec = certified(p, check=False)
    assert rec.report.info["plan"].startswith("face")
    assert rec.report.info["path"] == "face"  # the plan's first step finished it


def test_plan_face_first_when_the_face_is_small():
    f = _features(deficient=True, rank_bound=2, support_bound=20, face_entries=1000)
    assert _kinds(f)[0] == "face"
    assert _kinds(_features(deficient=True, rank_bound=2, support_bound=64,
                            face_entries=1000))[0] == "factored"
    assert _kinds(_features(deficient=True, rank_bound=2, support_bound=20,
                            face_entries=1 << 30))[0] == "factored"
