"""The arithmetic of one optimizer step (`Trainer.train_step`): the learning rate, the global
batch cut into chunks, seeded draws, host-to-device copies.

Every random draw of a step comes from a generator seeded by (seed, step, chunk), and the data
order is a pure function of (seed, step): a resumed run repeats an uninterrupted one exactly, and
a global batch split into the same chunks gives the same loss on 1 process or on N.
"""
from __future__ import annotations

import math

import torch

from toolkit.config import RunConfig


def lr_at(step: int, cfg: RunConfig) -> float:
    """Linear warmup (max(1% of steps, 100) by default, capped at 10%) then cosine to min_lr."""
    o, total = cfg.optim, cfg.train.max_steps
    warmup = o.warmup_steps if o.warmup_steps >= 0 else min(max(total // 100, 100), total // 10)
    if step < warmup:
        return o.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    floor = o.lr * o.min_lr_ratio
    return floor + (o.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def local_chunk(rank: int, grad_accum: int, micro: int) -> int:
    """Which chunk of the global batch rank `rank` processes in micro-step `micro`.

    The global batch is cut into world * grad_accum equal chunks; rank r takes chunks
    r*grad_accum .. r*grad_accum + grad_accum - 1, so ranks never share a sample and
    (world=1, grad_accum=2) processes exactly the chunks that (world=2, grad_accum=1) does.
    """
    return rank * grad_accum + micro


def chunk_rows(rows: torch.Tensor, chunk: int, chunk_size: int) -> torch.Tensor:
    """Rows (data indices) of one chunk of the global batch."""
    return rows[chunk * chunk_size: (chunk + 1) * chunk_size]


def step_generator(seed: int, step: int, chunk: int, device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(((seed * 1_000_003 + step) * 1_009 + chunk) % (2 ** 63))
    return g


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device copy that does not stall the host.

    A copy from pageable memory waits for the device's queue; one from pinned memory is queued
    like a kernel. The batch is a fresh gather (indexing a pinned dataset would not stay
    pinned), so the gathered rows are pinned (PyTorch's cached pinned allocator makes it cheap).
    """
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)
