"""The transformer backbone shared by every family ("DiT" in the reference code).

Pre-LayerNorm blocks with rotary positions, adaLN time conditioning and an untied output
head. Parameter names follow the reference state dict so released checkpoints load as-is.
One forward serves every attention pattern: bidirectional, causal, or an explicit mask,
with optional explicit positions (Eso-LM feeds tokens in a permuted order) and a KV cache.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from toolkit.config import ModelConfig
from toolkit.model.attention import attention
from toolkit.model.fused_head import linear_cross_entropy, linear_cross_entropy_sum

TIME_FEATURES = 256  # sinusoidal features of sigma


class LayerNorm(nn.Module):
    """LayerNorm in fp32 with a weight and no bias."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.dim = dim

    def forward(self, x):
        return F.layer_norm(x.float(), [self.dim]).to(x.dtype) * self.weight.to(x.dtype)


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class TimeEmbedding(nn.Module):
    """sigma -> sinusoidal features -> MLP -> SiLU; gives the adaLN conditioning vector."""

    def __init__(self, cond_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIME_FEATURES, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))
        half = TIME_FEATURES // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / half), persistent=False)

    def forward(self, sigma):  # sigma: [B]
        angles = sigma.float()[:, None] * self.freqs[None]
        return F.silu(self.mlp(torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)))


class Rotary(nn.Module):
    """Non-interleaved rotary embedding on q and k, looked up at explicit positions."""

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_dim, 2).float() / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.max_len = 0
        self._build(max_len)

    def _build(self, n: int):
        angles = torch.outer(torch.arange(n, device=self.inv_freq.device).float(), self.inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self.max_len = n

    def tables(self, positions, max_pos: int | None = None):  # positions: [B, L] long -> cos, sin [B, 1, L, hd]
        """max_pos: the largest position when the caller knows it (no device sync, no compile graph break)."""
        top = int(positions.max()) if max_pos is None else max_pos
        if top >= self.max_len:
            self._build(top + 1)
        return self.cos[positions][:, None], self.sin[positions][:, None]

    @staticmethod
    def apply(x, cos, sin):
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos.to(x.dtype) + torch.cat([-x2, x1], dim=-1) * sin.to(x.dtype)


@dataclass
class KVCache:
    """Keys and values per layer for tokens already processed (AR, Eso-LM sampling)."""
    keys: list = field(default_factory=list)
    values: list = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, self.n_heads = cfg.d_model, cfg.n_heads
        self.norm1, self.norm2 = LayerNorm(d), LayerNorm(d)
        self.attn_qkv = nn.Linear(d, 3 * d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.mlp_ratio * d, d))
        self.adaLN_modulation = nn.Linear(cfg.cond_dim, 6 * d)

    def forward(self, x, c, cos, sin, backend, causal, mask, cache: KVCache | None, layer: int, keep: int):
        b, n, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c)[:, None].chunk(6, dim=-1)
        qkv = self.attn_qkv(modulate(self.norm1(x), shift1, scale1))
        q, k, v = qkv.view(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = Rotary.apply(q, cos, sin), Rotary.apply(k, cos, sin)
        if cache is not None:
            if layer < len(cache.keys):
                k_all = torch.cat([cache.keys[layer], k], dim=2)
                v_all = torch.cat([cache.values[layer], v], dim=2)
                cache.keys[layer] = k_all[:, :, : cache.keys[layer].shape[2] + keep]
                cache.values[layer] = v_all[:, :, : cache.values[layer].shape[2] + keep]
                k, v = k_all, v_all
            else:
                cache.keys.append(k[:, :, :keep])
                cache.values.append(v[:, :, :keep])
        y = attention(q, k, v, backend=backend, causal=causal, mask=mask)
        x = x + gate1 * self.attn_out(y.transpose(1, 2).reshape(b, n, d))
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class VocabEmbedding(nn.Module):
    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab_size, dim))
        nn.init.normal_(self.embedding, std=0.02)

    def forward(self, tokens=None, soft=None):
        """Ids [B, L], or token distributions [B, L, V] (relaxed inputs, Duo's curriculum)."""
        return F.embedding(tokens, self.embedding) if soft is None else soft.to(self.embedding.dtype) @ self.embedding


class FinalLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm_final = LayerNorm(cfg.d_model)
        self.linear = nn.Linear(cfg.d_model, cfg.vocab_size)
        self.adaLN_modulation = nn.Linear(cfg.cond_dim, 2 * cfg.d_model)

    def forward(self, x, c, targets=None, exclude: int | None = None, weights=None):
        """x: [B, L, d] with c: [B, cond], or selected positions x: [M, d] with c: [M, cond].

        Logits [..., V]; or, given `targets` (ids shaped like x without d), the per-position NLL
        (fp32, logit `exclude` at -inf) from the chunked fused head: no [..., V] tensor is kept;
        with `weights` too (shaped like targets, no gradient), the scalar sum of weights * NLL.
        """
        mod = self.adaLN_modulation(c)
        shift, scale = (mod[:, None] if x.dim() == 3 else mod).chunk(2, dim=-1)
        h = modulate(self.norm_final(x), shift, scale)
        if targets is None:
            return self.linear(h)
        args = (h.reshape(-1, h.shape[-1]), self.linear.weight, self.linear.bias, targets.reshape(-1))
        if weights is not None:   # known up front: gradients formed in forward, one head product fewer
            return linear_cross_entropy_sum(*args, weights.reshape(-1), exclude)
        return linear_cross_entropy(*args, exclude).view(targets.shape)


class Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.vocab_embed = VocabEmbedding(cfg.vocab_size, cfg.d_model)
        self.sigma_map = TimeEmbedding(cfg.cond_dim)
        self.rotary_emb = Rotary(cfg.d_model // cfg.n_heads, cfg.max_seq_len)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.output_layer = FinalLayer(cfg)
        self.backend = "sdpa"
        # the precision this network computes in when called on its own (sampling, scoring): set by
        # LanguageModel from `precision=auto|bf16|fp32`, so a family's sampler called directly and the
        # same sampler called through LanguageModel compute alike. The trainer keeps fp32 here and
        # wraps its steps in its own autocast.
        self.precision = "fp32"
        for m in [*(b.adaLN_modulation for b in self.blocks), self.output_layer.adaLN_modulation,
                  self.output_layer.linear]:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, tokens=None, sigma=None, *, soft=None, positions=None, causal: bool = False,
                mask=None, cache: KVCache | None = None, keep: int | None = None, select=None,
                targets=None, exclude: int | None = None, weights=None, max_position: int | None = None):
        """Logits [B, L, V] (or [M, V] at the M positions where the bool [B, L] `select` is True).

        tokens: ids [B, L] (or `soft` distributions [B, L, V]); sigma: [B] noise level (None = 0);
        positions: rotary positions [B, L] (default 0..L-1, offset by the cache length);
        max_position: the largest entry of `positions` when the caller knows it (no device sync);
        causal / mask: the attention pattern (mask: bool [B or 1, 1, L, L_keys], True = visible);
        cache: a KVCache to attend to and extend with the first `keep` tokens (default all);
        select: compute the output head only where needed (masked diffusion scores masked
        positions only: the head is the widest matrix, so this saves a large share of FLOPs);
        targets: ids [B, L] (or [M] with `select`): return the per-position cross-entropy instead
        of logits ([B, L] or [M], fp32, logit `exclude` at -inf) from the chunked fused head;
        weights: per-position weights shaped like `targets` (no gradient): return the scalar
        sum of weights * cross-entropy instead (the training losses know their weights up front).
        """
        device = self.vocab_embed.embedding.device.type   # an outer autocast (the trainer's) is left as it is
        own = self.precision == "bf16" and not torch.is_autocast_enabled(device)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=own) if own else nullcontext():
            return self._forward(tokens, sigma, soft, positions, causal, mask, cache, keep, select, targets,
                                 exclude, weights, max_position)

    def _forward(self, tokens, sigma, soft, positions, causal, mask, cache, keep, select, targets, exclude,
                 weights, max_position):
        x = self.vocab_embed(tokens, soft)
        b, n = x.shape[:2]
        max_pos = max_position
        if positions is None:
            start = cache.length if cache is not None else 0
            positions = torch.arange(start, start + n, device=x.device).expand(b, n)
            max_pos = start + n - 1
        if sigma is None:
            sigma = torch.zeros(b, device=x.device)
        c = self.sigma_map(sigma)
        cos, sin = self.rotary_emb.tables(positions, max_pos)
        keep = n if keep is None else keep
        for i, block in enumerate(self.blocks):
            x = block(x, c, cos, sin, self.backend, causal, mask, cache, i, keep)
        if select is not None:
            rows = torch.arange(b, device=x.device)[:, None].expand(b, n)[select]
            if targets is not None and targets.shape == select.shape:
                targets = targets[select]
            if weights is not None and weights.shape == select.shape:
                weights = weights[select]
            return self.output_layer(x[select], c[rows], targets, exclude, weights)
        return self.output_layer(x, c, targets, exclude, weights)

    @property
    def fused_head(self) -> bool:
        """Whether the families ask this backbone for per-position NLL (`targets=`) during training.
        `auto`: on a CPU (less memory, as fast or faster); not on a GPU, where the chunk loop is a
        graph break that cost 1.6x in tokens/s under torch.compile on an H200 (docs/performance.md)."""
        value = str(self.cfg.fused_head).lower()
        if value == "auto":
            return self.output_layer.linear.weight.device.type != "cuda"
        return value == "true"

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.vocab_embed.embedding.numel() if non_embedding else n


def unwrap_backbone(net) -> "Backbone | None":
    """The Backbone inside a pass-through wrapper (torch.compile, DDP, peft), or None for any
    other callable (a test double, a wrapper that edits logits)."""
    for _ in range(8):
        if isinstance(net, Backbone):
            return net
        if isinstance(net, torch.nn.parallel.DistributedDataParallel):
            net = net.module
        elif type(net).__name__ == "OptimizedModule" and hasattr(net, "_orig_mod"):   # torch.compile
            net = net._orig_mod
        elif callable(getattr(net, "get_base_model", None)):   # a peft model
            net = net.get_base_model()
        else:
            return None
    return None


def fuses_head(net) -> bool:
    """True when `net` is (or wraps) a Backbone with `fused_head` on: `net(..., targets=...)` returns NLL."""
    backbone = unwrap_backbone(net)
    return backbone is not None and backbone.fused_head


def selects_rows(net) -> bool:
    """Whether scoring a subset of positions runs the head on those rows only (`head_rows`).

    Picking rows with a boolean mask needs their count on the host: free on a CPU, a device sync
    and a dynamic shape on a GPU. `all` avoids both by running the head on every row and zeroing the
    unscored ones; on an H200 under torch.compile `selected` was still faster (fewer FLOPs), so it
    is the default everywhere."""
    backbone = unwrap_backbone(net)
    return backbone is None or backbone.cfg.head_rows != "all"
