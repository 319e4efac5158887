"""Training and data-generation throughput of the CDAE (issue 4), one configuration at a time.

For N = 3..8 and S = 1, 4, 10: samples per second of
  * datagen  -- ``generate_batch`` alone: rank-r state, k = N-1 marginals, MIO of a
                Hilbert-Schmidt seed, two-channel image (complex64, batched torch);
  * train    -- one full training step: data generation + CDAE forward + Eq. (6) loss (polar
                factor, marginals by ``qmarginal.partial_trace``) + backward + Adam;
  * train_kron -- the same step with the loss's marginals computed the paper's way: explicit
                Kronecker-product partial-trace matrices sum_c K_c Z K_c^dagger,
                K_c = (x)_s (1 if s in J else <c_s|), built on every call (N <= 6 only).

Usage:  python benchmarks/bench_training.py [--threads 1] [--seconds 2] [--n-max 8]
Writes benchmarks/results/bench_training.csv and prints a table. Timings on a shared machine
are noisy; each entry is batch / median step time over at least ``--seconds`` after a warm-up.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from qmarginal.learn.data import DataSettings, generate_batch
from qmarginal.learn.encoding import from_channels
from qmarginal.learn.loss import CDAELoss
from qmarginal.learn.model import count_parameters, get_model


def kron_partial_trace_matrices(J, n):
    """The paper's way: one D x d_J matrix K_c^dagger per basis state c of the traced sites."""
    traced = [s for s in range(n) if s not in J]
    mats = []
    for c in itertools.product(range(2), repeat=len(traced)):
        k = np.ones((1, 1))
        it = iter(c)
        for s in range(n):
            if s in J:
                f = np.eye(2)
            else:
                f = np.zeros((1, 2))
                f[0, next(it)] = 1.0
            k = np.kron(k, f)
        mats.append(k)  # (d_J, D)
    return np.stack(mats)


class KronLoss(CDAELoss):
    """Eq. (6) with the marginals by Kronecker-product matrices (built on every call)."""

    def forward(self, z, sigma):
        w = dict(self.weights)
        self.weights = {**w, "marginals": 0.0}
        loss, terms = super().forward(z, sigma)
        self.weights = w
        Z = from_channels(z).to(self.dtype)
        n = int(round(np.log2(Z.shape[-1])))
        total = Z.real.new_zeros(())
        for i, J in enumerate(self.subsets):
            K = torch.as_tensor(kron_partial_trace_matrices(J, n), dtype=Z.dtype)
            zJ = torch.einsum("cad,bde,cfe->baf", K, Z, K.conj())
            diff = zJ - sigma[:, i].to(Z.dtype)
            total = total + (diff.real.square() + diff.imag.square()).mean()
        loss = loss + w["marginals"] * total
        terms["marginals"] = (w["marginals"] * total).detach()
        return loss, terms


def rate(step, batch: int, seconds: float) -> float:
    """batch / median step time over at least ``seconds`` (and 3 steps) after a warm-up step;
    the median resists the other processes of a shared machine better than the mean."""
    step()  # warm-up
    times, t0 = [], time.perf_counter()
    while True:
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - t0 >= seconds and len(times) >= 3:
            return batch / float(np.median(times))


def batch_for(n: int, S: int) -> int:
    """Batch 100 (the paper's) where a step is short; smaller for large N and S."""
    if n <= 5:
        return 100
    return {6: 20, 7: 8 if S < 10 else 4, 8: 4 if S < 10 else 2}[n]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--n-min", type=int, default=3)
    p.add_argument("--n-max", type=int, default=8)
    p.add_argument("--kron-n-max", type=int, default=6)
    p.add_argument("--scales", type=int, nargs="+", default=[1, 4, 10])
    p.add_argument("--output", default=str(Path(__file__).parent / "results" / "bench_training.csv"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    header = (f"{'N':>2} {'S':>3} {'params':>8} {'batch':>5} {'datagen/s':>10} {'train/s':>9} "
              f"{'train_kron/s':>12} {'speed-up':>8}")
    print(f"threads = {args.threads}\n{header}\n{'-' * len(header)}")
    for n in range(args.n_min, args.n_max + 1):
        settings = DataSettings(n)
        g = torch.Generator().manual_seed(0)
        b = batch_for(n, 1)
        gen_rate = rate(lambda: generate_batch(settings, b, g), b, args.seconds)
        for S in args.scales:
            bs = batch_for(n, S)
            torch.manual_seed(0)
            model = get_model("cdae", scale=S)
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)
            results = {}
            for name, loss_cls in (("train", CDAELoss), ("train_kron", KronLoss)):
                if name == "train_kron" and n > args.kron_n_max:
                    results[name] = float("nan")
                    continue
                loss_fn = loss_cls(settings.subsets)

                def step():
                    batch = generate_batch(settings, bs, g)
                    loss, _ = loss_fn(model(batch["x"]), batch["sigma"])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()

                results[name] = rate(step, bs, args.seconds)
            row = {"n_qubits": n, "k": n - 1, "scale": S, "parameters": count_parameters(model),
                   "batch": bs, "threads": args.threads,
                   "datagen_samples_per_s": round(gen_rate, 1),
                   "train_samples_per_s": round(results["train"], 2),
                   "train_kron_samples_per_s": round(results["train_kron"], 2)}
            rows.append(row)
            sp = results["train"] / results["train_kron"] if results["train_kron"] == results["train_kron"] else float("nan")
            print(f"{n:>2} {S:>3} {row['parameters']:>8} {bs:>5} {gen_rate:>10.1f} "
                  f"{results['train']:>9.1f} {results['train_kron']:>12.1f} {sp:>8.2f}", flush=True)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
