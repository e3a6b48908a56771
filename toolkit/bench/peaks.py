"""The machine's own limit: the best matrix-product rate, at the model's GEMM shapes and square.

Every throughput in the report is divided by one of these, measured in the same process a
moment earlier, so figures from busy or different machines stay comparable. bf16 on CPU runs
the way training runs it (fp32 tensors under autocast, which hands oneDNN bf16 kernels); on a
GPU the operands are bf16 tensors (tensor cores).
"""
from __future__ import annotations

import torch

from toolkit.bench.timing import autocast, best_seconds
from toolkit.config import ModelConfig

PRECISIONS = ("fp32", "bf16")


def gemm_shapes(m: ModelConfig, tokens: int) -> dict[str, tuple[int, int, int]]:
    """(rows, inner, cols) of each linear layer of a training forward on `tokens` tokens."""
    d, h = m.d_model, m.mlp_ratio * m.d_model
    return {"qkv": (tokens, d, 3 * d), "attn_out": (tokens, d, d), "mlp_up": (tokens, d, h),
            "mlp_down": (tokens, h, d), "head": (tokens, d, m.vocab_size)}


def gemm_rate(shape: tuple[int, int, int], precision: str, device: torch.device, budget_s: float) -> float:
    """Best FLOP/s of one linear layer x[m, k] @ w[n, k]^T."""
    m, k, n = shape
    dtype = torch.bfloat16 if precision == "bf16" and device.type == "cuda" else torch.float32
    x = torch.randn(m, k, device=device, dtype=dtype)
    w = torch.randn(n, k, device=device, dtype=dtype)

    def run():
        with autocast(device, precision), torch.no_grad():
            torch.nn.functional.linear(x, w)

    return 2 * m * k * n / best_seconds(run, device, warmup=2, repeats=3, budget_s=budget_s, min_sample_s=0.02)


def model_gemm_peak(m: ModelConfig, tokens: int, precision: str, device: torch.device, budget_s: float) -> dict:
    """The rate of the model's own GEMMs: total FLOPs of one layer's products (and the head) over
    their summed best times, i.e. what a perfect kernel schedule of this model could reach."""
    shapes = gemm_shapes(m, tokens)
    rates = {name: gemm_rate(s, precision, device, budget_s / len(shapes)) for name, s in shapes.items()}
    flops = {name: 2 * a * b * c for name, (a, b, c) in shapes.items()}
    weight = {name: (m.n_layers if name != "head" else 1) for name in shapes}
    total = sum(weight[n] * flops[n] for n in shapes)
    seconds = sum(weight[n] * flops[n] / rates[n] for n in shapes)
    return {"flops_per_s": total / seconds, "per_shape_flops_per_s": rates, "tokens": tokens}


def square_peak(size: int, precision: str, device: torch.device, budget_s: float) -> float:
    return gemm_rate((size, size, size), precision, device, budget_s)
