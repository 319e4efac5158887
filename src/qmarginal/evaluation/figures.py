"""Figures 2-4 of the paper and a runtime figure, ours beside the published values.

Our values: filled markers with a mean +- SD band; published values: hollow markers on dashed
lines with their own (lighter) band. matplotlib is imported only here, with the Agg backend
(install the extra ``qmarginal[plot]``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

__all__ = ["FIGURE2", "FIGURE3", "FIGURE4", "make_figures", "runtime_figure"]

FIGURE2 = ["N3k1", "N3k2"]
FIGURE3 = ["N4k2", "N4k3", "N5k3", "N5k4", "N6k4", "N6k5", "N7k5", "N7k6", "N8k6", "N8k7"]
FIGURE4 = ["N5k1", "N5k2", "N6k2", "N6k3", "N7k3", "N7k4", "N8k3", "N8k4"]

#: method -> (label, colour, marker); the paper's colours for its methods.
STYLE = {
    "cdae": ("model1 (cdae)", "tab:purple", "s"),
    "model2": ("model2", "tab:green", "o"),
    "cdae_then_mio": ("model1 + MIO", "tab:blue", "D"),
    "model2_then_mio": ("model2 + MIO", "tab:olive", "d"),
    "random_guess": ("random guessing", "tab:red", "^"),
    "mio_clip": ("MIO(1/D) + clip", "tab:orange", "v"),
    "mio_mixed": ("MIO(1/D)", "tab:brown", "<"),
    "mio_random": ("MIO(random seed)", "tab:pink", ">"),
    "exact": ("exact", "black", "x"),
    "maxent": ("maxent", "tab:gray", "+"),
    "sdp": ("SDP (CVXPY+SCS)", "tab:cyan", "*"),
}
#: published runtime method -> our method.
RUNTIME_MAP = {"mio_then_cdae": "cdae", "mio_cdae_mio": "cdae_then_mio", "cvxpy_scs_sdp": "sdp"}


def _plt():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("qmarginal figures need matplotlib: pip install 'qmarginal[plot]'") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _num(v):
    if v is None or v == "":
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _series(rows, case, method):
    pts = sorted((int(r["rank"]), _num(r.get("fidelity_mean")), _num(r.get("fidelity_sd")))
                 for r in rows if r["case"] == case and r["method"] == method)
    return [(r, m, s or 0.0) for r, m, s in pts if m is not None]


def _draw(ax, pts, method, published: bool):
    label, colour, marker = STYLE.get(method, (method, None, "o"))
    if not pts:
        return
    x = [p[0] for p in pts]
    m = [p[1] for p in pts]
    lo = [p[1] - p[2] for p in pts]
    hi = [p[1] + p[2] for p in pts]
    if published:
        ax.plot(x, m, ls="--", marker=marker, mfc="none", color=colour, alpha=0.8,
                label=f"{label}, published")
        ax.fill_between(x, lo, hi, color=colour, alpha=0.08, hatch="//", lw=0)
    else:
        ax.plot(x, m, ls="-", marker=marker, color=colour, label=f"{label}, ours")
        ax.fill_between(x, lo, hi, color=colour, alpha=0.25, lw=0)


def _fidelity_figure(plt, ours, published, cases, methods, title, extra_methods=()):
    have = [c for c in cases if any(r["case"] == c and r["method"] in methods
                                    for r in ours + published)]
    if not have:
        return None
    ncol = min(len(have), 4 if len(have) > 4 else len(have))
    nrow = math.ceil(len(have) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(4.2 * ncol, 9.0), 3.4 * nrow + 0.9),
                             squeeze=False)
    for ax, case in zip(axes.flat, have):
        for method in list(methods) + list(extra_methods):
            _draw(ax, _series(ours, case, method), method, published=False)
            if method in methods:
                _draw(ax, _series(published, case, method), method, published=True)
        ax.set_title(case)
        ax.set_xlabel("rank")
        ax.set_ylabel(r"$F_\mathrm{mean} \pm$ SD (valid outputs)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(have):]:
        ax.axis("off")
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    ncol_leg = 3
    fig.legend(list(handles.values()), list(handles), loc="lower center",
               ncol=ncol_leg, fontsize="small", frameon=False)
    fig.suptitle(title)
    rows_leg = math.ceil(len(handles) / ncol_leg)
    fig.tight_layout(rect=(0, min(0.45, 0.25 * rows_leg / (3.4 * nrow + 0.9)), 1, 1))
    return fig


def runtime_figure(plt, ours, published_runtimes, bench=None):
    """Seconds per instance against N (log scale): every method of ours (median over the
    ranks and cases of each N), the published runtimes (hollow, dashed) and, when given,
    rows of ``benchmarks/results/bench_solvers.csv`` (median time per N and method)."""
    fig, ax = plt.subplots(figsize=(11, 5))
    by = defaultdict(lambda: defaultdict(list))
    for r in ours:
        t = _num(r.get("seconds_per_instance"))
        if t is not None and t > 0:
            by[r["method"]][int(r["N"])].append(t)
    for method, d in by.items():
        label, colour, marker = STYLE.get(method, (method, None, "o"))
        ns = sorted(d)
        med = [sorted(d[n])[len(d[n]) // 2] for n in ns]
        ax.plot(ns, med, marker=marker, color=colour, label=f"{label}, ours")
    pub = defaultdict(dict)
    for r in published_runtimes:
        n = int(str(r["case"])[1:].split("k")[0])
        pub[r["method"]][n] = float(r["median_s"])
    for pm, d in pub.items():
        label, colour, marker = STYLE.get(RUNTIME_MAP.get(pm, pm), (pm, None, "o"))
        ns = sorted(d)
        ax.plot(ns, [d[n] for n in ns], ls="--", marker=marker, mfc="none", color=colour,
                label=f"{label}, published ({pm}, RTX 4090)")
    if bench:
        bb = defaultdict(lambda: defaultdict(list))
        for r in bench:
            t = _num(r.get("time_s"))
            if t is not None and t > 0:
                bb[r["method"]][int(r.get("n") or r.get("N"))].append(t)
        for method, d in bb.items():
            ns = sorted(d)
            med = [sorted(d[n])[len(d[n]) // 2] for n in ns]
            colour = STYLE.get(method.split("-")[0], (None, None, None))[1]
            ax.plot(ns, med, ls=":", marker=".", color=colour if method == "exact" else None,
                    label=f"{method}, bench_solvers (median over ranks)")
    ax.set_yscale("log")
    ax.set_xlabel("N (qubits)")
    ax.set_ylabel("seconds per instance")
    ax.set_title("Seconds per instance (ours: batched where the method allows)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def make_figures(ours: list[dict], output, *, published: list[dict] | None = None,
                 published_runtimes: list[dict] | None = None, bench: list[dict] | None = None,
                 formats=("png", "pdf")) -> list[Path]:
    """Write figure2, figure3, figure4 (where data exist) and runtime into ``output``.

    Returns the paths written.
    """
    plt = _plt()
    from ..files import atomic_write
    from .published import load_fidelity, load_runtimes

    published = load_fidelity() if published is None else published
    published_runtimes = load_runtimes() if published_runtimes is None else published_runtimes
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    baselines = ("mio_clip",)
    figs = {
        "figure2": _fidelity_figure(plt, ours, published, FIGURE2, ("cdae", "model2", "random_guess"),
                                    "Fig. 2: model1, model2, random guessing", baselines),
        "figure3": _fidelity_figure(plt, ours, published, FIGURE3, ("cdae", "random_guess"),
                                    "Fig. 3: model1 vs random guessing (k = N-1, N-2)", baselines),
        "figure4": _fidelity_figure(plt, ours, published,
                                    FIGURE4 + [c for c in ("N3k2", "N4k2", "N4k3", "N5k3")],
                                    ("cdae_then_mio", "random_guess"),
                                    "Fig. 4: model1 + MIO vs random guessing", ()),
        "runtime": runtime_figure(plt, ours, published_runtimes, bench),
    }
    written = []
    for name, fig in figs.items():
        if fig is None:
            continue
        for fmt in formats:
            p = out / f"{name}.{fmt}"
            with atomic_write(p, "wb") as f:
                fig.savefig(f, dpi=130, format=fmt)
            written.append(p)
        plt.close(fig)
    return written
