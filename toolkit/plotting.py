"""One look for every figure the notebooks and reports draw: the seaborn theme, compute budgets written
as 1e12, log axes of FLOPs with a few readable ticks, and legends kept outside the data."""
from __future__ import annotations

THEME = {"style": "whitegrid", "context": "notebook", "palette": "colorblind"}
# seaborn's colour-blind palette, reordered so that neighbouring families never get orange and vermillion
PALETTE = ["#0173b2", "#de8f05", "#029e73", "#cc78bc", "#d55e00", "#ca9161", "#949494", "#56b4e9"]


def family_colour(family: str) -> str:
    """One colour per family, fixed by the registry's order: the same in the app and every figure."""
    from toolkit.families import REGISTRY   # deferred: a light module for plotting-only callers
    order = list(REGISTRY) + [family]
    return PALETTE[order.index(family) % len(PALETTE)]


def apply_theme():
    """Set the shared seaborn theme; returns seaborn."""
    import seaborn as sns   # deferred: plotting libraries are optional and slow to import
    sns.set_theme(**THEME)
    return sns


def budget(value: float) -> str:
    """A compute budget as 1e12 / 3e12 / 2.5e13 (not 1000000000000.0)."""
    text = f"{value:.2g}"
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"


def log_budget_axis(ax, axis: str = "x", label=None) -> None:
    """A log axis of FLOPs or parameters: ticks at 1, 2 (3) and 5 per decade (only decades on a long axis), labelled like 2e12, and no
    minor labels (on a short axis matplotlib's crowd into each other). `label` formats a tick otherwise."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter   # deferred: see apply_theme
    which = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    lo, hi = (ax.get_xlim() if axis == "x" else ax.get_ylim())
    span = hi / max(lo, 1e-300)
    subs = ((1.0,) if span > 1e3 else (1.0, 2.0, 5.0) if span > 10 else (1.0, 2.0, 3.0, 5.0) if span > 2
            else tuple(range(1, 10)))
    which.set_major_locator(LogLocator(base=10, subs=subs))
    which.set_major_formatter(FuncFormatter(lambda v, _: (label or budget)(v)))
    which.set_minor_formatter(NullFormatter())


def legend_outside(ax, title: str | None = None, **kwargs) -> None:
    """Move the axes' legend to its right, outside the data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, title=title, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                  frameon=False, **kwargs)
