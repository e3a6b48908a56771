"""The causal-order decoder: decoding for families whose denoiser is causal over tokens in reveal
order (`decode_attention = "causal_order"`, Eso-LM), shared by every strategy that runs on them and
by Eso-LM's own reverse process; the decoder contract of toolkit/decoding/__init__.py.

The clean tokens are fed first, in the order they were revealed; masked queries follow, so the
keys/values of revealed tokens never change and a prefix KV cache is exact. A strategy chooses
which positions to reveal (`reveal`, the family's own draw) or scores candidates itself
(`logits`, then `commit` the ones it keeps, in the order they join the reveal order). Rows must
stay aligned (`ragged_rows = False`): every row reveals the same number of positions per step.
"""
from __future__ import annotations

import torch

from toolkit.decoding.start import seeded_start
from toolkit.model.backbone import KVCache
from toolkit.sample_request import Clock, Step, draw, filter_probs


def permuted_order(masked: torch.Tensor, generator=None) -> torch.Tensor:
    """Per row, a random order of positions with the clean ones first: [B, L] position ids."""
    key = torch.rand(masked.shape, generator=generator, device=masked.device) + masked.float()
    return key.argsort(dim=1)


class CausalOrderDecoder:
    """State of one decoding run: tokens, reveal order and (with request.use_cache) the KV cache.

    `family` is a MaskedFamily with `sequential_logits` (the left-to-right phase) and `order` [B, L]
    holds the `n_fixed` fixed positions first."""

    ragged_rows = False

    def __init__(self, family, net, request, z, order, n_fixed, gen, device):
        self.f, self.net, self.req, self.gen, self.device = family, net, request, gen, device
        self.z, self.order = z, order
        self.queries = order[:, n_fixed:]                   # positions still masked, in reveal order
        self.free = z.shape[1] - n_fixed
        self.confidence = (z != family.mask_id).float()
        self.clean_order = order[:, :n_fixed]               # clean positions in reveal order
        self.pending = self.clean_order                     # clean but not yet in the KV cache
        self.diffusion_order = None                         # clean positions when the sequential phase began
        self.cache = KVCache() if request.use_cache else None
        self.nfe, self.clock = 0, Clock()
        self.changed = torch.zeros_like(z, dtype=torch.bool)

    @classmethod
    def start(cls, family, net, request, device):
        """The seeded start with the fixed positions first, then one random reveal order."""
        gen, z, fixed = seeded_start(request, family.mask_id, device)
        order = permuted_order(~fixed, gen).to(device)
        return cls(family, net, request, z, order, int(fixed[0].sum()), gen, device)

    def masked(self) -> torch.Tensor:
        """[B, Q]: the positions still to decode, in reveal order."""
        return self.queries

    def left(self) -> float:
        """The fraction of the decodable positions still masked."""
        return self.queries.shape[1] / max(self.free, 1)

    def uniforms(self, positions) -> torch.Tensor:
        """[B, Q] draws, one per query."""
        return torch.rand(positions.shape, generator=self.gen).to(self.device)

    def logits(self, queries, sequential=False):
        """Raw logits [B, Q, V] at the positions `queries` [B, Q] (masked), after the clean tokens
        (diffusion phase) or under the sequential-phase mask; counts one NFE."""
        self.nfe += 1
        return self._logits_cached(queries) if self.cache is not None else self._logits_full(queries, sequential)

    def _logits_cached(self, queries):
        pos = torch.cat([self.pending, queries], 1)
        feed = torch.cat([self.z.gather(1, self.pending), torch.full_like(queries, self.f.mask_id)], 1)
        out = self.net(feed, positions=pos, causal=True, cache=self.cache, keep=self.pending.shape[1])
        self.pending = self.pending[:, :0]
        return out[:, -queries.shape[1]:]

    def _logits_full(self, queries, sequential):
        if not sequential:   # causal over [clean in reveal order, queries]
            pos = torch.cat([self.clean_order, queries], 1)
            feed = torch.cat([self.z.gather(1, self.clean_order), torch.full_like(queries, self.f.mask_id)], 1)
            return self.net(feed, positions=pos, causal=True)[:, -queries.shape[1]:]
        n = self.z.shape[1]
        clean = torch.zeros_like(self.z, dtype=torch.bool).scatter(1, self.diffusion_order, True)
        rank = torch.full_like(self.z, n).scatter(
            1, self.diffusion_order, torch.arange(self.diffusion_order.shape[1], device=self.device).expand_as(self.diffusion_order))
        z0 = torch.where(clean, self.z, self.f.mask_id)
        logits = self.f.sequential_logits(self.net, z0, self.z, rank)
        return logits.gather(1, queries[..., None].expand(-1, -1, logits.shape[-1]))

    def commit(self, positions, ids, confidence):
        """Make `positions` [B, K] clean with `ids` and their `confidence`; they join the reveal order."""
        self.changed = torch.zeros_like(self.changed).scatter_(1, positions, True)
        self.z.scatter_(1, positions, ids)
        self.confidence.scatter_(1, positions, confidence)
        self.clean_order = torch.cat([self.clean_order, positions], 1)
        self.pending = torch.cat([self.pending, positions], 1)
        keep = ~(self.queries[..., None] == positions[:, None, :]).any(-1)
        self.queries = self.queries[keep].view(self.queries.shape[0], -1)

    def reveal(self, queries, sequential=False):
        """Reveal the positions `queries` [B, Q]: one draw each from the family's SUBS distribution."""
        self.changed = torch.zeros_like(self.changed)
        if queries.shape[1] == 0:
            return
        if sequential and self.diffusion_order is None:
            self.diffusion_order = self.clean_order
        u = self.uniforms(queries)
        probs = filter_probs(self.f.subs_logits(self.logits(queries, sequential)), self.req.temperature, self.req.top_p)
        new = draw(probs, u)
        self.commit(queries, new, probs.gather(-1, new[..., None]).squeeze(-1))

    def nothing_to_decode(self):
        """The trace when every position is fixed: no step."""
        return iter(())

    def step_record(self, step, t, s) -> Step:
        return Step(step=step, t=t, s=s, tokens=self.z.clone(), changed=self.changed.clone(),
                    confidence=self.confidence.clone(), nfe=self.nfe, elapsed=self.clock())
