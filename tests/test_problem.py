"""MarginalProblem: construction, every validation error (message checked), files."""

import json

import numpy as np
import pytest
import torch

import qmarginal as qm
from qmarginal import MarginalError, MarginalProblem, Tolerances


@pytest.fixture
def rho3():
    return qm.rank_mixture_state(8, 3, seed=11)


@pytest.fixture
def good(rho3):
    return qm.marginals(rho3, k=2)


def test_from_state_and_properties(rho3):
    p = MarginalProblem.from_state(rho3, k=2)
    assert p.n_sites == 3 and p.dims == (2, 2, 2) and p.dim == 8
    assert p.subsets == [(0, 1), (0, 2), (1, 2)]
    assert p.batch_shape == ()
    assert p.marginal_deviation(rho3) < 1e-15
    q = MarginalProblem.from_state(rho3, subsets=[(0,), (1, 2)])
    assert q.subsets == [(0,), (1, 2)]


def test_qudits_and_non_uniform_subsets():
    rho = qm.hilbert_schmidt_state(12, seed=1)
    p = MarginalProblem.from_state(rho, subsets=[(0, 1), (2,)], dims=(2, 3, 2))
    assert p.dims == (2, 3, 2) and p.marginals[(0, 1)].shape == (6, 6)


def test_n_sites_is_inferred_or_given(good):
    p = MarginalProblem({(0, 1): good[(0, 1)]})
    assert p.n_sites == 2
    p4 = MarginalProblem({(0, 1): good[(0, 1)]}, dims=2, n_sites=4)
    assert p4.n_sites == 4 and p4.dim == 16


def test_batched_problem_and_indexing():
    rho = qm.hilbert_schmidt_state(8, batch=(4,), seed=3)
    p = MarginalProblem.from_state(rho, k=2)
    assert p.batch_shape == (4,)
    one = p[2]
    assert one.batch_shape == ()
    np.testing.assert_allclose(one.marginals[(0, 2)], qm.partial_trace(rho[2], (0, 2)))


# --------------------------------------------------------------- every bad input, message checked
def test_wrong_shape_for_its_subset(good):
    bad = dict(good)
    bad[(0, 2)] = np.eye(3) / 3
    with pytest.raises(MarginalError, match=r"marginal on sites \(0, 2\) must be 4 x 4.*got shape \(3, 3\)"):
        MarginalProblem(bad)


def test_not_hermitian(good):
    bad = dict(good)
    s = bad[(1, 2)].copy()
    s[0, 1] += 1e-3
    bad[(1, 2)] = s
    with pytest.raises(MarginalError, match=r"sites \(1, 2\) is not Hermitian: max \|sigma - sigma\^dagger\| = 0\.001"):
        MarginalProblem(bad)


def test_trace_not_one(good):
    bad = dict(good)
    bad[(0, 1)] = good[(0, 1)] * 1.5
    with pytest.raises(MarginalError, match=r"sites \(0, 1\) has trace 1\.5, not 1"):
        MarginalProblem(bad)


def test_not_psd():
    s = np.diag([1.2, -0.2, 0.0, 0.0]).astype(complex)
    with pytest.raises(MarginalError, match=r"sites \(0, 1\) is not positive semidefinite: smallest eigenvalue -0\.2"):
        MarginalProblem({(0, 1): s})


@pytest.mark.parametrize("factor, accepted", [(0.99, True), (1.01, False)])
def test_psd_tolerance_is_exact_at_its_boundary(factor, accepted):
    """lambda_min = -0.99 tol is accepted, -1.01 tol refused, for a single marginal and in a
    batch (the Cholesky shortcut and the eigenvalue check agree at the boundary); a rank-one
    marginal (lambda_min = 0, 63 zero eigenvalues) of dimension 64 is accepted."""
    tol = Tolerances().psd
    rng = np.random.default_rng(1)
    u, _ = np.linalg.qr(rng.standard_normal((8, 8)) + 1j * rng.standard_normal((8, 8)))
    w = np.full(8, 0.0)
    w[0] = -factor * tol
    w[1:] = (1 - w[0]) / 7
    s = (u * w) @ u.conj().T
    batch = np.stack([np.eye(8) / 8, s])
    for table in ({(0, 1, 2): s}, {(0, 1, 2): batch}):
        if accepted:
            MarginalProblem(table)
        else:
            with pytest.raises(MarginalError, match="not positive semidefinite"):
                MarginalProblem(table)
    v = rng.standard_normal(64) + 1j * rng.standard_normal(64)
    MarginalProblem({tuple(range(6)): np.outer(v, v.conj()) / np.vdot(v, v).real})


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf(good, value):
    bad = dict(good)
    s = good[(0, 2)].copy()
    s[1, 3] = value
    bad[(0, 2)] = s
    with pytest.raises(MarginalError, match=r"sites \(0, 2\) has a non-finite entry .* at index \(1, 3\)"):
        MarginalProblem(bad)


def test_site_index_out_of_range(good):
    with pytest.raises(MarginalError, match=r"site index 3 is out of range for 3 sites"):
        MarginalProblem({(0, 3): good[(0, 1)]}, dims=2, n_sites=3)


def test_duplicate_subsets(good):
    with pytest.raises(MarginalError, match=r"subset \(0, 1\) is given twice"):
        MarginalProblem.from_arrays([(0, 1), (0, 1)], [good[(0, 1)], good[(0, 1)]])
    with pytest.raises(MarginalError, match=r"\(1, 1\) repeats a site index"):
        MarginalProblem({(1, 1): good[(0, 1)]})


