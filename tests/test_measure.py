"""measure() and the batched marginal metrics against a slow, obvious reference.

The reference works on one unbatched complex128 numpy problem at a time: one
``qm.partial_trace`` per marginal, the textbook fidelity (tr sqrt(sqrt(a) b sqrt(a)))^2 with
scipy's sqrtm (the SVD form ||sqrt(a) sqrt(b)||_1^2 where a marginal is singular and sqrtm is
not accurate), the trace distance from the eigenvalues of the difference. The fast path groups
the marginals by size, takes all partial traces of a group with one gather and batches the
eigendecompositions (qmarginal.metrics._per_marginal). The tolerances are per report field, so
they live here rather than in conftest's per-dtype table.
"""

import itertools

import numpy as np
import pytest
import scipy.linalg
import torch

import qmarginal as qm
from qmarginal import metrics
from qmarginal.report import measure as _measure


def measure(problem, state, **kw):
    """measure() at the default complex128 certification tolerances."""
    return _measure(problem, state, eig_tol=1e-10, marginal_tol=1e-9, **kw)

#: |fast - reference| allowed, per complex dtype of the input, per report field. The reference is
#: computed in double precision from the same (rounded) inputs. sqrtm-based fidelities lose a few
#: digits against the fast path's eigendecompositions, hence the looser fidelity tolerance.
TOL = {
    "complex128": {"dev": 1e-13, "fid": 1e-10, "td": 1e-13, "eig": 1e-13},
    "complex64": {"dev": 2e-7, "fid": 2e-6, "td": 2e-7, "eig": 2e-7},
}  # observed maxima: complex128 fid 1.3e-11 (sqrtm), others < 1e-16; complex64 fid 2.4e-7


def _psd(x):
    h = (x + x.conj().T) / 2
    w, v = np.linalg.eigh(h)
    return (v * np.clip(w, 0, None)) @ v.conj().T


def textbook_fidelity(a, b):
    """(tr sqrt(sqrt(a) b sqrt(a)))^2 of the PSD parts, with scipy's sqrtm, clipped to [0, 1]."""
    s = scipy.linalg.sqrtm(_psd(a))
    return float(np.clip(np.real(np.trace(scipy.linalg.sqrtm(s @ _psd(b) @ s))) ** 2, 0, 1))


def svd_fidelity(a, b):
    """||sqrt(a) sqrt(b)||_1^2 with the square roots from eigh: accurate for rank-deficient input."""
    def root(x):
        h = (x + x.conj().T) / 2
        w, v = np.linalg.eigh(h)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.conj().T

    return float(np.clip(np.linalg.svd(root(a) @ root(b), compute_uv=False).sum() ** 2, 0, 1))


def reference_fidelity(a, b):
    """The textbook formula where sqrtm is accurate (both PSD parts well conditioned), else the
    SVD form (sqrtm of a singular matrix loses about half the digits)."""
    def cond_ok(x):
        w = np.linalg.eigvalsh((x + x.conj().T) / 2)
        return w.min() >= 1e-6 * w.max()

    return textbook_fidelity(a, b) if cond_ok(a) and cond_ok(b) else svd_fidelity(a, b)


def reference(problem, state, atol=metrics.VALIDITY_ATOL, fid=reference_fidelity):
    """The report's numbers for one unbatched numpy problem, computed the obvious way."""
    s = np.asarray(state, dtype=np.complex128)
    h = (s + s.conj().T) / 2
    tr = np.trace(h).real
    rho = h / tr
    w = np.linalg.eigvalsh(rho)
    devs, fids, tds = [], [], []
    for J, sig in problem.marginals.items():
        sig = np.asarray(sig, dtype=np.complex128)
        red = qm.partial_trace(rho, J, problem.dims)
        devs.append(np.abs(red - sig).max())
        fids.append(fid(sig, red))
        d = sig - red
        tds.append(0.5 * np.abs(np.linalg.eigvalsh((d + d.conj().T) / 2)).sum())
    return {"valid": bool(w.min() >= -atol and tr > 0), "min_eigenvalue": w.min(),
            "negative_count": int((w < -atol).sum()), "negative_sum": w[w < -atol].sum(),
            "trace": tr, "max_marginal_deviation": max(devs),
            "mean_marginal_fidelity": np.mean(fids), "mean_marginal_trace_distance": np.mean(tds)}


