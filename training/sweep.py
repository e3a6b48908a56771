"""Iso-FLOP sweep: `python -m training.sweep family=duo,mdlm:loss=low_var budgets=1e13,3e13 sizes=cpu-xs,cpu-s,cpu-m out=sweeps/x`.

Plans budget -> max_steps = floor(C / (3 F B)) for every size, then runs each point as an
ordinary `python -m training.train ... out=<sweep>/runs/<variant>/<size>_C<budget>` process.
Re-running the same command skips finished runs and resumes interrupted ones, so a sweep can be
stopped at any time. It writes plan.csv, commands.txt, launch.sh (plain bash, one run a line) and
slurm_array.sh (one array task per run), then results.csv once runs finish.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from toolkit import faults
from toolkit.checkpoints import rundir
from toolkit.data import load_data
from toolkit.errors import UserError, cli_main
from toolkit.options import build, describe, option, parse_overrides, parse_pair
from toolkit.resolve import resolve
from toolkit.scaling.grid import size
from toolkit.scaling.plan import Plan, Point, make_plan, parse_budget, parse_variant
from toolkit.trainer import Trainer

TEMPLATES = Path(__file__).parent / "templates"
REQUIRED = ("family", "budgets", "sizes", "out")


@dataclasses.dataclass
class SweepKeys:
    """The sweep's own keys (everything else is passed to every run, e.g. lr=2e-3 threads=1 data=austen)."""
    family: str = option("", "V,V,...: variants family[:option=value...], e.g. mdlm, mdlm:loss=low_var,"
                             " esolm:alpha_0=0.5")
    budgets: str = option("", "C,C,...: training FLOPs per run (paper accounting: 3 x forward, attention excluded)")
    sizes: str = option("", "S,S,...: presets (cpu-xxs .. cpu-xxl, 6M .. 2121M)")
    out: str = option("", "the sweep folder")
    parallel: int = option(1, "local processes at once; with more than 1, runs get threads=1 unless given")
    launcher: str = option("local", "run here as processes; run here inside this Python process (notebooks, tests);"
                                    " write and sbatch the array script; or only write scripts and collect what has"
                                    " finished", ("local", "inline", "slurm", "print"))
    min_steps: int = option(1, "leave out points with fewer steps")
    max_epochs: float = option(float("inf"), "leave out points with more epochs")
    max_runs: int = option(0, "start at most this many runs in this invocation (the rest wait for the next one); 0: all")
    torchrun: int = option(0, "launch each run with torchrun --standalone --nproc_per_node=this; 0: without")

    def validate(self) -> None:
        if self.parallel < 1:
            raise UserError(f"parallel must be >= 1 (got {self.parallel})")


SWEEP_KEYS = {spec.name for spec in describe(SweepKeys)}
SET_BY_SWEEP = {"model", "max_steps", "resume", "train.max_steps", "train.out", "train.resume"}
IGNORED_IN_IDENTITY = {"threads", "progress", "resume", "train.threads", "train.progress"}


def _split(v: str) -> list[str]:
    return [x.strip() for x in v.split(",") if x.strip()]


def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    """Separate the sweep's own keys from the training overrides passed to every run."""
    keys: dict = {}
    passthrough = []
    for k, v in parse_overrides(argv):
        if k in SWEEP_KEYS:
            keys[k] = v
        elif k in SET_BY_SWEEP or k == "out":
            raise UserError(f"'{k}' is set by the sweep for each run; remove it")
        else:
            passthrough.append(f"{k}={v}")
    for k in REQUIRED:
        if not keys.get(k):
            raise UserError(f"missing {k}=... (see python -m training.sweep --help)")
    return dataclasses.asdict(build(SweepKeys, keys, "the sweep")), passthrough


