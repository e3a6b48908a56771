"""Tables and figure of the reasoning study from its work folder: results.csv (one row per size,
family, budget, strategy and step count), results.md, ladder.csv (one row per size, family and
budget: its best setting), accuracy.png; the tables between the `<!-- results -->` (the study's README)
and `<!-- study -->` (docs/finetuning.md) markers are regenerated too. No hand-written number goes in.
"""
from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

LABELS = {"ar": "AR", "mdlm": "MDLM", "duo": "Duo", "esolm": "Eso-LM"}
COLORS = {"ar": "#222222", "mdlm": "#1f77b4", "duo": "#d62728", "esolm": "#2ca02c"}
THRESHOLDS = (0.25, 0.5, 0.75)
WORK_LINE = re.compile(r"(\d+) [-+*] (\d+) = (\d+)")
POINT = re.compile(r"(?P<size>.+)-(?P<family>[a-z]+)-(?P<budget>\d+)")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def metrics_at(run: Path, step: int) -> dict:
    """The run's record at `step` (flops, val_nelbo), from its metrics.jsonl."""
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("step") == step]
    merged: dict = {}
    for r in rows:
        merged.update({k: v for k, v in r.items() if v is not None})
    return merged


def parameters(point: Path) -> tuple[int, int]:
    """(all parameters, parameters without the input embedding table) of a point's model."""
    import toolkit
    net = toolkit.load(str(point)).net
    return net.num_params(non_embedding=False), net.num_params(non_embedding=True)


def generation_shape(rows: list[dict], gold: dict[str, list[str]]) -> dict:
    """What the answers look like: worked layout, first line right, the start copied, chained work."""
    n = max(len(rows), 1)
    form = first = copied = chained = chain_base = 0
    for r in rows:
        lines = [x.strip() for x in r["generation"].strip().splitlines()]
        ref = gold[r["question"]]
        start = re.search(r" has (\d+) ", r["question"]).group(1)
        worked = [WORK_LINE.fullmatch(x) for x in lines[:-1]]
        form += len(lines) == len(ref) and all(worked) and re.fullmatch(r"#### \d+", lines[-1] if lines else "") is not None
        first += bool(lines) and lines[0] == ref[0]
        copied += bool(lines) and (lines[0].split(" ")[0] == start or lines[0] == f"#### {start}")
        if len(worked) >= 2 and worked[0] and worked[1]:   # does line 2 build on line 1's own result?
            chain_base += 1
            chained += worked[1].group(1) == worked[0].group(3)
    return {"well_formed": round(form / n, 3), "first_line_right": round(first / n, 3),
            "copied_start": round(copied / n, 3), "chained": round(chained / chain_base, 3) if chain_base else None}


def probe_shape(work: Path, name: str) -> dict:
    """The given-first-line probe at a point: with the true first line given, is line 2 right; with a
    changed result given, does line 2 start from the given result or from the true one?"""
    probes = {r["question"]: r for task in (work / "data").iterdir() for r in read_jsonl(task / "probe.jsonl")}
    control = shifted = right = from_given = from_true = 0
    for g in read_jsonl(work / "generations" / f"probe-{name}.jsonl"):
        p = probes.get(g["question"])
        first = WORK_LINE.match(g["generation"].strip())
        if p is None:
            continue
        if p["given_first_result"] == p["true_first_result"]:
            control += 1
            right += g["generation"].strip().split("\n")[0] == p["answer"].split("\n")[0]
        else:
            shifted += 1
            from_given += bool(first) and int(first.group(1)) == p["given_first_result"]
            from_true += bool(first) and int(first.group(1)) == p["true_first_result"]
    if not control or not shifted:
        return {"probe_line2_right": None, "probe_from_given": None, "probe_from_true": None}
    return {"probe_line2_right": round(right / control, 3), "probe_from_given": round(from_given / shifted, 3),
            "probe_from_true": round(from_true / shifted, 3)}


