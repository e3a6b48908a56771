"""Generative task accuracy: sample an answer per problem, extract its final number, compare.

Tasks: `copy`, `arith`, `arith-hard` (the toy word problems of toolkit/data/arithmetic.py, held-out split),
`gsm8k` (the Hugging Face dataset's test split; needs a network or a cached copy), or a
JSONL file of {question, answer} rows whose answer ends in GSM8K's `#### N`. The prompt is
shown exactly as in fine-tuning (toolkit/data/pairs.py), each problem gets the family's own
sampler, and every generation goes to a JSONL file; a rerun skips the problems already there.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path

from toolkit.data.arithmetic import LEVELS, generate, level
from toolkit.data.pairs import field_text, pair_rows, prompt_text
from toolkit.errors import UserError
from toolkit.sample_request import SampleRequest

FINAL = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def normalise_number(text: str) -> str | None:
    """'1,234.50' -> '1234.5'; None if `text` is not a number."""
    try:
        value = Decimal(text.replace(",", "").strip())
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite():
        return None
    value = value.normalize()
    return format(value, "f") if value != value.to_integral() else str(int(value))


def extract_answer(text) -> str | None:
    """The final number of an answer: GSM8K's `#### N`, else the last number in the text."""
    if not isinstance(text, str):
        return None
    m = FINAL.search(text)
    if m:
        return normalise_number(m.group(1))
    numbers = NUMBER.findall(text)
    return normalise_number(numbers[-1]) if numbers else None


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (sensible at 0 and n)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Problem:
    id: int
    question: str
    gold: str


def load_problems(task: str, limit: int = 500, prompt_field: str = "question", response_field: str = "answer",
                  arith_steps: int | None = None, max_operand: int | None = None) -> list[Problem]:
    """The task's problems with their gold final numbers (rows without one are an error).

    A named arithmetic level takes its own settings unless `arith_steps`/`max_operand` are given."""
    if task in LEVELS:
        problems = generate(limit or 500, "test", level(task, arith_steps, max_operand))   # held out by content
        rows = [(task, i + 1, r) for i, r in enumerate(problems)]
    elif task == "gsm8k":
        rows = pair_rows("gsm8k", "main", "test")
    elif task.endswith((".jsonl", ".json")) or Path(task).is_file() or Path(task).is_dir():
        rows = pair_rows(task, "", "test" if Path(task).is_dir() else "train")
    else:
        raise UserError(f"unknown task '{task}' ({', '.join(LEVELS)}, gsm8k, or a JSONL file of question/answer rows)")
    out = []
    for where, n, row in rows:
        if limit and len(out) >= limit:
            break
        question = field_text(row, prompt_field, where, n, "prompt")
        gold = extract_answer(field_text(row, response_field, where, n, "response"))
        if gold is None:
            raise UserError(f"{where}:{n}: the answer has no final number ('#### N')")
        out.append(Problem(len(out), question, gold))
    if not out:
        raise UserError(f"task '{task}' has no problems")
    return out


def setting_key(request: SampleRequest) -> str:
    """What makes two generations comparable: the sampler, its options, steps, temperature, top-p."""
    opts = {**request.options, **request.sampler_options}
    return (f"{request.sampler}|{','.join(f'{k}={opts[k]}' for k in sorted(opts))}|steps={request.steps}"
            f"|T={request.temperature}|top_p={request.top_p}|length={request.length}")


def read_done(path: Path, setting: str) -> dict[int, dict]:
    """Generations already in the output file for this setting (a torn last line is dropped)."""
    done: dict[int, dict] = {}
    if not path.is_file():
        return done
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue   # a run killed mid-write: that problem is simply redone
        if isinstance(row, dict) and row.get("setting") == setting and "id" in row:
            done[row["id"]] = row
    return done


def response_text(model, ids: list[int]) -> str:
    """Decode a generated response up to its first [EOS]."""
    eos = model.tokenizer.token_to_id(model.cfg.data.eos_token)
    if eos in ids:
        ids = ids[: ids.index(eos)]
    return model.decode(ids)


def task_accuracy(model, problems: list[Problem], request: SampleRequest, out: str | Path | None = None,
                  batch_size: int = 64, progress=None) -> dict:
    """Accuracy (with a 95% Wilson interval), mean NFE and tokens/s at `request`'s settings.

    NFE is each problem's own (`Step.nfe_per_row`: what it would cost sampled alone), so a batch
    does not charge a problem for the evaluations its neighbours needed; `batch_nfe` is recorded too.
    Problems are grouped by prompt length, so one batch shares one prefix length; each
    generation is appended to `out` as soon as its batch ends, keyed by its setting (`setting_key`)
    for resuming: a rerun with another sampler, option or step count generates afresh.
    """
    out_path = Path(out) if out else None
    setting = setting_key(request)
    done = read_done(out_path, setting) if out_path else {}
    rows = list(done.values())
    todo: dict[int, list[tuple[Problem, list[int]]]] = {}
    for p in problems:
        if p.id in done and done[p.id].get("question") == p.question:
            continue
        done.pop(p.id, None)
        ids = model.encode(prompt_text(p.question))
        if len(ids) >= request.length:
            raise UserError(f"problem {p.id}: its prompt is {len(ids)} tokens, no room to answer in length={request.length}")
        todo.setdefault(len(ids), []).append((p, ids))
    handle = open(out_path, "a") if out_path else None
    if handle and out_path.stat().st_size and not out_path.read_bytes().endswith(b"\n"):
        handle.write("\n")   # end a torn last line, so the next record starts on its own
    try:
        for plen in sorted(todo):
            group = todo[plen]
            for start in range(0, len(group), batch_size):
                chunk = group[start: start + batch_size]
                req = replace(request, num_samples=len(chunk), prompts=[ids for _, ids in chunk], prompt=[],
                              seed=request.seed + chunk[0][0].id)
                tic = time.perf_counter()
                _, last = model.generate(req)
                seconds = time.perf_counter() - tic
                generated = (req.length - plen) * len(chunk)
                for (p, _), row, nfe in zip(chunk, last.tokens.tolist(), last.nfe_per_row()):
                    text = response_text(model, row[plen:])
                    predicted = extract_answer(text)
                    rec = {"id": p.id, "steps": request.steps, "setting": setting, "question": p.question, "gold": p.gold,
                           "generation": text, "predicted": predicted, "correct": predicted == p.gold,
                           "nfe": nfe, "batch_nfe": last.nfe, "tokens_per_s": round(generated / max(seconds, 1e-9), 1),
                           "seconds": round(seconds / len(chunk), 5)}
                    rows.append(rec)
                    if handle:
                        handle.write(json.dumps(rec) + "\n")
                if handle:
                    handle.flush()
                if progress:
                    progress(len(rows), len(problems))
    finally:
        if handle:
            handle.close()
    wanted = {p.id for p in problems}
    rows = [r for r in rows if r["id"] in wanted]
    n, correct = len(rows), sum(bool(r["correct"]) for r in rows)
    low, high = wilson_interval(correct, n)
    return {"steps": request.steps, "problems": n, "correct": correct, "accuracy": correct / n if n else 0.0,
            "ci_low": low, "ci_high": high,
            "nfe": sum(r["nfe"] for r in rows) / max(n, 1),
            "tokens_per_s": sum(r["tokens_per_s"] for r in rows) / max(n, 1),
            "unparsed": sum(r["predicted"] is None for r in rows)}
