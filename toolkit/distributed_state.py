"""Full (unsharded) model/optimizer state for checkpoints, under DDP, FSDP2 or one process.

Checkpoints always hold full tensors, so a run can resume on a different number of ranks.
"""
from __future__ import annotations

import torch


def full_state_dict(net, opt, sharded: bool) -> dict:
    if not sharded:
        return {"model": net.state_dict(), "optimizer": opt.state_dict()}
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return {"model": get_model_state_dict(net, options=opts),
            "optimizer": get_optimizer_state_dict(net, opt, options=opts)}


def load_full_state_dict(net, opt, model_state: dict, opt_state: dict, sharded: bool) -> None:
    if not sharded:
        net.load_state_dict(model_state)
        opt.load_state_dict(opt_state)
        return
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)
    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False)
    set_model_state_dict(net, model_state, options=opts)
    set_optimizer_state_dict(net, opt, opt_state, options=opts)


def unwrap(model) -> torch.nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model
