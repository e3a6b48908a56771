"""`confidence`: parallel decoding by confidence for masked families (Fast-dLLM / LLaDA style).

Each step runs the denoiser once, draws a candidate id for every masked position, and reveals
only the best-ranked candidates: k per step, an even share of `steps` (k = 0, the default,
so NFE = steps and strategies compare at equal compute), or every candidate scoring at least
`threshold` (at least one per step, so NFE adapts to the text). `rank` picks the score:
the drawn id's probability (the default), the top-1 minus top-2 margin, or the certainty
exp(-entropy). Revealed tokens are final, as in the masked reverse process; the prompt and
fixed positions are never touched.

Eso-LM (diffusion phase only: every position is decoded by diffusion, so its `alpha_0` sampling
option is refused): its denoiser is causal over tokens in reveal order, so each step scores all
masked positions as queries after the clean tokens, in one random order fixed at the start, and the
chosen ones join the clean tokens best first; its KV cache stays exact. The threshold rule is not
offered there (rows would then hold different numbers of masked queries). The step is
toolkit/samplers/ranked.py's, on the family's decoder (toolkit/decoding/).
"""
from __future__ import annotations

from dataclasses import dataclass

from toolkit.options import option
from toolkit.samplers.base import register
from toolkit.samplers.ranked import Ranked, RankedOptions, certainty, drawn_probability, margin

SCORES = {"probability": drawn_probability, "margin": margin, "certainty": certainty}


@dataclass
class ConfidenceOptions(RankedOptions):
    rank: str = option("probability", "the score: probability of the drawn id, top-1 minus top-2 margin,"
                                      " or certainty exp(-entropy)", tuple(SCORES))


@register
class Confidence(Ranked):
    name = "confidence"
    summary = "reveal the best-ranked masked positions per step (k, even share of steps, or threshold)"
    Options = ConfidenceOptions

    def score_for(self, o):
        return SCORES[o.rank]
