"""`block`: semi-autoregressive decoding. Blocks of `block_size` positions are decoded left to
right; inside a block, masked diffusion (the most confident candidates first, or a random order).

Caches (`cache`):
- `prefix` (exact): finished blocks' keys/values are computed once and reused. Exact only when a
  finished block's hidden states cannot depend on anything later. Eso-LM's attention is causal
  over tokens in reveal order, so it always is. MDLM attends bidirectionally: a finished block
  would see the block being decoded, so its keys/values change every step; the prefix cache is
  exact only under `attention=block_causal` (each position sees its own and earlier blocks),
  a different attention pattern than MDLM was trained with.
- `dual` (APPROXIMATE, MDLM bidirectional): at a block's first step one full pass caches every
  position outside the block; later steps feed only the block and reuse those keys/values,
  although the outside positions would have attended to the block's newly revealed tokens.
- `none`: a full pass per step (`--no-cache` forces it); `auto`: prefix where exact, else none.
`steps` is the total budget: steps // (blocks to decode) per block, at least one.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from toolkit.errors import UserError
from toolkit.decoding import CausalOrderDecoder, seeded_start
from toolkit.families.base import MaskedFamily
from toolkit.model.backbone import KVCache
from toolkit.options import option
from toolkit.samplers.base import Sampler, register
from toolkit.samplers.common import candidates, choose, scheduled_count
from toolkit.sample_request import Clock, Step

CACHES = ("auto", "prefix", "dual", "none")
ATTENTIONS = ("bidirectional", "block_causal")
ORDERS = ("auto", "confidence", "random")


@dataclass
class BlockOptions:
    block_size: int = option(32, "positions per block")
    cache: str = option("auto", "prefix is exact, dual approximate (bidirectional); auto: prefix where exact, else none",
                        CACHES)
    attention: str = option("bidirectional", "for bidirectional-denoiser families", ATTENTIONS)
    order: str = option("auto", "inside a block (auto: confidence where the family allows)", ORDERS)
    threshold: float = option(0.0, "confidence order: reveal all candidates >= this, at least one (0 = even split)")
    top_k: int = option(0, "draw from the k most likely ids only (0 = off)")

    def validate(self) -> None:
        if self.block_size <= 0:
            raise UserError(f"block_size must be > 0 (got {self.block_size})")
        if not 0 <= self.threshold <= 1 or self.top_k < 0:
            raise UserError("threshold must be in [0, 1] and top_k >= 0")


def block_spans(n: int, size: int, fixed_row: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of every block that has a position to decode."""
    return [(a, min(a + size, n)) for a in range(0, n, size) if (~fixed_row[a: a + size]).any()]


@register
class Block(Sampler):
    name = "block"
    summary = "semi-autoregressive blocks left to right, diffusion inside; prefix KV cache where exact"
    Options = BlockOptions
    requires = MaskedFamily

    def check(self, family, request, o):
        if family.decode_attention == "causal_order":
            _check_causal_order(family, request, o)
        else:
            if o.order == "random" and o.threshold > 0:
                raise UserError("threshold ranks by confidence: it is not read under order=random")
            _cache_mode(o, request, exact_prefix=o.attention == "block_causal")

    def run(self, family, net, request, o, device):
        kind = family.decode_attention
        runner = _causal_order if kind == "causal_order" else _bidirectional
        yield from runner(family, net, request, o, device)


def _cache_mode(o: BlockOptions, request, exact_prefix: bool) -> str:
    mode = o.cache if request.use_cache else "none"
    if mode == "auto":
        return "prefix" if exact_prefix else "none"
    if mode == "prefix" and not exact_prefix:
        raise UserError("cache=prefix is exact only with attention=block_causal for this family"
                        " (use cache=dual for the approximate bidirectional cache)")
    if mode == "dual" and o.attention != "bidirectional":
        raise UserError("cache=dual is for attention=bidirectional (block_causal has the exact prefix cache)")
    return mode


class _Denoiser:
    """Logits at the block's masked positions for one attention pattern and cache mode."""

    def __init__(self, family, net, n, o, mode, device):
        self.f, self.net, self.mode, self.device = family, net, mode, device
        self.block_causal = o.attention == "block_causal"
        self.block_of = torch.arange(n, device=device) // o.block_size
        self.cache, self.committed = (KVCache() if mode == "prefix" else None), 0

    def _mask(self, q0, q1, k1):
        """[1, 1, q1-q0, k1] bool: a query sees keys of its own and earlier blocks."""
        return (self.block_of[None, :k1] <= self.block_of[q0:q1, None])[None, None]

    def __call__(self, z, masked, a, e, first: bool):
        net, n = self.net, z.shape[1]
        if self.mode == "none" and not self.block_causal:
            out = net(z, select=masked)
        elif self.mode == "none":    # later blocks are invisible to this block: leave them out
            out = net(z[:, :e], mask=self._mask(0, e, e), select=masked[:, :e])
        elif self.mode == "prefix":  # feed the finished blocks not yet cached, then this block
            c = self.committed
            pos = torch.arange(c, e, device=self.device).expand(z.shape[0], e - c)
            mask = self._mask(c, e, e) if c < a else None
            out = net(z[:, c:e], positions=pos, mask=mask, cache=self.cache, keep=a - c, select=masked[:, c:e])
            self.committed = a
        elif first:                  # dual: cache every position outside the block, then decode it
            outside = torch.cat([torch.arange(0, a), torch.arange(e, n)]).to(self.device)
            order = torch.cat([outside, torch.arange(a, e, device=self.device)]).expand(z.shape[0], n)
            self.cache = KVCache()
            out = net(z.gather(1, order), positions=order, cache=self.cache, keep=n - (e - a),
                      select=masked.gather(1, order))
        else:
            pos = torch.arange(a, e, device=self.device).expand(z.shape[0], e - a)
            out = net(z[:, a:e], positions=pos, cache=self.cache, keep=0, select=masked[:, a:e])
        return self.f.subs_logits(out)


