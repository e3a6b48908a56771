"""The bidirectional decoder: decoding for families whose denoiser sees every position at once
(`decode_attention = "bidirectional"`, MDLM), with the same small interface as the causal-order
decoder (toolkit/samplers/causal_order.py), so a strategy is one loop written against either.

Every masked position is a query of every step; `logits` scores them, `commit` makes a chosen
set clean, `reveal_confident` is the confidence strategy's step and `step_record` the trace record.
"""
from __future__ import annotations

import torch

from toolkit.families.base import seeded_start
from toolkit.samplers.common import candidates, choose, scheduled_count
from toolkit.sample_request import Clock, Step


class BidirectionalDecoder:
    """State of one decoding run: tokens, the fixed mask and the revealed tokens' confidence.
    `denoise(z, masked)` gives the net's raw logits at the masked positions (default: one full pass)."""

    def __init__(self, family, net, request, z, fixed, gen, device, denoise=None):
        self.f, self.net, self.req, self.gen, self.device = family, net, request, gen, device
        self.z, self.fixed = z, fixed
        self.confidence = fixed.float()
        self.free = int((~fixed[0]).sum())
        self.denoise = denoise or (lambda z, masked: net(z, select=masked))
        self.nfe, self.clock = 0, Clock()
        self.changed = torch.zeros_like(fixed)

    @classmethod
    def start(cls, family, net, request, device):
        gen, z, fixed = seeded_start(request, family.mask_id, device)
        return cls(family, net, request, z, fixed, gen, device)

    def masked(self) -> torch.Tensor:
        """bool [B, L]: the positions still to decode."""
        return (self.z == self.f.mask_id) & ~self.fixed

    def left(self) -> float:
        """The fraction of the decodable positions still masked (1 when there are none)."""
        return float(self.masked().sum()) / (self.free * self.z.shape[0]) if self.free else 1.0

    def logits(self, masked):
        """Raw logits [N, V] at the `masked` [B, L] positions; counts one NFE."""
        self.nfe += 1
        return self.denoise(self.z, masked)

    def commit(self, pick, ids, confidence):
        """Make the `pick` [B, L] positions clean with `ids` and their `confidence` (both [B, L])."""
        self.changed = pick
        self.z = torch.where(pick, ids, self.z)
        self.confidence = torch.where(pick, confidence, self.confidence)

    def reveal_confident(self, k: int, threshold: float, top_k: int, steps_left: int) -> None:
        """One confidence step: a candidate for every masked position, the best revealed (k per step,
        every one >= threshold, or an even share of `steps_left`)."""
        masked = self.masked()
        u = torch.rand(self.z.shape, generator=self.gen).to(self.device)
        ids, conf = candidates(self.f.subs_logits(self.logits(masked)), u[masked],
                               self.req.temperature, self.req.top_p, top_k)
        scores = torch.zeros(self.z.shape, device=self.device).masked_scatter(masked, conf)
        if threshold > 0:
            pick = choose(scores, masked, threshold=threshold)
        else:
            remaining = masked.sum(1)
            count = remaining.clamp(max=k) if k else scheduled_count(remaining, steps_left).clamp(min=1)
            pick = choose(scores, masked, count)
        self.commit(pick, self.z.masked_scatter(masked, ids), scores)

    def nothing_to_decode(self):
        """The trace when every position is fixed: one step that changes nothing."""
        yield Step(1, 1.0, 0.0, self.z.clone(), torch.zeros_like(self.fixed), self.confidence.clone(), 0, self.clock())

    def step_record(self, step, t, s) -> Step:
        return Step(step=step, t=t, s=s, tokens=self.z.clone(), changed=self.changed.clone(),
                    confidence=self.confidence.clone(), nfe=self.nfe, elapsed=self.clock())
