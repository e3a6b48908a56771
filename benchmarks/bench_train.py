"""Training throughput on this machine, and the fraction of its measured matmul peak.

    python benchmarks/bench_train.py [--model cpu-l] [--seq-len 256] [--batch 8] [--steps 6]

Measures (1) the dense matmul peak for fp32 and bf16 with the model's own GEMM shapes,
(2) MDLM training steps (the real Trainer step: forward, backward, AdamW) in fp32 and under
bf16 autocast, and reports tokens/s and model FLOPs utilisation (paper accounting: 6 N per
token, N = non-embedding params incl. the output head; attention scores excluded).
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch

from toolkit.resolve import resolve
from toolkit.scaling.flops import train_flops_per_sequence
from toolkit.trainer import Trainer


def matmul_peak(dtype, m: int, k: int, n: int, seconds: float = 1.5) -> float:
    """Best sustained FLOP/s of a linear layer [m,k] x [k,n], run the way training runs it
    (bf16: fp32 tensors under CPU autocast, which dispatches to oneDNN's bf16 kernels)."""
    x, w = torch.randn(m, k), torch.randn(n, k)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == torch.bfloat16 else torch.no_grad()

    def run():
        with ctx, torch.no_grad():
            torch.nn.functional.linear(x, w)

    for _ in range(3):
        run()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(5):
            run()
        best = max(best, 5 * 2 * m * k * n / (time.perf_counter() - t))
    return best


def train_throughput(args, precision: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cfg = resolve([f"family={args.family}", f"model={args.model}", f"seq_len={args.seq_len}",
                       f"batch_size={args.batch}", f"precision={precision}", "progress=false",
                       f"max_steps={args.steps + 2}", f"out={out}"])
        trainer = Trainer(cfg)
        trainer.net.train()
        for _ in range(2):  # warm-up
            trainer.train_step()
            trainer.step += 1
        t = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
            trainer.step += 1
        dt = time.perf_counter() - t
    tokens = args.steps * args.batch * args.seq_len
    flops = args.steps * args.batch * trainer.flops_per_seq
    return {"precision": precision, "tokens_per_s": tokens / dt, "model_flops_per_s": flops / dt,
            "params_total": trainer.net.num_params(False), "params_non_embedding": trainer.net.num_params(True)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="mdlm")
    p.add_argument("--model", default="cpu-l")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    m = resolve([f"model={args.model}"]).model
    shape = (args.batch * args.seq_len, m.d_model, 4 * m.d_model)  # the MLP's GEMM
    peaks = {"fp32": matmul_peak(torch.float32, *shape), "bf16": matmul_peak(torch.bfloat16, *shape)}
    rows = []
    for precision in ("fp32", "bf16"):
        r = train_throughput(args, precision)
        r["peak_flops_per_s"] = peaks[precision]
        r["mfu"] = r["model_flops_per_s"] / peaks[precision]
        rows.append(r)
    report = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "family": args.family, "model": args.model, "seq_len": args.seq_len,
              "batch": args.batch, "matmul_shape": shape, "results": rows}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.family} {args.model} ({rows[0]['params_total'] / 1e6:.2f}M params, "
          f"{rows[0]['params_non_embedding'] / 1e6:.2f}M non-embedding), T={args.seq_len}, batch {args.batch}, "
          f"{report['threads']} threads, torch {torch.__version__}")
    print(f"{'precision':>9} {'tokens/s':>10} {'GFLOP/s':>9} {'peak GFLOP/s':>13} {'MFU':>6}")
    for r in rows:
        print(f"{r['precision']:>9} {r['tokens_per_s']:>10.0f} {r['model_flops_per_s'] / 1e9:>9.1f} "
              f"{r['peak_flops_per_s'] / 1e9:>13.1f} {100 * r['mfu']:>5.1f}%")


if __name__ == "__main__":
    main()
