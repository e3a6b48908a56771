"""`confidence`: parallel decoding by confidence for masked families (Fast-dLLM / LLaDA style).

Each step runs the denoiser once, draws a candidate id for every masked position, and reveals
only the most confident candidates: k per step, an even share of `steps` (k = 0, the default,
so NFE = steps and strategies compare at equal compute), or every candidate whose probability
is at least `threshold` (at least one per step, so NFE adapts to the text). Revealed tokens
are final, as in the masked reverse process; the prompt and fixed positions are never touched.

Eso-LM (diffusion phase only: every position is decoded by diffusion, alpha_0 is not used): its
denoiser is causal over tokens in reveal order, so each step scores all masked positions as
queries after the clean tokens, in one random order fixed at the start (each query also sees
the masked queries before it, as in training), and the chosen ones join the clean tokens in
confidence order; its KV cache stays exact. The threshold rule is not offered there (rows
would then hold different numbers of masked queries).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from toolkit.errors import UserError
from toolkit.families.base import MaskedFamily, seeded_start
from toolkit.samplers.causal_order import CausalOrderDecoder, permuted_order
from toolkit.options import option
from toolkit.samplers.base import Sampler, register
from toolkit.samplers.common import candidates, choose, scheduled_count
from toolkit.sampling import Clock, Step


@dataclass
class ConfidenceOptions:
    k: int = option(0, "tokens revealed per step (0 = spread evenly over the steps)")
    threshold: float = option(0.0, "reveal every candidate with probability >= this (0 = off; at least one per step)")
    top_k: int = option(0, "draw candidates from the k most likely ids only (0 = off)")

    def validate(self) -> None:
        if self.k < 0 or self.top_k < 0:
            raise UserError(f"k and top_k must be >= 0 (got k={self.k}, top_k={self.top_k})")
        if not 0 <= self.threshold <= 1:
            raise UserError(f"threshold must be in [0, 1] (got {self.threshold})")
        if self.k and self.threshold:
            raise UserError("give either k or threshold, not both")


def pick_positions(o, scores, masked, steps_left: int) -> torch.Tensor:
    """Which masked positions to reveal this step (bool [B, L]) under the k / threshold / even rule."""
    if o.threshold > 0:
        return choose(scores, masked, threshold=o.threshold)
    remaining = masked.sum(1)
    count = remaining.clamp(max=o.k) if o.k else scheduled_count(remaining, steps_left).clamp(min=1)
    return choose(scores, masked, count)


@register
class Confidence(Sampler):
    name = "confidence"
    summary = "reveal the most confident masked positions per step (k, even share of steps, or threshold)"
    Options = ConfidenceOptions
    requires = MaskedFamily

    def check(self, family, request, o):
        if o.threshold > 0 and family.decode_attention == "causal_order":
            raise UserError(f"family {family.name}: the confidence threshold rule is not offered (use k or the even split)")

    def run(self, family, net, request, o, device):
        if family.decode_attention == "causal_order":
            yield from _causal_order(family, net, request, o, device)
            return
        gen, z, fixed = seeded_start(request, family.mask_id, device)
        confidence = fixed.float()
        free = int((~fixed[0]).sum())
        clock, nfe, step = Clock(), 0, 0
        if free == 0:   # everything is fixed: nothing to decode
            yield Step(1, 1.0, 0.0, z.clone(), torch.zeros_like(fixed), confidence, 0, clock())
            return
        while True:
            masked = (z == family.mask_id) & ~fixed
            if not masked.any():
                return
            u = torch.rand(z.shape, generator=gen).to(device)
            logits = family.subs_logits(net(z, select=masked))
            nfe += 1
            ids, conf = candidates(logits, u[masked], request.temperature, request.top_p, o.top_k)
            cand = z.masked_scatter(masked, ids)
            scores = torch.zeros(z.shape, device=device).masked_scatter(masked, conf)
            pick = pick_positions(o, scores, masked, request.steps - step)
            t = float(masked.sum()) / (free * z.shape[0])
            z = torch.where(pick, cand, z)
            confidence = torch.where(pick, scores, confidence)
            step += 1
            s = float(((z == family.mask_id) & ~fixed).sum()) / (free * z.shape[0])
            yield Step(step=step, t=t, s=s, tokens=z.clone(), changed=pick, confidence=confidence.clone(),
                       nfe=nfe, elapsed=clock())


def _causal_order(family, net, request, o, device):
    """Eso-LM: score every masked position (causal, after the clean tokens), reveal the most confident."""
    gen, z, fixed = seeded_start(request, family.mask_id, device)
    order = permuted_order(~fixed, gen).to(device)            # fixed first, then a random order
    n_fixed = int(fixed[0].sum())
    state = CausalOrderDecoder(family, net, request, z, order, n_fixed, gen, device)
    queries, free, step = order[:, n_fixed:], max(z.shape[1] - n_fixed, 1), 0
    while queries.shape[1]:
        b, q = queries.shape
        u = torch.rand(queries.shape, generator=gen).to(device)
        logits = state.logits(queries)
        ids, conf = candidates(family.subs_logits(logits).flatten(0, 1), u.flatten(), request.temperature,
                               request.top_p, o.top_k)
        ids, conf = ids.view(b, q), conf.view(b, q)
        count = min(o.k, q) if o.k else max(1, -(-q // max(request.steps - step, 1)))
        pick = conf.topk(count, dim=1).indices                  # most confident first
        chosen = queries.gather(1, pick)
        state.commit(chosen, ids.gather(1, pick), conf.gather(1, pick))
        left = torch.ones_like(queries, dtype=torch.bool).scatter_(1, pick, False)
        queries = queries[left].view(b, q - count)
        step += 1
        yield state.step_record(step, q / free, queries.shape[1] / free)
