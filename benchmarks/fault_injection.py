"""Kill a small training run at seeded random instants, resume each time, and count how many end
bit-identical to an uninterrupted run (final weights, optimizer state, metrics).

    python benchmarks/fault_injection.py                 # 20 kills, seed 0
    python benchmarks/fault_injection.py --kills 50 --seed 3

An instant is one of the named fault points a real run visits (every training micro-step, optimizer
step, evaluation batch and each stage of a checkpoint save, see toolkit/faults.py), drawn uniformly
from the full list of an uninterrupted run. The killed process is a fork of this one that SIGKILLs
itself there; the resume runs in a fresh fork.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from toolkit import faults  # noqa: E402

RUN = ["family=mdlm", "model=cpu-4xs", "seq_len=32", "batch_size=4", "max_steps=8", "log_every=1",
       "eval_every=3", "eval_batches=2", "save_every=2", "lr=3e-3", "progress=false", "keep_best=true",
       "keep_last=2"]
TIMING_KEYS = ("tokens_per_s", "elapsed_s", "mfu")


def train(out: Path, *extra: str) -> None:
    from toolkit.resolve import resolve
    from toolkit.trainer import Trainer
    Trainer(resolve([*RUN, f"out={out}", *extra])).fit()


def in_child(fn, kill_at: str | None = None) -> int:
    """Run fn() in a forked process (optionally armed to kill itself); returns its wait status."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:   # the child: never returns into the caller's code
        code = 0
        try:
            if kill_at:
                os.environ[faults.ENV] = kill_at
            else:
                os.environ.pop(faults.ENV, None)
            torch.set_num_threads(1)
            fn()
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def killed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def fingerprint(out: Path) -> dict:
    """Everything a resumed run must reproduce exactly (timings left out)."""
    state = torch.load(out / "checkpoint" / "state.pt", weights_only=True)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {"weights": (out / "checkpoint" / "model.safetensors").read_bytes(),
            "best": (out / "best" / "model.safetensors").read_bytes() if (out / "best").exists() else None,
            "history": sorted(p.name for p in (out / "checkpoints").iterdir()) if (out / "checkpoints").exists() else [],
            "optimizer": [v for k, v in sorted(_flat(state["optimizer"]).items())],
            "step": int(state["step"]),
            "metrics": [{k: v for k, v in x.items() if k not in TIMING_KEYS} for x in lines],
            "leftovers": sorted(p.name for p in out.iterdir() if p.name.endswith((".tmp", ".old")))}


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def same(a: dict, b: dict) -> bool:
    keys = set(a) - {"optimizer"}
    if any(a[k] != b[k] for k in keys):
        return False
    return len(a["optimizer"]) == len(b["optimizer"]) and all(
        torch.equal(x, y) if torch.is_tensor(x) else x == y for x, y in zip(a["optimizer"], b["optimizer"]))


def reference(workdir: Path) -> tuple[dict, list[str]]:
    """The uninterrupted run's fingerprint and the list of fault points it visits."""
    visited = faults.record()
    try:
        train(workdir / "whole")
    finally:
        faults.stop_recording()
    return fingerprint(workdir / "whole"), list(visited)


def kill_and_resume(workdir: Path, name: str, kill_at: str) -> tuple[bool, bool]:
    """(was killed, resumed run identical to the uninterrupted one... filled by the caller)."""
    out = workdir / name
    status = in_child(lambda: train(out), kill_at)
    was_killed = killed(status)
    ok = in_child(lambda: train(out, "resume=true")) == 0
    return was_killed, ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    workdir = Path(tempfile.mkdtemp(prefix="faults-"))
    try:
        whole, points = reference(workdir)
        rng = random.Random(args.seed)
        picks = sorted(rng.sample(range(1, len(points) + 1), min(args.kills, len(points))))
        survived, rows = 0, []
        for k in picks:
            was_killed, resumed = kill_and_resume(workdir, f"k{k}", f"#{k}")
            ok = was_killed and resumed and same(fingerprint(workdir / f"k{k}"), whole)
            survived += ok
            rows.append({"instant": k, "phase": points[k - 1], "killed": was_killed, "identical": ok})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    phases = sorted({r["phase"] for r in rows})
    print(json.dumps({"kills": len(rows), "survived": survived, "seed": args.seed, "points_in_run": len(points),
                      "phases_hit": phases, "runs": rows}, indent=2))
    raise SystemExit(0 if survived == len(rows) else 1)


if __name__ == "__main__":
    main()
