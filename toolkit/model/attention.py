"""Attention backends behind one function: SDPA (default), xformers (GPU), plain math (tests).

All take q, k, v shaped [batch, heads, length, head_dim] and one of:
  mask=None + causal=False  -> bidirectional
  mask=None + causal=True   -> causal
  mask=bool [batch or 1, 1, Lq, Lk] (True = may attend)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from toolkit.config import ATTENTION_BACKENDS
from toolkit.errors import UserError

try:  # xformers has no CPU path; only used when installed and the tensors are on a GPU
    import xformers
    import xformers.ops as xops
    from xformers.ops.fmha.attn_bias import LowerTriangularFromBottomRightMask  # not re-exported by xformers.ops
    if not getattr(xformers, "_has_cpp_library", True):
        # importable, but its CUDA kernels did not load (built for another CUDA/torch): it would
        # fail at the first call, so treat it as absent
        XFORMERS_MISSING = (f"xformers {xformers.__version__} is installed but its CUDA kernels did not load "
                            f"(run `python -m xformers.info`)")
        xops = None
    else:
        XFORMERS_MISSING = ""
except Exception as exc:  # ImportError, or a broken CUDA build
    xops = None
    XFORMERS_MISSING = f"xformers is not usable here ({type(exc).__name__}: {exc})"

BACKENDS = ATTENTION_BACKENDS   # declared beside the `attention` option (toolkit/config.py, a leaf)


def xformers_available() -> bool:
    return xops is not None and torch.cuda.is_available()


def resolve_backend(name: str, device: torch.device | str) -> str:
    """'auto' -> xformers on a GPU when installed, else SDPA."""
    dev = torch.device(device)
    if name == "auto":
        return "xformers" if (xops is not None and dev.type == "cuda") else "sdpa"
    if name == "xformers" and (xops is None or dev.type != "cuda"):
        raise UserError("attention=xformers needs the xformers package and a CUDA device"
                        + (f": {XFORMERS_MISSING}" if xops is None else ""))
    return name


def math_attention(q, k, v, causal: bool = False, mask: torch.Tensor | None = None):
    """The textbook formula, in fp32: the reference the fast backends are tested against."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale
    if causal:
        lq, lk = q.shape[-2], k.shape[-2]
        allowed = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)
        scores = scores.masked_fill(~allowed, float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v.float()).to(q.dtype)


def sdpa_attention(q, k, v, causal: bool = False, mask: torch.Tensor | None = None):
    if causal and q.shape[-2] != k.shape[-2]:
        # queries are the last rows of a longer causal sequence (KV cache): build the mask
        lq, lk = q.shape[-2], k.shape[-2]
        mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)
        causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def xformers_attention(q, k, v, causal: bool = False, mask: torch.Tensor | None = None):
    # xformers wants [batch, length, heads, head_dim]
    qx, kx, vx = (t.transpose(1, 2) for t in (q, k, v))
    bias = None
    if causal:
        bias = LowerTriangularFromBottomRightMask() if q.shape[-2] != k.shape[-2] \
            else xops.LowerTriangularMask()
    elif mask is not None:
        b, h, lq, lk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
        pad = (lk + 7) // 8 * 8  # xformers wants the bias' last dim aligned to 8
        bias = torch.zeros(b, h, lq, pad, dtype=q.dtype, device=q.device)
        bias[..., :lk] = torch.zeros((), dtype=q.dtype, device=q.device).masked_fill(
            ~mask.expand(b, h, lq, lk), float("-inf")) if mask.dtype == torch.bool else mask
        bias = bias[..., :lk]
    out = xops.memory_efficient_attention(qx, kx, vx, attn_bias=bias)
    return out.transpose(1, 2)


def attention(q, k, v, backend: str = "sdpa", causal: bool = False, mask: torch.Tensor | None = None):
    if backend == "sdpa":
        return sdpa_attention(q, k, v, causal, mask)
    if backend == "xformers":
        return xformers_attention(q, k, v, causal, mask)
    if backend == "math":
        return math_attention(q, k, v, causal, mask)
    raise ValueError(f"unknown attention backend {backend}")
