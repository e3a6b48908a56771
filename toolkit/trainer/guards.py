"""What keeps a training run's last good state: non-finite detection, the best-val checkpoint, and
the last N checkpoints (`keep_last`). Small pieces the trainer calls at its step and save points."""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path

import torch

from toolkit.checkpoints.rundir import CONFIG, fsync_path, fsync_tree, save_checkpoint
from toolkit.errors import UserError


class NonFiniteError(UserError):
    """The loss or the gradients became NaN/inf: the run stops before anything is overwritten."""


def check_finite(loss_sum: float, grad_norm, all_sum) -> str | None:
    """'loss', 'gradient' or None; every rank reaches the same answer (all_sum of the flags)."""
    if hasattr(grad_norm, "full_tensor"):   # FSDP2 returns a DTensor
        grad_norm = grad_norm.full_tensor()
    bad_loss = 0.0 if math.isfinite(loss_sum) else 1.0
    bad_grad = 0.0 if bool(torch.isfinite(grad_norm).all()) else 1.0
    bad_loss, bad_grad = all_sum(bad_loss), all_sum(bad_grad)
    if bad_loss:
        return "loss"
    return "gradient" if bad_grad else None


def nonfinite(tr, problem: str) -> float:
    """A step whose loss or gradient is NaN/inf: stop (on_nonfinite=stop) or count it as skipped (NaN loss)."""
    where = f"at step {tr.step + 1}"
    if tr.cfg.train.on_nonfinite == "stop":
        kept = (f"the last good checkpoint (step {tr.saved_step}) is kept in {tr.out / 'checkpoint'}"
                if tr.saved_step is not None else "no checkpoint was written yet")
        raise NonFiniteError(f"non-finite {problem} {where}: run stopped; {kept} "
                             "(on_nonfinite=skip skips such steps instead)")
    tr.skipped += 1
    if tr.dist.main:
        print(f"warning: non-finite {problem} {where}: step skipped ({tr.skipped} so far)", file=sys.stderr)
    return float("nan")


def keep_history(ckpt: Path, history: Path, step: int, keep: int) -> Path:
    """Copy the checkpoint just written into history/step-N (hard links: no extra disk) and keep the newest `keep`."""
    history.mkdir(exist_ok=True)
    dest = history / f"step-{step:09d}"
    tmp = history / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in ckpt.iterdir():
        try:
            os.link(f, tmp / f.name)
        except OSError:      # no hard links on this filesystem
            shutil.copy2(f, tmp / f.name)
    fsync_tree(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    fsync_path(history)
    for old in sorted(p for p in history.iterdir() if p.name.startswith("step-"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


class BestKeeper:
    """keep_best=true: out/best holds the weights (no optimizer state) of the lowest val_nelbo so far."""

    def __init__(self, path: Path):
        self.path, self.value = path, math.inf

    def load(self) -> None:
        """On resume: the best value so far comes from the saved checkpoint itself."""
        try:
            self.value = float(json.loads((self.path / CONFIG).read_text())["val_nelbo"])
        except (OSError, ValueError, KeyError, TypeError):
            self.value = math.inf

    def improves(self, val: float) -> bool:
        return math.isfinite(val) and val < self.value

    def save(self, cfg, state_dict: dict, tokenizer_path, step: int, val: float) -> None:
        save_checkpoint(self.path, cfg, state_dict, tokenizer_path, None, extra={"step": step, "val_nelbo": val})
