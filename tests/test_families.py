"""The math of each family, checked against independent computations."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from toolkit.families.ar import AR, AROptions
from toolkit.families.duo import Duo, duo_nelbo_terms, duo_posterior
from toolkit.families.esolm import EsoLM, EsoOptions, permuted_causal_mask, permuted_order, sequential_mask
from toolkit.families.mdlm import MDLM, MaskedOptions
from toolkit.sample_request import SampleRequest
from tests.test_backbone import small_net

V, MASK, BOS = 12, 11, 10


class TableNet(torch.nn.Module):
    """A 'network' whose logits are a fixed function of (position, token at that position, sigma):
    cheap, deterministic and simple enough to enumerate exactly."""

    def __init__(self, length, vocab=V, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(length, vocab, vocab, generator=g)

    def forward(self, tokens, sigma=None, select=None, **_):
        pos = torch.arange(tokens.shape[1]).expand_as(tokens)
        logits = self.table[pos, tokens]
        return logits if select is None else logits[select]


# ---- MDLM ---------------------------------------------------------------------------------

def exact_mdlm_nelbo_at_t(net, fam, x0, t):
    """E over all 2^L mask patterns of (1/t) * sum over masked positions of CE: by enumeration."""
    L = x0.shape[1]
    total = 0.0
    for pattern in itertools.product([0, 1], repeat=L):
        m = torch.tensor(pattern, dtype=torch.bool)[None]
        prob = t ** int(m.sum()) * (1 - t) ** (L - int(m.sum()))
        z = torch.where(m, MASK, x0)
        logits = fam.subs_logits(net(z))
        ce = F.cross_entropy(logits[0], x0[0], reduction="none")
        total += prob * float((ce * m[0]).sum()) / t
    return total


def test_mdlm_nelbo_is_weighted_masked_ce_in_expectation():
    fam = MDLM(MaskedOptions(), V, MASK, BOS)
    x0 = torch.tensor([[1, 4, 2, 7]])
    net = TableNet(4)
    t = 0.37
    exact = exact_mdlm_nelbo_at_t(net, fam, x0, t)
    n = 40000
    g = torch.Generator().manual_seed(0)
    draws = fam.nelbo(net, x0.expand(n, -1), torch.full((n,), t), g)
    se = float(draws.std()) / math.sqrt(n)
    assert abs(float(draws.mean()) - exact) < 4 * se


def test_mdlm_losses_match_their_definitions():
    """elbo loss = mean NELBO per token; low_var = plain CE over masked positions (same draws)."""
    torch.manual_seed(0)
    net = small_net(vocab=V)
    x0 = torch.randint(0, 10, (6, 8))
    t = torch.rand(6) * 0.9 + 0.05
    elbo = MDLM(MaskedOptions("elbo"), V, MASK, BOS)
    low = MDLM(MaskedOptions("low_var"), V, MASK, BOS)
    nelbo = elbo.nelbo(net, x0, t, torch.Generator().manual_seed(3))
    assert torch.allclose(elbo.loss(net, x0, t, torch.Generator().manual_seed(3)), nelbo.sum() / x0.numel())
    # independent recomputation of the same masks
    u = torch.rand(x0.shape, generator=torch.Generator().manual_seed(3))
    masked = u < t[:, None]
    logits = net(torch.where(masked, MASK, x0)).float()
    logits[..., MASK] = -float("inf")
    ce = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")
    torch.testing.assert_close(nelbo, (ce * masked).sum(1) / t)
    torch.testing.assert_close(low.loss(net, x0, t, torch.Generator().manual_seed(3)), (ce * masked).sum() / x0.numel())


def test_mdlm_sampler_keeps_revealed_tokens_and_ends_unmasked():
    net = small_net(vocab=V)
    fam = MDLM(MaskedOptions(), V, MASK, BOS)
    prev = None
    steps = list(fam.sample(net, SampleRequest(num_samples=3, length=12, steps=6, seed=1, prompt=[3, 4])))
    assert len(steps) == 6
    for st in steps:
        if prev is not None:
            was_clean = prev != MASK
            assert torch.equal(st.tokens[was_clean], prev[was_clean]), "a revealed token changed"
            assert torch.equal(st.changed, (prev == MASK) & (st.tokens != MASK))
        assert (st.tokens[:, :2] == torch.tensor([3, 4])).all()
        prev = st.tokens
    assert (steps[-1].tokens != MASK).all()


# ---- Duo ------------------------------------------------------------------------------------

def bayes_posterior(x_dist, z_t, a_t, a_s, n):
    """q(z_s | z_t, x) by Bayes from the forward marginals, for one position: [n]."""
    a_ts = a_t / a_s
    trans = a_ts * torch.eye(n) + (1 - a_ts) / n          # q(z_t = column | z_s = row)
    prior = a_s * x_dist + (1 - a_s) / n                   # q(z_s | x)
    post = trans[:, z_t] * prior
    return post / post.sum()


def test_duo_posterior_formula_equals_bayes():
    n = 6
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, generator=g).softmax(0)
    for z in range(n):
        for a_t, a_s in [(0.2, 0.5), (0.05, 0.9), (0.6, 0.61)]:
            formula = duo_posterior(x[None, None], torch.tensor([[z]]), a_t, a_s)[0, 0]
            torch.testing.assert_close(formula, bayes_posterior(x, z, a_t, a_s, n), atol=1e-6, rtol=1e-5)


def duo_integrand_exact(x0_id, x_theta_of, t, n):
    """E_{z_t ~ q(z_t | x)} of the closed-form integrand, for one position, exactly."""
    a = 1 - t
    x = F.one_hot(torch.tensor(x0_id), n).float()
    q_zt = a * x + (1 - a) / n
    total = 0.0
    for z in range(n):
        probs = x_theta_of(z, t)
        term = duo_nelbo_terms(probs[None, None], torch.tensor([[x0_id]]), torch.tensor([[z]]), torch.tensor([a]))
        total += float(q_zt[z]) * float(term)
    return total


def duo_discrete_elbo(x0_id, x_theta_of, steps, n, t_min):
    """Sum over T steps from t=1 to t_min of E_{z_t} KL(q(z_s|z_t,x) || q(z_s|z_t,x_theta)), by Bayes."""
    x = F.one_hot(torch.tensor(x0_id), n).float()
    ts = torch.linspace(1.0, t_min, steps + 1, dtype=torch.float64)
    total = 0.0
    for k in range(steps):
        t, s = float(ts[k]), float(ts[k + 1])
        a_t, a_s = 1 - t, 1 - s
        q_zt = a_t * x + (1 - a_t) / n
        for z in range(n):
            p = bayes_posterior(x.double(), z, a_t, a_s, n)
            q = bayes_posterior(x_theta_of(z, t).double(), z, a_t, a_s, n)
            total += float(q_zt[z]) * float((p * (p / q).log()).sum())
    return total


def test_duo_closed_form_matches_discrete_elbo_as_steps_grow():
    n, x0_id, t_min = 5, 2, 0.05
    w = torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    x_theta_of = lambda z, t: (w[z] * (1 + t)).softmax(0)  # noqa: E731  a smooth 'model'
    # continuous-time NELBO over [t_min, 1] by high-order quadrature of the exact integrand
    import numpy as np
    xs, ws = np.polynomial.legendre.leggauss(40)
    ts = t_min + (1 - t_min) * (xs + 1) / 2
    continuous = sum(float(wi) * (1 - t_min) / 2 * duo_integrand_exact(x0_id, x_theta_of, float(ti), n)
                     for ti, wi in zip(ts, ws))
    errors = [abs(duo_discrete_elbo(x0_id, x_theta_of, T, n, t_min) - continuous) for T in (50, 200, 800)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 2e-3 * max(continuous, 1e-3), (errors, continuous)


def test_duo_nelbo_nonnegative_and_zero_when_exact():
    g = torch.Generator().manual_seed(1)
    n = 7
    x0 = torch.randint(0, n, (4, 6), generator=g)
    z = torch.randint(0, n, (4, 6), generator=g)
    a = torch.rand(4, generator=g) * 0.98 + 0.01
    probs = torch.randn(4, 6, n, generator=g).softmax(-1)
    assert (duo_nelbo_terms(probs, x0, z, a) >= -1e-6).all()
    exact = F.one_hot(x0, n).float()
    assert duo_nelbo_terms(exact, x0, z, a).abs().max() < 1e-5


def test_duo_nelbo_at_t_one_is_the_nelbo_just_inside_it():
    """At t = 1 alpha_t = 0 and the closed form divides by zero: the time is clamped to 1 - EPS
    (where the integrand is already ~0), so t = 1 must give exactly the draw at 1 - EPS, finite."""
    from toolkit.schedule import EPS
    fam, net = Duo(None, V, MASK, BOS), TableNet(5)
    x0 = torch.tensor([[1, 4, 2, 7, 3], [0, 0, 5, 9, 8]])
    at_one = fam.nelbo(net, x0, torch.ones(2), torch.Generator().manual_seed(3))
    inside = fam.nelbo(net, x0, torch.full((2,), 1 - EPS), torch.Generator().manual_seed(3))
    assert torch.isfinite(at_one).all()
    torch.testing.assert_close(at_one, inside)


class FavoursMask(torch.nn.Module):
    """A network whose [MASK] logit is far above every other: only suppression keeps [MASK] out."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, *args, **kwargs):
        logits = self.net(*args, **kwargs).clone()
        logits[..., MASK] += 50.0
        return logits


