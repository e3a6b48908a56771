"""The reasoning study: fine-tune the four embedded models on the toy arithmetic task at equal
training FLOPs, then score generated answers on held-out problems at several step counts.

Every phase is resumable (runs resume from their checkpoints, evaluations skip the problems
already in their generation files), so `bash studies/reasoning/run.sh` can be re-run after an
interruption. `--summarise` only rebuilds results.csv, results.md, the plot and the README table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORK = Path(os.environ.get("STUDY_WORK", HERE / "work"))   # runs, generations (not committed)
# family label -> (embedded init model, fine-tuning overrides); AR's sampler ignores `steps`
FAMILIES = {"ar": ("ar", []), "mdlm": ("mdlm", []), "duo": ("duo", []), "esolm": ("esolm", [])}
ONE_STEP_COUNT = {"ar"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], out: Path | None = None) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    log("$ " + " ".join(cmd))
    with open(out, "w") if out else open(os.devnull, "w") as f:
        r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f if out else None, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")


def data(a) -> Path:
    d = WORK / "data"
    if not (d / "test.jsonl").is_file():
        run([sys.executable, "-m", "toolkit.data.arithmetic", str(d), "--train", str(a.train_problems),
             "--test", str(a.test_problems), "--steps", str(a.arith_steps), "--max-operand", str(a.max_operand)])
    return d


def finetune(fam: str, a, d: Path) -> None:
    init, extra = FAMILIES[fam]
    out = WORK / "runs" / fam
    run([sys.executable, "-m", "training.finetune", f"init={init}", f"data={d / 'train.jsonl'}", f"out={out}",
         f"max_steps={a.max_steps}", f"batch_size={a.batch_size}", f"seq_len={a.seq_len}", f"lr={a.lr}",
         "eval_every=250", "eval_batches=12", "log_every=50", "save_every=250", "threads=1", "progress=false",
         "resume=true", *extra])
    log(f"{fam}: fine-tuned")


def evaluate(fam: str, a, d: Path) -> None:
    steps = [max(a.steps)] if fam in ONE_STEP_COUNT else a.steps
    run([sys.executable, "-m", "toolkit.evaluate", str(WORK / "runs" / fam), "--task", str(d / "test.jsonl"),
         "--problems", str(a.test_problems), "--steps", ",".join(map(str, steps)), "--temperature", "0",
         "--length", str(a.seq_len), "--batch-size", "64", "--threads", "1", "--json",
         "--generations", str(WORK / f"generations-{fam}.jsonl")], WORK / f"accuracy-{fam}.json")
    run([sys.executable, "-m", "toolkit.evaluate", FAMILIES[fam][0], "--metrics", "nelbo", "--sequences", "32",
         "--mc-samples", "8", "--threads", "1", "--json"], WORK / f"pretrain-nelbo-{fam}.json")
    log(f"{fam}: evaluated")


def pipeline(fam: str, a, d: Path) -> None:
    finetune(fam, a, d)
    evaluate(fam, a, d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=72)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--steps", default="8,16,32", help="sampling step counts")
    ap.add_argument("--train-problems", type=int, default=20000)
    ap.add_argument("--test-problems", type=int, default=500)
    ap.add_argument("--arith-steps", type=int, default=2)
    ap.add_argument("--max-operand", type=int, default=10)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--families", default="esolm,duo,mdlm,ar", help="in start order (slowest first)")
    ap.add_argument("--summarise", action="store_true", help="only rebuild the tables and plot")
    a = ap.parse_args()
    a.steps = [int(s) for s in a.steps.split(",")]
    families = a.families.split(",")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise SystemExit(f"unknown families {unknown} (known: {', '.join(FAMILIES)})")
    if not a.summarise:
        WORK.mkdir(parents=True, exist_ok=True)
        (WORK / "settings.json").write_text(json.dumps(vars(a), indent=2))
        d = data(a)
        tic = time.time()
        with ThreadPoolExecutor(a.parallel) as pool:
            for f in [pool.submit(pipeline, fam, a, d) for fam in families]:
                f.result()
        log(f"all runs done in {(time.time() - tic) / 60:.1f} min")
    from summarise import summarise   # noqa: E402  (same folder)
    summarise(WORK, HERE if WORK == HERE / "work" else WORK, [f for f in FAMILIES if f in families])
    log("summary written")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
