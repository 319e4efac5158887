"""The core subcommands: qmarginal example / info (exit codes and messages)."""

import json

import numpy as np

import qmarginal as qm
from qmarginal.cli import main
from qmarginal.examples import EXAMPLES, example_path


def test_every_shipped_example_is_a_valid_problem():
    for name in EXAMPLES:
        p = qm.MarginalProblem.load(example_path(name))
        assert len(p.marginals) >= 3


def test_example_copies_a_shipped_problem(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["example", "-o", str(out), "--name", "n3k2_rank2"]) == 0
    assert "shipped example n3k2_rank2" in capsys.readouterr().out
    assert qm.MarginalProblem.load(out).subsets == [(0, 1), (0, 2), (1, 2)]


def test_example_generates_qudit_problems(tmp_path, capsys):
    out = tmp_path / "q.npz"
    code = main(["example", "--generate", "-o", str(out), "--n-sites", "3", "--dims", "2", "3", "2",
                 "-k", "2", "--rank", "2", "--seed", "4"])
    assert code == 0
    p = qm.MarginalProblem.load(out)
    assert p.dims == (2, 3, 2)
    # rank-2 global state: the 2-body marginals have rank at most 2 * d_{J^c}
    w = np.linalg.eigvalsh(p.marginals[(0, 2)])
    assert (w > 1e-10).sum() <= 2 * 3


def test_info_describes_and_validates(tmp_path, capsys):
    assert main(["info", str(example_path("ring6_rank4"))]) == 0
    out = capsys.readouterr().out
    assert "valid marginal problem" in out and "(0, 5)" in out


def test_info_reports_bad_input_without_traceback(tmp_path, capsys):
    p = tmp_path / "bad.json"
    doc = json.loads(example_path("n3k2_rank2").read_text())
    doc["marginals"][1]["real"][0][0] += 0.5  # trace no longer one
    p.write_text(json.dumps(doc))
    assert main(["info", str(p)]) == 2
    err = capsys.readouterr().err
    assert "marginal on sites (0, 2) has trace 1.5" in err and "Traceback" not in err
    assert main(["info", str(tmp_path / "missing.json")]) == 2
    assert main(["info", str(p), "--atol", "1"]) == 0
