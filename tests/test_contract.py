"""The solver contract: every certifying method returns a certified state or raises, near the
boundary of the compatible set, on noisy marginals, in batches, in single precision; the
registry enforces it for any method; the package has no import cycles.

Independent checks: a returned state is re-checked with ``state_report`` (eigvalsh) and
``problem.marginal_deviation`` (one partial_trace per marginal); a certificate of
incompatibility is rebuilt with explicit Kronecker products (tests/reference.py).
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

import qmarginal as qm
from qmarginal.solvers._api import (METHODS, TOLERANCES, MethodSpec, SolverOutput,
                                    register_method)

from reference import ref_embed

torch = pytest.importorskip("torch")
pytest.importorskip("cvxpy")

CERTIFYING = sorted(n for n, s in METHODS.items() if s.certifies)
SINGLET = np.array([0, 1, -1, 0]) / np.sqrt(2)


def werner(p: float) -> np.ndarray:
    """p |psi-><psi-| + (1 - p) 1/4."""
    return p * np.outer(SINGLET, SINGLET) + (1 - p) * np.eye(4) / 4


#: families with a known compatibility threshold on p: three pairs of three qubits all Werner
#: (compatible iff p <= 1/3), two overlapping pairs (iff p <= 2/3, the symmetric extension)
FAMILIES = {"triangle": (1 / 3, [(0, 1), (0, 2), (1, 2)]), "pairs": (2 / 3, [(0, 1), (1, 2)])}


def werner_problem(family: str, offset: float) -> qm.MarginalProblem:
    threshold, subsets = FAMILIES[family]
    return qm.MarginalProblem({J: werner(threshold + offset) for J in subsets}, dims=2)


def assert_certified_state(problem, state, eig_tol=1e-10, marginal_tol=1e-9):
    state = np.asarray(state.detach().cpu().numpy() if torch.is_tensor(state) else state)
    assert np.allclose(state, state.conj().swapaxes(-1, -2), atol=1e-14)
    assert np.allclose(np.trace(state, axis1=-2, axis2=-1), 1, atol=1e-6)
    lam = np.linalg.eigvalsh(state.astype(np.complex128))[..., 0]
    assert np.all(lam >= -eig_tol), lam
    dev = np.asarray(problem.marginal_deviation(state.astype(np.complex128)))
    assert np.all(dev <= marginal_tol), dev


def assert_verified_certificate(problem, result):
    """sum_J tr(w_J sigma_J) < lambda_min(sum_J w_J (x) 1), rebuilt with Kronecker products."""
    cert = result.certificate
    assert result.status == "incompatible" and cert.verified
    dims = list(problem.dims)
    W = sum(ref_embed(cert.w[J], list(J), dims, normalize=False) for J in problem.marginals)
    lam = np.linalg.eigvalsh(0.5 * (W + W.conj().T))[0]
    energy = sum(np.trace(cert.w[J] @ np.asarray(s)).real for J, s in problem.marginals.items())
    assert energy < lam, (energy, lam)


# ----------------------------------------------------------------------------- near the boundary
@pytest.mark.parametrize("method", CERTIFYING)
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("offset", [-1e-4, -1e-6, 1e-6, 1e-4])
def test_near_the_boundary_a_state_or_a_proof(method, family, offset):
    """Just inside the boundary: a certified state. Just outside: a verified certificate or
    "not certified", never a returned matrix (exact and maxent used to return deviation 5e-7
    without an error at +1e-6, the SDP lambda_min -1.9e-5 marked converged)."""
    p = werner_problem(family, offset)
    if offset < 0:
        rec = qm.reconstruct(p, method)
        assert rec.report.certified and rec.report.verdict == "certified state"
        assert_certified_state(p, rec.state)
        return
    with pytest.raises((qm.IncompatibleMarginalsError, qm.NotCertifiedError)) as info:
        qm.reconstruct(p, method)
    if isinstance(info.value, qm.IncompatibleMarginalsError):
        assert_verified_certificate(p, info.value.result)
    else:
        assert not info.value.reconstruction.report.certified


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("offset", [-1e-6, 1e-6])
def test_check_compatibility_near_the_boundary(family, offset):
    p = werner_problem(family, offset)
    res = qm.check_compatibility(p)
    if offset < 0:
        assert res.status == "compatible"
        assert_certified_state(p, res.state)
    else:
        assert_verified_certificate(p, res)


def test_check_says_undetermined_rather_than_guessing():
    """3e-9 past the triangle's boundary the least-squares residual (1.5e-9 in the largest
    entry) exceeds marginal_tol, and the certificate's gap (~2e-17) is below the rounding
    margin of verifying it: neither answer can be proved, so "undetermined"."""
    p = werner_problem("triangle", 3e-9)
    res = qm.check_compatibility(p, use_exact=False, maxiter=2000)
    assert res.status == "undetermined" and not res.compatible
    assert res.info["reason"]


# ----------------------------------------------------------------------------- noisy marginals
def _noisy(seed: int, scale: float):
    rho = qm.rank_mixture_state(8, 3, seed=seed)
    m = qm.marginals(rho, [(0, 1), (1, 2), (0, 2)])
    rng = np.random.default_rng(seed)
    for J in m:
        E = rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))
        E = E + E.conj().T
        m[J] = m[J] + scale * (E - np.trace(E) / 4 * np.eye(4))
    return qm.MarginalProblem(m, validate=False)


@pytest.mark.parametrize("method", CERTIFYING)
def test_noisy_marginals_are_refused_then_fitted(method):
    """Measured marginals whose overlaps disagree (noise 1e-4): no method returns a state for
    them; with least_squares=True every method returns a state certified against the nearest
    compatible marginals, and the report says so."""
    p = _noisy(seed=3, scale=1e-4)
    with pytest.raises((qm.IncompatibleMarginalsError, qm.NotCertifiedError)) as info:
        qm.reconstruct(p, method)
    if isinstance(info.value, qm.IncompatibleMarginalsError):
        assert_verified_certificate(p, info.value.result)
    rec = qm.reconstruct(p, method, least_squares=True)
    assert rec.report.certified and rec.report.info["least_squares"] is True
    near = qm.check_compatibility(p).nearest_problem(p)
    assert_certified_state(near, rec.state, marginal_tol=1e-8)


# ----------------------------------------------------------------------------- batches
def _mixed_batch():
    """Elements 0 and 2 compatible, 1 incompatible (the triangle at p = 0.4)."""
    subsets = [(0, 1), (0, 2), (1, 2)]
    rho0 = qm.rank_mixture_state(8, 4, seed=1)
    rho2 = qm.rank_mixture_state(8, 2, seed=60)  # formerly a false "incompatible"
    table = {J: np.stack([qm.partial_trace(rho0, J, 2), werner(0.4),
                          qm.partial_trace(rho2, J, 2)]) for J in subsets}
    return qm.MarginalProblem(table, dims=2)


def test_a_failing_element_never_loses_the_others():
    p = _mixed_batch()
    rec = qm.reconstruct(p)  # a batch: per-element answers, no exception
    assert rec.report.certified.tolist() == [True, False, True]
    assert list(rec.errors) == [(1,)]
    err = rec.errors[(1,)]
    assert isinstance(err, qm.IncompatibleMarginalsError) and err.index == (1,)
    assert rec.report.verdict[1] == "incompatible (certificate verified)"
    for i in (0, 2):
        assert_certified_state(p[i], rec.state[i])
    with pytest.raises(qm.IncompatibleMarginalsError, match="1 of 3 batch elements") as info:
        qm.reconstruct(p, strict=True)
    assert info.value.batch.report.certified.tolist() == [True, False, True]


def test_single_problem_raises_unless_not_strict():
    p = werner_problem("triangle", 0.1)
    with pytest.raises(qm.IncompatibleMarginalsError):
        qm.reconstruct(p)
    rec = qm.reconstruct(p, strict=False)
    assert not rec.report.certified and isinstance(rec.errors[()], qm.IncompatibleMarginalsError)
    assert rec.report.verdict == "incompatible (certificate verified)"


# ----------------------------------------------------------------------------- single precision
@pytest.mark.parametrize("method", ["exact", "sdp"])
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_complex64_input_is_solved_in_double_and_certified_as_returned(method, lib):
    """Marginals stored in complex64 disagree on their overlaps by ~1e-8 (rounding); they pass
    validation at the single-precision tolerances and are solved in complex128 to the
    single-precision certification tolerances (they used to be declared impossible after
    11-16 s). The answer comes back in complex64, certified as returned."""
    rho = qm.rank_mixture_state(16, 2, seed=4)
    p64 = qm.MarginalProblem.from_state(rho, k=2)
    table = {J: s.astype(np.complex64) for J, s in p64.marginals.items()}
    p = qm.MarginalProblem(table, dims=2)
    if lib == "torch":
        p = p.to_torch(dtype=torch.complex64)
    rec = qm.reconstruct(p, method)
    eig_tol, marginal_tol = TOLERANCES["complex64"]
    assert rec.report.certified and rec.report.tolerances["marginal_tol"] == marginal_tol
    assert rec.state.dtype == (torch.complex64 if lib == "torch" else np.complex64)
    assert_certified_state(p64, rec.state, eig_tol, marginal_tol)


SEEN = []


def spy_solve(problem, settings, *, x0=None):
    """A registered test method: records the dtype it is given, returns 1/D."""
    SEEN.append(next(iter(problem.marginals.values())).dtype)
    return SolverOutput(np.eye(problem.dim) / problem.dim)


def liar_solve(problem, settings, *, x0=None):
    """A registered test method that claims convergence for a non-state."""
    return SolverOutput(qm.impose(np.eye(problem.dim) / problem.dim, problem), converged=True)


def _register(name, entry, certifies):
    return register_method(MethodSpec(name, f"{__name__}:{entry}",
                                      "qmarginal.solvers.mio:MIOSettings", certifies=certifies,
                                      library="numpy"), replace=True)


def test_the_solver_sees_complex128():
    _register("spy", "spy_solve", certifies=False)
    try:
        SEEN.clear()
        p = qm.MarginalProblem({(0,): np.eye(2, dtype=np.complex64) / 2}, dims=2, n_sites=2)
        rec = qm.reconstruct(p, "spy")
        assert SEEN == [np.complex128] and rec.state.dtype == np.complex64
        assert rec.report.certified  # 1/4 has the marginal 1/2 exactly
    finally:
        METHODS.pop("spy")


# ----------------------------------------------------------------------------- the registry
def test_the_contract_is_enforced_for_any_registered_method():
    """A method that claims convergence for a non-state (the MIO of 1/D on a pure target) is
    caught by reconstruct's own certification: registered as certifying it raises, registered
    as approximate its output is flagged. Adding a method is one function and one MethodSpec."""
    p = qm.MarginalProblem.from_state(qm.rank_mixture_state(8, 1, seed=2), k=2)
    for certifies in (True, False):
        _register("liar", "liar_solve", certifies)
        try:
            if certifies:
                with pytest.raises(qm.NotCertifiedError, match="lambda_min"):
                    qm.reconstruct(p, "liar", check=False)
                # with the check, the compatibility check's own state is returned instead
                rec = qm.reconstruct(p, "liar")
                assert rec.report.certified and "rescued" in rec.report.info
                assert_certified_state(p, rec.state)
            else:
                rec = qm.reconstruct(p, "liar")
                assert not rec.report.certified
                assert rec.report.verdict.startswith("approximate (liar)")
        finally:
            METHODS.pop("liar")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_takes_settings_and_rejects_unknown_options(method):
    spec = METHODS[method]
    cls = spec.settings_class()
    names = {f.name for f in dataclasses.fields(cls)}
    assert {"eig_tol", "marginal_tol"} <= names
    if spec.certifies:
        assert {"maxiter", "time_limit"} <= names  # one spelling for the shared options
    p = qm.MarginalProblem.from_state(qm.rank_mixture_state(8, 2, seed=1), k=2)
    with pytest.raises(qm.MarginalError, match="unknown option.*valid options: eig_tol"):
        qm.reconstruct(p, method, no_such_option=1)
    with pytest.raises(qm.MarginalError, match="eig_tol"):
        qm.reconstruct(p, method, eig_tol=-1.0)


def test_unknown_method_lists_the_registered_ones():
    p = qm.MarginalProblem.from_state(qm.rank_mixture_state(8, 2, seed=1), k=2)
    with pytest.raises(qm.MarginalError, match="unknown method 'nope'.*'exact'"):
        qm.reconstruct(p, "nope")


# ----------------------------------------------------------------------------- import cycles
PACKAGE = Path(qm.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _import_graph() -> dict[str, set[str]]:
    """module -> the qmarginal modules it imports, at module level or inside functions."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")
                    base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod
                           for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith("qmarginal"):
                    graph[name].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_modules():
    """Counting imports inside functions too (they hid the cycles compatibility <->
    reconstruct and solvers <-> learn)."""
    graph = _import_graph()
    assert graph["qmarginal.reconstruct"] and graph["qmarginal.solvers.cdae"]  # parsed
    assert _cycles(graph) == []


def test_no_import_cycles_between_subpackages():
    """solvers, learn and evaluation (and the top-level modules) form an acyclic graph; the
    package's own __init__ (which re-exports the API) is left out: nothing inside imports it."""
    graph = _import_graph()

    def unit(m):
        parts = m.split(".")
        return ".".join(parts[:2])

    packed: dict[str, set[str]] = {}
    for m, deps in graph.items():
        if m == "qmarginal":
            continue
        assert "qmarginal" not in deps, f"{m} imports the package __init__"
        packed.setdefault(unit(m), set()).update(unit(d) for d in deps if unit(d) != unit(m))
    assert _cycles(packed) == []
    assert "qmarginal.learn" in packed["qmarginal.solvers"]  # solvers -> learn, one way
    assert "qmarginal.solvers" not in packed["qmarginal.learn"]
