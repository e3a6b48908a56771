"""Evaluation: the NELBO estimator is unbiased with honest error bars, metrics match their
definitions, multiple-choice scoring and the lm-eval adapter work offline, CLIs fail cleanly."""
from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy.special import beta as beta_fn, betainc
from scipy.stats import entropy as scipy_entropy

import toolkit
from toolkit.errors import UserError
from toolkit.evaluation import (dataset_nelbo, gen_ppl, load_evaluator, mean_entropy, sequence_nll, throughput,
                                unigram_entropy)
from toolkit.evaluation.choice import choice_accuracy, loglikelihood, read_items, score_choices
from toolkit.sample_request import SampleRequest
from toolkit.schedule import EPS

ROOT = Path(__file__).resolve().parent.parent
CHOICES = ROOT / "tests" / "data" / "tiny_choice.jsonl"


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@torch.no_grad()
def mdlm_exact_nelbo(model, x0: torch.Tensor) -> float:
    """E over t ~ U[eps, 1] and masks of the MDLM estimator, by enumerating every mask pattern.

    For a pattern m with k masked of L: P(m | t) = t^k (1 - t)^(L - k), the estimate is
    S(m) / t (S = masked cross-entropy, time-independent for MDLM), and
    int_eps^1 t^(k-1) (1-t)^(L-k) dt = B(k, L-k+1) (1 - I_eps(k, L-k+1)).
    """
    n = x0.shape[0]
    total = 0.0
    for pattern in itertools.product([False, True], repeat=n):
        m = torch.tensor(pattern)
        k = int(m.sum())
        if k == 0:
            continue
        z = torch.where(m, model.family.mask_id, x0)[None]
        logp = model.family.denoise(model.net, z, torch.ones(1)).log_softmax(-1)[0]
        s = float(-logp[m, x0[m]].sum())
        a, b = k, n - k + 1
        total += s * beta_fn(a, b) * (1 - betainc(a, b, EPS))
    return total / (1 - EPS)


@torch.no_grad()
def esolm_exact_nelbo(model, x0: torch.Tensor) -> float:
    """Eso-LM (alpha_0 = 1): as MDLM, but also averaged over every attention order
    (clean positions first in any order, then the masked ones in any order)."""
    n = x0.shape[0]
    total = 0.0
    for pattern in itertools.product([False, True], repeat=n):
        masked = [i for i in range(n) if pattern[i]]
        clean = [i for i in range(n) if not pattern[i]]
        if not masked:
            continue
        z = torch.where(torch.tensor(pattern), model.family.mask_id, x0)
        scores = []
        for pc in itertools.permutations(clean):
            for pm in itertools.permutations(masked):
                order = torch.tensor([*pc, *pm])
                logits = model.net(z[order][None], positions=order[None], causal=True)[0].float()
                logits[:, model.family.mask_id] = float("-inf")
                logp = logits.log_softmax(-1)
                scores.append(-sum(float(logp[j, x0[order[j]]]) for j in range(len(clean), n)))
        k = len(masked)
        total += sum(scores) / len(scores) * beta_fn(k, n - k + 1) * (1 - betainc(k, n - k + 1, EPS))
    return total / (1 - EPS)


@pytest.mark.parametrize("family,exact_nelbo,seed", [("mdlm", mdlm_exact_nelbo, 3), ("esolm", esolm_exact_nelbo, 5)])
def test_nelbo_estimate_is_unbiased_against_enumeration(tiny_checkpoint, family, exact_nelbo, seed):
    model = toolkit.load(tiny_checkpoint(family))
    x0 = torch.tensor(model.encode("Emma was very fond")[:4])
    exact = exact_nelbo(model, x0)
    est, se = sequence_nll(model, x0, mc_samples=4000, seed=seed)
    assert 0 < float(se) < 0.05 * exact
    assert abs(float(est) - exact) < 4 * float(se), (float(est), exact, float(se))


def test_standard_error_matches_the_spread_over_seeds(tiny_checkpoint):
    model = toolkit.load(tiny_checkpoint("mdlm"))
    x0 = torch.tensor(model.encode("It is a truth universally acknowledged")[:8])
    runs = [sequence_nll(model, x0, mc_samples=16, seed=s) for s in range(40)]
    values = torch.tensor([float(v) for v, _ in runs])
    mean_se = sum(float(s) for _, s in runs) / len(runs)
    assert 0.5 < float(values.std()) / mean_se < 2.0


@torch.no_grad()
def ar_chain_rule_logprobs(model, ids: list[int]) -> list[float]:
    """log p(x_i | x_<i) one token at a time, without the cache or the family's loss code."""
    out, ctx = [], [model.family.eos_id]
    for tok in ids:
        logits = model.net(torch.tensor([ctx]), causal=True)[0, -1].float()
        logits[model.family.mask_id] = -float("inf")   # AR never predicts [MASK]
        out.append(float(logits.log_softmax(-1)[tok]))
        ctx.append(tok)
    return out


