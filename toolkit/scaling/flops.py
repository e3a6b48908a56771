"""FLOPs accounting as the paper counts it (METHODS.md, "Scaling-law methodology")."""
from __future__ import annotations


def forward_flops(n_layers: int, d_model: int, vocab_size: int, seq_len: int, attention: bool = False) -> float:
    """Forward FLOPs per sequence: 2 T (12 L d^2 + d V); + 4 T^2 d per layer with attention scores."""
    f = 2.0 * seq_len * (12 * n_layers * d_model ** 2 + d_model * vocab_size)
    if attention:
        f += 4.0 * seq_len ** 2 * d_model * n_layers
    return f


def train_flops_per_sequence(n_layers: int, d_model: int, vocab_size: int, seq_len: int,
                             attention: bool = False) -> float:
    """Training compute per sequence: forward + backward = 3 x forward (~6 N D)."""
    return 3.0 * forward_flops(n_layers, d_model, vocab_size, seq_len, attention)
