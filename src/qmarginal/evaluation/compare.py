"""Our results beside the published ones, row by row (matching case, method and rank)."""

from __future__ import annotations

import math

__all__ = ["compare_rows", "format_comparison"]


def _f(v):
    return None if v is None or v == "" or (isinstance(v, float) and math.isnan(v)) else float(v)


def _se(row) -> float:
    """Standard error of F_mean: SD / sqrt(samples)."""
    return (_f(row.get("fidelity_sd")) or 0.0) / math.sqrt(max(1, int(row.get("samples") or 1)))


def compare_rows(ours: list[dict], published: list[dict]) -> list[dict]:
    """For each of our rows with a published match: both values, the differences and a verdict.

    Verdict "meets/beats" when our success rate >= the published one (where given) and our
    F_mean >= the published F_mean (where both exist; a published 1.0 counts as met at
    >= 0.99995, the precision of the CSV); "falls short" otherwise; "n/a" when nothing compares.
    ``random_guess`` is a baseline: its verdict says whether our F_mean agrees with the
    published one within 3 combined standard errors ("baseline, consistent" or "differs").
    """
    pub = {(r["case"], r["method"], int(r["rank"])): r for r in published}
    out = []
    for r in ours:
        p = pub.get((r["case"], r["method"], int(r["rank"])))
        if p is None:
            continue
        fo, fp = _f(r.get("fidelity_mean")), _f(p.get("fidelity_mean"))
        so, sp = _f(r.get("success_rate_percent")), _f(p.get("success_rate_percent"))
        df = fo - fp if fo is not None and fp is not None else None
        ds = so - sp if so is not None and sp is not None else None
        checks = []
        if r["method"] == "random_guess":  # a baseline: agreement, not beating, is the test
            se = math.hypot(_se(r), _se(p))
            verdict = ("n/a" if df is None else
                       "baseline, consistent" if abs(df) <= 3 * se else "baseline, differs")
            out.append(_row(r, p, fo, fp, so, sp, df, ds, verdict))
            continue
        if df is not None:
            checks.append(fo >= fp - (5e-5 if fp >= 0.99995 else 0.0))
        elif fp is not None:
            checks.append(False)  # they have a fidelity, we have no valid output
        if ds is not None:
            checks.append(so >= sp)
        verdict = "n/a" if not checks else ("meets/beats" if all(checks) else "falls short")
        out.append(_row(r, p, fo, fp, so, sp, df, ds, verdict))
    return out


def _row(r, p, fo, fp, so, sp, df, ds, verdict):
    return {"case": r["case"], "method": r["method"], "rank": int(r["rank"]),
            "F_ours": fo, "SD_ours": _f(r.get("fidelity_sd")), "F_pub": fp,
            "SD_pub": _f(p.get("fidelity_sd")), "dF": df, "success_ours": so,
            "success_pub": sp, "dSuccess": ds, "samples_ours": r.get("samples"),
            "samples_pub": p.get("samples"), "verdict": verdict}


def format_comparison(rows: list[dict]) -> str:
    """A plain-text table of :func:`compare_rows` with a summary line."""
    def f(v, spec):
        return "-" if v is None else format(v, spec)
    head = (f"{'case':<6} {'method':<14} {'rank':>4}  {'F ours':>15}  {'F published':>15}  "
            f"{'dF':>8}  {'succ ours':>9}  {'succ pub':>8}  {'dSucc':>6}  {'n':>9}  verdict")
    lines = [head, "-" * len(head)]
    for r in rows:
        fo = f"{f(r['F_ours'], '.4f')}+-{f(r['SD_ours'], '.4f')}"
        fp = f"{f(r['F_pub'], '.4f')}+-{f(r['SD_pub'], '.4f')}"
        lines.append(f"{r['case']:<6} {r['method']:<14} {r['rank']:>4}  {fo:>15}  {fp:>15}  "
                     f"{f(r['dF'], '+.4f'):>8}  {f(r['success_ours'], '.1f'):>9}  "
                     f"{f(r['success_pub'], '.1f'):>8}  {f(r['dSuccess'], '+.1f'):>6}  "
                     f"{str(r['samples_ours']) + '/' + str(r['samples_pub']):>9}  {r['verdict']}")
    n = len(rows)
    good = sum(r["verdict"] == "meets/beats" for r in rows)
    base = sum(r["verdict"].startswith("baseline") for r in rows)
    short = sum(r["verdict"] == "falls short" for r in rows)
    lines.append(f"{n} rows compared: {good} meet or beat the published values, {short} fall "
                 f"short, {base} baseline rows"
                 if n else "no row matches a published (case, method, rank)")
    return "\n".join(lines)
