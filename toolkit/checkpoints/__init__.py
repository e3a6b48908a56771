"""Checkpoints and run directories: the layout and every read/write of them (rundir), loading
(loading), importing reference checkpoints (convert, imported_tokenizers), the Hub (hub)."""
from __future__ import annotations

from toolkit.checkpoints.hub_client import from_pretrained, looks_like_hub_id, push_to_hub  # noqa: F401
from toolkit.checkpoints.loading import load_checkpoint
from toolkit.checkpoints.rundir import (EMBEDDED_DIR, load_train_state, read_config, resolve_path,  # noqa: F401
                                        save_checkpoint)
from toolkit.lm import LanguageModel


def load(name_or_path: str, device: str = "cpu", precision: str = "auto") -> LanguageModel:
    """A ready LanguageModel from a checkpoint directory, run directory, embedded name or hub id,
    computing in `precision` (auto | bf16 | fp32; see LanguageModel.resolved_precision)."""
    if looks_like_hub_id(name_or_path):
        model = from_pretrained(name_or_path, device=device)
    else:
        model = load_checkpoint(name_or_path, device)
    if precision != model.precision:
        model.precision = precision
    return model
