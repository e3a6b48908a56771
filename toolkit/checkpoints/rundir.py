"""The run directory and the checkpoint directory: their layout, and every read and write of them.

    RUN/                    a training run (`out=`)
      config.json           the resolved run config
      runtime.json          how it ran (device, ranks, attention backend, ...)
      metrics.jsonl         one JSON record per logged step
      checkpoint/           a checkpoint directory (below), replaced atomically at each save
    CHECKPOINT/             self-describing: loadable on its own
      model.safetensors     the weights
      config.json           the run config (family, model, data) + format, step, tokens
      tokenizer.json        the tokenizer the model was trained with
      state.pt              optimizer, step and loss window: only needed to resume (read weights-only)

No other module names these files: they ask this one.
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
from toolkit.data.tokenizer import EMBEDDED_TOKENIZER
from toolkit.errors import UserError
from toolkit.resolve import config_from_dict

FORMAT = "dlm-toolkit/1"
EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
METRICS, RUN_CONFIG, RUNTIME, CHECKPOINT = "metrics.jsonl", "config.json", "runtime.json", "checkpoint"
WEIGHTS, CONFIG, TOKENIZER, STATE = "model.safetensors", "config.json", "tokenizer.json", "state.pt"


# -- metrics.jsonl ---------------------------------------------------------------------------
def metrics_file(run: str | Path) -> Path:
    return Path(run) / METRICS


def has_metrics(run: str | Path) -> bool:
    return metrics_file(run).exists()


def read_metrics(run: str | Path) -> list[dict]:
    """The logged records, in order; [] when there are none.

    A line cut short (a run killed while writing) ends the list: what follows it cannot be trusted.
    """
    f = metrics_file(run)
    if not f.is_file():
        return []
    out = []
    for line in f.read_text().splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def append_metrics(run: str | Path, record: dict) -> None:
    with open(metrics_file(run), "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(run: str | Path, step: int) -> None:
    """Keep the records up to `step` (those a resumed run will not write again); drop a cut line."""
    f = metrics_file(run)
    if not f.is_file():
        return
    keep = [r for r in read_metrics(run) if r["step"] <= step]
    f.write_text("".join(json.dumps(r) + "\n" for r in keep))


def remove_metrics(run: str | Path) -> None:
    metrics_file(run).unlink(missing_ok=True)


def write_run_info(run: str | Path, cfg: RunConfig, runtime: dict) -> None:
    """The run's resolved config and how it executes (written at every start or resume)."""
    cfg.save(Path(run) / RUN_CONFIG)
    (Path(run) / RUNTIME).write_text(json.dumps(runtime, indent=2) + "\n")


# -- checkpoint directories ------------------------------------------------------------------
def checkpoint_dir(run: str | Path) -> Path:
    return Path(run) / CHECKPOINT


def has_train_state(ckpt: str | Path) -> bool:
    return (Path(ckpt) / STATE).is_file()


def save_checkpoint(path: str | Path, cfg: RunConfig, state_dict: dict, tokenizer_path: str | None,
                    train_state: dict | None = None, extra: dict | None = None) -> Path:
    """Write atomically: into a temporary sibling, then rename over the old directory."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    save_file(state, str(tmp / WEIGHTS))
    meta = {"format": FORMAT, **cfg.to_dict(), "tokenizer": TOKENIZER, **(extra or {})}
    (tmp / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    shutil.copyfile(tokenizer_path or EMBEDDED_TOKENIZER, tmp / TOKENIZER)
    if train_state is not None:
        torch.save(train_state, tmp / STATE)
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
    if (p / CHECKPOINT / CONFIG).is_file():
        return p / CHECKPOINT
    if (p / CONFIG).is_file():
        return p
    embedded = EMBEDDED_DIR / str(name_or_path)
    if (embedded / CONFIG).is_file():
        return embedded
    if p.exists():
        raise UserError(f"{name_or_path} is not a checkpoint directory (no config.json)")
    known = sorted(d.name for d in EMBEDDED_DIR.iterdir()) if EMBEDDED_DIR.is_dir() else []
    raise UserError(f"checkpoint not found: {name_or_path}"
                    + (f" (embedded models: {', '.join(known)})" if known else ""))


def read_config(ckpt: Path) -> tuple[RunConfig, dict]:
    try:
        meta = json.loads((ckpt / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {ckpt / CONFIG}: {e}") from None
    if not isinstance(meta, dict) or "family" not in meta:
        raise UserError(f"{ckpt / CONFIG} is not a toolkit checkpoint config")
    return config_from_dict(meta), meta


def tokenizer_file(ckpt: Path, meta: dict) -> Path:
    return ckpt / meta.get("tokenizer", TOKENIZER)


def load_weights(ckpt: Path) -> dict:
    try:
        return load_file(str(ckpt / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"cannot read weights {ckpt / WEIGHTS}: {e}") from None


def load_train_state(ckpt: Path) -> dict | None:
    f = ckpt / STATE
    if not f.is_file():
        return None
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read training state {f}: {e.__class__.__name__}") from None