def test_ar_likelihood_in_bf16_is_within_its_measured_bound():
    """What a bf16 machine gets instead of the exact likelihood: the embedded AR's NLL of 64 tokens of
    Austen moves by 0.2% (measured 1.7e-3 relative; in fp32 the two paths agree to 1e-5)."""
    text = "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be"
    nll = {}
    for precision in ("fp32", "bf16"):
        model = toolkit.load("ar", precision=precision)
        nll[precision], _ = sequence_nll(model, torch.tensor(model.encode(text)), mc_samples=1)
    rel = abs(float(nll["bf16"]) - float(nll["fp32"])) / float(nll["fp32"])
    assert 0 < rel < 0.01, rel


def test_ar_likelihood_is_exact(tiny_checkpoint):
    # exact in fp32 (equalities to 1e-5); toolkit.evaluate computes in fp32 unless told otherwise
    model = toolkit.load(tiny_checkpoint("ar"), precision="fp32")
    ids = model.encode("Her father was a gentleman of good family")[:10]
    logp = ar_chain_rule_logprobs(model, ids)
    nll, se = sequence_nll(model, torch.tensor(ids), mc_samples=4)
    assert float(se) == 0
    assert float(nll) == pytest.approx(-sum(logp), rel=1e-5)
    context, continuation = "Her father", " was a gentleman"
    n_ctx = len(model.encode(context))
    assert model.encode(context) + model.encode(continuation) == model.encode(context + continuation)
    score, _ = loglikelihood(model, context, continuation)
    full = ar_chain_rule_logprobs(model, model.encode(context + continuation))
    assert score == pytest.approx(sum(full[n_ctx:]), rel=1e-5)
    blocks = torch.tensor([ids, ids[::-1]])
    est = dataset_nelbo(model, blocks)
    assert est.exact and est.se == 0
    assert est.nelbo == pytest.approx(float(model.nelbo(blocks).sum()) / blocks.numel(), rel=1e-5)
    assert est.to_dict()["ppl_bound"] == pytest.approx(math.exp(est.nelbo))


def test_ar_is_greedy_flag(tiny_checkpoint):
    model = toolkit.load(tiny_checkpoint("ar"))
    ctx = model.encode("Mr. Darcy")
    _, last = model.generate(SampleRequest(length=len(ctx) + 3, prompt=ctx, temperature=0.0))
    greedy_ids = last.tokens[0, len(ctx):].tolist()
    text = model.decode(greedy_ids)
    if model.encode(model.decode(ctx) + text) != ctx + greedy_ids:
        pytest.skip("the greedy ids do not survive a decode/encode round trip")
    assert loglikelihood(model, model.decode(ctx), text, check_greedy=True)[1] is True


def test_diffusion_choice_scores_use_common_random_numbers(tiny_checkpoint):
    model = toolkit.load(tiny_checkpoint("mdlm"))
    a, b, c = score_choices(model, "Emma Woodhouse, handsome,", [" clever", " clever", " rich"], mc_samples=8)
    assert a == b and a != c and a < 0
    # the paper's protocol: the score is -NELBO of the whole [context + choice] sequence
    ids = model.encode("Emma Woodhouse, handsome,") + model.encode(" rich")
    assert c == pytest.approx(-float(sequence_nll(model, torch.tensor(ids), mc_samples=8)[0][0]))


@pytest.mark.parametrize("family", ["ar", "mdlm"])
def test_choice_accuracy_on_the_local_file(tiny_checkpoint, family):
    model = toolkit.load(tiny_checkpoint(family))
    items = read_items(CHOICES)
    res = choice_accuracy(model, items, mc_samples=4)
    assert res["questions"] == len(items) == 6
    assert 0 <= res["accuracy"] <= 1 and 0 <= res["accuracy_norm"] <= 1


def test_bad_choice_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "x", "choices": ["a"], "answer": 0}\n')
    for path in (bad, tmp_path / "missing.jsonl"):
        with pytest.raises(UserError):
            read_items(path)


def test_gen_ppl_is_the_evaluator_perplexity_of_the_retokenised_text(tiny_checkpoint):
    judge = load_evaluator(tiny_checkpoint("ar"))
    texts = ["It is a truth universally acknowledged.", "Emma Woodhouse, handsome, clever, and rich."]
    res = gen_ppl(judge, texts)
    ev = judge.model
    nll = sum(float(ev.nelbo(torch.tensor([ev.encode(t)]))) for t in texts)
    n = sum(len(ev.encode(t)) for t in texts)
    assert res["evaluator_tokens"] == n
    assert res["gen_ppl"] == pytest.approx(math.exp(nll / n), rel=1e-5)


