"""Tables and plot of the reasoning study from its work folder (results.csv, results.md, accuracy.png).

The README's table between the `<!-- results -->` markers is regenerated too, with a sentence
that answers the paper's question from the figures (no hand-edited numbers).
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

LABELS = {"ar": "AR", "mdlm": "MDLM", "duo": "Duo", "esolm": "Eso-LM"}


def last_val_nelbo(run: Path) -> float | None:
    vals = [json.loads(line).get("val_nelbo") for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    vals = [v for v in vals if v is not None]
    return vals[-1] if vals else None


WORK_LINE = re.compile(r"\d+ [-+*] \d+ = \d+")


def generation_shape(work: Path, fam: str, steps: int) -> tuple[float, float]:
    """(share of answers in the worked format, share whose first worked line is exactly right)."""
    gold = {}
    for line in (work / "data" / "test.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            gold[row["question"]] = row["answer"].splitlines()
    rows = [r for r in map(json.loads, (work / f"generations-{fam}.jsonl").read_text().splitlines())
            if r["steps"] == steps]
    form = first = 0
    for r in rows:
        lines = [x.strip() for x in r["generation"].strip().splitlines()]
        ref = gold[r["question"]]
        form += len(lines) == len(ref) and all(WORK_LINE.fullmatch(x) for x in lines[:-1]) \
            and re.fullmatch(r"#### \d+", lines[-1]) is not None
        first += bool(lines) and lines[0] == ref[0]
    return form / max(len(rows), 1), first / max(len(rows), 1)


def collect(work: Path, families: list[str]) -> list[dict]:
    rows = []
    for fam in families:
        acc_file = work / f"accuracy-{fam}.json"
        if not acc_file.is_file():
            continue
        acc = json.loads(acc_file.read_text())
        pre = json.loads((work / f"pretrain-nelbo-{fam}.json").read_text())["nelbo"]
        sft = last_val_nelbo(work / "runs" / fam)
        for r in acc["accuracy"]:
            form, first = generation_shape(work, fam, r["steps"])
            rows.append({"family": fam, "steps": r["steps"], "nfe": round(r["nfe"], 1), "problems": r["problems"],
                         "correct": r["correct"], "accuracy": round(r["accuracy"], 4),
                         "ci_low": round(r["ci_low"], 4), "ci_high": round(r["ci_high"], 4),
                         "unparsed": r["unparsed"], "well_formed": round(form, 3), "first_line_right": round(first, 3),
                         "tokens_per_s": round(r["tokens_per_s"], 1),
                         "pretrain_val_nelbo": round(pre["nelbo"], 4), "pretrain_se": round(pre.get("se", 0.0), 4),
                         "task_val_nelbo": round(sft, 4) if sft is not None else None})
    return rows


def answer(rows: list[dict]) -> str:
    """Does the family with the worse pre-training NELBO solve more problems? From the figures."""
    best: dict[str, dict] = {}
    for r in rows:
        if r["family"] not in best or r["accuracy"] > best[r["family"]]["accuracy"]:
            best[r["family"]] = r
    if len(best) < 2:
        return "Too few families finished to compare."
    by_ppl = sorted(best, key=lambda f: best[f]["pretrain_val_nelbo"])
    by_acc = sorted(best, key=lambda f: -best[f]["accuracy"])
    worst, top = by_ppl[-1], by_acc[0]
    w, t = best[worst], best[top]
    text = (f"Pre-training val NELBO orders the families {' < '.join(LABELS.get(f, f) for f in by_ppl)} "
            f"(best first); best accuracy orders them {' > '.join(LABELS.get(f, f) for f in by_acc)}. ")
    if worst == top:
        second = best[by_acc[1]]
        clear = t["ci_low"] > second["ci_high"]
        text += (f"The family with the worst perplexity, {LABELS.get(worst, worst)}, solves the most problems "
                 f"({t['accuracy']:.1%})" + (", with non-overlapping intervals." if clear else
                                              ", but its interval overlaps the runner-up's."))
    else:
        text += (f"At this scale the family with the worst perplexity, {LABELS.get(worst, worst)}, does not solve "
                 f"the most problems ({w['accuracy']:.1%} at best vs {LABELS.get(top, top)}'s {t['accuracy']:.1%}"
                 + (", intervals disjoint)." if t["ci_low"] > w["ci_high"] else ", intervals overlapping)."))
    return text


def majority_baseline(work: Path) -> str:
    """Accuracy of always answering the training split's most frequent result (a floor to beat)."""
    from collections import Counter
    train = [json.loads(x)["result"] for x in (work / "data" / "train.jsonl").read_text().splitlines() if x.strip()]
    test = [json.loads(x)["result"] for x in (work / "data" / "test.jsonl").read_text().splitlines() if x.strip()]
    guess, _ = Counter(train).most_common(1)[0]
    hits = sum(r == guess for r in test)
    return (f"Always answering the training split's most frequent result ({guess}) scores "
            f"{hits / len(test):.1%} ({hits} / {len(test)}).")


