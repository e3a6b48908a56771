"""The output head fused with its cross-entropy, in row chunks: never the full [N, V] logits.

The head is the widest matrix of the model. Computing `logits = x W^T + b` for all N scored
positions, casting them to fp32 and taking a cross-entropy keeps several [N, V] tensors alive
until the backward pass (the logits, their fp32 copy, the log-softmax). Here the rows are taken
`chunk_rows` at a time: per chunk the logits are formed (in the autocast dtype when autocast is
on, as nn.Linear would), the log-sum-exp and the NLL taken in fp32, and the chunk dropped. Only
x, W, b, the targets and the per-row log-sum-exp [N] are kept for the backward pass.

Two variants, because of how a gradient reaches the rows:
- `linear_cross_entropy` returns the per-row NLL [N] and is exact for any per-row gradient. The
  gradient of W, sum_i g_i (softmax_i - onehot_i) x_i^T, mixes rows, and g_i is known only in
  backward, so backward recomputes each chunk's logits: 4 head GEMMs instead of 3.
- `linear_cross_entropy_sum` returns sum_i w_i NLL_i for weights given up front and forms the
  gradients during forward (the "Liger" trick, made exact for per-row weights): 3 head GEMMs,
  and backward only scales them by the incoming scalar.
The families' training losses know their row weights before the forward pass (MDLM's 1/t per
sequence, loss masks, Eso-LM's two phases) and use the second; the NELBO (no backward pass) and
any caller that needs per-row values use the first. Measured on CPU (1 thread, N 4096, d 512,
V 4096; `toolkit/bench/head.py`, figures in docs/fused-head.md), speed / peak memory
against the plain head: per-row 0.92x / 0.38x in fp32, 1.39x / 0.33x in bf16; weighted sum
1.24x / 0.32x, 1.92x / 0.36x. At N 16384, d 768, V 32001 the plain head adds 6 GiB, the fused
one 0.3-0.5 GiB.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def default_chunk_rows(n: int, d: int, vocab: int) -> int:
    """Rows per chunk so that a chunk of logits is about as large as x itself (n x d), >= 64."""
    rows = max(64, -(-n * d // max(vocab, 1)))
    return 1 << (rows - 1).bit_length()   # a power of two: GEMM friendly


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The matmul dtype nn.Linear would use here: the autocast dtype when autocast is on."""
    kind = x.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


def _chunk_logits(x, w, b, exclude):
    """fp32 logits of one chunk (inputs already in the compute dtype), `exclude` at -inf."""
    logits = F.linear(x, w, b).float()
    if exclude is not None:
        logits[:, exclude] = float("-inf")
    return logits


def _spans(n: int, chunk: int):
    return ((s, min(s + chunk, n)) for s in range(0, n, chunk))


def _accumulate(d, rows, xs, w, s, e, grads):
    """Add one chunk's gradients, d = softmax - onehot (fp32) and `rows` the per-row weights [chunk].

    The row weights scale the skinny operands (x rows, the [chunk, d] product) rather than d: a pass
    over [chunk, V] saved. grads: (grad_x [N, d] or None, grad_W fp32 or None, grad_b fp32 or None).
    """
    grad_x, grad_w, grad_b = grads
    if grad_b is not None:
        grad_b.addmv_(d.T, rows)
    d = d.to(w.dtype)
    if grad_x is not None:
        grad_x[s:e] = (d @ w).float().mul_(rows[:, None])
    if grad_w is not None:
        scaled = (xs.float() * rows[:, None]).to(w.dtype)
        if grad_w.dtype == d.dtype:
            grad_w.addmm_(d.T, scaled)
        else:   # bf16 products, accumulated over the chunks in fp32
            grad_w += (d.T @ scaled).float()


def _softmax_minus_onehot(logits, lse, targets):
    """d NLL / d logits of one chunk, in place of its fp32 logits."""
    d = logits.sub_(lse[:, None]).exp_()
    d[torch.arange(d.shape[0], device=d.device), targets] -= 1.0
    return d


def _grad_buffers(x, weight, bias, need):
    need_x, need_w, need_b = need
    return (torch.empty_like(x) if need_x else None,
            torch.zeros(weight.shape, dtype=torch.float32, device=x.device) if need_w else None,
            torch.zeros(weight.shape[0], dtype=torch.float32, device=x.device) if need_b and bias is not None else None)


def _as_param_grads(grads, weight, bias):
    grad_x, grad_w, grad_b = grads
    return (grad_x, None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype))


