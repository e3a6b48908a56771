"""The bidirectional decoder: decoding for families whose denoiser sees every position at once
(`decode_attention = "bidirectional"`, MDLM), with the decoder contract of toolkit/decoding/__init__.py.

Every masked position is a query of every step, so rows may reveal different numbers of
positions (`ragged_rows`); `masked()` lists each row's masked positions in ascending order, those
inside `window` (a bool [L], e.g. the block being decoded) when one is set.
"""
from __future__ import annotations

import torch

from toolkit.decoding.start import PAD, scatter_rows, seeded_start
from toolkit.sample_request import Clock, Step


class BidirectionalDecoder:
    """State of one decoding run: tokens, the fixed mask and the revealed tokens' confidence.
    `denoise(z, select)` gives the net's raw logits [N, V] at the bool [B, L] `select` (one full pass)."""

    ragged_rows = True

    def __init__(self, family, net, request, z, fixed, gen, device, denoise=None):
        self.f, self.net, self.req, self.gen, self.device = family, net, request, gen, device
        self.z, self.fixed = z, fixed
        self.confidence = fixed.float()
        self.free = int((~fixed[0]).sum())
        self.denoise = denoise or (lambda z, select: net(z, select=select))
        self.nfe, self.clock = 0, Clock()
        self.changed = torch.zeros_like(fixed)
        self.window: torch.Tensor | None = None

    @classmethod
    def start(cls, family, net, request, device):
        gen, z, fixed = seeded_start(request, family.mask_id, device)
        return cls(family, net, request, z, fixed, gen, device)

    def undecided(self) -> torch.Tensor:
        """bool [B, L]: the positions still to decode (inside `window` when one is set)."""
        masked = (self.z == self.f.mask_id) & ~self.fixed
        return masked if self.window is None else masked & self.window

    def masked(self) -> torch.Tensor:
        """[B, Q]: each row's positions still to decode, ascending, padded with PAD."""
        masked = self.undecided()
        count = masked.sum(1)
        width = int(count.max()) if count.numel() else 0
        first = (~masked).to(torch.int8).argsort(dim=1, stable=True)[:, :width]   # masked ones first, in order
        return torch.where(torch.arange(width, device=self.device) < count[:, None], first, PAD)

    def left(self) -> float:
        """The fraction of the decodable positions still masked (1 when there are none)."""
        masked = (self.z == self.f.mask_id) & ~self.fixed
        return float(masked.sum()) / (self.free * self.z.shape[0]) if self.free else 1.0

    def uniforms(self, positions) -> torch.Tensor:
        """[B, Q] draws: one [B, L] draw per step, read at `positions`."""
        u = torch.rand(self.z.shape, generator=self.gen).to(self.device)
        return u.gather(1, positions.clamp(min=0))

    def logits(self, positions) -> torch.Tensor:
        """Raw logits [B, Q, V] at `positions` (zeros at PAD); counts one NFE. The net's head runs
        only at the live positions."""
        self.nfe += 1
        live = positions != PAD
        raw = self.denoise(self.z, scatter_rows(torch.zeros_like(self.fixed), positions, True))
        if bool(live.all()):
            return raw.view(*positions.shape, raw.shape[-1])
        out = raw.new_zeros(*positions.shape, raw.shape[-1])
        out[live] = raw
        return out

    def commit(self, positions, ids, confidence):
        """Make `positions` [B, K] (PAD: none) clean with `ids` and their `confidence` ([B, K] each)."""
        self.changed = scatter_rows(torch.zeros_like(self.fixed), positions, True)
        self.z = scatter_rows(self.z, positions, ids)
        self.confidence = scatter_rows(self.confidence, positions, confidence)

    def nothing_to_decode(self):
        """The trace when every position is fixed: one step that changes nothing."""
        yield Step(1, 1.0, 0.0, self.z.clone(), torch.zeros_like(self.fixed), self.confidence.clone(), 0, self.clock())

    def step_record(self, step, t, s) -> Step:
        return Step(step=step, t=t, s=s, tokens=self.z.clone(), changed=self.changed.clone(),
                    confidence=self.confidence.clone(), nfe=self.nfe, elapsed=self.clock())
