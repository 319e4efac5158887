"""The matrix-free factored path and factored states (no D x D matrix).

Marginals of a factor and the adjoint map are checked against explicit Kronecker constructions
(tests/reference.py) on small mixed-dimension systems; the exact line search's quartic against
direct evaluation of h on the line; the solver's answers by an independent re-measurement of
the factor's marginals (``factor_marginal``) and, where D is small, of the dense state
(``partial_trace`` and its eigenvalues).
"""

import itertools

import numpy as np
import pytest

import qmarginal as qm
from qmarginal import MarginalError, MarginalProblem
from qmarginal.factored import FactoredState, factor_marginal
from qmarginal.solvers import matrix_free as mf

from reference import ref_embed, ref_partial_trace

DIMS = (2, 3, 2, 2)


def _factor(D, r, seed):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((D, r)) + 1j * rng.standard_normal((D, r))
    return v / np.linalg.norm(v)


def _problem_of(v, dims, subsets):
    return MarginalProblem({J: factor_marginal(v, J, dims) for J in subsets}, dims)


@pytest.mark.parametrize("keep", [(0,), (1, 3), (0, 1, 2), (3,), (0, 1, 2, 3)])
def test_factor_marginal_against_kronecker_reference(keep):
    v = _factor(24, 3, seed=1)
    want = ref_partial_trace(v @ v.conj().T, list(keep), list(DIMS))
    assert np.allclose(factor_marginal(v, keep, DIMS), want, atol=1e-14)


def test_factor_maps_marginals_and_adjoint_against_kronecker_reference():
    subsets = [(0, 1), (1, 2, 3), (3,), (0, 2)]
    fm = mf.FactorMaps(DIMS, subsets)
    v = _factor(24, 2, seed=2)
    rng = np.random.default_rng(3)
    deltas = []
    for J, m in zip(subsets, fm.marginals(v)):
        assert np.allclose(m, ref_partial_trace(v @ v.conj().T, list(J), list(DIMS)),
                           atol=1e-14)
        d = rng.standard_normal(m.shape) + 1j * rng.standard_normal(m.shape)
        deltas.append(d + d.conj().T)
    dense = sum(ref_embed(d, list(J), list(DIMS), normalize=False)
                for J, d in zip(subsets, deltas))
    assert np.allclose(fm.adjoint(v, deltas), dense @ v, atol=1e-13)


@pytest.mark.parametrize("kind", ["dense", "gram"])
def test_line_search_quartic_matches_h_on_the_line(kind):
    """Both marginal forms (d_J x d_J differences, and Gram matrices for low-rank marginals)
    give the coefficients of h(v + t p) exactly."""
    dims, J = (2, 2, 2, 2), (0, 1, 2)
    r = 3 if kind == "dense" else 1  # d_J = 8 vs d_{J^c} r = 6 (dense) or 2 (gram)
    fm = mf.FactorMaps(dims, [J])
    item = fm.items[0]
    v, p = _factor(16, r, 4), _factor(16, r, 5)
    sigma = factor_marginal(_factor(16, 2, 6), J, dims)
    w, q = fm.regroup(v, item), fm.regroup(p, item)
    term = mf._Dense(sigma, w) if kind == "dense" else mf._Gram(sigma, w)
    c, _ = term.coeffs(w, q)
    for t in (0.0, 0.3, -1.2, 2.5):
        m = factor_marginal(v + t * p, J, dims)
        h = float(np.linalg.norm(m - sigma) ** 2)
        assert abs(np.polyval(c[::-1], t) - h) < 1e-12 * max(1.0, h)


def _check_answer(res, problem, tol=1e-9):
    assert res.certified, res.reason
    st = res.state
    assert abs(np.linalg.norm(st.factor) ** 2 - st.trace) < 1e-12
    for J, s in problem.marginals.items():
        assert np.abs(st.marginal(J) - np.asarray(s)).max() <= tol
    if st.dim <= 256:  # the dense state, measured by the core's own routines
        rho = st.state()
        assert np.linalg.eigvalsh(rho).min() > -1e-12
        assert np.max(problem.marginal_deviation(rho)) <= tol


@pytest.mark.parametrize("n, k, r", [(6, 2, 1), (8, 2, 1), (7, 6, 1), (6, 5, 2), (6, 3, 3)])
def test_certifies_low_rank_targets(n, k, r):
    dims = (2,) * n
    v = _factor(2 ** n, r, seed=10 + n + k + r)
    p = _problem_of(v, dims, list(itertools.combinations(range(n), k)))
    res = mf.solve(p)
    _check_answer(res, p)
    assert res.rank <= max(r, 1) + 1  # grown from rank 1 as far as the target needs


def test_mixed_dimensions_and_uncovered_sites():
    dims = (3, 2, 2, 3, 2)
    v = _factor(72, 1, seed=7)
    p = _problem_of(v, dims, [(0, 1), (1, 3), (0, 3)])  # site 2 and 4 in no subset
    _check_answer(mf.solve(p), p)


