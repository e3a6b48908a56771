"""Seaborn figures of a scaling study: iso-FLOP valleys with their minima, and N*, L* against C."""
from __future__ import annotations

import math

import numpy as np

from toolkit.scaling.fit import IsoFlopFit


def _style():
    import seaborn as sns   # deferred: plotting libraries are optional and slow to import
    sns.set_theme(style="whitegrid", context="notebook")
    return sns


def plot_isoflop(results, fits: dict[str, IsoFlopFit], variants: list[str] | None = None,
                 params_col: str = "params", loss_col: str = "val_nelbo"):
    """One panel per variant: loss vs non-embedding params per budget, fitted parabola, vertex marked."""
    import matplotlib.pyplot as plt   # deferred: see _style
    from matplotlib.ticker import NullFormatter   # deferred: see _style
    sns = _style()
    variants = variants or sorted(results["variant"].unique())
    fig, axes = plt.subplots(1, len(variants), figsize=(4.2 * len(variants), 3.6), sharex=True, sharey=True,
                             squeeze=False)
    budgets = sorted(results["budget"].unique())
    palette = dict(zip(budgets, sns.color_palette("viridis", len(budgets))))
    for ax, v in zip(axes[0], variants):
        sub = results[results["variant"] == v]
        for c in budgets:
            pts = sub[sub["budget"] == c].sort_values(params_col)
            if pts.empty:
                continue
            ax.plot(pts[params_col], pts[loss_col], "o", color=palette[c], label=f"{c:.2g}")
        for valley in (fits[v].valleys if v in fits else []):
            pts = sub[sub["budget"] == valley.budget]
            x = np.linspace(np.log(pts[params_col].min()) - 0.2, np.log(pts[params_col].max()) + 0.2, 60)
            ax.plot(np.exp(x), np.polyval(valley.coef, x), "-", color=palette[valley.budget], lw=1.2)
            near = math.isfinite(valley.n_star) and x[0] <= math.log(valley.n_star) <= x[-1]
            if near:   # filled: inside the trained sizes; hollow: a short extrapolation beyond them
                ax.plot([valley.n_star], [valley.loss_star], "*", ms=12, mec="black", mew=0.6,
                        color=palette[valley.budget], mfc=palette[valley.budget] if valley.in_range else "none")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())   # crowded minor labels on a short log axis
        ax.set_title(v)
        ax.set_xlabel("non-embedding parameters")
    axes[0][0].set_ylabel("validation NELBO (nats/token)")
    axes[0][-1].legend(title="FLOPs", fontsize=8)
    fig.tight_layout()
    return fig


def plot_optima(fits: dict[str, IsoFlopFit]):
    """N*(C) and L*(C) per variant on log-log axes with their power-law fits."""
    import matplotlib.pyplot as plt   # deferred: see _style
    sns = _style()
    fig, (ax_n, ax_l) = plt.subplots(1, 2, figsize=(9, 3.6))
    colors = dict(zip(sorted(fits), sns.color_palette("tab10", len(fits))))
    for v, fit in sorted(fits.items()):
        ok = [x for x in fit.valleys if math.isfinite(x.n_star)]
        if not ok:
            continue
        c = np.array([x.budget for x in ok])
        for ax, what, ys in ((ax_n, "N", [x.n_star for x in ok]), (ax_l, "L", [x.loss_star for x in ok])):
            a = fit.exponents.get(f"a_{what}", math.nan)
            ci = fit.intervals.get(f"a_{what}")
            label = f"{v}: {a:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")
            ax.plot(c, ys, "o", color=colors[v], label=label)
            if what in fit.prefactors:
                grid = np.geomspace(c.min(), c.max(), 20)
                ax.plot(grid, [fit.predict(what, g) for g in grid], "-", color=colors[v], lw=1)
    for ax, ylabel in ((ax_n, "N* (non-embedding params)"), (ax_l, "L* (val NELBO)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training FLOPs C")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, title="exponent [95% CI]", title_fontsize=7)
    fig.tight_layout()
    return fig
