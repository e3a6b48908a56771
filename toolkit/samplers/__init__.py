"""Decoding strategies ("samplers") shared by the diffusion families, chosen per request.

A sampler is a named strategy with a typed options dataclass; a family lists the samplers it
supports in `Family.samplers`. Every sampler yields the same `Step` trace records, so the CLI,
GUI and evaluation read them all alike. Adding a strategy: one module here that subclasses
`Sampler` and calls `register`, and its name in the `samplers` tuple of the families it fits.
"""
from __future__ import annotations

from toolkit.samplers.base import (DEFAULT, SAMPLERS, Sampler, get_sampler, names, opt, parse_options,  # noqa: F401
                                   register, resolve, sample, split_options, supported)
from toolkit.samplers import ancestral, block, confidence, remdm  # noqa: F401,E402  (registers each strategy)
