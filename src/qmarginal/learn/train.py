"""Training of the CDAE: ``python -m qmarginal.learn.train`` / ``qmarginal train``.

Defaults follow Section IV C (Adam, lr 1e-4, batch 100, model1 loss, S = 10). One epoch is
``--samples-per-epoch`` freshly generated samples (or one pass over an HDF5 dataset). After every
epoch: validation on a fixed held-out set (success rate, mean marginal fidelity per rank), a CSV
row in ``OUTPUT_DIR/log.csv``, an atomic checkpoint ``last.pt`` (model, optimizer, scheduler,
epoch, RNG states, config), and ``best.pt`` + ``model.safetensors``/``model.json`` when the
validation score improved. ``--resume`` continues from ``last.pt`` exactly: the data of epoch e
are a function of (seed, e, rank, worker) only, so a resumed run equals an uninterrupted one.

Several processes: ``torchrun --nproc_per_node=P -m qmarginal.learn.train ...`` (DDP; gloo on
CPU, NCCL on GPUs); each rank streams distinct data, the global batch is split among ranks.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..errors import MarginalError
from ..metrics import fidelity, state_report
from ..partial_trace import partial_trace
from ..states import rank_mixture_state
from ._args import add_train_arguments
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data import DataSettings, HDF5Stream, MarginalStream, stream_generator, validation_set
from .encoding import from_channels
from .loss import CDAELoss
from .model import count_parameters, freeze, get_model
from .weights import load_state_dict_file, save_weights

__all__ = ["get_args_parser", "main", "evaluate", "build_model"]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qmarginal train", add_help=add_help,
                                     description="Train the CDAE of the paper.")
    add_train_arguments(parser)
    return parser


# ------------------------------------------------------------------------------ helpers
def _model_kwargs(args) -> dict:
    kw = {"scale": args.scale}
    for key in ("width", "depth", "residual", "output", "normalize_input"):
        val = getattr(args, key, None)
        if val is not None:
            kw[key] = val
    return kw


def build_model(args) -> torch.nn.Module:
    """The model named by ``args.model`` with the architecture options of ``args``."""
    return get_model(args.model, **_model_kwargs(args))


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def _scheduler(opt, args):
    s = args.lr_schedule
    if s == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(1, args.epochs - args.warmup_epochs), eta_min=args.lr_min)
    elif s == "step":
        main = torch.optim.lr_scheduler.StepLR(opt, step_size=args.lr_step, gamma=args.lr_gamma)
    elif s == "exponential":
        main = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=args.lr_gamma)
    else:
        main = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    if args.warmup_epochs > 0:
        warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / (args.warmup_epochs + 1),
                                                 total_iters=args.warmup_epochs)
        return torch.optim.lr_scheduler.SequentialLR(opt, [warm, main],
                                                     milestones=[args.warmup_epochs])
    return main


def predict_states(model, x):
    """complex128 output matrices of ``model`` (a CDAE, possibly DDP-wrapped, or any module)."""
    net = getattr(model, "module", model)
    if hasattr(net, "state"):
        return net.state(x)
    return from_channels(model(x)).to(torch.complex128)


@torch.no_grad()
def evaluate(model, val: dict, settings: DataSettings, batch_size: int = 1000) -> dict:
    """Validation metrics of ``model`` on a held-out set from :func:`validation_set`.

    Each output Z is hermitised and divided by its trace (a trace <= 0 counts as a failure);
    valid = the paper's test (lambda_min >= -1e-10); F-bar = mean over J of F(sigma_J, z_J).

    Returns:
        dict with ``success``, ``fidelity`` (F-bar over all outputs), ``fidelity_valid`` (over
        valid outputs, the paper's F_mean), ``score`` (mean of F-bar * valid, the quantity used to
        pick the best checkpoint) and per-rank ``success_r{r}``, ``fidelity_r{r}``.
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    fbar, valid = [], []
    for lo in range(0, val["x"].shape[0], batch_size):
        x = val["x"][lo:lo + batch_size].to(dev)
        sig = val["sigma"][lo:lo + batch_size].to(dev)
        Z = predict_states(model, x)
        H = 0.5 * (Z + Z.mH)
        tr = H.diagonal(dim1=-2, dim2=-1).sum(-1).real
        ok_tr = tr > 1e-8
        rho = H / torch.where(ok_tr, tr, torch.ones_like(tr))[:, None, None]
        v = state_report(rho).valid & ok_tr
        f = torch.stack([fidelity(sig[:, i], partial_trace(rho, J, 2))
                         for i, J in enumerate(settings.subsets)]).mean(0)
        fbar.append(torch.where(ok_tr, f, torch.zeros_like(f)).cpu())
        valid.append(v.cpu())
    model.train(was_training)
    fbar, valid = torch.cat(fbar), torch.cat(valid)
    ranks = val["rank"].cpu()
    out = _summary(fbar, valid)
    for r in ranks.unique().tolist():
        m = ranks == r
        s = _summary(fbar[m], valid[m])
        out[f"success_r{r}"], out[f"fidelity_r{r}"] = s["success"], s["fidelity_valid"]
    return out