@pytest.mark.parametrize("tail,nfe", [("greedy", 6), ("ancestral", 6), ("none", 5), ("last_step", 5)])
def test_duo_sampler_never_emits_mask_keeps_prompt_and_counts_nfe(tail, nfe):
    net = FavoursMask(small_net(vocab=V))
    fam = Duo(None, V, MASK, BOS)
    req = SampleRequest(num_samples=4, length=10, steps=5, seed=0, prompt=[1, 2, 3], options={"tail": tail})
    steps = list(fam.sample(net, req))
    assert len(steps) == nfe and steps[-1].nfe == nfe      # T posterior steps (+ the tail's evaluation)
    assert all((st.tokens[:, :3] == torch.tensor([1, 2, 3])).all() for st in steps)
    # the prior may draw [MASK] (uniform over all ids, as the reference); the model never does
    assert not (steps[-1].tokens == MASK).any()
    assert any(st.changed.any() for st in steps)


def test_ar_never_predicts_mask():
    net = FavoursMask(small_net(vocab=V))
    fam = AR(None, V, MASK, BOS)
    last = list(fam.sample(net, SampleRequest(num_samples=4, length=8, steps=1, seed=0)))[-1]
    assert not (last.tokens == MASK).any()
    x0 = torch.randint(0, 10, (3, 6))
    logits = net(torch.cat([torch.full((3, 1), BOS), x0[:, :-1]], 1), causal=True).float()
    logits[..., MASK] = -float("inf")
    want = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none").sum(1)
    torch.testing.assert_close(fam.nelbo(net, x0), want)


