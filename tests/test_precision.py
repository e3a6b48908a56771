"""bf16 inference (LanguageModel.precision): samples drawn in bf16 follow the fp32 model's distribution
on every embedded model, and their Gen PPL under the fp32 judge agrees within noise."""
from __future__ import annotations

import math
import statistics

import pytest
import torch

from gui.models import embedded_names
from toolkit.checkpoints import load
from toolkit.evaluation.generation import unigram_entropy
from toolkit.evaluation.metrics import as_evaluator
from toolkit.sample_request import SampleRequest

FAMILIES = ("ar", "mdlm", "duo", "esolm")
pytestmark = pytest.mark.skipif(set(FAMILIES) - set(embedded_names()), reason="embedded demo models not installed")


def per_sample(model, judge, precision, seed):
    """Per-sample NLL/token under the judge and unigram entropy of 24 samples of 48 tokens."""
    model.precision = precision
    _, last = model.generate(SampleRequest(num_samples=24, length=48, steps=24, seed=seed))
    nll, ent = [], []
    for row in last.tokens.tolist():
        total, n = judge.nll(model.decode(row))
        nll.append(total / n)
        ent.append(unigram_entropy(row))
    return nll, ent


def close(a: list[float], b: list[float], z: float = 4.0) -> bool:
    """Means within z standard errors of their difference (two independent samples)."""
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return abs(statistics.mean(a) - statistics.mean(b)) <= z * se


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_samples_agree_with_fp32_in_distribution(family):
    torch.set_num_threads(1)
    model, judge_model = load(family), load("ar")
    judge_model.precision = "fp32"
    judge = as_evaluator(judge_model)
    assert model.precision == "auto"
    model.precision = "bf16"                      # forced: bf16 really computes in bf16
    with model.inference():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")   # and leaves nothing behind
    nll32, ent32 = per_sample(model, judge, "fp32", seed=1)
    nll16, ent16 = per_sample(model, judge, "bf16", seed=2)
    assert close(nll32, nll16), (family, statistics.mean(nll32), statistics.mean(nll16))
    assert close(ent32, ent16), (family, statistics.mean(ent32), statistics.mean(ent16))
    gen_ppl32, gen_ppl16 = math.exp(statistics.mean(nll32)), math.exp(statistics.mean(nll16))
    assert 0.7 < gen_ppl16 / gen_ppl32 < 1.4, (family, gen_ppl32, gen_ppl16)


def test_bf16_changes_the_computation_and_scoring_follows_the_model_precision():
    """bf16 is not a no-op (the logits differ slightly) and the judge's NLL under bf16 is close to fp32's."""
    model = load("mdlm")
    req = SampleRequest(num_samples=4, length=32, steps=8, seed=0)
    model.precision = "fp32"
    first32 = next(iter(model.sample(req)))
    model.precision = "bf16"
    first16 = next(iter(model.sample(req)))
    assert not torch.equal(first32.confidence, first16.confidence)
    judge = load("ar")
    text = "It is a truth universally acknowledged, that a single man in possession of a good fortune"
    judge.precision = "fp32"
    n32, k = as_evaluator(judge).nll(text)
    judge.precision = "bf16"
    n16, k16 = as_evaluator(judge).nll(text)
    assert k == k16 and n16 != n32 and abs(n16 - n32) / k < 0.05
