"""Attention backends agree: xformers vs SDPA (GPU) and each vs the plain-math formula.

For every attention pattern the families use (bidirectional: MDLM, Duo; causal: AR; an explicit
mask with permuted positions: Eso-LM; a KV cache: queries shorter than keys), in fp32 and under
bf16 autocast: max |a - b| / max |b| of the logits and of one gradient.
"""
from __future__ import annotations

import torch

from toolkit.bench.train_speed import random_backbone
from toolkit.config import ModelConfig
from toolkit.model.backbone import KVCache


def patterns(n: int, device, g: torch.Generator) -> dict:
    """Attention patterns, as keyword arguments of Backbone.forward (plus a cache flag)."""
    order = torch.rand(1, n, generator=g, device="cpu").argsort(1).to(device)
    rank = order.argsort(1)
    mask = (rank[:, None, :] <= rank[:, :, None])[:, None]           # Eso-LM's permuted causal mask
    return {"bidirectional": {}, "causal": {"causal": True},
            "explicit_mask": {"mask": mask, "positions": order},   # tokens fed in permuted order
            "kv_cache": {"causal": True, "use_cache": True}}


def run_pattern(net, tokens, sigma, kw: dict):
    kw = dict(kw)
    if kw.pop("use_cache", False):   # prefill 3/4 of the sequence, then the rest against the cache
        cut = tokens.shape[1] * 3 // 4
        cache = KVCache()
        net(tokens[:, :cut], sigma, cache=cache, **kw)
        return net(tokens[:, cut:], sigma, cache=cache, **kw)
    return net(tokens, sigma, **kw)


def parity(backends: tuple[str, str], device, cfg: ModelConfig, seq_len: int, batch: int = 2) -> list[dict]:
    """One row per pattern and dtype comparing backends[0] against backends[1]."""
    net = random_backbone(cfg, device)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq_len), generator=g).to(device)
    sigma = torch.rand(batch, generator=g).to(device)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for name, kw in patterns(seq_len, device, g).items():
            if "positions" in kw:
                kw = {**kw, "positions": kw["positions"].expand(batch, seq_len)}
            outs, grads = [], []
            for backend in backends:
                net.backend = backend
                net.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                    out = run_pattern(net, tokens, sigma, kw).float()
                out.square().mean().backward()
                outs.append(out.detach())
                grads.append(net.blocks[0].attn_qkv.weight.grad.detach().clone())
            rel = float((outs[0] - outs[1]).abs().max() / outs[1].abs().max())
            grel = float((grads[0] - grads[1]).abs().max() / grads[1].abs().max().clamp(min=1e-30))
            tol, gtol = (2e-2, 5e-2) if dtype == torch.bfloat16 else (1e-4, 1e-3)
            rows.append({"a": backends[0], "b": backends[1], "pattern": name, "dtype": str(dtype).split(".")[-1],
                         "max_rel_diff_logits": rel, "max_rel_diff_grad": grel, "ok": rel < tol and grel < gtol})
    net.backend = "sdpa"
    return rows
