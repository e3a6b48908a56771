"""Benchmark: estimate a sweep's wall time from a few timed training steps of each (variant, size).

    python studies/cpu_scaling/estimate.py sweeps/cpu_scaling [--steps 3] [--parallel 2]

Reads the sweep's plan.csv and sweep.json (write them first with the sweep command plus
launcher=print), times `--steps` optimizer steps of every (variant, size) with one thread, and
prints tokens/s, FLOPs/s and the estimated time of the whole sweep: the sum over runs of
tokens / (tokens/s) plus a fixed start-up cost per run, divided by the number of parallel
processes. Timing figures depend on the machine's load: note it (uptime) with the result.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd
import torch


def time_steps(variant_args: list[str], size: str, passthrough: list[str], steps: int) -> tuple[float, float]:
    """Tokens per second of training steps after one warm-up step: per wall second, per CPU second.

    With one thread, CPU seconds are what the steps would take on an idle core, whatever the
    machine's load while measuring; wall seconds include the waiting for a core.
    """
    from toolkit.resolve import resolve
    from toolkit.trainer import Trainer
    cfg = resolve(variant_args + passthrough + [f"model={size}", "max_steps=1000", "progress=false",
                                                 "out=/tmp/estimate-unused"])
    trainer = Trainer(cfg)
    trainer.train_step()
    tic, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        trainer.train_step()
    tokens = steps * trainer.tokens_per_step
    return tokens / (time.perf_counter() - tic), tokens / (time.process_time() - cpu)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--startup-s", type=float, default=4.0, help="per-run process start + data load")
    a = p.parse_args()
    torch.set_num_threads(1)
    sweep = Path(a.sweep)
    plan = pd.read_csv(sweep / "plan.csv")
    argv = json.loads((sweep / "sweep.json").read_text())["argv"]
    from training.sweep import SWEEP_KEYS
    from toolkit.scaling.plan import parse_variant
    passthrough = [x for x in argv if x.split("=", 1)[0] not in SWEEP_KEYS] + ["threads=1"]
    family_spec = next(x.split("=", 1)[1] for x in argv if x.startswith("family="))
    variants = {parse_variant(s).label: parse_variant(s) for s in family_spec.split(",")}
    rates = {}
    for (label, size), _ in plan.groupby(["variant", "size"]):
        rates[(label, size)] = time_steps(variants[label].overrides(), size, passthrough, a.steps)
        wall, cpu = rates[(label, size)]
        print(f"{label:<22}{size:<9}{wall:>9.0f} tokens/s wall{cpu:>9.0f} tokens/s per CPU second", flush=True)
    from toolkit.resolve import resolve
    t = resolve(passthrough).train
    # validation: at step 0, every eval_every steps and at the end; a forward costs ~1/3 of a step
    n_evals = 1 + (plan["max_steps"] - 1) // t.eval_every + 1
    eval_tokens = n_evals * t.eval_batches * t.batch_size * plan["seq_len"] / 3
    for i, kind in enumerate(("wall", "cpu")):
        plan[f"tokens_per_{kind}_s"] = [rates[(v, s)][i] for v, s in zip(plan["variant"], plan["size"])]
        plan[f"est_{kind}_s"] = (plan["tokens"] + eval_tokens) / plan[f"tokens_per_{kind}_s"] + a.startup_s
    print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for kind, what in (("cpu", "on an idle machine (CPU-time rates)"), ("wall", "at the load measured (wall rates)")):
        by_budget = plan.groupby("budget")[f"est_{kind}_s"].sum() / a.parallel / 60
        print(f"estimated wall time {what}: {plan[f'est_{kind}_s'].sum() / a.parallel / 60:.0f} min with "
              f"{a.parallel} processes; per budget (min):", {f"{b:.3g}": round(m, 1) for b, m in by_budget.items()})
    print(f"{len(plan)} runs, at most {plan['epochs'].max():.2f} epochs")
    plan.to_csv(sweep / "estimate.csv", index=False)


if __name__ == "__main__":
    main()
