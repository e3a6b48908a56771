"""The performance targets the toolkit holds itself to, checked against a report's figures.

Benchmark figures, not pass/fail tests: a target that is not met is reported as such, next to
the measured value, and docs/performance.md says what limits it.
"""
from __future__ import annotations


def _target(name: str, value: float | None, goal: float, unit: str = "x") -> dict:
    return {"target": name, "value": value, "goal": goal, "unit": unit,
            "met": None if value is None else value >= goal}


def evaluate_targets(report: dict) -> list[dict]:
    out = []
    gpu = report["device"].startswith("cuda")
    ref = report.get("reference", {})
    shipped = [r for r in ref.get("forward", []) if r.get("setting") == "as shipped" and r["size"] == "fwd-d256"]
    if shipped and not gpu:
        out.append(_target("CPU forward (d=256, 4 layers, T=256, V=4096, batch 32): toolkit (precision=auto) "
                           "over the reference backbone", shipped[0]["toolkit_auto_over_reference"], 2.0))
    auto = report.get("auto_precision")
    for row in report.get("train", []):
        if not gpu and row["size"] == "d512" and row["precision"] == auto and "of_model_gemm_peak" in row:
            out.append(_target(f"CPU training d=512, 8 layers, T=512, {row['family']}, {auto}: fraction of the "
                               f"measured GEMM peak", row["of_model_gemm_peak"], 0.5, "of peak"))
    if gpu:
        train = report.get("train", [])
        for family, goal in (("mdlm", 0.40), ("ar", 0.45)):
            best = max((r.get("of_square_gemm_peak", 0.0) for r in train
                        if r["family"] == family and r["size"].startswith("170M")), default=None)
            if best is not None:
                out.append(_target(f"GPU 170M T=2048 bf16 {family} training: MFU against the measured matmul peak",
                                   best, goal, "of peak"))
        ref_train = ref.get("train", {})
        mdlm = max((r["tokens_per_s"] for r in train if r["family"] == "mdlm" and r["size"] == ref_train.get("size")),
                   default=None)
        if mdlm and ref_train.get("tokens_per_s"):
            out.append(_target("GPU 170M MDLM training step: toolkit over the reference's compiled FlexAttention step",
                               mdlm / ref_train["tokens_per_s"], 1.5))
    return out
