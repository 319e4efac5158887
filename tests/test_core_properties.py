"""Property tests (hypothesis) of the numerical core, in single and double precision, numpy
and torch: marginals imposed exactly, idempotence, orthogonal projection, adjointness, random
states, gradients."""

import itertools

import numpy as np
import pytest
import torch
from conftest import tol_for
from hypothesis import given, settings
from hypothesis import strategies as st

import qmarginal as qm

DIMS = [(2, 2, 2), (2, 2, 2, 2), (2, 3, 2), (3, 3), (2, 2, 3, 2), (2,) * 5]
PRECISIONS = ["complex64", "complex128"]
LIBS = ["numpy", "torch"]

common = settings(max_examples=20, deadline=None)


def as_lib(x, lib, dtype):
    x = np.asarray(x).astype(dtype)
    return torch.as_tensor(x) if lib == "torch" else x


def to_np(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@st.composite
def problems(draw):
    dims = draw(st.sampled_from(DIMS))
    n = len(dims)
    seed = draw(st.integers(0, 2**31 - 1))
    k = draw(st.integers(1, n - 1))
    subsets = list(itertools.combinations(range(n), k))
    # a random sub-collection, so non-uniform sets of subsets are covered too
    mask = draw(st.lists(st.booleans(), min_size=len(subsets), max_size=len(subsets)))
    chosen = [J for J, m in zip(subsets, mask) if m] or subsets[:1]
    return dims, seed, chosen


@common
@given(problems(), st.sampled_from(PRECISIONS), st.sampled_from(LIBS))
def test_impose_gives_every_marginal(case, precision, lib):
    dims, seed, subsets = case
    D = int(np.prod(dims))
    rng = np.random.default_rng(seed)
    rho = qm.rank_mixture_state(D, seed=rng)
    marg = {J: as_lib(qm.partial_trace(rho, J, dims), lib, precision) for J in subsets}
    x = as_lib(qm.hilbert_schmidt_state(D, seed=rng), lib, precision)
    y = qm.impose(x, marg, dims)
    assert type(y) is type(x) and str(y.dtype).endswith(precision)
    tol = tol_for(precision)
    for J, s in marg.items():
        np.testing.assert_allclose(to_np(qm.partial_trace(y, J, dims)), to_np(s), atol=tol, rtol=0)
    # idempotent
    np.testing.assert_allclose(to_np(qm.impose(y, marg, dims)), to_np(y), atol=tol, rtol=0)
    # Hermitian and trace one
    yn = to_np(y)
    np.testing.assert_allclose(yn, yn.conj().T, atol=tol)
    assert abs(np.trace(yn) - 1) < 10 * tol


@common
@given(problems())
def test_impose_is_the_orthogonal_projection_onto_the_affine_set(case):
    """<X - Q(X), Y - Q(X)> = 0 for every Y with the same marginals, and the order of the
    marginals does not matter (the linear parts commute)."""
    dims, seed, subsets = case
    D = int(np.prod(dims))
    rng = np.random.default_rng(seed)
    rho = qm.rank_mixture_state(D, seed=rng)
    marg = qm.marginals(rho, subsets, dims)
    x = rng.standard_normal((D, D)) + 1j * rng.standard_normal((D, D))
    q = qm.impose(x, marg, dims)
    for _ in range(3):
        z = rng.standard_normal((D, D)) + 1j * rng.standard_normal((D, D))
        y = qm.impose(z, marg, dims)  # another point of the affine set
        inner = np.vdot(x - q, y - q)
        assert abs(inner) <= 1e-10 * (1 + np.linalg.norm(x) * np.linalg.norm(y - q))
    reversed_marg = dict(reversed(list(marg.items())))
    np.testing.assert_allclose(qm.impose(x, reversed_marg, dims), q, atol=1e-11)


@common
@given(st.sampled_from(DIMS), st.integers(0, 2**31 - 1), st.sampled_from(PRECISIONS),
       st.sampled_from(LIBS))
def test_embedding_is_the_adjoint_of_the_partial_trace(dims, seed, precision, lib):
    """<tr_{J^c} X, S> = <X, S (x) 1_{J^c}> for every J."""
    rng = np.random.default_rng(seed)
    n = len(dims)
    D = int(np.prod(dims))
    x = as_lib(rng.standard_normal((D, D)) + 1j * rng.standard_normal((D, D)), lib, precision)
    for k in range(0, n + 1):
        J = tuple(sorted(rng.choice(n, size=k, replace=False).tolist()))
        dJ = int(np.prod([dims[s] for s in J]))
        s = as_lib(rng.standard_normal((dJ, dJ)) + 1j * rng.standard_normal((dJ, dJ)), lib, precision)
        lhs = np.vdot(to_np(qm.partial_trace(x, J, dims)), to_np(s))
        rhs = np.vdot(to_np(x), to_np(qm.embed(s, J, dims, normalize=False)))
        scale = np.linalg.norm(to_np(x)) * np.linalg.norm(to_np(s)) * np.sqrt(D)
        assert abs(lhs - rhs) <= tol_for(precision) * scale
        # the normalised embedding is a right inverse of the partial trace
        np.testing.assert_allclose(to_np(qm.partial_trace(qm.embed(s, J, dims), J, dims)),
                                   to_np(s), atol=tol_for(precision) * 10)


@common
@given(st.integers(1, 16), st.integers(0, 2**31 - 1), st.sampled_from(["hs", "bures", "mix", "pure"]),
       st.sampled_from(PRECISIONS), st.sampled_from(["numpy", "torch"]))
def test_random_states_are_states_of_the_requested_rank(rank, seed, kind, precision, lib):
    D = 16
    gen = torch.Generator().manual_seed(seed) if lib == "torch" else seed
    dtype = np.dtype(precision)
    if kind == "hs":
        rho = qm.hilbert_schmidt_state(D, rank, batch=3, seed=gen, dtype=dtype)
    elif kind == "bures":
        rho = qm.bures_state(D, rank, batch=3, seed=gen, dtype=dtype)
    elif kind == "mix":
        rho = qm.rank_mixture_state(D, rank, batch=3, seed=gen, dtype=dtype)
    else:
        rho = qm.haar_pure_state(D, batch=3, seed=gen, dtype=dtype)
        rank = 1
    assert isinstance(rho, torch.Tensor) == (lib == "torch")
    r = to_np(rho).astype(np.complex128)
    tol = tol_for(precision)
    np.testing.assert_allclose(r, np.conj(np.swapaxes(r, -1, -2)), atol=tol)
    np.testing.assert_allclose(np.trace(r, axis1=-2, axis2=-1), 1.0, atol=10 * tol)
    w = np.linalg.eigvalsh(r)
    assert (w >= -10 * tol).all()
    ranks = (w > (1e-6 if precision == "complex64" else 1e-12)).sum(-1)
    if precision == "complex64":
        # full-rank spectra reach down near zero: single precision cannot resolve the smallest
        # eigenvalue of every draw, so only bound the rank there (exact check in double)
        assert (ranks <= rank).all() and (ranks >= rank - 2).all(), (ranks, rank)
    else:
        assert (ranks == rank).all(), (ranks, rank)


def test_random_states_are_reproducible_from_the_seed():
    a = qm.rank_mixture_state(8, batch=4, seed=7)
    b = qm.rank_mixture_state(8, batch=4, seed=7)
    np.testing.assert_array_equal(a, b)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(qm.hilbert_schmidt_state(8, seed=g1), qm.hilbert_schmidt_state(8, seed=g2))
    gen = np.random.default_rng(1)
    c, d = qm.haar_ket(4, seed=gen), qm.haar_ket(4, seed=gen)
    assert not np.allclose(c, d)  # a generator advances


def test_rank_mixture_draws_ranks_uniformly_in_range():
    _, ranks = qm.rank_mixture_state(8, r_min=3, batch=4000, seed=0, return_rank=True)
    assert ranks.min() == 3 and ranks.max() == 8
    counts = np.bincount(ranks, minlength=9)[3:]
    assert np.all(np.abs(counts / 4000 - 1 / 6) < 0.03)


def test_haar_unitary_is_unitary():
    u = qm.haar_unitary(6, batch=5, seed=0)
    np.testing.assert_allclose(u @ np.conj(np.swapaxes(u, -1, -2)), np.broadcast_to(np.eye(6), u.shape),
                               atol=1e-12)


@pytest.mark.parametrize("precision", [torch.complex64, torch.complex128])
def test_gradients_flow_through_partial_trace_and_impose(precision):
    x = torch.randn(2, 12, 12, dtype=precision, requires_grad=True)
    loss = qm.partial_trace(x, (0, 2), (2, 3, 2)).abs().pow(2).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    if precision == torch.complex128:
        x64 = torch.randn(2, 12, 12, dtype=precision, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a: qm.partial_trace(a, (1,), (2, 3, 2)), (x64,))
        p = qm.MarginalProblem.from_state(qm.hilbert_schmidt_state(12, seed=0), k=2,
                                          dims=(2, 3, 2)).to_torch()
        assert torch.autograd.gradcheck(lambda a: qm.impose(a, p), (x64,))
        s = torch.randn(4, 4, dtype=precision, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a: qm.embed(a, (0, 2), (2, 3, 2)), (s,))


def test_torch_keeps_device_and_dtype():
    x = torch.eye(8, dtype=torch.complex64) / 8
    p = qm.MarginalProblem.from_state(qm.hilbert_schmidt_state(8, seed=1), k=2).to_torch(
        dtype=torch.complex64)
    y = qm.impose(x, p)
    assert y.dtype == torch.complex64 and y.device == x.device
    assert qm.partial_trace(y, (0,)).dtype == torch.complex64


def test_impose_broadcasts_a_single_seed_over_batched_marginals():
    rho = qm.hilbert_schmidt_state(8, batch=5, seed=2)
    p = qm.MarginalProblem.from_state(rho, k=2)
    y = qm.impose(np.eye(8) / 8, p)
    assert y.shape == (5, 8, 8)
    assert p.marginal_deviation(y).max() < 1e-14
