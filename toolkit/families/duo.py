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

Two training accelerators of the Duo paper (docs/methods.md, "Duo's accelerators"), both options:
- `curriculum=true`: until step `curriculum_end` the loss feeds the backbone a tempered softmax of
  a Gaussian latent (the duality, toolkit/families/duality.py) instead of discrete tokens;
- `distill=true` (with `init=` a trained Duo checkpoint): discrete consistency distillation; the
  student matches a frozen teacher one step ahead on the same deterministic Gaussian trajectory,
  the gap doubling and the teacher refreshed every `teacher_every` steps. The result is an
  ordinary Duo checkpoint.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator

import torch

from toolkit.errors import UserError
from toolkit.decoding import seeded_start
from toolkit.families.base import Family, covered_tokens, register
from toolkit.families.duality import MODES, dual_time, gaussian_latent, gaussian_noise
from toolkit.sample_request import Clock, SampleRequest, Step, draw, filter_probs, top_p_filter
from toolkit.schedule import EPS
from toolkit.options import coerce, option

SAMPLING_EPS = 1e-5   # the reference's last time: the grid is linspace(1, 1e-5, T + 1)
TAILS = ("greedy", "ancestral", "none", "last_step")
NUCLEUS = ("posterior", "x_theta")
DISTILL_LOSSES = ("kl-bwd", "kl-fwd")


@dataclass
class DuoOptions:
    """Training options only: sampling a Duo checkpoint never reads them. The defaults are the Duo
    repository's (configs/algo/duo.yaml `curriculum`, configs/algo/distillation.yaml)."""
    curriculum: bool = option(False, "Gaussian-relaxation curriculum for steps 0 .. curriculum_end")
    curriculum_start: int = option(100_000, "the temperature anneals from here ...")
    curriculum_end: int = option(200_000, "... to here; afterwards the ordinary discrete loss")
    tau_log10_start: float = option(-1.0, "log10 of the softmax temperature before curriculum_start")
    tau_log10_end: float = option(-2.0, "... and reached at curriculum_end")
    gamma_min: float = option(-3.5, "the Gaussian's log-SNR range: gamma_t = min + t (max - min)")
    gamma_max: float = option(-1.75)
    dual_integral: str = option("simple", "how the dual time is computed: a quadrature table or a series", MODES)
    series_terms: int = option(150)
    distill: bool = option(False, "discrete consistency distillation (start with init=CHECKPOINT)")
    distill_steps: int = option(64, "T: the first round's gap is dt = 1/T, doubling every round")
    teacher_every: int = option(10_000, "round length: the teacher <- student and dt doubles")
    teacher_ema: float = option(0.0, "0: each round's teacher is the student (the repo's default); else the "
                                     "student's EMA with this decay (the repo's teacher_ema=True, e.g. 0.999)")
    distill_gamma_min: float = option(-4.0)
    distill_gamma_max: float = option(-1.0)
    distill_loss: str = option("kl-bwd", "KL(student || teacher) (the repo's default) or the forward KL",
                               DISTILL_LOSSES)

    def validate(self) -> None:
        if not 0 <= self.curriculum_start <= self.curriculum_end:
            raise UserError(f"need 0 <= curriculum_start <= curriculum_end (got {self.curriculum_start},"
                            f" {self.curriculum_end})")
        for lo, hi, what in ((self.gamma_min, self.gamma_max, "gamma"),
                             (self.distill_gamma_min, self.distill_gamma_max, "distill_gamma")):
            if not -6 <= lo < hi <= 0.5:
                raise UserError(f"{what}_min < {what}_max must lie in [-6, 0.5] (got {lo}, {hi})")
        if self.dual_integral == "series" and self.gamma_min < -4:
            raise UserError("dual_integral=series is accurate for gamma >= -4: use simple for a lower gamma_min")
        if not 0 <= self.teacher_ema < 1:
            raise UserError(f"teacher_ema is a decay in [0, 1) (got {self.teacher_ema})")
        if self.distill_steps < 1 or self.teacher_every < 1:
            raise UserError("distill_steps and teacher_every must be >= 1")
        if self.curriculum and self.distill:
            raise UserError("curriculum and distill are separate stages: pick one")


