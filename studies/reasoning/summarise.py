"""Tables and figure of the reasoning study from its work folder: results.csv (one row per size,
family, budget, seed, split, strategy and step count), ladder.csv (one row per point: the setting
chosen on validation and its test accuracy over seeds), results.md, accuracy.png, study.json (the
settings, for reproduce.sh); the tables between the `<!-- results -->` (the study's README) and
`<!-- study -->` (docs/finetuning.md, or the project README) markers are regenerated too. No
hand-written number goes in.
"""
from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from pathlib import Path
from statistics import mean

from figure import LABELS, plot   # same folder
from seed_stats import ladder_verdict, overlap, point_summary

THRESHOLDS = (0.25, 0.5, 0.75)
WORK_LINE = re.compile(r"(\d+) [-+*] (\d+) = (\d+)")
POINT = re.compile(r"(?P<size>.+)-(?P<family>[a-z]+)-(?P<budget>\d+)-s(?P<seed>\d+)")
SPLITS = {"test": ("", "evaluate"), "validation": ("validation-", "validate")}   # file prefix, task kind


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


def training_rows(work: Path, run_config: dict) -> int:
    """Rows the trainer trains on: train.jsonl less its every-50th-row validation share (toolkit/data/pairs.py)."""
    from toolkit.data.pairs import SPLIT_PERIOD
    n = sum(1 for _ in open(work / "data" / run_config["data"]["data"].split("/")[-2] / "train.jsonl"))
    n_val = max(1, math.ceil(SPLIT_PERIOD * run_config["data"]["val_fraction"]))
    return sum(1 for i in range(n) if i % SPLIT_PERIOD < SPLIT_PERIOD - n_val)


def collect(work: Path) -> list[dict]:
    """One row per (size, family, budget, seed, split, strategy, steps) of every finished evaluation."""
    gold = {r["question"]: r["answer"].splitlines()
            for task in (work / "data").iterdir() for split in SPLITS for r in read_jsonl(task / f"{split}.jsonl")}
    settings = json.loads((work / "settings.json").read_text())
    sizes = list(settings["sizes"])
    params: dict[tuple, tuple] = {}
    rows = []
    for split, (prefix, kind) in SPLITS.items():
        for path in sorted((work / "evals").glob(f"{prefix}*.json")):
            name = path.stem[len(prefix):]
            m = POINT.fullmatch(name)
            if not m or not (work / "done" / f"{kind}-{name}").exists():
                continue   # another kind of file, or an evaluation still running
            size, fam, budget, seed = m["size"], m["family"], int(m["budget"]), int(m["seed"])
            point = work / "points" / name
            record = metrics_at(point, budget)
            config = json.loads((point / "config.json").read_text())
            pre_done = (work / "done" / f"pretrain-nelbo-{size}-{fam}").exists()
            pre = json.loads((work / "evals" / f"pretrain-{size}-{fam}.json").read_text())["nelbo"] if pre_done else {}
            if (size, fam) not in params:
                params[(size, fam)] = parameters(point)
            seen = budget * settings["batch_size"]
            generations = read_jsonl(work / "generations" / f"{prefix}{name}.jsonl")
            probe = probe_shape(work, name if (work / "done" / f"probe-{name}").exists() else "")
            for r in json.loads(path.read_text())["accuracy"]:
                mine = [g for g in generations if g["steps"] == r["steps"] and g["setting"].startswith(r["sampler"] + "|")]
                rows.append({"size": size, "size_rank": sizes.index(size) if size in sizes else 99, "family": fam,
                             "seed": seed, "precision": config["train"].get("precision", "auto"), "split": split,
                             "params": params[(size, fam)][0], "params_no_embedding": params[(size, fam)][1],
                             "budget_steps": budget, "finetune_flops": record.get("flops"), "rows_seen": seen,
                             "passes_over_training_rows": round(seen / training_rows(work, config), 3),
                             "sampler": r["sampler"], "steps": r["steps"], "nfe": round(r["nfe"], 2),
                             "problems": r["problems"], "correct": r["correct"], "accuracy": round(r["accuracy"], 4),
                             "ci_low": round(r["ci_low"], 4), "ci_high": round(r["ci_high"], 4), "unparsed": r["unparsed"],
                             **generation_shape(mine, gold), **probe, "task_val_nelbo": record.get("val_nelbo"),
                             "pretrain_val_nelbo": round(pre["nelbo"], 4) if pre else None,
                             "pretrain_se": round(pre.get("se", 0.0), 4) if pre else None})
    rows.sort(key=lambda r: (r["size_rank"], list(LABELS).index(r["family"]), r["budget_steps"], r["seed"],
                             r["split"], r["sampler"], r["steps"]))
    return rows


