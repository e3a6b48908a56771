"""Each family's math pinned to an independent computation written out here.

Forward corruption rates, Duo's and Eso-LM's NELBO through `Family.nelbo` against Bayes /
enumeration, the low-variance loss under the trainer's chunking, the noise level a
time-conditioned backbone sees, [MASK] suppression (the samplers' reverse steps are in
test_family_reverse_steps.py). The "networks" are tiny lookup tables (`BagNet`) whose output at a
query is a known function of what that query may attend to, so every expectation can be
computed exactly in a few lines. Statistical checks allow 5 standard errors.
"""
import itertools
import math

import pytest
import torch

from toolkit.families.ar import AR
from toolkit.families.duo import Duo
from toolkit.families.esolm import EsoLM, EsoOptions
from toolkit.families.mdlm import MDLM, MaskedOptions
from toolkit.sample_request import SampleRequest
from toolkit.schedule import stratified_times
from toolkit.trainer.step import chunk_rows, local_chunk, step_generator

V, MASK, BOS = 12, 11, 10     # ids 0..9 are words; the vocabulary (and Duo's noise) has all 12
Z = 5.0                       # tolerance of the statistical checks, in standard errors


class BagNet(torch.nn.Module):
    """logits[i] = T[pos_i, tok_i] + sigma * S[pos_i, tok_i] + sum over keys j visible to i of W[tok_j]
    (+ `mask_bias` on the [MASK] output). Visibility follows the backbone's contract: an explicit
    `mask` [B, 1, Lq, Lk], else causal (lower-triangular over the sequence as fed), else everything.
    Records every `sigma` it receives and counts its calls."""

    def __init__(self, length, seed=0, table=1.0, time=0.0, context=0.3, mask_bias=0.0, mask_context=True):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.T = torch.randn(length, V, V, generator=g) * table
        self.S = torch.randn(length, V, V, generator=g) * time
        self.W = torch.randn(V, V, generator=g) * context
        if not mask_context:
            self.W[MASK] = 0.0        # a [MASK] key adds nothing: who sees which mask no longer matters
        self.T[..., MASK] += mask_bias
        self.sigmas = []
        self.calls = 0

    def forward(self, tokens, sigma=None, positions=None, causal=False, mask=None, select=None, cache=None, **_):
        assert cache is None, "BagNet has no KV cache: sample with use_cache=False"
        self.calls += 1
        b, n = tokens.shape
        pos = positions if positions is not None else torch.arange(n).expand(b, n)
        out = self.T[pos, tokens]
        if sigma is not None:
            self.sigmas.append(sigma.detach().clone())
            out = out + sigma.reshape(-1, 1, 1) * self.S[pos, tokens]
        if mask is not None:
            vis = mask[:, 0].float()
        elif causal:
            vis = torch.ones(n, n).tril()[None]
        else:
            vis = torch.ones(1, n, n)
        out = out + vis @ self.W[tokens]
        return out if select is None else out[select]


def no_mask_probs(logits):
    """Softmax over the vocabulary without [MASK] (its probability exactly 0)."""
    logits = logits.double().clone()
    logits[..., MASK] = -math.inf
    return logits.softmax(-1)


def ce(logits, target):
    """-log p(target) under `no_mask_probs`, computed from the logits directly."""
    keep = torch.ones(logits.shape[-1], dtype=torch.bool)
    keep[MASK] = False
    lg = logits.double()
    return float(torch.logsumexp(lg[keep], 0) - lg[target])


def assert_rate(hits, probs, what=""):
    """Bernoulli outcomes `hits` against their probabilities `probs` (same shape)."""
    hits, probs = hits.double().flatten(), torch.as_tensor(probs, dtype=torch.float64).expand(hits.shape).flatten()
    sd = float((probs * (1 - probs)).sum().sqrt())
    diff = float(hits.sum() - probs.sum())
    assert abs(diff) <= Z * sd + 1e-6, f"{what}: {int(hits.sum())} hits, expected {float(probs.sum()):.1f} ± {sd:.1f}"


