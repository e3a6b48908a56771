"""Tables and figure of the Duo-accelerators study: the curriculum runs' metrics.jsonl and matched.csv.

python studies/duo_accelerators/report.py [RUNS_ROOT]   (RUNS_ROOT holds baseline/ and curriculum/)
Writes curriculum.csv (from the runs; without them the committed one is read) and
duo_accelerators.png next to this file; prints the curriculum summary and the few-step table
(Gen PPL at matched entropy, from matched.py's csv).
The FLOP column of the curriculum run adds the soft input's cost, which the trainer's count (the
discrete model's) leaves out: per relaxed step, the [B L, N] x [N, d] product and its weight
gradient, 4 B L N d FLOPs.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

HERE = Path(__file__).resolve().parent


def val_curve(run: Path) -> list[dict]:
    cfg = json.loads((run / "checkpoint" / "config.json").read_text())
    opts, m, t = cfg["options"], cfg["model"], cfg["train"]
    soft = 4 * t["batch_size"] * cfg["data"]["seq_len"] * m["vocab_size"] * m["d_model"]
    relaxed_until = opts["curriculum_end"] if opts.get("curriculum") else -1
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "val_nelbo" in r:
            extra = soft * min(r["step"], relaxed_until + 1)
            rows.append({"step": r["step"], "flops": r["flops"] + extra, "val_nelbo": r["val_nelbo"]})
    return rows


def flops_to_reach(rows: list[dict], target: float) -> float | None:
    """First logged FLOP count at which the val NELBO is <= target (linear between evaluations)."""
    for a, b in zip(rows, rows[1:]):
        if b["val_nelbo"] <= target:
            if a["val_nelbo"] <= target:
                return a["flops"]
            f = (a["val_nelbo"] - target) / (a["val_nelbo"] - b["val_nelbo"])
            return a["flops"] + f * (b["flops"] - a["flops"])
    return None


def read_curriculum(root: Path) -> tuple[list[dict], list[dict]]:
    """(baseline, curriculum) validation curves: from the runs, written to curriculum.csv, or that csv."""
    if (root / "baseline").is_dir():
        base, cur = val_curve(root / "baseline"), val_curve(root / "curriculum")
        with open(HERE / "curriculum.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["run", "step", "flops", "val_nelbo"])
            for name, rows in (("baseline", base), ("curriculum", cur)):
                w.writerows([name, r["step"], f"{r['flops']:.4g}", r["val_nelbo"]] for r in rows)
        return base, cur
    rows = list(csv.DictReader(open(HERE / "curriculum.csv")))
    return tuple([{"step": int(r["step"]), "flops": float(r["flops"]), "val_nelbo": float(r["val_nelbo"])}
                  for r in rows if r["run"] == name] for name in ("baseline", "curriculum"))


def few_step_table(rows: list[dict]) -> str:
    """Markdown: per step count, each model's Gen PPL [95% interval] at its entropy H (nats) and temperature T."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    by = {(r["model"], int(r["steps"])): r for r in rows}
    lines = ["| steps | " + " | ".join(m.replace("_", " ") for m in models) + " |", "|---" * (len(models) + 1) + "|"]
    for steps in sorted({int(r["steps"]) for r in rows}):
        cells = []
        for m in models:
            r = by.get((m, steps))
            cells.append("-" if r is None else "not reachable" if not r["gen_ppl"] else
                         f"**{float(r['gen_ppl']):.0f}** [{float(r['ci_low']):.0f}, {float(r['ci_high']):.0f}], "
                         f"H {float(r['entropy']):.3f}, T {float(r['temperature']):.2f}")
        lines.append(f"| {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


VARIANTS = {"full_schedule": "teacher_at_student_entropy"}   # a student label -> its matched teacher's label


def teacher_of(student: str) -> str:
    return VARIANTS.get(student, f"teacher_at_{student}_entropy")


def variants_table(rows: list[dict]) -> str:
    """Markdown: every distilled student at T = 1 against the teacher at its entropy, per step count
    (Gen PPL [95% interval], H; ratio student / teacher: below 1 the student wins)."""
    by = {(r["model"], int(r["steps"])): r for r in rows}
    students = [m for m in dict.fromkeys(r["model"] for r in rows) if any(k[0] == teacher_of(m) for k in by)]
    lines = ["| student | steps | student, T = 1 | teacher at its entropy | student / teacher |", "|---|---|---|---|---|"]
    for m in students:
        for steps in sorted({k[1] for k in by if k[0] == m}):
            s, t = by[(m, steps)], by.get((teacher_of(m), steps))
            cell = (lambda r: "-" if r is None else "not reachable" if not r["gen_ppl"] else
                    f"{float(r['gen_ppl']):.0f} [{float(r['ci_low']):.0f}, {float(r['ci_high']):.0f}], "
                    f"H {float(r['entropy']):.3f}, T {float(r['temperature']):.2f}")
            ratio = (f"{float(s['gen_ppl']) / float(t['gen_ppl']):.2f}" if t is not None and t["gen_ppl"] and s["gen_ppl"]
                     else "-")
            lines.append(f"| {m.replace('_', ' ')} | {steps} | {cell(s)} | {cell(t)} | {ratio} |")
    return "\n".join(lines)


def main(root: str) -> None:
    base, cur = read_curriculum(Path(root))
    target = base[-1]["val_nelbo"]
    reach = flops_to_reach(cur, target)
    print(f"baseline final val NELBO {target:.4f} at {base[-1]['flops']:.3g} FLOPs;"
          f" curriculum final {cur[-1]['val_nelbo']:.4f} at {cur[-1]['flops']:.3g} FLOPs;"
          + (f" curriculum reaches it at {reach:.3g} FLOPs ({1 - reach / base[-1]['flops']:+.1%} saving)"
             if reach else " curriculum never reaches it"))
    matched = list(csv.DictReader(open(HERE / "matched.csv")))
    main_rows = [r for r in matched if r["model"] in ("teacher", "full_schedule", "teacher_at_student_entropy")]
    print(few_step_table(main_rows))
    print()
    print(variants_table(matched))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in (("no curriculum", base), ("curriculum", cur)):
        ax1.plot([r["flops"] for r in rows], [r["val_nelbo"] for r in rows], marker=".", label=name)
    ax1.set(xlabel="training FLOPs", ylabel="val NELBO (nats/token)", title="Duo demo: curriculum", ylim=(6.2, 6.6))
    ax1.legend()
    for model in dict.fromkeys(r["model"] for r in main_rows):
        pts = sorted((r for r in main_rows if r["model"] == model and r["gen_ppl"]), key=lambda r: int(r["steps"]))
        steps, ppl = [int(r["steps"]) for r in pts], [float(r["gen_ppl"]) for r in pts]
        err = [[p - float(r["ci_low"]) for p, r in zip(ppl, pts)], [float(r["ci_high"]) - p for p, r in zip(ppl, pts)]]
        ax2.errorbar(steps, ppl, yerr=err, marker="o", capsize=2,
                     label=f"{model.replace('_', ' ')} (H {min(float(r['entropy']) for r in pts):.2f}-"
                           f"{max(float(r['entropy']) for r in pts):.2f})")
    ax2.set(xscale="log", yscale="log", xlabel="sampling steps", ylabel="Gen PPL (embedded AR judge)",
            title="Duo demo: distilled vs teacher at matched entropy")
    ax2.set_xticks([2, 4, 8, 16], [2, 4, 8, 16])
    ax2.xaxis.set_minor_formatter(NullFormatter())
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "duo_accelerators.png", dpi=110)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/duo_accelerators")
