"""One reverse step of every sampler against the closed-form posterior, written out here.

MDLM and Eso-LM reveal rates (alpha_s - alpha_t) / (1 - alpha_t) and the drawn ids, Eso-LM's
left-to-right phase, Duo's q(z_s | z_t, x_theta) with top-p on the posterior and its greedy tail,
AR's next-token draws, and caches that change no token. Networks and checks: test_family_math.
"""
import importlib
import math

import pytest
import torch

import toolkit
from tests.test_family_math import (BOS, MASK, V, Z, BagNet, assert_draws, assert_rate, bayes_posterior,
                                    duo_posterior_reference, no_mask_probs, sigma_of)
from toolkit.families.ar import AR
from toolkit.families.duo import Duo
from toolkit.families.esolm import EsoLM, EsoOptions
from toolkit.families.mdlm import MDLM, MaskedOptions
from toolkit.sample_request import SampleRequest, filter_probs
from toolkit.samplers import supported


def check_trace(steps, calls):
    """Steps numbered 1..n; the NFE count is honest (every network call counted, no more)."""
    assert [st.step for st in steps] == list(range(1, len(steps) + 1))
    assert all(a.nfe <= b.nfe for a, b in zip(steps, steps[1:]))
    assert steps[-1].nfe == calls


def check_confidence(st, prev_conf, probs, where):
    """The trace's confidence: the probability the draw had at the positions drawn now, unchanged elsewhere."""
    torch.testing.assert_close(st.confidence[where].double(), probs.gather(-1, st.tokens[where][:, None]).squeeze(1),
                               rtol=1e-4, atol=1e-5)
    if prev_conf is not None:
        assert torch.equal(st.confidence[~where], prev_conf[~where])


def test_mdlm_reverse_steps_reveal_at_the_posterior_rate_and_draw_from_the_denoiser():
    """q(z_s | z_t, x): a masked token is revealed w.p. (alpha_s - alpha_t) / (1 - alpha_t) = (t - s) / t,
    as a draw from x_theta(z_t) without [MASK]; clean tokens never change."""
    L, K = 6, 4
    net = BagNet(L, mask_bias=1.0)
    fam = MDLM(MaskedOptions(), V, MASK, BOS)
    steps = list(fam.sample(net, SampleRequest(num_samples=2000, length=L, steps=K, seed=0)))
    assert len(steps) == K
    check_trace(steps, net.calls)
    prev, conf = torch.full((2000, L), MASK), torch.zeros(2000, L)
    for k, st in enumerate(steps):
        t, s = st.t, st.s
        assert (t, s) == pytest.approx((1 - k / K, 1 - (k + 1) / K))
        masked = prev == MASK
        assert torch.equal(st.tokens[~masked], prev[~masked])
        revealed = masked & (st.tokens != MASK)
        assert torch.equal(st.changed, revealed)
        assert_rate(revealed[masked], (t - s) / t, f"reveals {t:.2f}->{s:.2f}")
        probs = no_mask_probs(net(prev))
        assert_draws(probs[revealed], st.tokens[revealed], f"revealed ids {t:.2f}->{s:.2f}")
        check_confidence(st, conf, probs[revealed], revealed)
        prev, conf = st.tokens, st.confidence
    assert (prev != MASK).all()


