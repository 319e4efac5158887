"""check_compatibility: decisions, certificates re-checked independently, least squares."""

import numpy as np
import pytest

import qmarginal as qm
import qmarginal.compatibility
import qmarginal.examples
from qmarginal.errors import IncompatibleMarginalsError, MarginalError

from reference import ref_embed

BELL = np.zeros((4, 4), complex)
BELL[0, 0] = BELL[0, 3] = BELL[3, 0] = BELL[3, 3] = 0.5


def independent_check(problem, certificate):
    """Rebuild W = sum_J w_J (x) 1 with explicit Kronecker products and test the inequality."""
    dims = list(problem.dims)
    W = sum(ref_embed(certificate.w[J], list(J), dims, normalize=False) for J in problem.marginals)
    W = 0.5 * (W + W.conj().T)
    lam = np.linalg.eigvalsh(W)[0]
    energy = sum(np.trace(certificate.w[J] @ s).real for J, s in problem.marginals.items())
    assert energy < lam - 1e-9, (energy, lam)
    assert abs(lam - certificate.lambda_min) < 1e-10
    assert abs(energy - certificate.energy) < 1e-10
    return lam, energy


@pytest.mark.parametrize("name,table", [
    ("three pairs all Bell", {(0, 1): BELL, (0, 2): BELL, (1, 2): BELL}),
    ("AB and BC both Bell (monogamy)", {(0, 1): BELL, (1, 2): BELL}),
])
def test_known_incompatible_sets(name, table):
    p = qm.MarginalProblem(table)  # overlaps agree: both pass validation
    res = qm.check_compatibility(p)
    assert res.status == "incompatible" and not res.compatible
    c = res.certificate
    assert c.verified and c.gap > c.margin
    lam, energy = independent_check(p, c)
    # at the least-squares optimum the gap is the squared residual (KKT)
    assert abs((lam - energy) - res.residual_norm ** 2) < 1e-6
    # the nearest marginals are compatible: the returned state is valid and has them
    assert qm.state_report(res.state).valid
    for J, m in res.nearest_marginals.items():
        np.testing.assert_allclose(qm.partial_trace(res.state, J, 2), m, atol=1e-12)
    assert res.residual_norm > 0.1
    assert "INCOMPATIBLE" not in res.summary() and "verified" in res.summary()


@pytest.mark.parametrize("n,k,rank,dims", [
    (3, 2, 1, 2), (3, 2, 2, 2), (3, 2, 8, 2), (4, 3, 2, 2), (3, 2, 27, 3),
    pytest.param(3, 2, 3, 3, marks=pytest.mark.slow),
])
def test_compatible_random_problems(n, k, rank, dims):
    rho = qm.rank_mixture_state(dims ** n, rank, seed=rank + n)
    p = qm.MarginalProblem.from_state(rho, k=k, dims=dims)
    res = qm.check_compatibility(p)
    assert res.compatible and res.status == "compatible"
    assert qm.state_report(res.state).valid
    assert res.residual_norm <= 1e-8
    assert p.marginal_deviation(res.state) <= 1e-8


def test_ring_of_pairs_compatible():
    p = qm.MarginalProblem.load(qm.examples.example_path("ring6_rank4"))
    res = qm.check_compatibility(p)
    assert res.compatible


def _noisy(seed=5, scale=1e-3):
    rho = qm.rank_mixture_state(8, 2, seed=seed)
    m = qm.marginals(rho, [(0, 1), (0, 2), (1, 2)])
    rng = np.random.default_rng(seed)
    noisy = {}
    for J, s in m.items():
        E = rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))
        E = E + E.conj().T
        E -= np.trace(E) / 4 * np.eye(4)
        noisy[J] = s + scale * E
    return m, noisy


