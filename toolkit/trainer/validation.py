"""Validation NELBO during training: fixed blocks, fixed antithetic t draws, independent of the rank count."""
from __future__ import annotations

import torch

from toolkit import faults
from toolkit.schedule import antithetic_times
from toolkit.trainer.step import step_generator, to_device


@torch.no_grad()
def validate(tr) -> float:
    """Mean NELBO per token on fixed validation blocks, with fixed antithetic t draws.

    Batch i (rows i*chunk .. (i+1)*chunk, its own seeded generator) runs on rank i mod world,
    so the figure does not depend on the number of ranks.
    """
    tr.net.eval()
    t, val, val_mask = tr.cfg.train, tr.data.val, tr.data.val_mask
    # summed on the device in float64 and read once at the end (a read per batch would stall it)
    total = torch.zeros((), dtype=torch.float64, device=tr.dist.device)
    covered = torch.zeros((), dtype=torch.float64, device=tr.dist.device)
    rounds = -(-t.eval_batches // tr.dist.world)
    for r in range(rounds):
        i = r * tr.dist.world + tr.dist.rank
        if i >= t.eval_batches and not tr.sharded:
            break
        # under FSDP every rank must run the same number of forwards (they all-gather
        # parameters): a rank without a batch left repeats one and discards the result
        b = i % t.eval_batches
        rows = torch.arange(b * tr.chunk_size, (b + 1) * tr.chunk_size) % len(val)
        x0 = to_device(val[rows], tr.dist.device)
        mask = to_device(val_mask[rows], tr.dist.device) if val_mask is not None else None
        g = step_generator(t.seed + 17, 0, b, tr.dist.device)
        with tr.autocast():
            nelbo = tr.family.nelbo(tr.net, x0, antithetic_times(len(rows), g, tr.dist.device), g,
                                      **({} if mask is None else {"loss_mask": mask}))
        if i < t.eval_batches:
            if mask is None:
                total += nelbo.sum().double() / x0.shape[1]
            else:   # fine-tuning: nats per response token
                total += nelbo.sum().double()
                covered += mask.sum().double()
        faults.point("eval.batch")
    tr.net.train()
    total, covered = torch.stack([total, covered]).tolist()
    if val_mask is not None:
        return tr.dist.all_sum(total) / max(tr.dist.all_sum(covered), 1.0)
    return tr.dist.all_sum(total) / (t.eval_batches * tr.chunk_size)
