"""A toy reasoning task: arithmetic word problems in GSM8K's format (a stand-in, not GSM8K).

Each problem is a short story ("Emma has 12 letters. She writes 5 more. ...") with a
worked answer, one line per step, ending in GSM8K's final-answer line `#### N`. The answer
is checkable, so a model's generations can be scored by exact match of the final number.

Difficulty: `steps` operations per problem and operands drawn from `min_operand`..`max_operand`
(multiplications use a factor of 2 or 3). Words are common in the Austen corpus, so the embedded
4k BPE splits the text sensibly (numbers become one token per digit).

Splits (`holdout=`), each drawn from its own fixed seed:
- `content` (the default): every numbers-and-operations tuple (the starting amount and each step's
  operation and operand, i.e. the worked answer) belongs to one split, by a stable hash of the tuple:
  ~15% of tuples are test, ~10% validation, the rest train. No test or validation problem's tuple,
  hence no worked answer, occurs in training, and test and validation share none: the model must
  chain arithmetic facts it has seen (single lines such as `3 + 4 = 7` do occur in training) into
  combinations it has not. Held-out problems use distinct tuples while the split has unused ones.
- `surface`: the earlier split: a test problem only never repeats a training *question*; its tuple
  and worked answer usually occur in training under another name and item (recall, not computing).

Named levels (`LEVELS`), easiest first:
- `copy`: "Emma has 4821 letters. How many letters does she have?" -> `#### 4821`: no arithmetic,
  only reading a 4-digit number back (tells format and copying apart from computing);
- `arith`: 2 operations on operands 1-10 (the reasoning study's main task);
- `arith-hard`: 3 operations on 2-digit operands (10-99), so that sums carry across digits.

`python -m toolkit.data.arithmetic OUT_DIR --task arith --train 20000 --test 500 --validation 200` writes
train/test/validation JSONL.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from toolkit.errors import UserError, cli_main
from toolkit.options import require_choice

NAMES = ("Emma", "Anne", "Jane", "Fanny", "Elinor", "Marianne", "Harriet", "Catherine",
         "Edward", "Henry", "Charles", "William", "Frank", "Robert", "John", "George")
ITEMS = ("letters", "books", "ribbons", "shillings", "flowers", "apples", "cards", "pens")
SPLIT_SEEDS = {"train": 1234, "test": 98765, "validation": 4242}
HOLDOUTS = ("content", "surface")
CONTENT_SHARES = (("test", 0.15), ("validation", 0.10))   # of all tuples; the rest are train
REPEAT_PATIENCE = 200   # held-out draws of used tuples in a row after which tuples may repeat


@dataclass(frozen=True)
class Difficulty:
    steps: int = 2           # operations after the starting amount (0: a copy task)
    max_operand: int = 20    # operands (and the starting amount) are drawn from min_operand..max_operand
    multiply: bool = True    # allow "doubles"/"triples" steps
    min_operand: int = 1     # the starting amount is at least max(2, min_operand)

    def validate(self) -> None:
        if self.steps < 0:
            raise UserError(f"steps must be >= 0 (got {self.steps})")
        if self.max_operand < 2:
            raise UserError(f"max_operand must be >= 2 (got {self.max_operand})")
        if not 1 <= self.min_operand <= self.max_operand:
            raise UserError(f"min_operand must be in 1..max_operand={self.max_operand} (got {self.min_operand})")


LEVELS: dict[str, Difficulty] = {
    "copy": Difficulty(steps=0, min_operand=1000, max_operand=9999, multiply=False),
    "arith": Difficulty(steps=2, max_operand=10),
    "arith-hard": Difficulty(steps=3, min_operand=10, max_operand=99),
}


def level(name: str, steps: int | None = None, max_operand: int | None = None) -> Difficulty:
    """A named level, optionally with its number of operations or largest operand changed."""
    if name not in LEVELS:
        raise UserError(f"unknown arithmetic task '{name}' (known: {', '.join(LEVELS)})")
    d = LEVELS[name]
    changes = {k: v for k, v in (("steps", steps), ("max_operand", max_operand)) if v is not None}
    return replace(d, **changes) if changes else d


def _pronoun(name: str) -> str:
    return "He" if name in NAMES[8:] else "She"


def make_problem(rng: random.Random, d: Difficulty) -> dict:
    """One problem: {'question', 'answer' (worked, ends in '#### N'), 'result' (int)}."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    he = _pronoun(name)
    value = rng.randint(max(2, d.min_operand), d.max_operand)
    story = [f"{name} has {value} {item}."]
    work = []
    for _ in range(d.steps):
        kinds = ["add", "sub"] + (["mul"] if d.multiply and value <= d.max_operand else [])
        kind = rng.choice(kinds)
        if kind == "sub" and value <= d.min_operand:
            kind = "add"
        if kind == "add":
            k = rng.randint(d.min_operand, d.max_operand)
            story.append(rng.choice([f"{he} gets {k} more.", f"{he} buys {k} more.", f"{he} finds {k} more."]))
            new, line = value + k, f"{value} + {k} = {value + k}"
        elif kind == "sub":
            k = rng.randint(d.min_operand, min(value - 1, d.max_operand))
            story.append(rng.choice([f"{he} gives away {k}.", f"{he} loses {k}.", f"{he} sells {k}."]))
            new, line = value - k, f"{value} - {k} = {value - k}"
        else:
            k = rng.choice([2, 3])
            story.append(f"{he} {'doubles' if k == 2 else 'triples'} them.")
            new, line = value * k, f"{value} * {k} = {value * k}"
        work.append(line)
        value = new
    story.append(f"How many {item} does {he.lower()} have{' now' if d.steps else ''}?")
    return {"question": " ".join(story), "answer": "\n".join(work + [f"#### {value}"]), "result": value}