def case(dims, subsets, *, rank=None, noise=1e-3, scale=1.0, batch=None, seed=0):
    """A problem from a random state and a nearby, slightly non-PSD, unnormalised 'solver output'."""
    D = int(np.prod(dims))
    rho = qm.rank_mixture_state(D, rank, batch=batch, seed=seed)
    problem = qm.MarginalProblem.from_state(rho, subsets=subsets, dims=dims)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal(rho.shape) + 1j * rng.standard_normal(rho.shape)
    state = scale * (rho + noise * (x + np.conj(np.swapaxes(x, -1, -2))) / D)
    return problem, state


def as_input(problem, state, lib, dtype):
    if lib == "torch":
        tdt = getattr(torch, dtype)
        return problem.to_torch(dtype=tdt), torch.as_tensor(state).to(tdt)
    table = {J: np.asarray(s).astype(dtype) for J, s in problem.marginals.items()}
    return problem.with_marginals(table), np.asarray(state).astype(dtype)


def to_np(x):
    return np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)


def check_report(report, problem, state, dtype, batch=()):
    """Compare every number of ``report`` with :func:`reference`, element by element."""
    tol = TOL[dtype]
    flat = int(np.prod(batch)) if batch else 1
    marg = {J: to_np(s).astype(np.complex128).reshape((flat,) + to_np(s).shape[-2:])
            for J, s in problem.marginals.items()}
    st = to_np(state).astype(np.complex128).reshape((flat,) + to_np(state).shape[-2:])
    for i in range(flat):
        p_i = qm.MarginalProblem({J: m[i] for J, m in marg.items()}, problem.dims, validate=False)
        ref = reference(p_i, st[i])

        def get(name):
            return to_np(getattr(report, name)).reshape(-1)[i] if batch else to_np(
                getattr(report, name))

        assert bool(get("valid")) == ref["valid"]
        assert int(get("negative_count")) == ref["negative_count"]
        assert abs(get("min_eigenvalue") - ref["min_eigenvalue"]) <= tol["eig"]
        assert abs(get("negative_sum") - ref["negative_sum"]) <= tol["eig"] * st.shape[-1]
        assert abs(get("trace") - ref["trace"]) <= tol["eig"]
        assert abs(get("max_marginal_deviation") - ref["max_marginal_deviation"]) <= tol["dev"]
        assert abs(get("mean_marginal_fidelity") - ref["mean_marginal_fidelity"]) <= tol["fid"]
        assert abs(get("mean_marginal_trace_distance")
                   - ref["mean_marginal_trace_distance"]) <= tol["td"]


QUBITS = [((2,) * 4, list(itertools.combinations(range(4), 2))),        # all 2-body of 4
          ((2,) * 6, list(itertools.combinations(range(6), 3))),        # all 3-body of 6
          ((2,) * 5, [(0, 1), (1, 2, 3), (0, 4), (2,), (0, 1, 2, 3, 4)])]  # sizes 4, 8, 2, 32
QUDITS = [((3, 3, 2), [(0, 1), (1, 2), (0, 2), (2,), (0, 1, 2)]),       # d_J 9, 6, 6, 2, 18
          ((3, 2, 4), [(0,), (1, 2), (0, 2), (1,)])]                    # d_J 3, 8, 12, 2


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["complex128", "complex64"])
@pytest.mark.parametrize("dims,subsets", QUBITS + QUDITS)
def test_measure_matches_the_reference(dims, subsets, lib, dtype):
    problem, state = case(dims, subsets, scale=2.5, seed=len(subsets))
    p, s = as_input(problem, state, lib, dtype)
    rho, report = measure(p, s)
    check_report(report, p, s, dtype)
    # the state comes back hermitised and trace-normalised, in the input's library and dtype
    assert type(rho) is type(s) and rho.dtype == s.dtype
    assert abs(complex(to_np(rho).trace()) - 1) <= TOL[dtype]["eig"] * 10
    # the report holds plain Python numbers for one problem, whatever the input's library
    for name in ("max_marginal_deviation", "mean_marginal_fidelity",
                 "mean_marginal_trace_distance", "min_eigenvalue"):
        assert type(getattr(report, name)) is float
    assert type(report.certified) is bool and type(report.verdict) is str


