"""Saving and resuming a run: full (unsharded) state in the run's checkpoint directory."""
from __future__ import annotations

import torch

from toolkit.checkpoints import rundir
from toolkit.trainer.distributed import full_state_dict, load_full_state_dict


def save(tr) -> None:
    """Write the run's checkpoint (weights, config, tokenizer, state.pt); collective under FSDP2."""
    state = full_state_dict(tr.net, tr.opt, tr.sharded)
    if tr.dist.main:
        train_state = {"step": torch.tensor(tr.step), "optimizer": state["optimizer"],
                       "loss_window": torch.tensor(tr.window.loss_sum, dtype=torch.float64),
                       "loss_count": torch.tensor(tr.window.loss_count),
                       "elapsed": torch.tensor(tr.window.elapsed, dtype=torch.float64)}
        rundir.save_checkpoint(rundir.checkpoint_dir(tr.out), tr.cfg, state["model"], tr.cfg.data.tokenizer or None,
                               train_state, extra={"step": tr.step, "tokens": tr.step * tr.tokens_per_step})
    tr.dist.barrier()


def try_resume(tr) -> bool:
    """Restore weights, optimizer, step and loss window from the run's checkpoint, if it has one;
    then drop the metrics lines written after that checkpoint (the run died before saving again)."""
    ckpt = rundir.checkpoint_dir(tr.out)
    if not rundir.has_train_state(ckpt):
        return False
    state = rundir.load_train_state(ckpt)
    load_full_state_dict(tr.net, tr.opt, rundir.load_weights(ckpt), state["optimizer"], tr.sharded)
    tr.step = int(state["step"])
    tr.window.restore(float(state["loss_window"]), int(state["loss_count"]), float(state["elapsed"]))
    if tr.dist.main:
        rundir.truncate_metrics(tr.out, tr.step)
    return True