# ---- Eso-LM ---------------------------------------------------------------------------------

def test_permuted_causal_mask_sees_nothing_later_in_order():
    masked = torch.rand(3, 9, generator=torch.Generator().manual_seed(0)) < 0.5
    order = permuted_order(masked, torch.Generator().manual_seed(1))
    mask = permuted_causal_mask(order)
    rank = order.argsort(1)
    for b in range(3):
        # clean positions come first in the order
        assert not masked[b, order[b, : int((~masked[b]).sum())]].any()
        for i in range(9):
            for j in range(9):
                assert bool(mask[b, i, j]) == bool(rank[b, j] <= rank[b, i])


def test_reordered_causal_forward_equals_explicit_permuted_mask():
    """The fast path (gather + causal + rotary positions) equals the explicit mask in place."""
    net = small_net(vocab=V)
    x = torch.randint(0, 10, (2, 8))
    order = torch.stack([torch.randperm(8), torch.randperm(8)])
    fast = net(x.gather(1, order), positions=order, causal=True)
    slow = net(x, mask=permuted_causal_mask(order)[:, None])
    torch.testing.assert_close(fast, slow.gather(1, order[..., None].expand_as(slow)), atol=1e-5, rtol=1e-4)


def test_sequential_mask_is_left_to_right():
    n = 6
    clean = torch.tensor([[True, False, True, False, False, True]])
    rank = torch.tensor([[2, 9, 0, 9, 9, 1]])
    m = sequential_mask(clean, rank)[0]
    z, x = slice(0, n), slice(n, 2 * n)
    for i in range(n):
        if clean[0, i]:
            continue
        seen_x = m[i, x].nonzero().flatten().tolist()
        assert seen_x == [j for j in range(i) if not clean[0, j]]          # earlier generated only
        assert m[i, z].nonzero().flatten().tolist() == sorted([j for j in range(n) if clean[0, j]] + [i])
    # clean tokens attend causally to each other in rank order
    assert m[0, 2] and m[0, 5] and not m[5, 0] and m[5, 2]


