"""Autoregressive baseline: causal attention, next-token cross-entropy, KV-cached sampling.

As in the reference, the [MASK] id is never predicted: its logit is set to -inf before every
softmax (loss, NLL and sampling), so a released checkpoint's untrained [MASK] row adds nothing
to the normaliser. Two scoring protocols (docs/methods.md, "AR"):
- `score=bos` (toolkit runs): the [EOS] id is prepended as the BOS and all L tokens of a block are targets;
- `score=reference` (imported checkpoints, set by `toolkit.convert`): the block's first token is
  context only and the L - 1 tokens after it are targets, as the reference's `x[:, 1:]` does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from toolkit.errors import UserError
from toolkit.families.base import Family, covered_tokens, register
from toolkit.model.backbone import KVCache
from toolkit.options import option
from toolkit.sample_request import Clock, SampleRequest, Step, draw, filter_probs


SCORING = ("bos", "reference")


@dataclass
class AROptions:
    score: str = option("bos", "bos: BOS + all L tokens scored; reference: the first token is context (L - 1 scored)",
                        SCORING)


@register
class AR(Family):
    name = "ar"
    reference_names = r"\bar\b|autoregressive"   # how the reference and its releases name it
    Options = AROptions
    imported_options = {"score": "reference"}
    exact_likelihood = True

    def _inputs_targets(self, x0):
        """(inputs, targets) of the scoring protocol: see the module docstring."""
        if self.options.score == "reference":
            return x0[:, :-1], x0[:, 1:]
        bos = torch.full_like(x0[:, :1], self.eos_id)
        return torch.cat([bos, x0[:, :-1]], dim=1), x0

    def scored_tokens(self, x0) -> int:
        return x0.shape[0] * (x0.shape[1] - 1) if self.options.score == "reference" else x0.numel()

    def next_token_logits(self, net, tokens, **kwargs):
        """Causal logits with the [MASK] id suppressed (the reference's -inf on that row)."""
        return self.without_mask(net(tokens, causal=True, **kwargs))

    def nelbo(self, net, x0, t=None, generator=None, loss_mask=None):
        inputs, targets = self._inputs_targets(x0)
        ce = self.token_nll(net, inputs, targets, causal=True)   # [MASK] suppressed, as in sampling
        if loss_mask is not None:   # a prompt conditions, unscored
            ce = ce * self._target_mask(loss_mask, targets)
        return ce.sum(1)

    def _target_mask(self, loss_mask, targets):
        """The loss mask at the targets' positions (the reference protocol does not score x0[:, 0])."""
        return loss_mask[:, loss_mask.shape[1] - targets.shape[1]:]

    def loss(self, net, x0, t=None, generator=None, loss_mask=None):
        inputs, targets = self._inputs_targets(x0)
        scored = None if loss_mask is None else self._target_mask(loss_mask, targets)
        weights = torch.ones(targets.shape, device=x0.device) if scored is None else scored.float()
        covered = covered_tokens(targets, scored)   # the targets: L-1 per row under score=reference
        # the weights are known before the forward pass: the fused head uses them (token_nll)
        return self.token_nll(net, inputs, targets, weights=weights, causal=True) / covered

    def sample(self, net, request: SampleRequest, device="cpu") -> Iterator[Step]:
        if request.fixed:
            raise UserError("the autoregressive family supports a prompt prefix, not fixed positions")
        gen = torch.Generator(device="cpu").manual_seed(request.seed)
        b, n, p = request.num_samples, request.length, request.prompt_length
        tokens = torch.full((b, n), self.mask_id, dtype=torch.long, device=device)
        confidence = torch.zeros(b, n, device=device)
        if p:
            tokens[:, :p] = request.prompt_rows(device)
            confidence[:, :p] = 1.0
        clock, cache = Clock(), KVCache() if request.use_cache else None
        context = torch.cat([torch.full((b, 1), self.eos_id, device=device, dtype=torch.long), tokens[:, :p]], 1)
        nfe = 0
        for i in range(p, n):
            uniform = torch.rand(b, generator=gen).to(device)
            if cache is not None:
                feed = context if cache.length == 0 else context[:, -1:]
                logits = self.next_token_logits(net, feed, cache=cache)[:, -1]
            else:
                logits = self.next_token_logits(net, context)[:, -1]
            nfe += 1
            probs = filter_probs(logits, request.temperature, request.top_p)
            new = draw(probs, uniform)
            tokens[:, i] = new
            confidence[:, i] = probs.gather(-1, new[:, None]).squeeze(-1)
            context = torch.cat([context, new[:, None]], dim=1)
            changed = torch.zeros(b, n, dtype=torch.bool, device=device)
            changed[:, i] = True
            yield Step(step=i - p + 1, t=1 - (i - p) / (n - p), s=1 - (i - p + 1) / (n - p),
                       tokens=tokens.clone(), changed=changed, confidence=confidence.clone(),
                       nfe=nfe, elapsed=clock())
