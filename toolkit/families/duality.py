"""The diffusion duality: a Gaussian diffusion on one-hot vectors, read through arg-max, is Duo's
uniform-state process (docs/methods.md, "Duo's accelerators").

A Gaussian latent w_t = a_t x + s_t eps (a_t^2 = sigmoid(-gamma_t), s_t^2 = sigmoid(gamma_t),
gamma linear in t) has arg-max equal to the clean id with probability
    T(mu) = int phi(z - mu) Phi(z)^(N-1) dz,   mu = a_t / s_t = exp(-gamma_t / 2),
so arg-max(w_t) ~ q(z | x) of the uniform-state process at the "dual" signal level
    alpha(gamma) = (N T - 1) / (N - 1).
Two ways to evaluate T and its time derivative (the Duo repository's curriculum modes):
`simple` tabulates T by quadrature and differentiates by a finite difference; `series` expands
phi(z - mu) = phi(z) exp(z mu - mu^2 / 2) in powers of mu (analytic derivative; accurate for
mu <~ 8, i.e. gamma >~ -4, with 150 terms).
"""
from __future__ import annotations

import functools
import math

import torch

MODES = ("simple", "series")
_Z = torch.linspace(-10.0, 30.0, 12_001, dtype=torch.float64)   # quadrature grid for z ~ N(mu, 1)
_TABLE_RANGE = (-6.0, 0.5)                                       # gamma range of the `simple` table
_TABLE_POINTS = 3_251                                            # 2e-3 apart (interpolated)
_FD = 1e-3                                                       # the finite-difference step in gamma


def gaussian_scales(gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a_t, s_t): the Gaussian latent's signal and noise scales (variance preserving)."""
    return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


def argmax_probability(gamma: torch.Tensor, n: int) -> torch.Tensor:
    """T(gamma) = P(arg-max of a_t e_x + s_t eps is x) by trapezoidal quadrature (float64)."""
    mu = torch.exp(-gamma.double() / 2)[..., None]
    log_cdf = (n - 1) * torch.special.log_ndtr(_Z)
    dens = torch.exp(-0.5 * (_Z - mu) ** 2 + log_cdf) / math.sqrt(2 * math.pi)
    return torch.trapezoid(dens, _Z, dim=-1)


@functools.lru_cache(maxsize=8)
def dual_time(n: int, mode: str, series_terms: int = 150) -> "DualTime":
    """One DualTime per (vocabulary, mode): the table or the coefficients take ~1 s to build."""
    return DualTime(n, mode, series_terms)


class DualTime:
    """gamma -> (alpha, d alpha / d gamma) of the uniform-state process the Gaussian maps to."""

    def __init__(self, n: int, mode: str = "simple", series_terms: int = 150):
        self.n, self.mode = n, mode
        if mode == "simple":
            self.grid = torch.linspace(*_TABLE_RANGE, _TABLE_POINTS, dtype=torch.float64)
            self.table = torch.cat([argmax_probability(g, n) for g in self.grid.split(250)])
        elif mode == "series":
            self.m, self.i = series_coefficients(n, series_terms)
        else:
            raise ValueError(mode)

    def _t_table(self, gamma: torch.Tensor) -> torch.Tensor:
        lo, hi = _TABLE_RANGE
        self.table = self.table.to(gamma.device)   # moved once: no host round trip per step
        pos = ((gamma.double() - lo) / (hi - lo) * (_TABLE_POINTS - 1)).clamp(0, _TABLE_POINTS - 1)
        k = pos.floor().long().clamp(max=_TABLE_POINTS - 2)
        frac = pos - k
        return self.table[k] * (1 - frac) + self.table[k + 1] * frac   # linear interpolation

    def alpha(self, gamma: torch.Tensor) -> torch.Tensor:
        return self.alpha_dalpha(gamma)[0]

    def alpha_dalpha(self, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha(gamma) and d alpha / d gamma, float64 on gamma's device."""
        scale = self.n / (self.n - 1)
        if self.mode == "simple":
            t0 = self._t_table(gamma)
            dt = (self._t_table(gamma + _FD) - t0) / _FD
            out = ((t0 - 1 / self.n) * scale, dt * scale)
        else:
            self.m, self.i = self.m.to(gamma.device), self.i.to(gamma.device)
            mu = torch.exp(-gamma.double() / 2)[..., None]
            powers = mu ** torch.arange(self.m.shape[-1], dtype=torch.float64, device=gamma.device)
            damp = torch.exp(-mu[..., 0] ** 2 / 2)
            t0 = damp * (powers * self.m).sum(-1)
            dt_dmu = damp * (powers * (self.i - mu * self.m)).sum(-1)
            out = ((t0 - 1 / self.n) * scale, dt_dmu * (-mu[..., 0] / 2) * scale)   # d mu / d gamma = -mu/2
        return out


def series_coefficients(n: int, terms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """m_k = int z^k phi(z) Phi(z)^(N-1) dz / k!,  i_k = int z^(k+1) phi(z) Phi(z)^(N-1) dz / k!."""
    weight = torch.exp(-0.5 * _Z ** 2 + (n - 1) * torch.special.log_ndtr(_Z)) / math.sqrt(2 * math.pi)
    k = torch.arange(terms, dtype=torch.float64)[:, None]
    log_fact = torch.lgamma(k + 1)
    zk = _Z ** k                                                   # [terms, points]; |z| <= 30: no overflow
    m = torch.trapezoid(zk * weight, _Z, dim=-1) / log_fact[:, 0].exp()
    i = torch.trapezoid(zk * _Z * weight, _Z, dim=-1) / log_fact[:, 0].exp()
    return m, i


def gaussian_latent(x0: torch.Tensor, gamma: torch.Tensor, n: int, eps: torch.Tensor) -> torch.Tensor:
    """w = a_t onehot(x0) + s_t eps: [B, L, N] (gamma [B], eps [B, L, N])."""
    a, s = gaussian_scales(gamma.float()[:, None, None])
    return s * eps + a * torch.nn.functional.one_hot(x0, n).to(eps.dtype)


def gaussian_noise(x0: torch.Tensor, n: int, generator=None) -> torch.Tensor:
    return torch.randn((*x0.shape, n), generator=generator, device=x0.device)