def assert_draws(probs, drawn, what=""):
    """Categorical draws `drawn` [M] against their distributions `probs` [M, N]: the count of every id,
    and the summed probability of the drawn ids (sensitive to row-by-row mistakes)."""
    probs = probs.double()
    assert len(drawn) > 0
    onehot = torch.nn.functional.one_hot(drawn, probs.shape[-1]).double()
    for v in range(probs.shape[-1]):
        assert_rate(onehot[:, v], probs[:, v], f"{what} id {v}")
    p_drawn = probs.gather(1, drawn[:, None]).squeeze(1)
    mean = (probs ** 2).sum(1)
    var = (probs ** 3).sum(1) - mean ** 2
    diff, sd = float(p_drawn.sum() - mean.sum()), float(var.sum().clamp(min=0).sqrt())
    assert abs(diff) <= Z * sd + 1e-6, f"{what}: sum p(drawn) {float(p_drawn.sum()):.2f}, expected {float(mean.sum()):.2f} ± {sd:.2f}"


def duo_posterior_reference(x, z_t, a_t, a_s):
    """q(z_s | z_t, x) of uniform-state diffusion (UDLM / Duo papers), for distributions x [..., N]:
    [N a_t x*z_t + (a_t|s - a_t) z_t + (a_s - a_t) x + (1 - a_t|s)(1 - a_s)/N] / [N a_t <z_t, x> + 1 - a_t]."""
    n = x.shape[-1]
    zt = torch.nn.functional.one_hot(z_t, n).to(x.dtype)
    a_ts = a_t / a_s
    num = n * a_t * x * zt + (a_ts - a_t) * zt + (a_s - a_t) * x + (1 - a_ts) * (1 - a_s) / n
    return num / (n * a_t * (x * zt).sum(-1, keepdim=True) + 1 - a_t)


def bayes_posterior(x, z_t, a_t, a_s):
    """The same posterior by Bayes: q(z_t | z_s) q(z_s | x), normalised over z_s."""
    n = x.shape[-1]
    a_ts = a_t / a_s
    zt = torch.nn.functional.one_hot(z_t, n).to(x.dtype)
    post = (a_ts * zt + (1 - a_ts) / n) * (a_s * x + (1 - a_s) / n)
    return post / post.sum(-1, keepdim=True)


def sigma_of(t):
    """The noise level a time-conditioned backbone sees: -log alpha_t (alpha clamped at 1e-3)."""
    return -math.log(max(1 - t, 1e-3))


# ---- forward process ------------------------------------------------------------------------

@pytest.mark.parametrize("name,alpha_0", [("mdlm", 1.0), ("esolm", 1.0), ("esolm", 0.6), ("duo", 1.0)])
def test_corruption_changes_one_minus_alpha_of_tokens(name, alpha_0):
    fam = {"mdlm": lambda: MDLM(MaskedOptions(), V, MASK, BOS), "duo": lambda: Duo(None, V, MASK, BOS),
           "esolm": lambda: EsoLM(EsoOptions(alpha_0=alpha_0), V, MASK, BOS)}[name]()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 10, (2000, 8), generator=g)
    for t in (0.0, 0.1, 0.3, 0.7, 0.9):
        out = fam.corrupt(x0, torch.full((len(x0),), t), g)
        alpha = alpha_0 * (1 - t)
        if name == "duo":
            # a uniform id replaces a token with probability 1 - alpha; 1/N of replacements keep it
            z = out
            assert_rate(z != x0, (1 - alpha) * (1 - 1 / V), f"changed at t={t}")
            # the replacements are uniform over all ids but the clean one: count of every id
            changed = z != x0
            expected = (torch.nn.functional.one_hot(x0[changed], V).double() - 1).abs() / (V - 1)
            if changed.any():
                assert_draws(expected, z[changed], f"replacements at t={t}")
        else:
            z, masked = out
            assert torch.equal(masked, z != x0) and (z[masked] == MASK).all()
            assert_rate(masked, 1 - alpha, f"masked at t={t}")


