"""Likelihood of token sequences under any family: exact for AR, antithetic Monte Carlo otherwise.

One function (`sequence_nll`) serves the validation NELBO, generative perplexity under a
toolkit evaluator and multiple-choice scoring, so every consumer gets the same estimator
and the same standard error. The standard error is the Monte Carlo one (the text is fixed).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from toolkit.data.packing import load_data
from toolkit.errors import UserError
from toolkit.schedule import antithetic_times


@dataclass
class Estimate:
    """A per-token NELBO (or exact NLL), its Monte Carlo standard error and the perplexity bound."""
    nelbo: float          # nats per token
    se: float             # standard error of `nelbo` (0 when exact)
    tokens: int
    sequences: int
    exact: bool

    @property
    def ppl(self) -> float:
        return math.exp(self.nelbo)

    def to_dict(self) -> dict:
        return {"nelbo": self.nelbo, "se": self.se, "ppl_bound": self.ppl, "tokens": self.tokens,
                "sequences": self.sequences, "exact": self.exact}


def _even(k: int) -> int:
    if k < 2:
        raise UserError(f"mc_samples must be >= 2 (antithetic pairs; got {k})")
    return k + (k % 2)


@torch.no_grad()
def sequence_nll(model, x0: torch.Tensor, mc_samples: int = 32, seed: int = 0,
                 max_rows: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence NLL in nats [B] and its standard error [B] for equal-length ids x0 [B, L].

    Exact families: one forward, se = 0. Otherwise each sequence gets `mc_samples` draws of t
    in antithetic pairs (u, 1 - u); the estimate is their mean and the standard error comes
    from the spread of the pair means (needs >= 2 pairs for a non-zero error bar).
    """
    x0 = torch.as_tensor(x0, dtype=torch.long).to(model.device)
    if x0.dim() == 1:
        x0 = x0[None]
    if x0.shape[1] > model.max_length:
        raise UserError(f"sequence of {x0.shape[1]} tokens is longer than the model's context ({model.max_length})")
    if model.family.exact_likelihood:
        out = torch.cat([model.nelbo(x0[i: i + max_rows]) for i in range(0, len(x0), max_rows)])
        return out.double().cpu(), torch.zeros(len(x0), dtype=torch.float64)
    k = _even(mc_samples)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    t_gen = torch.Generator().manual_seed(seed + 1)
    per_row = max(1, max_rows // k) if k <= max_rows else 1
    values = []
    for i in range(0, len(x0), per_row):
        chunk = x0[i: i + per_row]
        t = torch.cat([antithetic_times(k, t_gen) for _ in range(len(chunk))])   # [u.., 1-u..] per row
        reps = chunk.repeat_interleave(k, dim=0)
        vals = torch.cat([model.nelbo(reps[j: j + max_rows], t[j: j + max_rows].to(model.device), gen)
                          for j in range(0, len(reps), max_rows)])
        values.append(vals.double().cpu().view(len(chunk), k))
    v = torch.cat(values)                                   # [B, k]
    pairs = (v[:, : k // 2] + v[:, k // 2:]) / 2            # independent antithetic pair means
    se = pairs.std(dim=1, unbiased=True) / math.sqrt(k // 2) if k >= 4 else torch.zeros(len(v), dtype=torch.float64)
    return pairs.mean(1), se


def summarize(nll: torch.Tensor, se: torch.Tensor, tokens: int, exact: bool) -> Estimate:
    """Per-token estimate over fixed sequences: the MC errors of independent sequences add in quadrature."""
    return Estimate(nelbo=float(nll.sum() / tokens), se=float(se.pow(2).sum().sqrt() / tokens),
                    tokens=tokens, sequences=len(nll), exact=exact)


def dataset_nelbo(model, blocks: torch.Tensor, mc_samples: int = 32, seed: int = 0) -> Estimate:
    """NELBO per token of fixed-length blocks [N, L] (validation data)."""
    nll, se = sequence_nll(model, blocks, mc_samples, seed)
    return summarize(nll, se, model.family.scored_tokens(blocks), model.family.exact_likelihood)


def text_nll(model, ids: list[int], mc_samples: int = 32, seed: int = 0) -> tuple[float, float, int]:
    """(NLL, se, scored tokens) of a token list of any length, cut into windows of the model's context."""
    n = model.max_length
    total, var, scored = 0.0, 0.0, 0
    for i in range(0, len(ids), n):
        window = torch.tensor(ids[i: i + n])[None]
        nll, se = sequence_nll(model, window, mc_samples, seed + i)
        total, var = total + float(nll[0]), var + float(se[0]) ** 2
        scored += model.family.scored_tokens(window)
    return total, math.sqrt(var), scored


def validation_blocks(model, sequences: int = 16) -> torch.Tensor:
    """The first `sequences` validation blocks of the checkpoint's own data config."""
    if sequences <= 0:
        raise UserError(f"sequences must be > 0 (got {sequences})")
    cfg = model.cfg.data
    if model.path and (Path(model.path) / "tokenizer.json").is_file():   # the checkpoint's own copy
        cfg = dataclasses.replace(cfg, tokenizer=str(Path(model.path) / "tokenizer.json"))
    return load_data(cfg).val[:sequences]
