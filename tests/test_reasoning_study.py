"""The reasoning study end to end on a tiny ladder (the committed study's code path, seconds not hours):
pre-training a size, climbing the ladder with several seeds, a run directory per rung and seed, evaluation
on validation and test, resume, the summary, and reproduce.sh re-running a point."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "studies" / "reasoning"


def run_study(*args, script="study.py"):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHON": sys.executable}
    cmd = ["bash", str(STUDY / script), *args] if script.endswith(".sh") else [sys.executable, str(STUDY / script), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_tiny_ladder_runs_end_to_end_with_seeds_and_resumes(tmp_path):
    work = tmp_path / "work"
    args = ("--profile", "tiny", "--work", str(work), "--families", "mdlm,duo", "--sizes", "tiny", "--seeds", "0,1")
    r = run_study(*args)
    assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
    rows = list(csv.DictReader(open(work / "results.csv")))
    ladder = list(csv.DictReader(open(work / "ladder.csv")))
    assert {(x["family"], x["budget_steps"], x["seeds"]) for x in ladder} == {(f, b, "0,1") for f in ("mdlm", "duo")
                                                                                for b in ("4", "8")}
    # every row says its seed, split and precision; MDLM is scored with every strategy it supports, Duo with its only one
    assert {(x["seed"], x["split"], x["precision"]) for x in rows} == {(s, p, "fp32") for s in "01"
                                                                      for p in ("test", "validation")}
    assert {x["sampler"] for x in rows if x["family"] == "mdlm"} == {"ancestral", "confidence", "block"}
    assert {x["sampler"] for x in rows if x["family"] == "duo"} == {"ancestral"}
    for fam in ("mdlm", "duo"):
        # One run per seed climbs the ladder at a constant cost per step: rung 8 holds twice rung 4's FLOPs,
        # and each rung is its own complete run directory stopped at its budget.
        flops = {int(x["budget_steps"]): float(x["finetune_flops"]) for x in ladder if x["family"] == fam}
        assert flops[8] == pytest.approx(2 * flops[4])
        losses = set()
        for seed in (0, 1):
            for budget in (4, 8):
                point = work / "points" / f"tiny-{fam}-{budget}-s{seed}"
                steps = [json.loads(line)["step"] for line in (point / "metrics.jsonl").read_text().splitlines()]
                assert max(steps) == budget and (point / "checkpoint").is_dir()
            config = json.loads((work / "runs" / f"tiny-{fam}-s{seed}" / "config.json").read_text())
            assert config["optim"]["min_lr_ratio"] == 1.0   # constant LR: a rung is what its budget alone gives
            assert config["train"]["init"] == str(work / "pretrain" / f"tiny-{fam}")   # the size pre-trained here
            assert (config["train"]["seed"], config["train"]["precision"]) == (seed, "fp32")
            losses.add(next(x["task_val_nelbo"] for x in rows if x["family"] == fam and x["seed"] == str(seed)))
        assert len(losses) == 2   # the seeds give different runs
    assert (work / "accuracy.png").stat().st_size > 10_000
    assert json.loads((work / "study.json").read_text())["seeds"] == [0, 1]
    # Resume: a finished study has nothing left to do; a lost marker reruns just that task.
    (work / "done" / "evaluate-tiny-mdlm-8-s1").unlink()
    r = run_study(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    ran = [line for line in r.stdout.splitlines() if "] done " in line]
    assert len(ran) == 1 and "evaluate-tiny-mdlm-8-s1" in ran[0]
    # Continuing a family still rising: one more rung for MDLM alone; the settings keep both invocations.
    r = run_study("--profile", "tiny", "--work", str(work), "--families", "mdlm", "--sizes", "tiny", "--budgets", "12",
                  "--seeds", "0,1", "--no-probe")
    assert r.returncode == 0, r.stderr[-2000:]
    settings = json.loads((work / "settings.json").read_text())
    assert settings["sizes"]["tiny"][1] == [4, 8, 12] and settings["families"] == ["mdlm", "duo"]
    assert [i["families"] for i in settings["invocations"]] == [["mdlm", "duo"], ["mdlm"]]
    ladder = list(csv.DictReader(open(work / "ladder.csv")))
    assert sorted(int(x["budget_steps"]) for x in ladder if x["family"] == "mdlm") == [4, 8, 12]
    assert sorted(int(x["budget_steps"]) for x in ladder if x["family"] == "duo") == [4, 8]
    # A study grows by size: summarising into a results folder that holds another size's committed rows
    # keeps them (the demo size run in one session, the larger size in another) beside this work's.
    committed = tmp_path / "committed"
    committed.mkdir()
    older = [{**x, "size": "older"} for x in csv.DictReader(open(work / "results.csv"))]
    with open(committed / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(older[0]))
        w.writeheader()
        w.writerows(older)
    (committed / "progress.log").write_text("[10:00:00] done finetune-older-mdlm-4-s0 in 60.0 min\n")
    r = run_study("--profile", "tiny", "--work", str(work), "--results", str(committed), "--summarise")
    assert r.returncode == 0, r.stderr[-2000:]
    merged = list(csv.DictReader(open(committed / "ladder.csv")))
    assert {x["size"] for x in merged} == {"older", "tiny"}
    assert [x for x in merged if x["size"] == "older"] == [{**x, "size": "older"} for x in ladder]
    md = (committed / "results.md").read_text()
    assert "| older | MDLM | 4 |" in md and "| tiny | MDLM | 12 |" in md
    # the carried size's logged hour counts beside the markers' seconds (whatever this machine's load made them)
    own = sum(float(m.read_text().split()[0]) for m in (work / "done").glob("finetune-tiny-*")) / 60
    assert f"(finetune {60 + own:.0f}, " in md


def test_carried_rows_read_back_as_written_and_yield_to_a_size_that_ran(tmp_path):
    sys.path[:0] = [str(STUDY)]
    try:
        from summarise import carried_rows, logged_minutes, rank_sizes, write_csv
    finally:
        del sys.path[:1]
    row = {"size": "demo", "size_rank": 0, "family": "mdlm", "seed": 2, "precision": "fp32", "split": "test",
           "params_no_embedding": 321106, "budget_steps": 500, "finetune_flops": 1.7e12, "sampler": "block", "steps": 8,
           "nfe": 9.0, "accuracy": 0.0633, "probe_from_given": None, "budget": "x1"}
    here = tmp_path / "here"
    here.mkdir()
    write_csv(here / "results.csv", [row, {**row, "size": "large", "params_no_embedding": 790000}])
    assert carried_rows(here, tmp_path / "work", [{"size": "large"}]) == [row]   # types survive the round trip
    assert carried_rows(here, here, []) == []   # summarising into its own work folder carries nothing
    rows = [{**row, "size": "large", "params_no_embedding": 790000, "size_rank": 0}, {**row, "size_rank": 5}]
    rank_sizes(rows)
    assert [(r["size"], r["size_rank"]) for r in rows] == [("demo", 0), ("large", 1)]
    (here / "progress.log").write_text("[11:24:02] done finetune-demo-ar-500-s0 in 1.7 min\n[11:24:03] $ cmd\n")
    (here / "progress-large.log").write_text("[09:00:00] done evaluate-large-ar-500-s1 in 0.2 min\n")
    assert logged_minutes(here) == {"finetune-demo-ar-500-s0": 1.7, "evaluate-large-ar-500-s1": 0.2}


def test_reproduce_reruns_a_committed_point_with_its_seeds(tmp_path):
    """The tiny version of reproduce.sh: a two-rung study is 'committed', then its top point is re-trained
    straight to its budget and re-evaluated in a fresh folder; same seeds, same machine: identical."""
    committed = tmp_path / "committed"
    r = run_study("--profile", "tiny", "--work", str(committed), "--families", "mdlm", "--sizes", "demo",
                  "--budgets", "2,4", "--seeds", "0,1", "--parallel", "1", "--no-probe", "--samplers", "ancestral")
    assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
    r = run_study("demo-mdlm-4", "--results", str(committed), "--work", str(tmp_path / "rerun"), script="reproduce.sh")
    assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
    report = r.stdout.splitlines()
    committed_line = next(x for x in report if x.startswith("committed"))
    rerun_line = next(x for x in report if x.startswith("re-run "))
    assert committed_line.split(None, 1)[1] == rerun_line.split(None, 1)[1]   # accuracy, seeds and task loss alike
    assert "INSIDE the committed seed range" in report[-1]
    r = run_study("demo-mdlm-99", "--results", str(committed), script="reproduce.sh")
    assert r.returncode != 0 and "no committed point 'demo-mdlm-99'" in r.stderr and "Traceback" not in r.stderr


def test_reproduce_verdict_is_the_committed_seed_range():
    sys.path[:0] = [str(STUDY)]
    try:
        from reproduce import compare
    finally:
        del sys.path[:1]
    committed = {"accuracy": 0.5, "accuracy_sd": 0.05, "accuracy_min": 0.45, "accuracy_max": 0.56, "seeds": "0,1,2",
                 "per_seed": "0.45;0.49;0.56", "sampler": "confidence", "steps": 32, "task_val_nelbo": 0.05}
    assert compare(committed, {**committed, "accuracy": 0.55})[0]
    inside, report = compare(committed, {**committed, "accuracy": 0.40, "per_seed": "0.39;0.40;0.41"})
    assert not inside and "OUTSIDE the committed seed range [45.0%, 56.0%]" in report
    # beside the verdict, the difference of seed means with its Welch interval (-10.0 points here)
    assert "difference re-run - committed: -10.0 points" in report and "no difference beyond" in report
    _, report = compare(committed, {**committed, "accuracy": 0.20, "per_seed": "0.19;0.20;0.21"})
    assert "-30.0 points" in report and "a difference beyond the seeds' spread" in report


@pytest.mark.slow
def test_gpu_path_runs_in_a_tiny_cpu_mode(tmp_path):
    work = tmp_path / "gpu"
    r = subprocess.run(["bash", str(STUDY / "gpu.sh"), "--device", "cpu", "--threads", "1", "--parallel", "2",
                        "--families", "mdlm", "--budgets", "2,4", "--seeds", "0", "--train-problems", "200",
                        "--test-problems", "4",
                        "--steps", "4", "--pretrain", "model=cpu-4xs", "--pretrain", "max_steps=4",
                        "--pretrain", "eval_every=2", "--pretrain", "save_every=4"],
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHON": sys.executable,
                                      "STUDY_WORK": str(work)}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:] + r.stdout[-2000:]
    assert {x["budget_steps"] for x in csv.DictReader(open(work / "ladder.csv"))} == {"2", "4"}
    runs = sorted((work / "runs").glob("gpu-19M-mdlm-s*"))   # one run directory per training seed
    assert [r.name for r in runs] == ["gpu-19M-mdlm-s0"]
    assert json.loads((runs[0] / "config.json").read_text())["train"]["compile"] == "false"


def test_unknown_names_are_one_line_errors(tmp_path):
    for args, message in ((["--sizes", "huge"], "unknown sizes ['huge']"), (["--families", "gpt"], "unknown families")):
        r = run_study("--profile", "tiny", "--work", str(tmp_path), *args)
        assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr


def test_a_continued_study_keeps_its_settings_and_reports_the_rungs_that_ran(tmp_path):
    sys.path[:0] = [str(STUDY)]
    try:
        from study import merged_settings
        from summarise import rungs_run
    finally:
        del sys.path[:1]
    base = {"work": str(tmp_path), "task": "arith", "lr": 2e-3, "batch_size": 32, "families": ["ar", "mdlm"],
            "sizes": {"demo": [None, [500, 1000]], "large": ["cpu-m", [100]]}, "seeds": [0, 1, 2]}
    first = merged_settings(None, base)
    more = merged_settings(first, {**base, "families": ["mdlm"], "sizes": {"demo": [None, [1000, 2000]]}})
    assert more["sizes"] == {"demo": [None, [500, 1000, 2000]], "large": ["cpu-m", [100]]}
    assert more["families"] == ["ar", "mdlm"] and len(more["invocations"]) == 2
    assert more["invocations"][1] == {"families": ["mdlm"], "sizes": {"demo": [1000, 2000]}, "seeds": [0, 1, 2]}
    assert merged_settings(more, {**base, "seeds": [3]})["seeds"] == [0, 1, 2, 3]   # more seeds: more runs, same study
    assert merged_settings(more, {**base, "families": ["mdlm"], "sizes": {"demo": [None, [1000, 2000]]}}) == more
    with pytest.raises(SystemExit, match=r"other settings \(lr: 0.002 -> 0.001\)"):
        merged_settings(more, {**base, "lr": 1e-3})
    points = [{"size": "demo", "family": f, "budget_steps": b} for f, bs in (("ar", (500, 1000)), ("esolm", (500, 1000)),
                                                                           ("mdlm", (500, 1000, 2000))) for b in bs]
    points += [{"size": "large", "family": "ar", "budget_steps": 100}]
    assert rungs_run(points) == ("demo: AR, Eso-LM 500-1000 (2 rungs) / MDLM 500-2000 (3 rungs); "
                                 "large: AR 100 (1 rung)")


def test_reading_says_where_the_families_separate_and_compares_the_sizes():
    sys.path[:0] = [str(STUDY)]
    try:
        from summarise import reading
    finally:
        del sys.path[:1]

    def point(size, fam, acc, half, rank):
        return {"size": size, "size_rank": rank, "family": fam, "budget_steps": 500, "accuracy": acc,
                "accuracy_sd": half / 4, "t_low": acc - half, "t_high": acc + half, "accuracy_min": acc - half / 5,
                "accuracy_max": acc + half / 5, "seeds": "0,1,2", "sampler": "ancestral", "steps": 8,
                "pretrain_val_nelbo": None, "explore_best_accuracy": acc, "explore_best_setting": "ancestral 8",
                "probe_from_given": None}
    points = [point("demo", "ar", 0.30, 0.05, 0), point("demo", "mdlm", 0.28, 0.05, 0),
              point("large", "ar", 0.60, 0.05, 1), point("large", "mdlm", 0.10, 0.05, 1)]
    verdict = {(p["size"], p["family"]): {"state": "still rising"} for p in points}
    text = reading(points, verdict)
    assert "**demo**: the families do not separate at any rung every family ran" in text
    assert "**large**: the families separate (some t-intervals disjoint) at 500 steps (AR > MDLM)." in text
    assert "**large vs demo** (seed means; resolved: t-intervals disjoint): 500 steps: AR 60.0% vs 30.0% (higher);" \
           " MDLM 10.0% vs 28.0% (lower)." in text
