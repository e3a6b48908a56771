"""Saving and resuming a run: full (unsharded) state in the run's checkpoint directory."""
from __future__ import annotations

import torch

import sys

from toolkit.checkpoints import rundir
from toolkit.errors import UserError
from toolkit.trainer.distributed import full_state_dict, load_full_state_dict
from toolkit.trainer.guards import keep_history


def save(tr) -> None:
    """Write the run's checkpoint (weights, config, tokenizer, state.pt); collective under FSDP2."""
    state = full_state_dict(tr.net, tr.opt, tr.sharded)
    if tr.dist.main:
        loss_sum, loss_count = tr.window.totals()
        train_state = {"step": torch.tensor(tr.step), "optimizer": state["optimizer"],
                       "loss_window": torch.tensor(loss_sum, dtype=torch.float64),
                       "loss_count": torch.tensor(loss_count),
                       "elapsed": torch.tensor(tr.window.elapsed, dtype=torch.float64),
                       "skipped": torch.tensor(tr.skipped), "family": tr.family.train_state()}
        ckpt = rundir.checkpoint_dir(tr.out)
        rundir.save_checkpoint(ckpt, tr.cfg, state["model"], tr.cfg.data.tokenizer or None,
                               train_state, extra={"step": tr.step, "tokens": tr.step * tr.tokens_per_step})
        if tr.cfg.train.keep_last > 1:
            keep_history(ckpt, tr.out / rundir.HISTORY, tr.step, tr.cfg.train.keep_last)
    tr.saved_step = tr.step
    tr.dist.barrier()


def save_best(tr, val: float) -> None:
    """keep_best=true: the weights of the lowest validation NELBO so far, in RUN/best."""
    if tr.best is None or not tr.best.improves(val):
        return
    state = full_state_dict(tr.net, tr.opt, tr.sharded)
    if tr.dist.main:
        tr.best.save(tr.cfg, state["model"], tr.cfg.data.tokenizer or None, tr.step, val)
    tr.best.value = val
    tr.dist.barrier()


def try_resume(tr) -> bool:
    """Restore weights, optimizer, step and loss window from the run's checkpoint, if it has one;
    then drop the metrics lines written after that checkpoint (the run died before saving again)."""
    ckpt = rundir.checkpoint_dir(tr.out)
    if tr.dist.main:   # a save killed half-way: finish or undo it before reading anything
        for d in (ckpt, tr.out / rundir.BEST):
            note = rundir.recover_checkpoint(d)
            if note:
                print(f"resume: {note}", file=sys.stderr)
    tr.dist.barrier()
    if tr.best is not None:
        tr.best.load()
    if not rundir.has_train_state(ckpt):
        return False
    problem = rundir.checkpoint_problem(ckpt)
    if problem:
        raise UserError(f"cannot resume from {ckpt}: {problem}")
    state = rundir.load_train_state(ckpt)
    load_full_state_dict(tr.net, tr.opt, rundir.load_weights(ckpt), state["optimizer"], tr.sharded)
    tr.step = int(state["step"])
    tr.window.restore(float(state["loss_window"]), int(state["loss_count"]), float(state["elapsed"]))
    tr.skipped = int(state.get("skipped", 0))
    tr.family.load_train_state(state.get("family", {}), tr.net)
    tr.saved_step = tr.step
    if tr.dist.main and tr.cfg.train.keep_last > 1:   # a save killed mid-swap never reached its history copy
        keep_history(ckpt, tr.out / rundir.HISTORY, tr.step, tr.cfg.train.keep_last)
    if tr.dist.main:
        rundir.truncate_metrics(tr.out, tr.step)
    return True
