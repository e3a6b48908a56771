"""Faults: SIGKILL at every phase of a run, NaN/inf, a full disk, leftovers of an interrupted save.

Each killed run is a fork of the test process that SIGKILLs itself at a named fault point
(toolkit/faults.py); resuming it must reproduce the uninterrupted run bit for bit.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolkit import faults
from toolkit.checkpoints import rundir
from toolkit.errors import UserError
from toolkit.resolve import resolve
from toolkit.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import fault_injection as fi  # noqa: E402


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    torch.set_num_threads(1)
    fp, points = fi.reference(tmp_path_factory.mktemp("whole"))
    return fp, points


@pytest.mark.parametrize("kill_at", [
    "train.backward@5",     # mid training step (after backward, before the optimizer step)
    "train.optimizer@3",    # after the optimizer step, before the step counter moves
    "eval.batch@3",         # mid evaluation (step 3's validation)
    "save.weights@1",       # the first save, half written: no checkpoint yet
    "save.state@2",         # a later save, weights written into checkpoint.tmp
    "save.fsynced@3",       # tmp complete, not yet swapped in
    "save.swap@1",          # between the two renames: no checkpoint/ at all
    "save.cleanup@2",       # new checkpoint in place, checkpoint.old not yet removed
])
def test_kill_at_each_phase_resumes_bit_identical(tmp_path, whole, kill_at):
    ref, points = whole
    assert kill_at.split("@")[0] in points
    out = tmp_path / "run"
    status = fi.in_child(lambda: fi.train(out), kill_at)
    assert fi.killed(status), f"the run was not killed at {kill_at}"
    if kill_at.startswith("save.swap"):
        assert not (out / "checkpoint").exists() and (out / "checkpoint.old").is_dir()
    assert fi.in_child(lambda: fi.train(out, "resume=true")) == 0
    got = fi.fingerprint(out)
    assert got["leftovers"] == [] and fi.same(got, ref)


def test_kill_in_the_last_swap_keeps_the_history(tmp_path, whole):
    """Killed between the renames of the final save: the recovered checkpoint also gets its
    keep_last history copy, which the killed process never made."""
    ref, points = whole
    k = max(i for i, p in enumerate(points, 1) if p == "save.swap")
    out = tmp_path / "run"
    assert fi.killed(fi.in_child(lambda: fi.train(out), f"#{k}"))
    assert fi.in_child(lambda: fi.train(out, "resume=true")) == 0
    assert fi.same(fi.fingerprint(out), ref)


def test_killed_cli_run_resumes_through_the_env_hook(tmp_path):
    """The real command line: DLM_KILL_AT in the environment kills `python -m training.train` mid-swap."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), faults.ENV: "save.swap@1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "training.train", *fi.RUN, "max_steps=4", "keep_best=false", "threads=1", f"out={out}"]
    r = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == -9 and not (out / "checkpoint").exists()
    assert (out / "checkpoint.old").is_dir() and (out / "checkpoint.tmp" / "config.json").is_file()
    fi.train(out, "max_steps=4", "keep_best=false", "resume=true")
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint.")) == []
    assert json.loads((out / "checkpoint" / "config.json").read_text())["step"] == 4


@pytest.mark.slow
def test_twenty_random_kills_all_survive(tmp_path, whole):
    """The seeded fault-injection run of benchmarks/fault_injection.py (20 instants among every phase)."""
    import random
    ref, points = whole
    picks = sorted(random.Random(0).sample(range(1, len(points) + 1), 20))
    survived = 0
    for k in picks:
        was_killed, resumed = fi.kill_and_resume(tmp_path, f"k{k}", f"#{k}")
        survived += was_killed and resumed and fi.same(fi.fingerprint(tmp_path / f"k{k}"), ref)
    print(f"fault injection: {survived}/20 random kills survived bit-identical")
    assert survived == 20


