"""Training seeds in a results table: which orderings and savings the seeds resolve.

A sweep point (variant, size, budget) run with several `seed`s has a mean, a spread and a t interval.
Orderings between variants at a budget compare their best points' seed means with Welch's interval
on the difference ("not resolved at this scale" when it spans 0); the compute saving of one variant
over another is bootstrapped over the seeds of every point that has more than one (points with one
seed stay fixed, and the table says how many seeds each point had). With three seeds, resampling
them would understate the spread (a resample of three values has little variety), so each draw
takes the point's mean from its t distribution, mean + sd / sqrt(n) * T(n - 1): the bootstrap then
agrees with the t intervals of the points.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from toolkit.scaling.summary import interpolated_compute

LEVEL = 0.95


def has_seeds(df) -> bool:
    """Whether any point of the table was run with more than one seed."""
    return "seed" in df.columns and bool((df.groupby(["variant", "budget", "size"])["seed"].nunique() > 1).any())


def t_interval(values, level: float = LEVEL) -> tuple[float, float]:
    """The t interval of the mean of `values` (nan for fewer than two)."""
    x = np.asarray(values, float)
    if len(x) < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def best_points(df, budget: float) -> dict[str, list[float]]:
    """Per variant, the val NELBO of every seed at its best size at `budget` (lowest seed mean)."""
    out = {}
    for variant, sub in df[df["budget"] == budget].groupby("variant"):
        by_size = sub.groupby("size")["val_nelbo"]
        out[variant] = by_size.get_group(by_size.mean().idxmin()).tolist()
    return out


def welch_difference(a, b, level: float = LEVEL) -> tuple[float, float, float]:
    """mean(a) - mean(b) with Welch's interval (nan bounds unless both have two or more values)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + level / 2, dof) * se
    return diff, diff - half, diff + half


def ordering_rows(df, budget: float) -> list[dict]:
    """Neighbouring variants in order of their best seed mean at `budget`, each gap with its interval."""
    points = best_points(df, budget)
    order = sorted(points, key=lambda v: np.mean(points[v]))
    rows = []
    for lower, higher in zip(order, order[1:]):
        diff, lo, hi = welch_difference(points[higher], points[lower])
        verdict = ("single seed: not tested" if not math.isfinite(lo) else
                   "resolved" if lo > 0 else "not resolved at this scale")
        rows.append({"budget": budget, "lower": lower, "higher": higher, "n_lower": len(points[lower]),
                     "n_higher": len(points[higher]), "gap": diff, "gap_lo": lo, "gap_hi": hi, "verdict": verdict})
    return rows


def _resampled_best(df, variant: str, rng) -> "dict[float, float]":
    """Per budget, the best size's mean, each point's mean drawn from its t distribution over seeds."""
    best = {}
    for (budget, _), g in df[df["variant"] == variant].groupby(["budget", "size"]):
        x = g["val_nelbo"].to_numpy(float)
        mean = float(x.mean())
        if len(x) > 1:
            mean += float(x.std(ddof=1)) / math.sqrt(len(x)) * float(rng.standard_t(len(x) - 1))
        best[budget] = min(best.get(budget, math.inf), mean)
    return best


def saving_interval(df, better: str, baseline: str, budget: float, n_boot: int = 2000, seed: int = 0,
                    level: float = LEVEL) -> tuple[float, float, float]:
    """1 - C(better) / budget at `baseline`'s best seed-mean loss at `budget`, interpolated between
    `better`'s per-budget best seed means; its percentile interval redraws every seeded point's mean."""
    import pandas as pd   # deferred: only tables need it

    def saving(best_better: dict, best_base: dict) -> float:
        if min(*best_better.values(), best_base[budget]) <= 0:   # a heavy-tailed draw past zero loss
            return math.nan
        return 1 - interpolated_compute(pd.Series(best_better).sort_index(), best_base[budget]) / budget
    rng = np.random.default_rng(seed)
    means = {v: df[df["variant"] == v].groupby(["budget", "size"])["val_nelbo"].mean().groupby("budget").min().to_dict()
             for v in (better, baseline)}
    point = saving(means[better], means[baseline])
    draws = [saving(_resampled_best(df, better, rng), _resampled_best(df, baseline, rng)) for _ in range(n_boot)]
    finite = [d for d in draws if math.isfinite(d)]
    if len(finite) < n_boot // 2:
        return point, math.nan, math.nan
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    if n_boot - len(finite) > n_boot * (1 - level) / 2:
        # more draws than the tail holds put the target outside the losses `better` reached (no
        # extrapolation): the interval is open on that side
        lo = -math.inf if lo > -math.inf else lo
    return point, float(lo), float(hi)


def seeds_markdown(df, compare: list[tuple[str, str]] = ()) -> str:
    """The seed section of the summary: point spreads, orderings and savings with their intervals."""
    counts = df.groupby(["variant", "budget", "size"])["val_nelbo"].agg(["count", "mean", "std"]).reset_index()
    seeded = counts[counts["count"] > 1]
    out = ["## Training seeds", "",
           f"{len(seeded)} points ran with more than one seed (`seed` column). Mean, standard deviation and 95% t "
           "interval over seeds:", "", "| variant | budget | size | seeds | mean | sd | 95% interval |", "|---" * 7 + "|"]
    for _, r in seeded.iterrows():
        g = df[(df["variant"] == r["variant"]) & (df["budget"] == r["budget"]) & (df["size"] == r["size"])]
        lo, hi = t_interval(g["val_nelbo"])
        out.append(f"| {r['variant']} | {r['budget']:.3g} | {r['size']} | {int(r['count'])} | {r['mean']:.4f} | "
                   f"{r['std']:.4f} | [{lo:.4f}, {hi:.4f}] |")
    out += ["", "Orderings at each budget (neighbours by best seed mean; gap = higher - lower, Welch 95% interval):", "",
            "| budget | lower | higher | seeds | gap | interval | verdict |", "|---" * 7 + "|"]
    for budget in sorted(df["budget"].unique()):
        for r in ordering_rows(df, budget):
            interval = f"[{r['gap_lo']:+.4f}, {r['gap_hi']:+.4f}]" if math.isfinite(r["gap_lo"]) else "-"
            out.append(f"| {budget:.3g} | {r['lower']} | {r['higher']} | {r['n_lower']}, {r['n_higher']} | "
                       f"{r['gap']:+.4f} | {interval} | {r['verdict']} |")
    for better, baseline in compare:
        out += ["", f"Saving of `{better}` over `{baseline}` (seed means; 95% parametric bootstrap over seeds; "
                "points with one seed held fixed):", "",
                "| budget | saving | interval | loss gap (baseline - better) | Welch 95% interval |", "|---" * 5 + "|"]
        for budget in sorted(df[df["variant"] == baseline]["budget"].unique()):
            s, lo, hi = saving_interval(df, better, baseline, budget)
            cell = "n/a" if not math.isfinite(s) else f"{100 * s:+.1f}%"
            interval = ("-" if math.isnan(lo) else f"[{100 * lo:+.1f}%, {100 * hi:+.1f}%]" if math.isfinite(lo)
                        else f"(open below, {100 * hi:+.1f}%]: in over 2.5% of draws the target needs more compute than was run")
            points = best_points(df, budget)
            gap, glo, ghi = welch_difference(points[baseline], points[better]) if better in points else (math.nan,) * 3
            gap_interval = f"[{glo:+.4f}, {ghi:+.4f}]" if math.isfinite(glo) else "-"
            out.append(f"| {budget:.3g} | {cell} | {interval} | {gap:+.4f} | {gap_interval} |")
    return "\n".join(out) + "\n"
