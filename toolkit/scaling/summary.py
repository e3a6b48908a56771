"""The paper's three questions, answered from a sweep's results and fits, as a markdown report.

1. Which variant is best at equal FLOPs?  (best val NELBO per budget)
2. How much compute does one variant save over another to reach the same loss?  (e.g. MDLM
   trained with the low-variance loss vs the NELBO; the paper reports ~12%)
3. Does the compute-optimal size N* grow with the budget C?  (a_N and its interval)
"""
from __future__ import annotations

import math

import numpy as np

from toolkit.errors import UserError
from toolkit.scaling.analysis import compute_to_reach
from toolkit.scaling.fit import IsoFlopFit, ParametricFit


def best_per_budget(df, variant: str):
    """Lowest val NELBO the variant reached at each budget (a Series indexed by budget): the best size's
    mean over its training seeds, where a point ran with several (never the luckiest seed)."""
    sub = df[df["variant"] == variant]
    if sub.empty:
        raise UserError(f"no runs of variant '{variant}' (variants: {', '.join(sorted(df['variant'].unique()))})")
    return sub.groupby(["budget", "size"])["val_nelbo"].mean().groupby("budget").min().sort_index()


def interpolated_compute(best, loss: float) -> float:
    """FLOPs at which a variant's per-budget best loss reaches `loss`: log L linear in log C between
    neighbouring budgets; nan when `loss` lies outside the losses reached (no extrapolation)."""
    c, l = np.log(best.index.to_numpy(float)), np.log(best.to_numpy(float))
    for i in range(len(c) - 1):
        lo, hi = sorted((l[i], l[i + 1]))
        if lo <= math.log(loss) <= hi and l[i] != l[i + 1]:
            w = (math.log(loss) - l[i]) / (l[i + 1] - l[i])
            return float(math.exp(c[i] + w * (c[i + 1] - c[i])))
    return math.nan


def saving_rows(df, fits: dict[str, IsoFlopFit], better: str, baseline: str) -> list[dict]:
    """Per budget of `baseline`: the compute `better` needs for the same loss, two ways: interpolating
    `better`'s best losses between budgets (target: `baseline`'s best run), and law against law
    (target: `baseline`'s L*(C) power law at that budget)."""
    base, cand = best_per_budget(df, baseline), best_per_budget(df, better)
    laws = better in fits and baseline in fits and "L" in fits[baseline].prefactors
    rows = []
    for budget, loss in base.items():
        c_interp = interpolated_compute(cand, loss)
        c_law = compute_to_reach(fits[better], fits[baseline].predict("L", budget)) if laws else math.nan
        rows.append({"budget": budget, "target": loss, "interp_flops": c_interp,
                     "saving_interp": 1 - c_interp / budget, "law_flops": c_law, "saving_law": 1 - c_law / budget})
    return rows


def _verdict(lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "undetermined (no interval)"
    return "yes" if lo > 0 else "no" if hi < 0 else "undetermined (interval spans 0)"


def _with_interval(x: float, lo: float, hi: float) -> str:
    if not math.isfinite(x):
        return "n/a (fewer than 2 vertices)"
    return f"{x:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if math.isfinite(lo) and math.isfinite(hi) else "")


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:+.1f}%"


def summary_markdown(df, fits: dict[str, IsoFlopFit], compare: list[tuple[str, str]] = (),
                     parametric: dict[str, ParametricFit] | None = None) -> str:
    variants = sorted(df["variant"].unique())
    budgets = sorted(df["budget"].unique())
    out = ["# Scaling study summary", "",
           f"{len(df)} finished runs, {len(variants)} variants, budgets {', '.join(f'{b:.3g}' for b in budgets)}."]
    if "epochs" in df.columns:
        out.append(f"Passes over the training data per run: {df['epochs'].min():.2f} to {df['epochs'].max():.2f}.")
    if "wall_s" in df.columns:
        out.append(f"Summed wall time of the runs: {df['wall_s'].sum() / 60:.1f} min.")
    best = {v: best_per_budget(df, v) for v in variants}
    out += ["", "## 1. Best val NELBO at equal FLOPs (nats per token, lower is better)", "",
            "| budget | " + " | ".join(variants) + " | order |", "|---" * (len(variants) + 2) + "|"]
    for b in budgets:
        vals = {v: best[v].get(b, math.nan) for v in variants}
        order = " < ".join(v for v in sorted(vals, key=lambda v: vals[v]) if math.isfinite(vals[v]))
        out.append(f"| {b:.3g} | " + " | ".join(f"{vals[v]:.4f}" for v in variants) + f" | {order} |")
    for better, baseline in compare:
        out += ["", f"## 2. Compute `{better}` needs to reach `{baseline}`'s loss", "",
                "Saving = 1 - C(better) / C(baseline) at equal loss: interpolated between `better`'s best runs "
                "(target: `baseline`'s best run), and L*(C) power law against power law. "
                "n/a: the loss lies outside what `better` reached.", "",
                "| baseline budget | its best val NELBO | saving (interpolated) | saving (power law) |",
                "|---|---|---|---|"]
        for r in saving_rows(df, fits, better, baseline):
            out.append(f"| {r['budget']:.3g} | {r['target']:.4f} | {_pct(r['saving_interp'])} | {_pct(r['saving_law'])} |")
    out += ["", "## 3. Does N* grow with C?", "",
            "Best trained size per budget (non-embedding parameters); approach 2: parabola vertices N* "
            "(* = inside the trained sizes) and a_N of N* ~ C^a_N; approach 3: a_N = beta / (alpha + beta) "
            "of L = E + A/N^alpha + B/D^beta fitted to all runs. Intervals: 95% bootstrap.", "",
            "| variant | best trained size per budget | N* per budget (approach 2) | a_N (approach 2) | grows "
            "| a_N (approach 3) | grows |", "|---|---|---|---|---|---|---|"]
    for v in variants:
        sub = df[df["variant"] == v]
        best_sizes = ", ".join(f"{sub.loc[g['val_nelbo'].idxmin(), 'params']:.3g}" for _, g in sub.groupby("budget"))
        cells = ["n/a (no budget with 3 sizes)", "n/a", "n/a"]
        if v in fits:
            f = fits[v]
            lo, hi = f.intervals.get("a_N", (math.nan, math.nan))
            cells = [", ".join(f"{x.n_star:.3g}{'*' if x.in_range else ''}" if math.isfinite(x.n_star) else "none"
                               for x in f.valleys),
                     _with_interval(f.exponents["a_N"], lo, hi), _verdict(lo, hi)]
        ap3 = ["n/a", "n/a"]
        if parametric and v in parametric:
            p = parametric[v]
            lo, hi = p.intervals.get("a_N", (math.nan, math.nan))
            ap3 = [_with_interval(p.a_N, lo, hi),
                   _verdict(lo, hi) if p.identified else "not identified (an exponent at a bound or unmoved)"]
        out.append(f"| {v} | {best_sizes} | " + " | ".join(cells + ap3) + " |")
    return "\n".join(out) + "\n"


def parse_compare(specs: list[str], variants) -> list[tuple[str, str]]:
    """'better:baseline' pairs of variant names, each one present in the results."""
    pairs = []
    for s in specs:
        better, sep, baseline = s.partition(":")
        if not sep or not better or not baseline:
            raise UserError(f"--compare takes BETTER:BASELINE variant names (got '{s}')")
        for v in (better, baseline):
            if v not in set(variants):
                raise UserError(f"--compare: no runs of variant '{v}' (variants: {', '.join(sorted(set(variants)))})")
        pairs.append((better, baseline))
    return pairs