def ladder(rows: list[dict], seeds: list[int] | None = None) -> tuple[list[dict], list[str]]:
    """One row per (size, family, budget) whose every seed (of `seeds`; None: any) is scored on both
    splits: the setting chosen on validation, its test accuracy over seeds (mean, sd, range,
    t-interval) and the exploration maxima; and the names of the points still incomplete."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["size"], r["family"], r["budget_steps"]), []).append(r)
    out, pending = [], []
    for (size, fam, budget), rs in groups.items():
        scored = set.intersection(*({r["seed"] for r in rs if r["split"] == split} for split in SPLITS))
        if not scored or (seeds is not None and not set(seeds) <= scored):
            pending.append(f"{size}-{fam}-{budget} (seeds scored: {','.join(map(str, sorted(scored))) or 'none'})")
            continue
        rs = [r for r in rs if seeds is None or r["seed"] in seeds]
        summary = point_summary(rs)
        chosen = summary.pop("chosen_rows")
        shape = {k: _mean_or_none([r[k] for r in chosen]) for k in ("well_formed", "first_line_right", "copied_start",
                                                                   "chained", "probe_line2_right", "probe_from_given",
                                                                   "probe_from_true")}
        first = chosen[0]
        out.append({"size": size, "size_rank": first["size_rank"], "family": fam, "budget_steps": budget,
                    "finetune_flops": first["finetune_flops"], "params": first["params"],
                    "params_no_embedding": first["params_no_embedding"], "precision": first["precision"],
                    "passes_over_training_rows": first["passes_over_training_rows"],
                    "pretrain_val_nelbo": first["pretrain_val_nelbo"], "pretrain_se": first["pretrain_se"],
                    **{k: _round(v) for k, v in summary.items()}, "seeds": ",".join(map(str, summary["seeds"])),
                    "per_seed": ";".join(f"{x:.4f}" for x in summary["per_seed"]), **shape})
    out.sort(key=lambda p: (p["size_rank"], list(LABELS).index(p["family"]), p["budget_steps"]))
    return out, pending


def _mean_or_none(values: list):
    values = [v for v in values if v is not None]
    return round(mean(values), 3) if values else None


def _round(v):
    return round(v, 4) if isinstance(v, float) else v


def verdicts(points: list[dict]) -> dict[tuple, dict]:
    """Per (size, family): the plateau rule at the ladder's end, and the FLOPs at which the seed mean
    first reaches each threshold."""
    out = {}
    for key in dict.fromkeys((p["size"], p["family"]) for p in points):
        rs = sorted((p for p in points if (p["size"], p["family"]) == key), key=lambda p: p["budget_steps"])
        state, why = ladder_verdict(rs)
        reach = {th: next((p["finetune_flops"] for p in rs if p["accuracy"] >= th), None) for th in THRESHOLDS}
        out[key] = {"state": state, "why": why, "reach": reach, "last": rs[-1]}
    return out


def pct(p: dict) -> str:
    """A point's test accuracy: seed mean ± sd [95% t-interval over seeds]."""
    interval = "" if p["t_low"] is None else f" [{p['t_low']:.1%}, {p['t_high']:.1%}]"
    return f"{p['accuracy']:.1%} ± {p['accuracy_sd']:.1%}{interval}"