@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["complex128", "complex64"])
def test_measure_is_batched(lib, dtype):
    dims, subsets = (3, 3, 2), [(0, 1), (1, 2), (0, 2), (2,)]
    problem, state = case(dims, subsets, batch=(2, 3), noise=3e-3, seed=7)
    p, s = as_input(problem, state, lib, dtype)
    _, report = measure(p, s)
    check_report(report, p, s, dtype, batch=(2, 3))
    for name in ("max_marginal_deviation", "mean_marginal_fidelity",
                 "mean_marginal_trace_distance", "certified", "verdict"):
        v = getattr(report, name)
        assert isinstance(v, np.ndarray) and v.shape == (2, 3)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_certified_is_the_contracts_test(lib):
    """certified <=> finite, tr > 0, lambda_min >= -eig_tol and deviation <= marginal_tol, per
    element, against the reference's numbers; the verdict says which test failed."""
    dims, subsets = (2, 2, 2), [(0, 1), (1, 2)]
    rho = qm.rank_mixture_state(8, 2, batch=5, seed=3)
    problem = qm.MarginalProblem.from_state(rho, subsets=subsets, dims=dims)
    x = rho.copy()
    x[1] = (1 - 1e-7) * rho[1] + 1e-7 * qm.hilbert_schmidt_state(8, seed=1)  # marginals off
    w, v = np.linalg.eigh(rho[2])
    x[2] = (v * (w - 2e-10 * (w < 1e-12))) @ v.conj().T  # slightly negative, exact marginals
    x[3] = np.nan
    x[4] = -rho[4]  # trace -1
    p, s = as_input(problem, x, lib, "complex128")
    _, rep = _measure(p, s, eig_tol=1e-10, marginal_tol=1e-9, method="exact", certifies=True)
    assert rep.certified.tolist() == [True, False, False, False, False]
    assert rep.verdict[0] == "certified state"
    assert "marginal deviation" in rep.verdict[1] and "lambda_min" in rep.verdict[2]
    assert "non-finite" in rep.verdict[3] and "non-finite entries or a trace" in rep.verdict[4]
    assert np.isnan(rep.min_eigenvalue[3]) and not rep.valid[3]
    ref = reference(problem[2], x[2])
    assert ref["min_eigenvalue"] < -1e-10 and ref["max_marginal_deviation"] <= 1e-9
    # looser tolerances certify the near misses; an approximate method is labelled as such
    _, loose = _measure(p, s, eig_tol=1e-9, marginal_tol=1e-6, method="mio")
    assert loose.certified.tolist() == [True, True, True, False, False]
    assert loose.verdict[3].startswith("approximate (mio): not a certified state")


def test_single_precision_output_is_certified_as_returned():
    """With out_dtype complex64 the state is rounded first and measured as returned."""
    rho = qm.rank_mixture_state(16, 1, seed=2)
    problem = qm.MarginalProblem.from_state(rho, k=3)
    out, rep = _measure(problem, rho, eig_tol=1e-10, marginal_tol=1e-9, out_dtype=np.complex64)
    assert out.dtype == np.complex64
    lam = np.linalg.eigvalsh(out.astype(np.complex128))[0]
    assert rep.min_eigenvalue == pytest.approx(lam, abs=1e-15)
    assert rep.max_marginal_deviation == pytest.approx(
        float(problem.marginal_deviation(out.astype(np.complex128))), abs=1e-15)


def test_measure_of_one_state_against_a_batch_of_problems_broadcasts():
    dims, subsets = (2,) * 4, [(0, 1), (2, 3), (1, 2, 3)]
    problem, state = case(dims, subsets, batch=(3,), seed=3)
    _, report = measure(problem, state[0])
    for i in range(3):
        ref = reference(problem[i], state[0])
        assert abs(report.mean_marginal_fidelity[i] - ref["mean_marginal_fidelity"]) <= 1e-10
        assert abs(report.max_marginal_deviation[i] - ref["max_marginal_deviation"]) <= 1e-13


def test_measure_deviation_is_the_problems_marginal_deviation():
    problem, state = case((2,) * 5, list(itertools.combinations(range(5), 2)), batch=(4,))
    rho, report = measure(problem, state)
    np.testing.assert_allclose(report.max_marginal_deviation, problem.marginal_deviation(rho),
                               rtol=0, atol=1e-15)


