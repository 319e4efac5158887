"""method="auto": MIO -> CDAE -> exact; valid states on the exact solver's problem set, and the
fallback (qudits, no model for N, empty models_dir) is taken and reported.

Uses the shipped models (``qmarginal/models``) when :func:`find_model` finds one for N; otherwise
a tiny untrained "cdae_clip" (a state by construction) saved in tmp, so the tests never depend on
files outside the repository. Validity is checked independently as in tests/test_exact.py.
"""

import numpy as np
import pytest

import qmarginal as qm
from qmarginal import MarginalError, MarginalProblem, rank_mixture_state
from qmarginal.reconstruct import reconstruct

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from qmarginal.learn.weights import find_model  # noqa: E402

EIG_TOL = 1e-10
DEV_TOL = 1e-9


def _check(problem, state):
    rep = qm.state_report(state)
    assert np.all(np.asarray(rep.valid)), f"lambda_min = {rep.min_eigenvalue}"
    assert np.all(np.asarray(problem.marginal_deviation(state)) <= DEV_TOL)
    assert np.allclose(np.trace(state, axis1=-2, axis2=-1), 1, atol=1e-12)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """The shipped models' directory if it has models for N = 3, 4, 5, else tiny ones in tmp."""
    try:
        for n in (3, 4, 5):
            find_model(n, n - 1)
        return None
    except MarginalError:
        from qmarginal.learn.model import get_model
        from qmarginal.learn.weights import save_weights
        d = tmp_path_factory.mktemp("models")
        torch.manual_seed(0)
        for n in (3, 4, 5):
            save_weights(get_model("cdae_clip", scale=1), d / f"n{n}k{n - 1}_tiny",
                         {"n_qubits": n, "k": n - 1, "data": {"seed_state": "maximally_mixed"}})
        return d