@pytest.mark.parametrize("alpha_0", [1.0, 0.5])
def test_esolm_reveal_rates_and_draws_in_both_phases(alpha_0):
    """Diffusion steps reveal each masked token w.p. (alpha_s - alpha_t) / (1 - alpha_t) with
    alpha_t = alpha_0 (1 - t) (one shared count per step, ~Binomial); the 1 - alpha_0 left at t=0 are
    generated left to right. Every drawn id follows x_theta given all clean tokens ([MASK] keys add
    nothing in this net, so the order of the queries inside a step does not matter)."""
    L, K, runs = 8, 4, 150
    net = BagNet(L, mask_context=False, mask_bias=1.0)
    fam = EsoLM(EsoOptions(alpha_0=alpha_0), V, MASK, BOS)
    hits, rates, probs_all, drawn_all = [], [], [], []
    sequential_counts = []
    for seed in range(runs):
        calls = net.calls
        steps = list(fam.sample(net, SampleRequest(num_samples=4, length=L, steps=K, seed=seed, use_cache=False)))
        check_trace(steps, net.calls - calls)
        prev, conf = torch.full((4, L), MASK), torch.zeros(4, L)
        for k, st in enumerate(steps[:K]):
            assert (st.t, st.s) == pytest.approx((1 - k / K, 1 - (k + 1) / K))
            a_t, a_s = alpha_0 * (1 - st.t), alpha_0 * (1 - st.s)
            masked = prev == MASK
            revealed = masked & (st.tokens != MASK)
            assert torch.equal(st.tokens[~masked], prev[~masked])
            counts = revealed.sum(1)
            assert (counts == counts[0]).all()            # one shared count per step
            assert torch.equal(st.changed, revealed)
            hits.append(revealed[0][masked[0]])
            rates.append(torch.full((int(masked[0].sum()),), (a_s - a_t) / (1 - a_t)))
            probs_all.append(no_mask_probs(net(prev))[revealed])
            drawn_all.append(st.tokens[revealed])
            check_confidence(st, conf, probs_all[-1], revealed)
            prev, conf = st.tokens, st.confidence
        sequential_counts.append(len(steps) - K)
        for st in steps[K:]:                               # the sequential phase: one position per step
            assert st.t == 0.0 and st.s == 0.0
            masked = prev == MASK
            first = masked.float().argmax(1)
            assert torch.equal(st.tokens != prev, torch.nn.functional.one_hot(first, L).bool())
            assert torch.equal(st.changed, st.tokens != prev)
            probs_all.append(no_mask_probs(net(prev))[torch.arange(4), first])
            drawn_all.append(st.tokens[torch.arange(4), first])
            check_confidence(st, conf, probs_all[-1], st.changed)
            prev, conf = st.tokens, st.confidence
        assert (prev != MASK).all()
    assert_rate(torch.cat(hits), torch.cat(rates), "diffusion reveals")
    if alpha_0 == 1:
        assert max(sequential_counts) == 0
    else:
        assert abs(sum(sequential_counts) / (runs * L) - (1 - alpha_0)) < Z * math.sqrt(alpha_0 * (1 - alpha_0) / (runs * L))
    assert_draws(torch.cat(probs_all), torch.cat(drawn_all), "eso-lm draws")


def nucleus(probs, top_p):
    """Keep the most likely ids while the mass strictly above them is < top_p; renormalise."""
    out = torch.zeros_like(probs)
    for row in range(probs.shape[0]):
        order = probs[row].argsort(descending=True)
        above = 0.0
        for j in order.tolist():
            if above >= top_p:
                break
            out[row, j] = probs[row, j]
            above += float(probs[row, j])
    return out / out.sum(-1, keepdim=True)


@pytest.mark.parametrize("top_p,tail,temperature,trim", [
    (1.0, "greedy", 1.0, "posterior"), (0.8, "greedy", 1.0, "posterior"), (1.0, "ancestral", 1.0, "posterior"),
    (1.0, "last_step", 1.0, "posterior"), (1.0, "none", 1.0, "posterior"), (0.8, "greedy", 0.7, "x_theta")])