@dataclass
class DuoSampling:
    tail: str = option("greedy", "after the T steps at t=1e-5: greedy (arg-max of x_theta, +1 NFE), ancestral "
                                 "(posterior to alpha=1, +1 NFE), none, or last_step (the T-th step is the arg-max)",
                       TAILS)
    nucleus: str = option("posterior", "what top-p trims: the posterior (the reference) or x_theta", NUCLEUS)


def tempered_softmax_inverse(o: DuoOptions, step: int) -> float:
    """1 / tau at a training step: 10^-tau_log10_start, annealed log-linearly to the end value."""
    if step < o.curriculum_start:
        log_tau = o.tau_log10_start
    else:
        frac = (step - o.curriculum_start) / max(1, o.curriculum_end - o.curriculum_start)
        log_tau = o.tau_log10_start + min(frac, 1.0) * (o.tau_log10_end - o.tau_log10_start)
    return 10.0 ** (-log_tau)


def distill_gap(o: DuoOptions, step: int) -> float:
    """dt of the round holding `step`: 2^round / T (capped at 1: one step over the whole range)."""
    return min(2.0 ** (step // o.teacher_every) / o.distill_steps, 1.0)


def kl_rows(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """sum_v p (log p - log q) per position (finite log-probs: a zero p adds exactly 0)."""
    return (logp.exp() * (logp - logq)).sum(-1)


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
    Options = DuoOptions
    reference_names = r"\bduo(?:\b|_)|\budlm\b"   # how the reference and its releases name it (DUO_BASE too)
    SamplingOptions = DuoSampling

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
        o = self.options
        if (o.distill or (o.curriculum and self.step <= o.curriculum_end)) and loss_mask is not None:
            raise UserError("the duo curriculum and distillation train on whole sequences (no loss mask)")
        if o.distill:
            return self.distill_loss(net, x0, t, generator)
        if o.curriculum and self.step <= o.curriculum_end:
            return self.relaxed_loss(net, x0, t, generator)
        return self.nelbo(net, x0, t, generator, loss_mask).sum() / covered_tokens(x0, loss_mask)

    # -- the accelerators ------------------------------------------------------------------
    step = 0               # the optimizer step being taken (begin_train_step)
    teacher = None         # distillation's frozen copy of the network
    ema = None             # the student's EMA weights (teacher_ema > 0): the teacher at each refresh

    def dual(self):
        return dual_time(self.vocab_size, self.options.dual_integral, self.options.series_terms)

    def begin_train_step(self, step: int, net) -> None:
        """Remember the step (the curriculum's clock); distillation refreshes its teacher at each
        round's first step (the repo's `_maybe_update_teacher_weights`)."""
        self.step = step
        o = self.options
        if o.distill and o.teacher_ema > 0:   # the EMA of the student's weights after the last step
            weights = net.state_dict()
            if self.ema is None:
                self.ema = {k: v.detach().clone() for k, v in weights.items()}
            for k, v in weights.items():
                self.ema[k].lerp_(v.detach(), 1 - o.teacher_ema) if v.is_floating_point() else self.ema[k].copy_(v)
        if o.distill and (self.teacher is None or step % o.teacher_every == 0):
            if any(hasattr(p, "full_tensor") for p in net.parameters()):
                raise UserError("duo distillation runs on one process or under DDP, not FSDP")
            if self.teacher is None:
                self.teacher = copy.deepcopy(net).eval().requires_grad_(False)
            self.teacher.load_state_dict(self.ema if o.teacher_ema > 0 else net.state_dict())

    def train_state(self) -> dict:
        state = {} if self.teacher is None else {"teacher": self.teacher.state_dict()}
        return state if self.ema is None else {**state, "teacher_ema": self.ema}

    def load_train_state(self, state: dict, net) -> None:
        if self.options.distill and "teacher" in state:
            self.teacher = copy.deepcopy(net).eval().requires_grad_(False)
            self.teacher.load_state_dict(state["teacher"])
        if self.options.distill and "teacher_ema" in state:
            self.ema = {k: v.clone() for k, v in state["teacher_ema"].items()}

    def relaxed_loss(self, net, x0, t, generator=None):
        """The curriculum's loss: the Duo NELBO at the dual time, the backbone fed the tempered
        softmax of the Gaussian latent (the repo's `DUO.nll`, mode simple/series)."""
        o = self.options
        gamma = o.gamma_min + t.double() * (o.gamma_max - o.gamma_min)
        alpha, dalpha_dgamma = self.dual().alpha_dalpha(gamma)
        w = gaussian_latent(x0, gamma, self.vocab_size, gaussian_noise(x0, self.vocab_size, generator))
        z_t = w.argmax(-1)
        soft = (w * tempered_softmax_inverse(o, self.step)).softmax(-1)
        sigma = -torch.log(alpha.clamp(min=EPS)).float()
        probs = self.without_mask(net(None, sigma, soft=soft)).softmax(-1)
        dalpha_dt = (dalpha_dgamma * (o.gamma_max - o.gamma_min)).float()[:, None]
        terms = duo_nelbo_terms(probs, x0, z_t, alpha.float(), dalpha_dt)
        return terms.sum() / x0.numel()

    def trajectory(self, x0, t, s, generator=None):
        """z_t and z_s on one deterministic Gaussian path (shared noise), and their dual alphas."""
        o, n = self.options, self.vocab_size
        span = o.distill_gamma_max - o.distill_gamma_min
        gamma_t, gamma_s = o.distill_gamma_min + t.double() * span, o.distill_gamma_min + s.double() * span
        eps = gaussian_noise(x0, n, generator)
        z_t = gaussian_latent(x0, gamma_t, n, eps).argmax(-1)
        z_s = gaussian_latent(x0, gamma_s, n, eps).argmax(-1)
        dual = dual_time(n, "simple")   # the repo's distillation reads the quadrature cache
        return z_t, z_s, dual.alpha(gamma_t).float(), dual.alpha(gamma_s).float()

    def log_probs(self, net, z, alpha):
        """log x_theta with a finite floor at [MASK] (so a KL's 0 * log 0 stays 0 in the gradient)."""
        logits = net(z, -torch.log(alpha.clamp(min=EPS))).float()
        logits[..., self.mask_id] = -1e4
        return logits.log_softmax(-1)

    def distill_loss(self, net, x0, t, generator=None):
        """DCD (the repo's `Distillation.nll`): student at (z_t, t), teacher at (z_s, s = t - dt)."""
        if self.teacher is None:
            raise UserError("duo distillation needs begin_train_step before its loss (the trainer calls it)")
        dt = distill_gap(self.options, self.step)
        t = (t + dt).clamp(max=1.0)
        s = (t - dt).clamp(min=0.0)
        z_t, z_s, alpha_t, alpha_s = self.trajectory(x0, t, s, generator)
        student = self.log_probs(net, z_t, alpha_t)
        with torch.no_grad():
            teacher = self.log_probs(self.teacher, z_s, alpha_s)
        kl = kl_rows(student, teacher) if self.options.distill_loss == "kl-bwd" else kl_rows(teacher, student)
        return kl.sum() / x0.numel()

    def sampling_settings(self, options: dict) -> DuoSampling:
        options = dict(options)
        if "greedy_tail" in options:   # the first protocol's switch: true -> greedy tail, false -> none
            greedy = bool(coerce(options.pop("greedy_tail"), bool, "greedy_tail"))
            options.setdefault("tail", "greedy" if greedy else "none")
        return super().sampling_settings(options)

    def sample(self, net, request: SampleRequest, device="cpu") -> Iterator[Step]:
        opts = self.sampling_settings(request.options)
        gen, z, fixed = seeded_start(request, 0, device)
        noise = torch.randint(0, self.vocab_size, z.shape, generator=gen).to(device)
        z = torch.where(fixed, z, noise)
        grid, clock = torch.linspace(1.0, SAMPLING_EPS, request.steps + 1), Clock()
        # (t, alpha_s or None for an arg-max) of every network evaluation
        plan = [(grid[k], self.schedule.alpha(grid[k + 1])) for k in range(request.steps)]
        if opts.tail == "last_step":
            plan[-1] = (plan[-1][0], None)
        elif opts.tail == "greedy":
            plan.append((grid[-1], None))
        elif opts.tail == "ancestral":
            plan.append((grid[-1], torch.tensor(1.0)))
        nucleus_on_posterior = opts.nucleus == "posterior"
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