def usage() -> str:
    """The module's description and the sweep keys, from their declarations."""
    lines = [f"  {s.name}={s.default if s.name not in REQUIRED else '...'}" for s in describe(SweepKeys)]
    helps = [s.help_text() for s in describe(SweepKeys)]
    return (__doc__ + "\n" + SweepKeys.__doc__ + "\n"
            + "\n".join(f"{line:<20} {h}" for line, h in zip(lines, helps)))


def build_plan(keys: dict, passthrough: list[str]) -> tuple[Plan, dict]:
    variants = [parse_variant(s) for s in _split(keys["family"])]
    budgets = [parse_budget(s) for s in _split(keys["budgets"])]
    sizes = _split(keys["sizes"])
    for s in sizes:
        size(s)   # unknown names fail before the data is loaded
    if len(set(variants)) != len(variants) or len(set(budgets)) != len(budgets) or len(set(sizes)) != len(sizes):
        raise UserError("family, budgets and sizes must not repeat an entry")
    for v in variants:   # every run's config must resolve before anything starts
        resolve(v.overrides() + passthrough + [f"model={sizes[0]}"])
    cfg = resolve(variants[0].overrides() + passthrough)
    data = load_data(cfg.data)
    info = {"vocab_size": data.tokenizer.get_vocab_size(), "train_tokens": int(data.train.numel()),
            "batch_size": cfg.train.batch_size, "seq_len": cfg.data.seq_len}
    extra = [p for p in passthrough if parse_pair(p)[0] not in ("batch_size", "seq_len", "train.batch_size",
                                                                   "data.seq_len")]
    plan = make_plan(variants, budgets, sizes, batch_size=info["batch_size"], seq_len=info["seq_len"],
                     vocab_size=info["vocab_size"], train_tokens=info["train_tokens"], extra=extra,
                     min_steps=keys["min_steps"], max_epochs=keys["max_epochs"])
    return plan, info


# -- one run's state ---------------------------------------------------------------------------
def run_status(run: Path, max_steps: int) -> str:
    """finished | partial (resumable checkpoint) | stale (metrics but no checkpoint) | new."""
    lines = rundir.read_metrics(run)
    if lines and lines[-1].get("step") == max_steps and "val_nelbo" in lines[-1]:
        return "finished"
    if rundir.has_resumable_state(run):
        return "partial"
    return "stale" if rundir.has_metrics(run) else "new"


def run_args(point: Point, run: Path) -> list[str]:
    return point.overrides(str(run)) + ["resume=true"]


def _identity(args: list[str]) -> list[str]:
    return sorted(a for a in args if a.split("=", 1)[0] not in IGNORED_IN_IDENTITY | {"out"})


def claim(run: Path, args: list[str]) -> None:
    """Record a run's settings; refuse to continue a run that was started with other ones."""
    f = run / "sweep_args.json"
    if f.is_file():
        before = json.loads(f.read_text())
        if _identity(before) != _identity(args):
            changed = sorted(set(_identity(args)) ^ set(_identity(before)))
            raise UserError(f"{run} was started with other settings ({', '.join(changed)}): "
                            "delete it or use another out=")
    run.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_text(f, json.dumps(args) + "\n")
    faults.point("sweep.claim")


def command(args: list[str], torchrun: int, python: str = "python") -> list[str]:
    if torchrun > 0:
        return ["torchrun", "--standalone", f"--nproc_per_node={torchrun}", "-m", "training.train", *args]
    return [python, "-m", "training.train", *args]


