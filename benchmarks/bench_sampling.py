"""Sampling throughput with and without caches, per family (a benchmark, not a test).

    python benchmarks/bench_sampling.py --length 512 --batch 4 --threads 1 [--checkpoint DIR ...]

Without checkpoints it builds each family on the `tiny` preset with max_seq_len = length and
random output weights (speed does not depend on training). Caches: AR and Eso-LM KV caches,
MDLM's no-change cache; Duo has none (it is listed once). Tokens/s are generated tokens per
wall-clock second after a short warm-up run, as in the paper's speed-quality plot.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from toolkit.resolve import resolve  # noqa: E402
from toolkit.data.tokenizer import load_tokenizer  # noqa: E402
from toolkit.evaluation.generation import throughput  # noqa: E402
from toolkit.lm import LanguageModel  # noqa: E402
from toolkit.sampling import SampleRequest  # noqa: E402


def untrained(family: str, length: int, preset: str) -> LanguageModel:
    cfg = resolve([f"family={family}", f"model={preset}", f"seq_len={length}"])
    model = LanguageModel(cfg, load_tokenizer())
    torch.manual_seed(0)
    for p in model.net.output_layer.parameters():   # zero-initialised head -> give it real logits
        torch.nn.init.normal_(p, std=0.05)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", default="128,512", help="diffusion step counts (AR always takes length steps)")
    ap.add_argument("--families", default="ar,mdlm,duo,esolm")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--checkpoint", action="append", default=[], help="use these checkpoints instead")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.checkpoint:
        import toolkit
        models = [toolkit.load(c) for c in a.checkpoint]
    else:
        models = [untrained(f, a.length, a.preset) for f in a.families.split(",")]
    rows = []
    print(f"length {a.length}, batch {a.batch}, threads {a.threads}, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(f"{'family':8} {'steps':>5} {'cached tok/s':>13} {'plain tok/s':>12} {'speed-up':>9} {'NFE c/p':>9}")
    for model in models:
        step_counts = [a.length] if model.family.exact_likelihood else [int(s) for s in a.steps.split(",")]
        for steps in step_counts:
            req = SampleRequest(num_samples=a.batch, length=a.length, steps=steps, seed=0)
            model.generate(replace(req, length=min(64, a.length), steps=min(steps, 64)))   # warm-up
            cached = throughput(model, req, warmup=0)
            plain = throughput(model, replace(req, use_cache=False), warmup=0)
            row = {"family": model.name, "steps": steps, "length": a.length, "batch": a.batch,
                   "cached_tok_s": cached.tokens_per_s, "plain_tok_s": plain.tokens_per_s,
                   "speedup": cached.tokens_per_s / plain.tokens_per_s, "nfe_cached": cached.nfe,
                   "nfe_plain": plain.nfe, "threads": a.threads}
            rows.append(row)
            print(f"{model.name:8} {steps:>5} {row['cached_tok_s']:>13.1f} {row['plain_tok_s']:>12.1f}"
                  f" {row['speedup']:>8.2f}x {cached.nfe:>4}/{plain.nfe:<4}", flush=True)
    if a.json:   # merge with earlier runs (one row per family, steps, length and batch)
        out = Path(a.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        key = lambda r: (r["family"], r["steps"], r["length"], r["batch"])  # noqa: E731
        old = json.loads(out.read_text()) if out.is_file() else []
        new = {key(r) for r in rows}
        out.write_text(json.dumps([r for r in old if key(r) not in new] + rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
