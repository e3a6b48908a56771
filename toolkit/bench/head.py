"""The `head` part of the benchmark: the output head's forward + backward, plain vs fused.

    python -m toolkit.bench --parts head        (head_benchmark() returns the rows)

Three ways to score N rows against a [V, d] head, each followed by the backward pass of a
per-row weighted sum (the families weight rows differently):
- `plain`: nn.Linear logits, fp32 copy, [MASK] column at -inf, F.cross_entropy (the old path);
- `fused`: toolkit.model.fused_head.linear_cross_entropy (chunked; logits recomputed in backward);
- `fused_sum`: linear_cross_entropy_sum (chunked; gradients formed in forward, weights given up front).
Times are the fastest of `repeats` rounds, the variants interleaved (shared machines are noisy).
Peak memory on CPU: in a fresh process per case, the growth of the peak resident set over the
inputs (the peak reset first; large tensors are mmap'd, so freed ones leave the RSS); on CUDA, the growth of
torch.cuda.max_memory_allocated over the inputs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from toolkit.bench.timing import autocast, peak_rss_bytes, reset_peak_rss, synchronize
from toolkit.model.fused_head import (default_chunk_rows, linear_cross_entropy, linear_cross_entropy_sum,
                                      unfused_cross_entropy)

SHAPES = {"small": (8 * 512, 512, 4096), "gpu": (8 * 2048, 768, 32001)}   # rows N, width d, vocabulary V
VARIANTS = ("plain", "fused", "fused_sum")
EXCLUDE = 3


def _inputs(n, d, v, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(device).requires_grad_()
    w = (torch.randn(v, d, generator=g) * d ** -0.5).to(device).requires_grad_()
    b = torch.zeros(v, device=device, requires_grad=True)
    targets = torch.randint(0, v, (n,), generator=g).to(device)
    targets[targets == EXCLUDE] = 0
    weights = torch.rand(n, generator=g).to(device)
    return x, w, b, targets, weights


def _step(variant, x, w, b, targets, weights, chunk_rows):
    if variant == "plain":
        loss = (unfused_cross_entropy(x, w, b, targets, EXCLUDE) * weights).sum()
    elif variant == "fused":
        loss = (linear_cross_entropy(x, w, b, targets, EXCLUDE, chunk_rows) * weights).sum()
    else:
        loss = linear_cross_entropy_sum(x, w, b, targets, weights, EXCLUDE, chunk_rows)
    loss.backward()
    for p in (x, w, b):
        p.grad = None


def time_variants(shape, precision, variants=VARIANTS, device="cpu", repeats=5, chunk_rows=None) -> dict:
    """Fastest forward + backward (seconds) of each variant, the variants interleaved so that a
    noisy, shared machine slows them alike; one warm-up round first."""
    device = torch.device(device)
    args = _inputs(*shape, device)
    best = {v: float("inf") for v in variants}
    for i in range(repeats + 1):
        for v in variants:
            synchronize(device)
            t0 = time.perf_counter()
            with autocast(device, precision):
                _step(v, *args, chunk_rows)
            synchronize(device)
            if i:
                best[v] = min(best[v], time.perf_counter() - t0)
    return best


def peak_memory(shape, precision, variant, device="cpu", chunk_rows=None) -> float:
    """Peak bytes one forward + backward adds to its inputs (CPU: call it in a fresh process)."""
    device = torch.device(device)
    args = _inputs(*shape, device)
    if device.type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = reset_peak_rss()
    with autocast(device, precision):
        _step(variant, *args, chunk_rows)
    if device.type == "cuda":
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    return peak_rss_bytes() - base


def _peak_in_fresh_process(shape, precision, variant, chunk_rows) -> float:
    """CPU: a fresh process per case, so that the peak resident set belongs to that case alone."""
    spec = json.dumps({"shape": shape, "precision": precision, "variant": variant, "chunk_rows": chunk_rows})
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "toolkit.bench.head", spec], capture_output=True,
                         text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def head_benchmark(shapes=("small",), precisions=("fp32", "bf16"), variants=VARIANTS, device="cpu",
                   repeats=5, chunk_rows=None) -> list[dict]:
    """Forward + backward of the head for each shape (a name in SHAPES or (N, d, V)), precision and
    variant: the fastest time, the peak memory, and both as ratios to `plain` (when measured)."""
    device = torch.device(device)
    cases = []
    for shape in shapes:
        n, d, v = tuple(SHAPES[shape]) if isinstance(shape, str) else tuple(shape)
        for precision in precisions:
            best = time_variants((n, d, v), precision, variants, device, repeats, chunk_rows)
            for variant in variants:
                peak = (_peak_in_fresh_process((n, d, v), precision, variant, chunk_rows) if device.type == "cpu"
                        else peak_memory((n, d, v), precision, variant, device, chunk_rows))
                cases.append({"rows": n, "d_model": d, "vocab": v, "precision": precision, "variant": variant,
                              "chunk_rows": chunk_rows or default_chunk_rows(n, d, v),
                              "seconds": best[variant], "peak_mib": peak / 2 ** 20,
                              "logits_fp32_mib": n * v * 4 / 2 ** 20})
    plain = {(c["rows"], c["d_model"], c["vocab"], c["precision"]): c for c in cases if c["variant"] == "plain"}
    for c in cases:
        ref = plain.get((c["rows"], c["d_model"], c["vocab"], c["precision"]))
        if ref is not None:
            c["speedup_vs_plain"] = ref["seconds"] / c["seconds"]
            c["memory_vs_plain"] = c["peak_mib"] / ref["peak_mib"] if ref["peak_mib"] > 0 else None
    return cases


if __name__ == "__main__":   # one case's peak memory, for _peak_in_fresh_process
    spec = json.loads(sys.argv[1])
    print(peak_memory(tuple(spec["shape"]), spec["precision"], spec["variant"], "cpu", spec["chunk_rows"]))
