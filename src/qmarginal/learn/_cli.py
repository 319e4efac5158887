"""``qmarginal generate`` and ``qmarginal train`` (torch is imported inside the handlers)."""

from __future__ import annotations

import argparse

from ._args import add_generate_arguments, add_train_arguments


def add_commands(sub) -> None:
    p = sub.add_parser(
        "generate", help="write a training dataset (Section IV A) to HDF5, resumably",
        description="Generate MIO inputs and marginals of random states into a chunked HDF5 "
                    "file; rerunning the same command after an interruption completes it.")
    add_generate_arguments(p)
    p.set_defaults(handler=_generate)
    p = sub.add_parser(
        "train", help="train the CDAE (checkpoints, validation, --resume, torchrun for DDP)",
        description="Train the paper's convolutional denoising autoencoder. Run under "
                    "`torchrun --nproc_per_node=P` for several processes (DDP).")
    add_train_arguments(p)
    p.set_defaults(handler=_train)


def _generate(args: argparse.Namespace) -> int:
    from .data import DataSettings, write_hdf5

    settings = DataSettings(args.n_qubits, args.k, args.r_min, args.seed_state, args.precision)
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"generate {args.output}", unit="chunk")

    def progress(done, total):
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    path = write_hdf5(args.output, settings, args.samples, seed=args.seed,
                      chunk_size=args.chunk_size, device=args.device, progress=progress)
    if bar is not None:
        bar.close()
    print(f"wrote {path}: {args.samples} samples, N = {settings.n_qubits}, k = {settings.k}, "
          f"seed {args.seed}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .train import main

    main(args)
    return 0