class _LinearCrossEntropy(torch.autograd.Function):
    """Per-row NLL of softmax(x W^T + b); backward recomputes the logits chunk by chunk."""

    @staticmethod
    def forward(ctx, x, weight, bias, targets, exclude, chunk, dtype):
        with torch.autocast(x.device.type, enabled=False):
            w = weight.to(dtype)
            b = bias.to(dtype) if bias is not None else None
            nll = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
            lse = torch.empty_like(nll)
            for s, e in _spans(x.shape[0], chunk):
                logits = _chunk_logits(x[s:e].to(dtype), w, b, exclude)
                lse[s:e] = torch.logsumexp(logits, dim=-1)
                nll[s:e] = lse[s:e] - logits.gather(1, targets[s:e, None]).squeeze(1)
        ctx.save_for_backward(x, weight, bias, targets, lse)
        ctx.exclude, ctx.chunk, ctx.dtype = exclude, chunk, dtype
        return nll

    @staticmethod
    def backward(ctx, grad_nll):
        x, weight, bias, targets, lse = ctx.saved_tensors
        dtype, g = ctx.dtype, grad_nll.float().contiguous()   # may arrive expanded (a sum's gradient)
        with torch.autocast(x.device.type, enabled=False):
            w = weight.to(dtype)
            b = bias.to(dtype) if bias is not None else None
            grads = _grad_buffers(x, weight, bias, ctx.needs_input_grad[:3])
            for s, e in _spans(x.shape[0], ctx.chunk):
                xs = x[s:e].to(dtype)
                d = _softmax_minus_onehot(_chunk_logits(xs, w, b, ctx.exclude), lse[s:e], targets[s:e])
                _accumulate(d, g[s:e], xs, w, s, e, grads)
        return (*_as_param_grads(grads, weight, bias), None, None, None, None)


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, exclude: int | None = None,
                         chunk_rows: int | None = None) -> torch.Tensor:
    """Per-row NLL [N] (fp32) of `F.cross_entropy(x @ W.T + b, targets)`, logit `exclude` at -inf.

    x: [N, d]; weight: [V, d]; bias: [V] or None; targets: [N] ids. Matches nn.Linear under
    autocast (matmul in the autocast dtype, softmax in fp32); exact gradients for any per-row
    weighting of the result. chunk_rows: rows per chunk (default: `default_chunk_rows`).
    """
    return _eager(_linear_cross_entropy, x, weight, bias, targets, exclude, chunk_rows)


def _eager(fn, *args):
    """fn(*args); under torch.compile behind a graph break, so that the chunk loop runs eagerly
    (dynamo cannot trace it). A @torch.compiler.disable decorator would import torch._dynamo,
    about a second, in every program that imports the model."""
    if torch.compiler.is_compiling():
        return torch.compiler.disable(fn)(*args)
    return fn(*args)


def _linear_cross_entropy(x, weight, bias, targets, exclude, chunk_rows):
    n, d = x.shape
    chunk = chunk_rows or default_chunk_rows(n, d, weight.shape[0])
    return _LinearCrossEntropy.apply(x, weight, bias, targets, exclude, max(1, chunk), _compute_dtype(x))


class _LinearCrossEntropySum(torch.autograd.Function):
    """sum_i weights_i * NLL_i with the gradients formed in forward (3 head GEMMs, not 4)."""

    @staticmethod
    def forward(ctx, x, weight, bias, targets, row_weights, exclude, chunk, dtype):
        need = ctx.needs_input_grad[:3]
        with torch.autocast(x.device.type, enabled=False):
            w = weight.to(dtype)
            b = bias.to(dtype) if bias is not None else None
            total = torch.zeros((), dtype=torch.float32, device=x.device)
            grads = _grad_buffers(x, weight, bias, need)
            rw = row_weights.float().contiguous()
            for s, e in _spans(x.shape[0], chunk):
                xs = x[s:e].to(dtype)
                logits = _chunk_logits(xs, w, b, exclude)
                lse = torch.logsumexp(logits, dim=-1)
                nll = lse - logits.gather(1, targets[s:e, None]).squeeze(1)
                total += torch.where(rw[s:e] != 0, rw[s:e] * nll, 0.0).sum()   # a weight 0 row never counts
                if any(need):
                    _accumulate(_softmax_minus_onehot(logits, lse, targets[s:e]), rw[s:e], xs, w, s, e, grads)
        ctx.grads = _as_param_grads(grads, weight, bias)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grads = tuple(None if t is None else t * grad_total.to(t.dtype) for t in ctx.grads)
        ctx.grads = None
        return (*grads, None, None, None, None, None)


def linear_cross_entropy_sum(x, weight, bias, targets, row_weights, exclude: int | None = None,
                             chunk_rows: int | None = None) -> torch.Tensor:
    """Scalar sum_i row_weights_i * NLL_i; gradients formed during forward (row_weights: [N], no grad).

    Cheaper than `linear_cross_entropy` by one head GEMM, but the weights must be known before
    the call and the result is one number: the per-row NLL is not available to the caller.
    """
    return _eager(_linear_cross_entropy_sum, x, weight, bias, targets, row_weights, exclude, chunk_rows)


def _linear_cross_entropy_sum(x, weight, bias, targets, row_weights, exclude, chunk_rows):
    n, d = x.shape
    chunk = chunk_rows or default_chunk_rows(n, d, weight.shape[0])
    return _LinearCrossEntropySum.apply(x, weight, bias, targets, row_weights.detach(), exclude,
                                        max(1, chunk), _compute_dtype(x))


def unfused_cross_entropy(x, weight, bias, targets, exclude: int | None = None) -> torch.Tensor:
    """The plain computation (full fp32 logits): the reference the fused head is tested against."""
    logits = F.linear(x, weight, bias).float()
    if exclude is not None:
        logits[:, exclude] = float("-inf")
    return F.cross_entropy(logits, targets, reduction="none")
