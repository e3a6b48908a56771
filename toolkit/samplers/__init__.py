"""Decoding strategies ("samplers") shared by the diffusion families, chosen per request.

A sampler is a named strategy with a typed options dataclass and a declared capability
(`requires`: the family base class it needs, e.g. MaskedFamily; `attentions`: the
`decode_attention` values it handles); the registry derives the strategies a family supports
from those. Every sampler yields the same `Step` trace records, so the CLI, GUI and evaluation
read them all alike. Adding a strategy: one module that subclasses `Sampler` and calls `register`.
Masked strategies run on the family's decoder (toolkit/decoding/: one contract for bidirectional and
causal-reveal-order denoisers); the ranked-reveal step they share is toolkit/samplers/ranked.py.
"""
from __future__ import annotations

from toolkit.samplers.base import (DEFAULT, SAMPLERS, Sampler, get_sampler, names, parse_options,  # noqa: F401
                                   register, resolve_sampler, sample, split_options, supported)
from toolkit.samplers import ancestral, block, confidence, remdm  # noqa: F401,E402  (registers each strategy)