def test_evaluator_not_found_is_a_user_error():
    with pytest.raises(UserError, match="evaluator not found"):
        load_evaluator("/no/such/evaluator")
    with pytest.raises(UserError, match="evaluator not found"):
        load_evaluator("no-such-model-name-xyz")


def test_hugging_face_evaluator_from_a_local_directory(tmp_path):
    transformers = pytest.importorskip("transformers")
    from toolkit.data.tokenizer import load_tokenizer
    from toolkit.evaluation.generation import HFEvaluator
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=load_tokenizer(), bos_token="[EOS]",
                                               eos_token="[EOS]")
    cfg = transformers.GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=32, n_layer=1, n_head=2,
                                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    judge = load_evaluator(str(tmp_path), protocol="bos")
    assert isinstance(judge, HFEvaluator)
    text = "It is a truth universally acknowledged."
    ids = tok(text)["input_ids"]
    window = torch.tensor([[tok.bos_token_id, *ids]])
    with torch.no_grad():   # the library's own shifted-label loss, a mean over len(ids) tokens
        ref = float(judge.net(window, labels=window).loss) * len(ids)
    assert gen_ppl(judge, [text])["gen_ppl"] == pytest.approx(math.exp(ref / len(ids)), rel=1e-4)
    long_text = text * 12     # longer than the 32-token context: scored in windows, every token once
    assert gen_ppl(judge, [long_text])["evaluator_tokens"] == len(tok(long_text)["input_ids"]) > 32
    # the reference protocol: the tokenizer's ids as they are, the first one is context only
    judge = load_evaluator(str(tmp_path))
    plain = torch.tensor([ids])
    with torch.no_grad():
        ref = float(judge.net(plain, labels=plain).loss) * (len(ids) - 1)
    assert gen_ppl(judge, [text]) == {"gen_ppl": pytest.approx(math.exp(ref / (len(ids) - 1)), rel=1e-4),
                                      "evaluator": str(tmp_path), "evaluator_tokens": len(ids) - 1}


def test_hugging_face_evaluator_never_doubles_a_llama_style_bos(tmp_path):
    """A tokenizer that adds its own BOS: the reference protocol scores the text ids after that
    single BOS (never a second BOS, never the BOS as a target), the same figure as the bos protocol."""
    transformers = pytest.importorskip("transformers")
    from tokenizers.processors import TemplateProcessing
    from toolkit.data.tokenizer import load_tokenizer
    raw = load_tokenizer()
    bos_id = raw.token_to_id("[EOS]")
    raw.post_processor = TemplateProcessing(single="[EOS] $A", special_tokens=[("[EOS]", bos_id)])
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="[EOS]", eos_token="[EOS]")
    cfg = transformers.GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    text = "It is a truth universally acknowledged."
    ids = tok(text)["input_ids"]
    assert ids[0] == bos_id and ids[1] != bos_id
    reference, bos = load_evaluator(str(tmp_path)), load_evaluator(str(tmp_path), protocol="bos")
    assert reference.windows(text) == bos.windows(text) == [ids]
    window = torch.tensor([ids])
    with torch.no_grad():
        ref = float(reference.net(window, labels=window).loss)
    for judge in (reference, bos):
        out = gen_ppl(judge, [text])
        assert out["evaluator_tokens"] == len(ids) - 1
        assert out["gen_ppl"] == pytest.approx(math.exp(ref), rel=1e-4)


def test_unigram_entropy_definition():
    assert unigram_entropy([5, 5, 5, 5]) == 0
    assert unigram_entropy(list(range(8))) == pytest.approx(math.log(8))
    row = [1, 1, 2, 3, 3, 3, 9]
    assert unigram_entropy(row) == pytest.approx(scipy_entropy([2, 1, 3, 1]))
    assert mean_entropy([[1, 1], [1, 2]]) == pytest.approx(math.log(2) / 2)


def test_throughput_counts_generated_tokens(tiny_checkpoint):
    model = toolkit.load(tiny_checkpoint("duo"))
    tp = throughput(model, SampleRequest(num_samples=2, length=16, steps=4, prompt=[3, 4]), repeats=2)
    assert tp.tokens == 2 * 14 and tp.nfe == 4 + 1 and tp.repeats == 2   # T steps + the greedy tail
    assert tp.tokens_per_s == pytest.approx(tp.tokens / tp.seconds)


# -- command lines ------------------------------------------------------------------------
def cli(*args, timeout=240):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


