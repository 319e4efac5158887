"""`qmarginal reconstruct` and `qmarginal check` through qmarginal.cli.main."""

import json

import numpy as np
import pytest

import qmarginal as qm
from qmarginal.cli import main
from qmarginal.examples import example_path

BELL = np.zeros((4, 4), complex)
BELL[0, 0] = BELL[0, 3] = BELL[3, 0] = BELL[3, 3] = 0.5


@pytest.fixture
def example(tmp_path):
    path = tmp_path / "p.json"
    qm.MarginalProblem.load(example_path("n4k3_rank2")).save(path)
    return path


@pytest.fixture
def monogamy(tmp_path):
    path = tmp_path / "bell.npz"
    qm.MarginalProblem({(0, 1): BELL, (1, 2): BELL}).save(path)
    return path


def test_reconstruct_prints_table_and_writes_state(example, tmp_path, capsys):
    out = tmp_path / "state.npz"
    rc = main(["reconstruct", str(example), "--method", "sdp", "--eps", "1e-8", "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "valid state (lambda_min >= -1e-10)" in text and "info: solver" in text
    with np.load(out, allow_pickle=False) as z:
        state = z["state"]
        report = json.loads(str(z["report_json"]))
    assert state.shape == (16, 16)
    assert report["method"] == "sdp"
    side = json.loads((tmp_path / "state.report.json").read_text())
    assert side["max_marginal_deviation"] < 1e-6
    p = qm.MarginalProblem.load(example)
    assert p.marginal_deviation(state) < 1e-6


def test_reconstruct_method_options(example, capsys):
    assert main(["reconstruct", str(example), "--method", "mio", "--seed-state", "hilbert_schmidt",
                 "--seed", "3"]) == 0
    assert "info: seed" in capsys.readouterr().out
    assert main(["reconstruct", str(example), "--method", "sdp", "--form", "paper",
                 "--option", "eps=1e-7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("info: form") and ln.endswith("paper") for ln in lines)
    assert any(ln.startswith("tolerance: eps") and ln.endswith("1e-07") for ln in lines)


def test_reconstruct_errors_are_one_line(example, monogamy, capsys):
    assert main(["reconstruct", str(example), "--method", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown method" in err and "Traceback" not in err and err.count("\n") == 1
    assert main(["reconstruct", str(example), "--method", "sdp", "--option", "bogus"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["reconstruct", str(example), "--method", "sdp", "--option", "bogus=1"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    # incompatible input: a clear error carrying the certificate numbers
    assert main(["reconstruct", str(monogamy), "--method", "sdp"]) == 2
    err = capsys.readouterr().err
    assert "no state has these marginals" in err and "lambda_min(W)" in err
    assert main(["reconstruct", "missing.json"]) == 2


def test_check_exit_codes(example, monogamy, tmp_path, capsys):
    assert main(["check", str(example)]) == 0
    assert "compatible" in capsys.readouterr().out
    out = tmp_path / "cert.npz"
    assert main(["check", str(monogamy), "-o", str(out)]) == 1
    text = capsys.readouterr().out
    assert "INCOMPATIBLE" in text and "certificate lambda_min(W)" in text and "verified" in text
    with np.load(out) as z:
        assert str(z["status"]) == "incompatible" and "w_0" in z.files
    assert main(["check", str(tmp_path / "nothing.json")]) == 2


def test_noisy_file_least_squares(tmp_path, capsys):
    rho = qm.rank_mixture_state(8, 2, seed=5)
    m = qm.marginals(rho, [(0, 1), (1, 2)])
    m[(0, 1)] = m[(0, 1)] + 1e-3 * np.diag([1, -1, 1, -1])
    path = tmp_path / "noisy.json"
    qm.MarginalProblem(m, validate=False).save(path)
    assert main(["check", str(path)]) == 2  # validation names the overlap discrepancy
    assert "disagree" in capsys.readouterr().err
    assert main(["check", str(path), "--no-validate"]) == 1
    capsys.readouterr()
    assert main(["reconstruct", str(path), "--no-validate", "--least-squares", "--method",
                 "sdp", "--eps", "1e-9"]) == 0
    text = capsys.readouterr().out
    assert "info: least_squares" in text and "True" in text
