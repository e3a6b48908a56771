"""The reasoning study: accuracy against fine-tuning compute, per family and model size.

Every family (AR, MDLM, Duo, Eso-LM) at every model size is fine-tuned on the toy arithmetic task
(held out by content: toolkit/data/arithmetic.py) along a ladder of step budgets, with several
training seeds (data order, noise draws), and evaluated at every rung on the validation problems
(to choose the decoding setting) and on the test problems. One fine-tuning run per (size, family,
seed) climbs the ladder: the learning rate is constant after a fixed warm-up, so the run stopped at
a budget is exactly the run that budget alone would give, and a copy of the run directory at each
rung (`points/SIZE-FAMILY-STEPS-sSEED`) is that point's own run directory. Training runs at the pinned
`--precision` (fp32), and evaluation too where toolkit.evaluate has the flag, so the study does not
change with the CPU's bf16 support. Sizes other than the demo one are first pre-trained here with the
demo models' recipe (training/recipes/demo-*.yaml).

Work is a graph of tasks (pre-train, fine-tune to a rung, evaluate a rung) run by `--parallel`
workers, cheapest rungs first, so a study cut short still has every family at its lower rungs.
Each finished task leaves a marker, so `bash studies/reasoning/run.sh` resumes after any
interruption; progress goes to stdout (`progress.log` when started by run.sh). `--summarise`
only rebuilds results.csv, results.md, the figure and the README table.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FAMILIES = ("ar", "mdlm", "duo", "esolm")

# Profiles: the committed CPU study, the same ladder at a larger size on one GPU, and a tiny
# end-to-end run for the tests. A size maps to (a model preset pre-trained here, or None for the
# embedded demo model of each family; its ladder of fine-tuning step budgets). The larger CPU
# size (cpu-m pre-trained here with the demo models' own recipe) climbs the same ladder: it costs ~2x more
# per step. Rungs run cheapest first, then seed by seed, each point evaluated as soon as it is trained, so a
# study cut short has whole points at its lower rungs.
PROFILES = {
    "cpu": dict(sizes={"demo": (None, "500,1000"), "large": ("cpu-m", "500,1000")},
                train_problems=128000, test_problems=300, validation_problems=200, seeds="0,1,2", steps="8,32",
                parallel=1, device="cpu", threads=1, eval_every=250, precision="fp32",
                pretrain=[], train=[]),
    "gpu": dict(sizes={"gpu-19M": ("19M", "500,1000,2000,4000")}, train_problems=128000, test_problems=300,
                validation_problems=200, seeds="0,1,2", steps="8,32", parallel=4, device="cuda", threads=0,
                eval_every=250, precision="fp32",
                pretrain=["compile=false"], train=["compile=false"]),   # compiling each rung would cost more than it saves
    "tiny": dict(sizes={"demo": (None, "4,8"), "tiny": ("cpu-4xs", "4,8")}, train_problems=400, test_problems=6,
                 validation_problems=6, seeds="0,1,2", steps="4", parallel=2, device="cpu", threads=1, eval_every=4,
                 precision="fp32", pretrain=["max_steps=6", "eval_every=3", "save_every=6", "log_every=3"], train=[]),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Task:
    name: str
    run: object                 # callable -> None; raises on failure
    deps: list[str] = field(default_factory=list)
    priority: tuple = ()
    run_dir: Path | None = None   # a trainer's run: while another process trains it, the task waits


class Study:
    def __init__(self, a):
        self.a, self.work = a, Path(a.work)
        self.data = self.work / "data" / a.task
        self._evaluate_has_precision: bool | None = None

    # -- commands ---------------------------------------------------------------------------
    def sh(self, cmd: list[str], out: Path | None = None, nice: int = 0) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(self.a.threads or os.cpu_count()), "PYTHONPATH": str(ROOT)}
        cmd = ["nice", "-n", str(nice), *cmd] if nice else cmd
        log("$ " + " ".join(cmd))
        with open(out, "w") if out else open(os.devnull, "w") as f:
            r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.PIPE, text=True)
        if r.returncode:
            raise RuntimeError(f"exit {r.returncode}: {' '.join(cmd)}\n{r.stderr[-1500:]}")

    def common(self) -> list[str]:
        return [f"threads={self.a.threads}", f"device={self.a.device}", f"precision={self.a.precision}",
                "progress=false", "resume=true"]

    def evaluation_precision(self) -> list[str]:
        """`--precision` for toolkit.evaluate where this checkout's evaluate has the flag (older ones
        score at `auto`, which is fp32 on a CPU without native bf16)."""
        if self._evaluate_has_precision is None:
            r = subprocess.run([sys.executable, "-m", "toolkit.evaluate", "--help"], cwd=ROOT, capture_output=True,
                               text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            self._evaluate_has_precision = "--precision" in r.stdout
        return ["--precision", self.a.precision] if self._evaluate_has_precision else []

    def make_data(self) -> None:
        self.sh([sys.executable, "-m", "toolkit.data.arithmetic", str(self.data), "--task", self.a.task,
                 "--train", str(self.a.train_problems), "--test", str(self.a.test_problems),
                 "--validation", str(self.a.validation_problems), "--holdout", self.a.holdout])

    def make_probe(self) -> None:
        """probe.jsonl: each test problem with its first worked line given, true (control) and with its
        result shifted by 1-3 (does line 2 start from what the model sees, or recompute it?)."""
        import random
        from toolkit.data.arithmetic import given_first_line
        rng, rows = random.Random(0), []
        for line in (self.data / "test.jsonl").read_text().splitlines():
            problem = json.loads(line)
            for shift in (0, rng.choice([-3, -2, -1, 1, 2, 3])):
                probe = given_first_line(problem, shift)
                if probe is not None:
                    rows.append(probe)
        (self.data / "probe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def nice(self, size: str) -> int:
        """Sizes pre-trained here are the longest path: the embedded size's tasks yield the CPU to them."""
        return 5 if self.a.sizes[size][0] is None and self.a.parallel > 1 else 0

    def init_of(self, size: str, fam: str) -> str:
        preset, _ = self.a.sizes[size]
        return fam if preset is None else str(self.work / "pretrain" / f"{size}-{fam}")

    def pretrain(self, size: str, fam: str) -> None:
        self.sh([sys.executable, "-m", "training.train", f"config=training/recipes/demo-{fam}.yaml",
                 f"model={self.a.sizes[size][0]}", f"out={self.init_of(size, fam)}", *self.common(), *self.a.pretrain])

    def finetune(self, size: str, fam: str, budget: int, seed: int) -> None:
        run = self.work / "runs" / f"{size}-{fam}-s{seed}"
        a = self.a
        self.sh([sys.executable, "-m", "training.finetune", f"init={self.init_of(size, fam)}",
                 f"data={self.data / 'train.jsonl'}", f"out={run}", f"max_steps={budget}", f"seed={seed}",
                 f"batch_size={a.batch_size}", f"seq_len={a.seq_len}", f"lr={a.lr}", f"warmup_steps={a.warmup}",
                 "min_lr_ratio=1.0", f"eval_every={a.eval_every}", "eval_batches=12", f"log_every={a.eval_every}",
                 f"save_every={budget}", *self.common(), *a.train], nice=self.nice(size))
        point = self.work / "points" / point_name(size, fam, budget, seed)
        shutil.rmtree(point, ignore_errors=True)
        shutil.copytree(run, point, ignore=shutil.ignore_patterns("*.tmp", "*.old"))

    def samplers(self, fam: str) -> list[str]:
        """The requested strategies this family supports (the registry answers, not a list here)."""
        import toolkit
        from toolkit.samplers import supported
        family = toolkit.load(fam).family
        return [s for s in self.a.samplers.split(",") if s in supported(family)]

    def evaluate(self, name: str, split: str) -> None:
        """Every supported setting (strategy x steps) of point `name` on the test or validation problems:
        evals/[validation-]NAME.json (the validation scores choose the setting reported on the test)."""
        fam = POINT.fullmatch(name)["family"]
        prefix, problems = ("", self.a.test_problems) if split == "test" else ("validation-", self.a.validation_problems)
        spec = [x for s in self.samplers(fam) for x in ("--sampler", s)]
        (self.work / "evals").mkdir(parents=True, exist_ok=True)
        self.sh([sys.executable, "-m", "toolkit.evaluate", str(self.work / "points" / name),
                 "--task", str(self.data / f"{split}.jsonl"), "--problems", str(problems),
                 "--steps", self.a.steps, "--temperature", "0", "--length", str(self.a.seq_len), "--batch-size", "64",
                 "--threads", str(self.a.threads), "--device", self.a.device, "--json", *spec,
                 *self.evaluation_precision(), "--generations", str(self.work / "generations" / f"{prefix}{name}.jsonl")],
                self.work / "evals" / f"{prefix}{name}.json", nice=self.nice(POINT.fullmatch(name)["size"]))

    def probe(self, name: str) -> None:
        (self.work / "evals").mkdir(parents=True, exist_ok=True)
        self.sh([sys.executable, "-m", "toolkit.evaluate", str(self.work / "points" / name),
                 "--task", str(self.data / "probe.jsonl"), "--problems", "0", "--steps", self.a.steps.split(",")[-1],
                 "--temperature", "0", "--length", str(self.a.seq_len), "--batch-size", "64",
                 "--threads", str(self.a.threads), "--device", self.a.device, "--json", *self.evaluation_precision(),
                 "--generations", str(self.work / "generations" / f"probe-{name}.jsonl")],
                self.work / "evals" / f"probe-{name}.json", nice=self.nice(POINT.fullmatch(name)["size"]))

    def pretrain_nelbo(self, size: str, fam: str) -> None:
        (self.work / "evals").mkdir(parents=True, exist_ok=True)
        self.sh([sys.executable, "-m", "toolkit.evaluate", self.init_of(size, fam), "--metrics", "nelbo",
                 "--sequences", "32", "--mc-samples", "8", "--threads", str(self.a.threads),
                 "--device", self.a.device, "--json", *self.evaluation_precision()],
                self.work / "evals" / f"pretrain-{size}-{fam}.json")

    # -- the task graph ---------------------------------------------------------------------
    def tasks(self) -> list[Task]:
        a, out = self.a, []
        (self.work / "generations").mkdir(parents=True, exist_ok=True)
        for si, size in enumerate(a.sizes):
            for fi, fam in enumerate(a.families):
                key = f"{size}-{fam}"
                base = []
                preset, budgets = a.sizes[size]
                if preset is not None:
                    out.append(Task(f"pretrain-{key}", lambda s=size, f=fam: self.pretrain(s, f), [],
                                    (-1, si, fi), Path(self.init_of(size, fam))))   # the longest path
                    base = [f"pretrain-{key}"]
                out.append(Task(f"pretrain-nelbo-{key}", lambda s=size, f=fam: self.pretrain_nelbo(s, f), base,
                                (99, si, fi)))
                for seed in a.seeds:
                    previous = base
                    for k, budget in enumerate(budgets):
                        name = point_name(size, fam, budget, seed)
                        ft = f"finetune-{name}"
                        out.append(Task(ft, lambda s=size, f=fam, b=budget, r=seed: self.finetune(s, f, b, r), previous,
                                        (k, seed, si, fi, 0), self.work / "runs" / f"{key}-s{seed}"))
                        out.append(Task(f"validate-{name}", lambda n=name: self.evaluate(n, "validation"), [ft],
                                        (k, seed, si, fi, 1)))
                        out.append(Task(f"evaluate-{name}", lambda n=name: self.evaluate(n, "test"), [ft],
                                        (k, seed, si, fi, 2)))
                        if a.probe:
                            out.append(Task(f"probe-{name}", lambda n=name: self.probe(n), [ft], (k, seed, si, fi, 3)))
                        previous = [ft]
        return out

    def run_all(self) -> bool:
        """Run every task whose marker is missing; True if all succeeded."""
        done_dir = self.work / "done"
        done_dir.mkdir(parents=True, exist_ok=True)
        kinds = self.a.only.split(",") if self.a.only else None
        todo = {t.name: t for t in self.tasks() if not (done_dir / t.name).exists()
                and (kinds is None or t.name.split("-")[0] in kinds)}
        finished = {p.name for p in done_dir.iterdir()}
        failed: set[str] = set()
        running: set[str] = set()
        deferred: dict[str, float] = {}   # task -> when to try again (its lock is held elsewhere)
        cv = threading.Condition()

        def next_task():
            finished.update(p.name for p in done_dir.iterdir())   # tasks another study process finished
            now = time.time()
            ready = [t for t in todo.values() if t.name not in running and deferred.get(t.name, 0) <= now
                     and all(d in finished for d in t.deps)]
            return min(ready, key=lambda t: t.priority) if ready else None

        def worker():
            while True:
                with cv:
                    while True:
                        for name in [n for n, t in todo.items() if any(d in failed for d in t.deps)]:
                            failed.add(name)
                            log(f"skipped {name}: a task it needs failed")
                            del todo[name]
                        if not todo:
                            cv.notify_all()
                            return
                        task = next_task()
                        if task is not None:
                            running.add(task.name)
                            break
                        cv.wait(timeout=30)   # a lock held elsewhere or work in flight
                ok = self._run_one(task, done_dir)
                with cv:
                    running.discard(task.name)
                    if ok is None:            # deferred: its lock is held by another process
                        deferred[task.name] = time.time() + 60
                        continue
                    del todo[task.name]
                    (finished if ok else failed).add(task.name)
                    cv.notify_all()

        threads = [threading.Thread(target=worker) for _ in range(self.a.parallel)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return not failed

    def _run_one(self, task: Task, done_dir: Path) -> bool | None:
        if task.run_dir is not None and trainer_running(task.run_dir):
            return None
        tic = time.time()
        try:
            task.run()
        except Exception as e:   # one failed point must not stop an unattended ladder
            log(f"FAILED {task.name}: {e}")
            return False
        (done_dir / task.name).write_text(f"{time.time() - tic:.1f}\n")
        log(f"done {task.name} in {(time.time() - tic) / 60:.1f} min")
        return True


POINT = re.compile(r"(?P<size>.+)-(?P<family>[a-z]+)-(?P<budget>\d+)-s(?P<seed>\d+)")


def point_name(size: str, fam: str, budget: int, seed: int) -> str:
    """A point's run directory, evaluation and generation name: one per (size, family, budget, seed)."""
    return f"{size}-{fam}-{budget}-s{seed}"


def trainer_running(run: Path) -> bool:
    """Does another process hold this run's trainer lock (`RUN/.lock`, taken by every trainer)?"""
    lock = run / ".lock"
    if not lock.is_file():
        return False
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu", choices=list(PROFILES), help="cpu (the committed study), gpu, tiny")
    ap.add_argument("--work", default=os.environ.get("STUDY_WORK", str(HERE / "work")),
                    help="runs, points and generations (not committed)")
    ap.add_argument("--results", default=None, help="where results.* and the figure go (default: this folder for "
                    "the cpu profile's default work folder, else the work folder)")
    ap.add_argument("--task", default="arith", help="a level of toolkit/data/arithmetic.py: copy, arith, arith-hard")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--budgets", default=None, help="fine-tuning step budgets (the ladder; default: each size's own)")
    ap.add_argument("--sizes", default=None, help="comma list of the profile's sizes to run")
    ap.add_argument("--samplers", default="ancestral,confidence,block", help="strategies tried where supported")
    ap.add_argument("--steps", default=None, help="sampling step counts")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=72)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--train-problems", type=int, default=None)
    ap.add_argument("--test-problems", type=int, default=None)
    ap.add_argument("--validation-problems", type=int, default=None,
                    help="held-out problems (disjoint from the test's) that choose each point's decoding setting")
    ap.add_argument("--holdout", default="content", choices=("content", "surface"),
                    help="content: whole numbers-and-operations tuples held out (default); surface: only questions")
    ap.add_argument("--seeds", default=None, help="training seeds per point, comma list (default 0,1,2)")
    ap.add_argument("--precision", default=None, choices=("fp32", "bf16", "auto"),
                    help="training and evaluation precision (default fp32: the same study on every CPU)")
    ap.add_argument("--probe", action=argparse.BooleanOptionalAction, default=True,
                    help="also run the given-first-line probe at every point (default on)")
    ap.add_argument("--parallel", type=int, default=None, help="tasks at a time")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the profile's)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads per task (0: torch's default)")
    ap.add_argument("--pretrain", action="append", default=None, metavar="KEY=VALUE",
                    help="extra training.train overrides for pre-training (repeatable)")
    ap.add_argument("--only", default=None, help="comma list of task kinds to run (pretrain, finetune, evaluate, probe);"
                    " the others are left to another study process and waited for")
    ap.add_argument("--summarise", action="store_true", help="only rebuild the tables and the figure")
    a = ap.parse_args(argv)
    profile = PROFILES[a.profile]
    for k, v in profile.items():
        if k not in ("sizes", "train") and getattr(a, k, None) is None:
            setattr(a, k, v)
    sizes = {name: (preset, a.budgets or ladder) for name, (preset, ladder) in profile["sizes"].items()}
    wanted = a.sizes.split(",") if isinstance(a.sizes, str) else list(sizes)
    unknown = [s for s in wanted if s not in sizes]
    if unknown:
        raise SystemExit(f"unknown sizes {unknown} for profile {a.profile} (known: {', '.join(sizes)})")
    a.train = profile["train"]
    a.sizes = {s: (sizes[s][0], sorted(int(b) for b in str(sizes[s][1]).split(","))) for s in wanted}
    a.families = a.families.split(",")
    unknown = [f for f in a.families if f not in FAMILIES]
    if unknown:
        raise SystemExit(f"unknown families {unknown} (known: {', '.join(FAMILIES)})")
    a.steps = str(a.steps)
    try:
        a.seeds = sorted({int(x) for x in str(a.seeds).split(",")})
    except ValueError:
        raise SystemExit(f"error: --seeds takes a comma list of integers (got {a.seeds!r})") from None
    if a.results is None:
        a.results = str(HERE) if a.profile == "cpu" and Path(a.work) == HERE / "work" else a.work
    return a


