"""method="sdp": the CVXPY baseline (Eq. (2)), both formulations, structure reuse, x0, and the
polishing that makes it a certifying method (an SDP solver's answer meets its own tolerance,
not the certification's)."""

import numpy as np
import pytest

import qmarginal as qm
from qmarginal.errors import IncompatibleMarginalsError, MarginalError, NotCertifiedError

cp = pytest.importorskip("cvxpy")
sdp = pytest.importorskip("qmarginal.solvers.sdp")

#: the SDP's own accuracy at eps=1e-8 (first-order solver: marginals and eigenvalues to ~1e-7)
SDP_TOL = 1e-6


def _problem(n, k, rank, seed, dims=2):
    d = dims if isinstance(dims, int) else None
    D = d ** n if d else int(np.prod(dims))
    rho = qm.rank_mixture_state(D, rank, seed=seed)
    return rho, qm.MarginalProblem.from_state(rho, k=k, dims=dims if d is None else d)


def test_marginal_map_matches_partial_trace():
    dims = (2, 3, 2)
    rho = qm.hilbert_schmidt_state(12, seed=1)
    subsets = [(0, 1), (1, 2), (0, 2), (1,), (0, 1, 2)]
    A = sdp.marginal_map(dims, subsets)
    b = sdp.marginal_vector([qm.partial_trace(rho, J, dims) for J in subsets])
    v = sdp.vectorize(rho)
    assert v.shape == (144,)
    np.testing.assert_allclose(A @ v, b, atol=1e-14)
    np.testing.assert_allclose(sdp.devectorize(v, 12), rho, atol=1e-15)
    P = sdp._embedding_map(12)
    R = (P @ v).reshape(24, 24)
    np.testing.assert_allclose(R, np.block([[rho.real, -rho.imag], [rho.imag, rho.real]]), atol=1e-15)


@pytest.mark.parametrize("form", ["sparse", "paper"])
@pytest.mark.parametrize("n,k,rank", [(3, 2, 2), (3, 1, 8), (4, 3, 3), (4, 2, 16)])
def test_sdp_agrees_within_its_tolerance(form, n, k, rank):
    rho, p = _problem(n, k, rank, seed=10 * n + rank)
    res = qm.reconstruct(p, "sdp", form=form, eps=1e-8, maxiter=20000)
    r = res.report
    assert r.info["status"] == "optimal" and r.certified
    # the SDP solver's own answer, before polishing, within its own tolerance
    assert r.info["sdp_marginal_deviation"] <= SDP_TOL
    assert r.info["sdp_min_eigenvalue"] >= -SDP_TOL
    assert r.max_marginal_deviation <= 1e-9 and r.min_eigenvalue >= -1e-10
    assert r.mean_marginal_fidelity >= 1 - SDP_TOL
    assert r.iterations > 0 and r.info["solve_time_s"] > 0
    assert r.settings["eps"] == 1e-8 and r.settings["maxiter"] == 20000


def test_unpolished_answer_is_never_called_certified():
    """SCS at its default accuracy: lambda_min around -1e-5 and marginals off by ~1e-5 (it used
    to come back with converged=True). Without polishing it is "not certified", carrying the
    SDP solver's answer; with polishing (the default) it is a certified state."""
    _, p = _problem(4, 3, 2, seed=7)
    with pytest.raises(NotCertifiedError) as info:
        qm.reconstruct(p, "sdp", polish=False, check=False)
    best = info.value.reconstruction
    assert not best.report.certified and best.report.max_marginal_deviation <= 1e-2
    assert "polish=False" in info.value.reason
    rec = qm.reconstruct(p, "sdp")
    assert rec.report.certified and rec.report.info["polish"].startswith("exact solver")


def test_old_option_names_still_work():
    _, p = _problem(3, 2, 2, seed=1)
    with pytest.warns(DeprecationWarning, match="max_iters.*maxiter"):
        r = qm.reconstruct(p, "sdp", eps=1e-8, max_iters=5000).report
    assert r.settings["maxiter"] == 5000 and r.certified


