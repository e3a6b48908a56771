"""`remdm`: masked diffusion with remasking (ReMDM), so later steps can correct earlier choices.

Per step t -> s, a token revealed before t goes back to [MASK] with probability sigma_t, and a
masked token is revealed with probability (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t).
Then P(clean at s) = alpha_s exactly as in the forward process, for any admissible sigma_t in
[0, sigma_max], sigma_max = min(1, (1 - alpha_s) / alpha_t). Schedules: `cap` sigma = min(eta,
sigma_max); `rescale` sigma = eta * sigma_max. sigma_max = 0 at the last step (s = 0), so the
run ends with nothing masked. sigma = 0 is MDLM's ancestral sampler. Prompt and fixed
positions are never re-masked. A step that reveals nothing costs no NFE.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from toolkit.errors import UserError
from toolkit.decoding import seeded_start
from toolkit.families.base import MaskedFamily
from toolkit.options import option
from toolkit.samplers.base import Sampler, register
from toolkit.samplers.common import candidates
from toolkit.sample_request import Clock, Step, time_grid

SCHEDULES = ("cap", "rescale")


@dataclass
class RemdmOptions:
    schedule: str = option("cap", "cap: sigma = min(eta, sigma_max); rescale: sigma = eta * sigma_max", SCHEDULES)
    eta: float = option(0.02, "remasking strength (see schedule)")
    top_k: int = option(0, "draw from the k most likely ids only (0 = off)")

    def validate(self) -> None:
        if not 0 <= self.eta <= 1:
            raise UserError(f"eta must be in [0, 1] (got {self.eta})")
        if self.top_k < 0:
            raise UserError(f"top_k must be >= 0 (got {self.top_k})")


def remask_probability(o: RemdmOptions, alpha_t: float, alpha_s: float) -> float:
    """sigma_t for one step, within the admissible [0, sigma_max]."""
    sigma_max = 1.0 if alpha_t <= 0 else min(1.0, (1 - alpha_s) / alpha_t)
    return min(o.eta, sigma_max) if o.schedule == "cap" else o.eta * sigma_max


def reveal_probability(alpha_t: float, alpha_s: float, sigma: float) -> float:
    return (alpha_s - (1 - sigma) * alpha_t) / (1 - alpha_t)


@register
class Remdm(Sampler):
    name = "remdm"
    summary = "ancestral masked diffusion that re-masks revealed tokens (ReMDM cap / rescale)"
    Options = RemdmOptions
    requires = MaskedFamily
    attentions = ("bidirectional",)   # it re-masks revealed tokens: a causal reveal order has no such step

    def run(self, family, net, request, o, device):
        gen, z, fixed = seeded_start(request, family.mask_id, device)
        confidence = fixed.float()
        grid, clock, nfe = time_grid(request.steps), Clock(), 0
        row_nfe = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)   # on z.device: no sync per step
        for k in range(request.steps):
            t, s = float(grid[k]), float(grid[k + 1])
            a_t, a_s = float(family.schedule.alpha(t)), float(family.schedule.alpha(s))
            sigma = remask_probability(o, a_t, a_s)
            u_reveal, u_token, u_remask = (torch.rand(z.shape, generator=gen).to(device) for _ in range(3))
            masked = (z == family.mask_id) & ~fixed
            clean = (z != family.mask_id) & ~fixed
            reveal = masked & (u_reveal < reveal_probability(a_t, a_s, sigma))
            remask = clean & (u_remask < sigma)
            if reveal.any():
                logits = family.subs_logits(net(z, select=reveal))
                nfe += 1
                row_nfe += reveal.any(-1)   # a row with nothing to reveal needs no evaluation
                ids, conf = candidates(logits, u_token[reveal], request.temperature, request.top_p, o.top_k)
                z = z.masked_scatter(reveal, ids)
                confidence = confidence.masked_scatter(reveal, conf)
            z = z.masked_fill(remask, family.mask_id)
            confidence = confidence.masked_fill(remask, 0.0)
            yield Step(step=k + 1, t=t, s=s, tokens=z.clone(), changed=reveal | remask, confidence=confidence.clone(),
                       nfe=nfe, elapsed=clock(), remasked=remask, row_nfe=row_nfe.clone())