def _bidirectional(family, net, request, o, device):
    mode = _cache_mode(o, request, exact_prefix=o.attention == "block_causal")
    order = "confidence" if o.order == "auto" else o.order
    gen, z, fixed = seeded_start(request, family.mask_id, device)
    b, n = z.shape
    confidence, clock = fixed.float(), Clock()
    spans = block_spans(n, o.block_size, fixed[0])
    per_block = max(1, request.steps // max(len(spans), 1))
    denoise = _Denoiser(family, net, n, o, mode, device)
    in_block = torch.zeros(n, dtype=torch.bool, device=device)
    nfe = step = 0
    row_nfe = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
    for a, e in spans:
        in_block.zero_()
        in_block[a:e] = True
        j = 0
        while True:
            masked = (z == family.mask_id) & ~fixed & in_block
            if not masked.any():
                break
            u = torch.rand(z.shape, generator=gen).to(device)
            ids, conf = candidates(denoise(z, masked, a, e, first=j == 0), u[masked],
                                   request.temperature, request.top_p, o.top_k)
            nfe += 1
            row_nfe += masked.any(-1)   # a row whose block is already done needs no evaluation
            cand = z.masked_scatter(masked, ids)
            scores = torch.zeros(z.shape, device=device).masked_scatter(masked, conf)
            if order == "random":
                pick = choose(torch.rand(z.shape, generator=gen).to(device), masked,
                              scheduled_count(masked.sum(1), per_block - j).clamp(min=1))
            elif o.threshold > 0:
                pick = choose(scores, masked, threshold=o.threshold)
            else:
                pick = choose(scores, masked, scheduled_count(masked.sum(1), max(per_block - j, 1)).clamp(min=1))
            z = torch.where(pick, cand, z)
            confidence = torch.where(pick, scores, confidence)
            j, step = j + 1, step + 1
            left = float(((z == family.mask_id) & ~fixed).float().mean())
            yield Step(step=step, t=left + float(pick.float().mean()), s=left, tokens=z.clone(), changed=pick,
                       confidence=confidence.clone(), nfe=nfe, elapsed=clock(), row_nfe=row_nfe.clone())


def _check_causal_order(family, request, o) -> str:
    """The cache mode for a causal-reveal-order family, or a UserError for options it cannot honour."""
    if o.order == "confidence" or o.threshold > 0:
        raise UserError(f"family {family.name}: block decoding reveals in a random order inside a block"
                        " (order=confidence needs a bidirectional denoiser)")
    if o.attention != "bidirectional":
        raise UserError(f"family {family.name} has its own attention pattern: the attention option does not apply")
    if o.top_k:
        raise UserError(f"family {family.name}: block decoding draws with the family's own reveal step,"
                        " which does not read top_k")
    mode = _cache_mode(o, request, exact_prefix=True)
    if mode == "dual":
        raise UserError(f"family {family.name}: its prefix cache is exact, so there is no dual cache")
    return mode


def _causal_order(family, net, request, o, device):
    """Eso-LM: its own reveal-order sampler with the order made block by block (random inside)."""
    mode = _check_causal_order(family, request, o)
    gen, z, fixed = seeded_start(request, family.mask_id, device)
    b, n = z.shape
    block_of = (torch.arange(n, device=device) // o.block_size).float()
    key = torch.rand(z.shape, generator=gen).to(device) + torch.where(fixed, -1.0, block_of)
    order = key.argsort(dim=1)              # fixed first, then block by block, random inside
    n_fixed = int(fixed[0].sum())
    sampler = CausalOrderDecoder(family, net, replace(request, use_cache=mode == "prefix"), z, order, n_fixed, gen, device)
    spans = block_spans(n, o.block_size, fixed[0])
    per_block = max(1, request.steps // max(len(spans), 1))
    revealed, step, free = n_fixed, 0, max(n - n_fixed, 1)
    for a, e in spans:
        left = int((~fixed[0, a:e]).sum())
        for j in range(per_block):
            count = -(-left // (per_block - j))
            if count == 0:
                break
            sampler.reveal(order[:, revealed: revealed + count])
            revealed, left, step = revealed + count, left - count, step + 1
            yield sampler.step_record(step, 1 - (revealed - count - n_fixed) / free, 1 - (revealed - n_fixed) / free)
