"""Decoding strategies (toolkit/samplers/): each is checked for the property that makes it correct.

Confidence orderings use the embedded trained models: a few-step test model is nearly uniform,
so its top-k would be decided by float noise between two equal computations."""
from __future__ import annotations

import json

import pytest
import torch

import toolkit
from toolkit.errors import UserError
from toolkit.samplers import SAMPLERS, names, supported
from toolkit.samplers.remdm import RemdmOptions, remask_probability, reveal_probability
from toolkit.sample_request import SampleRequest


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def steps_of(model, **kw):
    return list(model.sample(SampleRequest(**kw)))


def masked_probs(model, tokens):
    """The model's x0 distribution at every position of `tokens` (an independent forward pass)."""
    with torch.no_grad():
        return model.family.subs_logits(model.net(tokens)).softmax(-1)


# -- the interface -------------------------------------------------------------------------
def test_ancestral_dispatch_is_the_family_sampler_token_for_token(embedded_family_name):
    model = toolkit.load(embedded_family_name)   # whatever `auto` resolves to: both paths compute in it
    req = SampleRequest(num_samples=2, length=16, steps=5, seed=4, prompt=model.encode("It is")[:2])
    direct = list(model.family.sample(model.net, req, model.device))
    assert all(s.tokens.grad_fn is None and s.confidence.grad_fn is None for s in direct)   # no autograd
    for name in (None, "ancestral"):
        via = steps_of(model, **{**req.__dict__, **({"sampler": name} if name else {})})
        assert len(via) == len(direct)
        for a, b in zip(via, direct):
            assert torch.equal(a.tokens, b.tokens) and torch.equal(a.changed, b.changed) and a.nfe == b.nfe
            assert a.to_dict(0)["remasked"] == []


def test_every_family_lists_known_samplers_with_ancestral_first(family_name):
    from toolkit.families import get_family
    fam = get_family(family_name)
    assert supported(fam)[0] == "ancestral" and set(supported(fam)) <= set(names())
    for n in names():
        assert SAMPLERS[n].summary


