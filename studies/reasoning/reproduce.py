"""Re-train and re-evaluate one committed point of the reasoning study with its seeds, then print
committed against re-run and whether the re-run's seed mean lies inside the committed seed range.

`bash studies/reasoning/reproduce.sh demo-mdlm-2000` reads the point from `ladder.csv` and the
study's settings from `study.json` (both beside results.csv), runs study.py for that one size,
family and budget in a fresh work folder (the same data, seeds, recipe and precision), and
compares. The re-run fine-tunes straight to the budget: with a constant learning rate and draws
seeded by (seed, step), that is the run the ladder climbed to it.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from toolkit.scaling.seeds import welch_difference

HERE = Path(__file__).resolve().parent
POINT = re.compile(r"(?P<size>.+)-(?P<family>[a-z]+)-(?P<budget>\d+)")
FLAGS = {"task": "--task", "holdout": "--holdout", "batch_size": "--batch-size", "seq_len": "--seq-len", "lr": "--lr",
         "warmup": "--warmup", "train_problems": "--train-problems", "test_problems": "--test-problems",
         "validation_problems": "--validation-problems", "steps": "--steps", "samplers": "--samplers",
         "precision": "--precision", "threads": "--threads", "device": "--device"}


def read_point(results: Path, name: str) -> dict:
    m = POINT.fullmatch(name)
    if not m:
        raise SystemExit(f"error: '{name}' is not SIZE-FAMILY-STEPS (e.g. demo-mdlm-2000)")
    ladder = results / "ladder.csv"
    if not ladder.is_file() or not (results / "study.json").is_file():
        raise SystemExit(f"error: {results} has no ladder.csv and study.json: summarise the study first")
    for row in csv.DictReader(open(ladder)):
        if (row["size"], row["family"], row["budget_steps"]) == (m["size"], m["family"], m["budget"]):
            return row
    known = ", ".join(f"{r['size']}-{r['family']}-{r['budget_steps']}" for r in csv.DictReader(open(ladder)))
    raise SystemExit(f"error: no committed point '{name}' in {ladder} (known: {known})")


def study_command(settings: dict, point: dict, work: Path) -> list[str]:
    cmd = [sys.executable, str(HERE / "study.py"), "--profile", settings["profile"], "--work", str(work),
           "--results", str(work), "--sizes", point["size"], "--families", point["family"],
           "--budgets", point["budget_steps"], "--seeds", point["seeds"], "--parallel", "1", "--no-probe"]
    for key, flag in FLAGS.items():
        if key in settings:
            cmd += [flag, str(settings[key])]
    return cmd


def compare(committed: dict, rerun: dict) -> tuple[bool, str]:
    """(inside, the report): is the re-run's seed mean inside the committed seed range [min, max]?"""
    lo, hi = float(committed["accuracy_min"]), float(committed["accuracy_max"])
    mean = float(rerun["accuracy"])
    inside = lo <= mean <= hi

    def line(label: str, p: dict) -> str:
        return (f"{label:<10} {float(p['accuracy']):.1%} ± {float(p['accuracy_sd']):.1%}"
                f" (seeds {p['seeds']}: {', '.join(f'{float(x):.1%}' for x in p['per_seed'].split(';'))};"
                f" setting {p['sampler']} {p['steps']} chosen on validation;"
                f" task val NELBO {float(p['task_val_nelbo']):.4g})")
    verdict = (f"verdict: the re-run's seed mean {mean:.1%} is {'INSIDE' if inside else 'OUTSIDE'} the committed seed"
               f" range [{lo:.1%}, {hi:.1%}]")
    return inside, "\n".join([line("committed", committed), line("re-run", rerun), difference(committed, rerun), verdict])


def difference(committed: dict, rerun: dict) -> str:
    """The re-run's seed mean minus the committed one, with a Welch t-interval over both points' seeds: a
    three-seed range can be narrower than one evaluation's own sampling noise, so this says whether the
    two differ by more than both spreads allow."""
    seeds = [[float(x) for x in p["per_seed"].split(";")] for p in (rerun, committed)]
    diff, low, high = welch_difference(*seeds)
    if math.isnan(low):
        return f"difference re-run - committed: {100 * diff:+.1f} points (a single seed: no interval)"
    resolved = low > 0 or high < 0
    return (f"difference re-run - committed: {100 * diff:+.1f} points, 95% Welch t-interval over seeds"
            f" [{100 * low:+.1f}, {100 * high:+.1f}]: "
            + ("a difference beyond the seeds' spread" if resolved else "no difference beyond the seeds' spread"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("point", help="SIZE-FAMILY-STEPS, a row of ladder.csv (e.g. demo-mdlm-2000)")
    ap.add_argument("--results", default=str(HERE), help="folder with the committed ladder.csv and study.json")
    ap.add_argument("--work", default=None, help="where the re-run goes (default: a new temporary folder)")
    a = ap.parse_args(argv)
    results = Path(a.results)
    committed = read_point(results, a.point)
    settings = json.loads((results / "study.json").read_text())
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="reasoning-reproduce-"))
    print(f"re-running {a.point} with seeds {committed['seeds']} in {work} ...", flush=True)
    r = subprocess.run(study_command(settings, committed, work), cwd=HERE.parent.parent)
    if r.returncode:
        print(f"error: the re-run failed (exit {r.returncode}); its log is above", file=sys.stderr)
        return 1
    rerun = read_point(work, a.point)
    inside, report = compare(committed, rerun)
    print(report)
    return 0 if inside else 2


if __name__ == "__main__":
    sys.exit(main())