# ---- NELBOs end to end ----------------------------------------------------------------------

def duo_discrete_elbo(net, x0, steps, t_min):
    """sum_k E_{z_t ~ q(z_t | x)} sum_i KL(q(z_s^i | z_t^i, x) || q(z_s^i | z_t^i, x_theta^i(z_t, t)))
    on the grid 1 -> t_min, by Bayes and enumeration of all N^L latents (the T-step discrete ELBO)."""
    L = x0.shape[0]
    states = torch.tensor(list(itertools.product(range(V), repeat=L)))          # [S, L]
    ts = torch.linspace(1.0, t_min, steps + 1, dtype=torch.float64)
    t, s = ts[:-1], ts[1:]
    a_t, a_s = (1 - t)[:, None, None, None], (1 - s)[:, None, None, None]
    sig = torch.tensor([sigma_of(float(v)) for v in t])
    S = len(states)
    x_theta = no_mask_probs(net(states.repeat(steps, 1), sig.repeat_interleave(S))).view(steps, S, L, V)
    x = torch.nn.functional.one_hot(x0, V).double().expand(steps, S, L, V)
    zt = states.expand(steps, S, L)
    p, q = bayes_posterior(x, zt, a_t, a_s), bayes_posterior(x_theta, zt, a_t, a_s)
    kl = torch.where(p > 0, p * (p / q).log(), torch.zeros_like(p)).sum(-1).sum(-1)  # [T, S]
    q_zt = (a_t[..., 0] * (states == x0).double() + (1 - a_t[..., 0]) / V).prod(-1)  # [T, S]
    return float((q_zt * kl).sum())


def test_duo_nelbo_end_to_end_equals_the_discrete_elbo_limit():
    """E_t E_{z_t} Duo.nelbo over [t_min, 1] (Monte Carlo through the family, so corruption, sigma,
    [MASK] suppression and the closed form all count) equals the T-step ELBO by Bayes for large T."""
    L, t_min = 2, 0.02
    net = BagNet(L, time=0.7, mask_bias=1.0, context=0.5)
    fam = Duo(None, V, MASK, BOS)
    x0 = torch.tensor([3, 7])
    exact = duo_discrete_elbo(net, x0, 1500, t_min)
    n = 60000
    g = torch.Generator().manual_seed(0)
    t = t_min + (1 - t_min) * stratified_times(n, g, t_min=0.0, t_max=1.0)
    draws = fam.nelbo(net, x0.expand(n, L), t, g).double() * (1 - t_min)
    mc, se = float(draws.mean()), float(draws.std()) / math.sqrt(n)
    assert abs(mc - exact) < Z * se + 3e-3 * exact, (mc, se, exact)


def esolm_exact(net, x0, alpha_0, t):
    """(diffusion term at t, sequential term), by enumeration over every mask pattern.

    Diffusion: alpha_t = alpha_0 (1 - t), weight -alpha'_t / (1 - alpha_t) = alpha_0 / (1 - alpha_t);
    a masked query sees all clean tokens, then the masks before it in a uniformly random order and
    itself (causal over [clean ; masked]): its rank among the m masks is uniform on 0..m-1.
    Sequential: tokens masked at t=0 (prob 1 - alpha_0 each) are predicted left to right, each seeing
    the clean tokens, the earlier generated ones and its own [MASK]."""
    L = len(x0)
    T, W = net.T, net.W
    a = alpha_0 * (1 - t)
    weight = alpha_0 / (1 - a)
    diffusion = sequential = 0.0
    for pattern in itertools.product([False, True], repeat=L):
        masked = [i for i in range(L) if pattern[i]]
        clean = [i for i in range(L) if not pattern[i]]
        m = len(masked)
        seen = sum((W[x0[j]] for j in clean), torch.zeros(V))
        p_t = (1 - a) ** m * a ** (L - m)
        for i in masked:
            diffusion += p_t * weight * sum(ce(T[i, MASK] + seen + (k + 1) * W[MASK], x0[i]) for k in range(m)) / m
        p_0 = (1 - alpha_0) ** m * alpha_0 ** (L - m)
        for i in masked:
            before = sum((W[x0[j]] for j in masked if j < i), torch.zeros(V))
            sequential += p_0 * ce(T[i, MASK] + seen + before + W[MASK], x0[i])
    return diffusion, sequential