def _ranks(dim):
    return sorted({1, 2, dim // 2, dim})


@pytest.mark.parametrize("n", [3, 4, 5])
def test_auto_valid_on_exact_problem_set(n, models_dir):
    D = 2 ** n
    for r in _ranks(D):
        for seed in range(2):
            p = MarginalProblem.from_state(rank_mixture_state(D, r, seed=100 * r + seed), k=n - 1)
            rec = reconstruct(p, method="auto", models_dir=models_dir)
            info = rec.report.info
            assert info["auto_path"] == "cdae->exact", info["auto_path"]
            assert info["cdae_time_s"] > 0 and info["exact_path"] and "exact_iterations" in info
            assert rec.report.certified
            _check(p, rec.state)


def test_auto_batched_and_k_smaller(models_dir):
    states = np.stack([rank_mixture_state(16, r, seed=r) for r in (1, 3)])
    p = MarginalProblem.from_state(states, k=2)  # k = 2 < N - 1: the N = 4 model still applies
    rec = reconstruct(p, method="auto", models_dir=models_dir)
    assert rec.report.info["auto_path"] == "cdae->exact"
    _check(p, rec.state)


def test_fallback_qudits():
    rho = rank_mixture_state(27, 2, seed=0)
    p = MarginalProblem.from_state(rho, k=2, dims=(3, 3, 3))
    rec = reconstruct(p, method="auto")
    assert rec.report.info["auto_path"].startswith("fallback:qudits")
    assert rec.report.info["cdae_time_s"] == 0.0
    _check(p, rec.state)


def test_fallback_no_model_for_n(tmp_path):
    p = MarginalProblem.from_state(rank_mixture_state(64, 2, seed=1), k=5)
    rec = reconstruct(p, method="auto", models_dir=tmp_path / "nowhere")
    assert rec.report.info["auto_path"].startswith("fallback:no model for N=6")
    _check(p, rec.state)


def test_fallback_empty_models_dir(tmp_path):
    p = MarginalProblem.from_state(rank_mixture_state(8, 1, seed=2), k=2)
    rec = reconstruct(p, method="auto", models_dir=tmp_path)
    assert rec.report.info["auto_path"] == "fallback:no model for N=3 in " + str(tmp_path)
    assert rec.report.info["seed"] == "maximally_mixed"
    _check(p, rec.state)


def test_options_pass_through_and_explicit_model_errors(tmp_path, models_dir):
    p = MarginalProblem.from_state(rank_mixture_state(8, 2, seed=3), k=2)
    with pytest.raises(MarginalError, match="unknown option"):
        reconstruct(p, method="auto", models_dir=models_dir, no_such_option=1)
    with pytest.raises(MarginalError):  # an explicit model that does not exist raises
        reconstruct(p, method="auto", model=tmp_path / "missing.safetensors")


def test_sdp_accepts_cdae_warm_start(models_dir):
    pytest.importorskip("cvxpy")
    p = MarginalProblem.from_state(rank_mixture_state(8, 2, seed=4), k=2)
    cdae = reconstruct(p, "cdae", models_dir=models_dir)
    assert not cdae.report.verdict.startswith("certified") or cdae.report.certified
    rec = reconstruct(p, "sdp", eps=1e-8, x0=cdae.state)
    assert rec.report.certified
    _check(p, rec.state)


BELL = np.zeros((4, 4), complex)
BELL[0, 0] = BELL[0, 3] = BELL[3, 0] = BELL[3, 3] = 0.5


def test_auto_on_incompatible_input_raises_with_a_certificate(models_dir):
    """The README's headline method promises what "exact" promises: three qubit pairs all in
    the same Bell state have no global state, and "auto" says so with a verified certificate
    (it used to return a "valid" state with marginal deviation 0.33)."""
    p = MarginalProblem({(0, 1): BELL, (0, 2): BELL, (1, 2): BELL})
    with pytest.raises(qm.IncompatibleMarginalsError) as info:
        reconstruct(p, method="auto", models_dir=models_dir)
    assert info.value.result.certificate.verified


def test_tiny_model_path(tmp_path):
    """The fixture's fallback models (untrained, saved in tmp) drive the "cdae->exact" path."""
    from qmarginal.learn.model import get_model
    from qmarginal.learn.weights import save_weights
    save_weights(get_model("cdae_clip", scale=1), tmp_path / "n3k2_tiny",
                 {"n_qubits": 3, "k": 2, "data": {"seed_state": "maximally_mixed"}})
    p = MarginalProblem.from_state(rank_mixture_state(8, 2, seed=5), k=2)
    rec = reconstruct(p, method="auto", models_dir=tmp_path)
    assert rec.report.info["auto_path"] == "cdae->exact"
    assert "n3k2_tiny" in rec.report.info["cdae"]["model"]
    _check(p, rec.state)


def test_a_loaded_module_keeps_the_seed_it_was_trained_with(tmp_path):
    """A network passed as a module (as `qmarginal evaluate` does) runs from the MIO seed of its
    card; it used to fall back to the paper's Hilbert-Schmidt seed, which scored the shipped
    models (trained from 1/D) about 0.01 low in F at low rank."""
    from qmarginal.learn.model import get_model
    from qmarginal.learn.pipeline import cdae_states
    from qmarginal.learn.weights import load_weights, save_weights

    save_weights(get_model("cdae_clip", scale=1), tmp_path / "n3k2_tiny",
                 {"n_qubits": 3, "k": 2, "data": {"seed_state": "maximally_mixed"}})
    net, card = load_weights(tmp_path / "n3k2_tiny.json")
    assert net.card == card
    p = MarginalProblem.from_state(rank_mixture_state(8, 2, seed=5), k=2)
    _, info = cdae_states(p, model=net)
    assert info["seed"] == "maximally_mixed"
    _, info = cdae_states(p, model=get_model("cdae_clip", scale=1))  # no card: the paper's
    assert info["seed"] == "hilbert_schmidt"
    rec = reconstruct(p, "cdae", model=net)
    assert rec.report.info["seed"] == "maximally_mixed"
