"""Tokenise documents, pack them into fixed-length blocks, split train/validation.

Blocks are cut from one token stream (documents joined by [EOS]). The split is
deterministic: in every run of 50 consecutive blocks, the last `ceil(50 * val_fraction)`
go to validation, so both splits cover every part of the corpus.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from toolkit.config import DataConfig
from toolkit.data.corpus import AUSTEN_PATH, documents
from toolkit.data.pairs import load_pairs
from toolkit.data.tokenizer import load_tokenizer
from toolkit.errors import UserError

SPLIT_PERIOD = 50
CACHE_DIR = Path.home() / ".cache" / "dlm-toolkit"


@dataclass
class PackedData:
    train: torch.Tensor     # [n_train, seq_len] int64
    val: torch.Tensor       # [n_val, seq_len]
    tokenizer: object
    n_tokens: int
    train_mask: torch.Tensor | None = None   # pairs: [n_train, seq_len] True where the loss covers
    val_mask: torch.Tensor | None = None

    def train_batch(self, indices) -> torch.Tensor:
        return self.train[indices]


def token_stream(cfg: DataConfig, tokenizer) -> np.ndarray:
    eos = tokenizer.token_to_id(cfg.eos_token)
    max_docs = cfg.max_documents or None
    docs = documents(cfg.data, text_field=cfg.text_field, max_documents=max_docs)
    ids: list[int] = []
    batch: list[str] = []

    def flush():
        for enc in tokenizer.encode_batch(batch):
            ids.extend(enc.ids)
            ids.append(eos)
        batch.clear()

    for doc in docs:
        batch.append(doc)
        if len(batch) >= 256:
            flush()
    flush()
    return np.asarray(ids, dtype=np.int32)


def _cache_key(cfg: DataConfig, tokenizer) -> str | None:
    src = Path(cfg.data)
    if cfg.data == "austen":
        src = AUSTEN_PATH
    if not src.is_file():
        return None  # hub datasets: the datasets library caches its own downloads
    h = hashlib.sha256()
    h.update(tokenizer.to_str().encode())
    if cfg.eos_token != "[EOS]":   # another separator id gives another stream
        h.update(cfg.eos_token.encode())
    st = src.stat()
    h.update(f"{src.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def load_data(cfg: DataConfig) -> PackedData:
    tokenizer = load_tokenizer(cfg.tokenizer or None, (cfg.eos_token, cfg.mask_token))
    if cfg.format == "pairs":   # prompt/response rows, one per block, with loss masks
        return PackedData(tokenizer=tokenizer, **load_pairs(cfg, tokenizer))
    key = _cache_key(cfg, tokenizer)
    cached = CACHE_DIR / f"{key}.npy" if key else None
    if cached is not None and cached.is_file():
        stream = np.load(cached)
    else:
        stream = token_stream(cfg, tokenizer)
        if cached is not None:
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")   # one per process: ranks may race here
                np.save(tmp, stream)
                tmp.replace(cached)
            except OSError:
                pass  # a read-only home is fine: we just tokenise again next time
    n_blocks = len(stream) // cfg.seq_len
    if n_blocks < 2:
        raise UserError(f"data '{cfg.data}' has {len(stream)} tokens: too few for two blocks of seq_len={cfg.seq_len}")
    blocks = torch.from_numpy(stream[: n_blocks * cfg.seq_len].astype(np.int64)).view(n_blocks, cfg.seq_len)
    n_val_per_period = max(1, math.ceil(SPLIT_PERIOD * cfg.val_fraction))
    is_val = (torch.arange(n_blocks) % SPLIT_PERIOD) >= SPLIT_PERIOD - n_val_per_period
    if is_val.all() or not is_val.any():
        is_val = torch.zeros(n_blocks, dtype=torch.bool)
        is_val[-1] = True
    return PackedData(train=blocks[~is_val], val=blocks[is_val], tokenizer=tokenizer, n_tokens=len(stream))


@functools.lru_cache(maxsize=1)
def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of training blocks in one epoch (a pure function of seed and epoch).

    Cached (callers slice it, never modify it): a permutation of millions of blocks takes the
    host ~0.1 s, which every step would otherwise spend while the device waits.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the global batch at `step`: consecutive slices of per-epoch shuffles."""
    start = step * batch_size
    out, pos = [], start
    while pos < start + batch_size:
        epoch, offset = divmod(pos, n)
        take = min(n - offset, start + batch_size - pos)
        out.append(epoch_order(n, seed, epoch)[offset: offset + take])
        pos += take
    return torch.cat(out)
