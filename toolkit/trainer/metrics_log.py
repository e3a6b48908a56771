"""What a training run logs: one metrics.jsonl record per `log_every` steps, and the progress bar.

A record holds step, tokens, flops, the mean train loss since the previous record, the learning
rate, tokens/s and elapsed training time (checkpoint writing and validation are not counted);
records at `eval_every` steps add val_nelbo. Only TIMING_KEYS differ between identical runs.
"""
from __future__ import annotations

import math
import sys
import time

from tqdm import tqdm

TIMING_KEYS = ("tokens_per_s", "elapsed_s", "mfu")   # vary between runs; everything else is reproducible


class LogWindow:
    """The running sums a log record summarises; saved in state.pt so a resumed run logs the same."""

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

    def add(self, loss: float, tokens: int) -> None:
        self.tokens += tokens
        if math.isfinite(loss):   # a skipped step (on_nonfinite=skip) stays out of the mean
            self.loss_sum += loss
            self.loss_count += 1

    def record(self, step: int, tokens: int, flops: float, lr: float) -> dict:
        """The log record closing this window; the loss sums restart from zero."""
        now = time.perf_counter()
        self.elapsed += now - self.tic
        rec = {"step": step, "tokens": tokens, "flops": flops,
               "train_loss": round(self.loss_sum / self.loss_count, 6) if self.loss_count else None, "lr": lr,
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