def table(rows: list[dict]) -> str:
    lines = ["| family | sampling steps | NFE / problem | accuracy (95% CI) | correct / problems | well-formed |"
             " first line right | task val NELBO | pre-training val NELBO |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        steps = "one per token" if r["family"] == "ar" else r["steps"]
        lines.append(f"| {LABELS.get(r['family'], r['family'])} | {steps} | {r['nfe']} | {r['accuracy']:.1%} "
                     f"[{r['ci_low']:.1%}, {r['ci_high']:.1%}] | {r['correct']} / {r['problems']} | {r['well_formed']:.0%} | "
                     f"{r['first_line_right']:.0%} | "
                     f"{r['task_val_nelbo']} | {r['pretrain_val_nelbo']} ± {r['pretrain_se']} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    for fam in dict.fromkeys(r["family"] for r in rows):
        rs = sorted((r for r in rows if r["family"] == fam), key=lambda r: r["nfe"])
        x = [r["nfe"] for r in rs]
        y = [100 * r["accuracy"] for r in rs]
        err = [[100 * (r["accuracy"] - r["ci_low"]) for r in rs], [100 * (r["ci_high"] - r["accuracy"]) for r in rs]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=LABELS.get(fam, fam))
        best = max(rs, key=lambda r: r["accuracy"])
        bx.errorbar(best["pretrain_val_nelbo"], 100 * best["accuracy"],
                    xerr=best["pretrain_se"], yerr=[[err[0][rs.index(best)]], [err[1][rs.index(best)]]],
                    marker="o", capsize=3, label=LABELS.get(fam, fam))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("network evaluations per problem (NFE)")
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_title("held-out arithmetic problems (95% Wilson CI)")
    ax.legend()
    bx.set_xlabel("pre-training val NELBO (nats/token, Austen)")
    bx.set_ylabel("best accuracy (%)")
    bx.set_title("perplexity vs. problems solved")
    bx.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarise(work: Path, here: Path, families: list[str]) -> None:
    rows = collect(work, families)
    if not rows:
        raise SystemExit("no finished evaluation in " + str(work))
    with open(here / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    settings = json.loads((work / "settings.json").read_text())
    md = table(rows) + "\n\n" + majority_baseline(work) + " " + answer(rows) + "\n"
    (here / "results.md").write_text(md)
    plot(rows, here / "accuracy.png")
    readme = here / "README.md"
    if readme.is_file():
        text = readme.read_text()
        block = (f"<!-- results -->\n{md}\nSettings: {json.dumps({k: settings[k] for k in sorted(settings) if k != 'summarise'})}"
                 "\n<!-- /results -->")
        readme.write_text(re.sub(r"<!-- results -->.*<!-- /results -->", lambda _: block, text, flags=re.S))
    top = here.parent.parent / "README.md"   # the project README shows the same table and plot
    if top.is_file() and here.name == "reasoning":
        block = f"<!-- study -->\n{md}\n![reasoning study](studies/reasoning/accuracy.png)\n<!-- /study -->"
        top.write_text(re.sub(r"<!-- study -->.*<!-- /study -->", lambda _: block, top.read_text(), flags=re.S))
