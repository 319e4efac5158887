r"""The evaluation of Section V: success rate and F_mean +- SD per method, case and rank.

For each case NxKy and target rank r, ``samples`` targets rho are drawn with
:func:`qmarginal.rank_mixture_state` (the paper's Section IV A) and all k-body marginals are
given to every method; the same targets for every method. Per sample beta,

.. math:: \bar F_\beta = \frac{1}{|M|} \sum_J F(\sigma_J, \mathrm{tr}_{J^c} \hat\rho_\beta),

with \hat\rho the method's output hermitised and trace-normalised, F the Uhlmann fidelity.
The output is valid when lambda_min(\hat\rho) >= -1e-10 (the paper's test). Then

- ``success_rate_percent`` = 100 * (valid outputs) / samples;
- ``fidelity_mean``, ``fidelity_sd``: mean and sample SD (ddof = 1) of \bar F over the VALID
  outputs only (as the paper; empty when none is valid, SD empty with one valid output);
- ``fidelity_mean_all``, ``fidelity_sd_all``: the same over all outputs;
- ``trace_distance_mean``: mean over samples of the mean marginal trace distance;
- ``neg_count_mean``, ``neg_sum_mean``: mean count and sum of eigenvalues below -1e-10;
- ``seconds_per_instance``: wall time of the method (batched where it can be) / samples.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import numpy as np

from ..errors import MarginalError
from .methods import SLOW, Context, cli_name, csv_name, predict

__all__ = ["COLUMNS", "EXTRA_COLUMNS", "evaluate", "summarize", "parse_case", "Case",
           "default_ranks"]

#: the columns of the published ``published_fidelity.csv``, in order.
COLUMNS = ["case", "N", "k", "method", "rank", "fidelity_mean", "fidelity_sd", "samples",
           "success_rate_percent"]
#: our extra columns, after those.
EXTRA_COLUMNS = ["fidelity_mean_all", "fidelity_sd_all", "trace_distance_mean",
                 "neg_count_mean", "neg_sum_mean", "seconds_per_instance", "note"]


@dataclass(frozen=True)
class Case:
    """N qubits, k-body marginals; ``name`` is "NxKy"."""

    n: int
    k: int

    @property
    def name(self) -> str:
        return f"N{self.n}k{self.k}"


def parse_case(text: str) -> Case:
    """``"N3k2"`` -> Case(3, 2).

    Raises:
        MarginalError: not of the form NxKy with 1 <= k < N.
    """
    m = re.fullmatch(r"[Nn](\d+)[Kk](\d+)", text.strip())
    if not m:
        raise MarginalError(f"case {text!r} is not of the form N<qubits>k<marginal size>, "
                            "e.g. N3k2")
    n, k = int(m.group(1)), int(m.group(2))
    if not 1 <= k < n:
        raise MarginalError(f"case {text}: need 1 <= k < N")
    return Case(n, k)


def default_ranks(case: Case, published: list[dict] | None) -> list[int]:
    """The ranks the published CSV has for ``case``, else 1..2^N."""
    ranks = sorted({int(r["rank"]) for r in published or [] if r["case"] == case.name})
    return ranks or list(range(1, 2 ** case.n + 1))


def _stat(x: np.ndarray) -> tuple[float, float]:
    if x.size == 0:
        return math.nan, math.nan
    return float(np.mean(x)), (float(np.std(x, ddof=1)) if x.size > 1 else math.nan)


def summarize(fbar, valid, trace_distance=None, neg_count=None, neg_sum=None) -> dict:
    r"""Section V statistics of per-sample values.

    Args:
        fbar: per-sample mean marginal fidelity \bar F_beta, shape (n,).
        valid: per-sample validity (bool), shape (n,).
        trace_distance, neg_count, neg_sum: per-sample values, or None.

    Returns:
        dict with samples, success_rate_percent, fidelity_mean/sd (valid only; NaN when
        undefined), fidelity_mean_all/sd_all, trace_distance_mean, neg_count_mean, neg_sum_mean.

    Example:
        >>> s = summarize([0.9, 0.8, 0.5], [True, True, False])
        >>> round(s["fidelity_mean"], 6), round(s["fidelity_sd"], 6), round(s["success_rate_percent"], 4)
        (0.85, 0.070711, 66.6667)
    """
    f = np.asarray(fbar, dtype=float).ravel()
    v = np.asarray(valid, dtype=bool).ravel()
    mv, sv = _stat(f[v])
    ma, sa = _stat(f)
    mean = (lambda a: float(np.mean(np.asarray(a, dtype=float))) if a is not None and np.size(a)
            else math.nan)
    return {"samples": int(f.size), "success_rate_percent": float(100.0 * v.mean()) if f.size else math.nan,
            "fidelity_mean": mv, "fidelity_sd": sv, "fidelity_mean_all": ma, "fidelity_sd_all": sa,
            "trace_distance_mean": mean(trace_distance), "neg_count_mean": mean(neg_count),
            "neg_sum_mean": mean(neg_sum)}


def _chunk_max(D: int, budget_bytes: float = 64e6) -> int:
    return max(1, int(budget_bytes // (16 * D * D)))


def _targets(case: Case, rank: int, samples: int, seed: int):
    from ..states import rank_mixture_state

    ss = np.random.SeedSequence([seed, case.n, case.k, rank])
    return rank_mixture_state(2 ** case.n, rank, batch=samples, seed=np.random.default_rng(ss))


def _method_rng(case: Case, rank: int, method: str, seed: int) -> np.random.Generator:
    tag = [ord(c) for c in csv_name(method)]
    return np.random.default_rng(np.random.SeedSequence([seed, case.n, case.k, rank, 7, *tag]))


def _load_models(case: Case, methods, models_dir, model2, torch_threads):
    models, notes = {}, {}
    need1 = any(cli_name(m) in ("cdae", "cdae+mio") for m in methods)
    need2 = any(cli_name(m) in ("model2", "model2+mio") for m in methods)
    if not (need1 or need2):
        return models, notes
    try:
        import torch
    except ImportError as exc:
        raise ImportError("the cdae methods need torch: pip install 'qmarginal[torch]'") from exc
    if torch_threads:
        torch.set_num_threads(torch_threads)
    from ..learn.weights import find_model, load_weights

    if need1:
        try:
            path = find_model(case.n, case.k, models_dir, loss="model1")
            models["model1"], card = load_weights(path)
            trained = f"N{card.get('n_qubits')}k{card.get('k')}"
            notes["model1"] = f"model {path.parent.name}/{path.name} (trained {trained})"
        except MarginalError as exc:
            notes["model1"] = f"skipped: {exc}".split(". Train")[0]
    if need2:
        if model2 is None:
            notes["model2"] = "skipped: no --model2 weights given"
        else:
            try:
                net, card = load_weights(model2)
                if card.get("n_qubits") != case.n:
                    notes["model2"] = (f"skipped: model2 is for N = {card.get('n_qubits')}, "
                                       f"not {case.n}")
                else:
                    models["model2"] = net
                    notes["model2"] = f"model {model2}"
            except MarginalError as exc:
                notes["model2"] = f"skipped: {exc}"
    return models, notes


def _run_method(method, problem_of, n_total, ctx, time_limit, chunk_max):
    """Run ``method`` on chunks of the targets until done or out of time.

    Returns (per-sample arrays dict, seconds, n done, note)."""
    from ..report import measure
    from ..solvers._api import default_tolerances, method_spec

    slow = cli_name(method) in SLOW
    done, spent, parts, note = 0, 0.0, [], ""
    chunk = 1 if slow else chunk_max
    if slow:  # import the solver (torch, cvxpy) before the clock starts
        method_spec(cli_name(method)).solver()
    if cli_name(method) in ("cdae", "cdae+mio", "model2", "model2+mio"):
        predict(method, problem_of(0, 1), ctx)  # warm-up (threads, allocator), not timed
    while done < n_total:
        c = min(chunk, n_total - done)
        if time_limit is not None and done:
            per = spent / done
            left = time_limit - spent
            c = min(c, int(left // per)) if per > 0 else c
            if c < 1:
                break
        problem = problem_of(done, done + c)
        t0 = time.perf_counter()
        states = predict(method, problem, ctx)
        spent += time.perf_counter() - t0
        eig_tol, marginal_tol = default_tolerances(np.complex128)
        _, rep = measure(problem, states, eig_tol=eig_tol, marginal_tol=marginal_tol)
        parts.append({"fbar": np.asarray(rep.mean_marginal_fidelity, dtype=float).ravel(),
                      "valid": np.asarray(rep.valid, dtype=bool).ravel(),
                      "td": np.asarray(rep.mean_marginal_trace_distance, dtype=float).ravel(),
                      "negc": np.asarray(rep.negative_count, dtype=float).ravel(),
                      "negs": np.asarray(rep.negative_sum, dtype=float).ravel()})
        done += c
        if slow:
            chunk = min(chunk * 2, chunk_max)
        if time_limit is not None and spent >= time_limit:
            break
    if done < n_total:
        note = f"time limit {time_limit:g} s: {done} of {n_total} samples"
    arrays = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0)
              for k in ("fbar", "valid", "td", "negc", "negs")}
    return arrays, spent, done, note


def evaluate(cases, ranks=None, *, samples: int = 1000, methods=("cdae", "mio_mixed",
             "mio_clip", "random_guess"), models_dir=None, model2=None, seed: int = 0,
             time_limit: float | None = 600.0, published: list[dict] | None = None,
             torch_threads: int | None = None, progress=None) -> list[dict]:
    """Evaluate ``methods`` on random targets, one row per case, method and rank.

    Args:
        cases: case names ("N3k2") or :class:`Case`.
        ranks: target ranks (None: the published ranks of each case, else 1..2^N).
        samples: targets per rank (the same targets for every method).
        methods: CLI method names (see :mod:`qmarginal.evaluation.methods`).
        models_dir: where model1 is looked up (None: the shipped models).
        model2: path of model2 weights (the ``model2`` methods), or None.
        seed: seeds the targets (per case and rank) and each method's randomness.
        time_limit: seconds of method time per method, case and rank; a method stops when it
            is spent (the row says how many samples were done; ``exact``, ``maxent`` and
            ``sdp`` start with one sample and double, so at least one sample is always done).
            None: no limit.
        published: published rows (for the default ranks); None: the shipped copy.
        torch_threads: torch CPU threads for the networks (None: torch's default).
        progress: callable(str) for one line per finished row, or None.

    Returns:
        rows (dicts) with :data:`COLUMNS` + :data:`EXTRA_COLUMNS`.
    """
    from ..problem import MarginalProblem
    from .published import load_fidelity

    if published is None:
        published = load_fidelity()
    if torch_threads:
        try:
            import torch

            torch.set_num_threads(torch_threads)
        except ImportError:
            pass
    rows = []
    for case in cases:
        case = parse_case(case) if isinstance(case, str) else case
        D = 2 ** case.n
        models, model_notes = _load_models(case, methods, models_dir, model2, torch_threads)
        for rank in (ranks or default_ranks(case, published)):
            if not 1 <= rank <= D:
                continue
            rho = _targets(case, rank, samples, seed)
            full = MarginalProblem.from_state(rho, k=case.k, validate=False)

            def problem_of(lo, hi, full=full):
                return full.with_marginals({J: s[lo:hi] for J, s in full.marginals.items()})

            for method in methods:
                name = cli_name(method)
                role = {"cdae": "model1", "cdae+mio": "model1", "model2": "model2",
                        "model2+mio": "model2"}.get(name)
                row = {"case": case.name, "N": case.n, "k": case.k, "method": csv_name(name),
                       "rank": rank}
                note = model_notes.get(role, "") if role else ""
                if role and role not in models:
                    row.update(summarize([], []), samples=0, note=note)
                    row["seconds_per_instance"] = math.nan
                    rows.append(row)
                    continue
                # one solve never runs past the budget (exact and sdp take a time limit)
                opts = ({"exact": {"time_limit": time_limit}, "sdp": {"time_limit": time_limit}}
                        if time_limit else {})
                ctx = Context(_method_rng(case, rank, name, seed), models, opts)
                try:
                    arr, spent, done, tnote = _run_method(name, problem_of, samples, ctx,
                                                          time_limit, _chunk_max(D))
                except ImportError as exc:
                    arr, spent, done, tnote = ({k: np.zeros(0) for k in
                                                ("fbar", "valid", "td", "negc", "negs")},
                                               math.nan, 0, f"skipped: {exc}")
                row.update(summarize(arr["fbar"], arr["valid"], arr["td"], arr["negc"],
                                     arr["negs"]))
                row["seconds_per_instance"] = spent / done if done else math.nan
                row["note"] = "; ".join(x for x in (note, tnote) if x)
                rows.append(row)
                if progress:
                    progress(format_row(row))
    return rows


def format_row(row: dict) -> str:
    """One line for progress output."""
    def f(x, spec):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)
    return (f"{row['case']} {row['method']:<14} rank {row['rank']:>3}: success "
            f"{f(row['success_rate_percent'], '5.1f')}%  F {f(row['fidelity_mean'], '.4f')} +- "
            f"{f(row['fidelity_sd'], '.4f')}  F_all {f(row['fidelity_mean_all'], '.4f')}  "
            f"{f(row['seconds_per_instance'], '.2e')} s/inst  n={row['samples']}"
            + (f"  [{row['note']}]" if row.get("note") else ""))


def write_csv(rows: list[dict], path) -> None:
    """Write rows with :data:`COLUMNS` then :data:`EXTRA_COLUMNS` (NaN as an empty cell),
    atomically."""
    import csv
    from pathlib import Path

    from ..files import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = COLUMNS + EXTRA_COLUMNS

    def cell(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float):
            return f"{v:.6g}"
        return v

    with atomic_write(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: cell(r.get(c)) for c in cols})
