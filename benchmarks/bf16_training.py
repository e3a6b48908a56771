"""Where bf16 training loses accuracy: the gradient of one training batch in fp32 against bf16 autocast,
with one part of the network at a time kept in fp32.

A fine-tune that reaches a task loss of 0.05 nats per token in fp32 ended at 0.07 in bf16. The
optimizer is not where that goes (autocast keeps fp32 weights, gradients and Adam moments); the
candidates are the products computed in bf16. For each variant this prints the loss and the
gradient's relative error against fp32, ||g - g_fp32|| / ||g_fp32||, over all weights and per
group, averaged over a few batches. bf16 is emulated on a CPU without native bf16: the numbers are
the same on any CPU (the rounding is bf16's), only the time differs.

    python benchmarks/bf16_training.py INIT DATA.jsonl [--batches 4] [--json OUT]

INIT is a checkpoint (e.g. a fine-tuned run), DATA the task's rows (what training.finetune reads).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys

import torch
import torch.nn.functional as F

from toolkit.errors import cli_main
from toolkit.model import attention as attention_module
from toolkit.model.backbone import FinalLayer
from toolkit.resolve import resolve
from toolkit.trainer import Trainer
from toolkit.trainer.step import step_generator
from toolkit.schedule import stratified_times
from toolkit.data.packing import batch_indices

GROUPS = {"head": ("output_layer.linear",), "attention": ("attn_qkv", "attn_out"), "mlp": ("mlp.",),
          "adaLN": ("adaLN_modulation", "sigma_map"), "embedding": ("vocab_embed",)}


@contextlib.contextmanager
def fp32_part(part: str):
    """Run one part of the network outside autocast, on fp32 inputs ('' = none)."""
    if part == "head":
        original = FinalLayer.forward

        def head(self, x, c, *args, **kwargs):
            with torch.autocast(x.device.type, enabled=False):
                return original(self, x.float(), c.float(), *args, **kwargs)
        FinalLayer.forward = head
        try:
            yield
        finally:
            FinalLayer.forward = original
    elif part == "attention":
        original = attention_module.F.scaled_dot_product_attention

        def sdpa(q, k, v, *args, **kwargs):
            with torch.autocast(q.device.type, enabled=False):
                return original(q.float(), k.float(), v.float(), *args, **kwargs).to(q.dtype)
        attention_module.F.scaled_dot_product_attention = sdpa
        try:
            yield
        finally:
            attention_module.F.scaled_dot_product_attention = original
    else:
        yield


def gradient(trainer: Trainer, step: int, precision: str, part: str) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and gradients of training step `step`'s batch (the trainer's own rows, times and noise)."""
    t, net = trainer.cfg.train, trainer.net
    rows = batch_indices(len(trainer.data.train), t.batch_size, step, t.seed)
    x0 = trainer.data.train[rows]
    extra = {} if trainer.data.train_mask is None else {"loss_mask": trainer.data.train_mask[rows]}
    times = stratified_times(t.batch_size, step_generator(t.seed, step, -1, "cpu"))
    net.zero_grad(set_to_none=True)
    with fp32_part(part), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = trainer.family.loss(net, x0, times, step_generator(t.seed, step, 0, "cpu"), **extra)
    loss.backward()
    return float(loss), {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}


def relative_error(g: dict, ref: dict, names) -> float:
    num = sum(float((g[n] - ref[n]).pow(2).sum()) for n in names)
    den = sum(float(ref[n].pow(2).sum()) for n in names)
    return (num / den) ** 0.5 if den else float("nan")


VARIANTS = (("bf16 autocast", "bf16", ""), ("bf16, head in fp32", "bf16", "head"),
            ("bf16, attention in fp32", "bf16", "attention"))


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("init")
    ap.add_argument("data")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=72)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = resolve([f"init={a.init}", f"data={a.data}", f"batch_size={a.batch_size}", f"seq_len={a.seq_len}",
                   "out=/tmp/bf16_training_unused", "threads=1", "precision=fp32", "compile=false"])
    trainer = Trainer(cfg)
    trainer.net.train()
    names = [n for n, p in trainer.net.named_parameters() if p.requires_grad]
    groups = {g: [n for n in names if any(k in n for k in keys)] for g, keys in GROUPS.items()}
    rows = []
    sums = {label: {"loss": 0.0, "all": 0.0, **{g: 0.0 for g in groups}} for label, _, _ in VARIANTS}
    ref_loss = 0.0
    for b in range(a.batches):
        loss32, g32 = gradient(trainer, b, "fp32", "")
        ref_loss += loss32 / a.batches
        for label, precision, part in VARIANTS:
            loss, g = gradient(trainer, b, precision, part)
            s = sums[label]
            s["loss"] += (loss - loss32) / a.batches
            s["all"] += relative_error(g, g32, names) / a.batches
            for group, members in groups.items():
                s[group] += relative_error(g, g32, members) / a.batches
    print(f"checkpoint {a.init}: fp32 loss {ref_loss:.4f} (mean of {a.batches} batches of {a.batch_size} x {a.seq_len})")
    print(f"{'variant':26s} {'loss - fp32':>12s} {'grad err':>9s} " + " ".join(f"{g:>10s}" for g in groups))
    for label, _, _ in VARIANTS:
        s = sums[label]
        print(f"{label:26s} {s['loss']:12.5f} {s['all']:9.4f} " + " ".join(f"{s[g]:10.4f}" for g in groups))
        rows.append({"variant": label, "loss_minus_fp32": round(s["loss"], 6), "grad_rel_error": round(s["all"], 5),
                     **{f"grad_rel_error_{g}": round(s[g], 5) for g in groups}})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"init": a.init, "fp32_loss": ref_loss, "batches": a.batches, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
