"""The ranked-reveal step every parallel masked strategy shares, written once on the decoder contract
(toolkit/decoding/__init__.py): one denoiser pass, a candidate id drawn for every masked position,
a score per candidate, and the best-scoring candidates revealed.

A ranking rule is a score function `score(logits, ids, p)` of the SUBS logits [N, V] (fp32), the
drawn ids [N] and their probabilities [N], returning [N] scores in [0, 1] (higher: revealed first).
Nothing here branches on the attention kind: a decoder whose rows must stay aligned
(`ragged_rows = False`) is refused the threshold rule in `Ranked.check`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from toolkit.decoding import PAD, decoder_class, start_decoder
from toolkit.errors import UserError
from toolkit.families.base import MaskedFamily
from toolkit.options import option
from toolkit.samplers.base import Sampler
from toolkit.samplers.common import candidates, scheduled_count


def drawn_probability(logits, ids, p):
    """p(drawn id): the confidence of Fast-dLLM / LLaDA."""
    return p


def margin(logits, ids, p):
    """Top-1 minus top-2 probability: how clearly the model prefers one id."""
    top = logits.softmax(-1).topk(2, dim=-1).values
    return top[:, 0] - top[:, 1]


def certainty(logits, ids, p):
    """exp(-entropy) of the distribution: ranks as the negative entropy does, within (0, 1]."""
    return torch.exp(-torch.special.entr(logits.softmax(-1)).sum(-1))


@dataclass
class RankedOptions:
    k: int = option(0, "tokens revealed per step (0 = spread evenly over the steps)")
    threshold: float = option(0.0, "reveal every candidate scoring >= this (0 = off; at least one per step)")
    top_k: int = option(0, "draw candidates from the k most likely ids only (0 = off)")

    def validate(self) -> None:
        if self.k < 0 or self.top_k < 0:
            raise UserError(f"k and top_k must be >= 0 (got k={self.k}, top_k={self.top_k})")
        if not 0 <= self.threshold <= 1:
            raise UserError(f"threshold must be in [0, 1] (got {self.threshold})")
        if self.k and self.threshold:
            raise UserError("give either k or threshold, not both")


def reveal_best(decoder, family, request, score, o: RankedOptions, steps_left: int) -> None:
    """One ranked step: candidates at every masked position, the best revealed, best first (k per
    step, every one scoring >= threshold and at least one, or an even share of `steps_left`)."""
    positions = decoder.masked()
    live = positions != PAD
    u = decoder.uniforms(positions)
    logits = family.subs_logits(decoder.logits(positions))[live]
    ids, p = candidates(logits, u[live], request.temperature, request.top_p, o.top_k)
    scores = torch.full(positions.shape, -math.inf, device=positions.device).masked_scatter(live, score(logits, ids, p))
    order = scores.argsort(dim=1, descending=True, stable=True)
    remaining = live.sum(1)
    if o.threshold > 0:
        count = (scores >= o.threshold).sum(1).clamp(min=1)
    else:
        count = remaining.clamp(max=o.k) if o.k else scheduled_count(remaining, steps_left).clamp(min=1)
    width = int(count.max())
    best = order[:, :width]
    keep = (torch.arange(width, device=best.device) < count[:, None]) & live.gather(1, best)
    drawn = torch.zeros_like(positions).masked_scatter(live, ids)
    drawn_p = torch.zeros(positions.shape, device=positions.device).masked_scatter(live, p)
    decoder.commit(torch.where(keep, positions.gather(1, best), PAD), drawn.gather(1, best), drawn_p.gather(1, best))


class Ranked(Sampler):
    """A parallel masked strategy revealing the best-scoring candidates: a subclass sets `name`,
    `summary`, `Options` (RankedOptions or a subclass) and `score_for(options)`."""

    Options = RankedOptions
    requires = MaskedFamily

    def score_for(self, o):
        raise NotImplementedError

    def check(self, family, request, o):
        if o.threshold > 0 and not decoder_class(family).ragged_rows:
            raise UserError(f"family {family.name}: the threshold rule is not offered (its rows must reveal"
                            " equal counts per step: use k or the even split)")

    def run(self, family, net, request, o, device):
        decoder, score = start_decoder(family, net, request, device), self.score_for(o)
        if decoder.free == 0:   # everything is fixed: nothing to decode
            yield from decoder.nothing_to_decode()
            return
        step, t = 0, decoder.left()   # left() reads the tokens back to the host: once per step
        while t:
            reveal_best(decoder, family, request, score, o, request.steps - step)
            step += 1
            s = decoder.left()
            yield decoder.step_record(step, t, s)
            t = s
