"""partial_trace, embed and impose against explicit Kronecker-product references, for every
subset of N <= 4 qubits and for mixed qudit dimensions."""

import itertools

import numpy as np
import pytest
from reference import ref_embed, ref_impose, ref_partial_trace

import qmarginal as qm

DIM_CASES = [(2,), (2, 2), (2, 2, 2), (2, 2, 2, 2), (2, 3, 2), (3, 2), (3, 3, 2), (2, 4, 3)]


def all_subsets(n):
    for k in range(0, n + 1):
        yield from itertools.combinations(range(n), k)


def random_matrix(D, rng):
    return rng.standard_normal((D, D)) + 1j * rng.standard_normal((D, D))


@pytest.mark.parametrize("dims", DIM_CASES, ids=str)
def test_partial_trace_matches_kronecker_reference(dims, rng):
    D = int(np.prod(dims))
    x = random_matrix(D, rng)
    for keep in all_subsets(len(dims)):
        got = qm.partial_trace(x, keep, dims)
        want = ref_partial_trace(x, keep, dims)
        np.testing.assert_allclose(got, want, atol=1e-12, err_msg=f"keep={keep}")


@pytest.mark.parametrize("dims", DIM_CASES, ids=str)
def test_embed_matches_kronecker_reference(dims, rng):
    for keep in all_subsets(len(dims)):
        dk = int(np.prod([dims[s] for s in keep]))
        s = random_matrix(dk, rng)
        for normalize in (True, False):
            got = qm.embed(s, keep, dims, normalize=normalize)
            want = ref_embed(s, keep, dims, normalize=normalize)
            np.testing.assert_allclose(got, want, atol=1e-12, err_msg=f"keep={keep}")


@pytest.mark.parametrize("dims", DIM_CASES[1:], ids=str)
def test_impose_matches_kronecker_reference(dims, rng):
    n = len(dims)
    D = int(np.prod(dims))
    rho = qm.hilbert_schmidt_state(D, seed=rng)
    x = random_matrix(D, rng)
    x = x + x.conj().T
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), k))
        marg = {J: ref_partial_trace(rho, J, dims) for J in subsets}
        got = qm.impose(x, marg, dims)
        want = ref_impose(x, marg, dims)
        np.testing.assert_allclose(got, want, atol=1e-11, err_msg=f"k={k}")


def test_integer_dims_infers_the_number_of_sites(rng):
    x = random_matrix(16, rng)
    np.testing.assert_allclose(qm.partial_trace(x, [1, 3]), ref_partial_trace(x, [1, 3], (2,) * 4),
                               atol=1e-12)
    y = random_matrix(27, rng)
    np.testing.assert_allclose(qm.partial_trace(y, [0], dims=3), ref_partial_trace(y, [0], (3,) * 3),
                               atol=1e-12)


def test_batched_partial_trace_equals_loop(rng):
    dims = (2, 3, 2)
    x = rng.standard_normal((4, 3, 12, 12)) + 1j * rng.standard_normal((4, 3, 12, 12))
    got = qm.partial_trace(x, (0, 2), dims)
    assert got.shape == (4, 3, 4, 4)
    for i, j in itertools.product(range(4), range(3)):
        np.testing.assert_allclose(got[i, j], ref_partial_trace(x[i, j], (0, 2), dims), atol=1e-12)


def test_site_zero_is_the_leftmost_factor():
    a = np.diag([1.0, 0.0])
    b = np.diag([0.25, 0.75])
    c = np.diag([0.5, 0.5])
    rho = np.kron(np.kron(a, b), c)
    np.testing.assert_allclose(qm.partial_trace(rho, [0]), a)
    np.testing.assert_allclose(qm.partial_trace(rho, [1]), b)
    np.testing.assert_allclose(qm.partial_trace(rho, [0, 2]), np.kron(a, c))


def test_marginals_helper_and_k_body_subsets(rng):
    rho = qm.hilbert_schmidt_state(16, seed=rng)
    m = qm.marginals(rho, k=2)
    assert list(m) == qm.k_body_subsets(4, 2) == list(itertools.combinations(range(4), 2))
    for J, s in m.items():
        np.testing.assert_allclose(s, ref_partial_trace(rho, J, (2,) * 4), atol=1e-12)
    m2 = qm.marginals(rho, subsets=[(0, 3), (1,)])
    assert list(m2) == [(0, 3), (1,)]
