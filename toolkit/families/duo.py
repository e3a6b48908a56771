"""Duo: uniform-state diffusion. No [MASK] state: noise replaces tokens by uniform random ids.

The model predicts x_theta (a distribution over the N ids, time-conditioned, with the [MASK]
id's probability forced to 0 as in the reference); training uses the closed-form
continuous-time NELBO; sampling draws z_s from q(z_s | z_t, x_theta) (docs/methods.md, "Duo").

Sampling follows the reference protocol by default: T posterior steps on the grid
t = 1 ... 1e-5, then a tail at t = 1e-5 (T + 1 network evaluations):
- `tail=greedy`: the arg-max of x_theta (the default);
- `tail=ancestral`: one more posterior step to alpha = 1 (the reference config's noise_removal);
- `tail=none`: no tail (T evaluations);
- `tail=last_step`: the T-th step itself is the arg-max (T evaluations; this toolkit's first protocol).
Top-p trims the posterior q(z_s | z_t, x_theta), uniform-noise mass included (`nucleus=posterior`,
the reference); `nucleus=x_theta` trims x_theta before the posterior instead.
"""
from __future__ import annotations

from typing import Iterator

import torch

from toolkit.errors import UserError
from toolkit.families.base import Family, covered_tokens, masked_tokens_init, register
from toolkit.sampling import Clock, SampleRequest, Step, draw, filter_probs, top_p_filter
from toolkit.schedule import EPS
from toolkit.values import parse_value

SAMPLING_EPS = 1e-5   # the reference's last time: the grid is linspace(1, 1e-5, T + 1)
TAILS = ("greedy", "ancestral", "none", "last_step")
NUCLEUS = ("posterior", "x_theta")


def duo_nelbo_terms(probs, x0, z_t, alpha_t, alpha_prime=-1.0):
    """Per-position continuous-time NELBO integrand [B, L] (UDLM/Duo closed form, docs/methods.md).

    probs: x_theta [B, L, N]; x0, z_t: ids [B, L]; alpha_t: [B]. Non-negative; 0 iff x_theta = x0.
    """
    n = probs.shape[-1]
    a = alpha_t.float()[:, None]                               # [B, 1]
    xbar_theta = n * a[..., None] * probs.float() + (1 - a[..., None])   # [B, L, N]
    log_xbt = xbar_theta.log()
    hit = (z_t == x0).float()                                  # is z_t's id the clean one?
    xbar_i = n * a * hit + (1 - a)                             # xbar at z_t's id
    xbt_i = xbar_theta.gather(-1, z_t[..., None]).squeeze(-1)
    log_xbt_i = log_xbt.gather(-1, z_t[..., None]).squeeze(-1)
    log_xbt_y = log_xbt.gather(-1, x0[..., None]).squeeze(-1)
    top = n * a + 1 - a
    xlogx = (n - 1) * (1 - a) * torch.log1p(-a) + top * top.log()   # sum_j xbar_j log xbar_j
    xlog_theta = (1 - a) * log_xbt.sum(-1) + n * a * log_xbt_y      # sum_j xbar_j log xbar_theta_j
    # sum over j != i of (xbar_j / xbar_i) log(xbar_theta_i xbar_j / (xbar_theta_j xbar_i))
    cross = (n * (log_xbt_i - xbar_i.log()) + xlogx - xlog_theta) / xbar_i
    bracket = n / xbar_i - n / xbt_i - cross
    return alpha_prime / (n * a) * bracket


def duo_posterior(probs, z_t, alpha_t, alpha_s):
    """q(z_s | z_t, x) for one-hot z_t and clean distribution `probs` [B, L, N] (docs/methods.md)."""
    n = probs.shape[-1]
    x_z = probs.gather(-1, z_t[..., None])                      # <z_t, x>
    ratio = alpha_t / alpha_s
    q = (alpha_s - alpha_t) * probs + (1 - ratio) * (1 - alpha_s) / n
    q = q.scatter_add(-1, z_t[..., None], n * alpha_t * x_z + (ratio - alpha_t))
    return q / (n * alpha_t * x_z + 1 - alpha_t)


