"""Iso-FLOP planning: (family variant, size, budget) -> one ordinary training run.

A family variant is written `family[:key=value[:key=value...]]`, e.g. `mdlm:loss=low_var` or
`esolm:alpha_0=0.5`; its options are family options passed to `training.train` as overrides, and
they are checked against the family's own option dataclass here, before anything runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from toolkit.errors import UserError
from toolkit.families import REGISTRY, get_family
from toolkit.scaling.flops import require_steps
from toolkit.scaling.grid import param_counts, size
from toolkit.options import build, parse_pair


@dataclass(frozen=True)
class Variant:
    family: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """Filesystem-safe name: `mdlm`, `mdlm_loss-low_var`."""
        return "_".join([self.family] + [f"{k}-{v}" for k, v in self.options])

    @property
    def options_text(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.options)

    def overrides(self) -> list[str]:
        return [f"family={self.family}"] + [f"{k}={v}" for k, v in self.options]


def label_parts(label: str) -> tuple[str, str]:
    """`mdlm_loss-low_var` -> ('mdlm', 'loss-low_var'): a `Variant.label` split at its family, the longest
    registered name it starts with (a family name may hold `_`), else at its first `_`."""
    for name in sorted(REGISTRY, key=len, reverse=True):
        if label == name or label.startswith(name + "_"):
            return name, label[len(name) + 1:]
    family, _, rest = label.partition("_")
    return family, rest


def parse_variant(spec: str) -> Variant:
    """`mdlm:loss=low_var` -> Variant('mdlm', (('loss', 'low_var'),)); unknown names are UserErrors."""
    parts = [p.strip() for p in spec.split(":")]
    family = parts[0]
    if not family:
        raise UserError(f"empty family in '{spec}'")
    fam = get_family(family)
    opts = dict(parse_pair(p, f"family option in '{spec}'") for p in parts[1:])
    build(fam.Options, opts, f"family {family}")   # an unknown name or a bad value: a UserError now
    return Variant(family, tuple(sorted(opts.items())))


def parse_budget(text: str) -> float:
    try:
        c = float(text)
    except ValueError:
        raise UserError(f"budget '{text}' is not a number (write e.g. 1e13)") from None
    if not math.isfinite(c) or c <= 0:
        raise UserError(f"budget must be a positive number of FLOPs (got '{text}')")
    return c


def budget_label(c: float) -> str:
    """1e13 -> '1e13', 3.5e13 -> '3.5e13' (run names and tables)."""
    return f"{c:.3g}".replace("e+0", "e").replace("e+", "e")


@dataclass
class Point:
    variant: Variant
    size: str
    budget: float
    max_steps: int
    batch_size: int
    seq_len: int
    params: int                 # non-embedding parameters (reference convention)
    block_params: int
    tokens: int
    epochs: float
    extra: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.variant.label}/{self.size}_C{budget_label(self.budget)}"

    def overrides(self, out: str) -> list[str]:
        """training.train arguments; the planned keys come last so a recipe in `extra` cannot change them."""
        return (self.variant.overrides() + self.extra
                + [f"model={self.size}", f"max_steps={self.max_steps}", f"batch_size={self.batch_size}",
                   f"seq_len={self.seq_len}", f"out={out}"])


@dataclass
class Plan:
    points: list[Point]
    skipped: list[str]          # human-readable reasons


def make_plan(variants: list[Variant], budgets: list[float], sizes: list[str], *, batch_size: int,
              seq_len: int, vocab_size: int, train_tokens: int, extra: list[str] | None = None,
              min_steps: int = 1, max_epochs: float = math.inf) -> Plan:
    """Every (variant, budget, size) point; errors on sizes a budget cannot buy one step of.

    Points with fewer than `min_steps` steps or more than `max_epochs` passes over the training
    tokens are left out (listed in `skipped`), so one size list can serve budgets 10x apart.
    """
    if not variants or not budgets or not sizes:
        raise UserError("a sweep needs at least one family, one budget and one size")
    archs = [size(s) for s in sizes]
    points, skipped = [], []
    for c in budgets:
        for a in archs:
            steps = require_steps(c, a.name, a.n_layers, a.d_model, vocab_size, seq_len, batch_size)
            tokens = steps * batch_size * seq_len
            epochs = tokens / max(train_tokens, 1)
            if steps < min_steps:
                skipped.append(f"{a.name} at {budget_label(c)}: {steps} steps < min_steps={min_steps}")
                continue
            if epochs > max_epochs:
                skipped.append(f"{a.name} at {budget_label(c)}: {epochs:.1f} epochs > max_epochs={max_epochs:g}")
                continue
            counts = param_counts(a.n_layers, a.d_model, vocab_size)
            for v in variants:
                points.append(Point(v, a.name, c, steps, batch_size, seq_len, counts["non_embedding"],
                                    counts["blocks"], tokens, epochs, list(extra or [])))
    if not points:
        raise UserError("every point of the sweep was left out by min_steps/max_epochs: "
                        + "; ".join(skipped[:3]))
    labels = {budget_label(c) for c in budgets}
    if len(labels) != len(budgets):
        raise UserError("budgets must differ in their first 3 significant digits (they name the runs)")
    for c in budgets:
        kept = len({p.size for p in points if p.budget == c})
        if kept < 3:
            skipped.append(f"budget {budget_label(c)} keeps {kept} size(s): a parabola fit needs 3")
    return Plan(points, skipped)
