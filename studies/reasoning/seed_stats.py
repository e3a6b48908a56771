"""The reasoning study's statistics over training seeds: a point's seed mean, spread and interval,
the decoding setting chosen on the validation problems, and the plateau rule on seed means.

A point is one (size, family, fine-tuning budget), fine-tuned once per seed. Its headline figure is
the test accuracy of ONE decoding setting, chosen beforehand on the validation problems (the best
seed-mean validation accuracy); taking the best of several settings on the test problems themselves
would be biased upward. The interval is a t-interval over the per-seed test accuracies: it holds the
seed-to-seed variance of training (and each seed's evaluation noise); it does not hold the choice of
the 300 test problems, which every seed shares.
"""
from __future__ import annotations

import math
from statistics import mean, stdev

FLAT, RISING, ENDED = "flat", "still rising", "ladder ended"


def seed_summary(values: list[float]) -> dict:
    """Mean, sample standard deviation, range and 95% t-interval of per-seed values."""
    n = len(values)
    m = mean(values)
    sd = stdev(values) if n > 1 else 0.0
    if n > 1:
        from scipy.stats import t   # deferred: scipy is slow to import
        half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        low, high = m - half, m + half
    else:
        low = high = math.nan   # one seed: no seed interval
    return {"n": n, "mean": m, "sd": sd, "min": min(values), "max": max(values), "t_low": low, "t_high": high}


def setting_of(row: dict) -> tuple[str, int]:
    return row["sampler"], int(row["steps"])


def per_setting(rows: list[dict], split: str) -> dict[tuple[str, int], dict[int, dict]]:
    """{setting: {seed: row}} for one point's rows of one split."""
    out: dict[tuple[str, int], dict[int, dict]] = {}
    for r in rows:
        if r["split"] == split:
            out.setdefault(setting_of(r), {})[int(r["seed"])] = r
    return out


def choose_setting(validation_rows: list[dict]) -> tuple[str, int]:
    """The setting with the best seed-mean validation accuracy (ties: fewer network evaluations,
    then the first listed). Sees validation rows only: the test set cannot sway the choice."""
    if any(r["split"] != "validation" for r in validation_rows):
        raise ValueError("choose_setting takes validation rows only")
    by_setting = per_setting(validation_rows, "validation")
    order = list(by_setting)

    def key(s):
        seeds = by_setting[s].values()
        return (-mean(r["accuracy"] for r in seeds), mean(r["nfe"] for r in seeds), order.index(s))
    return min(by_setting, key=key)


def point_summary(rows: list[dict]) -> dict:
    """One point's headline from its rows (every seed, both splits, every setting): the setting chosen
    on validation, its test accuracy over the seeds that have both splits, and what the test set
    alone would have picked (exploration)."""
    test, val = per_setting(rows, "test"), per_setting(rows, "validation")
    seeds = sorted(set.intersection(*(set(s) for s in [*test.values(), *val.values()])))
    if not seeds:
        raise ValueError("no seed has both its validation and test evaluation")
    chosen = choose_setting([r for s in val.values() for seed, r in s.items() if seed in seeds])
    picked = [test[chosen][seed] for seed in seeds]
    acc = seed_summary([r["accuracy"] for r in picked])
    loss = seed_summary([r["task_val_nelbo"] for r in picked])
    test_means = {s: mean(test[s][seed]["accuracy"] for seed in seeds) for s in test}
    best_on_test = max(test_means, key=test_means.get)
    return {"seeds": seeds, "sampler": chosen[0], "steps": chosen[1],
            "validation_accuracy": mean(val[chosen][seed]["accuracy"] for seed in seeds),
            "accuracy": acc["mean"], "accuracy_sd": acc["sd"], "accuracy_min": acc["min"], "accuracy_max": acc["max"],
            "t_low": max(0.0, acc["t_low"]) if acc["n"] > 1 else None,
            "t_high": min(1.0, acc["t_high"]) if acc["n"] > 1 else None,
            "per_seed": [r["accuracy"] for r in picked], "nfe": mean(r["nfe"] for r in picked),
            "task_val_nelbo": loss["mean"], "task_val_nelbo_sd": loss["sd"], "task_val_nelbo_min": loss["min"],
            "explore_best_setting": f"{best_on_test[0]} {best_on_test[1]}",
            "explore_best_accuracy": test_means[best_on_test],
            "explore_ancestral": max((v for s, v in test_means.items() if s[0] == "ancestral"), default=None),
            "chosen_rows": picked}


def plateau(previous: dict, last: dict) -> tuple[str, str]:
    """The plateau rule between two consecutive rungs, on seed means: (state, why).

    Flat only when the last rung's seed mean lies within the previous rung's seed range (min..max)
    and the task loss has stopped falling (its seed mean is not below the previous rung's lowest
    seed). Above the range: still rising. Within it while the loss still falls: still rising (the
    loss says training has not converged). Below the range: the ladder ended on a fall, no plateau.
    """
    a, b = previous["budget_steps"], last["budget_steps"]
    lo, hi = previous["accuracy_min"], previous["accuracy_max"]
    if last["accuracy"] > hi:
        return RISING, f"{b} steps' seed mean {last['accuracy']:.1%} is above {a} steps' seed range [{lo:.1%}, {hi:.1%}]"
    if last["accuracy"] < lo:
        return ENDED, (f"{b} steps' seed mean {last['accuracy']:.1%} fell below {a} steps' seed range"
                       f" [{lo:.1%}, {hi:.1%}]: no plateau found")
    if last["task_val_nelbo"] < previous["task_val_nelbo_min"]:
        return RISING, (f"{b} steps' seed mean is within {a} steps' seed range but the task loss still falls"
                        f" ({previous['task_val_nelbo']:.3g} -> {last['task_val_nelbo']:.3g})")
    return FLAT, (f"{b} steps' seed mean {last['accuracy']:.1%} is within {a} steps' seed range [{lo:.1%}, {hi:.1%}]"
                  f" and the task loss stopped falling ({previous['task_val_nelbo']:.3g} -> {last['task_val_nelbo']:.3g})")


def ladder_verdict(rungs: list[dict]) -> tuple[str, str]:
    """The plateau rule at a ladder's end (rungs sorted by budget); one rung cannot show a plateau."""
    if len(rungs) < 2:
        return ENDED, f"one rung ({rungs[0]['budget_steps']} steps): no plateau test"
    return plateau(rungs[-2], rungs[-1])


def overlap(a: dict, b: dict) -> bool:
    """Do two points' seed t-intervals overlap (or is either a single seed)?"""
    if a["t_low"] is None or b["t_low"] is None:
        return True
    return a["t_low"] <= b["t_high"] and b["t_low"] <= a["t_high"]
