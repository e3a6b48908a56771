"""Merge the seed runs (seeds.sh) into results.csv: the seed-0 sweep's rows keep seed 0, each finished
run of seeds/seedN/ is added as a row with seed N, and seed rows already in results.csv (collected from
an earlier checkout, whose seeds/ folder is not committed) are kept unless a run here replaces them.
Then refit with the seeds in:

    python studies/cpu_scaling/collect_seeds.py
    python -m toolkit.scaling fit studies/cpu_scaling/results.csv --out studies/cpu_scaling \\
        --bootstrap 1000 --approach3 --plots --compare mdlm_loss-low_var:mdlm

The rows are collected by the sweep itself (`launcher=print` starts nothing and writes the results
of whatever has finished), with the same settings seeds.sh trains with.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PLAN = ["family=ar,mdlm,mdlm:loss=low_var,duo,esolm:loss=low_var", "budgets=1e12,3e12,1e13",
        "sizes=cpu-4xs,cpu-3xs,cpu-xxs,cpu-xs", "batch_size=8", "seq_len=128", "lr=2e-3", "min_steps=50",
        "max_epochs=5", "eval_every=1000", "eval_batches=38", "log_every=50", "save_every=250", "parallel=1",
        "threads=1", "precision=fp32", "launcher=print"]


KEY = ["variant", "size", "budget", "seed"]   # one run


def merge(old: pd.DataFrame, collected: list[pd.DataFrame]) -> pd.DataFrame:
    """results.csv after collecting: the seed-0 rows, then the earlier seed rows no collected run
    replaces, then the collected runs (a run collected again replaces its earlier row; none is lost)."""
    base = old[old["seed"] == 0] if "seed" in old.columns else old.assign(seed=0)
    base = base.assign(precision=base["precision"] if "precision" in base.columns else "fp32")
    earlier = old[old["seed"] != 0] if "seed" in old.columns else old.iloc[:0]
    new = pd.concat(collected, ignore_index=True) if collected else earlier.iloc[:0]
    kept = earlier[~earlier.set_index(KEY).index.isin(new.set_index(KEY).index)] if len(new) else earlier
    return pd.concat([base, kept, new], ignore_index=True)


def main() -> int:
    results = HERE / "results.csv"
    old = pd.read_csv(results)
    frames = []
    for seed_dir in sorted((HERE / "seeds").glob("seed[0-9]*")):
        seed = int(seed_dir.name[4:])
        subprocess.run([sys.executable, "-m", "training.sweep", *PLAN, f"seed={seed}", f"out={seed_dir}"],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        rows = pd.read_csv(seed_dir / "results.csv")
        rows = rows[rows["status"] == "finished"].assign(seed=seed, precision="fp32")
        rows["run"] = [str(Path(r).relative_to(HERE)) if Path(r).is_absolute() else f"seeds/{seed_dir.name}/{r}"
                       for r in rows["run"]]
        frames.append(rows)
        print(f"seed {seed}: {len(rows)} finished runs")
    merged = merge(old, frames)
    merged.to_csv(results, index=False)
    print(f"{len(merged)} rows ({len(old)} before)")
    print(f"wrote {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