# -- scripts -------------------------------------------------------------------------------------
def write_scripts(out: Path, plan: Plan, keys: dict, runs: dict[str, Path]) -> None:
    lines = [shlex.join(command(run_args(p, runs[p.name]), keys["torchrun"])) for p in plan.points]
    rundir.atomic_write_text(out / "commands.txt", "\n".join(lines) + "\n")
    root = shlex.quote(str(Path.cwd()))
    bash = ["#!/usr/bin/env bash",
            "# Generated by training.sweep: every run of the sweep, one after another. Safe to re-run:",
            "# each command resumes its run from its last checkpoint (a finished run exits at once).",
            "set -euo pipefail", f"cd {root}", *lines]
    rundir.atomic_write_text(out / "launch.sh", "\n".join(bash) + "\n")
    os.chmod(out / "launch.sh", 0o755)
    slurm = (TEMPLATES / "slurm_array.sh").read_text()
    gpus = f"#SBATCH --gres=gpu:{keys['torchrun']}" if keys["torchrun"] else "# (CPU runs: no GPU requested)"
    for k, v in {"NAME": out.name, "ARRAY": f"0-{len(lines) - 1}" + (f"%{keys['parallel']}" if keys["parallel"] > 1 else ""),
                 "LOGS": str(out.resolve() / "slurm"), "GPUS": gpus, "WORKDIR": root,
                 "COMMANDS": shlex.quote(str((out / "commands.txt").resolve()))}.items():
        slurm = slurm.replace("{{" + k + "}}", v)
    rundir.atomic_write_text(out / "slurm_array.sh", slurm)
    (out / "slurm").mkdir(exist_ok=True)
    os.chmod(out / "slurm_array.sh", 0o755)


def write_plan(out: Path, plan: Plan, runs: dict[str, Path]) -> None:
    import pandas as pd   # deferred: pandas is slow to import; only the results table needs it
    rows = [{"run": p.name, "variant": p.variant.label, "size": p.size, "budget": p.budget,
             "max_steps": p.max_steps, "batch_size": p.batch_size, "seq_len": p.seq_len, "tokens": p.tokens,
             "epochs": round(p.epochs, 4), "params": p.params,
             "status": run_status(runs[p.name], p.max_steps)} for p in plan.points]
    rundir.atomic_write_text(out / "plan.csv", pd.DataFrame(rows).to_csv(index=False))


# -- running --------------------------------------------------------------------------------------
def run_local(plan: Plan, keys: dict, runs: dict[str, Path]) -> list[str]:
    """Run every unfinished point, `parallel` at a time; returns the names of failed runs."""
    todo = []
    for p in sorted(plan.points, key=lambda p: -p.budget):
        run = runs[p.name]
        status = run_status(run, p.max_steps)
        if status == "finished":
            continue
        args = run_args(p, run)
        if keys["parallel"] > 1 and not any(parse_pair(a)[0] in ("threads", "train.threads") for a in args):
            args.append("threads=1")
        claim(run, args)
        if status == "stale":   # died before its first checkpoint: nothing to resume from
            rundir.remove_metrics(run)
        todo.append((p, run, args, status))
    if keys["max_runs"] > 0:
        todo = todo[: keys["max_runs"]]
    print(f"{len(plan.points)} runs planned, {len(todo)} to run now", flush=True)
    if keys["launcher"] == "inline":
        return _run_inline(todo)
    running: list[tuple] = []
    failed: list[str] = []
    try:
        while todo or running:
            while todo and len(running) < keys["parallel"]:
                p, run, args, status = todo.pop(0)
                log = open(run / "train.log", "a")
                cmd = command(args + ["progress=false"], keys["torchrun"], sys.executable)
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env(),
                                        preexec_fn=die_with_parent)
                running.append((proc, p, run, log, time.perf_counter()))
                print(f"start  {p.name} ({'resume' if status == 'partial' else 'new'}, {p.max_steps} steps)",
                      flush=True)
            time.sleep(0.2)
            for item in list(running):
                proc, p, run, log, t0 = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                log.close()
                ok = proc.returncode == 0 and run_status(run, p.max_steps) == "finished"
                print(f"{'done ' if ok else 'FAIL '}  {p.name} ({time.perf_counter() - t0:.1f}s)", flush=True)
                if not ok:
                    failed.append(f"{p.name} (see {run / 'train.log'})")
    finally:
        for proc, *_ in running:   # interrupted: stop the runs this sweep started; they resume next time
            proc.terminate()
        for proc, *_ in running:
            proc.wait()
    return failed


