"""Seaborn figures of a scaling study: iso-FLOP valleys with their minima, and N*, L* against C."""
from __future__ import annotations

import math

import numpy as np

from toolkit.scaling.fit import IsoFlopFit
from toolkit.scaling.plan import label_parts


def _style():
    from toolkit.plotting import apply_theme   # deferred: plotting libraries are optional and slow to import
    return apply_theme()


def variant_label(variant: str) -> str:
    """'mdlm_loss-low_var' -> 'mdlm, loss=low_var': a sweep variant's name as a reader reads it."""
    family, rest = label_parts(variant)
    return f"{family}, {rest.replace('-', '=', 1)}" if rest else family


def plot_isoflop(results, fits: dict[str, IsoFlopFit], variants: list[str] | None = None,
                 params_col: str = "params", loss_col: str = "val_nelbo"):
    """One panel per variant: loss vs non-embedding params per budget, fitted parabola, vertex marked."""
    import matplotlib.pyplot as plt   # deferred: see _style
    from toolkit.plotting import budget, log_budget_axis   # deferred: with the plotting libraries
    sns = _style()
    variants = variants or sorted(results["variant"].unique())
    cols = min(3, len(variants))
    rows = math.ceil(len(variants) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.9 * cols + 1.6, 3.2 * rows), sharex=True, sharey=True,
                             squeeze=False, layout="constrained")
    budgets = sorted(results["budget"].unique())
    palette = dict(zip(budgets, sns.color_palette("viridis", len(budgets))))
    for ax in axes.flat[len(variants):]:
        ax.set_visible(False)
    for ax, v in zip(axes.flat, variants):
        sub = results[results["variant"] == v]
        for c in budgets:
            pts = sub[sub["budget"] == c].sort_values(params_col)
            if pts.empty:
                continue
            ax.plot(pts[params_col], pts[loss_col], "o", color=palette[c], label=budget(c))
        for valley in (fits[v].valleys if v in fits else []):
            pts = sub[sub["budget"] == valley.budget]
            x = np.linspace(np.log(pts[params_col].min()) - 0.2, np.log(pts[params_col].max()) + 0.2, 60)
            ax.plot(np.exp(x), np.polyval(valley.coef, x), "-", color=palette[valley.budget], lw=1.2)
            near = math.isfinite(valley.n_star) and x[0] <= math.log(valley.n_star) <= x[-1]
            if near:   # filled: inside the trained sizes; hollow: a short extrapolation beyond them
                ax.plot([valley.n_star], [valley.loss_star], "*", ms=12, mec="black", mew=0.6,
                        color=palette[valley.budget], mfc=palette[valley.budget] if valley.in_range else "none")
        log_budget_axis(ax)
        ax.set_title(variant_label(v))
        ax.set_xlabel("non-embedding parameters")
    for row in axes:
        row[0].set_ylabel("validation NELBO (nats/token)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, title="budget (FLOPs)", loc="outside right upper", frameon=False)
    return fig


def plot_optima(fits: dict[str, IsoFlopFit]):
    """N*(C) and L*(C) per variant on log-log axes with their power-law fits."""
    import matplotlib.pyplot as plt   # deferred: see _style
    sns = _style()
    from toolkit.plotting import budget, legend_outside, log_budget_axis   # deferred: with the plotting libraries
    fig, (ax_n, ax_l) = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
    colors = dict(zip(sorted(fits), sns.color_palette(n_colors=len(fits))))
    for v, fit in sorted(fits.items()):
        ok = [x for x in fit.valleys if math.isfinite(x.n_star)]
        if not ok:
            continue
        c = np.array([x.budget for x in ok])
        for ax, what, ys in ((ax_n, "N", [x.n_star for x in ok]), (ax_l, "L", [x.loss_star for x in ok])):
            a = fit.exponents.get(f"a_{what}", math.nan)
            ci = fit.intervals.get(f"a_{what}")
            label = f"{variant_label(v)}: {a:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")
            ax.plot(c, ys, "o", color=colors[v], label=label)
            if what in fit.prefactors:
                grid = np.geomspace(c.min(), c.max(), 20)
                ax.plot(grid, [fit.predict(what, g) for g in grid], "-", color=colors[v], lw=1)
    for ax, ylabel in ((ax_n, "N* (non-embedding params)"), (ax_l, "L* (val NELBO, nats/token)")):
        log_budget_axis(ax, "y", label=lambda v: f"{v:g}" if v < 100 else budget(v))
        log_budget_axis(ax)
        ax.set_xlabel("training compute C (FLOPs)")
        ax.set_ylabel(ylabel)
        legend_outside(ax, title="exponent [95% CI]", fontsize=7, title_fontsize=7)
    return fig
