"""One short check of a single CUDA GPU: attention-backend parity, then training speed and MFU.

    python benchmarks/gpu_check.py [--batch 8] [--steps 10] [--compile] [--out benchmarks/results]

1. Parity: the backbone's outputs (and one gradient) with attention=xformers vs attention=sdpa,
   in fp32 and bf16, for every attention pattern the families use: bidirectional (MDLM, Duo),
   causal (AR), an explicit mask (Eso-LM's permuted causal order) and a KV cache (queries
   shorter than keys). Each is also compared with the plain-math backend in fp32.
2. Speed: training steps (forward, backward, AdamW, as the trainer runs them) of the 170M
   config at T=2048 under bf16 autocast, vocabulary 32,001, for MDLM and AR with each backend:
   tokens/s and MFU against the card's dense bf16 peak (paper accounting: 6 N D, attention
   scores excluded; the figure with attention FLOPs is reported too).
Writes gpu_check.json and gpu_check.md. Without CUDA it says so and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from toolkit.config import ModelConfig  # noqa: E402
from toolkit.families import get_family  # noqa: E402
from toolkit.model import attention as attn  # noqa: E402
from toolkit.model.backbone import Backbone, KVCache  # noqa: E402
from toolkit.presets import preset  # noqa: E402
from toolkit.scaling.flops import train_flops_per_sequence  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets.
PEAKS = [("GH200", 989.0), ("H200 NVL", 835.0), ("H200", 989.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0),
         ("H100", 989.0), ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0),
         ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.0), ("V100", 125.0)]
VOCAB = 32_001


def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a card from its name (first match wins: specific names first)."""
    for key, tflops in PEAKS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def random_backbone(cfg: ModelConfig, device, seed: int = 0) -> Backbone:
    """A backbone with every weight random (adaLN and head are zero-initialised for training)."""
    torch.manual_seed(seed)
    net = Backbone(cfg).to(device)
    with torch.no_grad():
        for m in [*(b.adaLN_modulation for b in net.blocks), net.output_layer.adaLN_modulation,
                  net.output_layer.linear]:
            m.weight.normal_(std=0.02)
            m.bias.normal_(std=0.02)
    return net


def patterns(n: int, device, g: torch.Generator) -> dict:
    """Attention patterns, as keyword arguments of Backbone.forward (plus a cache flag)."""
    order = torch.rand(1, n, generator=g, device="cpu").argsort(1).to(device)
    rank = order.argsort(1)
    mask = (rank[:, None, :] <= rank[:, :, None])[:, None]           # Eso-LM's permuted causal mask
    return {"bidirectional": {}, "causal": {"causal": True},
            "explicit_mask": {"mask": mask, "positions": order},   # tokens fed in permuted order
            "kv_cache": {"causal": True, "use_cache": True}}


def run_pattern(net, tokens, sigma, kw: dict):
    kw = dict(kw)
    if kw.pop("use_cache", False):   # prefill 3/4 of the sequence, then the rest against the cache
        cut = tokens.shape[1] * 3 // 4
        cache = KVCache()
        net(tokens[:, :cut], sigma, cache=cache, **kw)
        return net(tokens[:, cut:], sigma, cache=cache, **kw)
    return net(tokens, sigma, **kw)


def parity(backends: tuple[str, str], device, cfg: ModelConfig, seq_len: int, batch: int = 2) -> list[dict]:
    """Max |a - b| / max |b| of logits (and of one gradient) between two backends, per pattern/dtype."""
    net = random_backbone(cfg, device)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq_len), generator=g).to(device)
    sigma = torch.rand(batch, generator=g).to(device)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for name, kw in patterns(seq_len, device, g).items():
            if "positions" in kw:
                kw = {**kw, "positions": kw["positions"].expand(batch, seq_len)}
            outs, grads = [], []
            for backend in backends:
                net.backend = backend
                net.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                    out = run_pattern(net, tokens, sigma, kw).float()
                out.square().mean().backward()
                outs.append(out.detach())
                grads.append(net.blocks[0].attn_qkv.weight.grad.detach().clone())
            rel = float((outs[0] - outs[1]).abs().max() / outs[1].abs().max())
            grel = float((grads[0] - grads[1]).abs().max() / grads[1].abs().max().clamp(min=1e-30))
            tol, gtol = (2e-2, 5e-2) if dtype == torch.bfloat16 else (1e-4, 1e-3)
            rows.append({"a": backends[0], "b": backends[1], "pattern": name, "dtype": str(dtype).split(".")[-1],
                         "max_rel_diff_logits": rel, "max_rel_diff_grad": grel, "ok": rel < tol and grel < gtol})
    net.backend = "sdpa"
    return rows


