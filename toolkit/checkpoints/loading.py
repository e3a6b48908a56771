"""`toolkit.load`: a checkpoint directory (or run directory, or embedded name) as a ready LanguageModel."""
from __future__ import annotations

import torch

from toolkit.checkpoints.rundir import load_weights, read_config, resolve_path, tokenizer_file
from toolkit.data.tokenizer import load_tokenizer
from toolkit.errors import UserError
from toolkit.hardware import tune_allocator
from toolkit.lm import LanguageModel
from toolkit.model.backbone import Backbone
from toolkit.model.lora import is_lora_state, merged_state


def plain_weights(ckpt, cfg) -> dict:
    """The backbone's weights; a LoRA fine-tune's adapters are merged into them."""
    state = load_weights(ckpt)
    return merged_state(cfg, state) if is_lora_state(state) else state


def load_checkpoint(name_or_path: str, device: str = "cpu") -> LanguageModel:
    """Load any checkpoint directory (or embedded model name) into a ready LanguageModel."""
    tune_allocator()   # sampling allocates [rows, vocabulary] temporaries every step
    ckpt = resolve_path(name_or_path)
    cfg, meta = read_config(ckpt)
    tokenizer = load_tokenizer(tokenizer_file(ckpt, meta), (cfg.data.eos_token, cfg.data.mask_token))
    if cfg.model.vocab_size != tokenizer.get_vocab_size():
        raise UserError(f"{ckpt}: model vocabulary {cfg.model.vocab_size} != tokenizer's {tokenizer.get_vocab_size()}")
    state = plain_weights(ckpt, cfg)
    net = Backbone(cfg.model)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:   # a tensor of another shape than the config says
        first = next((x.strip() for x in str(e).splitlines()[1:] if x.strip()), str(e))
        raise UserError(f"{ckpt}: weights do not match the config ({first[:200]})") from None
    if missing or unexpected:
        raise UserError(f"{ckpt}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    net.to(dtype=torch.float32)
    model = LanguageModel(cfg, tokenizer, net, device=device)
    model.path = str(ckpt)
    return model
