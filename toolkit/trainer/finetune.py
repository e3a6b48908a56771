"""Fine-tuning pieces: starting from a checkpoint, and writing a LoRA run's merged checkpoint.

- `init=CKPT` (a run, an embedded model name, a converted checkpoint) takes the family, its
  options, the architecture and the tokenizer from the checkpoint; the optimisation and
  training settings start fresh, and any `key=value` still overrides them (`toolkit.resolve`
  reads the checkpoint's config as the base: `init_base`); `load_init_weights` copies its weights.
- `lora_rank=R` (toolkit/model/lora.py) trains adapters only; at the end of the run the trainer
  writes the merged plain checkpoint to `OUT/merged`.
"""
from __future__ import annotations

import copy
from pathlib import Path

from toolkit.checkpoints.loading import plain_weights
from toolkit.checkpoints.rundir import read_config, resolve_path, save_checkpoint
from toolkit.config import RunConfig
from toolkit.errors import UserError


def load_init_weights(net, name: str, vocab_size: int) -> None:
    """Copy checkpoint `name`'s weights into `net` (checked against the data's vocabulary)."""
    ckpt = resolve_path(name)
    old, _ = read_config(ckpt)
    if old.model.vocab_size != vocab_size:
        raise UserError(f"init={name} has a vocabulary of {old.model.vocab_size} ids but the data's tokenizer"
                        f" has {vocab_size}: fine-tune with the checkpoint's own tokenizer")
    state = plain_weights(ckpt, old)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:   # shape mismatch: another architecture was asked for on the command line
        raise UserError(f"init={name}: its weights do not fit this model ({str(e).splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise UserError(f"init={name}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def save_merged(peft_model, out: Path, cfg: RunConfig) -> Path:
    """Merge the adapters into the base weights and write a plain checkpoint (ends LoRA training)."""
    plain = copy.deepcopy(cfg)
    plain.train.lora_rank = 0
    net = peft_model.merge_and_unload()
    return save_checkpoint(out, plain, net.state_dict(), cfg.data.tokenizer or None)