def speed(family: str, backend: str, device, batch: int, steps: int, seq_len: int, compile_: bool) -> dict:
    """Training tokens/s of the 170M config (bf16 autocast) and MFU."""
    n_layers, d_model, n_heads = preset("170M")
    cfg = ModelConfig(preset="170M", n_layers=n_layers, d_model=d_model, n_heads=n_heads, vocab_size=VOCAB,
                      max_seq_len=seq_len, attention=backend)
    fam_cls = get_family(family)
    fam = fam_cls(fam_cls.Options(), VOCAB, VOCAB - 1, 0)
    net = random_backbone(cfg, device)
    net.backend = backend
    model = torch.compile(net) if compile_ else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    g = torch.Generator(device=device).manual_seed(0)

    def step():
        x0 = torch.randint(0, VOCAB - 1, (batch, seq_len), device=device, generator=g)
        t = torch.rand(batch, device=device, generator=g).clamp(1e-3, 1)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fam.loss(model, x0, t, g)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):   # warm-up: kernels, autotuning, compilation
        step()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - tic
    seqs_per_s = batch * steps / seconds
    peak = peak_bf16_tflops(torch.cuda.get_device_name(device))
    flops = train_flops_per_sequence(n_layers, d_model, VOCAB, seq_len)
    flops_attn = train_flops_per_sequence(n_layers, d_model, VOCAB, seq_len, attention=True)
    row = {"family": family, "backend": backend, "batch": batch, "seq_len": seq_len, "steps": steps,
           "compile": compile_, "tokens_per_s": round(seqs_per_s * seq_len, 1),
           "step_s": round(seconds / steps, 4), "max_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2),
           "model_tflops": round(seqs_per_s * flops / 1e12, 1)}
    if peak:
        row["mfu"] = round(seqs_per_s * flops / (peak * 1e12), 4)
        row["mfu_with_attention"] = round(seqs_per_s * flops_attn / (peak * 1e12), 4)
    del net, model, opt
    torch.cuda.empty_cache()
    return row


def markdown(report: dict) -> str:
    lines = [f"# GPU check: {report['device']}", "",
             f"torch {report['torch']}, xformers {report['xformers']}, CUDA {report['cuda']}, "
             f"dense bf16 peak {report['peak_bf16_tflops']} TFLOP/s", "", "## Attention parity", "",
             "| a | b | pattern | dtype | max rel diff (logits) | max rel diff (grad) | ok |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['a']} | {r['b']} | {r['pattern']} | {r['dtype']} | {r['max_rel_diff_logits']:.2e} | "
              f"{r['max_rel_diff_grad']:.2e} | {'yes' if r['ok'] else 'NO'} |" for r in report["parity"]]
    lines += ["", "## Training speed, 170M, T=2048, bf16 autocast", "",
              "| family | backend | compile | batch | tokens/s | model TFLOP/s | MFU | MFU (with attention) | memory GiB |",
              "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['family']} | {r['backend']} | {'yes' if r['compile'] else 'no'} | {r['batch']} | "
              f"{r['tokens_per_s']:,.0f} | {r['model_tflops']} | "
              f"{r.get('mfu', 'n/a')} | {r.get('mfu_with_attention', 'n/a')} | {r['max_memory_gib']} |"
              for r in report["speed"]]
    lines += ["", "MFU uses the paper's accounting (3 x 2 T (12 L d^2 + d V) per sequence, attention scores "
              "excluded; the second column adds them). MDLM evaluates its output head only at masked "
              "positions, so its figure credits FLOPs it does not spend."]
    return "\n".join(lines) + "\n"


def _xformers_version() -> str | None:
    try:
        import xformers
        return xformers.__version__
    except Exception:
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA device: this check needs one NVIDIA GPU (see environment.yml)", file=sys.stderr)
        return 2
    device = torch.device("cuda:0")
    name = torch.cuda.get_device_name(device)
    backends = ["sdpa"] + (["xformers"] if attn.xformers_available() else [])
    report = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
              "xformers": _xformers_version(),
              "peak_bf16_tflops": peak_bf16_tflops(name), "parity": [], "speed": []}
    if attn.xops is None:
        print(f"warning: {attn.XFORMERS_MISSING}: parity is checked against plain math only", file=sys.stderr)
    small = ModelConfig(n_layers=2, d_model=256, n_heads=4, vocab_size=VOCAB, max_seq_len=512)
    pairs = [("xformers", "sdpa")] if "xformers" in backends else []
    pairs += [(b, "math") for b in backends]
    for pair in pairs:
        report["parity"] += parity(pair, device, small, seq_len=256)
    for family in ("mdlm", "ar"):
        for backend in backends:
            report["speed"].append(speed(family, backend, device, args.batch, args.steps, args.seq_len, args.compile))
            print(json.dumps(report["speed"][-1]), file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if all(r["ok"] for r in report["parity"]) else 1


if __name__ == "__main__":
    sys.exit(main())