def _summary(fbar, valid) -> dict:
    vf = valid.to(fbar.dtype)
    return {"success": float(vf.mean()), "fidelity": float(fbar.mean()),
            "fidelity_valid": float(fbar[valid].mean()) if bool(valid.any()) else float("nan"),
            "score": float((fbar * vf).mean())}


def baselines(val: dict, settings: DataSettings, seed: int) -> dict:
    """Reference fidelities on the validation set: random guessing (marginals of an unrelated
    full-rank state of the paper's generator) and the maximally mixed state."""
    n = val["sigma"].shape[0]
    D = settings.dim
    rnd = rank_mixture_state(D, D, batch=n, seed=stream_generator(seed, 104729))
    mm = (torch.eye(D, dtype=torch.complex128) / D).expand(n, D, D)
    out = {}
    for name, rho in (("random_guess", rnd), ("maximally_mixed", mm)):
        f = torch.stack([fidelity(val["sigma"][:, i].cpu(), partial_trace(rho, J, 2))
                         for i, J in enumerate(settings.subsets)]).mean(0)
        out[name] = float(f.mean())
    return out


class _Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1

    def setup(self, device: torch.device):
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            t = t.clone()
            dist.all_reduce(t)
            t /= self.world
        return t

    def close(self):
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _card(args, settings, samples_seen, epoch, metrics, base, wall) -> dict:
    return {
        "name": args.name or Path(args.output_dir).name,
        "n_qubits": settings.n_qubits, "k": settings.k, "scale": args.scale,
        "variant": args.model,
        "loss": {"kind": args.loss, "weights": {"psd": args.w_psd, "marginals": args.w_marginals,
                                                "trace": args.w_trace,
                                                "negative": getattr(args, "w_negative", 0.0)},
                 "negative_margin": getattr(args, "negative_margin", 0.0),
                 "polar_eps": args.polar_eps},
        "data": settings.to_dict(),
        "samples_seen": samples_seen, "epochs": epoch,
        "training": {"optimizer": "Adam", "lr": args.lr, "batch_size": args.batch_size,
                     "lr_schedule": args.lr_schedule, "seed": args.seed,
                     "init_from": args.init_from, "freeze": args.freeze,
                     "wall_time_s": round(wall, 1)},
        "validation": {"per_rank": args.val_per_rank, "seed": args.val_seed, **metrics},
        "baselines": base,
    }


# ------------------------------------------------------------------------------ main
def main(args: argparse.Namespace) -> dict:
    """Train as ``args`` says; returns the last validation metrics (rank 0; {} elsewhere)."""
    dd = _Dist()
    device = _device(args.device, dd.local_rank)
    dd.setup(device)
    try:
        return _run(args, dd, device)
    finally:
        dd.close()


