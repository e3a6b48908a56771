"""Timing that survives a shared machine: warm up, repeat for a while, keep the best run.

The best (not the mean) of several runs estimates what the code can do when the machine is
not busy with someone else; every benchmark in this package times through `best_seconds`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Callable[[], object], device: torch.device, *, warmup: int = 2, repeats: int = 3,
                 budget_s: float = 2.0, min_sample_s: float = 0.0) -> float:
    """Fastest wall-clock seconds of one call of `fn`: `warmup` calls, then at least `repeats`
    timed samples and more while `budget_s` lasts. A sample is as many back-to-back calls as fill
    `min_sample_s`, so a sub-millisecond GPU kernel is not timed against one launch and one sync."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    calls = 1
    if min_sample_s > 0:
        tic = time.perf_counter()
        fn()
        synchronize(device)
        calls = max(1, min(1000, int(min_sample_s / max(time.perf_counter() - tic, 1e-7))))
    best, done, end = float("inf"), 0, time.perf_counter() + budget_s
    while done < repeats or time.perf_counter() < end:
        tic = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
        best = min(best, (time.perf_counter() - tic) / calls)
        done += 1
    return best


def autocast(device: torch.device, precision: str):
    """bf16 autocast on `device` for precision 'bf16'; a no-op context for 'fp32'."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def peak_rss_bytes() -> int:
    """This process's peak resident set in bytes (Linux VmHWM; elsewhere ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource   # deferred: POSIX only
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux/BSD units (KiB)


def reset_peak_rss() -> int:
    """Start a new peak at the current resident set (Linux: clear_refs 5), and return it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass   # no reset: the peak may include what came before (imports, earlier parts)
    return peak_rss_bytes()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak allocated device memory since the last reset (CUDA), or the process' peak resident set
    since the last reset (CPU; on systems without a reset, the peak so far)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 3)
    try:
        return round(peak_rss_bytes() / 2 ** 30, 3)
    except (ImportError, OSError):
        return None
