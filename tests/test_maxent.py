"""method="maxent": the maximum-entropy (Gibbs) state with the given marginals."""

import importlib.util

import numpy as np
import pytest

import qmarginal as qm
import qmarginal.examples
from qmarginal.solvers.maxent import _Dual, entropy


def _problem(n, k, rank, seed):
    rho = qm.rank_mixture_state(2 ** n, rank, seed=seed)
    return rho, qm.MarginalProblem.from_state(rho, k=k)


def test_dual_gradient_and_hessian_by_finite_differences():
    _, p = _problem(3, 2, 8, seed=3)
    d = _Dual(p)
    rng = np.random.default_rng(0)
    x, v = 0.3 * rng.normal(size=d.n), rng.normal(size=d.n)
    _, g, *_ = d.evaluate(x)
    e = 1e-6
    fp, gp = d.evaluate(x + e * v)[:2]
    fm, gm = d.evaluate(x - e * v)[:2]
    assert abs((fp - fm) / (2 * e) - g @ v) < 1e-7
    np.testing.assert_allclose((gp - gm) / (2 * e), d.hessp(x, v), atol=1e-7)


@pytest.mark.parametrize("n,k,rank", [(3, 2, 8), (4, 2, 16), (4, 3, 16), (3, 1, 8)])
def test_full_rank_targets_matched_to_1e8(n, k, rank):
    rho, p = _problem(n, k, rank, seed=n + k)
    res = qm.reconstruct(p, "maxent")
    r = res.report
    assert r.certified and r.valid
    assert r.max_marginal_deviation <= 1e-9
    # the maximum-entropy state has at least the entropy of any state with these marginals
    assert entropy(res.state) >= entropy(rho) - 1e-9
    mio = qm.reconstruct(p, "mio").state
    if qm.state_report(mio).valid:
        assert entropy(res.state) >= entropy(mio) - 1e-9
    assert abs(r.info["entropy"] - entropy(res.state)) < 1e-8


def test_entropy_at_least_that_of_other_valid_states():
    # random valid states with the same marginals: MIO of a mixture of the truth and 1/D
    rho, p = _problem(3, 2, 8, seed=11)
    best = entropy(qm.reconstruct(p, "maxent").state)
    for t in (0.2, 0.5, 0.8):
        seed = t * rho + (1 - t) * qm.hilbert_schmidt_state(8, seed=int(10 * t))
        x = qm.impose(seed, p)
        if qm.state_report(x).valid:
            assert best >= entropy(x) - 1e-9
    if importlib.util.find_spec("qmarginal.solvers.exact") is not None:
        ex = qm.reconstruct(p, "exact")
        if ex.report.valid:
            assert best >= entropy(ex.state) - 1e-9


def test_one_body_marginals_give_the_product_state():
    s0 = np.diag([0.7, 0.3]).astype(complex)
    s1 = np.array([[0.6, 0.2j], [-0.2j, 0.4]])
    p = qm.MarginalProblem({(0,): s0, (1,): s1})
    res = qm.reconstruct(p, "maxent")
    np.testing.assert_allclose(res.state, np.kron(s0, s1), atol=1e-9)


def test_rank_deficient_target_is_not_certified():
    # the 2-body marginals of this rank-2 state fix a rank-deficient maximum-entropy state:
    # H diverges and the deviation decreases slowly. The best Gibbs state is never returned as
    # an answer: NotCertifiedError carries it, and says that the marginals are compatible
    p = qm.MarginalProblem.load(qm.examples.example_path("n3k2_rank2"))
    with pytest.raises(qm.NotCertifiedError) as info:
        qm.reconstruct(p, "maxent", maxiter=60, newton_steps=2)
    err = info.value
    assert "rank-deficient" in err.reason and "compatible" in err.reason
    assert err.compatibility.status == "compatible"
    best = err.reconstruction.report
    assert not best.certified and best.valid  # still a Gibbs state, positive definite
    assert 1e-9 < best.max_marginal_deviation < 0.1
    # strict=False returns the best iterate, flagged
    rec = qm.reconstruct(p, "maxent", maxiter=60, newton_steps=2, strict=False, check=False)
    assert not rec.report.certified and rec.report.verdict.startswith("not certified")
    assert rec.errors[()].reason.endswith("not checked (check=False)")


def test_old_option_names_still_work():
    _, p = _problem(3, 2, 8, seed=3)
    with pytest.warns(DeprecationWarning):
        r = qm.reconstruct(p, "maxent", tol=1e-9, max_iter=100).report
    assert r.settings["marginal_tol"] == 1e-9 and r.settings["maxiter"] == 100


def test_batch():
    rho = qm.rank_mixture_state(8, 8, batch=(2,), seed=9)
    p = qm.MarginalProblem.from_state(rho, k=2)
    res = qm.reconstruct(p, "maxent")
    assert res.state.shape == (2, 8, 8)
    assert np.all(res.report.certified) and res.report.converged.all()
