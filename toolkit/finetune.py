"""Fine-tuning pieces the trainer uses: starting from a checkpoint, and LoRA adapters.

- `init=CKPT` (a run, an embedded model name, a converted checkpoint) takes the family, its
  options, the architecture and the tokenizer from the checkpoint; the optimisation and
  training settings start fresh, and any `key=value` still overrides them.
- `lora_rank=R` trains low-rank adapters (the `peft` library) on the blocks' linear layers,
  everything else frozen. A LoRA run's checkpoint holds the adapters; `toolkit.load` merges
  them on load, and the trainer also writes the merged plain checkpoint to `OUT/merged`.
"""
from __future__ import annotations

import re
from pathlib import Path

from toolkit.errors import UserError


def init_config(name: str, families: list[str]):
    """A RunConfig seeded from checkpoint `name` (family, options, model, tokenizer, seq_len)."""
    from toolkit.checkpoint import read_config, resolve_path
    from toolkit.config import RunConfig

    ckpt = resolve_path(name)
    old, meta = read_config(ckpt)
    if families and families[-1] != old.family:
        raise UserError(f"init={name} is a {old.family} checkpoint: family={families[-1]} cannot change that")
    cfg = RunConfig(family=old.family, options=old.options, model=old.model)
    cfg.data.tokenizer = str(ckpt / meta.get("tokenizer", "tokenizer.json"))
    cfg.data.eos_token, cfg.data.mask_token = old.data.eos_token, old.data.mask_token
    cfg.data.seq_len = old.data.seq_len
    cfg.train.init = name
    return cfg


def load_init_weights(net, name: str, vocab_size: int) -> None:
    """Copy checkpoint `name`'s weights into `net` (checked against the data's vocabulary)."""
    from toolkit.checkpoint import checkpoint_state, read_config, resolve_path

    ckpt = resolve_path(name)
    old, _ = read_config(ckpt)
    if old.model.vocab_size != vocab_size:
        raise UserError(f"init={name} has a vocabulary of {old.model.vocab_size} ids but the data's tokenizer"
                        f" has {vocab_size}: fine-tune with the checkpoint's own tokenizer")
    state = checkpoint_state(ckpt, old)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:   # shape mismatch: another architecture was asked for on the command line
        raise UserError(f"init={name}: its weights do not fit this model ({str(e).splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise UserError(f"init={name}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def lora_pattern(targets: str) -> str:
    names = [x.strip() for x in targets.split(",") if x.strip()]
    if not names:
        raise UserError("lora_targets is empty")
    return r"blocks\.\d+\.(" + "|".join(re.escape(n) for n in names) + ")"


def add_lora(net, train_cfg):
    """Wrap `net`'s block linears with LoRA adapters in place; returns the peft model (for merging)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UserError("lora_rank needs the 'peft' package: pip install 'dlm-toolkit[finetune]'") from None
    config = LoraConfig(r=train_cfg.lora_rank, lora_alpha=train_cfg.lora_alpha, lora_dropout=train_cfg.lora_dropout,
                        target_modules=lora_pattern(train_cfg.lora_targets))
    try:
        return get_peft_model(net, config)
    except ValueError as e:   # e.g. no module matched the targets
        raise UserError(f"cannot add LoRA adapters: {str(e).splitlines()[0]}") from None


def is_lora_state(state: dict) -> bool:
    return any(".lora_A." in k for k in state)


def merged_state(cfg, state: dict) -> dict:
    """Plain backbone weights from a LoRA checkpoint's state (W + scale * B A per adapted layer)."""
    from toolkit.model.backbone import Backbone

    net = Backbone(cfg.model)
    peft_model = add_lora(net, cfg.train)
    net.load_state_dict(state)
    return peft_model.merge_and_unload().state_dict()


def save_merged(peft_model, out: Path, cfg) -> Path:
    """Merge the adapters into the base weights and write a plain checkpoint (ends LoRA training)."""
    import copy

    from toolkit.checkpoint import save_checkpoint
    plain = copy.deepcopy(cfg)
    plain.train.lora_rank = 0
    net = peft_model.merge_and_unload()
    return save_checkpoint(out, plain, net, cfg.data.tokenizer or None)