def test_duo_reverse_steps_follow_the_posterior_then_the_tail(top_p, tail, temperature, trim):
    """Steps on the grid t = 1 ... 1e-5 each draw z_s ~ q(z_s | z_t, x_theta(z_t, t)) (top-p trims
    that posterior, as the reference does); the default tail is one arg-max of x_theta at t = 1e-5
    (T + 1 network evaluations); `ancestral` is one more posterior step to alpha = 1, `last_step`
    makes the T-th step the arg-max, `none` stops after T steps; `nucleus=x_theta` trims x_theta
    instead. x_theta is softmax(logits / temperature) without [MASK]; confidence is x_theta of the id."""
    L, T = 4, 3
    B = 1500 if (top_p, tail) == (1.0, "greedy") else 400
    net = BagNet(L, time=0.5, mask_bias=1.5)
    fam = Duo(None, V, MASK, BOS)
    request = SampleRequest(num_samples=B, length=L, steps=T, seed=1, top_p=top_p, temperature=temperature,
                            options={"tail": tail, "nucleus": trim})
    steps = list(fam.sample(net, request))
    n_posterior = T + (tail == "ancestral") - (tail == "last_step")
    assert len(steps) == T + (tail in ("greedy", "ancestral"))
    check_trace(steps, net.calls)
    grid = torch.linspace(1.0, 1e-5, T + 1).tolist()
    assert [st.t for st in steps[:T]] == pytest.approx(grid[:T])
    assert [st.s for st in steps[:T]] == pytest.approx(grid[1:])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, V, generator=g, dtype=torch.float64).softmax(-1)
    torch.testing.assert_close(duo_posterior_reference(x, torch.tensor([0, 4, 11]), 0.3, 0.7),
                               bayes_posterior(x, torch.tensor([0, 4, 11]), 0.3, 0.7))
    prev = None
    for k, st in enumerate(steps):
        if prev is None:          # from t = 1 the input (the prior draw) is not recorded: see the next test
            assert st.t == 1.0
            prev = st.tokens
            continue
        x_theta = no_mask_probs(net(prev, torch.full((B,), sigma_of(st.t))) / temperature)
        if trim == "x_theta":
            x_theta = nucleus(x_theta.flatten(0, 1), top_p).view(B, L, V)
        assert torch.equal(st.changed, st.tokens != prev)
        check_confidence(st, None, x_theta.flatten(0, 1), torch.ones(B, L, dtype=torch.bool))
        if k >= n_posterior:      # the arg-max tail
            assert st.t == pytest.approx(grid[-1] if tail == "greedy" else grid[T - 1])
            assert torch.equal(st.tokens, x_theta.argmax(-1))
            assert not (st.tokens == MASK).any()
            continue
        a_t, a_s = 1 - st.t, 1 - st.s
        assert 0 <= a_t < a_s <= 1
        q = duo_posterior_reference(x_theta, prev, a_t, a_s).flatten(0, 1)
        if top_p < 1 and trim == "posterior":
            q = nucleus(q, top_p)
        assert_draws(q, st.tokens.flatten(), f"posterior {st.t:.2f}->{st.s:.2f}")
        assert_rate((st.tokens == prev).flatten(), q.gather(1, prev.flatten()[:, None]).squeeze(1), "stays")
        prev = st.tokens


def test_duo_first_step_draws_from_the_prior_mixture():
    """From t = 1 (z_t pure noise, alpha_t = 0) the posterior is a_s x_theta + (1 - a_s) / N."""
    L, T, B = 4, 4, 3000
    net = BagNet(L, time=0.5, mask_bias=1.5)
    fam = Duo(None, V, MASK, BOS)
    gen = torch.Generator().manual_seed(7)
    z1 = torch.randint(0, V, (B, L), generator=gen)   # the sampler's own prior draw, replayed
    first = next(iter(fam.sample(net, SampleRequest(num_samples=B, length=L, steps=T, seed=7))))
    a_s = 1 - first.s
    x_theta = no_mask_probs(net(z1, torch.full((B,), sigma_of(1.0))))
    q = (a_s * x_theta + (1 - a_s) / V).flatten(0, 1)
    assert_draws(q, first.tokens.flatten(), "first step")


def test_ar_sampler_draws_each_token_from_the_next_token_distribution():
    """Step i draws x_i ~ p(. | BOS, x_<i) without [MASK]: the causal bag computed by hand."""
    L, B = 4, 1500
    net = BagNet(L, mask_bias=1.0)
    steps = list(AR(None, V, MASK, BOS).sample(net, SampleRequest(num_samples=B, length=L, seed=0, use_cache=False)))
    assert len(steps) == L
    check_trace(steps, net.calls)
    final = steps[-1].tokens
    inputs = torch.cat([torch.full((B, 1), BOS), final[:, :-1]], 1)
    conf = None
    for i, st in enumerate(steps):
        assert (st.t, st.s) == pytest.approx((1 - i / L, 1 - (i + 1) / L))
        assert torch.equal(st.changed, torch.nn.functional.one_hot(torch.full((B,), i), L).bool())
        logits = net.T[i, inputs[:, i]] + net.W[inputs[:, :i + 1]].sum(1)
        assert_draws(no_mask_probs(logits), final[:, i], f"AR position {i}")
        check_confidence(st, conf, no_mask_probs(logits), st.changed)
        conf = st.confidence


