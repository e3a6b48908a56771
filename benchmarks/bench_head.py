"""The output head's forward + backward, plain vs fused linear + cross-entropy: time and peak memory.

    python benchmarks/bench_head.py [--shapes small,gpu] [--precisions fp32,bf16] [--device cpu]
                                    [--repeats 5] [--chunk-rows N] [--json]

Shapes: small = N 4096 rows (8 x 512 tokens), d 512, V 4096; gpu = N 16384 (8 x 2048), d 768,
V 32001; or N:d:V. The work is toolkit.model.head_benchmark.head_benchmark (importable).
"""
from __future__ import annotations

import argparse
import json

from toolkit.model.head_benchmark import format_table, head_benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="small")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunk-rows", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split(":")) if ":" in s else s for s in a.shapes.split(",")]
    report = head_benchmark(shapes, a.precisions.split(","), device=a.device, repeats=a.repeats,
                            chunk_rows=a.chunk_rows)
    print(json.dumps(report, indent=2) if a.json else format_table(report))


if __name__ == "__main__":
    main()
