"""bf16 inference (LanguageModel.precision): samples drawn in bf16 follow the fp32 model's distribution
on every embedded model, and their Gen PPL under the fp32 judge agrees within noise."""
from __future__ import annotations

import json
import math
import statistics

import pytest
import torch

from gui.models import embedded_names
from toolkit.checkpoints import load
from toolkit.evaluation.generation import unigram_entropy
from toolkit.evaluation.metrics import as_evaluator
from toolkit.resolve import resolve as resolve_run
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
    model.precision = "bf16"                      # explicit: bf16 really computes in bf16
    assert model.net.precision == "bf16" and not torch.is_autocast_enabled("cpu")   # in the net, nowhere else
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


# -- how `auto` resolves: the override, the per-workload measurement, the cache ----------------------
from toolkit import hardware   # noqa: E402
from toolkit.errors import UserError   # noqa: E402


@pytest.mark.parametrize("value,flags,expected", [("1", {"avx2"}, "bf16"), ("0", {"avx512_bf16"}, "fp32"),
                                                  ("", {"avx512_bf16"}, "bf16"), ("", {"avx2"}, "fp32")])
def test_native_bf16_override_decides_for_the_cpu(monkeypatch, value, flags, expected):
    monkeypatch.setenv(hardware.NATIVE_BF16_ENV, value)
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("Some CPU", frozenset(flags)))
    choice = hardware.choose_precision("auto", "cpu")
    assert choice.precision == expected
    assert (hardware.NATIVE_BF16_ENV in choice.reason) == (value != "")
    assert hardware.choose_precision("fp32", "cpu").precision == "fp32"   # explicit settings pass through


def test_a_bad_override_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv(hardware.NATIVE_BF16_ENV, "yes")
    with pytest.raises(UserError, match="DLM_NATIVE_BF16 must be 1 or 0"):
        hardware.choose_precision("auto", "cpu")


def test_a_bf16_cpu_times_each_workload_once_and_remembers_it(monkeypatch, tmp_path):
    monkeypatch.delenv(hardware.NATIVE_BF16_ENV, raising=False)
    monkeypatch.setenv(hardware.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("bf16 CPU", frozenset({"avx512_bf16"})))
    timed = []

    def probe(kind, key, fp32_s, bf16_s):
        def seconds(precision):
            timed.append((key, precision))
            return fp32_s if precision == "fp32" else bf16_s
        return hardware.Probe(kind, key, seconds)
    narrow = probe("forward", "d48 8x128", 1.0, 1.5)      # the demo models: bf16 slower
    wide = probe("train step", "d512 8x512", 1.7, 1.0)    # wide matrices: bf16 pays
    assert hardware.choose_precision("auto", "cpu", narrow).precision == "fp32"
    assert hardware.choose_precision("auto", "cpu", wide).precision == "bf16"
    assert hardware.choose_precision("auto", "cpu", narrow).precision == "fp32"
    assert timed == [("d48 8x128", "fp32"), ("d48 8x128", "bf16"), ("d512 8x512", "fp32"), ("d512 8x512", "bf16")]
    assert hardware.choose_precision("auto", "cpu", probe("forward", "d64", 1.0, 0.95)).precision == "fp32"  # margin
    saved = json.loads((tmp_path / "precision.json").read_text())
    assert {k.split(" | ")[-1] for k in saved} == {"forward d48 8x128", "train step d512 8x512", "forward d64"}


def test_a_language_model_times_its_own_forward_and_the_net_follows(monkeypatch, tmp_path):
    """LanguageModel's probe is a real forward of the model; the choice lands in the network, so a
    family's sampler called directly computes in it too."""
    monkeypatch.delenv(hardware.NATIVE_BF16_ENV, raising=False)
    monkeypatch.setenv(hardware.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("bf16 CPU", frozenset({"avx512_bf16"})))
    from toolkit import lm
    clock = iter([1.0, 0.5])   # fp32, then bf16
    monkeypatch.setattr(lm, "best_of", lambda run, reps=3: (run(), next(clock))[1])
    model = load("mdlm")
    assert model.resolved_precision().precision == "bf16" and model.net.precision == "bf16"
    assert "forward timed" in model.resolved_precision().reason
    model.precision = "fp32"
    assert model.net.precision == "fp32"


def test_the_app_registry_loads_every_model_in_its_precision():
    """`python -m gui --precision P`: the models the app loads (and the judge) compute in P."""
    from gui.models import ModelRegistry
    registry = ModelRegistry(["mdlm", "ar"], precision="bf16")
    assert registry.get("mdlm").net.precision == "bf16" and registry.evaluator().net.precision == "bf16"
    assert ModelRegistry(["mdlm"], precision="fp32").get("mdlm").net.precision == "fp32"


def test_a_small_fine_tune_reaches_the_same_loss_in_bf16_as_in_fp32(tmp_path):
    """bf16 training (autocast; fp32 weights, gradients and Adam state) ends where fp32 training ends,
    within the spread of fp32 training seeds. Stated tolerance: |bf16 - mean fp32| <= 3 sd of the fp32
    seeds + 1% (benchmarks/bf16_training.py measures the gradient's bf16 error: about 1%)."""
    from toolkit.data.arithmetic import LEVELS, generate, write_jsonl
    from toolkit.trainer import Trainer
    torch.set_num_threads(1)
    data = write_jsonl(tmp_path / "train.jsonl", generate(3000, "train", LEVELS["arith"]))

    def fine_tune(precision: str, seed: int) -> float:
        cfg = resolve_run(["init=mdlm", f"data={data}", "max_steps=120", "batch_size=16", "seq_len=72", "lr=2e-3",
                           "warmup_steps=10", "eval_every=120", "eval_batches=4", "log_every=120", "progress=false",
                           f"precision={precision}", f"seed={seed}", f"out={tmp_path / f'{precision}-{seed}'}"])
        Trainer(cfg).fit()
        rows = [json.loads(x) for x in (tmp_path / f"{precision}-{seed}" / "metrics.jsonl").read_text().splitlines()]
        assert rows[0]["precision"] == precision           # the run says what it computed in
        return rows[-1]["val_nelbo"]
    fp32 = [fine_tune("fp32", s) for s in (0, 1, 2)]
    bf16 = fine_tune("bf16", 0)
    mean, sd = statistics.mean(fp32), statistics.stdev(fp32)
    assert fp32[0] < 0.7 * json.loads((tmp_path / "fp32-0" / "metrics.jsonl").read_text().splitlines()[0])["val_nelbo"]
    assert abs(bf16 - mean) <= 3 * sd + 0.01 * mean, (bf16, fp32)
