"""Time and peak memory of the output head's forward + backward: plain vs fused (not a test).

    head_benchmark() -> dict     (benchmarks/bench_head.py prints it as a table)

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
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

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


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device, precision):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def time_variants(shape, precision, variants=VARIANTS, device="cpu", repeats=5, chunk_rows=None) -> dict:
    """Fastest forward + backward (seconds) of each variant, the variants interleaved so that a
    noisy, shared machine slows them alike; one warm-up round first."""
    device = torch.device(device)
    args = _inputs(*shape, device)
    best = {v: float("inf") for v in variants}
    for i in range(repeats + 1):
        for v in variants:
            _sync(device)
            t0 = time.perf_counter()
            with _autocast(device, precision):
                _step(v, *args, chunk_rows)
            _sync(device)
            if i:
                best[v] = min(best[v], time.perf_counter() - t0)
    return best


def peak_memory(shape, precision, variant, device="cpu", chunk_rows=None) -> float:
    """Peak bytes one forward + backward adds to its inputs (CPU: call it in a fresh process)."""
    device = torch.device(device)
    args = _inputs(*shape, device)
    if device.type == "cuda":
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = _reset_peak_rss()
    with _autocast(device, precision):
        _step(variant, *args, chunk_rows)
    if device.type == "cuda":
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    return _peak_rss() - base


def _peak_rss() -> int:
    """This process's peak resident set in bytes (Linux VmHWM; elsewhere ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux/BSD units (KiB)


def _reset_peak_rss() -> int:
    """Start a new peak at the current resident set (Linux: clear_refs 5), and return it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass   # no reset: the peak may include what came before (imports)
    return _peak_rss()


def _peak_in_fresh_process(shape, precision, variant, chunk_rows) -> float:
    """CPU: a fresh process per case, so that the peak resident set belongs to that case alone."""
    spec = json.dumps({"shape": shape, "precision": precision, "variant": variant, "chunk_rows": chunk_rows})
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "toolkit.model.head_benchmark", spec], capture_output=True,
                         text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def head_benchmark(shapes=("small",), precisions=("fp32", "bf16"), variants=VARIANTS, device="cpu",
                   repeats=5, chunk_rows=None) -> dict:
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
    return {"device": str(device), "machine": machine_name(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "repeats": repeats, "cases": cases}


def training_step_benchmark(families=("ar", "mdlm"), n_layers=8, d_model=512, n_heads=8, seq_len=512,
                            batch=8, vocab=4096, precisions=("fp32", "bf16"), device="cpu", repeats=3) -> dict:
    """A family's loss forward + backward through the whole backbone with `fused_head` on and off
    (interleaved; fastest of `repeats`): tokens/s of each and their ratio."""
    from toolkit.config import ModelConfig   # deferred: keeps this module's import light for head_benchmark
    from toolkit.families import get_family
    from toolkit.model.backbone import Backbone
    device = torch.device(device)
    cfg = ModelConfig(n_layers=n_layers, d_model=d_model, n_heads=n_heads, vocab_size=vocab, max_seq_len=seq_len)
    torch.manual_seed(0)
    nets = {True: Backbone(cfg).to(device)}
    nets[False] = Backbone(ModelConfig(**{**cfg.__dict__, "fused_head": False})).to(device)
    nets[False].load_state_dict(nets[True].state_dict())
    g = torch.Generator(device="cpu").manual_seed(0)
    x0 = torch.randint(0, vocab - 2, (batch, seq_len), generator=g).to(device)
    t = torch.rand(batch, generator=g).to(device)
    rows = []
    for name in families:
        fam = get_family(name)(None, vocab, vocab - 1, vocab - 2)
        for precision in precisions:
            best = {True: float("inf"), False: float("inf")}
            for i in range(repeats + 1):
                for fused, net in nets.items():
                    _sync(device)
                    t0 = time.perf_counter()
                    with _autocast(device, precision):
                        loss = fam.loss(net, x0, t, torch.Generator(device=device).manual_seed(i))
                    loss.backward()
                    net.zero_grad(set_to_none=True)
                    _sync(device)
                    if i:
                        best[fused] = min(best[fused], time.perf_counter() - t0)
            rows.append({"family": name, "precision": precision, "tokens": batch * seq_len,
                         "fused_tokens_per_s": batch * seq_len / best[True],
                         "plain_tokens_per_s": batch * seq_len / best[False], "speedup": best[False] / best[True]})
    return {"device": str(device), "machine": machine_name(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "model": {"n_layers": n_layers, "d_model": d_model,
            "seq_len": seq_len, "batch": batch, "vocab": vocab}, "steps": rows}


def machine_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_table(report: dict) -> str:
    lines = [f"output head forward + backward on {report['machine']} ({report['device']}, torch {report['torch']}, "
             f"{report['threads']} threads)",
             f"{'N':>6} {'d':>4} {'V':>6} {'prec':>5} {'variant':>9} {'chunk':>6} {'ms':>9} {'peak MiB':>9}"
             f" {'speed':>6} {'memory':>7}"]
    for c in report["cases"]:
        speed = f"{c['speedup_vs_plain']:.2f}x" if "speedup_vs_plain" in c else ""
        mem = f"{c['memory_vs_plain']:.2f}x" if c.get("memory_vs_plain") else ""
        lines.append(f"{c['rows']:>6} {c['d_model']:>4} {c['vocab']:>6} {c['precision']:>5} {c['variant']:>9} "
                     f"{c['chunk_rows']:>6} {1e3 * c['seconds']:>9.1f} {c['peak_mib']:>9.1f} {speed:>6} {mem:>7}")
    return "\n".join(lines)


if __name__ == "__main__":   # one case's peak memory, for _peak_in_fresh_process
    spec = json.loads(sys.argv[1])
    print(peak_memory(tuple(spec["shape"]), spec["precision"], spec["variant"], "cpu", spec["chunk_rows"]))
