"""Scaling-law fits of an iso-FLOP results table, with bootstrap confidence intervals.

Approach 2 (Chinchilla): per budget C a parabola of validation loss in ln N; its vertex gives
N*(C) and L*(C), and D*(C) = C / (6 N*). Power laws N* ~ C^a, D* ~ C^b, L* ~ C^c are then
straight lines in log-log space. Intervals come from a residual bootstrap: an iso-FLOP sweep
has only a handful of sizes per budget, so resampling runs would often leave fewer than three
distinct sizes; resampling residuals (pooled over budgets, inflated for the fitted degrees of
freedom) around the fitted parabolas keeps the design fixed.

Approach 3: L(N, D) = E + A / N^alpha + B / D^beta fitted in log space with a Huber loss from
a grid of starting points (robust to a few bad runs); intervals from resampling runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from toolkit.errors import UserError

LEVEL = 0.95
EXPONENT_MAX = 3.0         # approach 3 searches alpha, beta in [0, EXPONENT_MAX]
MAX_EXTRAPOLATION = 5.0    # a vertex more than e^5 (~150x) beyond the trained sizes counts as no minimum


# -- approach 2 ------------------------------------------------------------------------------
@dataclass
class Valley:
    budget: float
    coef: tuple[float, float, float]     # loss = c2 x^2 + c1 x + c0 with x = ln N
    n_star: float                        # nan: parabola opens downward or vertex far outside the sizes
    loss_star: float
    d_star: float
    in_range: bool                       # the vertex lies within the sizes that were trained
    n_points: int


def fit_valley(params, losses, budget: float) -> Valley:
    """Parabola of loss in ln N through one budget's runs (needs >= 3 distinct sizes)."""
    x = np.log(np.asarray(params, dtype=float))
    y = np.asarray(losses, dtype=float)
    if len(np.unique(x)) < 3:
        raise UserError(f"budget {budget:.3g} has {len(np.unique(x))} distinct sizes; a parabola needs 3")
    c2, c1, c0 = np.polyfit(x, y, 2)
    xs = -c1 / (2 * c2) if c2 > 0 else math.nan
    if not (x.min() - MAX_EXTRAPOLATION <= xs <= x.max() + MAX_EXTRAPOLATION):   # also catches nan
        return Valley(budget, (c2, c1, c0), math.nan, math.nan, math.nan, False, len(x))
    n_star = math.exp(xs)
    return Valley(budget, (c2, c1, c0), n_star, c0 - c1 * c1 / (4 * c2), budget / (6 * n_star),
                  bool(x.min() <= xs <= x.max()), len(x))


def power_law(x, y) -> tuple[float, float]:
    """(exponent, prefactor) of y = k x^a by least squares in log-log space."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    a, logk = np.polyfit(lx, ly, 1)
    return float(a), float(math.exp(min(logk, 700.0)))


def _exponents(valleys: list[Valley]) -> dict[str, float]:
    ok = [v for v in valleys if math.isfinite(v.n_star)]
    if len(ok) < 2:
        return {"a_N": math.nan, "a_D": math.nan, "a_L": math.nan}
    c = [v.budget for v in ok]
    return {"a_N": power_law(c, [v.n_star for v in ok])[0],
            "a_D": power_law(c, [v.d_star for v in ok])[0],
            "a_L": power_law(c, [v.loss_star for v in ok])[0] if all(v.loss_star > 0 for v in ok) else math.nan}


@dataclass
class IsoFlopFit:
    valleys: list[Valley]
    exponents: dict[str, float]                                   # a_N, a_D, a_L
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    prefactors: dict[str, float] = field(default_factory=dict)
    n_boot: int = 0

    def predict(self, what: str, budget: float) -> float:
        """Power-law prediction of N*, D* or L* ('N', 'D', 'L') at a budget."""
        return self.prefactors[what] * budget ** self.exponents[f"a_{what}"]


def fit_isoflop(params, budgets, losses, n_boot: int = 500, seed: int = 0, level: float = LEVEL) -> IsoFlopFit:
    """Approach 2 over every budget, with residual-bootstrap percentile intervals for a_N, a_D, a_L."""
    params, budgets, losses = (np.asarray(a, dtype=float) for a in (params, budgets, losses))
    if len(losses) == 0:
        raise UserError("no runs to fit (empty results table)")
    groups = [np.flatnonzero(budgets == c) for c in np.unique(budgets)]
    groups = [g for g in groups if len(np.unique(params[g])) >= 3]
    if not groups:
        raise UserError("no budget has runs at 3 or more sizes: approach 2 cannot fit a parabola")
    valleys = [fit_valley(params[g], losses[g], budgets[g[0]]) for g in groups]
    fit = IsoFlopFit(valleys, _exponents(valleys))
    ok = [v for v in valleys if math.isfinite(v.n_star)]
    if len(ok) >= 2:
        c = [v.budget for v in ok]
        fit.prefactors = {"N": power_law(c, [v.n_star for v in ok])[1], "D": power_law(c, [v.d_star for v in ok])[1]}
        if all(v.loss_star > 0 for v in ok):
            fit.prefactors["L"] = power_law(c, [v.loss_star for v in ok])[1]
    fitted = np.empty_like(losses)
    for g, v in zip(groups, valleys):
        fitted[g] = np.polyval(v.coef, np.log(params[g]))
    idx = np.concatenate(groups)
    resid = (losses - fitted)[idx]
    dof = len(idx) - 3 * len(groups)
    if n_boot <= 0 or dof <= 0 or len(ok) < 2:
        return fit   # no residual degrees of freedom: no intervals
    resid = resid * math.sqrt(len(idx) / dof)
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in fit.exponents}
    for _ in range(n_boot):
        y = fitted.copy()
        y[idx] += rng.choice(resid, size=len(idx), replace=True)
        vs = [fit_valley(params[g], y[g], budgets[g[0]]) for g in groups]
        for k, val in _exponents(vs).items():
            if math.isfinite(val):
                draws[k].append(val)
    fit.n_boot = n_boot
    fit.intervals = {k: _percentile(d, level) for k, d in draws.items() if len(d) >= max(10, n_boot // 2)}
    return fit


def _percentile(draws, level: float) -> tuple[float, float]:
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


# -- approach 3 ------------------------------------------------------------------------------
@dataclass
class ParametricFit:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    loss: float
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def a_N(self) -> float:
        """Implied N* ~ C^a_N with a_N = beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    def predict(self, n, d):
        return self.E + self.A / np.asarray(n, float) ** self.alpha + self.B / np.asarray(d, float) ** self.beta

    @property
    def identified(self) -> bool:
        """Whether the data pin down both exponents: neither bootstrap interval reaches a bound of
        the search (0 or EXPONENT_MAX) or collapses to a point (narrower than 1e-3: the optimiser did
        not move, i.e. the loss is flat in that exponent). When either fails, a_N = beta / (alpha + beta) means
        nothing. Needs the bootstrap intervals."""
        for k in ("alpha", "beta"):
            if k not in self.intervals:
                return False
            lo, hi = self.intervals[k]
            if lo <= 1e-3 or hi >= EXPONENT_MAX - 1e-3 or hi - lo < 1e-3:
                return False
        return True

    def as_dict(self) -> dict[str, float]:
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta, "a_N": self.a_N}


