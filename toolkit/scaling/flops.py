"""FLOPs accounting as the paper counts it (docs/methods.md, "Scaling accounting").

Three accountings of one forward pass over a sequence of T tokens:
- `paper`: 2 T (12 L d^2 + d V), attention scores excluded (the budgets and the fits use this);
- `attention`: the above + 4 T^2 d per layer (QK^T and the weighted sum of V);
- `reference`: the paper's figure + per layer 13 T d + T^2 h, small element-wise and softmax
  terms that we reconstructed by regression on the reference's published per-model values;
  it lands within 0.005% of all seven, against ~0.3% for `paper`. Informational only.
"""
from __future__ import annotations

import math

from toolkit.errors import UserError

ACCOUNTINGS = ("paper", "attention", "reference")


def forward_flops(n_layers: int, d_model: int, vocab_size: int, seq_len: int, attention: bool = False) -> float:
    """Forward FLOPs per sequence: 2 T (12 L d^2 + d V); + 4 T^2 d per layer with attention scores."""
    f = 2.0 * seq_len * (12 * n_layers * d_model ** 2 + d_model * vocab_size)
    if attention:
        f += 4.0 * seq_len ** 2 * d_model * n_layers
    return f


def reference_forward_flops(n_layers: int, d_model: int, n_heads: int, vocab_size: int, seq_len: int) -> float:
    """The paper's figure plus the small per-layer terms of the reference's per-model files."""
    small = n_layers * (13.0 * seq_len * d_model + float(seq_len) ** 2 * n_heads)
    return forward_flops(n_layers, d_model, vocab_size, seq_len) + small


def train_flops_per_sequence(n_layers: int, d_model: int, vocab_size: int, seq_len: int,
                             attention: bool = False) -> float:
    """Training compute per sequence: forward + backward = 3 x forward (~6 N D)."""
    return 3.0 * forward_flops(n_layers, d_model, vocab_size, seq_len, attention)


def steps_for_budget(budget: float, n_layers: int, d_model: int, vocab_size: int, seq_len: int,
                     batch_size: int) -> int:
    """max_steps = floor(C / (3 F B)): the optimizer steps a compute budget C buys."""
    per_step = train_flops_per_sequence(n_layers, d_model, vocab_size, seq_len) * batch_size
    return int(math.floor(budget / per_step * (1 + 1e-12)))  # tolerate round-off at exact multiples


def require_steps(budget: float, size: str, n_layers: int, d_model: int, vocab_size: int, seq_len: int,
                  batch_size: int) -> int:
    """steps_for_budget, or a UserError naming the smallest budget that buys one step."""
    steps = steps_for_budget(budget, n_layers, d_model, vocab_size, seq_len, batch_size)
    if steps < 1:
        one = train_flops_per_sequence(n_layers, d_model, vocab_size, seq_len) * batch_size
        raise UserError(f"budget {budget:.3g} FLOPs is too small for one step of {size} "
                        f"(batch {batch_size} x {seq_len} tokens needs {one:.3g})")
    return steps


def flops_report(n_layers: int, d_model: int, n_heads: int, vocab_size: int, seq_len: int) -> dict:
    """Every accounting of one sequence, forward and training (3x forward)."""
    fwd = {"paper": forward_flops(n_layers, d_model, vocab_size, seq_len),
           "attention": forward_flops(n_layers, d_model, vocab_size, seq_len, attention=True),
           "reference": reference_forward_flops(n_layers, d_model, n_heads, vocab_size, seq_len)}
    return {"forward_per_sequence": fwd,
            "train_per_sequence": {k: 3.0 * v for k, v in fwd.items()},
            "train_per_token": {k: 3.0 * v / seq_len for k, v in fwd.items()}}
