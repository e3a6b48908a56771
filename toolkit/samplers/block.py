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

import itertools
from dataclasses import dataclass, replace

import torch

from toolkit.errors import UserError
from toolkit.decoding import BidirectionalDecoder, CausalOrderDecoder, seeded_start
from toolkit.families.base import MaskedFamily
from toolkit.model.backbone import KVCache
from toolkit.options import option
from toolkit.samplers.base import Sampler, register
from toolkit.samplers.ranked import RankedOptions, drawn_probability, reveal_best
from toolkit.sample_request import Step

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


def random_rank(decoder):
    """order=random: a score that ranks the candidates by a fresh uniform draw, not by the model."""
    def score(logits, ids, p):
        return torch.rand(decoder.z.shape, generator=decoder.gen).to(decoder.device)[decoder.undecided()]
    return score


def _bidirectional(family, net, request, o, device):
    """MDLM: the ranked step of toolkit/samplers/ranked.py on a bidirectional decoder whose window is
    the block and whose denoiser is the block's cache (`_Denoiser`)."""
    mode = _cache_mode(o, request, exact_prefix=o.attention == "block_causal")
    decoder = BidirectionalDecoder.start(family, net, request, device)
    b, n = decoder.z.shape
    spans = block_spans(n, o.block_size, decoder.fixed[0])
    per_block = max(1, request.steps // max(len(spans), 1))
    denoise = _Denoiser(family, net, n, o, mode, device)
    score = random_rank(decoder) if o.order == "random" else drawn_probability
    ranked = RankedOptions(threshold=o.threshold, top_k=o.top_k)
    row_nfe = torch.zeros(b, dtype=torch.long, device=device)
    step = 0
    for a, e in spans:
        decoder.window = (torch.arange(n, device=device) >= a) & (torch.arange(n, device=device) < e)
        for j in itertools.count():
            masked = decoder.undecided()
            if not masked.any():
                break
            decoder.denoise = lambda z, select, first=j == 0: denoise(z, select, a, e, first)
            row_nfe += masked.any(-1)   # a row whose block is already done needs no evaluation
            reveal_best(decoder, family, request, score, ranked, max(per_block - j, 1))
            step += 1
            left = float(((decoder.z == family.mask_id) & ~decoder.fixed).float().mean())
            yield Step(step=step, t=left + float(decoder.changed.float().mean()), s=left, tokens=decoder.z.clone(),
                       changed=decoder.changed, confidence=decoder.confidence.clone(), nfe=decoder.nfe,
                       elapsed=decoder.clock(), row_nfe=row_nfe.clone())


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
