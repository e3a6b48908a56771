"""Model sizes of a scaling study: architecture of a preset name and its parameter counts.

Counts follow the backbone (docs/methods.md) and the reference's convention: "non-embedding" is all
parameters minus the V x d input embedding, so the output head is included.
"""
from __future__ import annotations

from dataclasses import dataclass

from toolkit import presets
from toolkit.errors import UserError

COND_DIM = 128        # time-embedding width (adaLN input)
FREQ_DIM = 256        # sinusoidal features fed to the time-embedding MLP


@dataclass(frozen=True)
class Size:
    name: str
    n_layers: int
    d_model: int
    n_heads: int


def size(name: str) -> Size:
    """The architecture of a preset name, or a UserError listing the known names."""
    try:
        n_layers, d_model, n_heads = presets.preset(name)
    except KeyError:
        raise UserError(f"unknown size '{name}' (known: {', '.join(presets.preset_names())})") from None
    return Size(name, n_layers, d_model, n_heads)


def param_counts(n_layers: int, d_model: int, vocab_size: int, cond_dim: int = COND_DIM,
                 mlp_ratio: int = 4) -> dict[str, int]:
    """Exact parameter counts of the backbone: total, non_embedding (total - V d), blocks (12 L d^2 + small)."""
    d = d_model
    block = (3 * d * d + d * d                              # attn_qkv, attn_out (no bias)
             + 2 * mlp_ratio * d * d + mlp_ratio * d + d     # mlp weights and biases
             + 2 * d                                         # two LayerNorm weights
             + 6 * d * cond_dim + 6 * d)                     # adaLN modulation
    time_mlp = FREQ_DIM * cond_dim + cond_dim + cond_dim * cond_dim + cond_dim
    head = d + 2 * d * cond_dim + 2 * d + d * vocab_size + vocab_size
    blocks = n_layers * block
    non_embedding = blocks + time_mlp + head
    return {"total": non_embedding + vocab_size * d, "non_embedding": non_embedding, "blocks": blocks}


def non_embedding_params(name: str, vocab_size: int) -> int:
    s = size(name)
    return param_counts(s.n_layers, s.d_model, vocab_size)["non_embedding"]
