"""The app's four-family run (embedded models, the GUI's default request: 64 tokens, 32 steps, the
default prompt) timed in fp32 and in forced bf16, interleaved over repeats; prints medians and ranges
with the CPU, its bf16 support and the load.

    python benchmarks/gui_precision.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = ap.parse_args(argv)
    import torch

    from gui.denoise_tab import DEFAULT_PROMPT
    from gui.live import Settings, interleave, start
    from gui.models import ModelRegistry
    from toolkit.hardware import cpu_model, native_bf16, resolve_precision
    torch.set_num_threads(args.threads)
    registry = ModelRegistry()
    keys = registry.keys[:4]
    seconds = {"fp32": [], "bf16": []}
    load = os.getloadavg()[0]
    for _ in range(args.repeats):
        for precision in seconds:
            for k in keys:
                registry.get(k).precision = precision
            tic = time.perf_counter()
            for _ in interleave(start(registry, keys, Settings(DEFAULT_PROMPT))):
                pass
            seconds[precision].append(time.perf_counter() - tic)
    print(f"CPU: {cpu_model()}; native bf16: {native_bf16('cpu')}; precision=auto -> "
          f"{resolve_precision('auto', 'cpu')}; {torch.get_num_threads()} thread(s); load {load:.1f} at the start")
    for precision, s in seconds.items():
        print(f"{precision}: four-family run (length 64, 32 steps) median {statistics.median(s):.2f} s "
              f"(range {min(s):.2f}-{max(s):.2f} s, {len(s)} runs)")
    ratio = statistics.median(seconds["bf16"]) / statistics.median(seconds["fp32"])
    print(f"bf16 / fp32 time: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
