"""What one benchmark run measures (a plan per device and mode) and the run itself.

A plan names the sizes, families and step counts; `run` measures the peaks first, then each
part, and divides every throughput by the peak of the precision it ran in. Parts: peaks, train,
forward, sampling, reference, parity (GPU only), head (the output head alone, plain vs fused).
"""
from __future__ import annotations

import datetime
import gc
from dataclasses import dataclass

import torch

from toolkit import hardware
from toolkit.bench import peaks as peak_lib
from toolkit.bench import reference as ref_lib
from toolkit.bench.head import head_benchmark
from toolkit.bench.parity import parity
from toolkit.bench.sample_speed import sampling_rows, untrained
from toolkit.bench.targets import evaluate_targets
from toolkit.bench.train_speed import QUICK_SIZE, Size, forward_throughput, random_backbone, train_throughput
from toolkit.config import ModelConfig
from toolkit.families import REGISTRY
from toolkit.model import attention
from toolkit.scaling.flops import forward_flops

PARTS = ("peaks", "train", "forward", "sampling", "reference", "parity", "head")

# the shapes: forward d=256 x 4 layers x 4 heads, T=256, V=4096, batch 32; CPU training
# d=512 x 8 layers, T=512; GPU training the paper's 170M (18 x 768) at T=2048 with a 32k vocabulary
FORWARD = Size("fwd-d256", 4, 256, 4, 256, 32)
CPU_SIZES = (Size("tiny", 4, 128, 4, 256, 16), Size("d256", 4, 256, 4, 256, 16), Size("d512", 8, 512, 8, 512, 8))
GPU_SIZES = (Size("170M", 18, 768, 12, 2048, 8, 32001), Size("170M-b16", 18, 768, 12, 2048, 16, 32001))


@dataclass
class Plan:
    device: torch.device
    quick: bool
    sizes: tuple[Size, ...]
    forward: Size
    families: tuple[str, ...]
    precisions: tuple[str, ...]           # training precisions compared on the first family
    compile: tuple[bool, ...]             # compile settings compared on the first family
    sampling_length: int
    sampling_steps: list[int]
    budget_s: float
    parts: tuple[str, ...] = PARTS
    reference: str | None = None
    variants: tuple[tuple[str, ...], ...] = ()   # extra trainer overrides timed on the first family


def make_plan(device: torch.device, quick: bool, parts=PARTS, families=None, reference=None, sizes=None,
              compile_=None, variants=()) -> Plan:
    families = tuple(families or REGISTRY)
    gpu = device.type == "cuda"
    if quick:
        return Plan(device, True, (QUICK_SIZE,), QUICK_SIZE, families, ("fp32", "bf16"), (False,), 16, [2, 4], 0.05,
                    tuple(parts), reference, tuple(variants))
    chosen = GPU_SIZES if gpu else CPU_SIZES
    if sizes:
        chosen = tuple(s for s in (*CPU_SIZES, *GPU_SIZES, QUICK_SIZE) if s.name in sizes)
    return Plan(device, False, chosen, FORWARD, families, ("bf16",) if gpu else ("fp32", "bf16"),
                compile_ if compile_ is not None else ((True, False) if gpu else (False,)),
                256, [32, 128], 2.0 if gpu else 4.0, tuple(parts), reference, tuple(variants))


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_peaks(plan: Plan) -> dict:
    out = {}
    square = 512 if plan.quick else (8192 if plan.device.type == "cuda" else 2048)
    for precision in ("fp32", "bf16"):
        out[precision] = {"square": {"size": square, "flops_per_s": peak_lib.square_peak(
            square, precision, plan.device, plan.budget_s)}}
        for size in {*plan.sizes, plan.forward}:
            out[precision][size.name] = peak_lib.model_gemm_peak(size.model_config(), size.tokens, precision,
                                                                 plan.device, plan.budget_s)
    return out


def with_ratios(row: dict, peaks: dict, size: Size) -> dict:
    """Each throughput over the peak of its precision: at the model's GEMM shapes and square."""
    p = peaks.get(row["precision"], {})
    if size.name in p:
        row["of_model_gemm_peak"] = row["model_flops_per_s"] / p[size.name]["flops_per_s"]
        if "attention_flops_per_s" in row:   # the same with attention scores counted as work
            row["of_model_gemm_peak_with_attention"] = row["attention_flops_per_s"] / p[size.name]["flops_per_s"]
    if "square" in p:
        row["of_square_gemm_peak"] = row["model_flops_per_s"] / p["square"]["flops_per_s"]
    return row


def run_train(plan: Plan, peaks: dict, precision: str, log) -> list[dict]:
    rows = []
    first = plan.families[0]
    for size in plan.sizes:
        settings = [(f, precision, plan.compile[0], ()) for f in plan.families]
        settings += [(first, p, plan.compile[0], ()) for p in plan.precisions if p != precision]
        settings += [(first, precision, c, ()) for c in plan.compile[1:]]
        settings += [(first, precision, plan.compile[0], v) for v in plan.variants]
        for family, prec, compile_, extra in settings:
            row = train_throughput(family, size, prec, plan.device, compile_=compile_, budget_s=plan.budget_s,
                                   repeats=2 if plan.quick else 3, extra=extra)
            row["variant"] = " ".join(extra)
            rows.append(with_ratios(row, peaks, size))
            log(row)
            _release(plan.device)
    return rows


def run_forward(plan: Plan, peaks: dict, log) -> list[dict]:
    size = plan.forward
    net = random_backbone(size.model_config(), plan.device).eval()
    rows = []
    for precision in ("fp32", "bf16"):
        row = forward_throughput(net, size, precision, plan.device, budget_s=plan.budget_s)
        row["implementation"] = "toolkit"
        rows.append(with_ratios(row, peaks, size))
        log(row)
    return rows