def test_sample_cli_json_and_trace(tiny_checkpoint, tmp_path):
    trace = tmp_path / "t.jsonl"
    p = cli("toolkit.sample", tiny_checkpoint("mdlm"), "--steps", "5", "--length", "16", "--num-samples", "2",
            "--prompt", "Emma", "--top-p", "0.9", "--trace", str(trace), "--json", "--threads", "1")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    lines = [json.loads(x) for x in trace.read_text().splitlines()]
    assert len(lines) == 5 and [r["step"] for r in lines] == [1, 2, 3, 4, 5]
    assert lines[-1]["tokens"] == out["tokens"] and len(out["samples"]) == 2
    assert all(s.startswith("Emma") for s in out["samples"])


def test_evaluate_cli_json(tiny_checkpoint):
    p = cli("toolkit.evaluate", tiny_checkpoint("mdlm"), "--metrics", "nelbo,gen_ppl,entropy,throughput,choice",
            "--evaluator", tiny_checkpoint("ar"), "--steps", "2,4", "--length", "16", "--num-samples", "2",
            "--mc-samples", "4", "--sequences", "2", "--choice-file", str(CHOICES), "--json", "--threads", "1")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["family"] == "mdlm" and res["nelbo"]["se"] > 0 and not res["nelbo"]["exact"]
    assert [r["steps"] for r in res["sampling"]] == [2, 4]
    for r in res["sampling"]:
        assert r["gen_ppl"] > 1 and r["entropy"] > 0 and r["tokens_per_s"] > 0
    assert res["choice"]["questions"] == 6


@pytest.mark.parametrize("args", [
    ("toolkit.sample", "{mdlm}", "--steps", "0"),
    ("toolkit.sample", "{mdlm}", "--length", "999"),
    ("toolkit.sample", "{mdlm}", "--length", "4", "--prompt", "It is a truth universally acknowledged"),
    ("toolkit.evaluate", "{mdlm}", "--metrics", "nelbo,bogus"),
    ("toolkit.evaluate", "{mdlm}", "--metrics", "gen_ppl", "--evaluator", "/no/such/evaluator"),
], ids=["steps0", "too-long", "prompt-too-long", "unknown-metric", "no-evaluator"])
def test_bad_input_is_one_line_error(tiny_checkpoint, args):
    p = cli(*[a.format(mdlm=tiny_checkpoint("mdlm")) for a in args])
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr


@pytest.mark.parametrize("args", [
    ("sample", "/no/such/checkpoint"),
    ("sample", "{mdlm}", "--option", "greedy_tail"),
    ("sample", "{mdlm}", "--infill", "x=Emma"),
    ("evaluate", "{mdlm}", "--metrics", "throughput", "--steps", "0"),
    ("evaluate", "{mdlm}", "--metrics", "choice"),
    ("evaluate", "{mdlm}", "--metrics", "nelbo", "--mc-samples", "1"),
    ("evaluate", "{mdlm}", "--steps", "a,b"),
])
def test_more_bad_input_in_process(tiny_checkpoint, capsys, args):
    import importlib
    main = importlib.import_module(f"toolkit.{args[0]}").main
    with pytest.raises(SystemExit) as e:
        main([a.format(mdlm=tiny_checkpoint("mdlm")) for a in args[1:]] + ["--threads", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


# -- lm-evaluation-harness ----------------------------------------------------------------
def test_adapter_without_the_harness_api(tiny_checkpoint):
    from toolkit.evaluation.lm_eval_adapter import ToolkitLM
    lm = ToolkitLM(tiny_checkpoint("ar"))
    (score, _), = lm.loglikelihood([("Her father", " was")])
    assert score == pytest.approx(loglikelihood(lm.model, "Her father", " was")[0])
    out, = lm.generate_until([("Her father", {"until": ["\n"], "max_gen_toks": 4})])
    assert isinstance(out, str) and "\n" not in out
    roll, = lm.loglikelihood_rolling([("Her father was a gentleman",)])
    assert roll == pytest.approx(-float(lm.model.nelbo(torch.tensor([lm.model.encode("Her father was a gentleman")]))))


@pytest.mark.slow
def test_lm_eval_harness_runs_a_local_task(tiny_checkpoint, tmp_path):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager
    from toolkit.evaluation.lm_eval_adapter import ToolkitLM
    assert get_model("dlm-toolkit") is ToolkitLM
    (tmp_path / "tiny.yaml").write_text(
        "task: dlm_tiny_choice\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {CHOICES}\ntest_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: '{{context}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: answer\n"
        "target_delimiter: ''\nmetric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    tm = TaskManager(include_path=str(tmp_path), include_defaults=False)
    res = lm_eval.simple_evaluate(model=ToolkitLM(tiny_checkpoint("mdlm"), mc_samples=4),
                                  tasks=["dlm_tiny_choice"], task_manager=tm)
    acc = res["results"]["dlm_tiny_choice"]["acc,none"]
    assert 0 <= acc <= 1 and res["results"]["dlm_tiny_choice"]["sample_len"] == 6
