"""Autoregressive baseline: causal attention, next-token cross-entropy, KV-cached sampling."""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from toolkit.errors import UserError
from toolkit.families.base import Family, covered_tokens, register
from toolkit.model.backbone import KVCache
from toolkit.sampling import Clock, SampleRequest, Step, draw, filter_probs


@register
class AR(Family):
    name = "ar"
    exact_likelihood = True

    def _inputs(self, x0):
        """Shift right behind a BOS id, so all L tokens are predicted (like the diffusion families)."""
        bos = torch.full_like(x0[:, :1], self.bos_id)
        return torch.cat([bos, x0[:, :-1]], dim=1)

    def nelbo(self, net, x0, t=None, generator=None, loss_mask=None):
        logits = net(self._inputs(x0), causal=True)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), x0.flatten(), reduction="none").view_as(x0)
        return (nll if loss_mask is None else nll * loss_mask).sum(1)   # a prompt conditions, unscored

    def loss(self, net, x0, t=None, generator=None, loss_mask=None):
        return self.nelbo(net, x0, loss_mask=loss_mask).sum() / covered_tokens(x0, loss_mask)

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
        context = torch.cat([torch.full((b, 1), self.bos_id, device=device, dtype=torch.long), tokens[:, :p]], 1)
        nfe = 0
        for i in range(p, n):
            uniform = torch.rand(b, generator=gen).to(device)
            if cache is not None:
                feed = context if cache.length == 0 else context[:, -1:]
                logits = net(feed, causal=True, cache=cache)[:, -1]
            else:
                logits = net(context, causal=True)[:, -1]
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