WORKED_LINE = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)")
OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def given_first_line(problem: dict, shift: int) -> dict | None:
    """The problem with its first worked line given in the prompt, its result changed by `shift`.

    A probe of whether a model computes from the intermediate it can see: the reference answer
    continues from the changed result (line 2 starts from it), so a model that recomputes line 1
    from the question instead starts line 2 from the true result. `shift=0` is the control (the
    true first line given). None if the problem has fewer than two worked lines or the changed
    chain would go below 1.
    """
    *lines, _ = problem["answer"].split("\n")
    if len(lines) < 2:
        return None
    a, op, b, c = WORKED_LINE.fullmatch(lines[0]).groups()
    value = int(c) + shift
    given, rest = f"{a} {op} {b} = {value}", []
    for line in lines[1:]:
        _, op, b, _ = WORKED_LINE.fullmatch(line).groups()
        new = OPERATIONS[op](value, int(b))
        if new < 1:
            return None
        rest.append(f"{value} {op} {b} = {new}")
        value = new
    return {"question": problem["question"] + "\n" + given, "answer": "\n".join(rest + [f"#### {value}"]),
            "result": value, "true_first_result": int(c), "given_first_result": int(c) + shift}


def content_split(problem: dict) -> str:
    """The split that owns this problem's numbers-and-operations tuple (its worked answer), by a
    stable hash: the same tuple always lands in the same split, whatever the names and items."""
    u = int(hashlib.sha256(problem["answer"].encode()).hexdigest()[:12], 16) / 16 ** 12
    for split, share in CONTENT_SHARES:
        if u < share:
            return split
        u -= share
    return "train"


def generate(n: int, split: str = "train", difficulty: Difficulty = Difficulty(), train_size: int = 20000,
             holdout: str = "content") -> list[dict]:
    """`n` problems of a split; the same (split, difficulty, holdout) always gives the same list.

    `holdout="content"`: problems whose tuple belongs to `split` (see the module docstring).
    `holdout="surface"`: held-out problems whose question is not among the first `train_size`
    training problems (validation: nor among the test problems).
    """
    difficulty.validate()
    require_choice("split", split, SPLIT_SEEDS)
    require_choice("holdout", holdout, HOLDOUTS)
    rng = random.Random(SPLIT_SEEDS[split])
    seen: set[str] = set()
    if holdout == "surface" and split != "train":
        seen = train_questions(difficulty, train_size)
        if split == "validation":
            seen |= {p["question"] for p in generate(n, "test", difficulty, train_size, "surface")}
    out: list[dict] = []
    used: set[str] = set()
    attempts = repeats = 0
    while len(out) < n:
        p = make_problem(rng, difficulty)
        attempts += 1
        if attempts > 50 * n + 20000:
            raise UserError(f"cannot draw {n} {split} problems held out from training at this difficulty: make it harder")
        if p["question"] in seen or (holdout == "content" and content_split(p) != split):
            continue
        if split != "train" and p["answer"] in used:
            repeats += 1   # prefer an unused tuple until REPEAT_PATIENCE draws in a row found none
            if repeats < REPEAT_PATIENCE:
                continue
        else:
            repeats = 0
        out.append(p)
        used.add(p["answer"])
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
    ap.add_argument("--validation", type=int, default=0,
                    help="held-out problems for choosing settings (validation.jsonl; none by default)")
    ap.add_argument("--holdout", default="content", choices=HOLDOUTS,
                    help="content: whole numbers-and-operations tuples held out (default); surface: only questions")
    ap.add_argument("--task", default=None, choices=list(LEVELS),
                    help="a named level (its settings; --steps/--max-operand still change them)")
    ap.add_argument("--steps", type=int, default=None, help="operations per problem (default 2)")
    ap.add_argument("--max-operand", type=int, default=None, help="largest operand (default 20)")
    ap.add_argument("--no-multiply", action="store_true")
    a = ap.parse_args(argv)
    if a.task:
        d = level(a.task, a.steps, a.max_operand)
        d = replace(d, multiply=False) if a.no_multiply else d
    else:
        d = Difficulty(2 if a.steps is None else a.steps, 20 if a.max_operand is None else a.max_operand,
                       not a.no_multiply)
    out = Path(a.out_dir)
    write_jsonl(out / "train.jsonl", generate(a.train, "train", d, holdout=a.holdout))
    write_jsonl(out / "test.jsonl", generate(a.test, "test", d, a.train, a.holdout))
    if a.validation:
        write_jsonl(out / "validation.jsonl", generate(a.validation, "validation", d, a.train, a.holdout))
    print(f"wrote {a.train} training, {a.test} test and {a.validation} validation problems to {out}"
          f" ({a.holdout} split)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