def test_sixteen_qubits_pure_target_from_pairs():
    """D = 65,536: a dense state would take 64 GiB; the factor takes 1 MiB."""
    n = 16
    dims = (2,) * n
    v = _factor(2 ** n, 1, seed=16)
    p = _problem_of(v, dims, list(itertools.combinations(range(n), 2)))
    res = mf.solve(p)
    _check_answer(res, p)
    with pytest.raises(MarginalError, match="use .factor"):
        res.state.state()


def test_incompatible_marginals_are_not_certified():
    """The Werner triangle past its boundary (p > 1/3): no state has these marginals, so no
    factor can be certified; the result says why."""
    p_w = 0.5
    psi = np.array([0, 1, -1, 0]) / np.sqrt(2)
    w = p_w * np.outer(psi, psi) + (1 - p_w) * np.eye(4) / 4
    prob = MarginalProblem({(0, 1): w, (1, 2): w, (0, 2): w}, (2, 2, 2))
    res = mf.solve(prob, mf.MatrixFreeSettings(maxiter=3000))
    assert not res.certified and res.reason
    assert res.max_marginal_deviation > 1e-3


def test_settings_are_validated():
    with pytest.raises(MarginalError, match="rank"):
        mf.MatrixFreeSettings(rank=0)
    with pytest.raises(MarginalError, match="max_rank"):
        mf.MatrixFreeSettings(rank=3, max_rank=2)
    with pytest.raises(MarginalError, match="factor of shape"):
        FactoredState(np.ones((5, 1)), (2, 2))


def test_peak_memory_estimate_is_an_upper_bound_for_a_pure_target():
    import tracemalloc

    n = 12
    dims = (2,) * n
    v = _factor(2 ** n, 1, seed=12)
    p = _problem_of(v, dims, list(itertools.combinations(range(n), 2)))
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    res = mf.solve(p)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert res.certified
    assert peak <= mf.peak_bytes(2 ** n, res.rank) + (1 << 20)


# ----------------------------------------------------------------------------- through reconstruct
def _pairs_problem(n, r=1, seed=0):
    dims = (2,) * n
    return _problem_of(_factor(2 ** n, r, seed), dims, list(itertools.combinations(range(n), 2)))


def test_reconstruct_takes_the_matrix_free_path_when_dense_does_not_fit():
    from qmarginal.report import FactoredReconstruction

    p = _pairs_problem(8, seed=1)
    rec = qm.reconstruct(p, memory_budget=4 << 20)  # dense: 64 MiB planned; factored: < 1 MiB
    assert isinstance(rec, FactoredReconstruction) and rec.certified
    assert rec.report.info["path"] == "matrix_free"
    assert rec.factor.shape == (256, rec.report.info["rank"])
    # the dense state on request (D = 256), measured by the core's own routines
    rho = rec.state
    assert np.linalg.eigvalsh(rho).min() > -1e-12
    assert np.max(p.marginal_deviation(rho)) <= 1e-9
    assert rec.report.max_marginal_deviation <= 1e-9


def test_a_dense_path_that_cannot_fit_is_refused_with_the_numbers():
    p = _pairs_problem(8, seed=2)
    with pytest.raises(qm.InsufficientMemoryError) as err:
        qm.reconstruct(p, path="convex", memory_budget=4 << 20)
    msg = str(err.value)
    assert "path 'convex' needs about 64 MiB" in msg and "D = 256" in msg
    assert "budget 4 MiB" in msg and "path='matrix_free'" in msg and "fits" in msg
    assert err.value.needed > err.value.available == 4 << 20
    with pytest.raises(qm.InsufficientMemoryError, match="does not fit either"):
        qm.reconstruct(p, memory_budget=1000)


def test_explicit_matrix_free_path_and_not_certified_answers():
    p = _pairs_problem(6, r=2, seed=3)
    rec = qm.reconstruct(p, path="matrix_free")
    assert rec.certified and rec.report.verdict == "certified state"
    psi = np.array([0, 1, -1, 0]) / np.sqrt(2)
    w = 0.5 * np.outer(psi, psi) + 0.5 * np.eye(4) / 4  # past the triangle's boundary
    tri = MarginalProblem({(0, 1): w, (1, 2): w, (0, 2): w}, (2, 2, 2))
    with pytest.raises(qm.NotCertifiedError) as err:
        qm.reconstruct(tri, path="matrix_free", maxiter=500)
    assert "compatibility not checked" in err.value.reason
    assert not err.value.reconstruction.certified
    best = qm.reconstruct(tri, path="matrix_free", maxiter=500, strict=False)
    assert not best.certified and best.report.verdict.startswith("not certified")
    with pytest.raises(MarginalError, match="warm start"):
        qm.reconstruct(p, path="matrix_free", x0=np.eye(64) / 64)


