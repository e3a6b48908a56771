"""Multiple-choice likelihood scoring, the paper's protocol for PIQA/ARC/HellaSwag-style tasks.

Each choice is scored by the log-likelihood of [context + choice]: AR uses the exact
conditional log p(choice | context); the diffusion families use -NELBO of the whole sequence,
estimated with many antithetic Monte Carlo t draws. Every choice of a question shares the
same random numbers (common seeds), so the noise largely cancels in the comparison.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from toolkit.errors import UserError
from toolkit.evaluation.likelihood import sequence_nll
from toolkit.sample_request import SampleRequest


def _nll(model, ids, mc_samples, seed) -> float:
    if not ids:
        return 0.0
    return float(sequence_nll(model, torch.tensor(ids)[None], mc_samples, seed)[0][0])


def loglikelihood(model, context: str, continuation: str, mc_samples: int = 64, seed: int = 0,
                  check_greedy: bool = False) -> tuple[float, bool]:
    """(score, is_greedy) of `continuation` after `context`; the lm-evaluation-harness contract.

    Sequences longer than the model's context keep their last tokens. `is_greedy` is only
    computed for exact-likelihood models when asked (greedy decoding reproduces the choice).
    """
    ctx, cont = model.encode(context), model.encode(continuation)
    if not cont:
        raise UserError("empty continuation: nothing to score")
    ids = (ctx + cont)[-model.max_length:]
    ctx = ids[: len(ids) - len(cont)]
    cont = ids[len(ctx):]
    if not model.family.exact_likelihood:
        return -_nll(model, ids, mc_samples, seed), False
    score = -(_nll(model, ids, mc_samples, seed) - _nll(model, ctx, mc_samples, seed))
    greedy = False
    if check_greedy:
        req = SampleRequest(num_samples=1, length=len(ids), prompt=ctx, temperature=0.0, seed=seed,
                            steps=len(cont))
        _, last = model.generate(req)
        greedy = last.tokens[0, len(ctx):].tolist() == cont
    return score, greedy


def score_choices(model, context: str, choices: list[str], mc_samples: int = 64, seed: int = 0) -> list[float]:
    return [loglikelihood(model, context, c, mc_samples, seed)[0] for c in choices]


def read_items(path: str | Path) -> list[dict]:
    """A jsonl file of {"context": str, "choices": [str, ...], "answer": int}."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"multiple-choice file not found: {path}")
    items = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            ok = (isinstance(item.get("context"), str) and isinstance(item.get("choices"), list)
                  and len(item["choices"]) >= 2 and isinstance(item.get("answer"), int)
                  and 0 <= item["answer"] < len(item["choices"]))
        except (json.JSONDecodeError, AttributeError):
            ok = False
        if not ok:
            raise UserError(f"{path}:{n}: expected {{\"context\": str, \"choices\": [>= 2 str], \"answer\": index}}")
        items.append(item)
    if not items:
        raise UserError(f"{path}: no questions")
    return items


def choice_accuracy(model, items: list[dict], mc_samples: int = 64, seed: int = 0) -> dict:
    """Accuracy of the arg-max choice, and the same with scores normalised per choice token."""
    right = right_norm = 0
    for i, item in enumerate(items):
        scores = score_choices(model, item["context"], item["choices"], mc_samples, seed + i)
        lens = [max(1, len(model.encode(c))) for c in item["choices"]]
        right += max(range(len(scores)), key=scores.__getitem__) == item["answer"]
        normed = [s / n for s, n in zip(scores, lens)]
        right_norm += max(range(len(normed)), key=normed.__getitem__) == item["answer"]
    return {"accuracy": right / len(items), "accuracy_norm": right_norm / len(items), "questions": len(items)}