@pytest.mark.parametrize("alpha_0,t", [(0.5, 0.3), (0.5, 0.8), (0.25, 0.6), (1.0, 0.4)])
def test_esolm_nelbo_equals_enumeration(alpha_0, t):
    L = 3
    net = BagNet(L, context=0.6, mask_bias=1.0)
    fam = EsoLM(EsoOptions(alpha_0=alpha_0), V, MASK, BOS)
    x0 = torch.tensor([4, 1, 8])
    diffusion, sequential = esolm_exact(net, x0.tolist(), alpha_0, t)
    n = 20000
    draws = fam.nelbo(net, x0.expand(n, L), torch.full((n,), t), torch.Generator().manual_seed(1)).double()
    se = float(draws.std()) / math.sqrt(n)
    assert abs(float(draws.mean()) - (diffusion + sequential)) < Z * se, (float(draws.mean()), diffusion, sequential)
    seq = fam.sequential_nll(net, x0.expand(n, L), torch.Generator().manual_seed(2)).double()
    if alpha_0 == 1:
        assert sequential == 0 and (seq == 0).all()
    else:   # the sequential part alone: full (not halved), left to right
        se = float(seq.std()) / math.sqrt(n)
        assert abs(float(seq.mean()) - sequential) < Z * se, (float(seq.mean()), sequential)


def test_masked_weights_depend_on_alpha_0():
    t = torch.tensor([0.1, 0.5, 0.9])
    for alpha_0 in (1.0, 0.5, 0.25):
        fam = EsoLM(EsoOptions(alpha_0=alpha_0), V, MASK, BOS)
        torch.testing.assert_close(fam.weight(t), alpha_0 / (1 - alpha_0 * (1 - t)))
        torch.testing.assert_close(fam.schedule.reveal_probability(torch.tensor(0.6), torch.tensor(0.2)),
                                   torch.tensor(alpha_0 * 0.4 / (1 - alpha_0 * 0.4)))
    torch.testing.assert_close(MDLM(MaskedOptions(), V, MASK, BOS).weight(t), 1 / t)


# ---- the low-variance loss under the trainer's chunking ------------------------------------

@pytest.mark.parametrize("name,loss", [("mdlm", "low_var"), ("mdlm", "elbo"), ("esolm", "low_var"), ("esolm", "elbo")])
def test_batch_loss_is_the_mean_of_its_chunk_losses(name, loss):
    """With the trainer's split (stratified times, chunk rows, per-chunk generators), the mean of the
    chunks' losses equals the whole batch's loss computed by hand from the same draws, for 1, 2 and 4
    chunks: the objective does not depend on the number of ranks and micro-steps."""
    L, B, seed, step = 6, 16, 3, 5
    alpha_0 = 0.5 if name == "esolm" else 1.0
    net = BagNet(L, mask_context=False, mask_bias=1.0)
    fam = (EsoLM(EsoOptions(loss=loss, alpha_0=alpha_0), V, MASK, BOS) if name == "esolm"
           else MDLM(MaskedOptions(loss), V, MASK, BOS))
    x0 = torch.randint(0, 10, (B, L), generator=torch.Generator().manual_seed(0))
    rows = torch.arange(B)
    times = stratified_times(B, step_generator(seed, step, -1, "cpu"))
    for chunks in (1, 2, 4):
        size = B // chunks
        fam_losses, total = [], 0.0
        for micro in range(chunks):                                # world=1, grad_accum=chunks
            chunk = local_chunk(0, chunks, micro)
            x, tc = x0[chunk_rows(rows, chunk, size)], chunk_rows(times, chunk, size)
            fam_losses.append(float(fam.loss(net, x, tc, step_generator(seed, step, chunk, "cpu"))))
            g = step_generator(seed, step, chunk, "cpu")
            masked = torch.rand(x.shape, generator=g) < (1 - alpha_0 * (1 - tc))[:, None]
            logits = net(torch.where(masked, MASK, x))             # no [MASK] context: order is irrelevant
            weight = alpha_0 / (1 - alpha_0 * (1 - tc)) if loss == "elbo" else torch.ones_like(tc)
            for b in range(size):
                for i in range(L):
                    if masked[b, i]:
                        total += float(weight[b]) * ce(logits[b, i], int(x[b, i]))
            if alpha_0 < 1:
                torch.rand(x.shape, generator=g)                   # the diffusion order's keys
                z0_masked = torch.rand(x.shape, generator=g) < 1 - alpha_0
                for b in range(size):
                    clean = sum((net.W[int(x[b, j])] for j in range(L) if not z0_masked[b, j]), torch.zeros(V))
                    for i in range(L):
                        if z0_masked[b, i]:
                            before = sum((net.W[int(x[b, j])] for j in range(i) if z0_masked[b, j]), torch.zeros(V))
                            total += ce(net.T[i, MASK] + clean + before, int(x[b, i]))
        assert sum(fam_losses) / chunks == pytest.approx(total / (B * L), rel=1e-5, abs=1e-6), chunks


