"""Decoders: the state of one masked decoding run, below both the families and the strategies.

A family's own reverse process (Eso-LM's) and the decoding strategies (toolkit/samplers/) both run
on a decoder, so decoders live here and import neither layer: a family is read only through its
attributes (`mask_id`, `subs_logits`, `decode_attention`; `sequential_logits` for causal order).

The decoder contract (the same shapes for both decoders, so a strategy is one loop):
- `masked()`: positions [B, Q] (long) still to decode; a row with fewer pads with PAD (-1);
- `uniforms(positions)`: [B, Q] uniform draws for one step, in the decoder's seeded layout;
- `logits(positions)`: raw logits [B, Q, V] at those positions (one NFE; zeros at PAD);
- `commit(positions, tokens, confidence)`: make positions [B, K] clean, in that order (PAD skipped);
- `left()`, `free`, `nothing_to_decode()`, `step_record(step, t, s)`;
- `ragged_rows`: whether rows may reveal different numbers of positions per step.
`start_decoder(family, ...)` picks the decoder from the family's declared `decode_attention`.
"""
from __future__ import annotations

from toolkit.decoding.bidirectional import BidirectionalDecoder
from toolkit.decoding.causal_order import CausalOrderDecoder, permuted_order  # noqa: F401
from toolkit.decoding.start import PAD, masked_tokens_init, scatter_rows, seeded_start  # noqa: F401
from toolkit.sample_request import SampleRequest

DECODERS = {"bidirectional": BidirectionalDecoder, "causal_order": CausalOrderDecoder}


def decoder_class(family) -> type:
    """The decoder for a family (instance or class) from its declared `decode_attention`."""
    return DECODERS[family.decode_attention]


def start_decoder(family, net, request: SampleRequest, device):
    """The family's decoder at its seeded start."""
    return decoder_class(family).start(family, net, request, device)
