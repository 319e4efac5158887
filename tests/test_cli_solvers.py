"""`qmarginal reconstruct` and `qmarginal check` through qmarginal.cli.main: every exit code.

0 certified (approximate methods: produced); 1 incompatible (certificate verified); 3 not
certified / undetermined; 2 bad input or usage. Errors are one line on stderr, never a
traceback.
"""

import json

import numpy as np
import pytest

import qmarginal as qm
from qmarginal.cli import main
from qmarginal.examples import example_path

BELL = np.zeros((4, 4), complex)
BELL[0, 0] = BELL[0, 3] = BELL[3, 0] = BELL[3, 3] = 0.5
SINGLET = np.array([0, 1, -1, 0]) / np.sqrt(2)


def werner(p):
    return p * np.outer(SINGLET, SINGLET) + (1 - p) * np.eye(4) / 4


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


@pytest.fixture
def triangle(tmp_path):
    """Just past the Werner triangle's boundary (compatible iff p <= 1/3)."""
    path = tmp_path / "triangle.json"
    w = werner(1 / 3 + 1e-6)
    qm.MarginalProblem({(0, 1): w, (0, 2): w, (1, 2): w}).save(path)
    return path


@pytest.fixture
def rank_deficient(tmp_path):
    """Compatible, but no full-rank state has these marginals: maxent cannot certify."""
    path = tmp_path / "n3k2.json"
    qm.MarginalProblem.load(example_path("n3k2_rank2")).save(path)
    return path


def test_reconstruct_certified_prints_the_verdict_first_and_writes_state(example, tmp_path,
                                                                         capsys):
    out = tmp_path / "state.npz"
    rc = main(["reconstruct", str(example), "--method", "sdp", "--eps", "1e-8", "-o", str(out),
               "-v"])
    text = capsys.readouterr().out
    assert rc == 0
    assert text.splitlines()[0] == f"{example}: certified state"
    assert "info: solver" in text
    with np.load(out, allow_pickle=False) as z:
        state = z["state"]
        report = json.loads(str(z["report_json"]))
    assert state.shape == (16, 16)
    assert report["method"] == "sdp" and report["certified"] is True
    side = json.loads((tmp_path / "state.report.json").read_text())
    assert side["max_marginal_deviation"] <= 1e-9
    p = qm.MarginalProblem.load(example)
    assert p.marginal_deviation(state) <= 1e-9


def test_reconstruct_method_options(example, capsys):
    assert main(["reconstruct", str(example), "--method", "mio", "--seed-state", "hilbert_schmidt",
                 "--seed", "3", "-v"]) == 0  # approximate: produced, whatever its verdict
    text = capsys.readouterr().out
    assert "info: seed" in text and text.startswith(f"{example}: approximate (mio)")
    assert main(["reconstruct", str(example), "--method", "sdp", "--form", "paper",
                 "--option", "eps=1e-7", "--maxiter", "20000", "--verbose"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("info: form") and ln.endswith("paper") for ln in lines)
    assert any(ln.startswith("setting: eps") and ln.endswith("1e-07") for ln in lines)
    assert any(ln.startswith("setting: maxiter") and ln.endswith("20000") for ln in lines)


@pytest.mark.parametrize("method", ["exact", "auto", "sdp", "maxent"])
def test_reconstruct_incompatible_exits_1(method, triangle, tmp_path, capsys):
    out = tmp_path / "never.npz"
    assert main(["reconstruct", str(triangle), "--method", method, "-o", str(out)]) == 1
    text = capsys.readouterr().out
    assert text.startswith(f"{triangle}: incompatible (certificate verified)")
    assert "lambda_min(W)" in text and "not written" in text
    assert not out.exists()


def test_reconstruct_not_certified_exits_3(rank_deficient, tmp_path, capsys):
    out = tmp_path / "best.npz"
    args = ["reconstruct", str(rank_deficient), "--method", "maxent", "--maxiter", "40",
            "--option", "newton_steps=1"]
    assert main(args + ["-o", str(out)]) == 3
    text = capsys.readouterr().out
    assert "not certified" in text.splitlines()[0] and not out.exists()
    assert main(args + ["-o", str(out), "--no-strict"]) == 3  # the best iterate, flagged
    capsys.readouterr()
    with np.load(out) as z:
        assert json.loads(str(z["report_json"]))["certified"] is False


def test_reconstruct_bad_input_and_usage_exit_2(example, tmp_path, capsys):
    assert main(["reconstruct", str(example), "--method", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown method" in err and "Traceback" not in err and err.count("\n") == 1
    assert main(["reconstruct", str(example), "--method", "sdp", "--option", "bogus"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["reconstruct", str(example), "--method", "sdp", "--option", "bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown option" in err and "valid options" in err and "Traceback" not in err
    assert main(["reconstruct", str(example), "--eig-tol", "-1"]) == 2
    assert "eig_tol" in capsys.readouterr().err
    assert main(["reconstruct", "missing.json"]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "qmarginal.problem", "version": 1, "dims": [2, 2]}')
    assert main(["reconstruct", str(bad)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_reconstruct_complex64_file(tmp_path, capsys):
    rho = qm.rank_mixture_state(8, 2, seed=3)
    table = {J: s.astype(np.complex64) for J, s in qm.marginals(rho, [(0, 1), (1, 2)]).items()}
    path = tmp_path / "single.npz"
    qm.MarginalProblem(table).save(path)
    assert main(["reconstruct", str(path)]) == 0
    text = capsys.readouterr().out
    assert "certified state" in text.splitlines()[0] and "deviation <= 1e-06" in text


def test_check_exit_codes(example, monogamy, triangle, tmp_path, capsys):
    assert main(["check", str(example)]) == 0
    assert "compatible (a certified state)" in capsys.readouterr().out
    out = tmp_path / "cert.npz"
    assert main(["check", str(monogamy), "-o", str(out)]) == 1
    text = capsys.readouterr().out
    assert "incompatible (certificate verified)" in text and "certificate lambda_min(W)" in text
    with np.load(out) as z:
        assert str(z["status"]) == "incompatible" and "w_0" in z.files
    assert main(["check", str(triangle)]) == 1
    capsys.readouterr()
    # 3e-9 past the boundary: neither a state within the tolerance nor a provable certificate
    w = werner(1 / 3 + 3e-9)
    close = tmp_path / "close.json"
    qm.MarginalProblem({(0, 1): w, (0, 2): w, (1, 2): w}).save(close)
    assert main(["check", str(close), "--maxiter", "500", "--time-limit", "20"]) == 3
    assert "undetermined" in capsys.readouterr().out
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
    assert main(["reconstruct", str(path), "--no-validate"]) == 1
    capsys.readouterr()
    assert main(["reconstruct", str(path), "--no-validate", "--least-squares", "--method",
                 "sdp", "--eps", "1e-9"]) == 0
    text = capsys.readouterr().out
    assert "info: least_squares" in text and "True" in text
