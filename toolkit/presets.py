"""Model size presets: a CPU grid for laptop-scale studies and the paper's 27-size grid.

A preset is (n_layers, d_model, n_heads). Paper names are ~16 L d^2 non-embedding parameters.
"""
from __future__ import annotations

# The paper's grid (docs/methods.md, "Scaling accounting").
PAPER_GRID: dict[str, tuple[int, int, int]] = {
    "6M": (6, 256, 4), "19M": (8, 384, 6), "34M": (8, 512, 8), "48M": (9, 576, 9),
    "66M": (10, 640, 10), "85M": (13, 640, 10), "113M": (12, 768, 12), "142M": (15, 768, 12),
    "170M": (18, 768, 12), "180M": (14, 896, 14), "206M": (16, 896, 14), "231M": (18, 896, 14),
    "268M": (16, 1024, 16), "302M": (18, 1024, 16), "336M": (20, 1024, 16),
    "472M": (18, 1280, 10), "551M": (21, 1280, 10), "571M": (18, 1408, 11),
    "629M": (24, 1280, 10), "666M": (21, 1408, 11), "761M": (24, 1408, 11),
    "831M": (22, 1536, 12), "944M": (25, 1536, 12), "1233M": (24, 1792, 14),
    "1476M": (22, 2048, 16), "1678M": (25, 2048, 16), "2121M": (28, 2176, 17),
}

# A CPU grid spanning ~0.007M-3.5M block parameters (12 L d^2), a ~500x range; with the output
# head of a 4k vocabulary, 0.14M-5.6M non-embedding parameters. The two smallest exist so that
# iso-FLOP valleys at 1e12-3e12 FLOPs have sizes on both sides of their minimum.
CPU_GRID: dict[str, tuple[int, int, int]] = {
    "cpu-4xs": (1, 24, 2),    # 0.0069M
    "cpu-3xs": (2, 32, 2),    # 0.025M
    "cpu-xxs": (2, 48, 2),    # 0.055M
    "cpu-xs": (2, 64, 2),     # 0.098M
    "cpu-s": (3, 96, 3),      # 0.33M
    "cpu-m": (4, 128, 4),     # 0.79M
    "cpu-l": (5, 160, 5),     # 1.5M
    "cpu-xl": (6, 192, 6),    # 2.7M
    "cpu-xxl": (8, 192, 6),   # 3.5M
}

ALIASES = {"tiny": "cpu-m", "small": "cpu-xl"}

PRESETS = {**CPU_GRID, **PAPER_GRID}


def preset(name: str) -> tuple[int, int, int]:
    """(n_layers, d_model, n_heads) of a preset name; KeyError if unknown."""
    return PRESETS[ALIASES.get(name, name)]


def preset_names() -> list[str]:
    return list(ALIASES) + list(PRESETS)