# -- leftovers of an interrupted save ------------------------------------------------------------------
def test_half_written_tmp_is_never_used(tmp_path, whole):
    """A first save killed mid-write leaves checkpoint.tmp without config.json: it is deleted, not loaded."""
    out = tmp_path / "run"
    assert fi.killed(fi.in_child(lambda: fi.train(out), "save.weights@1"))
    assert (out / "checkpoint.tmp" / "model.safetensors").exists() and not (out / "checkpoint").exists()
    assert rundir.checkpoint_problem(out / "checkpoint.tmp")
    note = rundir.recover_checkpoint(out / "checkpoint")
    assert "incomplete" in note and not (out / "checkpoint.tmp").exists() and not (out / "checkpoint").exists()


def test_recovery_prefers_the_complete_candidate(tmp_path, tiny_checkpoint):
    src = Path(tiny_checkpoint("mdlm")) / "checkpoint"
    path = tmp_path / "checkpoint"
    import shutil
    shutil.copytree(src, tmp_path / "checkpoint.old")
    shutil.copytree(src, tmp_path / "checkpoint.tmp")
    raw = (tmp_path / "checkpoint.tmp" / "model.safetensors").read_bytes()
    (tmp_path / "checkpoint.tmp" / "model.safetensors").write_bytes(raw[: len(raw) // 2])   # cut short
    assert "cut short" in rundir.checkpoint_problem(tmp_path / "checkpoint.tmp")
    assert "from checkpoint.old" in rundir.recover_checkpoint(path)
    assert (path / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


# -- last good state -------------------------------------------------------------------------------------
def _poison(trainer, at_step: int):
    """Make step `at_step` (1-based) produce a NaN loss."""
    loss_fn = trainer.family.loss

    def loss(model, x0, t, g):
        value = loss_fn(model, x0, t, g)
        return value * float("nan") if trainer.state.step + 1 == at_step else value
    trainer.family.loss = loss


def _tiny(out, *extra):
    return resolve([*fi.RUN, "keep_best=false", "keep_last=1", f"out={out}", *extra])


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_nonfinite_stops_and_keeps_the_last_good_checkpoint(tmp_path, where):
    trainer = Trainer(_tiny(tmp_path / "run"))
    if where == "gradient":   # a finite loss whose gradient is NaN
        hook_step = 5
        p = next(trainer.net.parameters())
        p.register_hook(lambda g: g * float("nan") if trainer.state.step + 1 == hook_step else g)
    else:
        _poison(trainer, 5)
    with pytest.raises(UserError, match=f"non-finite {where} at step 5.*last good checkpoint \\(step 4\\)"):
        trainer.fit()
    ckpt = tmp_path / "run" / "checkpoint"
    assert json.loads((ckpt / "config.json").read_text())["step"] == 4
    assert rundir.checkpoint_problem(ckpt) is None
    w = torch.load(ckpt / "state.pt", weights_only=True)
    assert int(w["step"]) == 4


def test_nonfinite_skip_option_skips_and_counts(tmp_path):
    trainer = Trainer(_tiny(tmp_path / "run", "on_nonfinite=skip", "max_steps=6"))
    _poison(trainer, 3)
    trainer.fit()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 6 and lines[-1]["skipped_steps"] == 1
    assert next(x for x in lines if x["step"] == 3)["train_loss"] is None
    assert all(torch.isfinite(v).all() for v in trainer.net.state_dict().values())


def test_keep_last_and_best(tmp_path, whole):
    ref, _ = whole
    assert ref["history"] == ["step-000000006", "step-000000008"]          # keep_last=2, save_every=2
    out = tmp_path / "run"
    fi.train(out)
    best = json.loads((out / "best" / "config.json").read_text())
    vals = {x["step"]: x["val_nelbo"] for x in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if "val_nelbo" in x and x["step"] > 0}
    assert best["val_nelbo"] == min(vals.values()) and vals[best["step"]] == best["val_nelbo"]
    import toolkit
    assert toolkit.load(out / "best").name == "mdlm"
    with pytest.raises(UserError, match="keep_last must be >= 1"):
        resolve(["keep_last=0"])


# -- disk full / unwritable --------------------------------------------------------------------------------
def test_disk_full_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import toolkit.checkpoints.rundir as ck
    trainer = Trainer(_tiny(tmp_path / "run", "max_steps=4"))
    real = ck.save_file
    calls = {"n": 0}

    def full_disk(state, filename, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:          # the second save: half a file, then ENOSPC
            Path(filename).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return real(state, filename, *a, **k)

    monkeypatch.setattr(ck, "save_file", full_disk)
    with pytest.raises(UserError) as e:
        trainer.fit()
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg and "previous checkpoint is intact" in msg
    ckpt = tmp_path / "run" / "checkpoint"
    assert rundir.checkpoint_problem(ckpt) is None and json.loads((ckpt / "config.json").read_text())["step"] == 2
    assert not (tmp_path / "run" / "checkpoint.tmp").exists()
    monkeypatch.setattr(ck, "save_file", real)      # space again: the run resumes from step 2
    Trainer(_tiny(tmp_path / "run", "max_steps=4", "resume=true")).fit()
    assert json.loads((ckpt / "config.json").read_text())["step"] == 4


def test_unwritable_out_is_one_line(tmp_path, capsys):
    from training.train import main
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as e:
        main([*fi.RUN, f"out={blocker / 'run'}"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: cannot create out=") and "\n" not in err
    with pytest.raises(SystemExit):
        main([*fi.RUN, f"out={blocker}"])
    assert "is a file" in capsys.readouterr().err and blocker.read_text() == "x"


def test_two_trainers_on_one_out_are_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    lock = rundir.RunLock(out).acquire()
    try:
        with pytest.raises(UserError, match="being trained by another process"):
            Trainer(_tiny(out)).fit()
    finally:
        lock.release()


# -- sweeps ---------------------------------------------------------------------------------------------
SWEEP = ["family=mdlm", "sizes=cpu-4xs,cpu-3xs", "seq_len=32", "batch_size=4", "eval_batches=1", "log_every=1",
         "save_every=2", "eval_every=3", "threads=1", "lr=3e-3", "launcher=inline", "budgets=2e8"]


def _sweep_result(out: Path):
    import pandas as pd
    df = pd.read_csv(out / "results.csv").drop(columns=["wall_s"])   # wall-clock time is the one thing that differs
    weights = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("runs/*/*/checkpoint/model.safetensors"))}
    return df, weights


def test_sweep_killed_at_random_points_ends_with_the_same_results(tmp_path, capsys):
    """A chain of kills (seeded, across planning, claims, training, saves and the results write), each
    followed by a restart of the same command; the last restart finishes with the uninterrupted results."""
    import random

    from training import sweep
    torch.set_num_threads(1)
    visited = faults.record()
    try:
        sweep.main(SWEEP + [f"out={tmp_path / 'whole'}"])
    finally:
        faults.stop_recording()
    ref_df, ref_w = _sweep_result(tmp_path / "whole")
    assert (ref_df["status"] == "finished").all() and len(ref_w) == 2
    out = tmp_path / "killed"
    rng = random.Random(1)
    kills = 0
    for _ in range(5):   # each restart is killed at a random instant of what it still has to do
        k = rng.randint(1, max(1, len(visited) // 3))
        status = fi.in_child(lambda: sweep.main(SWEEP + [f"out={out}"]), f"#{k}")
        kills += fi.killed(status)
    assert kills >= 4
    assert fi.in_child(lambda: sweep.main(SWEEP + [f"out={out}"])) == 0
    df, w = _sweep_result(out)
    assert df.drop(columns=["run"]).equals(ref_df.drop(columns=["run"])) and list(w.values()) == list(ref_w.values())


def test_sweep_runs_die_with_the_sweep(tmp_path):
    """A sweep killed by SIGKILL takes its training processes with it (no orphan keeps writing the run)."""
    import signal
    import time
    code = ("import subprocess, sys, time\nfrom training.sweep import die_with_parent\n"
            "p = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent)\nprint(p.pid, flush=True)\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the run outlived the sweep")
