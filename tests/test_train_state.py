"""The trainer's progress is one TrainState, saved in state.pt and restored as a whole: a round trip
loses nothing, a resumed run continues from exactly that state, and a state.pt written before
TrainState existed (no best value in it) still resumes to the same run."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from toolkit.resolve import resolve
from toolkit.trainer import Trainer
from toolkit.trainer.state import TrainState

ARGS = ["family=mdlm", "model=cpu-4xs", "seq_len=16", "batch_size=2", "max_steps=8", "log_every=1",
        "eval_every=2", "save_every=100", "progress=false", "threads=1", "lr=3e-3", "warmup_steps=2",
        "keep_best=true", "eval_batches=1"]
# what state.pt held before TrainState (toolkit/trainer/checkpointing.py on main until then)
OLD_KEYS = {"step", "optimizer", "loss_window", "loss_count", "elapsed", "skipped", "family"}


def _fields(s: TrainState) -> tuple:
    return (s.step, s.skipped, s.best_val, s.best_step, s.saved_step, s.window.totals(), s.window.elapsed)


def test_train_state_round_trips_through_state_pt(tmp_path):
    s = TrainState(step=37, skipped=2, best_val=4.25, best_step=30)
    for loss in (2.5, float("nan"), 1.75):   # the NaN is a skipped step: out of the mean
        s.window.add(torch.tensor(loss), tokens=64)
    s.window.elapsed = 12.5
    torch.save(s.state_dict(), tmp_path / "state.pt")
    back = TrainState()
    back.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert back.window.totals() == (4.25, 2)
    assert _fields(back) == (37, 2, 4.25, 30, 37, (4.25, 2), 12.5)   # saved_step: the step on disk
    again = back.state_dict()
    assert again.keys() == s.state_dict().keys()
    assert all(torch.equal(again[k], v) for k, v in s.state_dict().items())


def test_an_old_state_pt_loads_with_defaults_for_what_it_lacks():
    s = TrainState()
    s.load_state_dict({"step": torch.tensor(5), "loss_window": torch.tensor(1.0, dtype=torch.float64),
                       "loss_count": torch.tensor(1), "elapsed": torch.tensor(0.5, dtype=torch.float64)})
    assert _fields(s) == (5, 0, math.inf, -1, 5, (1.0, 1), 0.5)


def _losses(run) -> list:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r.get("train_loss"), r.get("val_nelbo")) for r in rows]


@pytest.mark.parametrize("layout", ["current", "before TrainState"])
def test_a_resumed_run_starts_from_the_saved_state_and_ends_as_the_whole_run(tmp_path, layout):
    whole, paused = tmp_path / "whole", tmp_path / "paused"
    Trainer(resolve([*ARGS, f"out={whole}"])).fit()
    first = Trainer(resolve([*ARGS, f"out={paused}", "stop_at=4"]))
    first.fit()
    state_pt = paused / "checkpoint" / "state.pt"
    saved = torch.load(state_pt, weights_only=True)
    assert set(saved) == OLD_KEYS | {"best_val", "best_step"}
    if layout != "current":   # the layout main wrote before: no best value, it comes from RUN/best
        torch.save({k: v for k, v in saved.items() if k in OLD_KEYS}, state_pt)

    probe = Trainer(resolve([*ARGS, f"out={paused}", "resume=true"]))
    try:
        assert probe.start()
    finally:
        probe.lock.release()
    best = json.loads((paused / "best" / "config.json").read_text())
    assert (probe.state.best_val, probe.state.best_step) == (best["val_nelbo"], best["step"])
    assert _fields(probe.state)[:5] == _fields(first.state)[:5]
    assert probe.state.window.totals() == first.state.window.totals()

    Trainer(resolve([*ARGS, f"out={paused}", "resume=true"])).fit()
    assert _losses(paused) == _losses(whole)
    a, b = load_file(paused / "best" / "model.safetensors"), load_file(whole / "best" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
