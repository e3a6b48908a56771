"""Training runs from a notebook, watched live, and what their curves say.

`train_live` trains runs one after another (the ordinary trainer, in a worker thread) while the
notebook shows a progress bar and redraws the loss curves from `metrics.jsonl` as it grows.
`flops_to_reach` / `compute_saving` read a finished curve: how much compute one run needed to
reach another's validation NELBO (the paper's low-variance vs NELBO comparison, on one run each).
"""
from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pandas as pd
from tqdm import tqdm   # the text bar: its last state stays readable in a saved notebook

from toolkit.trainer.notebook import read_metrics, train_run  # noqa: F401  (read_metrics: re-exported for the notebooks)
from toolkit.scaling.summary import interpolated_compute


def _curves(runs: dict[str, Path]) -> pd.DataFrame:
    frames = []
    for label, path in runs.items():
        if Path(path, "metrics.jsonl").is_file():
            df = read_metrics(path)
            frames.append(df.assign(run=label))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_training(runs: dict[str, Path], fig=None):
    """Two panels: training loss against step, validation NELBO against training FLOPs (seaborn), one
    legend outside the data."""
    import matplotlib.pyplot as plt   # deferred: plotting is optional and slow to import
    from toolkit.plotting import apply_theme, legend_outside, log_budget_axis   # deferred: with the plotting libraries
    sns = apply_theme()
    df = _curves(runs)
    if fig is None:
        fig = plt.figure(figsize=(11, 3.8), layout="constrained")
    fig.clear()
    left, right = fig.subplots(1, 2)
    if not df.empty and "train_loss" in df:
        sns.lineplot(df.dropna(subset=["train_loss"]), x="step", y="train_loss", hue="run", ax=left, legend=False)
        val = df.dropna(subset=["val_nelbo"]).query("flops > 0")
        if not val.empty:
            sns.lineplot(val, x="flops", y="val_nelbo", hue="run", marker="o", ax=right)
            log_budget_axis(right)
            legend_outside(right)
    left.set(title="training loss (each family's own objective)", xlabel="step", ylabel="loss (nats / token)")
    right.set(title="validation NELBO per token", xlabel="training compute (FLOPs)", ylabel="nats / token")
    return fig


def train_live(runs: dict[str, dict], root: str | Path, common: dict, refresh_s: float = 2.0,
               show: bool = True) -> dict[str, Path]:
    """Train each run (label -> key=value overrides, on top of `common`) under root/<label>.

    With `show`, a progress bar per run and the curves of all runs so far are redrawn every
    `refresh_s` seconds while training. A finished run is reused (the trainer resumes it).
    """
    done: dict[str, Path] = {}
    fig = handle = None
    if show:   # deferred: plotting and IPython are only needed (and only present) in a notebook
        import matplotlib.pyplot as plt
        from IPython.display import display
        fig = plt.figure(figsize=(11, 3.8), layout="constrained")
        plt.close(fig)                   # shown through the display handle only
        handle = display(plot_training({}, fig), display_id=True)
    for label, overrides in runs.items():
        out = Path(root) / slug(label)
        done[label] = out
        kwargs = {**common, **overrides}
        error: list[BaseException] = []

        def work():
            try:
                train_run(out, **kwargs)
            except BaseException as e:   # re-raised in the caller's thread below
                error.append(e)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        bar = tqdm(total=int(kwargs.get("max_steps", 0)) or None, desc=label, disable=not show)
        while worker.is_alive():
            worker.join(refresh_s)
            if show:
                step = _last_step(out)
                bar.update(step - bar.n)
                handle.update(plot_training(done, fig))
        bar.update(_last_step(out) - bar.n)
        bar.close()
        if error:
            raise error[0]
    if show:
        handle.update(plot_training(done, fig))
    return done


def _last_step(out: Path) -> int:
    try:
        lines = Path(out, "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    return int(json.loads(lines[-1])["step"]) if lines else 0


def slug(label: str) -> str:
    """A folder name for a run label: 'MDLM (low-var)' -> 'mdlm-low-var'."""
    keep = "".join(c.lower() if c.isalnum() else "-" for c in label)
    return "-".join(p for p in keep.split("-") if p)


def flops_to_reach(metrics: pd.DataFrame, loss: float) -> float:
    """Training FLOPs at which a run's validation NELBO first reaches `loss` (log-log interpolation
    on the running best); nan if it never does."""
    val = metrics.dropna(subset=["val_nelbo"]).query("flops > 0").sort_values("flops")
    best = val.set_index("flops")["val_nelbo"].cummin()
    if best.empty or best.iloc[-1] > loss:
        return math.nan
    if best.iloc[0] <= loss:
        return float(best.index[0])
    return interpolated_compute(best[~best.duplicated()], loss)


def compute_saving(baseline: pd.DataFrame, candidate: pd.DataFrame) -> dict:
    """Compute the candidate needs to reach the baseline's best val NELBO, as a fraction saved."""
    target = float(baseline["val_nelbo"].min())
    c_base, c_cand = flops_to_reach(baseline, target), flops_to_reach(candidate, target)
    return {"target_val_nelbo": target, "baseline_flops": c_base, "candidate_flops": c_cand,
            "saving": 1 - c_cand / c_base}


def walkthrough_settings(quick: bool) -> dict:
    """The small training runs the notebooks share (training, low-variance, Pareto), so a later
    notebook reuses the earlier one's finished runs: a few minutes per run on a 2-core CPU; the
    quick form is CI's smoke test (seconds, meaningless numbers)."""
    if quick:
        return dict(model="cpu-4xs", seq_len=32, batch_size=4, max_steps=6, lr=3e-3, eval_every=3, log_every=3,
                    eval_batches=1, threads=2)
    return dict(model="cpu-xxs", seq_len=64, batch_size=16, max_steps=200, lr=3e-3, eval_every=20, log_every=10,
                eval_batches=8, threads=2)