def _run(args, dd: _Dist, device: torch.device) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest kernels
    if args.batch_size % dd.world:
        raise MarginalError(f"--batch-size {args.batch_size} is not divisible by {dd.world} processes")
    is_main = dd.rank == 0
    out_dir = Path(args.output_dir)
    settings = DataSettings(args.n_qubits, args.k, args.r_min, args.seed_state, args.precision)

    torch.manual_seed(args.seed)
    model = build_model(args)
    if args.init_from:
        state = load_state_dict_file(args.init_from)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise MarginalError(f"--init-from {args.init_from} does not fit this model: {exc}") from exc
    elif args.freeze != "none":
        raise MarginalError("--freeze needs --init-from (weights to keep fixed)")
    n_train = freeze(model, args.freeze)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    sched = _scheduler(opt, args)
    loss_fn = CDAELoss(settings.subsets, 2, kind=args.loss,
                       weights={"psd_re": args.w_psd, "psd_im": args.w_psd,
                                "marginals": args.w_marginals, "trace": args.w_trace,
                                "negative": getattr(args, "w_negative", 0.0)},
                       eps=args.polar_eps,
                       negative_margin=getattr(args, "negative_margin", 0.0))
    config = {k: v for k, v in vars(args).items() if k != "handler"}

    start_epoch, samples_seen, best, wall0 = 1, 0, -math.inf, 0.0
    if args.resume:
        ckpt_path = out_dir / "last.pt" if args.resume == "auto" else Path(args.resume)
        ck = load_checkpoint(ckpt_path)
        if ck["config"].get("model") != args.model or _model_kwargs(argparse.Namespace(**ck["config"])) != _model_kwargs(args):
            raise MarginalError(f"{ckpt_path} holds another architecture "
                                f"({ck['config'].get('model')}, {_model_kwargs(argparse.Namespace(**ck['config']))})")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start_epoch, samples_seen = ck["epoch"] + 1, ck["samples_seen"]
        best, wall0 = ck["best_score"], ck.get("wall_time", 0.0)
        set_rng_state(ck["rng"])
    ddp_model = model
    if dd.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    val = base = None
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        val = validation_set(settings, args.val_per_rank, args.val_seed)
        base = baselines(val, settings, args.val_seed)
        (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    per_rank_batch = args.batch_size // dd.world
    if args.data:
        stream = HDF5Stream(args.data, per_rank_batch, seed=args.seed, rank=dd.rank,
                            world_size=dd.world)
        if stream.settings.n_qubits != settings.n_qubits or stream.settings.k != settings.k:
            raise MarginalError(f"{args.data} holds N = {stream.settings.n_qubits}, "
                                f"k = {stream.settings.k}, not N = {settings.n_qubits}, k = {settings.k}")
        epoch_samples = stream.samples_per_epoch
    else:
        gen_device = device if args.workers == 0 else "cpu"
        stream = MarginalStream(settings, per_rank_batch, args.samples_per_epoch // dd.world,
                                seed=args.seed, rank=dd.rank, device=gen_device)
        epoch_samples = args.samples_per_epoch
    loader = DataLoader(stream, batch_size=None, num_workers=args.workers,
                        pin_memory=device.type == "cuda" and args.workers > 0)

    log_path = out_dir / "log.csv"
    tb = None
    if is_main and args.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ImportError("--tensorboard needs the tensorboard package: "
                              "pip install tensorboard (or drop --tensorboard; log.csv is "
                              "always written)") from exc
        tb = SummaryWriter(str(out_dir / "tensorboard"))
    metrics: dict = {}
    if is_main:
        print(f"training {args.model} {_model_kwargs(args)} on N = {settings.n_qubits}, "
              f"k = {settings.k}: {count_parameters(model)} parameters, {n_train} trainable; "
              f"device {device}, {dd.world} process(es); baselines {base}", file=sys.stderr)
        if start_epoch > 1:  # drop log rows of epochs after the checkpoint (a crash in between)
            _truncate_log(log_path, start_epoch - 1)
        if start_epoch == 1:  # the starting point, epoch 0
            metrics = evaluate(model, val, settings)
            _log_row(log_path, {"epoch": 0, "samples_seen": 0, "lr": args.lr, "wall_time": 0.0,
                                **{f"val_{k}": v for k, v in metrics.items()},
                                **{f"baseline_{k}": v for k, v in base.items()}}, fresh=True)
    t_start = time.perf_counter() - wall0
    stop = args.epochs if args.stop_after is None else min(args.epochs,
                                                             start_epoch - 1 + args.stop_after)
    for epoch in range(start_epoch, stop + 1):
        stream.set_epoch(epoch)
        ddp_model.train()
        sums = torch.zeros(len(CDAELoss.TERMS) + 1, device=device, dtype=torch.float64)
        n_steps = 0
        bar = None
        if is_main and not args.no_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=epoch_samples, desc=f"epoch {epoch}/{args.epochs}", unit="sample",
                       unit_scale=True, leave=False, dynamic_ncols=True)
        t_epoch = time.perf_counter()
        for batch in loader:
            x = batch["x"].to(device, non_blocking=True)
            sigma = batch["sigma"].to(device, non_blocking=True)
            z = ddp_model(x)
            loss, terms = loss_fn(z, sigma)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
            opt.step()
            sums[0] += loss.detach()
            for i, name in enumerate(CDAELoss.TERMS):
                if name in terms:
                    sums[i + 1] += terms[name]
            n_steps += 1
            samples_seen += x.shape[0] * dd.world
            if bar is not None:
                bar.update(x.shape[0] * dd.world)
                if n_steps % 20 == 0:
                    bar.set_postfix(loss=f"{float(sums[0]) / n_steps:.4g}")
        sched.step()
        if bar is not None:
            bar.close()
        sums = dd.mean(sums / max(n_steps, 1))
        rate = epoch_samples / (time.perf_counter() - t_epoch)
        if is_main:
            metrics = evaluate(model, val, settings)
            row = {"epoch": epoch, "samples_seen": samples_seen,
                   "lr": opt.param_groups[0]["lr"], "wall_time": round(time.perf_counter() - t_start, 2),
                   "samples_per_s": round(rate, 1), "train_loss": float(sums[0]),
                   **{f"train_{name}": float(sums[i + 1]) for i, name in enumerate(CDAELoss.TERMS)},
                   **{f"val_{k}": v for k, v in metrics.items()}}
            _log_row(log_path, row)
            if tb is not None:
                for k, v in row.items():
                    if k != "epoch":
                        tb.add_scalar(k, v, samples_seen)
            improved = metrics["score"] > best
            best = max(best, metrics["score"])
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "epoch": epoch, "samples_seen": samples_seen,
                     "best_score": best, "metrics": metrics, "rng": rng_state(),
                     "config": config, "wall_time": time.perf_counter() - t_start}
            save_checkpoint(state, out_dir / "last.pt")
            if improved:
                save_checkpoint(state, out_dir / "best.pt")
                save_weights(model, out_dir / "model",
                             _card(args, settings, samples_seen, epoch, metrics, base,
                                   time.perf_counter() - t_start))
            print(f"epoch {epoch}: loss {row['train_loss']:.4g}, val success "
                  f"{metrics['success']:.3f}, F {metrics['fidelity']:.4f} "
                  f"(valid {metrics['fidelity_valid']:.4f}), {rate:.0f} samples/s"
                  + (" *" if improved else ""), file=sys.stderr)
        dd.barrier()
    if tb is not None:
        tb.close()
    return metrics


def _truncate_log(path: Path, last_epoch: int) -> None:
    if not path.exists():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, [r for r in reader if int(r["epoch"]) <= last_epoch]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _log_row(path: Path, row: dict, fresh: bool = False) -> None:
    """Append ``row`` to the CSV at ``path`` (header from the first row; new keys extend it)."""
    rows = []
    if path.exists() and not fresh:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    fields = list(rows[0].keys()) if rows else []
    fields += [k for k in row if k not in fields]
    rows.append({k: row.get(k, "") for k in fields})
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
