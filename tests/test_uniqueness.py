"""Uniqueness certificates and rank-constrained reconstruction, against independent references.

The reference for uniqueness is an SDP written here (CVXPY, test extra): over the compatible
states sigma, the width max tr(Z sigma) - min tr(Z sigma) for random Hermitian Z is zero for
every Z exactly when the compatible set is a single point (a set with two points has positive
width along almost every Z). Certificates are re-checked with explicit Kronecker products;
"not unique" states by explicit partial traces.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import qmarginal as qm
from qmarginal.cli import main

cp = pytest.importorskip("cvxpy")


def _pure(v):
    v = np.asarray(v, dtype=complex)
    v = v / np.linalg.norm(v)
    return np.outer(v, v.conj())


def _ghz():
    v = np.zeros(8)
    v[[0, 7]] = 1
    return _pure(v)


def _w():
    v = np.zeros(8)
    v[[1, 2, 4]] = 1
    return _pure(v)


def _kron_embed(wJ, J, n):
    """w_J (x) 1 on n qubits by Kronecker products of single-site factors and a SWAP network
    (built as an explicit permutation matrix)."""
    D = 2**n
    rest = [s for s in range(n) if s not in J]
    big = np.kron(wJ, np.eye(2 ** len(rest)))
    order = list(J) + rest  # big's tensor factors, in this order
    perm = np.zeros((D, D))
    for i in range(D):
        bits = [(i >> (n - 1 - s)) & 1 for s in range(n)]  # site 0 most significant
        j = int("".join(str(bits[s]) for s in order), 2)
        perm[j, i] = 1
    return perm.T @ big @ perm


def _ptrace(rho, J, n):
    t = rho.reshape([2] * (2 * n))
    rest = [s for s in range(n) if s not in J]
    for k, s in enumerate(sorted(rest, reverse=True)):
        m = t.ndim // 2
        t = np.trace(t, axis1=s, axis2=s + m)
    d = 2 ** len(J)
    return t.reshape(d, d)


def _sdp_unique(problem, seed=0, trials=2) -> bool:
    """The independent reference: zero width along random directions."""
    n = problem.n_sites
    D = 2**n
    X = cp.Variable((D, D), hermitian=True)
    cons = [X >> 0]
    for J, s in problem.marginals.items():
        rest = [q for q in range(n) if q not in J]
        order = list(J) + rest
        perm = np.zeros((D, D))
        for i in range(D):
            bits = [(i >> (n - 1 - q)) & 1 for q in range(n)]
            perm[int("".join(str(bits[q]) for q in order), 2), i] = 1
        Y = perm @ X @ perm.T
        cons.append(cp.partial_trace(Y, [2 ** len(J), 2 ** len(rest)], axis=1) == s)
    rng = np.random.default_rng(seed)
    width = 0.0
    for _ in range(trials):
        g = rng.standard_normal((D, D)) + 1j * rng.standard_normal((D, D))
        Z = (g + g.conj().T) / np.linalg.norm(g + g.conj().T)
        vals = []
        for sense in (cp.Maximize, cp.Minimize):
            prob = cp.Problem(sense(cp.real(cp.trace(Z @ X))), cons)
            prob.solve(solver=cp.CLARABEL)
            vals.append(prob.value)
        width = max(width, vals[0] - vals[1])
    return width < 1e-5


CASES = ([("W", _w(), 2), ("GHZ", _ghz(), 2)]
         + [(f"pure3-{s}", qm.haar_pure_state(8, seed=s), 2) for s in range(3)]
         + [(f"full3-{s}", qm.rank_mixture_state(8, 8, seed=s), 2) for s in range(2)]
         + [(f"rank2-4q-{s}", qm.rank_mixture_state(16, 2, seed=20 + s), 3) for s in range(3)])


def _check_certificate_by_hand(cert, problem, rho):
    n = problem.n_sites
    H = sum(_kron_embed(w, J, n) for J, w in cert.w.items())
    ev, vec = np.linalg.eigh(H)
    assert ev[0] >= -1e-9  # H >= 0
    assert abs(np.trace(H @ rho)) <= 1e-8  # H rho = 0
    s = int((ev < 1e-7).sum())
    assert s == cert.support_dim and ev[s] >= cert.gap * (1 - 1e-6)
    q = vec[:, :s]
    assert np.linalg.norm(rho - q @ q.conj().T @ rho @ q @ q.conj().T) <= 1e-8  # on ker H
    # injectivity on ker H: the marginals of q E q^dagger for a basis E of s x s matrices
    cols = []
    for a, b in itertools.product(range(s), repeat=2):
        E = np.zeros((s, s), complex)
        E[a, b] = 1
        X = q @ E @ q.conj().T
        cols.append(np.concatenate([_ptrace(X, J, n).ravel() for J in problem.subsets]))
    smin = np.linalg.svd(np.array(cols).T, compute_uv=False)[-1]
    assert smin == pytest.approx(cert.injectivity, rel=1e-6, abs=1e-9)
    assert smin > 1e-6


@pytest.mark.parametrize("name,rho,k", CASES, ids=[c[0] for c in CASES])
def test_uniqueness_matches_the_sdp(name, rho, k):
    problem = qm.MarginalProblem.from_state(rho, k=k)
    res = qm.check_uniqueness(problem, rho)
    ref = _sdp_unique(problem)
    assert res.status == ("unique" if ref else "not unique"), (res.summary(), ref)
    if res.status == "unique":
        assert res.unique is True and res.certificate.verified
        _check_certificate_by_hand(res.certificate, problem, rho)
        again = res.certificate.verify(problem, rho)
        assert again.verified and again.radius < 1e-2
    else:
        a, b = res.states
        assert res.unique is False
        for s in (a, b):
            assert np.linalg.eigvalsh(s)[0] >= -1e-10
            assert abs(np.trace(s) - 1) < 1e-12
            for J, m in problem.marginals.items():
                assert np.abs(_ptrace(s, J, problem.n_sites) - m).max() <= 1e-9
        dist = 0.5 * np.abs(np.linalg.eigvalsh(a - b)).sum()
        assert dist == pytest.approx(res.distance) and dist > 1e-3


def test_expected_answers_for_the_named_states():
    """W and random 3-qubit pure states are determined by their 2-body marginals; GHZ is
    not (GHZ+, GHZ- and their mixtures share them)."""
    for rho, want in [(_w(), "unique"), (_ghz(), "not unique"),
                      (qm.haar_pure_state(8, seed=5), "unique")]:
        p = qm.MarginalProblem.from_state(rho, k=2)
        assert qm.check_uniqueness(p).status == want


def test_ghz_second_state_is_a_pure_ghz_like_state_or_mixture():
    p = qm.MarginalProblem.from_state(_ghz(), k=2)
    res = qm.check_uniqueness(p)
    a, b = res.states
    # both supported on span(|000>, |111>): only the coherence differs
    for s in (a, b):
        assert np.abs(s[1:7, :]).max() < 1e-9
    assert abs(a[0, 7] - b[0, 7]) > 1e-3


def test_a_forged_certificate_fails_verification():
    p = qm.MarginalProblem.from_state(_ghz(), k=2)
    rho = qm.reconstruct(p).state
    w = {J: np.diag([0, 1, 1, 0]).astype(complex) for J in p.subsets}  # kills 000 and 111
    cert = qm.uniqueness.verify_uniqueness_certificate(w, p, rho)
    assert not cert.verified  # ker H = span(000, 111): the map is not injective there


def test_check_unique_cli(tmp_path, capsys):
    for rho, code, word in [(_w(), 0, "unique"), (_ghz(), 4, "not unique")]:
        path = tmp_path / f"{word.replace(' ', '_')}.json"
        qm.MarginalProblem.from_state(rho, k=2).save(path)
        assert main(["check", str(path), "--unique"]) == code
        out = capsys.readouterr().out
        assert out.splitlines()[0].endswith(f"; {word}")
        assert main(["check", str(path), "--unique", "--json"]) == code
        doc = json.loads(capsys.readouterr().out)
        assert doc["uniqueness"]["status"] == word


# ------------------------------------------------------------------ rank-constrained
def _ame(n):
    return qm.MarginalProblem({J: np.eye(4) / 4 for J in itertools.combinations(range(n), 2)},
                              dims=2)


def _assert_rank_certified(rec, problem, r):
    v = rec.factor
    assert v.shape[1] <= r
    rho = v @ v.conj().T / np.vdot(v, v).real
    assert np.linalg.matrix_rank(rho, tol=1e-10) <= r
    for J, m in problem.marginals.items():
        assert np.abs(_ptrace(rho, J, problem.n_sites) - m).max() <= 1e-9


@pytest.mark.parametrize("seed", range(3))
def test_rank1_finds_pure_ghz_family_states(seed):
    phase = np.exp(2j * np.pi * np.random.default_rng(seed).random())
    v = np.zeros(8, complex)
    v[0], v[7] = np.sqrt(0.3 + 0.1 * seed), np.sqrt(0.7 - 0.1 * seed) * phase
    p = qm.MarginalProblem.from_state(_pure(v), k=2)
    rec = qm.reconstruct(p, rank=1, seed=seed)
    assert rec.report.certified
    _assert_rank_certified(rec, p, 1)


def test_rank1_finds_an_ame_5_2_state():
    p = _ame(5)
    rec = qm.reconstruct(p, rank=1)
    _assert_rank_certified(rec, p, 1)


def test_rank1_never_finds_the_nonexistent_ame_4_2_state():
    """Higuchi-Sudbery: no 4-qubit pure state has all 2-body marginals maximally mixed."""
    with pytest.raises((qm.NotCertifiedError, qm.IncompatibleMarginalsError)) as info:
        qm.reconstruct(_ame(4), rank=1)
    assert "rank <= 1" in str(info.value)
    rec = qm.reconstruct(_ame(4), rank=1, strict=False)
    assert not rec.report.certified  # the best iterate, flagged
    _assert_rank_certified(qm.reconstruct(_ame(4), rank=2), _ame(4), 2)  # rank 2 exists


@pytest.mark.parametrize("r", [1, 2, 3])
def test_rank_r_refused_with_a_proof_where_a_marginal_rank_forbids_it(r):
    p = qm.MarginalProblem.from_state(qm.rank_mixture_state(16, 16, seed=1), k=3)
    with pytest.raises(qm.IncompatibleMarginalsError, match=f"rank <= {r}.*has rank 8"):
        qm.reconstruct(p, rank=r)


@pytest.mark.parametrize("r", [2, 3])
def test_rank_r_found_where_it_exists(r):
    p = qm.MarginalProblem.from_state(qm.rank_mixture_state(16, r, seed=3), k=3)
    _assert_rank_certified(qm.reconstruct(p, rank=r), p, r)


def test_pure_refused_by_the_polygon_inequality():
    p = qm.MarginalProblem({(0,): np.diag([0.9, 0.1]), (1,): np.diag([0.6, 0.4]),
                            (2,): np.diag([0.99, 0.01])}, dims=2)
    with pytest.raises(qm.IncompatibleMarginalsError, match="Higuchi, Sudbery and Szulc"):
        qm.reconstruct(p, rank=1)
    _assert_rank_certified(qm.reconstruct(p, rank=2), p, 2)


def test_pure_refused_when_complementary_spectra_differ():
    a = qm.rank_mixture_state(4, 2, seed=1)
    p = qm.MarginalProblem({(0, 1): a, (2,): np.diag([0.8, 0.2])}, dims=2)
    if np.abs(np.sort(np.linalg.eigvalsh(a))[::-1][:2] - [0.8, 0.2]).max() > 1e-6:
        with pytest.raises(qm.IncompatibleMarginalsError, match="equal spectra"):
            qm.reconstruct(p, rank=1)


def test_rank_option_errors():
    p = _ame(5)
    with pytest.raises(qm.MarginalError, match="rank must be an integer"):
        qm.reconstruct(p, rank=0)
    with pytest.raises(qm.MarginalError, match="served by method 'exact'"):
        qm.reconstruct(p, "mio", rank=1)
