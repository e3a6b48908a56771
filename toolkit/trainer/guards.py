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
from toolkit.trainer.state import TrainState


class NonFiniteError(UserError):
    """The loss or the gradients became NaN/inf: the run stops before anything is overwritten."""


class NonFiniteGuard:
    """Non-finite loss/gradient detection that never stalls the host inside a step.

    Each step turns its loss and gradient norm into flags on the device; `found_inf` hands them
    to fused AdamW, whose kernel then skips the update and reverts its step counter on the
    device. The host reads the flags (one small tensor) only in `check`, which the trainer calls
    at its log, eval and save points and before anything is written. Under on_nonfinite=stop
    the skip is sticky: once a step is bad every later update is skipped too, so the weights
    stay those of the last good step until `check` stops the run.
    """

    LOSS, GRADIENT = 1, 2

    def __init__(self, device, stop: bool):
        self.stop = stop
        # since the last check: [steps flagged, the first one (1-based), its problem (LOSS/GRADIENT)]
        self.window = torch.zeros(3, dtype=torch.int64, device=device)

    def flag(self, step: int, bad_loss: torch.Tensor, bad_grad: torch.Tensor) -> torch.Tensor:
        """Record step `step` (0-based); its optimizer's found_inf: float32 0-dim, 1.0 = skip the update."""
        bad = bad_loss | bad_grad
        count, first, kind = self.window.unbind()
        fresh = bad & (count == 0)
        problem = torch.where(bad_loss, self.LOSS, self.GRADIENT)
        self.window = torch.stack([count + bad.long(), torch.where(fresh, step + 1, first),
                                   torch.where(fresh, problem, kind)])
        skip = self.window[0] > 0 if self.stop else bad
        return skip.to(torch.float32)

    def check(self, state: TrainState, checkpoint: Path, verbose: bool) -> None:
        """The host read: stop the run (on_nonfinite=stop) or add the skipped steps to `state.skipped`
        (and report them where `verbose`). `checkpoint`: where the last good one is kept."""
        count, first, kind = self.window.tolist()
        if not count:
            return
        problem = "loss" if kind == self.LOSS else "gradient"
        where = f"at step {first}"
        if self.stop:
            kept = (f"the last good checkpoint (step {state.saved_step}) is kept in {checkpoint}"
                    if state.saved_step is not None else "no checkpoint was written yet")
            raise NonFiniteError(f"non-finite {problem} {where}: run stopped; {kept} "
                                 "(on_nonfinite=skip skips such steps instead)")
        state.skipped += count
        self.window.zero_()
        if verbose:
            later = f" and at {count - 1} later step(s)" if count > 1 else ""
            print(f"warning: non-finite {problem} {where}{later}: skipped ({state.skipped} so far)", file=sys.stderr)


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
    """keep_best=true: out/best holds the weights (no optimizer state) of the lowest val_nelbo so far
    (the value itself is part of the TrainState)."""

    def __init__(self, path: Path):
        self.path = path

    def saved(self) -> tuple[float, int]:
        """(val_nelbo, step) of the weights on disk, (inf, -1) if none: a state.pt written before
        TrainState held the best value resumes from these."""
        try:
            meta = json.loads((self.path / CONFIG).read_text())
            return float(meta["val_nelbo"]), int(meta.get("step", -1))
        except (OSError, ValueError, KeyError, TypeError):
            return math.inf, -1

    def save(self, cfg, state_dict: dict, tokenizer_path, step: int, val: float) -> None:
        save_checkpoint(self.path, cfg, state_dict, tokenizer_path, None, extra={"step": step, "val_nelbo": val})