@pytest.mark.parametrize("name,alpha_0", [("ar", 1.0), ("mdlm", 1.0), ("esolm", 1.0), ("esolm", 0.5)])
def test_caches_change_no_token(name, alpha_0):
    """KV cache / no-change cache against a plain forward per step, on a small random backbone."""
    from tests.test_backbone import small_net
    net = small_net(vocab=V)
    fam = {"ar": lambda: AR(None, V, MASK, BOS), "mdlm": lambda: MDLM(MaskedOptions(), V, MASK, BOS),
           "esolm": lambda: EsoLM(EsoOptions(alpha_0=alpha_0), V, MASK, BOS)}[name]()
    for extra in ({}, {"prompt": [3, 1]}, {} if name == "ar" else {"fixed": {4: 2, 7: 9}}):
        runs = [list(fam.sample(net, SampleRequest(num_samples=3, length=10, steps=5, seed=4, use_cache=c, **extra)))
                for c in (True, False)]
        assert len(runs[0]) == len(runs[1])
        for a, b in zip(*runs):
            assert torch.equal(a.tokens, b.tokens) and torch.equal(a.changed, b.changed)
            # the probabilities too: a near-uniform net draws the same ids from slightly wrong ones
            torch.testing.assert_close(a.confidence, b.confidence, atol=1e-5, rtol=1e-4)
        assert not (runs[0][-1].tokens == MASK).any()
        for pos, tok in SampleRequest(**extra).fixed_positions().items():
            assert (runs[0][-1].tokens[:, pos] == tok).all()


def test_esolm_sequential_steps_match_the_training_time_sequential_likelihood():
    """On a 2-layer random backbone, the probability the sampler gives each token of its left-to-right
    phase equals exp(-CE) of the training path (sequential_inputs + selected_ce) evaluated on the final
    sample, with the diffusion-revealed tokens as clean z_0 in their reveal order."""
    from tests.test_backbone import small_net
    net = small_net(vocab=V)
    L, K = 8, 40
    fam = EsoLM(EsoOptions(alpha_0=0.5), V, MASK, BOS)
    for seed in range(60):   # a run whose diffusion steps reveal at most one token each: order fully known
        steps = list(fam.sample(net, SampleRequest(num_samples=2, length=L, steps=K, seed=seed, use_cache=False)))
        diffusion = steps[:K]
        if all(int(st.changed[0].sum()) <= 1 for st in diffusion) and len(steps) - K >= 2:
            break
    else:
        pytest.fail("no run with one reveal per step")
    x = steps[-1].tokens
    for b in range(2):
        order = [int(st.changed[b].nonzero()) for st in diffusion if st.changed[b].any()]
        clean = torch.zeros(L, dtype=torch.bool)
        clean[order] = True
        rank = torch.full((L,), L)
        rank[order] = torch.arange(len(order))
        z0 = torch.where(clean, x[b], MASK)[None]
        inputs = fam.sequential_inputs(z0, x[b:b + 1], rank[None])
        select = torch.cat([~clean, torch.zeros(L, dtype=torch.bool)])[None]
        ce = fam.selected_ce(net, inputs.pop("tokens"), torch.cat([x[b], x[b]])[None], select, **inputs)[0, :L]
        torch.testing.assert_close(steps[-1].confidence[b][~clean], (-ce[~clean]).exp(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("strategy", ["ancestral", "confidence"])
def test_every_sampler_passes_temperature_and_top_p_in_their_places(embedded_family_name, strategy, monkeypatch):
    """A swapped (temperature, top_p) pair samples plausibly at the defaults (1, 1): record every call."""
    model = toolkit.load(embedded_family_name)
    if strategy not in supported(model.family):
        pytest.skip(f"{embedded_family_name} has no {strategy} strategy")
    calls = []

    def spy(logits, temperature, top_p):
        calls.append((temperature, top_p))
        return filter_probs(logits, temperature, top_p)

    for module in ("toolkit.samplers.common", "toolkit.decoding.causal_order", type(model.family).__module__):
        mod = importlib.import_module(module)
        if hasattr(mod, "filter_probs"):
            monkeypatch.setattr(mod, "filter_probs", spy)
    list(model.sample(SampleRequest(num_samples=2, length=12, steps=4, seed=1, temperature=0.7, top_p=0.9, sampler=strategy)))
    assert calls and all(t == 0.7 and p in (0.9, 1.0) for t, p in calls), calls[:3]