# what makes two invocations one study: the data, the recipe and the evaluation
SHARED = ("task", "train_problems", "test_problems", "validation_problems", "holdout", "batch_size", "seq_len", "lr",
          "warmup", "steps", "samplers", "precision")


def merged_settings(before: dict | None, now: dict) -> dict:
    """The work folder's settings after one more invocation: a later one may add families or rungs
    (continuing the families still rising) but not change what a point means; each is recorded."""
    invocation = {"families": now["families"], "sizes": {s: b for s, (_, b) in now["sizes"].items()},
                  **({"seeds": now["seeds"]} if "seeds" in now else {})}
    if before is None:
        return {**now, "invocations": [invocation]}
    changed = [f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in SHARED if k in before and before[k] != now[k]]
    if changed:
        raise SystemExit(f"error: {now['work']} holds a study with other settings ({'; '.join(changed)}): "
                         "use another --work")
    sizes = {s: list(v) for s, v in before["sizes"].items()}
    for s, (preset, budgets) in now["sizes"].items():
        sizes[s] = [preset, sorted(set(sizes.get(s, [preset, []])[1]) | set(budgets))]
    families = before["families"] + [f for f in now["families"] if f not in before["families"]]
    seeds = sorted(set(before.get("seeds", [])) | set(now.get("seeds", [])))
    invocations = before.get("invocations", [{"families": before["families"],
                                             "sizes": {s: b for s, (_, b) in before["sizes"].items()}}])
    return {**before, "families": families, "sizes": sizes, **({"seeds": seeds} if seeds else {}),
            "invocations": invocations + ([invocation] if invocation not in invocations else [])}   # a resume adds none


def main(argv=None) -> int:
    a = parse_args(argv)
    study = Study(a)
    ok = True
    if not a.summarise:
        study.work.mkdir(parents=True, exist_ok=True)
        settings = study.work / "settings.json"
        before = json.loads(settings.read_text()) if settings.is_file() else None
        settings.write_text(json.dumps(merged_settings(before, vars(a)), indent=2))
        if not (study.data / "test.jsonl").is_file():
            study.make_data()
        if not (study.data / "probe.jsonl").is_file():
            study.make_probe()
        tic = time.time()
        ok = study.run_all()
        log(f"ladder {'finished' if ok else 'finished with failures'} in {(time.time() - tic) / 60:.1f} min")
    from summarise import summarise   # noqa: E402  (same folder)
    summarise(study.work, Path(a.results), update_readme=Path(a.results) == HERE)
    log("summary written")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path[:0] = [str(HERE), str(ROOT)]   # this checkout's toolkit, as in the tasks' processes
    sys.exit(main())
