"""Evaluation: Section V statistics, evaluate/compare/figures end to end through the CLI."""

import csv
import math

import numpy as np
import pytest

from qmarginal.cli import main
from qmarginal.evaluation import COLUMNS, EXTRA_COLUMNS, evaluate, parse_case, summarize
from qmarginal.evaluation.compare import compare_rows
from qmarginal.evaluation.published import default_reference_dir, load_fidelity, load_runtimes
from qmarginal.errors import MarginalError


def test_summarize_matches_hand_computation():
    fbar = [0.90, 0.80, 0.95, 0.40, 0.85]
    valid = [True, True, True, False, True]
    s = summarize(fbar, valid, trace_distance=[0.1, 0.2, 0.0, 0.5, 0.2],
                  neg_count=[0, 0, 0, 3, 0], neg_sum=[0, 0, 0, -0.3, 0])
    v = [0.90, 0.80, 0.95, 0.85]  # valid only, as the paper
    mean = sum(v) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / 3)  # ddof = 1
    assert s["fidelity_mean"] == pytest.approx(mean) and s["fidelity_sd"] == pytest.approx(sd)
    assert s["success_rate_percent"] == pytest.approx(80.0) and s["samples"] == 5
    assert s["fidelity_mean_all"] == pytest.approx(sum(fbar) / 5)
    assert s["fidelity_sd_all"] == pytest.approx(np.std(fbar, ddof=1))
    assert s["trace_distance_mean"] == pytest.approx(0.2)
    assert s["neg_count_mean"] == pytest.approx(0.6) and s["neg_sum_mean"] == pytest.approx(-0.06)
    none = summarize([0.5, 0.6], [False, False])
    assert math.isnan(none["fidelity_mean"]) and none["success_rate_percent"] == 0.0
    one = summarize([0.5, 0.6], [True, False])
    assert one["fidelity_mean"] == 0.5 and math.isnan(one["fidelity_sd"])


def test_parse_case_and_published_copy():
    assert (parse_case("N3k2").n, parse_case("n4K3").k) == (3, 3)
    for bad in ("3k2", "N3k3", "N3k0"):
        with pytest.raises(MarginalError):
            parse_case(bad)
    rows = load_fidelity()
    assert list(rows[0]) == COLUMNS
    assert {r["method"] for r in rows} == {"cdae", "cdae_then_mio", "random_guess"}
    assert (default_reference_dir() / "README.md").is_file() and load_runtimes()


