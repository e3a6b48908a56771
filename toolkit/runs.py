"""Run directories from a notebook's point of view: train one, read its metrics, plot curves."""
from __future__ import annotations

import json
from pathlib import Path

from toolkit.resolve import resolve


def train_run(out: str | Path, resume_if_exists: bool = True, **overrides) -> Path:
    """Train with `key=value` overrides given as keyword arguments; reuse a finished run."""
    from toolkit.train import Trainer
    out = Path(out)
    args = [f"{k}={v}" for k, v in overrides.items()] + [f"out={out}", "progress=false"]
    if resume_if_exists and (out / "metrics.jsonl").is_file():
        args.append("resume=true")
    Trainer(resolve(args)).fit()
    return out


def read_metrics(run: str | Path):
    """metrics.jsonl as a pandas DataFrame (one row per logged step)."""
    import pandas as pd
    lines = Path(run, "metrics.jsonl").read_text().splitlines()
    return pd.DataFrame([json.loads(x) for x in lines if x.strip()])


def plot_curves(runs: dict[str, str | Path], x: str = "flops", y: str = "val_nelbo", ax=None, logx: bool = True):
    """One line per run of `y` against `x` (e.g. validation NELBO against training FLOPs)."""
    import matplotlib.pyplot as plt
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
