"""Fidelity, trace distance, the validity test and the nearest density matrix."""

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import qmarginal as qm


def textbook_fidelity(rho, sigma):
    s = scipy.linalg.sqrtm(rho)
    return np.real(np.trace(scipy.linalg.sqrtm(s @ sigma @ s))) ** 2


def test_fidelity_matches_textbook_formula_on_full_rank_states():
    for seed in range(5):
        a = qm.hilbert_schmidt_state(6, seed=seed)
        b = qm.bures_state(6, seed=seed + 100)
        assert abs(qm.fidelity(a, b) - textbook_fidelity(a, b)) < 1e-10


def test_fidelity_of_pure_states_is_the_overlap():
    psi, phi = qm.haar_ket(8, seed=1), qm.haar_ket(8, seed=2)
    a, b = np.outer(psi, psi.conj()), np.outer(phi, phi.conj())
    assert abs(qm.fidelity(a, b) - abs(np.vdot(psi, phi)) ** 2) < 1e-12
    assert abs(qm.fidelity(a, a) - 1) < 1e-12


def test_fidelity_of_commuting_states_is_the_bhattacharyya_coefficient():
    p, q = np.array([0.5, 0.3, 0.2, 0.0]), np.array([0.1, 0.1, 0.4, 0.4])
    assert abs(qm.fidelity(np.diag(p), np.diag(q)) - np.sum(np.sqrt(p * q)) ** 2) < 1e-14


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 4), st.floats(0, 1e-9))
def test_fidelity_is_never_nan_nor_above_one(seed, rank, jitter):
    rng = np.random.default_rng(seed)
    a = qm.hilbert_schmidt_state(8, rank, seed=rng)
    b = a + jitter * np.eye(8)  # nearly equal, rank-deficient, slightly off trace one
    f = qm.fidelity(a, b)
    assert np.isfinite(f) and 0.0 <= f <= 1.0
    assert f > 1 - 1e-6
    # slightly negative eigenvalues (an MIO output) are clipped, never NaN
    c = a - 1e-3 * np.eye(8) / 8
    assert np.isfinite(qm.fidelity(a, c))


def test_fidelity_is_batched_and_follows_torch():
    a = qm.hilbert_schmidt_state(4, batch=3, seed=0)
    b = qm.hilbert_schmidt_state(4, batch=3, seed=1)
    f = qm.fidelity(a, b)
    assert f.shape == (3,)
    ft = qm.fidelity(torch.as_tensor(a), torch.as_tensor(b))
    assert isinstance(ft, torch.Tensor)
    np.testing.assert_allclose(ft.numpy(), f, atol=1e-12)


def test_trace_distance_values():
    a, b = np.diag([1.0, 0.0]), np.diag([0.0, 1.0])
    assert qm.trace_distance(a, b) == pytest.approx(1.0)
    assert qm.trace_distance(a, np.eye(2) / 2) == pytest.approx(0.5)
    x, y = qm.hilbert_schmidt_state(6, seed=3), qm.hilbert_schmidt_state(6, seed=4)
    # Fuchs-van de Graaf inequalities
    F, T = qm.fidelity(x, y), qm.trace_distance(x, y)
    assert 1 - np.sqrt(F) <= T <= np.sqrt(1 - F)


def test_state_report_counts_negative_eigenvalues():
    m = np.diag([0.6, 0.5, -0.05, -0.05, 0.0])
    r = qm.state_report(m)
    assert not r.valid and r.negative_count == 2
    assert r.negative_sum == pytest.approx(-0.1)
    assert r.min_eigenvalue == pytest.approx(-0.05)
    assert r.trace == pytest.approx(1.0)
    ok = qm.state_report(2 * qm.hilbert_schmidt_state(4, seed=0))  # trace is normalised first
    assert ok.valid and ok.negative_count == 0 and ok.trace == pytest.approx(2.0)
    edge = qm.state_report(np.diag([1 + 5e-11, -5e-11]))
    assert edge.valid  # within the paper's 1e-10
    assert not qm.state_report(np.diag([1 + 5e-10, -5e-10])).valid


def test_nearest_density_matrix_is_a_state_and_a_projection():
    p = qm.MarginalProblem.from_state(qm.rank_mixture_state(8, 1, seed=2), k=2)
    x = qm.impose(np.eye(8) / 8, p)
    y = qm.nearest_density_matrix(x)
    assert qm.state_report(y).valid
    assert abs(np.trace(y) - 1) < 1e-12
    # no random state is closer (it is the Frobenius projection)
    d = np.linalg.norm(y - x)
    for seed in range(20):
        z = qm.hilbert_schmidt_state(8, seed=seed)
        assert np.linalg.norm(z - x) >= d - 1e-12
    # a state is left unchanged
    s = qm.hilbert_schmidt_state(8, seed=9)
    np.testing.assert_allclose(qm.nearest_density_matrix(s), s, atol=1e-12)
    yt = qm.nearest_density_matrix(torch.as_tensor(x))
    np.testing.assert_allclose(yt.numpy(), y, atol=1e-12)
