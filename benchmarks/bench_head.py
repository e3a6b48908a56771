"""The output head's forward + backward, plain vs fused linear + cross-entropy: time and peak memory.

    python benchmarks/bench_head.py [--shapes small,gpu] [--precisions fp32,bf16] [--device cpu]
                                    [--repeats 5] [--chunk-rows N] [--json] [--step ar,mdlm]

Shapes: small = N 4096 rows (8 x 512 tokens), d 512, V 4096; gpu = N 16384 (8 x 2048), d 768,
V 32001; or N:d:V. --step also times a family's whole loss forward + backward (d 512, 8 layers,
T 512, batch 8, V 4096) with model.fused_head on and off. The work is in
toolkit.model.head_benchmark.head_benchmark (importable, returns a dict); the step timing is
training_step_benchmark below (the toolkit.bench trainer variant `fused_head=false` is the same
comparison through the real Trainer).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from toolkit.config import ModelConfig
from toolkit.families import get_family
from toolkit.model.backbone import Backbone
from toolkit.model.head_benchmark import autocast_for, format_table, head_benchmark, machine_name, sync_device


def training_step_benchmark(families=("ar", "mdlm"), n_layers=8, d_model=512, n_heads=8, seq_len=512,
                            batch=8, vocab=4096, precisions=("fp32", "bf16"), device="cpu", repeats=3) -> dict:
    """A family's loss forward + backward through the whole backbone with `fused_head` on and off
    (interleaved; fastest of `repeats`): tokens/s of each and their ratio."""
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
                    sync_device(device)
                    t0 = time.perf_counter()
                    with autocast_for(device, precision):
                        loss = fam.loss(net, x0, t, torch.Generator(device=device).manual_seed(i))
                    loss.backward()
                    net.zero_grad(set_to_none=True)
                    sync_device(device)
                    if i:
                        best[fused] = min(best[fused], time.perf_counter() - t0)
            rows.append({"family": name, "precision": precision, "tokens": batch * seq_len,
                         "fused_tokens_per_s": batch * seq_len / best[True],
                         "plain_tokens_per_s": batch * seq_len / best[False], "speedup": best[False] / best[True]})
    return {"device": str(device), "machine": machine_name(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "model": {"n_layers": n_layers, "d_model": d_model,
            "seq_len": seq_len, "batch": batch, "vocab": vocab}, "steps": rows}


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
