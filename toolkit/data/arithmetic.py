"""A toy reasoning task: arithmetic word problems in GSM8K's format (a stand-in, not GSM8K).

Each problem is a short story ("Emma has 12 letters. She writes 5 more. ...") with a
worked answer, one line per step, ending in GSM8K's final-answer line `#### N`. The answer
is checkable, so a model's generations can be scored by exact match of the final number.

Difficulty: `steps` operations per problem and operands drawn from 1..`max_operand`
(multiplications use a factor of 2 or 3). Splits come from fixed seeds, and a test problem
never repeats a training question. Words are common in the Austen corpus, so the embedded
4k BPE splits the text sensibly (numbers become one token per digit).

`python -m toolkit.data.arithmetic OUT_DIR --train 20000 --test 500` writes train/test JSONL.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import UserError, cli_main

NAMES = ("Emma", "Anne", "Jane", "Fanny", "Elinor", "Marianne", "Harriet", "Catherine",
         "Edward", "Henry", "Charles", "William", "Frank", "Robert", "John", "George")
ITEMS = ("letters", "books", "ribbons", "shillings", "flowers", "apples", "cards", "pens")
SPLIT_SEEDS = {"train": 1234, "test": 98765}


@dataclass(frozen=True)
class Difficulty:
    steps: int = 2           # operations after the starting amount
    max_operand: int = 20    # operands are drawn from 1..max_operand
    multiply: bool = True    # allow "doubles"/"triples" steps

    def validate(self) -> None:
        if self.steps < 1:
            raise UserError(f"steps must be >= 1 (got {self.steps})")
        if self.max_operand < 2:
            raise UserError(f"max_operand must be >= 2 (got {self.max_operand})")


def _pronoun(name: str) -> str:
    return "He" if name in NAMES[8:] else "She"


def make_problem(rng: random.Random, d: Difficulty) -> dict:
    """One problem: {'question', 'answer' (worked, ends in '#### N'), 'result' (int)}."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    he = _pronoun(name)
    value = rng.randint(2, d.max_operand)
    story = [f"{name} has {value} {item}."]
    work = []
    for _ in range(d.steps):
        kinds = ["add", "sub"] + (["mul"] if d.multiply and value <= d.max_operand else [])
        kind = rng.choice(kinds)
        if kind == "sub" and value < 2:
            kind = "add"
        if kind == "add":
            k = rng.randint(1, d.max_operand)
            story.append(rng.choice([f"{he} gets {k} more.", f"{he} buys {k} more.", f"{he} finds {k} more."]))
            new, line = value + k, f"{value} + {k} = {value + k}"
        elif kind == "sub":
            k = rng.randint(1, min(value - 1, d.max_operand))
            story.append(rng.choice([f"{he} gives away {k}.", f"{he} loses {k}.", f"{he} sells {k}."]))
            new, line = value - k, f"{value} - {k} = {value - k}"
        else:
            k = rng.choice([2, 3])
            story.append(f"{he} {'doubles' if k == 2 else 'triples'} them.")
            new, line = value * k, f"{value} * {k} = {value * k}"
        work.append(line)
        value = new
    story.append(f"How many {item} does {he.lower()} have now?")
    return {"question": " ".join(story), "answer": "\n".join(work + [f"#### {value}"]), "result": value}


def generate(n: int, split: str = "train", difficulty: Difficulty = Difficulty(), train_size: int = 20000) -> list[dict]:
    """`n` problems of a split; the same (split, difficulty) always gives the same list.

    Test problems whose question is among the first `train_size` training problems are
    skipped, so held-out accuracy measures more than recall.
    """
    difficulty.validate()
    if split not in SPLIT_SEEDS:
        raise UserError(f"split must be one of {', '.join(SPLIT_SEEDS)} (got '{split}')")
    rng = random.Random(SPLIT_SEEDS[split])
    seen = train_questions(difficulty, train_size) if split == "test" else set()
    out: list[dict] = []
    attempts = 0
    while len(out) < n:
        p = make_problem(rng, difficulty)
        attempts += 1
        if p["question"] not in seen:
            out.append(p)
        elif attempts > 50 * n + 1000:
            raise UserError(f"cannot draw {n} test problems unseen in training at this difficulty: make it harder")
    return out


def train_questions(d: Difficulty, n: int) -> set[str]:
    rng = random.Random(SPLIT_SEEDS["train"])
    return {make_problem(rng, d)["question"] for _ in range(n)}


def write_jsonl(path: str | Path, problems: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for p in problems:
            f.write(json.dumps(p) + "\n")
    return path


@cli_main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m toolkit.data.arithmetic", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--train", type=int, default=20000, help="training problems (train.jsonl)")
    ap.add_argument("--test", type=int, default=500, help="held-out problems (test.jsonl)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--max-operand", type=int, default=20)
    ap.add_argument("--no-multiply", action="store_true")
    a = ap.parse_args(argv)
    d = Difficulty(a.steps, a.max_operand, not a.no_multiply)
    out = Path(a.out_dir)
    write_jsonl(out / "train.jsonl", generate(a.train, "train", d))
    write_jsonl(out / "test.jsonl", generate(a.test, "test", d, train_size=a.train))
    print(f"wrote {a.train} training and {a.test} test problems to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