def test_the_memory_plan_refuses_before_loading_the_dense_solver(tmp_path):
    """A 14-qubit file with a dense path forced: refused by the memory plan without importing
    torch or building anything of size D x D (run in a fresh interpreter)."""
    import subprocess
    import sys

    path = tmp_path / "p14.json"
    _pairs_problem(14, seed=4).save(path)
    code = ("import sys, qmarginal as qm\n"
            f"p = qm.MarginalProblem.load({str(path)!r})\n"
            "try:\n    qm.reconstruct(p, path='convex', memory_budget=1 << 30)\n"
            "except qm.InsufficientMemoryError as e:\n    print('refused:', e)\n"
            "print('torch loaded:', 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    assert "refused: path 'convex' needs about 256 GiB" in out
    assert "torch loaded: False" in out


def test_cli_writes_the_factor_and_refuses_with_exit_2(tmp_path, capsys):
    from qmarginal.cli import main

    path = tmp_path / "p12.json"
    _pairs_problem(12, seed=5).save(path)
    out = tmp_path / "out.npz"
    assert main(["reconstruct", str(path), "-o", str(out), "--option",
                 "path=matrix_free"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[-2:] == ["certified", "state"]
    with np.load(out) as z:
        v = z["factor"]
    st = FactoredState(v, (2,) * 12)
    p = MarginalProblem.load(path)
    assert max(np.abs(st.marginal(J) - s).max() for J, s in p.marginals.items()) <= 1e-9
    assert main(["reconstruct", str(path), "--option", "path=convex", "--option",
                 "memory_budget=1000000"]) == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "Traceback" not in err


def test_factored_report_fidelity_against_the_dense_metrics():
    """measure_factored: the dense metrics for small marginals, the factor's Gram form for
    large ones; both equal qmarginal.fidelity / trace_distance of the dense marginals."""
    from qmarginal.metrics import fidelity, trace_distance
    from qmarginal.report import FACTORED_DENSE_METRICS_MAX_DIM, measure_factored

    n = 9
    dims = (2,) * n
    target = _factor(2 ** n, 1, seed=20)
    subsets = [(0, 1), tuple(range(8))]  # d_J = 4 and 256 (> the dense-metrics size)
    assert 2 ** 8 > FACTORED_DENSE_METRICS_MAX_DIM
    p = _problem_of(target, dims, subsets)
    other = FactoredState(target + 0.05 * _factor(2 ** n, 1, seed=21), dims)  # near, not equal
    rep = measure_factored(p, other, eig_tol=1e-10, marginal_tol=1e-9)
    fids = [fidelity(other.marginal(J), np.asarray(p.marginals[J])) for J in subsets]
    assert not rep.certified and 0.9 < min(fids) < 1 - 1e-6
    assert abs(rep.mean_marginal_fidelity - np.mean(fids)) < 1e-9
    td = trace_distance(other.marginal((0, 1)), np.asarray(p.marginals[(0, 1)]))
    assert abs(rep.mean_marginal_trace_distance - td) < 1e-12  # the small marginal's only
    assert "not computed for the 1 marginals" in rep.info["trace_distance"]
    assert rep.min_eigenvalue == 0.0 and "by construction" in rep.info["positivity"]


def test_route_tries_matrix_free_first_only_where_a_low_rank_factor_can_exist():
    from qmarginal.memory_plan import MATRIX_FREE_FIRST_MAX_RANK, purity_rank_bound, route

    torch = pytest.importorskip("torch")
    pure = _pairs_problem(10, seed=6)
    assert purity_rank_bound(pure) == 1
    assert route(pure) == "matrix_free_first"
    assert route(pure, path="convex") == "dense"
    assert route(pure, path="matrix_free") == "matrix_free"
    as_torch = MarginalProblem({J: torch.as_tensor(np.asarray(s)) for J, s in
                                pure.marginals.items()}, pure.dims)
    assert route(as_torch) == "dense"  # torch input keeps its library and device
    # 9-body marginals of a full-rank target: every compatible state has rank >= the bound
    mixed = MarginalProblem.from_state(qm.rank_mixture_state(1024, 1024, seed=1), k=9)
    assert purity_rank_bound(mixed) > MATRIX_FREE_FIRST_MAX_RANK
    assert route(mixed) == "dense"
    small = _pairs_problem(8, seed=7)
    assert route(small) == "dense"  # below MATRIX_FREE_FIRST_MIN_DIM


def test_purity_rank_bound_is_a_lower_bound():
    from qmarginal.memory_plan import purity_rank_bound

    rng = np.random.default_rng(8)
    for r in (1, 3, 17, 64):
        v = _factor(64, r, seed=int(rng.integers(1 << 30)))
        p = _problem_of(v, (2,) * 6, [(0, 1, 2, 3), (2, 3, 4, 5)])
        assert 1 <= purity_rank_bound(p) <= r


def test_check_compatibility_refuses_what_cannot_fit(capsys, tmp_path):
    """14 qubits: the check needs D x D matrices (~256 GiB planned): refused, exit status 2."""
    from qmarginal.cli import main

    p = _pairs_problem(14, seed=9)
    with pytest.raises(qm.InsufficientMemoryError, match="check_compatibility needs D x D"):
        qm.check_compatibility(p)
    path = tmp_path / "p14.json"
    p.save(path)
    assert main(["check", str(path)]) == 2
    assert "needs D x D matrices" in capsys.readouterr().err
