"""Load check for the app: N clients call `denoise` at once; every request must complete and the
server must still answer afterwards. Prints per-request latency (queueing included).

    python benchmarks/gui_load.py                       # 8 clients, embedded models, in-process server
    python benchmarks/gui_load.py --url http://127.0.0.1:7860 --clients 16
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def hammer(url: str, models: list[str], clients: int, length: int, steps: int) -> dict:
    from gradio_client import Client
    latency, errors = {}, []

    def one(i: int):
        try:
            c = Client(url, verbose=False)
            tic = time.perf_counter()
            out = c.predict("", models, length, steps, i, api_name="/denoise")
            assert set(out["texts"]) == set(models) and not out["errors"], out
            latency[i] = time.perf_counter() - tic
        except Exception as e:      # reported, never raised: the point is to count failures
            errors.append(f"client {i}: {e!r}")

    tic = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - tic
    alive = bool(Client(url, verbose=False).predict("", models[:1], 8, 2, 0, api_name="/denoise")["texts"])
    lat = sorted(latency.values())
    return {"clients": clients, "completed": len(lat), "errors": errors, "server_alive_after": alive,
            "wall_s": round(wall, 3), "latency_median_s": round(statistics.median(lat), 3) if lat else None,
            "latency_max_s": round(lat[-1], 3) if lat else None, "length": length, "steps": steps, "models": models}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="a running app (default: start one in this process)")
    ap.add_argument("--models", nargs="+", default=None, help="default: the embedded models")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
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
    try:
        result = hammer(url, registry.keys, args.clients, args.length, args.steps)
    finally:
        if demo is not None:
            demo.close()
    print(json.dumps(result, indent=2))
    ok = result["completed"] == args.clients and result["server_alive_after"]
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