def collect(work: Path) -> list[dict]:
    gold = {r["question"]: r["answer"].splitlines()
            for task in (work / "data").iterdir() for r in read_jsonl(task / "test.jsonl")}
    settings = json.loads((work / "settings.json").read_text())
    sizes = list(settings["sizes"])
    train_rows = sum(1 for _ in open(next((work / "data").iterdir()) / "train.jsonl"))
    params: dict[tuple, tuple] = {}
    rows = []
    for path in sorted((work / "evals").glob("*.json")):
        m = POINT.fullmatch(path.stem)
        if path.stem.startswith(("pretrain-", "probe-")) or not m or not (work / "done" / f"evaluate-{path.stem}").exists():
            continue   # another kind of file, or an evaluation still running
        size, fam, budget = m["size"], m["family"], int(m["budget"])
        point = work / "points" / path.stem
        record = metrics_at(point, budget)
        pre_file = work / "evals" / f"pretrain-{size}-{fam}.json"
        pre_done = (work / "done" / f"pretrain-nelbo-{size}-{fam}").exists()
        pre = json.loads(pre_file.read_text())["nelbo"] if pre_done else {}
        if (size, fam) not in params:
            params[(size, fam)] = parameters(point)
        seen = budget * settings["batch_size"]
        generations = read_jsonl(work / "generations" / f"{path.stem}.jsonl")
        probe = probe_shape(work, path.stem) if (work / "done" / f"probe-{path.stem}").exists() else probe_shape(work, "")
        for r in json.loads(path.read_text())["accuracy"]:
            mine = [g for g in generations if g["steps"] == r["steps"] and g["setting"].startswith(r["sampler"] + "|")]
            rows.append({"size": size, "size_rank": sizes.index(size) if size in sizes else 99, "family": fam,
                         "params": params[(size, fam)][0], "params_no_embedding": params[(size, fam)][1],
                         "budget_steps": budget, "finetune_flops": record.get("flops"),
                         "rows_seen": seen, "distinct_problems_seen": min(seen, train_rows),
                         "sampler": r["sampler"], "steps": r["steps"], "nfe": round(r["nfe"], 2),
                         "problems": r["problems"], "correct": r["correct"], "accuracy": round(r["accuracy"], 4),
                         "ci_low": round(r["ci_low"], 4), "ci_high": round(r["ci_high"], 4), "unparsed": r["unparsed"],
                         **generation_shape(mine, gold), **probe, "task_val_nelbo": record.get("val_nelbo"),
                         "pretrain_val_nelbo": round(pre["nelbo"], 4) if pre else None,
                         "pretrain_se": round(pre.get("se", 0.0), 4) if pre else None})
    rows.sort(key=lambda r: (r["size_rank"], list(LABELS).index(r["family"]), r["budget_steps"], r["sampler"], r["steps"]))
    return rows


def ladder(rows: list[dict]) -> list[dict]:
    """One row per (size, family, budget): its best setting (strategy, steps) and ancestral's best."""
    out: dict[tuple, dict] = {}
    ancestral: dict[tuple, float] = {}
    for r in rows:
        key = (r["size"], r["family"], r["budget_steps"])
        if key not in out or r["accuracy"] > out[key]["accuracy"]:
            out[key] = dict(r)
        if r["sampler"] == "ancestral":
            ancestral[key] = max(ancestral.get(key, 0.0), r["accuracy"])
    return [{**p, "ancestral_accuracy": ancestral.get(key, 0.0)} for key, p in out.items()]


def verdicts(points: list[dict]) -> dict[tuple, dict]:
    """Per (size, family): plateau or not at the ladder's end, and the FLOPs to reach each threshold."""
    out = {}
    for key in dict.fromkeys((p["size"], p["family"]) for p in points):
        rs = sorted((p for p in points if (p["size"], p["family"]) == key), key=lambda p: p["budget_steps"])
        last, prev = rs[-1], rs[-2] if len(rs) > 1 else None
        if prev is None:
            state = "one rung only"
        elif last["accuracy"] > prev["ci_high"]:
            state = f"still rising at {last['budget_steps']} steps, the last rung run"
        elif last["task_val_nelbo"] < 0.95 * prev["task_val_nelbo"]:   # the loss still falls: not a plateau
            state = (f"accuracy flat from {prev['budget_steps']} to {last['budget_steps']} steps (within its interval)"
                     f" but task NELBO still falling ({prev['task_val_nelbo']:.3g} -> {last['task_val_nelbo']:.3g})")
        else:
            state = f"stopped rising: {last['budget_steps']} steps is within the interval of {prev['budget_steps']}"
        reach = {}
        for th in THRESHOLDS:
            hit = next((p for p in rs if p["accuracy"] >= th), None)
            reach[th] = hit["finetune_flops"] if hit else None
        out[key] = {"state": state, "reach": reach, "best": max(rs, key=lambda p: p["accuracy"])}
    return out