def test_fidelity_stays_accurate_for_rank_deficient_marginals():
    """The 5-qubit marginals of a rank-2 6-qubit state have rank <= 4 of 32 (as the 9-qubit ones
    of a 10-qubit state): the eigenvalues of sqrt(a) b sqrt(a) would put sqrt(eps) ~ 1e-8 per zero eigenvalue into
    sqrt(F). The report must keep 1 - F at the level of the true, 1e-11 small, infidelity."""
    dims = (2,) * 6
    subsets = list(itertools.combinations(range(6), 5))
    problem, state = case(dims, subsets, rank=2, noise=1e-9, seed=11)
    _, report = measure(problem, state)
    ref = reference(problem, state, fid=svd_fidelity)
    assert abs(report.mean_marginal_fidelity - ref["mean_marginal_fidelity"]) <= 1e-13
    # the exact marginals have fidelity one to rounding
    _, exact = measure(problem, qm.rank_mixture_state(64, 2, seed=11))
    assert abs(exact.mean_marginal_fidelity - 1) <= 1e-13


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_fidelity_routes_agree_on_a_mixed_batch(lib):
    """Well-conditioned pairs take the eigenvalue route, rank-deficient ones the SVD route; in a
    batch mixing both, each element gets the fidelity of its own unbatched call."""
    full = qm.hilbert_schmidt_state(8, batch=3, seed=1)
    low = qm.hilbert_schmidt_state(8, 2, batch=3, seed=2)
    v = qm.haar_unitary(8, seed=3)
    p, q = np.array([0.7, 0.3] + [0.0] * 6), np.array([0.4, 0.6] + [0.0] * 6)
    commuting = (v * p) @ v.conj().T, (v * q) @ v.conj().T  # same support: F = (sum sqrt(pq))^2
    pairs = [(full[0], full[1], textbook_fidelity(full[0], full[1]), 1e-12),
             (*commuting, np.sum(np.sqrt(p * q)) ** 2, 1e-13),
             (full[2], low[0], svd_fidelity(full[2], low[0]), 1e-7),  # sqrt(eps) sensitive
             (low[1], low[1], 1.0, 1e-13),
             (full[1], full[2], textbook_fidelity(full[1], full[2]), 1e-12)]
    a, b = np.stack([x for x, _, _, _ in pairs]), np.stack([y for _, y, _, _ in pairs])
    conv = (lambda x: torch.as_tensor(x)) if lib == "torch" else (lambda x: x)
    f = to_np(qm.fidelity(conv(a), conv(b)))
    for i, (x, y, ref, tol) in enumerate(pairs):
        assert abs(f[i] - ref) <= tol
        assert abs(f[i] - float(to_np(qm.fidelity(conv(x), conv(y))))) <= 1e-14


def test_mean_marginal_fidelity_is_the_reports():
    """One implementation: the public helper and the report give the same number."""
    for dims, subsets in QUBITS + QUDITS:
        problem, state = case(dims, subsets, seed=5)
        rho, report = measure(problem, state)
        f = qm.mean_marginal_fidelity(rho, problem.marginals, problem.dims)
        assert f == report.mean_marginal_fidelity
        assert abs(f - reference(problem, state)["mean_marginal_fidelity"]) <= 1e-10
    ft = qm.mean_marginal_fidelity(torch.as_tensor(rho), problem.to_torch().marginals, problem.dims)
    assert isinstance(ft, torch.Tensor) and abs(float(ft) - f) <= 1e-13


def test_gather_and_chunked_paths_agree(monkeypatch):
    """Force the per-subset partial_trace path and one-marginal chunks: same numbers."""
    problem, state = case((3, 3, 2), QUDITS[0][1], batch=(2,), seed=9)
    _, fast = measure(problem, state)
    metrics._trace_plan.cache_clear()
    monkeypatch.setattr(metrics, "_GATHER_MAX", 0)
    monkeypatch.setattr(metrics, "_CHUNK_ENTRIES", 1)
    try:
        _, slow = measure(problem, state)
    finally:
        metrics._trace_plan.cache_clear()
    for name in ("max_marginal_deviation", "mean_marginal_fidelity",
                 "mean_marginal_trace_distance"):
        np.testing.assert_allclose(getattr(slow, name), getattr(fast, name), rtol=0, atol=1e-14)


@pytest.mark.parametrize("dims", [(2, 2, 2, 2), (3, 2, 2), (2, 3, 4), (5,), (2, 3)])
def test_gather_indices_give_partial_trace(dims):
    """The partial traces that the metrics see are partial_trace's, for every subset (kept order,
    sites numbered from the most significant factor), including J = all sites and J = ()."""
    n = len(dims)
    subsets = [J for k in range(n + 1) for J in itertools.combinations(range(n), k)]
    D = int(np.prod(dims))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, D, D)) + 1j * rng.standard_normal((2, D, D))
    marg = {J: np.zeros((int(np.prod([dims[s] for s in J])),) * 2) for J in subsets}
    seen = []

    def record(sigma, red):
        seen.append(red)
        return red[..., 0, 0].real

    metrics._per_marginal(x, marg, dims, record)
    reds = iter(r for chunk in seen for r in np.moveaxis(chunk, -3, 0))
    for group, _, _ in metrics._trace_plan(tuple(dims), tuple(subsets)):
        for pos in group:
            np.testing.assert_allclose(next(reds), qm.partial_trace(x, subsets[pos], dims),
                                       rtol=0, atol=1e-12)
