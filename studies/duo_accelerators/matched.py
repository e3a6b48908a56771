"""Few-step Gen PPL of Duo checkpoints at matched entropy (the judge: the embedded AR model).

For each model and step count: the temperature whose samples reach the target mean unigram
entropy (pooled over the seeds), Gen PPL there with a bootstrap interval over seeds and samples, and
for contrast Gen PPL and entropy at temperature 1 (seed 0). `--target t1` skips the search: each
model at temperature 1, over the seeds (a model's own matched point when the others are matched to
its entropy); `--target from:LABEL` matches each step count to LABEL's entropy there (from the csv). A target the model cannot reach is a row with the reason in `note`. Rows are appended
to the csv as each cell finishes, so an interrupted run resumes where it stopped; progress: stderr.

    python studies/duo_accelerators/matched.py --model teacher=duo --model student=runs/.../checkpoint \\
        --steps 2,4,8,16 --seeds 3 --samples 64 --target 3.6 --csv studies/duo_accelerators/matched.csv
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # this checkout's toolkit

import toolkit  # noqa: E402
from toolkit.evaluation.generation import load_evaluator  # noqa: E402
from toolkit.errors import UserError  # noqa: E402
from toolkit.evaluation.matched_entropy import match_entropy, pooled, sample_scored  # noqa: E402
from toolkit.sample_request import SampleRequest  # noqa: E402

FIELDS = ["model", "checkpoint", "steps", "target", "temperature", "entropy", "gen_ppl", "ci_low", "ci_high",
          "per_seed_gen_ppl", "seeds", "samples_per_seed", "probes", "t1_entropy", "t1_gen_ppl", "note"]


def write(out: Path, row: dict) -> None:
    new = not out.exists()
    with out.open("a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, metavar="LABEL=CHECKPOINT")
    ap.add_argument("--steps", default="2,4,8,16")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=64, help="samples per seed")
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--target", default="3.6", help="matched mean unigram entropy (nats); t1: temperature 1;"
                    " from:LABEL: LABEL's entropy at each step count (rows already in the csv)")
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--lowest-temperature", type=float, default=0.25,
                    help="the search's lower end (a collapsed student's entropy needs a colder teacher)")
    ap.add_argument("--csv", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(a.csv)
    done, entropy_of = set(), {}
    if out.exists():
        rows = list(csv.DictReader(out.open()))
        done = {(r["model"], int(r["steps"])) for r in rows}
        entropy_of = {(r["model"], int(r["steps"])): float(r["entropy"]) for r in rows if r["entropy"]}
    judge = load_evaluator("ar")
    judge.model.precision = "fp32"
    seeds = list(range(a.seeds))
    for spec in a.model:
        label, path = spec.split("=", 1)
        model = toolkit.load(path)
        model.precision = "fp32"
        for steps in map(int, a.steps.split(",")):
            if (label, steps) in done:
                continue
            start = time.time()
            req = SampleRequest(num_samples=a.samples, length=a.length, steps=steps)
            t1 = sample_scored(model, req, 1.0, 0, judge)
            target = entropy_of[(a.target[5:], steps)] if a.target.startswith("from:") else a.target
            row = {"model": label, "checkpoint": path, "steps": steps, "target": target, "samples_per_seed": a.samples,
                   "t1_entropy": round(t1.entropy, 4), "t1_gen_ppl": round(t1.gen_ppl, 2), "note": ""}
            try:
                m = (pooled([t1] + [sample_scored(model, req, 1.0, s, judge) for s in seeds[1:]], float("nan"), 0.0, 1.0,
                            []) if target == "t1" else match_entropy(model, req, float(target), judge, seeds,
                                                                    a.tolerance, (a.lowest_temperature, 2.0)))
            except UserError as e:
                row["note"] = str(e)
                write(out, row)
                print(f"{label} steps {steps}: not matched: {e}", file=sys.stderr, flush=True)
                continue
            row.update({"temperature": round(m.temperature, 4), "entropy": round(m.entropy, 4),
                   "gen_ppl": round(m.gen_ppl, 2), "ci_low": round(m.ci_low, 2), "ci_high": round(m.ci_high, 2),
                   "per_seed_gen_ppl": " ".join(f"{v:.1f}" for v in m.per_seed_gen_ppl),
                   "seeds": " ".join(map(str, m.seeds)),
                   "probes": " ".join(f"{t:.3f}:{h:.3f}" for t, h in m.probes)})
            write(out, row)
            print(f"{label} steps {steps}: T={m.temperature:.3f} H={m.entropy:.3f} Gen PPL {m.gen_ppl:.1f} "
                  f"[{m.ci_low:.1f}, {m.ci_high:.1f}]; T=1: H={t1.entropy:.3f} Gen PPL {t1.gen_ppl:.1f} "
                  f"({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
