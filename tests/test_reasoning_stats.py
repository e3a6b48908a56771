"""The reasoning study's statistics over training seeds: the seed interval, the decoding setting chosen
on validation only, and the plateau rule on seed means (studies/reasoning/seed_stats.py)."""
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "studies" / "reasoning"))
from seed_stats import (ENDED, FLAT, RISING, choose_setting, ladder_verdict, plateau,  # noqa: E402
                        point_summary, seed_summary)


def rows_of(accuracy: dict, nelbo: float = 0.1) -> list[dict]:
    """Evaluation rows of one point: accuracy[(split, sampler, steps)] = [per-seed accuracies]."""
    return [{"split": split, "sampler": sampler, "steps": steps, "seed": seed, "accuracy": acc,
             "nfe": float(steps), "task_val_nelbo": nelbo}
            for (split, sampler, steps), accs in accuracy.items() for seed, acc in enumerate(accs)]


def test_seed_summary_is_a_t_interval_over_the_seeds():
    s = seed_summary([0.1, 0.2, 0.3])
    half = 4.302653 * 0.1 / 3 ** 0.5   # t(0.975, 2 degrees of freedom) x sd / sqrt(n)
    assert s["mean"] == pytest.approx(0.2) and s["sd"] == pytest.approx(0.1)
    assert (s["t_low"], s["t_high"]) == pytest.approx((0.2 - half, 0.2 + half), abs=1e-6)
    assert (s["min"], s["max"], s["n"]) == (0.1, 0.3, 3)


def test_a_planted_test_only_best_setting_is_not_chosen():
    accuracy = {("validation", "confidence", 32): [0.50, 0.55, 0.45], ("test", "confidence", 32): [0.40, 0.42, 0.38],
                ("validation", "ancestral", 8): [0.20, 0.25, 0.15], ("test", "ancestral", 8): [0.90, 0.92, 0.88],
                ("validation", "block", 8): [0.30, 0.30, 0.30], ("test", "block", 8): [0.35, 0.30, 0.40]}
    p = point_summary(rows_of(accuracy))
    assert (p["sampler"], p["steps"]) == ("confidence", 32)   # validation's best, not the test's
    assert p["accuracy"] == pytest.approx(0.40) and p["per_seed"] == [0.40, 0.42, 0.38]
    assert p["validation_accuracy"] == pytest.approx(0.50)
    assert (p["explore_best_setting"], p["explore_best_accuracy"]) == ("ancestral 8", pytest.approx(0.90))
    # the choice never moves with the test scores, whatever they are
    rng = random.Random(0)
    for _ in range(20):
        shuffled = {k: ([rng.random() for _ in v] if k[0] == "test" else v) for k, v in accuracy.items()}
        p = point_summary(rows_of(shuffled))
        assert (p["sampler"], p["steps"]) == ("confidence", 32)
    with pytest.raises(ValueError, match="validation rows only"):
        choose_setting(rows_of(accuracy))


def test_ties_on_validation_go_to_fewer_network_evaluations():
    accuracy = {("validation", "ancestral", 32): [0.5, 0.5], ("validation", "ancestral", 8): [0.5, 0.5],
                ("test", "ancestral", 32): [0.6, 0.6], ("test", "ancestral", 8): [0.4, 0.4]}
    assert choose_setting([r for r in rows_of(accuracy) if r["split"] == "validation"]) == ("ancestral", 8)


def test_a_point_counts_only_seeds_scored_on_both_splits():
    rows = rows_of({("validation", "ancestral", 8): [0.5, 0.5, 0.5], ("test", "ancestral", 8): [0.2, 0.4]})
    p = point_summary(rows)
    assert p["seeds"] == [0, 1] and p["accuracy"] == pytest.approx(0.3)


def rung(budget: int, accs: list[float], nelbos: list[float]) -> dict:
    a, n = seed_summary(accs), seed_summary(nelbos)
    return {"budget_steps": budget, "accuracy": a["mean"], "accuracy_min": a["min"], "accuracy_max": a["max"],
            "task_val_nelbo": n["mean"], "task_val_nelbo_min": n["min"]}


@pytest.mark.parametrize("last_accs, last_nelbos, state", [
    ([0.81, 0.83, 0.85], [0.050, 0.052, 0.048], FLAT),      # within the seed range, loss stopped falling
    ([0.90, 0.92, 0.94], [0.050, 0.052, 0.048], RISING),    # above the previous seed range
    ([0.81, 0.83, 0.85], [0.030, 0.031, 0.029], RISING),    # accuracy flat but the loss still falls: not a plateau
    ([0.70, 0.72, 0.74], [0.050, 0.052, 0.048], ENDED),     # fell below the range: no plateau found
])
def test_plateau_rule_on_seed_means(last_accs, last_nelbos, state):
    previous = rung(4000, [0.78, 0.82, 0.88], [0.049, 0.051, 0.050])
    assert plateau(previous, rung(8000, last_accs, last_nelbos))[0] == state


def test_a_single_seed_best_of_settings_drop_is_not_read_as_flat():
    """The earlier rule called 83.7% -> 79.0% flat (one seed each, inside a binomial interval); on seed
    means with a narrow seed range the same drop is a fall, and one rung alone has no verdict."""
    previous = rung(16000, [0.83, 0.837, 0.845], [0.049, 0.050, 0.048])
    assert plateau(previous, rung(24000, [0.78, 0.79, 0.80], [0.049, 0.050, 0.048]))[0] == ENDED
    assert ladder_verdict([previous])[0] == ENDED
    assert ladder_verdict([previous, rung(24000, [0.83, 0.84, 0.84], [0.05, 0.05, 0.05])])[0] == FLAT
