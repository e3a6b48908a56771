"""The arithmetic task's held-out splits, checked on generated text alone (not on the generator's own
bookkeeping): the content split holds out whole numbers-and-operations tuples and worked answers from
training, validation and test share none, and the earlier surface split stays available by name."""
import json
import re

import pytest

from toolkit.data.arithmetic import LEVELS, Difficulty, generate, main

VERBS = {"gets": "+", "buys": "+", "finds": "+", "gives away": "-", "loses": "-", "sells": "-"}
STEP = re.compile(r"(?:He|She) (gets|buys|finds|gives away|loses|sells) (\d+)(?: more)?\."
                  r"|(?:He|She) (doubles|triples) them\.")


def story_tuple(question: str) -> tuple:
    """The starting amount and each step's (operation, operand), read from the question's words."""
    start = int(re.search(r" has (\d+) ", question).group(1))
    steps = []
    for verb, k, scale in STEP.findall(question):
        steps.append(("*", 2 if scale == "doubles" else 3) if scale else (VERBS[verb], int(k)))
    return (start, *steps)


def worked_lines(problem: dict) -> list[str]:
    return problem["answer"].splitlines()[:-1]


@pytest.mark.parametrize("name, n_train, n_test", [("arith", 20000, 300), ("arith-hard", 5000, 200), ("copy", 5000, 200)])
def test_content_split_holds_out_whole_tuples_and_worked_answers(name, n_train, n_test):
    d = LEVELS[name]
    train = generate(n_train, "train", d)
    test = generate(n_test, "test", d)
    val = generate(n_test, "validation", d)
    tuples = {split: {story_tuple(p["question"]) for p in ps} for split, ps in
              (("train", train), ("test", test), ("validation", val))}
    for p in train + test + val:   # the parse agrees with the worked answer, so it is a faithful reading
        start, *steps = story_tuple(p["question"])
        assert len(steps) == d.steps
        assert not steps or worked_lines(p)[0].startswith(f"{start} {steps[0][0]} {steps[0][1]} ")
    assert not tuples["test"] & tuples["train"] and not tuples["validation"] & tuples["train"]
    assert not tuples["test"] & tuples["validation"]
    training_text = "\n".join(p["answer"] for p in train)
    for p in test + val:   # no held-out worked answer occurs in training, not even as a run of lines
        assert p["answer"] not in training_text
        if d.steps:
            assert "\n".join(worked_lines(p)) not in training_text
    assert len(tuples["test"]) == n_test   # distinct tuples while the split has unused ones
    assert generate(n_test, "test", d) == test   # reproducible


def test_surface_split_is_kept_by_name_and_shares_tuples_with_training():
    """The earlier split holds out questions only: most test tuples occur in training (what the
    content split exists to prevent), which also shows the tuple check above can fail."""
    d = LEVELS["arith"]
    train = generate(20000, "train", d, holdout="surface")
    test = generate(300, "test", d, train_size=20000, holdout="surface")
    val = generate(100, "validation", d, train_size=20000, holdout="surface")
    train_tuples = {story_tuple(p["question"]) for p in train}
    assert not {p["question"] for p in test + val} & {p["question"] for p in train}
    assert not {p["question"] for p in val} & {p["question"] for p in test}
    assert sum(story_tuple(p["question"]) in train_tuples for p in test) > 250


def test_a_small_task_repeats_tuples_only_once_the_split_runs_out():
    d = Difficulty(steps=1, max_operand=9)   # ~120 tuples: the test split owns only a few
    test = generate(100, "test", d)
    distinct = {story_tuple(p["question"]) for p in test}
    train = {story_tuple(p["question"]) for p in generate(3000, "train", d)}
    assert 5 < len(distinct) < 40 and not distinct & train


def test_cli_writes_the_validation_split_and_rejects_unknown_holdouts(tmp_path, capsys):
    assert main([str(tmp_path), "--task", "arith", "--train", "500", "--test", "20", "--validation", "10"]) == 0
    rows = {s: [json.loads(x) for x in (tmp_path / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "test", "validation")}
    assert [len(v) for v in rows.values()] == [500, 20, 10]
    tuples = {s: {story_tuple(p["question"]) for p in ps} for s, ps in rows.items()}
    assert not tuples["validation"] & tuples["train"]
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), "--holdout", "nope"])
    assert e.value.code != 0 and "invalid choice: 'nope'" in capsys.readouterr().err
