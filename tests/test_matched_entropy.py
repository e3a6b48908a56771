"""Gen PPL at matched entropy: the temperature search, the bootstrap interval, and the reason it exists
(a model that is merely sharper must not win)."""
from __future__ import annotations

import math

import pytest
import torch

import toolkit
from toolkit.cli.evaluate import main as evaluate_main
from toolkit.errors import UserError
from toolkit.evaluation.generation import load_evaluator
from toolkit.evaluation.matched_entropy import (Scored, bootstrap_gen_ppl, find_temperature, match_entropy,
                                                sample_scored)
from toolkit.sample_request import SampleRequest


def test_search_reaches_a_monotone_target_within_tolerance_in_few_probes():
    curve = lambda t: 4.0 * (1 - math.exp(-1.3 * t))   # concave, rising: plain interpolation would creep
    temp, h, probes = find_temperature(curve, 3.3, tolerance=1e-3)
    assert abs(h - 3.3) <= 1e-3 and h == curve(temp)
    assert len(probes) <= 8 and probes[0][0] == 1.0


@pytest.mark.parametrize("curve, target, words", [
    (lambda t: 3.0 + 0.1 * t, 5.0, "outside"),      # never reached in the range
    (lambda t: 3.0 - 0.1 * t, 2.95, "does not rise"),
    (lambda t: 3.0 if t < 0.7 else 3.5, 3.2, "jumps over"),
])
def test_an_unreachable_target_is_a_one_line_error(curve, target, words):
    with pytest.raises(UserError, match=words) as e:
        find_temperature(curve, target, tolerance=0.01)
    assert "\n" not in str(e.value)


def test_bootstrap_interval_brackets_the_pooled_value_and_narrows_with_more_samples():
    def runs(n):
        return [Scored(1.0, s, [1.0] * n, nll=[float(i % 7 + s) for i in range(n)], judged=[1] * n) for s in range(3)]
    small, large = runs(20), runs(400)
    for r in (small, large):
        pooled = math.exp(sum(sum(x.nll) for x in r) / sum(sum(x.judged) for x in r))
        low, high = bootstrap_gen_ppl(r, resamples=300)
        assert low < pooled < high
    assert (lambda a, b: b - a)(*bootstrap_gen_ppl(large, 300)) < (lambda a, b: b - a)(*bootstrap_gen_ppl(small, 300))


@pytest.fixture(scope="module")
def source_and_judge():
    torch.set_num_threads(1)
    # fp32 pinned: the matching logic is under test, not the precision auto picks on this CPU
    return toolkit.load("mdlm", precision="fp32"), load_evaluator("ar", precision="fp32")


REQ = SampleRequest(num_samples=32, length=48, steps=4)


def test_a_real_model_is_matched_within_tolerance_and_reproducibly(source_and_judge):
    model, judge = source_and_judge
    target = sample_scored(model, REQ, 0.8, 0).entropy + 0.02   # reachable by construction
    m = match_entropy(model, REQ, target, judge, seeds=[0, 1], tolerance=0.01)
    assert abs(m.entropy - target) <= 0.01 and m.probes[-1] == (m.temperature, m.entropy)
    again = [sample_scored(model, REQ, m.temperature, s, judge) for s in (0, 1)]   # resampled independently
    assert [r.entropy for r in again] == pytest.approx(m.per_seed_entropy)
    assert [r.gen_ppl for r in again] == pytest.approx(m.per_seed_gen_ppl)
    assert m.ci_low <= m.gen_ppl <= m.ci_high


def test_a_sharper_copy_wins_at_temperature_one_but_not_at_matched_entropy(source_and_judge):
    model, judge = source_and_judge
    sharper = toolkit.load("mdlm", precision="fp32")
    sharper.net.register_forward_hook(lambda module, inputs, logits: logits * 1.6)   # the planted "better" model
    at_one = [sample_scored(m, REQ, 1.0, 0, judge) for m in (model, sharper)]
    assert at_one[1].gen_ppl < 0.85 * at_one[0].gen_ppl and at_one[1].entropy < at_one[0].entropy   # the unfair view
    target, seeds = at_one[0].entropy - 0.1, [0, 1]
    source = match_entropy(model, REQ, target, judge, seeds, tolerance=0.005, temperatures=(0.25, 3.0))
    planted = match_entropy(sharper, REQ, target, judge, seeds, tolerance=0.005, temperatures=(0.25, 3.0))
    assert planted.temperature == pytest.approx(1.6 * source.temperature, rel=0.05)   # it only undoes the scaling
    assert source.ci_low <= planted.gen_ppl and planted.ci_low <= source.gen_ppl   # neither beats the other


def test_cli_matches_entropy_and_rejects_a_bad_target(capsys):
    code = evaluate_main(["mdlm", "--steps", "4", "--num-samples", "16", "--length", "48", "--match-entropy", "3.3",
                          "--entropy-tolerance", "0.03", "--seeds", "2", "--threads", "1"])
    line = capsys.readouterr().out.splitlines()[-1]
    assert code == 0 and "matched entropy" in line and "over seeds 0,1" in line
    for argv, words in ((["--match-entropy", "lots"], "--match-entropy takes a number"),
                        (["--match-entropy", "3.5", "--temperature", "0.8"], "--temperature is what"),
                        (["--seeds", "5"], "apply to --match-entropy only")):
        with pytest.raises(SystemExit) as e:
            evaluate_main(["mdlm", *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and words in err and err.count("\n") == 1
