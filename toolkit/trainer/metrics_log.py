"""What a training run logs: one metrics.jsonl record per `log_every` steps, and the progress bar.

A record holds step, tokens, flops, the mean train loss since the previous record, the learning
rate, tokens/s and elapsed training time (checkpoint writing and validation are not counted);
records at `eval_every` steps add val_nelbo. Only TIMING_KEYS differ between identical runs.
"""
from __future__ import annotations

import sys
import time

import torch
from tqdm import tqdm

TIMING_KEYS = ("tokens_per_s", "elapsed_s", "mfu")   # vary between runs; everything else is reproducible


class LogWindow:
    """The running sums a log record summarises; saved in state.pt so a resumed run logs the same.

    The loss sums stay on the training device (a step's loss is a device tensor); they are read
    on the host once per record or checkpoint, never per step.
    """

    def __init__(self):
        self.loss_sum, self.loss_count, self.elapsed = 0.0, 0, 0.0
        self.start()

    def start(self) -> None:
        """Start timing a new window (tokens/s counts from here)."""
        self.tic, self.tokens = time.perf_counter(), 0

    def restart_clock(self) -> None:
        """Skip time spent outside training (writing a checkpoint)."""
        self.tic = time.perf_counter()

    def restore(self, loss_sum: float, loss_count: int, elapsed: float) -> None:
        self.loss_sum, self.loss_count, self.elapsed = loss_sum, loss_count, elapsed

    def add(self, loss, tokens: int) -> None:
        """Add one step's mean loss (a float or a 0-dim tensor); NaN marks a skipped step."""
        self.tokens += tokens
        loss = torch.as_tensor(loss, dtype=torch.float64)
        finite = torch.isfinite(loss)   # a skipped step (on_nonfinite=skip) stays out of the mean
        self.loss_sum = self.loss_sum + torch.where(finite, loss, 0.0)
        self.loss_count = self.loss_count + finite.long()

    def totals(self) -> tuple[float, int]:
        """(loss sum, steps counted) on the host: the one read of the window's device tensors."""
        loss_sum, count = torch.stack([torch.as_tensor(self.loss_sum, dtype=torch.float64),
                                       torch.as_tensor(self.loss_count, dtype=torch.float64)]).tolist()
        return loss_sum, int(count)

    def record(self, step: int, tokens: int, flops: float, lr: float) -> dict:
        """The log record closing this window; the loss sums restart from zero."""
        now = time.perf_counter()
        self.elapsed += now - self.tic
        loss_sum, loss_count = self.totals()
        rec = {"step": step, "tokens": tokens, "flops": flops,
               "train_loss": round(loss_sum / loss_count, 6) if loss_count else None, "lr": lr,
               "tokens_per_s": round(self.tokens / max(now - self.tic, 1e-9), 1),
               "elapsed_s": round(self.elapsed, 3)}
        self.loss_sum, self.loss_count = 0.0, 0
        return rec


def initial_record(val_nelbo: float) -> dict:
    """The step-0 record of a fresh run: validation NELBO of the untrained model."""
    return {"step": 0, "tokens": 0, "flops": 0.0, "val_nelbo": round(val_nelbo, 6)}


def print_runtime(info: dict) -> None:
    print("run: " + ", ".join(f"{k}={v}" for k, v in info.items()), file=sys.stderr)


def progress_bar(total: int, initial: int, label: str):
    return tqdm(total=total, initial=initial, desc=label, unit="step", dynamic_ncols=True, leave=False)