def test_esolm_sampler_reveals_everything():
    net = small_net(vocab=V)
    for alpha_0 in (1.0, 0.5):
        fam = EsoLM(EsoOptions(alpha_0=alpha_0), V, MASK, BOS)
        steps = list(fam.sample(net, SampleRequest(num_samples=2, length=10, steps=4, seed=0, prompt=[5])))
        assert (steps[-1].tokens != MASK).all()
        assert (steps[-1].tokens[:, 0] == 5).all()


def test_esolm_alpha_0_validation():
    from toolkit.errors import UserError
    with pytest.raises(UserError):
        EsoOptions(alpha_0=0.0).validate()
    with pytest.raises(UserError):
        EsoOptions(alpha_0=1.5).validate()


# ---- AR -------------------------------------------------------------------------------------

def chain_rule_nll(net, x0, first: int, bos: list[int]):
    """-sum_i log p(x_i | bos + x_<i) for i >= first, one forward per token, [MASK] excluded."""
    nll = torch.zeros(len(x0))
    for i in range(first, x0.shape[1]):
        context = torch.cat([torch.tensor(bos, dtype=torch.long).expand(len(x0), len(bos)), x0[:, :i]], 1)
        logits = net(context, causal=True)[:, -1].float()
        logits[:, MASK] = -float("inf")
        nll -= logits.log_softmax(-1).gather(1, x0[:, i:i + 1]).squeeze(1)
    return nll


def test_ar_loss_is_exact_nll():
    """Family NLL (one shifted forward) equals the chain rule computed token by token, under
    both scoring protocols (BOS + L targets; the reference's first-token context + L - 1)."""
    net = small_net(vocab=V)
    fam = AR(None, V, MASK, BOS)
    x0 = torch.randint(0, 10, (2, 7))
    nll = chain_rule_nll(net, x0, 0, [BOS])
    torch.testing.assert_close(fam.nelbo(net, x0), nll, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(fam.loss(net, x0), nll.sum() / x0.numel(), atol=1e-5, rtol=1e-5)
    ref = AR(AROptions(score="reference"), V, MASK, BOS)
    nll = chain_rule_nll(net, x0, 1, [])
    assert ref.scored_tokens(x0) == 2 * 6
    torch.testing.assert_close(ref.nelbo(net, x0), nll, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ref.loss(net, x0), nll.sum() / 12, atol=1e-5, rtol=1e-5)


def test_ar_prompt_masked_loss_with_a_single_scored_token_is_that_tokens_nll():
    """Fine-tuning's normaliser counts the scored targets, even when there is just one."""
    net = small_net(vocab=V)
    fam = AR(None, V, MASK, BOS)
    x0 = torch.randint(0, 10, (1, 6))
    loss_mask = torch.zeros(1, 6, dtype=torch.bool)
    loss_mask[0, 4] = True
    nll = chain_rule_nll(net, x0[:, :5], 4, [BOS])
    torch.testing.assert_close(fam.loss(net, x0, loss_mask=loss_mask), nll[0], atol=1e-5, rtol=1e-5)


def test_ar_trace_times_and_step_numbers_follow_the_generated_positions():
    """With a prompt of p tokens and length n, step k reveals position p + k - 1 at t = 1 - (k-1)/(n-p)."""
    net = small_net(vocab=V)
    n, p = 7, 2
    steps = list(AR(None, V, MASK, BOS).sample(net, SampleRequest(num_samples=2, length=n, seed=0, prompt=[1, 2])))
    assert [s.step for s in steps] == list(range(1, n - p + 1))
    for k, s in enumerate(steps, start=1):
        assert s.t == pytest.approx(1 - (k - 1) / (n - p)) and s.s == pytest.approx(1 - k / (n - p))
        assert s.changed[:, p + k - 1].all() and int(s.changed.sum()) == 2
