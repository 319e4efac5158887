"""Training: a short run learns, resume is exact, checkpoints are safe, DDP runs, weights load."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import qmarginal as qm  # noqa: E402
from qmarginal.reconstruct import reconstruct  # noqa: E402
from qmarginal.errors import MarginalError  # noqa: E402
from qmarginal.learn.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from qmarginal.learn.train import get_args_parser, main  # noqa: E402
from qmarginal.learn.weights import find_model, load_weights, save_weights  # noqa: E402
from qmarginal.learn.model import count_parameters, get_model  # noqa: E402


def _args(out, *extra):
    return get_args_parser().parse_args(
        ["-N", "3", "-S", "1", "--output-dir", str(out), "--no-progress", "--threads", "1",
         "--val-per-rank", "20", *extra])


def _log(out):
    with open(out / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_short_training_run_learns(tmp_path):
    out = tmp_path / "run"
    main(_args(out, "--epochs", "3", "--samples-per-epoch", "4000", "--lr", "1e-3", "--seed", "0"))
    rows = _log(out)
    start, end = float(rows[0]["val_fidelity"]), float(rows[-1]["val_fidelity"])
    random_guess = float(rows[0]["baseline_random_guess"])
    assert end > start and end > random_guess, (start, end, random_guess)
    assert float(rows[-1]["val_success"]) > 0.5
    for name in ("train_psd_re", "train_psd_im", "train_marginals", "val_fidelity_r8"):
        assert name in rows[-1]
    model, card = load_weights(out / "model.safetensors")
    assert card["n_qubits"] == 3 and card["k"] == 2 and card["samples_seen"] > 0
    assert card["validation"]["score"] == pytest.approx(max(float(r["val_score"]) for r in rows))


def test_resume_equals_uninterrupted(tmp_path):
    common = ["--samples-per-epoch", "600", "--lr", "1e-3", "--seed", "1", "--lr-schedule",
              "cosine", "--batch-size", "50"]
    main(_args(tmp_path / "a", "--epochs", "3", *common))
    main(_args(tmp_path / "b", "--epochs", "3", "--stop-after", "1", *common))  # interrupted
    main(_args(tmp_path / "b", "--epochs", "3", "--resume", *common))
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3 and a["samples_seen"] == b["samples_seen"] == 1800
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["scheduler"] == b["scheduler"]
    ra, rb = _log(tmp_path / "a"), _log(tmp_path / "b")
    assert [r["val_score"] for r in ra] == [r["val_score"] for r in rb]


def test_corrupted_or_truncated_checkpoint_gives_clear_error(tmp_path):
    main(_args(tmp_path, "--epochs", "1", "--samples-per-epoch", "200"))
    good = (tmp_path / "last.pt").read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(bad)
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(bad)
    (tmp_path / "last.pt").write_bytes(good[:100])
    with pytest.raises(MarginalError, match="truncated"):
        main(_args(tmp_path, "--epochs", "2", "--samples-per-epoch", "200", "--resume"))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_transfer_learning_init_and_freeze(tmp_path):
    small = get_model("cdae", scale=1)
    save_weights(small, tmp_path / "n3", {"n_qubits": 3, "k": 2})
    out = tmp_path / "n4"
    main(get_args_parser().parse_args(
        ["-N", "4", "-S", "1", "--output-dir", str(out), "--no-progress", "--val-per-rank", "2",
         "--epochs", "1", "--samples-per-epoch", "100", "--init-from", str(tmp_path / "n3.safetensors"),
         "--freeze", "encoder"]))
    ck = load_checkpoint(out / "last.pt")
    for key, val in small.state_dict().items():
        if key.startswith("encoder"):
            assert torch.equal(ck["model"][key], val), key  # frozen: unchanged
    assert not torch.equal(ck["model"]["decoder.6.weight"], small.state_dict()["decoder.6.weight"])
    with pytest.raises(MarginalError, match="does not fit"):
        main(get_args_parser().parse_args(
            ["-N", "4", "-S", "2", "--output-dir", str(out / "x"), "--no-progress",
             "--epochs", "1", "--samples-per-epoch", "100",
             "--init-from", str(tmp_path / "n3.safetensors")]))


def test_two_process_gloo_run(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "qmarginal.learn.train", "-N", "3", "-S", "1", "--epochs", "2",
           "--samples-per-epoch", "400", "--output-dir", str(out), "--no-progress",
           "--val-per-rank", "5", "--device", "cpu"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    ck = load_checkpoint(out / "last.pt")
    assert ck["epoch"] == 2 and ck["samples_seen"] == 800
    model = get_model("cdae", scale=1)
    model.load_state_dict(ck["model"])


def test_weights_card_and_pipeline(tmp_path):
    model = get_model("cdae_residual", scale=1)
    save_weights(model, tmp_path / "n3k2_test", {"n_qubits": 3, "k": 2,
                                                 "loss": {"kind": "model1"}})
    assert find_model(3, 2, tmp_path).name == "n3k2_test.json"
    assert find_model(3, 1, tmp_path).name == "n3k2_test.json"  # a k = N-1 model serves k < N-1
    with pytest.raises(MarginalError, match="qmarginal train"):
        find_model(4, 3, tmp_path)
    loaded, card = load_weights(tmp_path / "n3k2_test.json")
    assert count_parameters(loaded) == count_parameters(model) and card["arch"]["name"] == "cdae_residual"

    rho = qm.rank_mixture_state(8, batch=3, seed=2)
    problem = qm.MarginalProblem.from_state(rho, k=2)
    rec = reconstruct(problem, "cdae", model=tmp_path / "n3k2_test.json", seed=0)
    assert isinstance(rec.state, np.ndarray) and rec.state.shape == (3, 8, 8)
    np.testing.assert_allclose(np.trace(rec.state, axis1=1, axis2=2), 1, atol=1e-12)
    # the untrained residual model returns its input: the MIO output, with exact marginals
    assert np.all(rec.report.max_marginal_deviation < 1e-6)
    rec2 = reconstruct(problem.to_torch(), "cdae+mio", model=loaded,
                                      seed_state="maximally_mixed")
    assert torch.is_tensor(rec2.state) and (rec2.report.max_marginal_deviation < 1e-10).all()
    empty = tmp_path / "none"
    empty.mkdir()
    with pytest.raises(MarginalError, match="no trained CDAE"):
        reconstruct(problem, "cdae", models_dir=empty)


def test_cli_generate_and_train(tmp_path):
    from qmarginal.cli import main as cli

    assert cli(["generate", "-N", "3", "-n", "120", "-o", str(tmp_path / "d.h5"),
                "--chunk-size", "50", "--no-progress"]) == 0
    assert cli(["train", "-N", "3", "-S", "1", "--data", str(tmp_path / "d.h5"), "--epochs", "1",
                "--output-dir", str(tmp_path / "run"), "--no-progress", "--val-per-rank", "2"]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["samples_seen"] == 120