def test_measures_agree_with_direct_computation():
    """The random guess row equals the fidelities of the same random states computed here."""
    import qmarginal as qm
    from qmarginal.evaluation.evaluate import Case, _method_rng, _targets

    rows = evaluate(["N3k2"], [3], samples=6, methods=["random_guess"], published=[])
    rho = _targets(Case(3, 2), 3, 6, 0)
    rng = _method_rng(Case(3, 2), 3, "random_guess", 0)
    guess = qm.hilbert_schmidt_state(8, batch=6, seed=int(rng.integers(2**31 - 1)))
    p = qm.MarginalProblem.from_state(rho, k=2)
    fbar = qm.mean_marginal_fidelity(guess, p.marginals)
    assert rows[0]["fidelity_mean"] == pytest.approx(np.mean(fbar), abs=1e-12)
    assert rows[0]["fidelity_sd"] == pytest.approx(np.std(fbar, ddof=1), abs=1e-12)
    assert rows[0]["success_rate_percent"] == 100.0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from qmarginal.learn.model import get_model
    from qmarginal.learn.weights import save_weights

    d = tmp_path_factory.mktemp("models")
    save_weights(get_model("cdae", scale=1), d / "n3k2_tiny",
                 {"n_qubits": 3, "k": 2, "loss": {"kind": "model1"}, "samples_seen": 0})
    save_weights(get_model("cdae", scale=1), d / "model2" / "n3k2_m2",
                 {"n_qubits": 3, "k": 2, "loss": {"kind": "model2"}, "samples_seen": 0})
    return d


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_compare_figures_cli(tiny_model, tmp_path, capsys):
    out = tmp_path / "results.csv"
    rc = main(["evaluate", "--cases", "N3k2", "--ranks", "7", "8", "--samples", "5",
               "--methods", "mio_mixed", "mio_clip", "random_guess", "exact", "cdae",
               "cdae_then_mio", "model2", "--models", str(tiny_model),
               "--model2", str(tiny_model / "model2" / "n3k2_m2.safetensors"),
               "--threads", "1", "--time-limit", "30", "-o", str(out), "-q"])
    assert rc == 0
    rows = _read(out)
    assert list(rows[0]) == COLUMNS + EXTRA_COLUMNS
    assert len(rows) == 2 * 7
    by = {(r["method"], int(r["rank"])): r for r in rows}
    assert {m for m, _ in by} == {"mio_mixed", "mio_clip", "random_guess", "exact", "cdae",
                                   "cdae_then_mio", "model2"}
    for rank in (7, 8):
        assert float(by["mio_clip", rank]["success_rate_percent"]) == 100.0
        assert float(by["exact", rank]["success_rate_percent"]) == 100.0
        assert float(by["exact", rank]["fidelity_mean"]) == pytest.approx(1.0, abs=1e-8)
        assert float(by["cdae_then_mio", rank]["fidelity_mean_all"]) == pytest.approx(1.0, abs=1e-8)
        assert "n3k2_tiny" in by["cdae", rank]["note"]
        assert int(by["cdae", rank]["samples"]) == 5
        assert float(by["cdae", rank]["seconds_per_instance"]) > 0

    capsys.readouterr()
    assert main(["compare", str(out), "--reference", str(default_reference_dir())]) == 0
    text = capsys.readouterr().out
    assert "N3k2" in text and "cdae_then_mio" in text and "rows compared" in text

    pytest.importorskip("matplotlib")
    figs = tmp_path / "figs"
    assert main(["figures", "--results", str(out), "-o", str(figs)]) == 0
    for name in ("figure2", "figure4", "runtime"):
        for ext in ("png", "pdf"):
            assert (figs / f"{name}.{ext}").stat().st_size > 1000


def test_compare_verdicts():
    pub = [{"case": "N3k2", "method": "cdae", "rank": 2, "fidelity_mean": 0.9,
            "fidelity_sd": 0.03, "samples": 72, "success_rate_percent": 86.0},
           {"case": "N3k2", "method": "cdae_then_mio", "rank": 5, "fidelity_mean": 1.0,
            "fidelity_sd": 0.0, "samples": 100, "success_rate_percent": 5.0}]
    ours = [{"case": "N3k2", "method": "cdae", "rank": 2, "fidelity_mean": 0.95,
             "fidelity_sd": 0.02, "samples": 100, "success_rate_percent": 90.0},
            {"case": "N3k2", "method": "cdae_then_mio", "rank": 5, "fidelity_mean": None,
             "fidelity_sd": None, "samples": 100, "success_rate_percent": 0.0},
            {"case": "N9k2", "method": "cdae", "rank": 2, "fidelity_mean": 0.9}]
    rows = compare_rows(ours, pub)
    assert [r["verdict"] for r in rows] == ["meets/beats", "falls short"]
    assert rows[0]["dF"] == pytest.approx(0.05) and rows[0]["dSuccess"] == pytest.approx(4.0)


def test_missing_model_is_a_note_not_a_crash(tmp_path):
    pytest.importorskip("torch")
    rows = evaluate(["N3k2"], [8], samples=2, methods=["cdae", "mio_clip"], models_dir=tmp_path,
                    published=[])
    assert rows[0]["samples"] == 0 and rows[0]["note"].startswith("skipped")
    assert rows[1]["samples"] == 2
