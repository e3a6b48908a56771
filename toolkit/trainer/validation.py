"""Validation NELBO during training: fixed blocks, fixed antithetic t draws, independent of the rank count."""
from __future__ import annotations

import torch

from toolkit import faults
from toolkit.schedule import antithetic_times
from toolkit.trainer.step import step_generator


@torch.no_grad()
def validate(tr) -> float:
    """Mean NELBO per token on fixed validation blocks, with fixed antithetic t draws.

    Batch i (rows i*chunk .. (i+1)*chunk, its own seeded generator) runs on rank i mod world,
    so the figure does not depend on the number of ranks.
    """
    tr.net.eval()
    t, val = tr.cfg.train, tr.data.val
    total = 0.0
    rounds = -(-t.eval_batches // tr.dist.world)
    for r in range(rounds):
        i = r * tr.dist.world + tr.dist.rank
        if i >= t.eval_batches and not tr.sharded:
            break
        # under FSDP every rank must run the same number of forwards (they all-gather
        # parameters): a rank without a batch left repeats one and discards the result
        b = i % t.eval_batches
        rows = torch.arange(b * tr.chunk_size, (b + 1) * tr.chunk_size) % len(val)
        x0 = val[rows].to(tr.dist.device)
        g = step_generator(t.seed + 17, 0, b, tr.dist.device)
        with tr.autocast():
            nelbo = tr.family.nelbo(tr.net, x0, antithetic_times(len(rows), g, tr.dist.device), g)
        if i < t.eval_batches:
            total += float(nelbo.sum()) / x0.shape[1]
        faults.point("eval.batch")
    tr.net.train()
    return tr.dist.all_sum(total) / (t.eval_batches * tr.chunk_size)