def _residuals(theta, ln_n, ln_d, ln_l):
    """ln of the model's loss minus ln of the observed one, and its Jacobian."""
    a, b, e, alpha, beta = theta
    u = np.stack([a - alpha * ln_n, b - beta * ln_d, np.full_like(ln_n, e)])
    m = u.max(axis=0)
    w = np.exp(u - m)
    s = w.sum(axis=0)
    p = w / s
    jac = np.stack([p[0], p[1], p[2], -p[0] * ln_n, -p[1] * ln_d], axis=1)
    return m + np.log(s) - ln_l, jac


def _minimize(starts, ln_n, ln_d, ln_l, delta):
    """Robust (Huber, scale delta) least squares in log space from each start; the best result."""
    from scipy.optimize import least_squares   # deferred: scipy is slow to import; only approach 3 needs it
    best = None
    lower, upper = [-np.inf] * 3 + [0.0, 0.0], [np.inf] * 3 + [EXPONENT_MAX, EXPONENT_MAX]
    for x0 in starts:
        x0 = np.clip(np.asarray(x0, float), np.array(lower) + 1e-9, np.array(upper) - 1e-9)
        r = least_squares(lambda th: _residuals(th, ln_n, ln_d, ln_l)[0], x0,
                          jac=lambda th: _residuals(th, ln_n, ln_d, ln_l)[1],
                          bounds=(lower, upper), loss="huber", f_scale=delta, x_scale="jac", max_nfev=2000)
        if best is None or r.cost < best.cost:
            best = r
    return best


def _starts(n, d, y, keep: int = 3) -> list[tuple]:
    """Starting points: on a grid of (alpha, beta), E, A, B >= 0 by relative least squares (linear in them)."""
    from scipy.optimize import nnls   # deferred: see above
    scored = []
    for alpha in np.linspace(0.05, 1.5, 16):
        for beta in np.linspace(0.05, 1.5, 16):
            X = np.stack([np.ones_like(n), n ** -alpha, d ** -beta], axis=1) / y[:, None]
            coef, rnorm = nnls(X, np.ones_like(y))
            scored.append((rnorm, alpha, beta, coef))
    scored.sort(key=lambda s: s[0])
    tiny = 1e-12
    return [(math.log(max(c[1], tiny)), math.log(max(c[2], tiny)), math.log(max(c[0], tiny)), al, be)
            for _, al, be, c in scored[:keep]]


def fit_parametric(params, tokens, losses, delta: float = 1e-3, n_boot: int = 200, seed: int = 0,
                   level: float = LEVEL) -> ParametricFit:
    """Approach 3: Huber fit of ln L against LSE(ln A - alpha ln N, ln B - beta ln D, ln E).

    Starts from the best points of an (alpha, beta) grid on which E, A, B are solved exactly.
    """
    n, d, y = (np.asarray(a, dtype=float) for a in (params, tokens, losses))
    if len(y) == 0:
        raise UserError("no runs to fit (empty results table)")
    if len(y) < 6:
        raise UserError(f"approach 3 fits 5 parameters and needs at least 6 runs (got {len(y)})")
    if (y <= 0).any() or (n <= 0).any() or (d <= 0).any():
        raise UserError("approach 3 needs positive losses, parameter counts and token counts")
    ln_n, ln_d, ln_l = np.log(n), np.log(d), np.log(y)
    best = _minimize(_starts(n, d, y), ln_n, ln_d, ln_l, delta)
    a, b, e, alpha, beta = best.x
    fit = ParametricFit(math.exp(e), math.exp(a), math.exp(b), float(alpha), float(beta), float(best.cost))
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        draws = {k: [] for k in ("E", "alpha", "beta", "a_N")}
        for _ in range(n_boot):
            i = rng.integers(0, len(y), len(y))
            r = _minimize([best.x], ln_n[i], ln_d[i], ln_l[i], delta)
            al, be = r.x[3], r.x[4]
            draws["E"].append(math.exp(r.x[2]))
            draws["alpha"].append(al)
            draws["beta"].append(be)
            draws["a_N"].append(be / (al + be) if al + be > 0 else math.nan)
        fit.intervals = {k: _percentile([x for x in v if math.isfinite(x)], level) for k, v in draws.items()}
    return fit