def test_noisy_marginals_rejected_by_validation_and_fixed_by_least_squares():
    true, noisy = _noisy()
    with pytest.raises(MarginalError, match="disagree on their common sites"):
        qm.MarginalProblem(noisy)
    p = qm.MarginalProblem(noisy, validate=False)
    res = qm.check_compatibility(p)
    assert res.status == "incompatible"
    independent_check(p, res.certificate)
    # the nearest compatible marginals: a valid state has them, overlaps now agree
    assert qm.state_report(res.state).valid
    near = res.nearest_problem(p)
    near.replace_tolerances(overlap=1e-9, psd=1e-9).validate()
    assert near.marginal_deviation(res.state) <= 1e-12
    # least squares: no farther from the data than the true (compatible) marginals
    dist_true = np.sqrt(sum(np.linalg.norm(true[J] - noisy[J]) ** 2 for J in noisy))
    assert res.residual_norm <= dist_true + 1e-12
    assert res.info["duality_gap"] <= 1e-4 * res.residual_norm ** 2 + 1e-14


def test_verify_certificate_rejects_a_bad_witness():
    rho = qm.hilbert_schmidt_state(8, seed=1)
    p = qm.MarginalProblem.from_state(rho, k=2)
    w = {J: np.eye(4) for J in p.marginals}  # W = 3 * 1: lambda_min = 3 = energy
    c = qm.compatibility.verify_certificate(w, p.marginals, p.dims)
    assert not c.verified


def test_reconstruct_raises_with_the_result():
    p = qm.MarginalProblem({(0, 1): BELL, (1, 2): BELL})
    with pytest.raises(IncompatibleMarginalsError, match="no state has these marginals") as info:
        qm.reconstruct(p, "maxent", maxiter=50, newton_steps=0)
    res = info.value.result
    assert isinstance(res, qm.CompatibilityResult) and res.certificate.verified


def test_reconstruct_least_squares_mode():
    _, noisy = _noisy(seed=7)
    p = qm.MarginalProblem(noisy, validate=False)
    out = qm.reconstruct(p, "sdp", least_squares=True, eps=1e-9)
    r = out.report
    assert r.info["least_squares"] is True
    assert r.info["distance_to_targets"] > 0
    assert r.certified  # against the nearest compatible marginals
    near = qm.check_compatibility(p).nearest_problem(p)
    assert near.marginal_deviation(out.state) <= 1e-8
    # compatible input: least_squares changes nothing
    rho = qm.hilbert_schmidt_state(8, seed=2)
    p2 = qm.MarginalProblem.from_state(rho, k=2)
    r2 = qm.reconstruct(p2, "maxent", least_squares=True).report
    assert r2.info["least_squares"].startswith("not needed") and r2.certified


def test_batched_problem_gives_a_list():
    rho = qm.rank_mixture_state(8, 8, batch=(2,), seed=3)
    p = qm.MarginalProblem.from_state(rho, k=2)
    out = qm.check_compatibility(p)
    assert isinstance(out, list) and len(out) == 2 and all(r.compatible for r in out)


def test_bad_input():
    with pytest.raises(MarginalError):
        qm.check_compatibility({(0, 1): BELL})
    p = qm.MarginalProblem({(0, 1): BELL})
    with pytest.raises(MarginalError, match="marginal_tol"):
        qm.check_compatibility(p, marginal_tol=0)
    with pytest.raises(MarginalError, match="unknown option.*valid options"):
        qm.check_compatibility(p, atol=1e-8)
    with pytest.warns(DeprecationWarning, match="max_iter"):
        assert qm.check_compatibility(p, max_iter=100).status == "compatible"


def test_without_the_check_incompatible_input_is_not_certified():
    p = qm.MarginalProblem({(0, 1): BELL, (1, 2): BELL})
    with pytest.raises(qm.NotCertifiedError, match="not checked"):
        qm.reconstruct(p, "exact", check=False, maxiter=200)


def test_torch_problem_is_checked_in_numpy():
    pytest.importorskip("torch")
    p = qm.MarginalProblem({(0, 1): BELL, (1, 2): BELL}).to_torch()
    assert qm.check_compatibility(p).status == "incompatible"
