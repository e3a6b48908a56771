"""Tables and figure of the Duo-accelerators study from the runs' metrics.jsonl and evaluate.sh's JSON.

python studies/duo_accelerators/report.py RUNS_ROOT   (RUNS_ROOT holds baseline/ and curriculum/)
Writes curriculum.csv, few_step.csv and duo_accelerators.png next to this file; prints both tables.
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


def main(root: str) -> None:
    base, cur = val_curve(Path(root) / "baseline"), val_curve(Path(root) / "curriculum")
    with open(HERE / "curriculum.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "step", "flops", "val_nelbo"])
        for name, rows in (("baseline", base), ("curriculum", cur)):
            w.writerows([name, r["step"], f"{r['flops']:.4g}", r["val_nelbo"]] for r in rows)
    target = base[-1]["val_nelbo"]
    reach = flops_to_reach(cur, target)
    print(f"baseline final val NELBO {target:.4f} at {base[-1]['flops']:.3g} FLOPs;"
          f" curriculum final {cur[-1]['val_nelbo']:.4f} at {cur[-1]['flops']:.3g} FLOPs;"
          + (f" curriculum reaches it at {reach:.3g} FLOPs ({1 - reach / base[-1]['flops']:+.1%} saving)"
             if reach else " curriculum never reaches it"))

    evals = {who: json.loads((HERE / f"genppl_{who}.json").read_text())["sampling"] for who in ("teacher", "student")}
    with open(HERE / "few_step.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "steps", "nfe", "gen_ppl", "entropy"])
        for who, rows in evals.items():
            w.writerows([who, r["steps"], r["nfe"], round(r["gen_ppl"], 1), round(r["entropy"], 3)] for r in rows)
    print("| steps | teacher Gen PPL (entropy) | student Gen PPL (entropy) |\n|---|---|---|")
    by = {who: {r["steps"]: r for r in rows} for who, rows in evals.items()}
    for steps in sorted(set(by["teacher"]) | set(by["student"])):
        cells = [f"{by[w][steps]['gen_ppl']:.0f} ({by[w][steps]['entropy']:.2f})" if steps in by[w] else "-"
                 for w in ("teacher", "student")]
        print(f"| {steps} | {cells[0]} | {cells[1]} |")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in (("no curriculum", base), ("curriculum", cur)):
        ax1.plot([r["flops"] for r in rows], [r["val_nelbo"] for r in rows], marker=".", label=name)
    ax1.set(xlabel="training FLOPs", ylabel="val NELBO (nats/token)", title="Duo demo: curriculum", ylim=(6.2, 6.6))
    ax1.legend()
    for who, rows in evals.items():
        ax2.plot([r["steps"] for r in rows], [r["gen_ppl"] for r in rows], marker="o", label=who)
    ax2.set(xscale="log", yscale="log", xlabel="sampling steps", ylabel="Gen PPL (embedded AR judge)",
            title="Duo demo: distilled vs teacher")
    ax2.set_xticks([1, 2, 4, 8, 16, 32, 64], [1, 2, 4, 8, 16, 32, 64])
    ax2.legend()
    fig.tight_layout()
    fig.savefig(HERE / "duo_accelerators.png", dpi=110)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/duo_accelerators")
