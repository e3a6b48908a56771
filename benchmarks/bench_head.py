"""The output head's forward + backward, plain vs fused linear + cross-entropy: time and peak memory.

    python benchmarks/bench_head.py [--shapes small,gpu] [--precisions fp32,bf16] [--device cpu]
                                    [--repeats 5] [--chunk-rows N] [--json] [--step ar,mdlm]

Shapes: small = N 4096 rows (8 x 512 tokens), d 512, V 4096; gpu = N 16384 (8 x 2048), d 768,
V 32001; or N:d:V. --step also times a family's whole loss forward + backward (d 512, 8 layers,
T 512, batch 8, V 4096) with model.fused_head on and off. The work is in
toolkit.model.head_benchmark (head_benchmark, training_step_benchmark: importable, return dicts).
"""
from __future__ import annotations

import argparse
import json

from toolkit.model.head_benchmark import format_table, head_benchmark, training_step_benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="small")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunk-rows", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--step", default="", help="families whose whole training step to time, e.g. ar,mdlm")
    a = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split(":")) if ":" in s else s for s in a.shapes.split(",")]
    report = head_benchmark(shapes, a.precisions.split(","), device=a.device, repeats=a.repeats,
                            chunk_rows=a.chunk_rows)
    if a.step:
        report["training_step"] = training_step_benchmark(a.step.split(","), precisions=a.precisions.split(","),
                                                          device=a.device, repeats=a.repeats)
    if a.json:
        print(json.dumps(report, indent=2))
        return
    print(format_table(report))
    for r in report.get("training_step", {}).get("steps", []):
        print(f"step {r['family']:>5} {r['precision']}: fused {r['fused_tokens_per_s']:,.0f} tokens/s, "
              f"plain {r['plain_tokens_per_s']:,.0f} tokens/s ({r['speedup']:.2f}x)")


if __name__ == "__main__":
    main()