def setting(p: dict) -> str:
    return f"{p['sampler']} {p['steps']}"


def _share(v) -> str:
    return "—" if v is None else f"{v:.0%}"


def tables(rows: list[dict], points: list[dict], verdict: dict) -> str:
    out = ["**Headline** (each point: the decoding setting chosen on the validation problems, then its test"
           " accuracy; mean ± sd over the training seeds, [95% t-interval over the seeds]):", "",
           "| size | family | fine-tuning steps | FLOPs | passes over training rows | seeds "
           "| setting (chosen on validation)"
           " | validation accuracy | **test accuracy** | seed range | per seed | task val NELBO (mean ± sd) "
           "| first line right | line 2 uses line 1 | probe: from given / true |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        given = "—" if p["probe_from_given"] is None else f"{p['probe_from_given']:.0%} / {p['probe_from_true']:.0%}"
        out.append(f"| {p['size']} | {LABELS[p['family']]} | {p['budget_steps']} | {p['finetune_flops']:.2g} |"
                   f" {p['passes_over_training_rows']:.2f} | {p['seeds']} | {setting(p)} | {p['validation_accuracy']:.1%} |"
                   f" **{pct(p)}** | {p['accuracy_min']:.1%}-{p['accuracy_max']:.1%} |"
                   f" {', '.join(f'{float(x):.1%}' for x in p['per_seed'].split(';'))} |"
                   f" {p['task_val_nelbo']:.4g} ± {p['task_val_nelbo_sd']:.2g} | {_share(p['first_line_right'])} |"
                   f" {_share(p['chained'])} | {given} |")
    out += ["", "| size | family | parameters (without input embedding) | pre-training val NELBO | plateau rule |"
            + "".join(f" FLOPs to {th:.0%} (seed mean) |" for th in THRESHOLDS),
            "|---|---|---|---|---|" + "---|" * len(THRESHOLDS)]
    for (size, fam), v in verdict.items():
        b = v["last"]
        pre = "—" if b["pretrain_val_nelbo"] is None else f"{b['pretrain_val_nelbo']} ± {b['pretrain_se']}"
        reach = "".join(f" {'not reached' if f is None else f'{f:.2g}'} |" for f in v["reach"].values())
        out.append(f"| {size} | {LABELS[fam]} | {b['params'] / 1e6:.2f}M ({b['params_no_embedding'] / 1e6:.2f}M) | {pre} |"
                   f" **{v['state']}**: {v['why']} |{reach}")
    settings = sorted({(r["sampler"], r["steps"]) for r in rows})
    out += ["", "**Exploration, not the headline**: every setting's test accuracy (seed mean). Picking the best of"
            " these on the test problems themselves is biased upward; the headline uses the setting chosen on"
            " validation.", "",
            "| size | family | steps |" + "".join(f" {s} {n} |" for s, n in settings),
            "|---|---|---|" + "---|" * len(settings)]
    for p in points:
        cells = []
        for s, n in settings:
            acc = [r["accuracy"] for r in rows if (r["size"], r["family"], r["budget_steps"], r["split"], r["sampler"],
                   r["steps"]) == (p["size"], p["family"], p["budget_steps"], "test", s, n)
                   and str(r["seed"]) in p["seeds"].split(",")]
            cells.append(f" {mean(acc):.1%} |" if acc else " — |")
        out.append(f"| {p['size']} | {LABELS[p['family']]} | {p['budget_steps']} |" + "".join(cells))
    return "\n".join(out)


def ordering(ps: list[dict]) -> str:
    """Families best first by seed mean, each neighbour pair marked resolved (t-intervals disjoint) or not."""
    ps = sorted(ps, key=lambda p: -p["accuracy"])
    text = LABELS[ps[0]["family"]]
    for a, b in zip(ps, ps[1:]):
        text += (" ≈ " if overlap(a, b) else " > ") + LABELS[b["family"]]
    return text


def reading(points: list[dict], verdict: dict) -> str:
    """The findings, in sentences built from the figures (one bullet per finding)."""
    lines = []
    for size in dict.fromkeys(p["size"] for p in points):
        mine = [p for p in points if p["size"] == size]
        fams = list(dict.fromkeys(p["family"] for p in mine))
        tips = {f: max((p for p in mine if p["family"] == f), key=lambda p: p["budget_steps"]) for f in fams}
        desc = "; ".join(f"{LABELS[f]} {pct(tips[f])} after {tips[f]['budget_steps']} steps (seeds {tips[f]['seeds']},"
                         f" {setting(tips[f])} chosen on validation; {verdict[(size, f)]['state']})" for f in fams)
        lines.append(f"- **{size}**, test accuracy at each family's last rung (seed mean ± sd [95% t-interval over"
                     f" seeds]): {desc}.")
        common = max(set.intersection(*({p["budget_steps"] for p in mine if p["family"] == f} for f in fams)))
        at = [p for p in mine if p["budget_steps"] == common]
        if len(at) > 1:
            resolved = "" if " ≈ " not in ordering(at) else \
                " (≈: t-intervals overlap, the order is not resolved at this scale)"
            lines.append(f"- **{size}**: at {common} steps, the highest rung every family ran, the seed means order the"
                         f" families {ordering(at)}{resolved}.")
            by_ppl = sorted((p for p in at if p["pretrain_val_nelbo"] is not None), key=lambda p: p["pretrain_val_nelbo"])
            if len(by_ppl) > 1:
                worst, top = by_ppl[-1], max(at, key=lambda p: p["accuracy"])
                versus = f"{LABELS[worst['family']]}, solves the most problems" if worst is top else (
                    f"{LABELS[worst['family']]} ({pct(worst)}), does not solve the most ({LABELS[top['family']]},"
                    f" {pct(top)}; t-intervals {'overlap' if overlap(worst, top) else 'disjoint'})")
                lines.append(f"- **{size}**: pre-training val NELBO orders them"
                             f" {' < '.join(LABELS[p['family']] for p in by_ppl)} (best first); at {common} steps the"
                             f" family with the worst perplexity, {versus}.")
        shared = {b: [p for p in mine if p["budget_steps"] == b] for b in sorted({p["budget_steps"] for p in mine})}
        shared = {b: ps for b, ps in shared.items() if len(ps) == len(fams) > 1}   # the rungs every family ran
        separate = [f"{b} steps ({ordering(ps)})" for b, ps in shared.items() if " > " in ordering(ps)]
        if shared:
            lines.append(f"- **{size}**: the families separate (some t-intervals disjoint) at " + ", ".join(separate)
                         + "." if separate else f"- **{size}**: the families do not separate at any rung every family"
                         " ran (their t-intervals overlap at each).")
        spread = [p["accuracy_max"] - p["accuracy_min"] for p in mine if len(p["seeds"].split(",")) > 1]
        if spread:
            lines.append(f"- **{size}**: the seed-to-seed range of a point's test accuracy is {min(spread):.1%} to"
                         f" {max(spread):.1%} (median {sorted(spread)[len(spread) // 2]:.1%}) over {len(spread)} points.")
        gaps = [(p, p["explore_best_accuracy"] - p["accuracy"]) for p in mine]
        worst = max(gaps, key=lambda x: x[1])
        lines.append(f"- **{size}**: the best setting picked on the test problems themselves (exploration) would have"
                     f" read up to {worst[1]:.1%} higher than the validation-chosen one ({LABELS[worst[0]['family']]}"
                     f" at {worst[0]['budget_steps']} steps: {worst[0]['explore_best_setting']}"
                     f" {worst[0]['explore_best_accuracy']:.1%} against {setting(worst[0])} {worst[0]['accuracy']:.1%}).")
        probes = [f"{LABELS[f]} {tips[f]['probe_from_given']:.0%} / {tips[f]['probe_from_true']:.0%}"
                  for f in fams if tips[f]["probe_from_given"] is not None]
        if probes:
            lines.append(f"- **{size}**, given a first line whose result is changed, line 2 starts from the given"
                         f" / the true result: {', '.join(probes)} (last rung, seed mean).")
    lines += across_sizes(points)
    return "\n".join(lines)


def across_sizes(points: list[dict]) -> list[str]:
    """Each family at the larger size against the smaller one, rung by rung where both ran it."""
    sizes = list(dict.fromkeys(p["size"] for p in sorted(points, key=lambda p: p["size_rank"])))
    if len(sizes) < 2:
        return []
    small, large = sizes[0], sizes[-1]
    out = []
    for b in sorted({p["budget_steps"] for p in points}):
        pairs = [(p, q) for p in points for q in points if (p["size"], q["size"], p["budget_steps"], q["budget_steps"])
                 == (large, small, b, b) and p["family"] == q["family"]]
        if pairs:
            out.append(f"{b} steps: " + "; ".join(
                f"{LABELS[p['family']]} {p['accuracy']:.1%} vs {q['accuracy']:.1%}"
                f" ({'not resolved' if overlap(p, q) else ('higher' if p['accuracy'] > q['accuracy'] else 'lower')})"
                for p, q in pairs))
    return [f"- **{large} vs {small}** (seed means; resolved: t-intervals disjoint): " + " · ".join(out) + "."] if out else []


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


def compute_spent(work: Path, points: list[dict], logged: dict[str, float] | None = None) -> str:
    """The wall time of the tasks behind the tables: each finished task's marker holds its seconds; a task
    whose marker is gone (a size carried from the committed results) counts its logged minutes."""
    minutes: dict[str, float] = {}
    for p in points:
        for seed in p["seeds"].split(","):
            name = f"{p['size']}-{p['family']}-{p['budget_steps']}-s{seed}"
            for kind in ("finetune", "validate", "evaluate", "probe"):
                marker = work / "done" / f"{kind}-{name}"
                seconds = marker.read_text().split() if marker.is_file() else []
                spent = float(seconds[0]) / 60 if seconds else (logged or {}).get(f"{kind}-{name}")
                if spent is not None:
                    minutes[kind] = minutes.get(kind, 0.0) + spent
    parts = ", ".join(f"{kind} {m:.0f}" for kind, m in minutes.items())
    return (f"Compute: {sum(minutes.values()) / 60:.1f} h of task wall time behind these tables ({parts} min; a rung's"
            " fine-tuning time counts only the steps since the previous rung).")


def majority_baseline(work: Path) -> str:
    """Always answering the training split's most frequent result: a floor to beat."""
    task = next((work / "data").iterdir())
    train = Counter(r["result"] for r in read_jsonl(task / "train.jsonl"))
    test = [r["result"] for r in read_jsonl(task / "test.jsonl")]
    guess = train.most_common(1)[0][0]
    hits = sum(r == guess for r in test)
    return (f"Always answering the training split's most frequent result ({guess}) scores "
            f"{hits / len(test):.1%} ({hits} / {len(test)}).")


# what reproduce.sh needs to re-run a point as the study ran it (study.json beside results.csv)
REPRODUCE = ("profile", "task", "holdout", "batch_size", "seq_len", "lr", "warmup", "train_problems", "test_problems",
             "validation_problems", "steps", "samplers", "precision", "seeds", "eval_every", "threads", "device")


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def typed(value: str):
    """A results.csv cell back as collect() wrote it: empty -> None, then int, float or text."""
    if value == "":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def carried_rows(here: Path, work: Path, rows: list[dict]) -> list[dict]:
    """The committed rows (here/results.csv) of the sizes this work folder did not run: a study grows
    one size at a time (the demo size in one session, the larger one in another) and its tables hold
    both. A size the work folder ran replaces its committed rows."""
    committed = here / "results.csv"
    if here.resolve() == work.resolve() or not committed.is_file():
        return []
    ran = {r["size"] for r in rows}
    with open(committed, newline="") as f:
        return [{k: typed(v) for k, v in r.items()} for r in csv.DictReader(f) if r["size"] not in ran]


def rank_sizes(rows: list[dict]) -> None:
    """size_rank: the sizes ordered by parameters (without the input embedding), smallest first."""
    order = sorted({(r["params_no_embedding"], r["size"]) for r in rows})
    rank = {size: i for i, (_, size) in enumerate(order)}
    for r in rows:
        r["size_rank"] = rank[r["size"]]
    rows.sort(key=lambda r: (r["size_rank"], list(LABELS).index(r["family"]), r["budget_steps"], r["seed"],
                             r["split"], r["sampler"], r["steps"]))


def logged_minutes(here: Path) -> dict[str, float]:
    """Task wall times from the committed progress logs (here/progress*.log: `done TASK in M min`), for the
    sizes whose work folder is gone."""
    done = re.compile(r"\] done (\S+) in ([\d.]+) min")
    out = {}
    for log in sorted(here.glob("progress*.log")):
        for m in done.finditer(log.read_text()):
            out[m[1]] = float(m[2])
    return out


def summarise(work: Path, here: Path, update_readme: bool = False) -> str:
    rows = collect(work)
    if not rows:
        raise SystemExit("no finished evaluation in " + str(work))
    carried = carried_rows(here, work, rows)
    if carried:
        print(f"kept the committed rows of {', '.join(dict.fromkeys(r['size'] for r in carried))} "
              f"(not run in {work})", flush=True)
        rows = carried + rows
        rank_sizes(rows)
    settings = json.loads((work / "settings.json").read_text())
    points, pending = ladder(rows, settings.get("seeds"))
    if not points:
        raise SystemExit(f"no point in {work} has all its seeds scored on validation and test yet")
    verdict = verdicts(points)
    here.mkdir(parents=True, exist_ok=True)
    write_csv(here / "results.csv", rows)
    write_csv(here / "ladder.csv", points)
    (here / "study.json").write_text(json.dumps({k: settings[k] for k in REPRODUCE if k in settings}, indent=1) + "\n")
    md = (f"{tables(rows, points, verdict)}\n\n{majority_baseline(work)}\n\n"
          f"{compute_spent(work, points, logged_minutes(here))}\n")
    if pending:
        md += f"\nPoints still running, left out of the tables until every seed is scored: {'; '.join(pending)}.\n"
    (here / "results.md").write_text(md)
    plot(rows, points, here / "accuracy.png")
    if update_readme:
        readme = here / "README.md"
        shown = {k: settings[k] for k in ("task", "holdout", "batch_size", "seq_len", "lr", "warmup", "train_problems",
                                          "test_problems", "validation_problems", "steps", "samplers", "precision",
                                          "seeds") if k in settings}
        block = (f"<!-- results -->\n{md}\nRungs run: {rungs_run(points)}.\n\n"
                 f"Settings: `{json.dumps(shown)}`\n<!-- /results -->")
        text = re.sub(r"<!-- results -->.*<!-- /results -->", lambda _: block, readme.read_text(), flags=re.S)
        found = f"<!-- reading -->\n{reading(points, verdict)}\n<!-- /reading -->"
        readme.write_text(re.sub(r"<!-- reading -->.*<!-- /reading -->", lambda _: found, text, flags=re.S))
        root = here.parent.parent   # the project's docs state the findings with the figure, wherever the block is
        for top in (root / "docs" / "finetuning.md", root / "README.md"):
            if top.is_file() and "<!-- study -->" in top.read_text():
                figure = Path("..") / "studies" if top.parent != root else Path("studies")
                block = (f"<!-- study -->\n{reading(points, verdict)}\n\n![reasoning study: test accuracy and task NELBO"
                         f" vs fine-tuning FLOPs]({figure / 'reasoning' / 'accuracy.png'})\n<!-- /study -->")
                top.write_text(re.sub(r"<!-- study -->.*<!-- /study -->", lambda _: block, top.read_text(), flags=re.S))
                break
    return md
