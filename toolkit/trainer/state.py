"""A run's progress: the one mutable object the trainer keeps, saved and restored as a whole.

Everything else the Trainer holds is set up once from the config (data, family, network,
optimizer, ranks). Tokens seen and FLOPs are `step` times fixed per-step amounts, and every
random draw is seeded by (seed, step, chunk) (step.py), so no counter or RNG state is kept
beside `step`: a resumed run repeats an uninterrupted one exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from toolkit.trainer.metrics_log import LogWindow


@dataclass
class TrainState:
    """Who changes what: `Trainer.train_step` advances `step`; the loop feeds `window`;
    `NonFiniteGuard.check` adds to `skipped`; `Trainer.save_best` sets `best_val`/`best_step`;
    `Trainer.save` and `Trainer.resume` set `saved_step` (not saved: it is the step on disk)."""

    step: int = 0                   # optimizer steps done
    skipped: int = 0                # steps skipped for a non-finite loss/gradient (on_nonfinite=skip)
    best_val: float = math.inf      # lowest validation NELBO so far (keep_best=true)
    best_step: int = -1             # its step (-1: none yet)
    saved_step: int | None = None   # the step of the last checkpoint written or resumed from
    window: LogWindow = field(default_factory=LogWindow)   # the loss sums and elapsed time of the next record

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The entries of state.pt this object owns (the optimizer and the family add theirs).

        The key names are those of the checkpoints written before this class existed."""
        loss_sum, loss_count = self.window.totals()
        return {"step": torch.tensor(self.step), "skipped": torch.tensor(self.skipped),
                "loss_window": torch.tensor(loss_sum, dtype=torch.float64), "loss_count": torch.tensor(loss_count),
                "elapsed": torch.tensor(self.window.elapsed, dtype=torch.float64),
                "best_val": torch.tensor(self.best_val, dtype=torch.float64), "best_step": torch.tensor(self.best_step)}

    def load_state_dict(self, saved: dict) -> None:
        """Restore from a state.pt; an older one lacks `skipped` (0) and the best (inf, -1)."""
        self.step = int(saved["step"])
        self.skipped = int(saved.get("skipped", 0))
        self.best_val = float(saved.get("best_val", math.inf))
        self.best_step = int(saved.get("best_step", -1))
        self.window.restore(float(saved["loss_window"]), int(saved["loss_count"]), float(saved["elapsed"]))
        self.saved_step = self.step