def _run_inline(todo: list[tuple]) -> list[str]:
    """The same runs, one after another in this process (no start-up cost per run)."""
    for p, run, args, status in todo:
        t0 = time.perf_counter()
        print(f"start  {p.name} ({'resume' if status == 'partial' else 'new'}, {p.max_steps} steps)", flush=True)
        Trainer(resolve(args + ["progress=false"])).fit()
        print(f"done   {p.name} ({time.perf_counter() - t0:.1f}s)", flush=True)
    return []


def die_with_parent() -> None:
    """In a run's process (Linux): be killed when the sweep dies, even by SIGKILL, so a restarted
    sweep never finds an orphan still training the run it is about to resume."""
    if sys.platform.startswith("linux"):
        import ctypes   # deferred: only the Linux parent-death signal needs it
        import signal   # deferred: with ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # 1 = PR_SET_PDEATHSIG


def _child_env() -> dict:
    """The children import this checkout's packages even when the toolkit is not installed."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def submit_slurm(out: Path) -> None:
    if shutil.which("sbatch") is None:
        raise UserError(f"sbatch not found on PATH; the array script is {out / 'slurm_array.sh'}")
    subprocess.run(["sbatch", str(out / "slurm_array.sh")], check=True)


# -- results ----------------------------------------------------------------------------------------
def collect(out: Path, plan: Plan, runs: dict[str, Path]):
    """One row per planned run (finished or not) -> results.csv."""
    import pandas as pd   # deferred: pandas is slow to import; only the results table needs it
    rows = []
    for p in plan.points:
        run = runs[p.name]
        lines = rundir.read_metrics(run)
        last = lines[-1] if lines else {}
        status = run_status(run, p.max_steps)
        rows.append({"variant": p.variant.label, "family": p.variant.family, "options": p.variant.options_text,
                     "size": p.size, "params": p.params, "block_params": p.block_params, "budget": p.budget,
                     "batch_size": p.batch_size, "seq_len": p.seq_len, "max_steps": p.max_steps,
                     "tokens": p.tokens, "flops": last.get("flops"), "epochs": round(p.epochs, 4),
                     "val_nelbo": last.get("val_nelbo") if status == "finished" else None,
                     "train_loss": last.get("train_loss"), "wall_s": last.get("elapsed_s"),
                     "status": status, "run": str(run.relative_to(out))})
    df = pd.DataFrame(rows)
    rundir.atomic_write_text(out / "results.csv", df.to_csv(index=False))
    faults.point("sweep.collect")
    return df


@cli_main
def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(usage())
        return None
    keys, passthrough = parse_args(argv)
    plan, info = build_plan(keys, passthrough)
    out = Path(keys["out"])
    out.mkdir(parents=True, exist_ok=True)
    runs = {p.name: out / "runs" / p.name for p in plan.points}
    for note in plan.skipped:
        print(f"left out: {note}")
    rundir.atomic_write_text(out / "sweep.json", json.dumps({"argv": argv, **info}, indent=2) + "\n")
    write_plan(out, plan, runs)
    write_scripts(out, plan, keys, runs)
    failed: list[str] = []
    if keys["launcher"] in ("local", "inline"):
        failed = run_local(plan, keys, runs)
    elif keys["launcher"] == "slurm":
        submit_slurm(out)
    else:
        print((out / "commands.txt").read_text(), end="")
    df = collect(out, plan, runs)
    done = int((df["status"] == "finished").sum())
    print(f"results: {done}/{len(df)} runs finished -> {out / 'results.csv'}")
    if failed:
        print(f"error: {len(failed)} run(s) failed: {'; '.join(failed)}", file=sys.stderr)
        raise SystemExit(1)
    return df


if __name__ == "__main__":
    main()
