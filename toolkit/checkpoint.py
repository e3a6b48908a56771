"""Checkpoint directories: model.safetensors + config.json + tokenizer.json (+ state.pt).

A checkpoint is self-describing: config.json holds the resolved run config (family, model,
data) and the tokenizer file travels with it. `state.pt` (optimizer, step, loss window)
is only needed to resume training and is loaded weights-only.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from toolkit.config import RunConfig, config_type_problem
from toolkit.data.tokenizer import EMBEDDED_TOKENIZER, load_tokenizer
from toolkit import faults
from toolkit.errors import UserError
from toolkit.rundir import fsync_tree, recover_checkpoint, swap_in

FORMAT = "dlm-toolkit/1"
EMBEDDED_DIR = Path(__file__).resolve().parent / "assets" / "models"


def save_checkpoint(path: str | Path, cfg: RunConfig, net, tokenizer_path: str | None,
                    train_state: dict | None = None, extra: dict | None = None) -> Path:
    """Write atomically: every file into a temporary sibling, fsynced, then swapped in (see rundir).

    config.json is written last, so a directory with a readable one is complete. A failed write
    (disk full, unwritable folder) leaves the previous checkpoint as it was.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        recover_checkpoint(path)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        faults.point("save.weights")
        shutil.copyfile(tokenizer_path or EMBEDDED_TOKENIZER, tmp / "tokenizer.json")
        if train_state is not None:
            torch.save(train_state, tmp / "state.pt")
            faults.point("save.state")
        meta = {"format": FORMAT, **cfg.to_dict(), "tokenizer": "tokenizer.json", **(extra or {})}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        fsync_tree(tmp)
        faults.point("save.fsynced")
        swap_in(tmp, path)
    except (OSError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(e, "strerror", None) or str(e)
        kept = "; the previous checkpoint is intact" if path.exists() else ""
        raise UserError(f"cannot write checkpoint {path}: {reason}{kept}") from None
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
        meta = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:   # ValueError: bad JSON or bytes that are not UTF-8
        raise UserError(f"cannot read {ckpt / 'config.json'}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(meta, dict) or "family" not in meta:
        raise UserError(f"{ckpt / 'config.json'} is not a toolkit checkpoint config")
    problem = config_type_problem(meta)
    if problem:
        raise UserError(f"{ckpt / 'config.json'}: {problem}")
    return RunConfig.from_dict(meta), meta


def load(name_or_path: str, device: str = "cpu"):
    """Load any checkpoint directory (or embedded model name) into a ready LanguageModel."""
    from toolkit.lm import LanguageModel
    from toolkit.model.backbone import Backbone

    ckpt = resolve_path(name_or_path)
    cfg, meta = read_config(ckpt)
    tokenizer = load_tokenizer(ckpt / meta.get("tokenizer", "tokenizer.json"), (cfg.data.eos_token, cfg.data.mask_token))
    if cfg.model.vocab_size != tokenizer.get_vocab_size():
        raise UserError(f"{ckpt}: model vocabulary {cfg.model.vocab_size} != tokenizer's {tokenizer.get_vocab_size()}")
    try:
        state = load_file(str(ckpt / "model.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"cannot read weights {ckpt / 'model.safetensors'}: {e}") from None
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


def load_train_state(ckpt: Path) -> dict | None:
    f = ckpt / "state.pt"
    if not f.is_file():
        return None
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read training state {f}: {e.__class__.__name__}") from None
