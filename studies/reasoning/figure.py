"""The reasoning study's figure (accuracy.png): per size, test accuracy and task NELBO against fine-tuning
FLOPs (seed means, t-intervals, each seed), and every decoding setting at the last rung."""
from __future__ import annotations

from pathlib import Path
from statistics import mean

LABELS = {"ar": "AR", "mdlm": "MDLM", "duo": "Duo", "esolm": "Eso-LM"}
COLORS = {"ar": "#222222", "mdlm": "#1f77b4", "duo": "#d62728", "esolm": "#2ca02c"}


def plot(rows: list[dict], points: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from toolkit.plotting import log_budget_axis
    sizes = list(dict.fromkeys(p["size"] for p in points))
    fig, axes = plt.subplots(len(sizes), 3, figsize=(13.5, 3.6 * len(sizes)), squeeze=False)
    for i, size in enumerate(sizes):
        ax, bx, cx = axes[i]
        for fam in LABELS:
            rs = sorted((p for p in points if p["size"] == size and p["family"] == fam), key=lambda p: p["budget_steps"])
            if not rs:
                continue
            x = [p["finetune_flops"] for p in rs]
            y = [100 * p["accuracy"] for p in rs]
            # the t-interval over seeds (one seed: none, so no bar)
            err = [[100 * (p["accuracy"] - (p["accuracy"] if p["t_low"] is None else p["t_low"])) for p in rs],
                   [100 * ((p["accuracy"] if p["t_high"] is None else p["t_high"]) - p["accuracy"]) for p in rs]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=COLORS[fam], label=LABELS[fam])
            for p in rs:   # each seed's own test accuracy
                seeds = [100 * float(v) for v in p["per_seed"].split(";")]
                ax.scatter([p["finetune_flops"]] * len(seeds), seeds, s=10, color=COLORS[fam], alpha=0.45)
            bx.errorbar(x, [p["task_val_nelbo"] for p in rs], yerr=[p["task_val_nelbo_sd"] for p in rs], marker="o",
                        capsize=3, color=COLORS[fam], label=LABELS[fam])
            last = rs[-1]
            seeds = last["seeds"].split(",")
            for sampler, marker in (("ancestral", "o"), ("confidence", "s"), ("block", "^")):
                by_steps: dict[int, list[dict]] = {}
                for r in rows:
                    if (r["size"], r["family"], r["budget_steps"], r["split"], r["sampler"]) == \
                            (size, fam, last["budget_steps"], "test", sampler) and str(r["seed"]) in seeds:
                        by_steps.setdefault(r["steps"], []).append(r)
                ps = sorted(([mean(r["nfe"] for r in v), 100 * mean(r["accuracy"] for r in v), n]
                             for n, v in by_steps.items()))
                if ps:
                    cx.plot([q[0] for q in ps], [q[1] for q in ps], marker=marker, color=COLORS[fam],
                            linestyle="-" if sampler == "ancestral" else ":", label=f"{LABELS[fam]} · {sampler}")
                    for nfe, acc, n in ps:   # the setting chosen on validation, ringed
                        if (sampler, n) == (last["sampler"], last["steps"]):
                            cx.scatter([nfe], [acc], s=140, facecolors="none", edgecolors=COLORS[fam], linewidths=1.5)
        for a in (ax, bx):
            log_budget_axis(a)   # 1e12-style ticks, no crowded minor labels
            a.set_xlabel("fine-tuning FLOPs (6 × parameters × tokens)")
        ax.set_ylabel("exact-match accuracy (%)")
        ax.set_title(f"{size}: test accuracy vs. compute\n(validation-chosen setting; seed mean, 95% t-interval, seeds)",
                     fontsize=9)
        bx.set_ylabel("task val NELBO (nats / response token)")
        bx.set_yscale("log")
        bx.set_title(f"{size}: task NELBO vs. compute (seed mean ± sd)", fontsize=10)
        cx.set_xscale("log", base=2)
        cx.set_xlabel("network evaluations per problem (NFE)")
        cx.set_ylabel("exact-match accuracy (%)")
        cx.set_title(f"{size}: exploration: every setting at the last rung\n(test, seed mean; ringed: chosen on"
                     " validation)", fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
        cx.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
