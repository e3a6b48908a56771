"""Pieces several strategies share: top-k truncation, drawing candidates, an even split of the positions."""
from __future__ import annotations

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