def test_unsupported_pair_and_unknown_option_are_one_line_errors(capsys):
    from toolkit.sample import main
    duo = toolkit.load("duo")
    mdlm_path = "mdlm"
    mdlm = toolkit.load(mdlm_path)
    cases = [(duo, dict(sampler="confidence")), (mdlm, dict(sampler="nope")),
             (mdlm, dict(sampler="confidence", sampler_options={"kk": 1})),
             (mdlm, dict(sampler="confidence", sampler_options={"k": "x"})),
             (mdlm, dict(sampler="block", sampler_options={"cache": "prefix"})),   # not exact bidirectionally
             (mdlm, dict(sampler="remdm", sampler_options={"eta": 1.5})),
             (toolkit.load("esolm"), dict(sampler="block", sampler_options={"cache": "dual"}))]
    for model, kw in cases:
        with pytest.raises(UserError) as e:   # raised by the check, before any sampling
            model.check_request(SampleRequest(length=8, steps=2, **kw))
        assert "\n" not in str(e.value)
    with pytest.raises(SystemExit) as e:
        main([mdlm_path, "--sampler", "confidence", "--option", "eta=1", "--length", "8"])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert main([mdlm_path, "--sampler", "confidence", "--option", "k=4", "--length", "16", "--num-samples", "1",
                 "--json", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sampler"] == "confidence" and out["nfe"] == 4


def test_evaluate_compares_strategies_in_one_run(capsys):
    from toolkit.evaluate import main
    assert main(["mdlm", "--metrics", "entropy", "--steps", "4,8", "--sampler", "ancestral", "--sampler",
                 "confidence:k=8", "--option", "top_k=50", "--length", "16", "--num-samples", "1", "--json",
                 "--threads", "1"]) == 0
    rows = json.loads(capsys.readouterr().out)["sampling"]
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ancestral", 4), ("ancestral", 8), ("confidence", 4),
                                                          ("confidence", 8)]
    assert [r["nfe"] for r in rows[2:]] == [2, 2] and all(r.get("top_k") == "50" for r in rows[2:])
    assert "top_k" not in rows[0] and rows[0]["nfe"] <= 4
    with pytest.raises(SystemExit) as e:      # an option no listed strategy has
        main(["mdlm", "--metrics", "entropy", "--sampler", "ancestral", "--option", "k=3"])
    assert e.value.code == 2


# -- confidence ------------------------------------------------------------------------------
def check_masked_invariants(model, steps, prompt, fixed=None):
    """Revealed tokens never change, the prompt/fixed ids hold, nothing is masked at the end."""
    mask = model.family.mask_id
    prev = None
    for s in steps:
        assert (s.tokens[:, :len(prompt)] == torch.tensor(prompt)).all()
        for pos, tok in (fixed or {}).items():
            assert (s.tokens[:, pos] == tok).all()
        if prev is not None:
            was = prev != mask
            assert torch.equal(s.tokens[was], prev[was]), "a revealed token changed"
            assert torch.equal(s.changed, s.tokens != prev)
        prev = s.tokens
    assert (steps[-1].tokens != mask).all()
    assert [s.nfe for s in steps] == list(range(1, len(steps) + 1)), "one network call per step"


def test_confidence_reveals_exactly_k_most_confident_per_step():
    model = toolkit.load("mdlm")
    prompt, mask = model.encode("It is a")[:2], model.family.mask_id
    steps = steps_of(model, num_samples=2, length=20, steps=99, seed=1, prompt=prompt, temperature=0.0,
                     sampler="confidence", sampler_options={"k": 3})
    assert len(steps) == 6                                       # 18 free positions, 3 per step
    check_masked_invariants(model, steps, prompt)
    before = steps_of(model, num_samples=2, length=20, steps=1, seed=1, prompt=prompt, sampler="ancestral")
    prev = torch.full_like(before[0].tokens, mask)
    prev[:, :2] = torch.tensor(prompt)
    for s in steps:
        assert (s.changed.sum(1) == 3).all()
        probs = masked_probs(model, prev)
        best, arg = probs.max(-1)
        best = best.masked_fill(prev != mask, -1)
        top = best.topk(3, dim=1).indices
        expected = torch.zeros_like(s.changed).scatter(1, top, True)
        assert torch.equal(s.changed, expected), "not the three most confident positions"
        assert torch.equal(s.tokens[s.changed], arg[s.changed])
        prev = s.tokens


def test_confidence_threshold_rule_and_even_split():
    model = toolkit.load("mdlm")
    mask = model.family.mask_id
    fixed = {7: 30, 8: 31}
    steps = steps_of(model, num_samples=2, length=16, steps=4, seed=2, temperature=0.0, fixed=fixed,
                     sampler="confidence", sampler_options={"threshold": 0.02})
    check_masked_invariants(model, steps, [], fixed)
    prev = torch.full_like(steps[0].tokens, mask)
    for pos, tok in fixed.items():
        prev[:, pos] = tok
    for s in steps:
        best = masked_probs(model, prev).max(-1).values.masked_fill(prev != mask, -1)
        expected = best >= 0.02
        none = ~expected.any(1)
        expected[none] = torch.zeros_like(expected[none]).scatter(1, best[none].argmax(1, keepdim=True), True)
        assert torch.equal(s.changed, expected)
        prev = s.tokens
    even = steps_of(model, num_samples=1, length=16, steps=5, seed=2, sampler="confidence")
    assert [int(s.changed.sum()) for s in even] == [4, 3, 3, 3, 3] and even[-1].nfe == 5
    check_masked_invariants(model, even, [])


@pytest.mark.parametrize("sampler, opts", [("confidence", {}), ("confidence", {"threshold": 0.3}), ("remdm", {}),
                                           ("block", {"cache": "none"}), ("block", {"cache": "dual"}),
                                           ("block", {"attention": "block_causal"}),
                                           ("confidence", {"family": "esolm"}), ("block", {"family": "esolm"})], ids=str)
def test_nfe_counts_every_network_call(sampler, opts):
    model = toolkit.load("esolm" if opts.get("family") == "esolm" else "mdlm")
    opts = {k: v for k, v in opts.items() if k != "family"}
    calls = []
    hook = model.net.register_forward_hook(lambda *a: calls.append(1))
    try:
        steps = steps_of(model, num_samples=2, length=40, steps=12, seed=0, sampler=sampler,
                         sampler_options={"block_size": 16, **opts} if sampler == "block" else opts)
    finally:
        hook.remove()
    assert steps[-1].nfe == len(calls) > 0


def test_esolm_confidence_reveals_k_per_step_and_its_cache_is_exact():
    model = toolkit.load("esolm")
    prompt, fixed = model.encode("It is a")[:3], {30: 50, 31: 51}
    kw = dict(num_samples=2, length=40, steps=99, seed=1, prompt=prompt, fixed=fixed, sampler="confidence",
              sampler_options={"k": 5})
    cached, plain = steps_of(model, **kw), steps_of(model, use_cache=False, **kw)
    assert_same_run(cached, plain)
    assert [int(c) for c in cached[0].changed.sum(1)] == [5, 5] and len(cached) == 7     # 35 free, 5 per step
    assert all((s.changed.sum(1) == 5).all() for s in cached)
    check_masked_invariants(model, cached, prompt, fixed)
    with pytest.raises(UserError):
        steps_of(model, length=8, steps=2, sampler="confidence", sampler_options={"threshold": 0.5})


def test_bidirectional_decoder_logits_on_ragged_rows_are_the_full_pass_at_each_rows_positions():
    """Rows with different numbers of masked positions (PAD-padded queries): the live entries are
    the network's logits at exactly those positions, the PAD entries zeros, one NFE."""
    from tests.test_families import BOS, MASK, V, TableNet
    from toolkit.decoding.bidirectional import BidirectionalDecoder
    from toolkit.decoding.start import PAD
    from toolkit.families.mdlm import MDLM, MaskedOptions
    net = TableNet(6)
    z = torch.tensor([[1, MASK, 2, MASK, MASK, 3], [4, 5, MASK, 6, 7, 8]])
    decoder = BidirectionalDecoder(MDLM(MaskedOptions(), V, MASK, BOS), net, None, z.clone(),
                                   torch.zeros_like(z, dtype=torch.bool), None, "cpu")
    positions = decoder.masked()
    assert positions.tolist() == [[1, 3, 4], [2, PAD, PAD]]
    out = decoder.logits(positions)
    full = net(z)
    assert out.shape == (2, 3, V) and decoder.nfe == 1
    torch.testing.assert_close(out[0], full[0, [1, 3, 4]])
    torch.testing.assert_close(out[1, 0], full[1, 2])
    assert (out[1, 1:] == 0).all()


# -- remdm -------------------------------------------------------------------------------------
def test_remdm_schedule_keeps_the_forward_marginal():
    for schedule in ("cap", "rescale"):
        o = RemdmOptions(schedule=schedule, eta=0.3)
        for a_t, a_s in [(0.1, 0.2), (0.5, 0.6), (0.9, 0.95), (0.97, 1.0)]:
            sigma = remask_probability(o, a_t, a_s)
            sigma_max = min(1.0, (1 - a_s) / a_t)
            assert 0 <= sigma <= sigma_max + 1e-12
            assert sigma == pytest.approx(min(0.3, sigma_max) if schedule == "cap" else 0.3 * sigma_max)
            p = reveal_probability(a_t, a_s, sigma)
            assert 0 <= p <= 1
            assert a_t * (1 - sigma) + (1 - a_t) * p == pytest.approx(a_s)   # P(clean at s) = alpha_s
    assert remask_probability(RemdmOptions(eta=0.3), 0.9, 1.0) == 0          # nothing re-masked at s = 0


def test_remdm_remasks_at_the_scheduled_rate_and_marks_it():
    model = toolkit.load("mdlm")
    mask, steps_n, eta = model.family.mask_id, 8, 0.25
    prompt = model.encode("It is")[:2]
    steps = steps_of(model, num_samples=200, length=16, steps=steps_n, seed=0, prompt=prompt,
                     sampler="remdm", sampler_options={"eta": eta})
    prev = steps[0].tokens.clone()
    prev[:, 2:] = mask
    prev = torch.where(steps[0].remasked, mask, prev)
    total_remasked = 0
    for k, s in enumerate(steps):
        t, u = 1 - k / steps_n, 1 - (k + 1) / steps_n
        sigma = remask_probability(RemdmOptions(eta=eta), 1 - t, 1 - u)
        clean_before = (prev != mask)
        clean_before[:, :2] = False
        assert torch.equal(s.remasked, s.remasked & clean_before), "only revealed tokens may be re-masked"
        assert (s.tokens[s.remasked] == mask).all() and not s.remasked[:, :2].any()
        n = int(clean_before.sum())
        if n > 200:
            rate = float(s.remasked.sum()) / n
            assert abs(rate - sigma) < 4 * (sigma * (1 - sigma) / n) ** 0.5 + 1e-9, (k, rate, sigma)
        frac_masked = float((s.tokens[:, 2:] == mask).float().mean())
        assert abs(frac_masked - u) < 0.05, (k, frac_masked, u)            # forward marginal 1 - alpha_s
        assert s.to_dict(0)["remasked"] == s.remasked[0].nonzero().squeeze(-1).tolist()
        total_remasked += int(s.remasked.sum())
        prev = s.tokens
    assert total_remasked > 0 and (steps[-1].tokens != mask).all()
    assert (steps[-1].tokens[:, :2] == torch.tensor(prompt)).all()


# -- block ---------------------------------------------------------------------------------------
def assert_same_run(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x.tokens, y.tokens) and torch.equal(x.changed, y.changed) and x.nfe == y.nfe


@pytest.mark.parametrize("spec", ["mdlm", "esolm"])   # the embedded esolm has alpha_0 = 0.5
def test_block_prefix_cache_is_exact(spec):
    # exact in fp32 (a token-for-token equality); bf16's bound is test_sampling's cache test
    model = toolkit.load(spec, precision="fp32")
    opts = {"block_size": 6}
    if spec == "mdlm":
        opts["attention"] = "block_causal"
    prompt = model.encode("It is a truth")[:8]         # one finished block plus part of the next
    for extra in (dict(), dict(prompt=prompt, fixed={20: 40, 21: 41})):
        kw = dict(num_samples=2, length=26, steps=10, seed=3, sampler="block", **extra)
        cached = steps_of(model, sampler_options={**opts, "cache": "prefix"}, **kw)
        plain = steps_of(model, sampler_options={**opts, "cache": "none"}, **kw)
        assert_same_run(cached, plain)
        check_masked_invariants(model, cached, extra.get("prompt", []), extra.get("fixed"))


def test_block_decodes_left_to_right():
    model = toolkit.load("mdlm")
    mask = model.family.mask_id
    for opts in ({"block_size": 5}, {"block_size": 5, "cache": "dual"}, {"block_size": 5, "order": "random"}):
        steps = steps_of(model, num_samples=2, length=20, steps=8, seed=1, sampler="block", sampler_options=opts)
        assert len(steps) == 8 and steps[-1].nfe == 8                    # 4 blocks, 2 steps each
        for k, s in enumerate(steps):
            blocks = (s.changed.nonzero()[:, 1] // 5).unique()
            assert blocks.tolist() == [k // 2], "one block at a time, left to right"
            assert (s.tokens[:, : 5 * (k // 2)] != mask).all() and (s.tokens[:, 5 * (k // 2 + 1):] == mask).all()
        check_masked_invariants(model, steps, [])


def test_dual_cache_first_step_of_a_block_is_exact():
    """The dual cache's full pass (positions reordered outside-then-block) equals the plain pass."""
    model = toolkit.load("mdlm")
    kw = dict(num_samples=2, length=20, steps=4, seed=6, sampler="block")
    dual = steps_of(model, sampler_options={"block_size": 10, "cache": "dual"}, **kw)
    plain = steps_of(model, sampler_options={"block_size": 10, "cache": "none"}, **kw)
    assert torch.equal(dual[0].tokens, plain[0].tokens)
    torch.testing.assert_close(dual[0].confidence, plain[0].confidence, atol=1e-4, rtol=1e-4)


# -- the GUI ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gui_registry():
    pytest.importorskip("gradio")
    from gui.models import ModelRegistry
    return ModelRegistry(["mdlm", "duo"], evaluator="ar")


def test_gui_runs_the_chosen_strategy_and_renders_remasking(gui_registry):
    from gui import render
    from gui.live import Settings, interleave, start
    opts = {"mdlm": {"sampler": "remdm", "sampler_options": "eta=0.3, schedule=cap"}}
    s = Settings(prompt="It is", length=24, steps=8, seed=2, options=opts)
    runs = start(gui_registry, ["mdlm", "duo"], s)
    for _ in interleave(runs):
        pass
    mdlm_run, duo_run = runs
    assert mdlm_run.error is None and duo_run.error is None      # Duo keeps its own (only) strategy
    m = gui_registry.get("mdlm")
    direct = list(m.sample(SampleRequest(length=24, steps=8, seed=2, prompt=m.encode("It is"), sampler="remdm",
                                         sampler_options={"eta": 0.3})))
    assert [r["tokens"] for r in mdlm_run.trace] == [d.tokens[0].tolist() for d in direct]
    shown = 0
    for i, rec in enumerate(mdlm_run.trace):
        states = render.token_states(mdlm_run, i)
        assert {j for j, (st, _, _) in enumerate(states) if st == "remasked"} == set(rec["remasked"])
        shown += len(rec["remasked"])
        if rec["remasked"]:
            assert 'class="tok remasked"' in render.render_panel(mdlm_run, upto=i + 1)
    assert shown > 0


def test_gui_strategy_errors_stay_in_their_panel(gui_registry):
    from gui.live import Settings, start
    for bad in ("k=x", "nonsense", "eta=0.1"):
        runs = start(gui_registry, ["mdlm", "duo"], Settings(length=12, steps=4, options={
            "mdlm": {"sampler": "confidence", "sampler_options": bad}}))
        assert runs[0].error and "\n" not in runs[0].error and runs[1].error is None


def test_gui_controls_and_explorer_cover_the_strategies(gui_registry):
    import gradio as gr

    from gui import explorer
    from gui.live import Settings
    from gui.strategies import sampler_controls
    with gr.Blocks():
        controls = sampler_controls()
    from toolkit.families import REGISTRY
    dropdowns = {f: c for f, key, c in controls if key == "sampler"}
    assert list(dropdowns) == list(REGISTRY)     # every family has one (the API keeps its parameters) ...
    assert {f for f, c in dropdowns.items() if c.visible} == {f for f, fam in REGISTRY.items() if len(supported(fam)) > 1}
    assert all(c.choices == [(n, n) for n in supported(REGISTRY[f])] for f, c in dropdowns.items())
    for rows in explorer.sweep(gui_registry, ["mdlm", "duo"], [4], Settings(length=16, seed=0), 1,
                               ["ancestral", "confidence"]):
        pass
    assert sorted((r["model"], r["sampler"]) for r in rows) == [("duo", "ancestral"), ("mdlm", "ancestral"),
                                                               ("mdlm", "confidence")]
    assert all(r["nfe"] == 4 for r in rows if r["model"] == "mdlm")    # equal NFE at equal steps


def test_a_sweep_gives_a_family_option_only_to_the_strategies_that_read_it():
    from toolkit.samplers.requests import sweep_requests
    esolm = toolkit.load("esolm").family
    base = SampleRequest(length=8)
    reqs = sweep_requests(esolm, base, ["ancestral", "confidence:k=2"], {"alpha_0": "0.5"}, [4, 8])
    assert [(r.sampler, r.steps, r.options, r.sampler_options) for r in reqs] == [
        ("ancestral", 4, {"alpha_0": "0.5"}, {}), ("ancestral", 8, {"alpha_0": "0.5"}, {}),
        ("confidence", 4, {}, {"k": "2"}), ("confidence", 8, {}, {"k": "2"})]
    with pytest.raises(UserError, match="'alpha_0' is read by none of the samplers confidence"):
        sweep_requests(esolm, base, ["confidence"], {"alpha_0": "0.5"}, [4])