# ---- what the backbone sees; [MASK] suppression ---------------------------------------------

def test_duo_backbone_sees_sigma_minus_log_alpha():
    L = 3
    net = BagNet(L, time=0.5)
    fam = Duo(None, V, MASK, BOS)
    t = torch.tensor([0.1, 0.5, 0.9, 0.0])
    fam.nelbo(net, torch.randint(0, 10, (4, L)), t, torch.Generator().manual_seed(0))
    torch.testing.assert_close(net.sigmas[-1].double(), torch.tensor([sigma_of(v) for v in t.tolist()], dtype=torch.float64))
    assert (net.sigmas[-1] >= 0).all()
    net.sigmas.clear()
    steps = list(fam.sample(net, SampleRequest(num_samples=2, length=L, steps=4, seed=0)))
    assert len(net.sigmas) == len(steps)
    for sig, st in zip(net.sigmas, steps):
        torch.testing.assert_close(sig.double(), torch.full((2,), sigma_of(st.t), dtype=torch.float64))


def test_ar_and_duo_never_assign_probability_to_mask():
    """With a [MASK] logit far above the rest, AR's NLL is still the log-softmax over the other ids,
    its samples hold no [MASK], and Duo's x_theta gives [MASK] probability 0."""
    L = 5
    net = BagNet(L + 1, mask_bias=8.0)
    ar = AR(None, V, MASK, BOS)
    x0 = torch.randint(0, 10, (3, L), generator=torch.Generator().manual_seed(0))
    inputs = torch.cat([torch.full((3, 1), BOS), x0[:, :-1]], 1)
    want = torch.zeros(3, dtype=torch.float64)
    for b in range(3):
        for i in range(L):      # causal: position i sees inputs 0..i
            logits = net.T[i, inputs[b, i]] + net.W[inputs[b, :i + 1]].sum(0)
            want[b] += ce(logits, int(x0[b, i]))
    torch.testing.assert_close(ar.nelbo(net, x0).double(), want, rtol=1e-5, atol=1e-5)
    out = list(ar.sample(net, SampleRequest(num_samples=50, length=L, seed=0, use_cache=False)))[-1].tokens
    assert not (out == MASK).any()
    duo = Duo(None, V, MASK, BOS)
    z = torch.randint(0, V, (3, L))
    x_theta = duo.x_theta(net, z, torch.full((3,), 0.4))
    assert (x_theta[..., MASK] == 0).all()
    torch.testing.assert_close(x_theta.double(), no_mask_probs(net(z, torch.full((3,), sigma_of(0.4)))),
                               rtol=1e-5, atol=1e-6)


