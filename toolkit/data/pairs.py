"""Prompt/response pairs for supervised fine-tuning: one row per pair, not packed.

Row layout (seq_len ids): prompt ids, response ids, then [EOS] up to seq_len. The loss
mask is True on the response and its [EOS] padding (the model learns where to stop) and
False on the prompt, which every family keeps clean and never scores. Sources: a local
JSONL file, a local dataset folder, or a Hugging Face dataset name (e.g. `gsm8k` with
`data_config=main`); the field names are configurable (`prompt_field`, `response_field`).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Iterable, Iterator

import torch

from toolkit.errors import UserError

SPLIT_PERIOD = 50


def prompt_text(prompt: str) -> str:
    """The text a prompt is shown as, in fine-tuning and in task evaluation alike."""
    return prompt.rstrip() + "\n"


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each non-blank line; a malformed line is a one-line error."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"data file not found: {path}")
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{n}: expected a JSON object per line")
            yield n, row


def hub_rows(name: str, config: str = "", split: str = "train") -> Iterator[tuple[int, dict]]:
    """Rows of a Hugging Face dataset (a hub name, or a local folder of json/jsonl/csv/parquet)."""
    import datasets   # deferred: heavy, only for dataset folders and hub names
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # the hub raises many kinds; all mean "cannot use this name"
        first = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise UserError(f"cannot load dataset '{name}' (split {split}): {first}") from None
    for i, row in enumerate(ds):
        yield i + 1, dict(row)


def pair_rows(source: str, config: str = "", split: str = "train") -> Iterator[tuple[str, int, dict]]:
    """(where, line, row) from a .jsonl file or a dataset (folder or hub name)."""
    if source.endswith((".jsonl", ".json")) or Path(source).is_file():
        for n, row in read_jsonl(source):
            yield source, n, row
    elif Path(source).is_dir() or re.fullmatch(r"[\w.-]+(/[\w.-]+)?", source):
        for n, row in hub_rows(source, config, split):
            yield f"{source}[{split}]", n, row
    else:
        raise UserError(f"data file not found: {source}")


def field_text(row: dict, name: str, where: str, n: int, what: str) -> str:
    if name not in row:
        raise UserError(f"{where}:{n}: no field '{name}' for the {what} (fields: {', '.join(sorted(row))});"
                        f" set {what}_field=")
    value = row[name]
    if not isinstance(value, str):
        raise UserError(f"{where}:{n}: field '{name}' is not text")
    if not value.strip():
        raise UserError(f"{where}:{n}: the {what} is empty")
    return value


def encode_pairs(rows: Iterable[tuple[str, int, dict]], tokenizer, seq_len: int, eos_id: int,
                 prompt_field: str, response_field: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, seq_len] ids and the [N, seq_len] loss mask (response and its [EOS] padding)."""
    ids, masks = [], []
    for where, n, row in rows:
        prompt = tokenizer.encode(prompt_text(field_text(row, prompt_field, where, n, "prompt"))).ids
        response = tokenizer.encode(field_text(row, response_field, where, n, "response")).ids
        used = len(prompt) + len(response) + 1   # at least one [EOS] ends the response
        if used > seq_len:
            raise UserError(f"{where}:{n}: prompt + response are {used} tokens with the final [EOS]:"
                            f" longer than seq_len={seq_len}")
        pad = seq_len - len(prompt) - len(response)
        ids.append(prompt + response + [eos_id] * pad)
        masks.append([False] * len(prompt) + [True] * (len(response) + pad))
    if not ids:
        raise UserError("the fine-tuning data has no rows")
    return torch.tensor(ids, dtype=torch.long), torch.tensor(masks, dtype=torch.bool)


def load_pairs(cfg, tokenizer) -> dict:
    """Train/val ids and loss masks: every 50 rows, the last ceil(50 * val_fraction) go to validation."""
    eos = tokenizer.token_to_id(cfg.eos_token)
    rows = pair_rows(cfg.data, cfg.data_config, "train")
    if cfg.max_documents:
        rows = (r for i, r in enumerate(rows) if i < cfg.max_documents)
    ids, mask = encode_pairs(rows, tokenizer, cfg.seq_len, eos, cfg.prompt_field, cfg.response_field)
    if len(ids) < 2:
        raise UserError(f"data '{cfg.data}' has {len(ids)} pair: at least two are needed (train and validation)")
    n_val = max(1, math.ceil(SPLIT_PERIOD * cfg.val_fraction))
    is_val = (torch.arange(len(ids)) % SPLIT_PERIOD) >= SPLIT_PERIOD - n_val
    if is_val.all() or not is_val.any():
        is_val = torch.zeros(len(ids), dtype=torch.bool)
        is_val[-1] = True
    return {"train": ids[~is_val], "val": ids[is_val], "n_tokens": int(mask.sum()),
            "train_mask": mask[~is_val], "val_mask": mask[is_val]}
