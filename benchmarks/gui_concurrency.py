"""Throughput of the app under concurrent clients: 1, 2 and 4 gradio_client clients call /denoise (the four
embedded families, length 64, 32 steps), each sending its requests one after another. Per client count:
seconds per request as a client sees it (queueing included) and requests per second for the whole server.

The server is `python -m gui` started in a subprocess, as a user starts it, so its own threads policy is
what is measured; --source points at another checkout (the code before a change), --server-args passes
flags (e.g. `--threads 2`). benchmarks/gui_load.py answers another question (is every request of a
burst answered, in bounded memory), with the server's threads fixed.

    python benchmarks/gui_concurrency.py
    python benchmarks/gui_concurrency.py --source /tmp/before --label before
    python benchmarks/gui_concurrency.py --server-args="--concurrency 4"
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FAMILIES = ["ar", "mdlm", "duo", "esolm"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(source: Path, extra: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(source)}
    env.pop("OMP_NUM_THREADS", None)     # the server's own default, as a user gets it
    proc = subprocess.Popen([sys.executable, "-m", "gui", "--port", str(port), "--models", *FAMILIES, *extra],
                            cwd=source, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    url = f"http://127.0.0.1:{port}/"
    from gradio_client import Client
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
        try:
            Client(url, verbose=False)
            return proc, url
        except Exception:
            time.sleep(1)
    proc.kill()
    raise SystemExit("the server did not answer within 300 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def measure(url: str, clients: int, requests: int, length: int, steps: int, server_pid: int) -> dict:
    """`clients` threads, each with its own connection, each sending `requests` requests in turn.

    Besides the wall-clock figures (which other jobs on a shared machine distort), the server's CPU
    seconds per request: threads spinning against each other show there, whatever else runs, and on
    a quiet machine with C cores the server cannot answer more than C / that many requests a second."""
    from gradio_client import Client
    connections = [Client(url, verbose=False) for _ in range(clients)]    # connecting is not timed
    latency: list[float] = []
    errors: list[str] = []
    start = threading.Barrier(clients + 1)

    def client(i: int):
        start.wait()
        for r in range(requests):
            tic = time.perf_counter()
            try:
                out = connections[i].predict("", FAMILIES, length, steps, i * 1000 + r, api_name="/denoise")
                if out["errors"]:
                    errors.append(str(out["errors"]))
            except Exception as e:    # counted, never raised: a failed request is part of the result
                errors.append(repr(e)[:200])
            latency.append(time.perf_counter() - tic)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    load_before = os.getloadavg()[0]
    cpu_before = cpu_seconds(server_pid)
    start.wait()
    tic = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - tic
    cpu = cpu_seconds(server_pid) - cpu_before
    return {"clients": clients, "requests": clients * requests, "errors": errors,
            "seconds_per_request": round(statistics.mean(latency), 3),
            "requests_per_s": round(clients * requests / wall, 3), "wall_s": round(wall, 2),
            "server_cpu_s_per_request": round(cpu / (clients * requests), 3),
            "load_1m_before": round(load_before, 2), "load_1m_after": round(os.getloadavg()[0], 2)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=str(ROOT), help="checkout whose app is started (default: this one)")
    ap.add_argument("--server-args", default="", help="extra flags for python -m gui, e.g. '--threads 2'")
    ap.add_argument("--clients", default="1,2,4")
    ap.add_argument("--requests", type=int, default=6, help="requests per client, one after another")
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--label", default="")
    ap.add_argument("--json", default=None, help="append the result as one JSON line to this file")
    args = ap.parse_args(argv)
    source = Path(args.source).resolve()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"gui-concurrency-{os.getpid()}.log"
    proc, url = start_server(source, shlex.split(args.server_args), log)
    try:
        measure(url, 1, 2, args.length, args.steps, proc.pid)     # warm-up: every model loaded and run once
        rows = [measure(url, int(n), args.requests, args.length, args.steps, proc.pid)
                for n in args.clients.split(",")]
    finally:
        proc.terminate()
        proc.wait(30)
    import torch

    from toolkit.hardware import cpu_model, resolve_precision
    result = {"label": args.label, "source": str(source), "server_args": args.server_args, "cpu": cpu_model(),
              "cores": os.cpu_count(), "torch": torch.__version__, "precision": resolve_precision("auto", "cpu"),
              "length": args.length,
              "steps": args.steps, "models": FAMILIES, "rows": rows}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")
    print("\n| clients | s per request | requests/s | server CPU s per request | load (1 min) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['seconds_per_request']:.2f} | {r['requests_per_s']:.2f} | "
              f"{r['server_cpu_s_per_request']:.2f} | {r['load_1m_before']:.1f} |")
    raise SystemExit(1 if any(r["errors"] for r in rows) else 0)


if __name__ == "__main__":
    main()
