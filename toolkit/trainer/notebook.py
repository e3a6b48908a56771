"""Run directories from a notebook's point of view: train one, read its metrics, plot curves."""
from __future__ import annotations

from pathlib import Path

from toolkit.checkpoints import rundir
from toolkit.resolve import resolve
from toolkit.trainer.loop import Trainer


def train_run(out: str | Path, resume_if_exists: bool = True, **overrides) -> Path:
    """Train with `key=value` overrides given as keyword arguments; reuse a finished run."""
    out = Path(out)
    args = [f"{k}={v}" for k, v in overrides.items()] + [f"out={out}", "progress=false"]
    if resume_if_exists and rundir.metrics_file(out).is_file():
        args.append("resume=true")
    Trainer(resolve(args)).fit()   # init= a checkpoint works here too
    return out


def read_metrics(run: str | Path):
    """metrics.jsonl as a pandas DataFrame (one row per logged step)."""
    import pandas as pd   # deferred: only notebooks need pandas
    return pd.DataFrame(rundir.read_metrics(run))


def plot_curves(runs: dict[str, str | Path], x: str = "flops", y: str = "val_nelbo", ax=None, logx: bool = True):
    """One line per run of `y` against `x` (e.g. validation NELBO against training FLOPs)."""
    import matplotlib.pyplot as plt   # deferred: plotting is optional and slow to import
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for label, run in runs.items():
        df = read_metrics(run)
        df = df[df[y].notna()] if y in df else df.iloc[0:0]
        df = df[df[x] > 0] if logx else df
        ax.plot(df[x], df[y], marker="o", ms=3, label=label)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if logx:
        ax.set_xscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    return ax
