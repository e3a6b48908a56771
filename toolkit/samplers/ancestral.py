"""`ancestral` (default): each family's own reverse process, exactly as the paper samples.

MDLM/Eso-LM reveal each masked token with the schedule's probability per step; Duo draws
z_s from the posterior q(z_s | z_t, x_theta); AR decodes left to right. The family module
owns this code (`Family.sample`); this strategy only dispatches to it, so its output is the
family's, token for token.
"""
from __future__ import annotations

from toolkit.samplers.base import Sampler, register


@register
class Ancestral(Sampler):
    name = "ancestral"
    summary = "the family's own reverse process (the paper's sampler)"
    reads_family_options = True

    def run(self, family, net, request, options, device):
        yield from family.sample(net, request, device)