def test_qutrits():
    _, p = _problem(3, 2, 9, seed=4, dims=(3, 3, 3))
    r = qm.reconstruct(p, "sdp", eps=1e-8).report
    assert r.certified and r.info["sdp_marginal_deviation"] <= SDP_TOL


def test_clarabel():
    _, p = _problem(3, 2, 2, seed=4)
    r = qm.reconstruct(p, "sdp", solver="CLARABEL", eps=1e-9).report
    assert r.certified and r.info["sdp_marginal_deviation"] <= SDP_TOL
    assert r.info["solver"] == "CLARABEL"


def test_structure_is_built_once_and_reused():
    sdp.clear_cache()
    _, p1 = _problem(3, 2, 2, seed=1)
    _, p2 = _problem(3, 2, 5, seed=2)
    r1 = qm.reconstruct(p1, "sdp", eps=1e-8).report
    r2 = qm.reconstruct(p2, "sdp", eps=1e-8).report
    assert not r1.info["reused_problem"] and r2.info["reused_problem"]
    assert r2.info["build_time_s"] == 0.0
    assert r2.info["sdp_marginal_deviation"] <= SDP_TOL  # the parameters were really updated
    # another form or solver is another structure
    r3 = qm.reconstruct(p2, "sdp", form="paper", eps=1e-8).report
    assert not r3.info["reused_problem"]


def test_batch_is_solved_element_by_element():
    rho = qm.rank_mixture_state(8, 8, batch=(2,), seed=5)
    p = qm.MarginalProblem.from_state(rho, k=2)
    res = qm.reconstruct(p, "sdp", eps=1e-8)
    assert res.state.shape == (2, 8, 8)
    assert np.all(res.report.certified) and res.report.certified.shape == (2,)
    assert res.report.iterations.shape == (2,)


def test_x0_and_warm_start():
    rho, p = _problem(4, 3, 2, seed=7)
    cold = qm.reconstruct(p, "sdp", eps=1e-8).report
    warm = qm.reconstruct(p, "sdp", eps=1e-8, x0=rho).report
    assert warm.certified and cold.certified
    assert warm.iterations <= cold.iterations
    again = qm.reconstruct(p, "sdp", eps=1e-8, warm_start=True).report
    assert again.certified
    with pytest.raises(MarginalError, match="x0"):
        qm.reconstruct(p, "sdp", form="paper", x0=rho)


def test_torch_in_torch_out():
    torch = pytest.importorskip("torch")
    _, p = _problem(3, 2, 4, seed=3)
    res = qm.reconstruct(p.to_torch(), "sdp", eps=1e-8)
    assert isinstance(res.state, torch.Tensor)


def test_bad_options():
    _, p = _problem(3, 2, 2, seed=1)
    with pytest.raises(MarginalError, match="form"):
        qm.reconstruct(p, "sdp", form="dense")
    with pytest.raises(MarginalError, match="solver"):
        qm.reconstruct(p, "sdp", solver="GUROBI")


def test_infeasible_marginals_raise_with_certificate():
    bell = np.zeros((4, 4), complex)
    bell[0, 0] = bell[0, 3] = bell[3, 0] = bell[3, 3] = 0.5
    p = qm.MarginalProblem({(0, 1): bell, (1, 2): bell})
    with pytest.raises(IncompatibleMarginalsError) as info:
        qm.reconstruct(p, "sdp", eps=1e-8)
    assert info.value.result is not None and info.value.result.status == "incompatible"


def test_independent_rows_keep_the_rank():
    _, p = _problem(4, 2, 16, seed=1)
    A = sdp.marginal_map(p.dims, p.subsets)
    rows = sdp.independent_rows(A)
    # identity + 4 * 3 one-body + 6 * 9 two-body Pauli components
    assert len(rows) == 1 + 4 * 3 + 6 * 9
    assert np.linalg.matrix_rank(A[rows].toarray()) == len(rows)


@pytest.mark.slow
def test_clarabel_n5k2_pure():
    _, p = _problem(5, 2, 1, seed=1)
    r = qm.reconstruct(p, "sdp", solver="CLARABEL").report
    assert r.info["status"] == "optimal" and r.certified
