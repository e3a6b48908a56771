"""One look for every figure the app, the explorer, the notebooks and reports draw: one colour per family,
one marker per decoding strategy, one line style per variant of a family (`series_style`, `run_styles`,
`family_palette`), the seaborn theme, compute budgets written as 1e12, log axes of FLOPs with a few
readable ticks, and legends kept outside the data."""
from __future__ import annotations

THEME = {"style": "whitegrid", "context": "notebook", "palette": "colorblind"}
# seaborn's colour-blind palette, reordered so that neighbouring families never get orange and vermillion
PALETTE = ["#0173b2", "#de8f05", "#029e73", "#cc78bc", "#d55e00", "#ca9161", "#949494", "#56b4e9"]


MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]     # one per decoding strategy, in the registry's order
LINESTYLES = ["-", "--", ":", "-."]                     # the checkpoints or variants of one family, in order


def family_colour(family: str) -> str:
    """One colour per family, fixed by the registry's order: the same in the app and every figure."""
    from toolkit.families import REGISTRY   # deferred: a light module for plotting-only callers
    order = list(REGISTRY) + [family]
    return PALETTE[order.index(family) % len(PALETTE)]


def strategy_marker(sampler: str | None = None) -> str:
    """One marker per decoding strategy (None: the default strategy's), fixed by the registry's order."""
    from toolkit.samplers import DEFAULT, names   # deferred: see family_colour
    order = names() + [sampler or DEFAULT]
    return MARKERS[order.index(sampler or DEFAULT) % len(MARKERS)]


def series_style(family: str, sampler: str | None = None, variant: int = 0) -> dict:
    """matplotlib keywords of one series: colour = family, marker = decoding strategy, line style =
    which of the family's checkpoints or variants (0: solid). Every figure draws a series with it."""
    return {"color": family_colour(family), "marker": strategy_marker(sampler),
            "ls": LINESTYLES[variant % len(LINESTYLES)]}


def run_styles(families: dict[str, str], sampler: str | None = None) -> dict[str, dict]:
    """`series_style` per labelled run, from {label: family}: runs of one family share its colour and
    differ by line style, in the order given (e.g. MDLM trained on two objectives)."""
    seen: dict[str, int] = {}
    styles = {}
    for label, family in families.items():
        styles[label] = series_style(family, sampler, seen.get(family, 0))
        seen[family] = seen.get(family, 0) + 1
    return styles


def family_palette(families) -> dict[str, str]:
    """seaborn's `palette=` for a `hue` of family names (a list) or of labels ({label: family})."""
    pairs = families.items() if isinstance(families, dict) else ((f, f) for f in families)
    return {label: family_colour(family) for label, family in pairs}


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
