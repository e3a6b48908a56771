"""What `python -m toolkit.evaluate` computes: the requested metrics of one model as one JSON-ready dict."""
from __future__ import annotations

from dataclasses import replace

from toolkit.errors import UserError
from toolkit.evaluation.choice import choice_accuracy, read_items
from toolkit.evaluation.generation import DEFAULT_EVALUATOR, load_evaluator, throughput
from toolkit.evaluation.likelihood import dataset_nelbo, validation_blocks
from toolkit.evaluation.metrics import METRICS as SAMPLE_METRIC_TABLE
from toolkit.evaluation.metrics import Samples, format_scores, score_samples
from toolkit.evaluation.reasoning import load_problems, task_accuracy
from toolkit.sample_request import SampleRequest

METRICS = ("nelbo", "gen_ppl", "entropy", "throughput", "choice", "accuracy")
SAMPLE_METRICS = ("gen_ppl", "entropy", "throughput")
ROW_SETTINGS = {"sampler", "steps", "length", "num_samples", "top_p", "temperature", "seconds", "evaluator",
                "evaluator_tokens", "protocol"}


def check_metrics(metrics: list[str]) -> None:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise UserError(f"unknown metric {', '.join(unknown)} (known: {', '.join(METRICS)})")


def evaluate(model, metrics: list[str], requests: list[SampleRequest], evaluator: str = DEFAULT_EVALUATOR,
             mc_samples: int = 32, sequences: int = 16, seed: int = 0, repeats: int = 1,
             choice_file: str | None = None, gen_ppl_protocol: str = "reference", task: dict | None = None) -> dict:
    """All requested metrics as one JSON-ready dict (what the CLI prints).

    `task` (the accuracy metric): {task, problems, batch_size, generations, prompt_field,
    response_field, arith_steps, max_operand}, as the CLI's --task flags give them.
    """
    check_metrics(metrics)
    if "choice" in metrics and not choice_file:
        raise UserError("the choice metric needs --choice-file FILE.jsonl")
    if "accuracy" in metrics and not task:
        raise UserError("the accuracy metric needs --task arith|gsm8k|FILE.jsonl")
    for r in requests:
        model.check_request(r)
    judge = (load_evaluator(evaluator, str(model.device), protocol=gen_ppl_protocol, precision=model.precision)
             if "gen_ppl" in metrics else None)  # fail early
    out: dict = {"checkpoint": model.path, "family": model.name, "precision": model.resolved_precision().precision}
    if "nelbo" in metrics:
        out["nelbo"] = dataset_nelbo(model, validation_blocks(model, sequences), mc_samples, seed).to_dict()
    if "choice" in metrics:
        out["choice"] = choice_accuracy(model, read_items(choice_file), mc_samples, seed)
    if "accuracy" in metrics:
        problems = load_problems(task["task"], task["problems"], task["prompt_field"], task["response_field"],
                                 task["arith_steps"], task["max_operand"])
        out["accuracy"] = [{**task_accuracy(model, problems, req, task["generations"], task["batch_size"]),
                            "task": task["task"], "sampler": req.sampler, "length": req.length,
                            "temperature": req.temperature, "top_p": req.top_p, **req.options, **req.sampler_options}
                           for req in requests]
    if any(m in metrics for m in SAMPLE_METRICS):
        out["sampling"] = []
        for req in requests:
            row = {"sampler": req.sampler, "steps": req.steps, "length": req.length, "num_samples": req.num_samples,
                   "top_p": req.top_p, "temperature": req.temperature, **req.options, **req.sampler_options}
            quality = [m for m in ("entropy", "gen_ppl") if m in metrics]
            if quality:
                texts, last = model.generate(req)
                row.update(score_samples(Samples(texts, last.tokens.tolist(), last.nfe), ["nfe", *quality], judge))
            if "throughput" in metrics:
                tp = throughput(model, replace(req, seed=req.seed + 1), repeats=repeats)
                timed = Samples([], [], tp.nfe, tp.seconds, tp.tokens)
                row.update({**score_samples(timed, ["tokens_per_s", "nfe"]), "seconds": tp.seconds})
            out["sampling"].append(row)
    return out


def format_text(res: dict) -> str:
    lines = [f"{res['family']}  {res['checkpoint']}"]
    if "nelbo" in res:
        n = res["nelbo"]
        err = "exact" if n["exact"] else f"± {n['se']:.4f}"
        rel = "=" if n["exact"] else "<="
        lines.append(f"nelbo/token {n['nelbo']:.4f} ({err})  ppl {rel} {n['ppl_bound']:.2f}"
                     f"  [{n['sequences']} sequences, {n['tokens']} tokens]")
    if "choice" in res:
        c = res["choice"]
        lines.append(f"choice accuracy {c['accuracy']:.3f} (norm {c['accuracy_norm']:.3f}) on {c['questions']} questions")
    for row in res.get("accuracy", []):
        lines.append(f"{row['sampler']:<10} steps {row['steps']:>4}  accuracy {row['accuracy']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
                     f" on {row['problems']} problems ({row['task']})  nfe {row['nfe']:.1f}"
                     f"  {row['tokens_per_s']:.1f} tok/s  unparsed {row['unparsed']}")
    for row in res.get("sampling", []):
        extra = {k: v for k, v in row.items() if k not in ROW_SETTINGS and k not in SAMPLE_METRIC_TABLE}   # the options
        name = row.get("sampler", "ancestral") + (" " + ",".join(f"{k}={v}" for k, v in extra.items()) if extra else "")
        lines.append("  ".join([f"{name:<12}", f"steps {row['steps']:>4}", *format_scores(row)]))
    return "\n".join(lines)
