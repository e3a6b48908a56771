"""Pieces several strategies share: top-k truncation, drawing candidates, choosing positions."""
from __future__ import annotations

import math

import torch

from toolkit.sample_request import draw, filter_probs


def candidates(logits: torch.Tensor, uniform: torch.Tensor, temperature: float, top_p: float, top_k: int):
    """Draw one id per row of `logits` [M, V]; return (ids, probability the model gave each id).

    top_k > 0 keeps the k largest logits before temperature/top-p. The returned confidence is
    the unfiltered softmax probability of the drawn id: the score the ordering strategies rank.
    """
    logits = logits.float()
    filtered = logits
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        filtered = logits.masked_fill(logits < kth, float("-inf"))
    probs = filter_probs(filtered, temperature, top_p)
    ids = draw(probs, uniform)
    conf = logits.softmax(-1).gather(-1, ids[:, None]).squeeze(-1)
    return ids, conf


def scheduled_count(remaining: torch.Tensor, steps_left: int) -> torch.Tensor:
    """Positions to reveal now so that `remaining` [B] are done in `steps_left` steps (even split)."""
    return torch.div(remaining + steps_left - 1, max(steps_left, 1), rounding_mode="floor")


def choose(scores: torch.Tensor, allowed: torch.Tensor, count: torch.Tensor | None = None,
           threshold: float = 0.0) -> torch.Tensor:
    """bool [B, L]: per row, the `count` highest-scoring allowed positions, or (threshold > 0) every
    allowed position scoring >= threshold and at least the best one (Fast-dLLM's rule)."""
    s = scores.masked_fill(~allowed, -math.inf)
    order = s.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(s.shape[1], device=s.device).expand_as(order))
    if threshold > 0:
        pick = (s >= threshold) | (rank == 0)
    else:
        pick = rank < count[:, None]
    return pick & allowed
