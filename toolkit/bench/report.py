"""A benchmark report for people: aligned text tables, and the bench section of docs/performance.md.

That section is written from the JSON report alone (between two marker comments), so the
figures there are always those of a named run on a named machine.
"""
from __future__ import annotations

import re
from pathlib import Path

from toolkit.bench.targets import evaluate_targets
from toolkit.errors import UserError

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _num(x, digits: int = 0) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _g(x) -> str:   # FLOP/s -> GFLOP/s or TFLOP/s
    if x is None:
        return "n/a"
    return f"{x / 1e12:,.1f} T" if x >= 1e12 else f"{x / 1e9:,.1f} G"


def machine_line(r: dict) -> str:
    m = r["machine"]
    gpu = f"; GPU {m['gpu']} ({m['gpu_memory_gib']} GiB, CUDA {m['cuda']})" if m.get("gpu") else ""
    return (f"{m['cpu']} [{' '.join(m['cpu_flags']) or 'flags unknown'}], {m['cpu_count']} cores, {m['threads']} threads"
            f"{gpu}; torch {m['torch']}; precision=auto -> {r['auto_precision']}; {r['date']}; {r['mode']} run")


def sections(r: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table of a report."""
    out = []
    peaks = r.get("peaks") or {}
    if peaks:
        names = [k for k in peaks.get("fp32", {}) if k != "square"]
        header = ["precision", f"square {peaks['fp32']['square']['size']}^3"] + [f"{n} GEMMs" for n in names]
        rows = [[p, _g(v["square"]["flops_per_s"]) + "FLOP/s"] + [_g(v[n]["flops_per_s"]) + "FLOP/s" for n in names]
                for p, v in peaks.items()]
        out.append(("Matrix-product peaks (measured in this run)", header, rows))
    if r.get("train"):
        header = ["family", "size", "shape", "precision", "compile", "variant", "tokens/s", "model FLOP/s",
                  "of GEMM peak", "(with attention)", "of square peak", "peak mem GiB"]
        rows = [[t["family"], t["size"], t["shape"], t["precision"], "yes" if t["compile"] else "no", t.get("variant") or "-",
                 _num(t["tokens_per_s"]), _g(t["model_flops_per_s"]), _pct(t.get("of_model_gemm_peak")),
                 _pct(t.get("of_model_gemm_peak_with_attention")),
                 _pct(t.get("of_square_gemm_peak")), _num(t["peak_memory_gib"], 2)] for t in r["train"]]
        out.append(("Training (forward, backward, AdamW; MFU = 6 N per token)", header, rows))
    forward = list(r.get("forward", [])) + list((r.get("reference") or {}).get("forward", []))
    if forward:
        header = ["implementation", "precision", "shape", "tokens/s", "of GEMM peak", "toolkit (auto) / this"]
        rows = [[f["implementation"] + (f" ({f['setting']})" if f.get("setting") else ""), f["precision"], f["shape"],
                 _num(f["tokens_per_s"]), _pct(f.get("of_model_gemm_peak")),
                 _num(f.get("toolkit_auto_over_reference"), 2) + ("x" if "toolkit_auto_over_reference" in f else "")]
                for f in forward]
        out.append(("Forward only (no gradients)", header, rows))
    if r.get("sampling"):
        header = ["family", "model", "length x batch", "steps", "cached tok/s", "plain tok/s", "cache speed-up",
                  "NFE cached/plain", "cached / plain work of peak"]
        rows = [[s["family"], s["model"], f"{s['length']} x {s['batch']}", str(s["steps"]), _num(s["cached_tokens_per_s"]),
                 _num(s["plain_tokens_per_s"]), f"{s['cache_speedup']:.2f}x", f"{s['nfe_cached']}/{s['nfe_plain']}",
                 f"{_pct(s.get('cached_of_square_gemm_peak'))} / {_pct(s.get('plain_of_square_gemm_peak'))}"]
                for s in r["sampling"]]
        out.append(("Sampling (generated tokens per second)", header, rows))
    if r.get("head"):
        header = ["rows x d x V", "precision", "variant", "chunk", "ms", "peak MiB", "speed vs plain", "memory vs plain"]
        rows = [[f"{c['rows']} x {c['d_model']} x {c['vocab']}", c["precision"], c["variant"], str(c["chunk_rows"]),
                 _num(1e3 * c["seconds"], 1), _num(c["peak_mib"], 1), _num(c.get("speedup_vs_plain"), 2) + "x",
                 _num(c.get("memory_vs_plain"), 2) + "x"] for c in r["head"]]
        out.append(("Output head forward + backward (plain vs chunked fused cross-entropy)", header, rows))
    ref = r.get("reference")
    if ref:
        if "skipped" in ref:
            rows = [["skipped", ref["skipped"]]]
        else:
            rows = [["max relative difference of logits", f"{ref['max_rel_diff_logits']:.1e}"]]
            train = ref.get("train", {})
            if "possible" in train:
                rows.append(["training on this CPU", "possible" if train["possible"] else
                             f"impossible: FlexAttention has no CPU backward ({train['error']})"])
            elif train:
                rows.append([f"compiled FlexAttention training step, {train['shape']}",
                             f"{_num(train['tokens_per_s'])} tokens/s, {_num(train['peak_memory_gib'], 2)} GiB"])
        out.append(("Reference backbone (models/dit.py of s-sahoo/scaling-dllms, same weights)", ["", ""], rows))
    if r.get("parity"):
        header = ["a", "b", "pattern", "dtype", "max rel diff logits", "max rel diff grad", "ok"]
        rows = [[p["a"], p["b"], p["pattern"], p["dtype"], f"{p['max_rel_diff_logits']:.1e}",
                 f"{p['max_rel_diff_grad']:.1e}", "yes" if p["ok"] else "NO"] for p in r["parity"]]
        out.append(("Attention backend parity", header, rows))
    goals = evaluate_targets(r)   # recomputed: a report saved by an older version shows today's goals
    if goals:
        rows = [[t["target"], (_pct(t["value"]) if t["unit"] == "of peak" else _num(t["value"], 2) + "x"),
                 (_pct(t["goal"]) if t["unit"] == "of peak" else f"{t['goal']}x"),
                 {True: "met", False: "NOT met", None: "n/a"}[t["met"]]] for t in goals]
        out.append(("Targets", ["target", "measured", "goal", ""], rows))
    return out


def text(r: dict) -> str:
    lines = [machine_line(r)]
    for title, header, rows in sections(r):
        widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
        lines += ["", title]
        for row in [header, *rows]:
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines) + "\n"


def markdown(r: dict, title: str) -> str:
    lines = [f"#### {title}", "", machine_line(r) + ".", ""]
    for title, header, rows in sections(r):
        lines += [f"*{title}*", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def heading(r: dict) -> str:
    m = r["machine"]
    return (f"{m['gpu']} (GPU)" if m.get("gpu") else f"{m['cpu']}, {m['cpu_count']} cores (CPU)") + f", {r['date']}"


def write_readme_section(readme: Path, reports: list[dict], preamble: str = "") -> None:
    """Replace the text between START and END in `readme` with these reports' tables."""
    text_ = readme.read_text()
    if START not in text_ or END not in text_:
        raise UserError(f"{readme} has no '{START}' ... '{END}' markers to write between")
    body = "\n".join([preamble.strip(), ""] + [markdown(r, heading(r)) for r in reports]).strip()
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: f"{START}\n{body}\n{END}", text_, flags=re.S)
    readme.write_text(new)
