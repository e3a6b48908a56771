"""Training end to end: every family learns, resume is exact, bad input is one line."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import toolkit
from tests.conftest import train_tiny
from toolkit.trainer import TIMING_KEYS

ROOT = Path(__file__).resolve().parent.parent


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("family,extra", [("ar", ()), ("mdlm", ()), ("mdlm", ("loss=low_var",)),
                                          ("duo", ()), ("esolm", ()), ("esolm", ("alpha_0=0.5",))])
def test_every_family_learns(tmp_path, family, extra):
    run = train_tiny(tmp_path / "run", family, "model=cpu-xs", "seq_len=64", "batch_size=8",
                     "eval_every=30", "eval_batches=2", "log_every=10", *extra, steps=30)
    lines = metrics(run)
    first, last = lines[0]["val_nelbo"], lines[-1]["val_nelbo"]
    assert lines[-1]["step"] == 30
    assert last < first - 0.5, (first, last)
    required = {"step", "tokens", "flops", "train_loss", "lr", "tokens_per_s"}
    assert all(required <= set(line) for line in lines[1:])
    assert lines[-1]["tokens"] == 30 * 8 * 64
    model = toolkit.load(run)
    assert model.name == family and model.num_params() > 0


def _strip(lines):
    return [{k: v for k, v in line.items() if k not in TIMING_KEYS} for line in lines]


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path):
    args = ["family=mdlm", "model=cpu-xxs", "seq_len=32", "batch_size=4", "max_steps=14", "log_every=1",
            "eval_every=3", "eval_batches=2", "save_every=4", "lr=3e-3", "progress=false", "threads=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    whole = tmp_path / "whole"
    subprocess.run([sys.executable, "-m", "training.train", *args, f"out={whole}"], check=True, env=env, cwd=ROOT)

    part = tmp_path / "part"
    proc = subprocess.Popen([sys.executable, "-m", "training.train", *args, f"out={part}"], env=env, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it between two checkpoints
        f = part / "metrics.jsonl"
        if f.is_file() and any(json.loads(x)["step"] >= 6 for x in f.read_text().splitlines() if x.strip()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(json.loads(x)["step"] for x in (part / "metrics.jsonl").read_text().splitlines() if x.strip())
    assert killed_at < 14, "the run finished before it could be killed"
    subprocess.run([sys.executable, "-m", "training.train", *args, f"out={part}", "resume=true"],
                   check=True, env=env, cwd=ROOT)
    assert _strip(metrics(part)) == _strip(metrics(whole))


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "training.train", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("args,needle", [
    (["family=gpt"], "unknown family"),
    (["model=huge"], "unknown model preset"),
    (["learning_rate=1"], "unknown config key"),
    (["data=/nonexistent/corpus.txt"], "not found"),
    (["max_steps=0"], "max_steps must be > 0"),
    (["max_steps=-5"], "max_steps must be > 0"),
    (["family=esolm", "alpha_0=0"], "alpha_0"),
    (["family=esolm", "alpha_0=1.5"], "alpha_0"),
    (["family=mdlm", "loss=foo"], "loss must be"),
    (["batch_size=abc"], "expected int"),
    (["novalue"], "KEY=VALUE"),
])
def test_bad_input_is_one_line(args, needle, tmp_path):
    extra = [] if any(a.startswith("max_steps") for a in args) else ["max_steps=1"]
    r = run_cli(*args, f"out={tmp_path / 'o'}", *extra)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr


def test_unreadable_data_file_is_one_line(tmp_path):
    bad = tmp_path / "bin.txt"
    bad.write_bytes(b"\xff\xfe\x00\x9c" * 100)
    r = run_cli(f"data={bad}", "max_steps=1", f"out={tmp_path / 'o'}")
    assert r.returncode == 2 and r.stderr.startswith("error: cannot read data file") and "Traceback" not in r.stderr


def test_existing_run_is_not_overwritten(tmp_path, tiny_checkpoint):
    run = tiny_checkpoint("mdlm")
    before = (Path(run) / "metrics.jsonl").read_text()
    r = run_cli("family=mdlm", "model=cpu-xxs", "seq_len=32", "max_steps=1", f"out={run}")
    assert r.returncode == 2 and "resume=true" in r.stderr
    assert (Path(run) / "metrics.jsonl").read_text() == before


def test_stop_at_pauses_on_the_full_schedule_and_resume_finishes_it(tmp_path):
    # A run stopped at step 4 of 8 and resumed equals the uninterrupted run: the LR schedule spans
    # max_steps whatever stop_at says, and the pause writes a checkpoint at the stop.
    import json
    from toolkit.resolve import resolve
    from toolkit.trainer import Trainer
    args = ["family=mdlm", "model=cpu-4xs", "seq_len=16", "batch_size=2", "max_steps=8", "log_every=1",
            "eval_every=100", "save_every=100", "progress=false", "threads=1", "lr=3e-3", "warmup_steps=2"]
    Trainer(resolve([*args, f"out={tmp_path / 'whole'}"])).fit()
    Trainer(resolve([*args, f"out={tmp_path / 'paused'}", "stop_at=4"])).fit()
    paused = [json.loads(x) for x in (tmp_path / "paused" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in paused) == 4
    Trainer(resolve([*args, f"out={tmp_path / 'paused'}", "resume=true"])).fit()

    def losses(run):
        rows = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["lr"], r["train_loss"]) for r in rows if "train_loss" in r]
    assert losses("paused") == losses("whole")
