"""Distributed state: torchrun's environment (`Distributed`), and full (unsharded) model/optimizer
state for checkpoints under DDP, FSDP2 or one process.

Checkpoints always hold full tensors, and the optimizer state is keyed by parameter name
(not by position), the layout PyTorch's distributed-checkpoint API uses. So a run can resume
on a different number of ranks, and switch between one process, DDP and FSDP2.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from toolkit.errors import UserError


def _param_names(net, opt) -> list[str]:
    """Names of the optimizer's parameters, in the order `opt.state_dict()` numbers them."""
    name_of = {id(p): n for n, p in net.named_parameters()}
    return [name_of[id(p)] for group in opt.param_groups for p in group["params"]]


def named_optimizer_state(opt_state: dict, names: list[str]) -> dict:
    """Re-key a positional optimizer state dict (ints) by parameter name; no-op if already named."""
    params = [p for g in opt_state["param_groups"] for p in g["params"]]
    if all(isinstance(p, str) for p in params):
        return opt_state
    if len(params) != len(names):
        raise ValueError(f"optimizer state has {len(params)} parameters, the model {len(names)}")
    to_name = {idx: names[i] for i, idx in enumerate(params)}
    return {"state": {to_name[k]: v for k, v in opt_state["state"].items()},
            "param_groups": [{**g, "params": [to_name[p] for p in g["params"]]} for g in opt_state["param_groups"]]}


def positional_optimizer_state(opt_state: dict, names: list[str]) -> dict:
    """The inverse: name-keyed state -> the integer keys `Optimizer.load_state_dict` expects."""
    opt_state = named_optimizer_state(opt_state, names)
    index = {n: i for i, n in enumerate(names)}
    saved = [p for g in opt_state["param_groups"] for p in g["params"]]
    if sorted(saved) != sorted(names):
        missing = sorted(set(names) - set(saved))[:3]
        raise ValueError(f"optimizer state does not match the model (e.g. missing {missing})")
    return {"state": {index[k]: v for k, v in opt_state["state"].items()},
            "param_groups": [{**g, "params": [index[p] for p in g["params"]]} for g in opt_state["param_groups"]]}


def full_state_dict(net, opt, sharded: bool) -> dict:
    """{"model": full tensors on CPU, "optimizer": name-keyed}; collective under FSDP2."""
    if not sharded:
        return {"model": net.state_dict(), "optimizer": named_optimizer_state(opt.state_dict(), _param_names(net, opt))}
    # deferred: the distributed-checkpoint API is only needed (and only importable everywhere) under FSDP2
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return {"model": get_model_state_dict(net, options=opts),
            "optimizer": get_optimizer_state_dict(net, opt, options=opts)}


# how the optimizer runs, not what it learned: a checkpoint's values must not override them
# (a run saved by an unfused AdamW resumes fused, its step counters moved to the device)
IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")


def with_current_implementation(opt_state: dict, opt) -> dict:
    """`opt_state` with its groups' implementation flags replaced by those of `opt`."""
    groups = [{**saved, **{k: g[k] for k in IMPLEMENTATION_KEYS if k in g}}
              for saved, g in zip(opt_state["param_groups"], opt.param_groups)]
    return {**opt_state, "param_groups": groups}


def load_full_state_dict(net, opt, model_state: dict, opt_state: dict, sharded: bool) -> None:
    """Load a full checkpoint into a plain/DDP module or an FSDP2-sharded one (every rank reads)."""
    names = _param_names(net, opt)
    opt_state = with_current_implementation(named_optimizer_state(opt_state, names), opt)
    if not sharded:
        net.load_state_dict(model_state)
        opt.load_state_dict(positional_optimizer_state(opt_state, names))
        return
    # deferred: see full_state_dict
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)
    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False)
    set_model_state_dict(net, model_state, options=opts)
    set_optimizer_state_dict(net, opt, named_optimizer_state(opt_state, names), options=opts)


def unwrap(model) -> torch.nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model


class Distributed:
    """torchrun's environment, or a single process."""

    def __init__(self, device_pref: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda") or device_pref.startswith("cuda")
        if self.world > 1 and device_pref.startswith("cuda:"):
            raise UserError(f"device={device_pref} pins every rank to one GPU: use device=cuda (rank r gets cuda:LOCAL_RANK)")
        if device_pref.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device={device_pref} but no CUDA device is available")
        if cuda:
            self.device = torch.device(device_pref if ":" in device_pref else f"cuda:{self.local_rank}")
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.owns_group = False
        if self.world > 1 and not dist.is_initialized():
            if cuda:  # binding the device up front lets NCCL set up its communicators eagerly
                dist.init_process_group("nccl", device_id=self.device)
            else:
                dist.init_process_group("gloo")
            self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, x: float) -> float:
        if self.world == 1:
            return x
        t = torch.tensor([x], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return float(t)

    def all_sum_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a tensor on this rank's device over all ranks, in place; queued, never read on the host."""
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def all_mean(self, x: float) -> float:
        return self.all_sum(x) / self.world

    def wait(self):
        """Wait until this rank's device has run everything queued (timing at a log point)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def barrier(self):
        if self.world > 1:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def close(self):
        """Tear down the process group this helper created (not one the caller set up)."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False
