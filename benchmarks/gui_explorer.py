"""The explorer's default sweep, run twice on the embedded models: is the frontier the same?

Prints each run's frontier (model · strategy @ steps taken) against the default, deterministic axis
(network evaluations per generated token) and, for comparison, against measured tokens/s; whether
each agrees between the runs, the points whose median tokens/s moved most, and the wall time, with
the CPU and load it ran under. Exits non-zero when the default frontiers differ.

    python benchmarks/gui_explorer.py                 # the GUI's defaults
    python benchmarks/gui_explorer.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="also write the rows and the verdict here")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = ap.parse_args(argv)
    import torch

    from gui import explorer
    from gui.explorer_tab import DEFAULT_STEP_COUNTS, default_selection
    from gui.live import Settings
    from gui.models import ModelRegistry
    torch.set_num_threads(args.threads)
    registry = ModelRegistry(precision="fp32")
    (keys, strategies), counts = default_selection(registry), explorer.parse_steps(DEFAULT_STEP_COUNTS)

    def frontier(rows, axis):
        return sorted(f"{rows[i]['model']} · {rows[i]['sampler']} @ {rows[i]['steps']}"
                      for i in explorer.pareto_front(rows, axis))
    runs = []
    for attempt in (1, 2):
        load = os.getloadavg()[0]
        tic = time.perf_counter()
        *_, rows = explorer.sweep(registry, keys, counts, Settings(length=64, seed=0), 2, strategies)
        runs.append({"rows": rows, "seconds": time.perf_counter() - tic, "load": load,
                     "front": frontier(rows, explorer.DEFAULT_AXIS), "speed_front": frontier(rows, "tokens_per_s")})
        print(f"run {attempt}: {len(rows)} points ({', '.join(strategies)}) in {runs[-1]['seconds']:.0f} s "
              f"(load {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end); frontier: "
              + "; ".join(runs[-1]["front"]))
    same = runs[0]["front"] == runs[1]["front"]
    same_speed = runs[0]["speed_front"] == runs[1]["speed_front"]
    print(f"against measured tokens/s the frontier is {'the same' if same_speed else 'different'}"
          f" ({len(runs[0]['speed_front'])} and {len(runs[1]['speed_front'])} points)")
    moved = sorted(((abs(a["tokens_per_s"] / b["tokens_per_s"] - 1), f"{a['model']} · {a['sampler']} @ {a['steps']}")
                    for a, b in zip(runs[0]["rows"], runs[1]["rows"])), reverse=True)[:3]
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} thread(s), fp32; same frontier in both runs: {same}")
    print("largest median tokens/s changes between the runs: " + "; ".join(f"{n} {d:+.0%}" for d, n in moved))
    flagged = [f"{r['model']} · {r['sampler']} @ {r['steps']} (entropy {r['entropy']})" for r in runs[0]["rows"]
               if r["repetitive"]]
    print("flagged repetitive: " + ("; ".join(flagged) or "none"))
    print(explorer.reference(registry.evaluator(), 64).describe())
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "same_frontier": same, "runs": runs}, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
