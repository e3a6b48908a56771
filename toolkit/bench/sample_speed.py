"""Sampling throughput per family and step count, with and without the families' caches.

Untrained `tiny`-shaped models with a random output head (speed does not depend on training).
Caches: AR's and Eso-LM's KV caches, MDLM's no-change cache; Duo has none. Generated tokens per
wall-clock second, as in the paper's speed-quality plot.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from toolkit.bench.timing import best_seconds
from toolkit.data.tokenizer import load_tokenizer
from toolkit.lm import LanguageModel
from toolkit.resolve import config_for, validate
from toolkit.sample_request import SampleRequest


def untrained(family: str, length: int, preset: str = "tiny", device: str | torch.device = "cpu") -> LanguageModel:
    cfg = config_for(family)
    cfg.model.apply_preset(preset)
    cfg.data.seq_len = length
    validate(cfg)
    model = LanguageModel(cfg, load_tokenizer(), device=device)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.net.output_layer.parameters():   # zero-initialised head -> give it real logits
            p.normal_(std=0.05)
    return model


def sampling_rows(model: LanguageModel, length: int, batch: int, step_counts: list[int], budget_s: float) -> list[dict]:
    """One row per step count: cached and plain tokens/s, their ratio and the NFE of each."""
    rows = []
    steps_list = [length] if model.family.exact_likelihood else step_counts
    for steps in steps_list:
        req = SampleRequest(num_samples=batch, length=length, steps=steps, seed=0)
        row = {"family": model.name, "steps": steps, "length": length, "batch": batch}
        for label, request in (("cached", req), ("plain", replace(req, use_cache=False))):
            nfe, fed = [], []

            def run(request=request, nfe=nfe, fed=fed):
                fed.append(0)
                nfe.append(model.generate(request)[1].nfe)

            def count(_module, args, kwargs, fed=fed):   # token positions the network processes
                tokens = args[0] if args else kwargs.get("tokens", kwargs.get("soft"))
                fed[-1] += tokens.shape[0] * tokens.shape[1]

            hook = model.net.register_forward_pre_hook(count, with_kwargs=True)
            try:
                seconds = best_seconds(run, model.device, warmup=1, repeats=1, budget_s=budget_s)
            finally:
                hook.remove()
            row[f"{label}_tokens_per_s"] = batch * length / seconds
            row[f"nfe_{label}"] = nfe[-1]
            row[f"{label}_positions_per_s"] = fed[-1] / seconds   # network work: positions forwarded
        row["cache_speedup"] = row["cached_tokens_per_s"] / row["plain_tokens_per_s"]
        rows.append(row)
    return rows
