"""LoRA adapters on the backbone (the `peft` library): add them, and merge them back.

A LoRA run's checkpoint holds the frozen base weights and the adapters (`*.lora_A/B.*` keys);
`merged_state` turns such a state into plain backbone weights (W + scale * B A per layer), which
is how `toolkit.load` reads it. peft is an optional dependency (`pip install '.[finetune]'`).
"""
from __future__ import annotations

import re

from toolkit.errors import UserError
from toolkit.model.backbone import Backbone


def lora_pattern(targets: str) -> str:
    """peft's `target_modules` regex: the named linear layers of every block."""
    names = [x.strip() for x in targets.split(",") if x.strip()]
    if not names:
        raise UserError("lora_targets is empty")
    return r"blocks\.\d+\.(" + "|".join(re.escape(n) for n in names) + ")"


def add_lora(net, train_cfg):
    """Wrap `net`'s block linears with LoRA adapters in place (the rest frozen); returns the peft model."""
    try:
        from peft import LoraConfig, get_peft_model   # deferred: peft is optional (the finetune extra)
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
    """Plain backbone weights from a LoRA checkpoint's state (`cfg`: its RunConfig)."""
    net = Backbone(cfg.model)
    peft_model = add_lora(net, cfg.train)
    net.load_state_dict(state)
    return peft_model.merge_and_unload().state_dict()
