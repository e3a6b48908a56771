"""MDLM: masked (absorbing-state) diffusion with the SUBS parameterisation.

Forward: each token becomes [MASK] with probability 1 - alpha_t. NELBO per sequence:
E_t [ -alpha'_t / (1 - alpha_t) * sum over masked positions of -log p(x_l | z_t) ] (1/t here).
`loss=low_var` trains on the plain masked cross-entropy summed and divided by all B*L tokens
(the reference's normalisation; the paper's ~12% compute saving).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from toolkit.decoding import seeded_start
from toolkit.families.base import MaskedFamily, covered_tokens, register
from toolkit.options import option
from toolkit.sample_request import Clock, SampleRequest, Step, draw, filter_probs, time_grid

LOSSES = ("elbo", "low_var")


@dataclass
class MaskedOptions:
    loss: str = option("elbo", "the training loss: the NELBO, or low_var (masked cross-entropy over all tokens)",
                       LOSSES)


@register
class MDLM(MaskedFamily):
    name = "mdlm"
    reference_names = r"\bmdlm\b|\bsubs\b"   # how the reference and its releases name it
    Options = MaskedOptions
    decode_attention = "bidirectional"   # the denoiser sees every position (toolkit/samplers/block.py)

    # -- forward process ---------------------------------------------------------------
    def corrupt(self, x0, t, generator=None, loss_mask=None):
        """z_t: each token masked independently with probability 1 - alpha_t (only where loss_mask)."""
        u = torch.rand(x0.shape, generator=generator, device=x0.device)
        masked = u < (1 - self.schedule.alpha(t))[:, None]
        if loss_mask is not None:
            masked &= loss_mask
        return torch.where(masked, self.mask_id, x0), masked

    def forward_sample(self, x0, t, generator=None):
        return self.corrupt(x0, t, generator)[0]

    def denoise(self, net, z_t, t):
        """Logits of x0 given z_t (the backbone ignores time: sigma = 0)."""
        return self.subs_logits(net(z_t))

    def weight(self, t):
        """-alpha'_t / (1 - alpha_t): the continuous-time ELBO weight (1/t for alpha_0 = 1)."""
        return -self.schedule.alpha_prime(t) / (1 - self.schedule.alpha(t))

    def selected_ce(self, net, tokens, targets, select, weights=None, **net_kwargs):
        """[B, L] cross-entropy where `select` is True (0 elsewhere); the head runs only there.
        With per-sequence `weights` [B]: the scalar sum over sequences of weight * cross-entropy."""
        rows = None if weights is None else weights[:, None].expand(select.shape)
        return self.token_nll(net, tokens, targets, select=select, weights=rows, **net_kwargs)   # SUBS: never [MASK]

    def diffusion_terms(self, net, x0, t, generator=None, loss_mask=None, weights=None):
        """(cross-entropy [B, L] at the masked positions, or its `weights`-weighted sum; the mask)."""
        z_t, masked = self.corrupt(x0, t, generator, loss_mask)
        return self.selected_ce(net, z_t, x0, masked, weights), masked

    # -- objectives --------------------------------------------------------------------
    def nelbo(self, net, x0, t, generator=None, loss_mask=None):
        ce, _ = self.diffusion_terms(net, x0, t, generator, loss_mask)
        return self.weight(t) * ce.sum(1)

    def loss(self, net, x0, t, generator=None, loss_mask=None):
        # low_var: the plain masked cross-entropy. Both divide by every token of the batch, not by
        # the masked ones (as the reference): then a batch's loss is the mean of its chunks' losses
        # whatever the ranks and micro-steps. The weights go in up front (the fused head uses them).
        weights = torch.ones_like(t) if self.options.loss == "low_var" else self.weight(t)
        total, _ = self.diffusion_terms(net, x0, t, generator, loss_mask, weights)
        return total / covered_tokens(x0, loss_mask)

    # -- sampling ----------------------------------------------------------------------
    def sample(self, net, request: SampleRequest, device="cpu") -> Iterator[Step]:
        """Ancestral sampling; with the no-change cache a step that reveals nothing costs no NFE."""
        gen, z, fixed = seeded_start(request, self.mask_id, device)
        confidence = fixed.float()
        grid, clock = time_grid(request.steps), Clock()
        logits, nfe = None, 0
        row_nfe = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)   # a row alone: re-evaluated once changed
        stale = torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
        for k in range(request.steps):
            t, s = grid[k], grid[k + 1]
            u_reveal = torch.rand(z.shape, generator=gen).to(device)
            u_token = torch.rand(z.shape, generator=gen).to(device)
            if logits is None or not request.use_cache:
                logits = self.denoise(net, z, t.expand(z.shape[0]))
                nfe += 1
                row_nfe += stale if request.use_cache else 1
                stale[:] = False
            masked = z == self.mask_id
            masked &= ~fixed
            reveal = masked & (u_reveal < self.reveal_probability(t, s).to(device))
            if reveal.any():
                # only the revealed rows need the (costly, top-p sorting) filter and a draw
                probs = filter_probs(logits[reveal], request.temperature, request.top_p)
                new = draw(probs, u_token[reveal])
                z = z.masked_scatter(reveal, new)
                conf = probs.gather(-1, new[:, None]).squeeze(-1)
                confidence = confidence.masked_scatter(reveal, conf)
                logits = None  # the input changed: the next step needs a fresh evaluation
            stale |= reveal.any(-1)
            yield Step(step=k + 1, t=float(t), s=float(s), tokens=z.clone(), changed=reveal,
                       confidence=confidence.clone(), nfe=nfe, elapsed=clock(), row_nfe=row_nfe.clone())