@register
class Duo(Family):
    name = "duo"
    reference_names = r"\bduo(?:\b|_)|\budlm\b"   # how the reference and its releases name it (DUO_BASE too)
    time_conditioned = True
    sampling_options = {
        "tail": ("greedy", "after the T steps at t=1e-5: greedy (arg-max of x_theta, +1 NFE), ancestral "
                           "(posterior to alpha=1, +1 NFE), none, or last_step (the T-th step is the arg-max)"),
        "nucleus": ("posterior", "what top-p trims: posterior (the reference) or x_theta"),
    }

    def corrupt(self, x0, t, generator=None, loss_mask=None):
        """With probability 1 - alpha_t a token is replaced by a uniform random id (only where loss_mask)."""
        u = torch.rand(x0.shape, generator=generator, device=x0.device)
        noise = torch.randint(0, self.vocab_size, x0.shape, generator=generator, device=x0.device)
        noised = u < (1 - self.schedule.alpha(t))[:, None]
        if loss_mask is not None:
            noised &= loss_mask
        return torch.where(noised, noise, x0)

    def forward_sample(self, x0, t, generator=None):
        return self.corrupt(x0, t, generator)

    def x_theta(self, net, z_t, t):
        return self.without_mask(net(z_t, self.schedule.sigma(t))).softmax(-1)

    def nelbo(self, net, x0, t, generator=None, loss_mask=None):
        t = t.clamp(max=1 - EPS)  # alpha_t -> 0 divides by zero; the integrand vanishes there
        z_t = self.corrupt(x0, t, generator, loss_mask)
        terms = duo_nelbo_terms(self.x_theta(net, z_t, t), x0, z_t, self.schedule.alpha(t))
        return (terms if loss_mask is None else terms * loss_mask).sum(1)   # a clean prompt is not scored

    def loss(self, net, x0, t, generator=None, loss_mask=None):
        return self.nelbo(net, x0, t, generator, loss_mask).sum() / covered_tokens(x0, loss_mask)

    def check_sampling_options(self, options: dict) -> dict:
        options = dict(options)
        if "greedy_tail" in options:   # the first protocol's switch: true -> greedy tail, false -> none
            greedy = options.pop("greedy_tail")
            greedy = parse_value(greedy, bool, "greedy_tail") if isinstance(greedy, str) else bool(greedy)
            options.setdefault("tail", "greedy" if greedy else "none")
        merged = super().check_sampling_options(options)
        for key, allowed in (("tail", TAILS), ("nucleus", NUCLEUS)):
            if merged[key] not in allowed:
                raise UserError(f"duo sampling option {key} must be one of {', '.join(allowed)} (got '{merged[key]}')")
        return merged

    def sample(self, net, request: SampleRequest, device="cpu") -> Iterator[Step]:
        opts = self.check_sampling_options(request.options)
        gen = torch.Generator(device="cpu").manual_seed(request.seed)
        z, fixed = masked_tokens_init(request, 0, device)
        noise = torch.randint(0, self.vocab_size, z.shape, generator=gen).to(device)
        z = torch.where(fixed, z, noise)
        grid, clock = torch.linspace(1.0, SAMPLING_EPS, request.steps + 1), Clock()
        # (t, alpha_s or None for an arg-max) of every network evaluation
        plan = [(grid[k], self.schedule.alpha(grid[k + 1])) for k in range(request.steps)]
        if opts["tail"] == "last_step":
            plan[-1] = (plan[-1][0], None)
        elif opts["tail"] == "greedy":
            plan.append((grid[-1], None))
        elif opts["tail"] == "ancestral":
            plan.append((grid[-1], torch.tensor(1.0)))
        nucleus_on_posterior = opts["nucleus"] == "posterior"
        for k, (t, alpha_s) in enumerate(plan):
            u = torch.rand(z.shape, generator=gen).to(device)
            logits = self.without_mask(net(z, self.schedule.sigma(t.expand(z.shape[0])).to(device)))
            probs = filter_probs(logits, request.temperature, 1.0 if nucleus_on_posterior else request.top_p)
            if alpha_s is None:
                new = probs.argmax(-1)
            else:
                q = duo_posterior(probs, z, self.schedule.alpha(t).item(), float(alpha_s))
                new = draw(top_p_filter(q, request.top_p) if nucleus_on_posterior else q, u)
            new = torch.where(fixed, z, new)
            changed = new != z
            z = new
            confidence = torch.where(fixed, 1.0, probs.gather(-1, z[..., None]).squeeze(-1))
            s_next = float(grid[k + 1]) if k < request.steps else 0.0
            yield Step(step=k + 1, t=float(t), s=s_next, tokens=z.clone(), changed=changed,
                       confidence=confidence, nfe=k + 1, elapsed=clock())
