"""Load check for the app: N clients call `denoise` at once; every request must be answered (a result
or a visible error, never silence), memory must stay bounded, and the server must still answer afterwards.
Prints per-request latency (queueing included) and the server process's peak RSS.

    python benchmarks/gui_load.py                       # 8 clients, embedded models, in-process server
    python benchmarks/gui_load.py --find-max            # largest N with every request answered within 30 s
    python benchmarks/gui_load.py --url http://127.0.0.1:7860 --clients 16
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc; elsewhere the peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def hammer(url: str, models: list[str], clients: int, length: int, steps: int, timeout: float = 600) -> dict:
    """N clients at once, each one request; every request ends as a result or a reported error."""
    from gradio_client import Client
    latency, errors = {}, {}

    def one(i: int):
        try:
            tic = time.perf_counter()       # from connecting: a client waits for that too
            c = Client(url, verbose=False)
            out = c.predict("", models, length, steps, i, api_name="/denoise")
            assert set(out["texts"]) == set(models) and not out["errors"], out
            latency[i] = time.perf_counter() - tic
        except Exception as e:      # reported, never raised: the point is to count failures
            errors[i] = repr(e)[:200]

    tic = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, timeout - (time.perf_counter() - tic)))
    wall = time.perf_counter() - tic
    silent = clients - len(latency) - len(errors)      # neither answered nor refused: must be 0
    alive = bool(Client(url, verbose=False).predict("", models[:1], 8, 2, 0, api_name="/denoise")["texts"])
    lat = sorted(latency.values())
    return {"clients": clients, "completed": len(lat), "errors": list(errors.values()), "unanswered": silent,
            "server_alive_after": alive, "wall_s": round(wall, 3),
            "latency_median_s": round(statistics.median(lat), 3) if lat else None,
            "latency_max_s": round(lat[-1], 3) if lat else None, "length": length, "steps": steps, "models": models}


def find_max(url: str, models: list[str], length: int, steps: int, limit_s: float, ns: list[int]) -> dict:
    """The largest N (from `ns`, in order) with every request answered within limit_s."""
    best, tried = 0, []
    for n in ns:
        r = hammer(url, models, n, length, steps, timeout=limit_s * 4)
        ok = r["completed"] == n and (r["latency_max_s"] or 0) <= limit_s
        tried.append({k: r[k] for k in ("clients", "completed", "latency_median_s", "latency_max_s", "wall_s")}
                     | {"ok": ok, "rss_mb": round(rss_mb(), 1), "unanswered": r["unanswered"],
                        "error_kinds": sorted({e.split("(")[0] + ": " + e[e.find("(") + 1:][:60] for e in r["errors"]})})
        if not ok:
            break
        best = n
    return {"largest_n_within_limit": best, "limit_s": limit_s, "tried": tried}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="a running app (default: start one in this process)")
    ap.add_argument("--models", nargs="+", default=None, help="default: the embedded models")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--find-max", action="store_true", help="raise N until a request misses --limit-s")
    ap.add_argument("--limit-s", type=float, default=30.0)
    ap.add_argument("--ns", default="8,16,24,32,48,64", help="client counts tried by --find-max, in order")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    demo = None
    from gui.models import ModelRegistry
    registry = ModelRegistry(args.models)
    url = args.url
    if url is None:
        from gui.app import serve_in_background
        demo, url = serve_in_background(registry, args.concurrency)
    rss_start = rss_mb()
    try:
        if args.find_max:
            result = find_max(url, registry.keys, args.length, args.steps, args.limit_s,
                              [int(x) for x in args.ns.split(",")])
            ok = result["largest_n_within_limit"] > 0
        else:
            result = hammer(url, registry.keys, args.clients, args.length, args.steps)
            ok = result["completed"] == args.clients and result["server_alive_after"]
    finally:
        if demo is not None:
            demo.close()
    if args.url is None:   # the server ran in this process: its memory is ours
        result |= {"rss_start_mb": round(rss_start, 1), "rss_end_mb": round(rss_mb(), 1),
                   "peak_rss_mb": round(peak_rss_mb(), 1)}
    result |= {"cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    print(json.dumps(result, indent=2))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
