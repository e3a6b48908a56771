"""Noise schedule and training-time sampling of t (docs/methods.md, "Shared pieces")."""
from __future__ import annotations

import torch

EPS = 1e-3


class LogLinear:
    """alpha_t = alpha_0 * (1 - t): the probability a token is still clean at time t.

    alpha_0 = 1 is MDLM/Duo's schedule; Eso-LM uses alpha_0 <= 1 so that a fraction
    1 - alpha_0 of tokens is left for its sequential (left-to-right) phase.
    """

    def __init__(self, alpha_0: float):
        self.alpha_0 = alpha_0

    def alpha(self, t):
        return self.alpha_0 * (1 - t)

    def alpha_prime(self, t):
        return torch.full_like(t, -self.alpha_0) if torch.is_tensor(t) else -self.alpha_0

    def sigma(self, t):
        """Noise level -log alpha_t fed to time-conditioned backbones (clamped at alpha=EPS)."""
        return -torch.log(torch.clamp(self.alpha(t), min=EPS))

    def reveal_probability(self, t, s):
        """P(a token masked at t is clean at s < t) = (alpha_s - alpha_t) / (1 - alpha_t)."""
        return (self.alpha(s) - self.alpha(t)) / (1 - self.alpha(t))


def stratified_times(batch: int, generator=None, device="cpu", t_min: float = EPS, t_max: float = 1.0):
    """t_i = t_min + (t_max - t_min) * ((U + i) / B mod 1): one shared U, evenly spread t."""
    u = torch.rand((), generator=generator, device=device)
    strata = (u + torch.arange(batch, device=device) / batch) % 1.0
    return t_min + (t_max - t_min) * strata


def antithetic_times(batch: int, generator=None, device="cpu", t_min: float = EPS, t_max: float = 1.0):
    """Pairs (t, 1 - t)-style antithetic draws in [t_min, t_max] for evaluation."""
    half = (batch + 1) // 2
    u = torch.rand(half, generator=generator, device=device)
    u = torch.cat([u, 1 - u])[:batch]
    return t_min + (t_max - t_min) * u