def pct(r: dict) -> str:
    return f"{r['accuracy']:.1%} [{r['ci_low']:.1%}, {r['ci_high']:.1%}]"


def setting(r: dict) -> str:
    return "one per token" if r["family"] == "ar" else f"{r['sampler']} {r['steps']}"


def tables(rows: list[dict], points: list[dict], verdict: dict) -> str:
    out = ["| size | family | fine-tuning steps | FLOPs | best accuracy (95% CI) | its setting (strategy, steps) "
           "| NFE / problem | ancestral best | first line right | start copied | line 2 uses line 1 "
           "| probe: line 2 right | probe: from given / true | task val NELBO |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        chained = "—" if p["chained"] is None else f"{p['chained']:.0%}"
        given = "—" if p["probe_from_given"] is None else f"{p['probe_from_given']:.0%} / {p['probe_from_true']:.0%}"
        right = "—" if p["probe_line2_right"] is None else f"{p['probe_line2_right']:.0%}"
        out.append(f"| {p['size']} | {LABELS[p['family']]} | {p['budget_steps']} | {p['finetune_flops']:.2g} | {pct(p)} | "
                   f"{setting(p)} | {p['nfe']:g} | {p['ancestral_accuracy']:.1%} | {p['first_line_right']:.0%} | "
                   f"{p['copied_start']:.0%} | {chained} | {right} | {given} | {p['task_val_nelbo']:.4g} |")
    out += ["", "| size | family | parameters (without input embedding) | pre-training val NELBO | ladder verdict |"
            + "".join(f" FLOPs to {th:.0%} |" for th in THRESHOLDS),
            "|---|---|---|---|---|" + "---|" * len(THRESHOLDS)]
    for (size, fam), v in verdict.items():
        b = v["best"]
        pre = "—" if b["pretrain_val_nelbo"] is None else f"{b['pretrain_val_nelbo']} ± {b['pretrain_se']}"
        reach = "".join(f" {'not reached' if f is None else f'{f:.2g}'} |" for f in v["reach"].values())
        out.append(f"| {size} | {LABELS[fam]} | {b['params'] / 1e6:.2f}M ({b['params_no_embedding'] / 1e6:.2f}M) | {pre} |"
                   f" {v['state']} |{reach}")
    return "\n".join(out)


def ranking(points: list[dict], size: str, pick) -> list[str]:
    """Families of `size` ordered by accuracy at the rung `pick(rungs)` chooses (best first)."""
    out = []
    for fam in LABELS:
        rs = sorted((p for p in points if p["size"] == size and p["family"] == fam), key=lambda p: p["budget_steps"])
        if rs:
            out.append((pick(rs), fam))
    return [fam for r, fam in sorted(out, key=lambda x: -x[0]["accuracy"])]


def reading(points: list[dict], verdict: dict) -> str:
    """The findings, in sentences built from the figures (one bullet per finding)."""
    lines = []
    for size in dict.fromkeys(p["size"] for p in points):
        first = ranking(points, size, lambda rs: rs[0])
        # families compared at the same compute: the highest rung every family ran (a family still
        # rising may have climbed further; its last rung is reported, not ranked against lower ones)
        common = max(set.intersection(*({p["budget_steps"] for p in points if p["size"] == size and p["family"] == f}
                                        for f in first)))
        last = ranking(points, size, lambda rs: next(p for p in rs if p["budget_steps"] == common))
        tips = {fam: max((p for p in points if p["size"] == size and p["family"] == fam), key=lambda p: p["budget_steps"])
                for fam in last}
        at = {fam: next(p for p in points if p["size"] == size and p["family"] == fam and p["budget_steps"] == common)
              for fam in last}
        by_ppl = sorted((f for f in tips if tips[f]["pretrain_val_nelbo"] is not None),
                        key=lambda f: tips[f]["pretrain_val_nelbo"])
        desc = "; ".join(f"{LABELS[f]} {pct(tips[f])} after {tips[f]['budget_steps']} steps ({tips[f]['finetune_flops']:.2g} FLOPs,"
                         f" {verdict[(size, f)]['state']})" for f in last)
        lines.append(f"- **{size}**, at each family's last rung: {desc}.")
        if len(last) < 2:
            continue
        order = " > ".join(LABELS[f] for f in last)
        then = "the same order as at the first rung" if first == last else \
            f"at the first rung: {' > '.join(LABELS[f] for f in first)}"
        lines.append(f"- **{size}**: at {common} steps, the highest rung every family ran, accuracy orders the families"
                     f" {order} ({then}; point estimates); pre-training val NELBO orders them"
                     f" {' < '.join(LABELS[f] for f in by_ppl)} (best first).")
        if len(by_ppl) > 1:
            worst, top = by_ppl[-1], last[0]
            if worst == top:
                lines.append(f"- **{size}**: at {common} steps the family with the worst perplexity ({LABELS[worst]})"
                             " solves the most problems.")
            else:
                gap = "disjoint" if at[top]["ci_low"] > at[worst]["ci_high"] else "overlapping"
                lines.append(f"- **{size}**: at {common} steps the family with the worst perplexity ({LABELS[worst]},"
                             f" {pct(at[worst])}) does not solve the most problems ({LABELS[top]}, {pct(at[top])};"
                             f" intervals {gap}).")
        probes = [f"{LABELS[f]} {tips[f]['probe_from_given']:.0%} / {tips[f]['probe_from_true']:.0%}"
                  for f in last if tips[f]["probe_from_given"] is not None]
        if probes:
            lines.append(f"- **{size}**, given a first line whose result is changed, line 2 starts from the given"
                         f" / the true result: {', '.join(probes)} (ancestral, last rung).")
    return "\n".join(lines)


def rungs_run(points: list[dict]) -> str:
    """The ladder each family climbed, read from the points (not from what was planned): families
    with the same rungs share one entry, e.g. 'demo: AR, Eso-LM 500-8000 (8 rungs) / MDLM 500-16000 (10 rungs)'."""
    out = []
    for size in dict.fromkeys(p["size"] for p in points):
        ladders: dict[tuple, list[str]] = {}
        for fam in LABELS:
            steps = tuple(sorted(p["budget_steps"] for p in points if p["size"] == size and p["family"] == fam))
            if steps:
                ladders.setdefault(steps, []).append(LABELS[fam])
        out.append(f"{size}: " + " / ".join(f"{', '.join(fams)} " + (f"{s[0]}-{s[-1]} ({len(s)} rungs)" if len(s) > 1
                                                                      else f"{s[0]} (1 rung)")
                                            for s, fams in ladders.items()))
    return "; ".join(out)


def majority_baseline(work: Path) -> str:
    """Always answering the training split's most frequent result: a floor to beat."""
    task = next((work / "data").iterdir())
    train = Counter(r["result"] for r in read_jsonl(task / "train.jsonl"))
    test = [r["result"] for r in read_jsonl(task / "test.jsonl")]
    guess = train.most_common(1)[0][0]
    hits = sum(r == guess for r in test)
    return (f"Always answering the training split's most frequent result ({guess}) scores "
            f"{hits / len(test):.1%} ({hits} / {len(test)}).")


def plot(rows: list[dict], points: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from toolkit.plotting import log_budget_axis
    sizes = list(dict.fromkeys(p["size"] for p in points))
    fig, axes = plt.subplots(len(sizes), 3, figsize=(13.5, 3.6 * len(sizes)), squeeze=False)
    for i, size in enumerate(sizes):
        ax, bx, cx = axes[i]
        for fam in LABELS:
            rs = sorted((p for p in points if p["size"] == size and p["family"] == fam), key=lambda p: p["budget_steps"])
            if not rs:
                continue
            x = [p["finetune_flops"] for p in rs]
            y = [100 * p["accuracy"] for p in rs]
            err = [[100 * (p["accuracy"] - p["ci_low"]) for p in rs], [100 * (p["ci_high"] - p["accuracy"]) for p in rs]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=COLORS[fam], label=LABELS[fam])
            bx.plot(x, [p["task_val_nelbo"] for p in rs], marker="o", color=COLORS[fam], label=LABELS[fam])
            last = rs[-1]["budget_steps"]
            for sampler, marker in (("ancestral", "o"), ("confidence", "s"), ("block", "^")):
                ps = sorted((r for r in rows if r["size"] == size and r["family"] == fam and r["budget_steps"] == last
                             and r["sampler"] == sampler), key=lambda r: r["nfe"])
                if ps:
                    cx.plot([r["nfe"] for r in ps], [100 * r["accuracy"] for r in ps], marker=marker, color=COLORS[fam],
                            linestyle="-" if sampler == "ancestral" else ":",
                            label=f"{LABELS[fam]} · {sampler}")
        for a in (ax, bx):
            log_budget_axis(a)   # 1e12-style ticks, no crowded minor labels
            a.set_xlabel("fine-tuning FLOPs (6 × parameters × tokens)")
        ax.set_ylabel("exact-match accuracy (%)")
        ax.set_title(f"{size}: accuracy vs. compute (best setting, 95% CI)", fontsize=10)
        bx.set_ylabel("task val NELBO (nats / response token)")
        bx.set_yscale("log")
        bx.set_title(f"{size}: task NELBO vs. compute", fontsize=10)
        cx.set_xscale("log", base=2)
        cx.set_xlabel("network evaluations per problem (NFE)")
        cx.set_ylabel("exact-match accuracy (%)")
        cx.set_title(f"{size}: accuracy vs. NFE at each family's last rung", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
        cx.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def summarise(work: Path, here: Path, update_readme: bool = False) -> str:
    rows = collect(work)
    if not rows:
        raise SystemExit("no finished evaluation in " + str(work))
    points = ladder(rows)
    verdict = verdicts(points)
    here.mkdir(parents=True, exist_ok=True)
    write_csv(here / "results.csv", rows)
    write_csv(here / "ladder.csv", points)
    md = tables(rows, points, verdict) + "\n\n" + majority_baseline(work) + "\n"
    (here / "results.md").write_text(md)
    plot(rows, points, here / "accuracy.png")
    if update_readme:
        readme = here / "README.md"
        settings = json.loads((work / "settings.json").read_text())
        shown = {k: settings[k] for k in ("task", "batch_size", "seq_len", "lr", "warmup",
                                          "train_problems", "test_problems", "steps", "samplers") if k in settings}
        block = (f"<!-- results -->\n{md}\nRungs run: {rungs_run(points)}.\n\n"
                 f"Settings: `{json.dumps(shown)}`\n<!-- /results -->")
        text = re.sub(r"<!-- results -->.*<!-- /results -->", lambda _: block, readme.read_text(), flags=re.S)
        found = f"<!-- reading -->\n{reading(points, verdict)}\n<!-- /reading -->"
        readme.write_text(re.sub(r"<!-- reading -->.*<!-- /reading -->", lambda _: found, text, flags=re.S))
        top = here.parent.parent / "docs" / "finetuning.md"   # the project docs state the findings with the figure
        block = (f"<!-- study -->\n{reading(points, verdict)}\n\n![reasoning study: accuracy and task NELBO vs fine-tuning"
                 f" FLOPs, accuracy vs NFE](../studies/reasoning/accuracy.png)\n<!-- /study -->")
        top.write_text(re.sub(r"<!-- study -->.*<!-- /study -->", lambda _: block, top.read_text(), flags=re.S))
    return md
