"""Corpora, the tokenizer and packing into fixed-length blocks."""
from toolkit.data.packing import PackedData, batch_indices, load_data  # noqa: F401
from toolkit.data.tokenizer import EOS, MASK, load_tokenizer  # noqa: F401
