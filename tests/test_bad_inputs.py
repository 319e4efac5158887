"""Bad input files and command lines, replayed: each gets one line on stderr and its exit code.

The table below is the list of issue "Never lose work, never crash on a file" for problem files
and the solver commands (training runs, datasets and model cards are replayed in
tests/test_learn_robust.py and tests/test_model_cards.py). Each case builds its file in a
temporary folder, runs the command through ``qmarginal.cli.main`` and checks the exit status,
that stderr is exactly one line starting ``qmarginal COMMAND:``, and a fragment of the message
that says what was wrong (which marginal, which value).
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import os
import resource
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import qmarginal as qm
from qmarginal.cli import main


def _doc(n=3, k=2, seed=1):
    p = qm.MarginalProblem.from_state(qm.rank_mixture_state(2**n, 2, seed=seed), k=k)
    return {"format": "qmarginal.problem", "version": 1, "dims": [2] * n,
            "marginals": [{"sites": list(J), "real": np.real(a).tolist(),
                           "imag": np.imag(a).tolist()} for J, a in p.marginals.items()]}


GOOD = _doc()


def edit(fn):
    """A JSON case: a deep copy of the good document, changed by ``fn``."""
    def build(path):
        doc = copy.deepcopy(GOOD)
        fn(doc)
        path.write_text(json.dumps(doc))
    return build


def raw(text):
    def build(path):
        path.write_text(text)
    return build


def _set(doc, keys, value):
    d = doc
    for key in keys[:-1]:
        d = d[key]
    d[keys[-1]] = value


def setv(*keys, value):
    return edit(lambda doc: _set(doc, keys, value))


def _npz_arrays(**change):
    p = qm.MarginalProblem.from_state(qm.rank_mixture_state(8, 2, seed=1), k=2)
    arrays = {"format": np.array("qmarginal.problem"), "version": np.array(1),
              "dims": np.array([2, 2, 2])}
    for i, (J, a) in enumerate(p.marginals.items()):
        arrays[f"sites_{i}"] = np.array(J)
        arrays[f"sigma_{i}"] = a
    for k, v in change.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    return arrays


def npz(**change):
    def build(path):
        np.savez_compressed(path, **_npz_arrays(**change))
    return build


def zip_bomb(path):
    """About 250 KB compressed, 256 MiB declared: sigma_0 as a batch of 2^20 4 x 4 matrices
    (the same check refuses 1 GiB or more; smaller here to keep the test fast)."""
    arrays = _npz_arrays()
    header = {"descr": "<c16", "fortran_order": False, "shape": (2**20, 4, 4)}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, a in arrays.items():
            if name == "sigma_0":
                with zf.open("sigma_0.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array_header_2_0(f, header)
                    block = bytes(1 << 22)
                    for _ in range(2**20 * 16 * 16 // len(block)):
                        f.write(block)
            else:
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asarray(a))
                zf.writestr(f"{name}.npy", buf.getvalue())


def truncated(path):
    npz()(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def folder(path):
    path.mkdir()


def _nan(doc):
    doc["marginals"][0]["real"][0][0] = float("nan")


CASES = [
    # (id, file name, builder, extra CLI args, command, exit status, message fragment)
    ("missing", "gone.json", None, [], "info", 2, "does not exist"),
    ("folder named x.json", "x.json", folder, [], "info", 2, "is a folder"),
    ("unknown suffix", "p.txt", raw("{}"), [], "info", 2, "unknown problem file type"),
    ("not JSON", "p.json", raw("{oops"), [], "info", 2, "not valid JSON"),
    ("JSON list", "p.json", raw("[1, 2]"), [], "info", 2, "not a qmarginal problem file"),
    ("format missing", "p.json", edit(lambda d: d.pop("format")), [], "info", 2,
     "not a qmarginal problem file"),
    ("version 99", "p.json", setv("version", value=99), [], "info", 2, "version 99 is not"),
    ("version string", "p.json", setv("version", value="1"), [], "info", 2, "version \"1\""),
    ("version missing", "p.json", edit(lambda d: d.pop("version")), [], "info", 2,
     "'version' is missing"),
    ("unknown key", "p.json", setv("extra", value=1), [], "info", 2,
     "unknown top-level key(s) ['extra']"),
    ("dims 2.7", "p.json", setv("dims", value=[2.7, 2, 2]), [], "info", 2,
     "dims must be a list of integers"),
    ("dims as strings", "p.json", setv("dims", value=["2", "2", "2"]), [], "info", 2,
     "dims must be a list of integers"),
    ("dims bool", "p.json", setv("dims", value=[2, True, 2]), [], "info", 2,
     "dims must be a list of integers"),
    ("dims 1", "p.json", setv("dims", value=[2, 1, 2]), [], "info", 2, "must be >= 2"),
    ("site 1.9", "p.json", setv("marginals", 0, "sites", value=[0, 1.9]), [], "info", 2,
     "marginal 0: sites must be a list of integers, got [0, 1.9]"),
    ("site bool", "p.json", setv("marginals", 0, "sites", value=[False, True]), [], "info", 2,
     "sites must be a list of integers"),
    ("site string", "p.json", setv("marginals", 0, "sites", value=["0", 1]), [], "info", 2,
     "sites must be a list of integers"),
    ("site negative", "p.json", setv("marginals", 0, "sites", value=[-1, 1]), [], "info", 2,
     "site index -1 is negative"),
    ("site out of range", "p.json", setv("marginals", 0, "sites", value=[0, 5]), [], "info", 2,
     "site index 5 is out of range"),
    ("sites unsorted", "p.json", setv("marginals", 0, "sites", value=[1, 0]), [], "info", 2,
     "not sorted"),
    ("sites repeated", "p.json", setv("marginals", 0, "sites", value=[1, 1]), [], "info", 2,
     "repeats a site"),
    ("marginal given twice", "p.json",
     edit(lambda d: _set(d, ("marginals", 1, "sites"), [0, 1])), [], "info", 2,
     "given twice"),
    ("entry as string", "p.json", setv("marginals", 0, "real", 0, 0, value="0.5"), [], "info",
     2, "real part must hold numbers only, found strings"),
    ("entry null", "p.json", setv("marginals", 0, "real", 0, 0, value=None), [], "info", 2,
     "mixed or null entries"),
    ("entry bool", "p.json",
     setv("marginals", 0, "real", value=[[True] * 4] * 4), [], "info", 2,
     "found booleans"),
    ("ragged", "p.json", setv("marginals", 0, "real", 0, value=[0.1]), [], "info", 2,
     "not a rectangular array"),
    ("NaN", "p.json", edit(_nan), [], "info", 2, "non-finite entry nan"),
    ("NaN, --no-validate", "p.json", edit(_nan), ["--no-validate", "--least-squares"],
     "reconstruct", 2, "non-finite entry nan"),
    ("imag shape", "p.json", setv("marginals", 0, "imag", value=[[0.0]]), [], "info", 2,
     "imaginary part (1, 1)"),
    ("wrong size", "p.json",
     setv("marginals", 0, "real", value=np.eye(3).tolist()), [], "info", 2,
     "real part has shape (3, 3), imaginary part (4, 4)"),
    ("wrong size, real", "p.json",
     edit(lambda d: (d["marginals"][0].pop("imag"),
                     _set(d, ("marginals", 0, "real"), (np.eye(3) / 3).tolist()))),
     ["--no-validate"], "info", 2, "must be 4 x 4"),
    ("not Hermitian", "p.json", setv("marginals", 0, "imag", 0, 1, value=0.3), [], "info", 2,
     "is not Hermitian"),
    ("trace 2", "p.json",
     setv("marginals", 0, "real", value=(np.eye(4) / 2).tolist()), [], "info", 2,
     "has trace 2"),
    ("marginal as list", "p.json", setv("marginals", 0, value=[1, 2]), [], "info", 2,
     "marginal 0 must be an object"),
    ("marginal key", "p.json", setv("marginals", 0, "weight", value=1), [], "info", 2,
     "unknown key(s) ['weight']"),
    ("no marginals", "p.json", setv("marginals", value=[]), [], "info", 2,
     "non-empty list"),
    ("npz not a zip", "p.npz", raw("PK not really"), [], "info", 2, "not an .npz"),
    ("npz truncated", "p.npz", truncated, [], "info", 2, "p.npz"),
    ("npz scalar dims", "p.npz", npz(dims=np.array(2)), [], "info", 2,
     "dims must be a 1-D integer array"),
    ("npz 2-D dims", "p.npz", npz(dims=np.array([[2, 2, 2]])), [], "info", 2,
     "dims must be a 1-D integer array"),
    ("npz float dims", "p.npz", npz(dims=np.array([2.0, 2.0, 2.0])), [], "info", 2,
     "dims has dtype float64, expected integers"),
    ("npz bool sites", "p.npz", npz(sites_0=np.array([False, True])), [], "info", 2,
     "sites_0 has dtype bool"),
    ("npz object array", "p.npz", npz(sigma_0=np.array([{"a": 1}], dtype=object)), [], "info",
     2, "dtype object"),
    ("npz version missing", "p.npz", npz(version=None), [], "info", 2,
     "missing array(s) ['version']"),
    ("npz extra array", "p.npz", npz(extra=np.zeros(3)), [], "info", 2,
     "unexpected array(s) ['extra']"),
    ("npz version 2", "p.npz", npz(version=np.array(2)), [], "info", 2, "version 2 is not"),
    ("npz wrong shape", "p.npz", npz(sigma_0=np.eye(8) / 8), [], "info", 2,
     "must be 4 x 4 (after any batch axes), declared shape (8, 8)"),
    ("npz zip bomb", "p.npz", zip_bomb, [], "info", 2, "refused as a decompression bomb"),
    ("--atol nan", "p.json", edit(lambda d: None), ["--atol", "nan"], "info", 2,
     "--atol nan: must be a finite number > 0"),
    ("--atol inf", "p.json", edit(lambda d: None), ["--atol", "inf"], "reconstruct", 2,
     "--atol inf"),
    ("--atol -1", "p.json", edit(lambda d: None), ["--atol", "-1"], "check", 2, "--atol -1"),
    ("--eig-tol nan", "p.json", edit(lambda d: None), ["--eig-tol", "nan"], "reconstruct", 2,
     "eig_tol must be a positive finite number"),
    ("unknown option", "p.json", edit(lambda d: None), ["--option", "bogus=1"], "reconstruct",
     2, "unknown option(s) ['bogus']"),
    ("-o is the input", "p.json", edit(lambda d: None), ["-o", "{path}"], "check", 2,
     "is the input file"),
    ("-o is the input (.npz)", "p.npz", npz(), ["-o", "{path}"], "reconstruct", 2,
     "is the input file"),
    ("-o missing folder", "p.json", edit(lambda d: None), ["-o", "{dir}/no/such/s.npz"],
     "reconstruct", 2, "does not exist"),
    ("-o not .npz", "p.json", edit(lambda d: None), ["-o", "{dir}/s.json"], "reconstruct", 2,
     "the state is written as .npz"),
    ("-o a folder", "p.json", edit(lambda d: None), ["-o", "{dir}"], "check", 2,
     "is a folder"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_and_exit_code(case, tmp_path, capsys):
    _, name, build, extra, command, status, fragment = case
    path = tmp_path / name
    if build is not None:
        build(path)
    args = [a.format(path=path, dir=tmp_path) for a in extra]
    rc = main([command, str(path), *args])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == status, captured
    assert len(lines) == 1 and lines[0].startswith(f"qmarginal {command}:"), captured.err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_the_good_document_is_good(tmp_path, capsys):
    """The cases above break one thing each in a file that is otherwise valid."""
    path = tmp_path / "p.json"
    edit(lambda d: None)(path)
    assert main(["info", str(path)]) == 0
    assert main(["reconstruct", str(path), "-q"]) == 0
    path2 = tmp_path / "p.npz"
    npz()(path2)
    assert main(["info", str(path2), "--json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out.split("\n", 2)[-1][out.split("\n", 2)[-1].index("{"):])
    assert doc["n_sites"] == 3 and doc["memory"]["fits"] == ["dense", "matrix_free"]


def _big(tmp_path, n):
    d = np.diag([0.7, 0.3]).astype(complex)
    p = qm.MarginalProblem({J: np.kron(d, d) for J in itertools.combinations(range(n), 2)},
                           dims=[2] * n)
    return p.save(tmp_path / f"n{n}.json")


@pytest.mark.parametrize("n", [14, 16])
@pytest.mark.parametrize("command", [["reconstruct", "--method", "mio"],
                                     ["reconstruct", "--method", "maxent"],
                                     ["reconstruct", "--method", "sdp"],
                                     ["reconstruct", "--option", "path=convex"],
                                     ["check"]])
def test_large_problem_refused_before_allocation(n, command, tmp_path, capsys, monkeypatch):
    """A few-KB file describing 14 or 16 qubits: info describes it, the dense commands refuse
    it with what they need and the budget (which must be below what they need here)."""
    from qmarginal import system_memory

    monkeypatch.setattr(system_memory, "available_bytes", lambda: 8 * 2**30)
    path = _big(tmp_path, n)
    assert path.stat().st_size < 40_000
    assert main(["info", str(path)]) == 0
    assert "fits: matrix_free" in capsys.readouterr().out
    real_zeros, real_eye, real_empty = np.zeros, np.eye, np.empty

    def guarded(fn, entries):
        def inner(shape, *a, **k):
            assert entries(shape) < 2**24, f"allocation of {shape}"
            return fn(shape, *a, **k)
        return inner

    monkeypatch.setattr(np, "zeros", guarded(real_zeros, lambda s: np.prod(np.atleast_1d(s))))
    monkeypatch.setattr(np, "empty", guarded(real_empty, lambda s: np.prod(np.atleast_1d(s))))
    monkeypatch.setattr(np, "eye", guarded(real_eye, lambda n: n * n))
    rc = main([command[0], str(path), *command[1:]])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "needs" in err[0] and f"D = {2**n}" in err[0] and "budget" in err[0], err[0]


def test_example_never_overwrites(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert main(["example", "-o", str(out)]) == 0
    before = out.read_bytes()
    assert main(["example", "-o", str(out), "--name", "n3k2_rank2"]) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["example", "-o", str(out), "--name", "n3k2_rank2", "--force"]) == 0
    assert out.read_bytes() != before


def test_reconstruct_output_checked_before_the_solve(tmp_path, capsys, monkeypatch):
    """A bad -o is reported before any solve runs (the solver is never called)."""
    R = sys.modules["qmarginal.reconstruct"]
    path = tmp_path / "p.json"
    edit(lambda d: None)(path)
    monkeypatch.setattr(R, "reconstruct", lambda *a, **k: pytest.fail("solver ran"))
    assert main(["reconstruct", str(path), "-o", str(tmp_path / "nope" / "s.npz")]) == 2


def test_reconstruct_json_and_quiet(tmp_path, capsys):
    path = tmp_path / "p.json"
    edit(lambda d: None)(path)
    assert main(["reconstruct", str(path), "--json", "-o", str(tmp_path / "s.npz")]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["exit_status"] == 0 and doc["report"]["certified"] is True
    assert doc["written"] == [str(tmp_path / "s.npz"), str(tmp_path / "s.report.json")]
    assert "wrote" in captured.err  # side notes go to stderr with --json
    assert main(["reconstruct", str(path), "-q"]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: certified state"
    assert main(["check", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "compatible"


def test_short_report_lines(tmp_path, capsys):
    """The default report: the verdict, then a short table of short lines."""
    path = tmp_path / "p.json"
    edit(lambda d: None)(path)
    assert main(["reconstruct", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path}: certified state" and len(lines) <= 14
    assert max(len(x) for x in lines) <= 160
    assert main(["reconstruct", str(path), "-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(x.startswith("setting: ") for x in lines) and max(len(x) for x in lines) <= 160


def _reconstruct_subprocess(args, fsize=None):
    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return subprocess.run([sys.executable, "-m", "qmarginal.cli", *args], capture_output=True,
                          text=True, preexec_fn=limit, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_full_disk_keeps_the_previous_state(tmp_path):
    """A file-size limit hit while replacing state.npz: one line, exit 2, old file intact,
    no temporary file left."""
    path = tmp_path / "p.json"
    qm.MarginalProblem.from_state(qm.rank_mixture_state(64, 3, seed=2), k=5).save(path)
    out = tmp_path / "s.npz"
    out.write_bytes(b"previous good state")
    r = _reconstruct_subprocess(["reconstruct", str(path), "-o", str(out)], fsize=4096)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and "s.npz" in err[0], r.stderr
    assert out.read_bytes() == b"previous good state"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "s.npz"]


def test_problem_save_is_atomic_under_a_size_limit(tmp_path):
    """Overwriting a problem JSON that no longer fits leaves the old file whole."""
    old = tmp_path / "p.json"
    qm.MarginalProblem.from_state(qm.rank_mixture_state(8, 2, seed=1), k=2).save(old)
    before = old.read_bytes()
    code = (f"import qmarginal as qm; p = qm.MarginalProblem.from_state("
            f"qm.rank_mixture_state(64, 3, seed=2), k=5); p.save({str(old)!r})")

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 10, len(before) + 10))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       preexec_fn=limit, timeout=120)
    assert r.returncode != 0 and "OutputPathError" in r.stderr
    assert old.read_bytes() == before
    assert qm.MarginalProblem.load(old).n_sites == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]