def run_sampling(plan: Plan, peaks: dict, log) -> list[dict]:
    rows = []
    preset = "cpu-xs" if plan.quick else "tiny"
    for family in plan.families:
        model = untrained(family, plan.sampling_length, preset, plan.device)
        m = model.cfg.model
        per_token = forward_flops(m.n_layers, m.d_model, m.vocab_size, 1)
        square = peaks.get("fp32", {}).get("square", {}).get("flops_per_s")   # sampling computes in fp32
        for row in sampling_rows(model, plan.sampling_length, 2 if plan.quick else 4, plan.sampling_steps,
                                 plan.budget_s):
            row["model"] = preset
            if square:   # how busy each sampler keeps the machine: positions it forwards, in model FLOPs
                for label in ("cached", "plain"):
                    row[f"{label}_of_square_gemm_peak"] = row[f"{label}_positions_per_s"] * per_token / square
            rows.append(row)
            log(row)
    return rows


def run_reference(plan: Plan, forward_rows: list[dict], log) -> dict:
    """The reference backbone on the forward shape (and, on a GPU, its training step)."""
    if not plan.reference:
        return {"skipped": "no --reference DIR given (a clone of s-sahoo/scaling-dllms)"}
    dit = ref_lib.load_dit(plan.reference)
    size = plan.forward
    net = random_backbone(size.model_config(), plan.device).eval()
    ref = ref_lib.reference_backbone(dit, net, size.model_config()).eval()
    tokens, sigma = torch.randint(0, size.vocab_size, (2, size.seq_len)).to(plan.device), torch.rand(2).to(plan.device)
    out = {"directory": str(plan.reference), "max_rel_diff_logits": ref_lib.max_relative_difference(net, ref, tokens, sigma),
           "forward": []}
    ours = {r["precision"]: r["tokens_per_s"] for r in forward_rows}
    # as shipped: the reference's autocast is CUDA-only, so on a CPU it computes in fp32
    for label, precision in (("as shipped", "fp32" if plan.device.type == "cpu" else "bf16"), ("bf16 autocast", "bf16")):
        row = forward_throughput(ref, size, precision, plan.device, budget_s=plan.budget_s)
        row.update(implementation="reference", setting=label)
        row["toolkit_auto_over_reference"] = ours[hardware.resolve_precision("auto", plan.device)] / row["tokens_per_s"]
        row["toolkit_same_precision_over_reference"] = ours[precision] / row["tokens_per_s"]
        out["forward"].append(row)
        log(row)
    if plan.device.type == "cpu":
        error = ref_lib.cpu_backward_error(ref.train(), tokens, sigma)
        out["train"] = {"possible": error is None, "error": error}
    else:
        big = plan.sizes[0]
        net = random_backbone(big.model_config(), plan.device)
        ref = ref_lib.reference_backbone(dit, net, big.model_config()).train()
        row = ref_lib.reference_train_step(ref, big.vocab_size, big.batch, big.seq_len, plan.device, plan.budget_s)
        row.update(size=big.name, shape=big.describe())
        out["train"] = row
        log(row)
    del net, ref
    _release(plan.device)
    return out


def run_parity(plan: Plan) -> list[dict]:
    backends = ["sdpa"] + (["xformers"] if attention.xformers_available() else [])
    small = ModelConfig(n_layers=2, d_model=256, n_heads=4, vocab_size=QUICK_SIZE.vocab_size, max_seq_len=512)
    pairs = ([("xformers", "sdpa")] if "xformers" in backends else []) + [(b, "math") for b in backends]
    return [row for pair in pairs for row in parity(pair, plan.device, small, seq_len=256 if not plan.quick else 32)]


def run_head(plan: Plan) -> list[dict]:
    """The output head alone, plain vs the fused chunked head: its training shape on this device."""
    shape = (256, 64, 512) if plan.quick else ("gpu" if plan.device.type == "cuda" else "small")
    precisions = ("bf16",) if plan.device.type == "cuda" else ("fp32", "bf16")
    return head_benchmark((shape,), precisions, device=plan.device, repeats=2 if plan.quick else 5)


def run(plan: Plan, log=lambda row: None, save=lambda report: None) -> dict:
    """Every part of the plan, in one process; returns the report (JSON-ready). `save` gets the
    report so far after each part (a long run killed half-way keeps what it measured)."""
    torch.manual_seed(0)
    auto = hardware.resolve_precision("auto", plan.device)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "mode": "quick" if plan.quick else "full", "device": str(plan.device),
              "machine": hardware.describe(plan.device), "auto_precision": auto,
              "plan": {"sizes": {s.name: s.describe() for s in plan.sizes}, "forward": plan.forward.describe(),
                       "families": list(plan.families), "parts": list(plan.parts)}}
    peaks = measure_peaks(plan) if "peaks" in plan.parts else {}
    report["peaks"] = peaks
    steps = [("train", lambda: run_train(plan, peaks, auto, log)),
             ("forward", lambda: run_forward(plan, peaks, log)),
             ("reference", lambda: run_reference(plan, report.get("forward", []), log)),
             ("parity", lambda: run_parity(plan) if plan.device.type == "cuda" else []),
             ("sampling", lambda: run_sampling(plan, peaks, log)),
             ("head", lambda: run_head(plan))]
    needed = set(plan.parts) | ({"forward"} if "reference" in plan.parts else set())
    for name, part in steps:
        if name in needed:
            save(report)
            report[name] = part()
            report["targets"] = evaluate_targets(report)
    save(report)
    return report
