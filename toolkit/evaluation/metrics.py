"""The one table of sample metrics: Gen PPL, entropy, tokens/s and NFE of a batch of generated samples.

`python -m toolkit.evaluate`, the GUI's speed-quality explorer and the demo models' card all score
samples with `score_samples`, so a metric's name, computation and formatting live here only.
Adding a sample metric is one `Metric` row. Dataset metrics (validation NELBO, multiple-choice task
accuracy) score a model rather than samples: they are in likelihood.py / choice.py and suite.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from toolkit.errors import UserError
from toolkit.evaluation.generation import ToolkitEvaluator, gen_ppl, mean_entropy


@dataclass
class Samples:
    """What the metrics read from one sampling run."""
    texts: list[str]                 # the decoded samples, as the evaluator will read them
    tokens: list[list[int]]          # their ids (the generated positions), for entropy
    nfe: int = 0                     # network evaluations of the run
    seconds: float | None = None     # wall time of the run (None: not timed)
    generated: int = 0               # tokens generated in that time


@dataclass(frozen=True)
class Metric:
    name: str                                   # key in result rows and JSON
    label: str                                  # column / axis label
    digits: int                                 # rounding in tables
    text: Callable[[float], str]                # the CLI's text form
    compute: Callable[[Samples, object], dict]  # (samples, evaluator) -> {name: value, ...details}
    needs_evaluator: bool = False
    help: str = ""


def _gen_ppl(s: Samples, evaluator) -> dict:
    return gen_ppl(evaluator, s.texts)   # also names the evaluator and counts its tokens


def _entropy(s: Samples, _) -> dict:
    return {"entropy": mean_entropy(s.tokens)}


def _tokens_per_s(s: Samples, _) -> dict:
    if not s.seconds:
        raise UserError("tokens_per_s needs a timed run")
    return {"tokens_per_s": s.generated / s.seconds}


def _nfe(s: Samples, _) -> dict:
    return {"nfe": s.nfe}


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("gen_ppl", "Gen PPL", 2, lambda v: f"gen_ppl {v:.2f}", _gen_ppl, needs_evaluator=True,
           help="perplexity of the samples under an evaluator LM (lower is better; watch entropy)"),
    Metric("entropy", "entropy", 3, lambda v: f"entropy {v:.3f}", _entropy,
           help="mean unigram entropy (nats) of a sample; low values flag repetitive text"),
    Metric("tokens_per_s", "tokens/s", 1, lambda v: f"{v:.1f} tok/s", _tokens_per_s,
           help="generated tokens per second of wall time"),
    Metric("nfe", "NFE", 0, lambda v: f"nfe {v}", _nfe, help="network evaluations per sampling run"),
)}


def as_evaluator(judge):
    """An object with `.nll(text)`: a loaded toolkit model is wrapped, an evaluator kept as is."""
    return judge if hasattr(judge, "nll") else ToolkitEvaluator(judge)


def score_samples(samples: Samples, names=tuple(METRICS), evaluator=None) -> dict:
    """{metric: value (+ details such as the evaluator's name)} for the metrics in `names`, in table order."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UserError(f"unknown sample metric {', '.join(unknown)} (known: {', '.join(METRICS)})")
    out: dict = {}
    for name in METRICS:
        if name in names:
            metric = METRICS[name]
            if metric.needs_evaluator and evaluator is None:
                raise UserError(f"{name} needs an evaluator model")
            out.update(metric.compute(samples, as_evaluator(evaluator) if metric.needs_evaluator else None))
    return out


def rounded(row: dict) -> dict:
    """Table metrics rounded to their table precision (other keys unchanged)."""
    return {k: round(v, METRICS[k].digits) if k in METRICS and METRICS[k].digits else v for k, v in row.items()}


def format_scores(row: dict) -> list[str]:
    """The text form of every table metric present in `row`, in table order."""
    return [m.text(row[name]) for name, m in METRICS.items() if name in row]
