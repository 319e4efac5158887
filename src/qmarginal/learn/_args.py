"""Command-line arguments of ``qmarginal train`` and ``qmarginal generate`` (no torch import:
the ``qmarginal`` parser is built quickly; the handlers import torch)."""

from __future__ import annotations

import argparse

SEED_STATES = ("hilbert_schmidt", "maximally_mixed")
PRECISIONS = ("complex64", "complex128")
OUTPUTS = ("direct", "hermitian", "psd", "clip_psd")
FREEZE_LEVELS = ("none", "encoder", "all-but-last")
SCHEDULES = ("none", "cosine", "step", "exponential")


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (Section IV A)")
    g.add_argument("-N", "--n-qubits", type=int, default=3, help="qubits N (default 3)")
    g.add_argument("-k", type=int, default=None, help="k-body marginals (default N-1)")
    g.add_argument("--r-min", type=int, default=1, help="smallest rank drawn (default 1)")
    g.add_argument("--seed-state", choices=SEED_STATES, default="hilbert_schmidt",
                   help="MIO seed: Hilbert-Schmidt random (paper, default) or maximally mixed")
    g.add_argument("--precision", choices=PRECISIONS, default="complex64",
                   help="complex dtype of states, marginals and MIO (default complex64)")


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("-n", "--samples", type=int, required=True, help="number of samples")
    p.add_argument("-o", "--output", required=True, help="HDF5 file to write (resumed if it exists)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--chunk-size", type=int, default=10_000, help="samples per chunk (default 10000)")
    p.add_argument("--device", default="cpu", help="device to generate on (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    g = p.add_argument_group("data source")
    g.add_argument("--data", default=None,
                   help="HDF5 dataset from `qmarginal generate` (default: generate on the fly)")
    g.add_argument("--samples-per-epoch", type=int, default=100_000,
                   help="streamed samples per epoch (default 100000; ignored with --data)")
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")

    g = p.add_argument_group("model (Appendix A)")
    g.add_argument("--model", default="cdae",
                   help="registered model: cdae (paper, default), cdae_residual, cdae_psd, cdae_clip")
    g.add_argument("-S", "--scale", type=int, default=10, help="scaling factor S (default 10)")
    g.add_argument("--width", type=int, default=None, help="channels (default 10 S)")
    g.add_argument("--depth", type=int, default=None, help="extra conv blocks per stage")
    g.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None,
                   help="predict a correction to the input")
    g.add_argument("--output", choices=OUTPUTS, default=None, help="output parametrisation")
    g.add_argument("--normalize-input", action=argparse.BooleanOptionalAction, default=None,
                   help="scale the input by D")

    g = p.add_argument_group("loss (Eq. (6))")
    g.add_argument("--loss", choices=("model1", "model2"), default="model1")
    g.add_argument("--w-psd", type=float, default=1.0, help="weight of each PSD term (default 1)")
    g.add_argument("--w-marginals", type=float, default=1.0, help="weight of the marginal term")
    g.add_argument("--w-trace", type=float, default=0.0, help="weight of |tr Z - 1|^2 (default 0)")
    g.add_argument("--w-negative", type=float, default=0.0,
                   help="weight of sum_i min(0, D lambda_i)^2, beyond the paper (default 0)")
    g.add_argument("--negative-margin", type=float, default=0.0,
                   help="margin m of the negative-eigenvalue term: min(0, D lambda - m)^2")
    g.add_argument("--polar-eps", type=float, default=1e-6,
                   help="floor of s_i + s_j in the polar factor's gradient (relative)")

    g = p.add_argument_group("optimisation (Section IV C)")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("-b", "--batch-size", type=int, default=100, help="global batch (default 100)")
    g.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--lr-schedule", choices=SCHEDULES, default="none")
    g.add_argument("--lr-step", type=int, default=30, help="epochs per step (step schedule)")
    g.add_argument("--lr-gamma", type=float, default=0.1, help="decay factor (step, exponential)")
    g.add_argument("--lr-min", type=float, default=0.0, help="final lr of the cosine schedule")
    g.add_argument("--warmup-epochs", type=int, default=0, help="linear warm-up epochs")
    g.add_argument("--grad-clip", type=float, default=0.0, help="max gradient norm (0: off)")

    g = p.add_argument_group("validation")
    g.add_argument("--val-per-rank", type=int, default=100,
                   help="held-out samples per rank (default 100)")
    g.add_argument("--val-seed", type=int, default=1234)

    g = p.add_argument_group("run")
    g.add_argument("--output-dir", default="runs/cdae", help="checkpoints, logs, weights")
    g.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue from OUTPUT_DIR/last.pt (or the given checkpoint)")
    g.add_argument("--init-from", default=None,
                   help="start from these weights (.safetensors or checkpoint): transfer learning")
    g.add_argument("--freeze", choices=FREEZE_LEVELS, default="none",
                   help="with --init-from: parts kept fixed (Section IV C)")
    g.add_argument("--stop-after", type=int, default=None,
                   help="stop after this many epochs in this invocation (for job time limits; "
                        "continue with --resume)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    g.add_argument("--seed", type=int, default=0, help="seed of weights and data streams")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard")
    g.add_argument("--name", default=None, help="model name recorded in the card")
