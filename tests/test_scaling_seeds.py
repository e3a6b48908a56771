"""Seeds in a scaling results table: intervals, orderings and savings that take the seed spread in."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from toolkit.scaling import seeds
from toolkit.scaling.summary import best_per_budget


def table(rows):
    return pd.DataFrame(rows, columns=["variant", "budget", "size", "seed", "val_nelbo"])


def test_t_interval_is_the_textbook_one():
    x = [4.88, 4.905, 4.808]
    lo, hi = seeds.t_interval(x)
    half = stats.t.ppf(0.975, 2) * np.std(x, ddof=1) / math.sqrt(3)
    assert (lo, hi) == pytest.approx((np.mean(x) - half, np.mean(x) + half))
    assert all(math.isnan(v) for v in seeds.t_interval([1.0]))


@pytest.mark.parametrize("a, b", [([0.110, 0.083, 0.130], [0.113, 0.117, 0.123]), ([0.9, 0.8, 0.85, 0.95], [0.5, 0.6])])
def test_welch_difference_is_scipys_welch_interval(a, b):
    """The interval orderings and reproduce.sh read, against scipy's own Welch test (unequal variances)."""
    from scipy.stats import ttest_ind
    ci = ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    diff, low, high = seeds.welch_difference(a, b)
    assert diff == pytest.approx(sum(a) / len(a) - sum(b) / len(b))
    assert (low, high) == pytest.approx((ci.low, ci.high))
    # identical seeds: a zero-width interval; one seed: a difference, no interval
    assert seeds.welch_difference([0.2, 0.2, 0.2], [0.2, 0.2, 0.2]) == pytest.approx((0, 0, 0))
    single = seeds.welch_difference([0.3], [0.1, 0.2])
    assert single[0] == pytest.approx(0.15) and single[1] != single[1]


def test_a_gap_inside_the_seed_spread_is_not_resolved_and_a_wide_one_is():
    # the numbers: MDLM low-var and Eso-LM low-var at 1e13 over three seeds each; AR far below
    df = table([("mdlm_lv", 1e13, "xs", s, v) for s, v in enumerate([4.880, 4.905, 4.808])]
               + [("esolm_lv", 1e13, "xs", s, v) for s, v in enumerate([4.913, 4.972, 4.853])]
               + [("ar", 1e13, "xs", s, v) for s, v in enumerate([4.145, 4.121, 4.160])])
    rows = {(r["lower"], r["higher"]): r for r in seeds.ordering_rows(df, 1e13)}
    assert rows[("ar", "mdlm_lv")]["verdict"] == "resolved"
    assert rows[("mdlm_lv", "esolm_lv")]["verdict"] == "not resolved at this scale"
    assert rows[("mdlm_lv", "esolm_lv")]["gap"] == pytest.approx(np.mean([4.913, 4.972, 4.853]) - np.mean([4.880, 4.905, 4.808]))


def test_best_point_is_the_best_seed_mean_not_the_luckiest_seed():
    df = table([("m", 1e12, "a", 0, 5.0), ("m", 1e12, "a", 1, 5.4),      # mean 5.2, one lucky seed
                ("m", 1e12, "b", 0, 5.1), ("m", 1e12, "b", 1, 5.15)])    # mean 5.125
    assert best_per_budget(df, "m")[1e12] == pytest.approx(5.125)
    assert seeds.best_points(df, 1e12)["m"] == [5.1, 5.15]


def test_saving_interval_covers_its_point_and_widens_with_the_seed_spread():
    def make(spread):
        rows = []
        for v, (l12, l13) in {"base": (5.6, 5.0), "better": (5.5, 4.9)}.items():
            for s, e in enumerate([-spread, 0.0, spread]):
                rows += [(v, 1e12, "xs", s, l12 + e), (v, 1e13, "xs", s, l13 + e)]
        return table(rows)
    point, lo, hi = seeds.saving_interval(make(0.01), "better", "base", 1e13, n_boot=400)
    # base reaches 5.0 at 1e13; better's log L is linear in log C between (1e12, 5.5) and (1e13, 4.9)
    w = (math.log(5.0) - math.log(5.5)) / (math.log(4.9) - math.log(5.5))
    assert point == pytest.approx(1 - 10 ** (12 + w) / 1e13)
    assert lo <= point <= hi
    _, lo_wide, hi_wide = seeds.saving_interval(make(0.05), "better", "base", 1e13, n_boot=400)
    assert hi_wide - lo_wide > hi - lo


def test_collecting_seeds_keeps_every_earlier_run_and_replaces_only_a_recollected_one():
    """collect_seeds.py on a checkout whose seeds/ folder holds only some runs: the seed rows already
    in results.csv stay unless the same run is collected again (then the new row replaces it)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "studies" / "cpu_scaling" / "collect_seeds.py"
    spec = importlib.util.spec_from_file_location("collect_seeds", path)
    collect = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(collect)

    def row(variant, seed, loss):
        return {"variant": variant, "size": "cpu-xs", "budget": 1e13, "seed": seed, "val_nelbo": loss, "precision": "fp32"}

    old = pd.DataFrame([row("ar", 0, 4.1), row("mdlm", 0, 5.0), row("ar", 1, 4.2), row("mdlm", 1, 5.3)])
    merged = collect.merge(old, [pd.DataFrame([row("mdlm", 1, 5.25), row("ar", 2, 4.15)])])
    got = {(r.variant, r.seed): r.val_nelbo for r in merged.itertuples()}
    assert got == {("ar", 0): 4.1, ("mdlm", 0): 5.0, ("ar", 1): 4.2, ("mdlm", 1): 5.25, ("ar", 2): 4.15}
    assert len(merged) == 5
    assert collect.merge(old, []).equals(old.reset_index(drop=True))   # nothing collected: nothing lost
