"""Checkpoint directories: model.safetensors + config.json + tokenizer.json (+ state.pt).

A checkpoint is self-describing: config.json holds the resolved run config (family, model,
data) and the tokenizer file travels with it. `state.pt` (optimizer, step, loss window)
is only needed to resume training and is loaded weights-only.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from toolkit.config import RunConfig
from toolkit.data.tokenizer import EMBEDDED_TOKENIZER, load_tokenizer
from toolkit.errors import UserError
from toolkit.lora import is_lora_state, merged_state

FORMAT = "dlm-toolkit/1"
EMBEDDED_DIR = Path(__file__).resolve().parent / "assets" / "models"


def save_checkpoint(path: str | Path, cfg: RunConfig, net, tokenizer_path: str | None,
                    train_state: dict | None = None, extra: dict | None = None) -> Path:
    """Write atomically: into a temporary sibling, then rename over the old directory."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    meta = {"format": FORMAT, **cfg.to_dict(), "tokenizer": "tokenizer.json", **(extra or {})}
    (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.copyfile(tokenizer_path or EMBEDDED_TOKENIZER, tmp / "tokenizer.json")
    if train_state is not None:
        torch.save(train_state, tmp / "state.pt")
    old = path.with_name(path.name + ".old")
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)
    return path


def resolve_path(name_or_path: str) -> Path:
    """A checkpoint directory, a run directory holding `checkpoint/`, or an embedded name."""
    p = Path(name_or_path)
    if (p / "checkpoint" / "config.json").is_file():
        return p / "checkpoint"
    if (p / "config.json").is_file():
        return p
    embedded = EMBEDDED_DIR / str(name_or_path)
    if (embedded / "config.json").is_file():
        return embedded
    if p.exists():
        raise UserError(f"{name_or_path} is not a checkpoint directory (no config.json)")
    known = sorted(d.name for d in EMBEDDED_DIR.iterdir()) if EMBEDDED_DIR.is_dir() else []
    raise UserError(f"checkpoint not found: {name_or_path}"
                    + (f" (embedded models: {', '.join(known)})" if known else ""))


def read_config(ckpt: Path) -> tuple[RunConfig, dict]:
    try:
        meta = json.loads((ckpt / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {ckpt / 'config.json'}: {e}") from None
    if not isinstance(meta, dict) or "family" not in meta:
        raise UserError(f"{ckpt / 'config.json'} is not a toolkit checkpoint config")
    return RunConfig.from_dict(meta), meta


def checkpoint_state(ckpt: Path, cfg: RunConfig) -> dict:
    """The backbone's weights; a LoRA fine-tune's adapters are merged into them."""
    try:
        state = load_file(str(ckpt / "model.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"cannot read weights {ckpt / 'model.safetensors'}: {e}") from None
    return merged_state(cfg, state) if is_lora_state(state) else state


def load(name_or_path: str, device: str = "cpu"):
    """Load any checkpoint directory (or embedded model name) into a ready LanguageModel."""
    from toolkit.lm import LanguageModel
    from toolkit.model.backbone import Backbone

    ckpt = resolve_path(name_or_path)
    cfg, meta = read_config(ckpt)
    tokenizer = load_tokenizer(ckpt / meta.get("tokenizer", "tokenizer.json"), (cfg.data.eos_token, cfg.data.mask_token))
    if cfg.model.vocab_size != tokenizer.get_vocab_size():
        raise UserError(f"{ckpt}: model vocabulary {cfg.model.vocab_size} != tokenizer's {tokenizer.get_vocab_size()}")
    state = checkpoint_state(ckpt, cfg)
    net = Backbone(cfg.model)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{ckpt}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    net.to(dtype=torch.float32)
    model = LanguageModel(cfg, tokenizer, net, device=device)
    model.path = str(ckpt)
    return model


def load_train_state(ckpt: Path) -> dict | None:
    f = ckpt / "state.pt"
    if not f.is_file():
        return None
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read training state {f}: {e.__class__.__name__}") from None