def test_unsorted_subset(good):
    with pytest.raises(MarginalError, match=r"\(1, 0\) is not sorted.*\(0, 1\)"):
        MarginalProblem({(1, 0): good[(0, 1)]})


def test_overlapping_marginals_that_disagree(rho3):
    other = qm.rank_mixture_state(8, 8, seed=99)
    table = {(0, 1): qm.partial_trace(rho3, (0, 1)), (1, 2): qm.partial_trace(other, (1, 2))}
    gap = np.linalg.norm(qm.partial_trace(rho3, (1,)) - qm.partial_trace(other, (1,)))
    with pytest.raises(MarginalError) as err:
        MarginalProblem(table)
    msg = str(err.value)
    assert "(0, 1) and (1, 2)" in msg and "common sites (1,)" in msg
    assert f"{gap:.3g}" in msg


def test_noisy_marginals_pass_with_a_looser_tolerance(good):
    rng = np.random.default_rng(0)
    noisy = {}
    for J, s in good.items():
        e = 1e-6 * (rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape))
        e = e + e.conj().T
        e -= np.trace(e) / s.shape[0] * np.eye(s.shape[0])
        noisy[J] = s + e
    with pytest.raises(MarginalError, match="disagree on their common sites"):
        MarginalProblem(noisy)
    p = MarginalProblem(noisy, tolerances=Tolerances(overlap=1e-4, hermitian=1e-10))
    assert len(p.marginals) == 3


def test_batch_index_is_named():
    rho = qm.hilbert_schmidt_state(8, batch=3, seed=4)
    m = qm.marginals(rho, k=2)
    m[(0, 1)] = m[(0, 1)].copy()
    m[(0, 1)][2] *= 2
    with pytest.raises(MarginalError, match=r"sites \(0, 1\) \[batch index \(2,\)\] has trace 2"):
        MarginalProblem(m)


def test_non_numeric_and_empty_input():
    with pytest.raises(MarginalError, match="at least one marginal"):
        MarginalProblem({})
    with pytest.raises(MarginalError, match="not a numeric array"):
        MarginalProblem({(0,): [["a", "b"], ["c", "d"]]})
    with pytest.raises(MarginalError, match="must be a mapping"):
        MarginalProblem([np.eye(2)])


def test_torch_marginals_are_validated(good):
    t = {J: torch.as_tensor(s) for J, s in good.items()}
    assert MarginalProblem(t).is_torch
    t[(0, 1)] = t[(0, 1)] * 2
    with pytest.raises(MarginalError, match="trace 2"):
        MarginalProblem(t)


# --------------------------------------------------------------- files
@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_save_and_load_round_trip(tmp_path, rho3, suffix):
    p = MarginalProblem.from_state(qm.hilbert_schmidt_state(12, seed=5), k=2, dims=(2, 3, 2))
    path = p.save(tmp_path / f"p{suffix}")
    q = MarginalProblem.load(path)
    assert q.dims == p.dims and q.subsets == p.subsets
    for J in p.subsets:
        np.testing.assert_allclose(q.marginals[J], p.marginals[J], atol=1e-15)


def test_json_layout_is_documented(tmp_path, good):
    path = MarginalProblem(good).save(tmp_path / "p.json")
    doc = json.loads(path.read_text())
    assert doc["format"] == "qmarginal.problem" and doc["dims"] == [2, 2, 2]
    m = doc["marginals"][0]
    assert m["sites"] == [0, 1] and len(m["real"]) == 4 and len(m["imag"][0]) == 4


def test_bad_files(tmp_path, good):
    with pytest.raises(MarginalError, match="does not exist"):
        MarginalProblem.load(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(MarginalError, match="not valid JSON"):
        MarginalProblem.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(MarginalError, match="not a qmarginal problem file"):
        MarginalProblem.load(tmp_path / "y.json")
    (tmp_path / "z.txt").write_text("")
    with pytest.raises(MarginalError, match="unknown problem file type"):
        MarginalProblem.load(tmp_path / "z.txt")
    (tmp_path / "t.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(MarginalError, match="unreadable problem file|not an .npz"):
        MarginalProblem.load(tmp_path / "t.npz")
    doc = {"format": "qmarginal.problem", "version": 1, "dims": [2, 2],
           "marginals": [{"sites": [0, 1], "real": np.eye(4).tolist(), "imag": [[0.0]]}]}
    (tmp_path / "w.json").write_text(json.dumps(doc))
    with pytest.raises(MarginalError, match=r"real part has shape \(4, 4\), imaginary part \(1, 1\)"):
        MarginalProblem.load(tmp_path / "w.json")


def test_npz_load_never_unpickles(tmp_path):
    obj = np.array([{"a": 1}], dtype=object)
    np.savez(tmp_path / "evil.npz", format=np.array("qmarginal.problem"), version=np.array(1),
             dims=np.array([2]), sites_0=np.array([0]), sigma_0=obj)
    with pytest.raises(MarginalError, match=r"sigma_0\) has dtype object"):
        MarginalProblem.load(tmp_path / "evil.npz")


def test_describe_names_every_marginal(good):
    text = MarginalProblem(good).describe()
    for J in good:
        assert str(J) in text
    assert "D = 8" in text
