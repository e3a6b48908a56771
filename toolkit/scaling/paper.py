"""The paper's iso-FLOP minima, read by eye off its figure, to draw next to a study of ours.

Sahoo et al. (2026), "Scaling Beyond Masked Diffusion Language Models": validation loss (nats
per token, sequences of 2048 tokens, 32k vocabulary) and the size at the minimum of each
iso-FLOP curve. The values are approximate (read off a plot) and at a scale 1e6-1e8 times
larger than a CPU study's, with another corpus and tokenizer: compare slopes, not values.
"""
from __future__ import annotations

import pandas as pd

from toolkit.scaling.plan import label_parts

# budget (FLOPs) -> {variant: (loss at the minimum, non-embedding params at the minimum)}
PAPER_MINIMA = {
    6e18: {"ar": (2.86, 200e6), "mdlm_loss-low_var": (3.375, 113e6), "duo": (3.545, 85e6), "esolm": (3.60, 110e6)},
    1e19: {"ar": (2.75, 270e6), "mdlm_loss-low_var": (3.245, 140e6), "duo": (3.42, 130e6), "esolm": (3.47, 170e6)},
    3e19: {"ar": (2.545, 470e6), "mdlm_loss-low_var": (3.04, 230e6), "duo": (3.165, 290e6), "esolm": (3.23, 330e6)},
    6e19: {"ar": (2.43, 750e6), "mdlm_loss-low_var": (2.92, 300e6), "duo": (3.03, 380e6), "esolm": (3.09, 430e6)},
    1e20: {"ar": (2.365, 1.0e9), "mdlm_loss-low_var": (2.825, 470e6), "duo": (2.94, 570e6), "esolm": (3.01, 570e6)},
}


def paper_minima() -> pd.DataFrame:
    """One row per (variant, budget): loss_star, n_star, and source='paper (read off its figure)'."""
    rows = [{"variant": v, "budget": c, "loss_star": loss, "n_star": n, "source": "paper (read off its figure)"}
            for c, by_variant in PAPER_MINIMA.items() for v, (loss, n) in by_variant.items()]
    return pd.DataFrame(rows)


def family_of_variant(variant: str) -> str:
    """'mdlm_loss-low_var' -> 'mdlm': the family part of a sweep's variant name."""
    return label_parts(variant)[0]


def plot_minima_side_by_side(ours: pd.DataFrame, paper: pd.DataFrame | None = None,
                             ours_label: str = "this study: CPU scale"):
    """2 x 2 panels: L* and N* against C, the paper's minima (left) and ours (right), one colour per
    family (same colours on both sides). `ours` has columns variant, budget, loss_star, n_star."""
    import matplotlib.pyplot as plt   # deferred: plotting is optional and slow to import
    from toolkit.plotting import apply_theme, family_colour, log_budget_axis   # deferred: with the plotting libraries
    from toolkit.scaling.plots import variant_label   # deferred: see above
    paper = paper_minima() if paper is None else paper
    both = pd.concat([paper.assign(side="paper: 6e18-1e20 FLOPs, 85M-1B params"),
                      ours.assign(side=ours_label)], ignore_index=True)
    both = (both.dropna(subset=["loss_star", "n_star"]).assign(family=lambda d: d["variant"].map(family_of_variant))
            .assign(variant=lambda d: d["variant"].map(variant_label)))
    sns = apply_theme()
    fig, axes = plt.subplots(2, 2, figsize=(12, 7), layout="constrained")
    palette = {f: family_colour(f) for f in both["family"].unique()}
    legend: dict = {}
    for col, side in enumerate(both["side"].unique()):
        sub = both[both["side"] == side]
        for row, (y, label) in enumerate((("loss_star", "L* (nats/token)"), ("n_star", "N* (non-embedding params)"))):
            ax = axes[row, col]
            sns.lineplot(sub, x="budget", y=y, hue="family", style="variant", markers=True, dashes=False,
                         palette=palette, ax=ax, legend=row == 0)
            ax.set(yscale="log" if y == "n_star" else "linear", xlabel="compute C (FLOPs)",
                   ylabel=label, title=side if row == 0 else "")
            log_budget_axis(ax)
            if y == "n_star":
                log_budget_axis(ax, "y")
            if row == 0:      # one legend for both sides, outside the data
                handles, labels = ax.get_legend_handles_labels()
                for label, handle in zip(labels, handles):   # a variant named like its family keeps the colour
                    legend.setdefault(label, handle)
                ax.get_legend().remove()
    fig.legend(list(legend.values()), list(legend), loc="outside right upper", fontsize=8, frameon=False)
    return fig
