"""One optimizer step: the learning rate, the global batch cut into chunks, seeded draws, clipping.

Every random draw of a step comes from a generator seeded by (seed, step, chunk), and the data
order is a pure function of (seed, step): a resumed run repeats an uninterrupted one exactly, and
a global batch split into the same chunks gives the same loss on 1 process or on N.

Nothing here reads a device tensor on the host: the loss stays on the device and the
non-finite guard acts through the fused optimizer's `found_inf` (guards.NonFiniteGuard), so
the host can queue the next step while the device still runs this one.
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import torch

from toolkit import faults
from toolkit.config import RunConfig
from toolkit.data import batch_indices
from toolkit.schedule import stratified_times


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


def train_step(tr) -> torch.Tensor:
    """One optimizer step over the global batch of step `tr.step`.

    Returns its mean loss over all ranks as a 0-dim device tensor (NaN for a skipped step),
    without waiting for the device.
    """
    t, device = tr.cfg.train, tr.dist.device
    lr = lr_at(tr.step, tr.cfg)
    for group in tr.opt.param_groups:
        group["lr"] = lr
    tr.family.begin_train_step(tr.step, tr.net)   # a curriculum's clock, a distillation teacher
    rows = batch_indices(len(tr.data.train), t.batch_size, tr.step, t.seed)
    times = stratified_times(t.batch_size, step_generator(t.seed, tr.step, -1, "cpu"))
    total = torch.zeros((), dtype=torch.float64, device=device)
    for micro in range(t.grad_accum):
        chunk = local_chunk(tr.dist.rank, t.grad_accum, micro)
        picked = chunk_rows(rows, chunk, tr.chunk_size)
        x0 = to_device(tr.data.train[picked], device)
        # fine-tuning rows carry a loss mask; pre-training calls the family exactly as before
        masked = {} if tr.data.train_mask is None else {"loss_mask": to_device(tr.data.train_mask[picked], device)}
        t_chunk = to_device(chunk_rows(times, chunk, tr.chunk_size), device)
        g = step_generator(t.seed, tr.step, chunk, device)
        last_micro = micro == t.grad_accum - 1
        sync = nullcontext()
        if tr.sharded:   # FSDP2: reduce-scatter gradients only on the last micro-step
            tr.net.set_requires_gradient_sync(last_micro)
        elif tr.dist.world > 1 and not last_micro:
            sync = tr.model.no_sync()
        with sync, tr.autocast():
            loss = tr.family.loss(tr.model, x0, t_chunk, g, **masked) / t.grad_accum
        loss.backward()
        total += loss.detach()   # summed in float64, as the host sum was
        faults.point("train.backward")
    norm = torch.nn.utils.clip_grad_norm_(tr.net.parameters(), tr.cfg.optim.grad_clip)
    if hasattr(norm, "full_tensor"):   # FSDP2 returns a DTensor
        norm = norm.full_tensor()
    # one all-reduce (queued, not waited for) carries the loss sum and both flags of every rank
    sums = torch.stack([total, (~torch.isfinite(total)).double(), (~torch.isfinite(norm)).double()])
    sums = tr.dist.all_sum_(sums)
    skip = tr.guard.flag(tr.step, sums[1] > 0, sums[2] > 0)
    if tr.opt.defaults.get("fused"):   # the kernel skips the update (and its step count) where skip is 1
        tr.opt.found_inf, tr.opt.grad_scale = skip, None
        tr.opt.step()
    elif not skip.item():   # an optimizer without `found_inf` (swapped in by a caller): a host read
        tr.opt.step()
    faults.point("train.optimizer")
    tr.opt.zero_grad(set_to_none=True)
    return torch.where(skip > 0, torch.nan, sums[0] / tr.dist.world)
