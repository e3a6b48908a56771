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
would then hold different numbers of masked queries). The strategy is one loop over the family's
decoder (`family.decoder`: toolkit/samplers/bidirectional.py, causal_order.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from toolkit.errors import UserError
from toolkit.families.base import MaskedFamily
from toolkit.options import option
from toolkit.samplers.base import Sampler, register


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
        decoder = family.decoder(net, request, device)
        if decoder.free == 0:   # everything is fixed: nothing to decode
            yield from decoder.nothing_to_decode()
            return
        step, t = 0, decoder.left()   # left() reads the tokens back to the host: once per step
        while t:
            decoder.reveal_confident(o.k, o.threshold, o.top_k, request.steps - step)
            step += 1
            s = decoder.left()
            yield decoder.step_record(step, t, s)
            t = s