# ---- shared pieces: training times, the sequential-phase mask, caches -----------------------

def test_training_and_evaluation_times_cover_the_interval_evenly():
    from toolkit.schedule import EPS, antithetic_times
    g = torch.Generator().manual_seed(0)
    for b in (1, 4, 7):
        t = stratified_times(b, g).sort().values
        assert t.min() >= EPS and t.max() < 1
        torch.testing.assert_close(t.diff(), torch.full((b - 1,), (1 - EPS) / b))   # one point per stratum
    t = stratified_times(20000, g)
    assert abs(float(t.mean()) - (1 + EPS) / 2) < 1e-3
    t = antithetic_times(8, g, t_min=0.1, t_max=0.9)
    assert t.min() >= 0.1 and t.max() <= 0.9
    torch.testing.assert_close(t[:4] + t[4:], torch.full((4,), 1.0))   # pairs mirrored about the middle
    t = antithetic_times(20001, g)
    assert len(t) == 20001 and abs(float(t.mean()) - (1 + EPS) / 2) < 1e-2


def test_sequential_mask_follows_its_specification():
    """Every entry of the [z_0 ; x_0] mask against the rule written out: clean z_0 tokens see the
    clean ones not later in rank; a masked z_0 query sees all clean z_0, the x_0 of masked j < i and
    itself; an x_0 token at a masked position sees the clean z_0 and the x_0 of masked j <= i;
    an x_0 token at a clean position sees only itself."""
    from toolkit.families.esolm import sequential_mask
    g = torch.Generator().manual_seed(0)
    n = 7
    clean = torch.rand(2, n, generator=g) < 0.5
    rank = torch.stack([torch.randperm(n, generator=g) for _ in range(2)])
    m = sequential_mask(clean, rank)
    assert m.shape == (2, 2 * n, 2 * n)
    for b in range(2):
        c, r = clean[b].tolist(), rank[b].tolist()
        for q in range(2 * n):
            for k in range(2 * n):
                i, j, q_z, k_z = q % n, k % n, q < n, k < n
                if q_z and c[i]:
                    want = k_z and c[j] and r[j] <= r[i]
                elif q_z:
                    want = (k_z and (c[j] or j == i)) or (not k_z and not c[j] and j < i)
                elif not c[i]:
                    want = (k_z and c[j]) or (not k_z and not c[j] and j <= i)
                else:
                    want = not k_z and j == i
                assert bool(m[b, q, k]) == want, (b, q, k)


@pytest.mark.parametrize("name", ["duo", "mdlm", "esolm"])
def test_elbo_losses_are_the_nelbo_per_token(name):
    """The training loss (elbo) is the NELBO of the same draws divided by all B*L tokens."""
    L = 5
    net = BagNet(L, time=0.3)
    fam = {"duo": lambda: Duo(None, V, MASK, BOS), "mdlm": lambda: MDLM(MaskedOptions(), V, MASK, BOS),
           "esolm": lambda: EsoLM(EsoOptions(alpha_0=0.5), V, MASK, BOS)}[name]()
    x0 = torch.randint(0, 10, (6, L), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.8, 0.95])
    loss = fam.loss(net, x0, t, torch.Generator().manual_seed(1))
    nelbo = fam.nelbo(net, x0, t, torch.Generator().manual_seed(1))
    assert (nelbo >= 0).all() and (nelbo > 0).sum() >= 3
    torch.testing.assert_close(loss, nelbo.sum() / x0.numel())


def test_loss_normaliser_counts_covered_tokens_and_never_divides_by_zero():
    """A fine-tuning batch whose mask covers no token has loss 0 (not 0/0); one token counts once."""
    from toolkit.families.base import covered_tokens
    x0 = torch.zeros(2, 5, dtype=torch.long)
    for covered in (0, 1, 3):
        mask = torch.zeros(2, 5, dtype=torch.bool)
        mask.view(-1)[:covered] = True
        assert float(covered_tokens(x0, mask)) == max(covered, 1)
    assert covered_tokens(x0, None) == 10
