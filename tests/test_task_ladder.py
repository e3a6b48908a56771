"""The reasoning study's task ladder and its honest cost: every level's answers check out and are
held out, and a batch charges each problem only the network evaluations it needed itself."""
import re

import pytest
import torch

import toolkit
from toolkit.data.arithmetic import LEVELS, generate, given_first_line, level
from toolkit.errors import UserError
from toolkit.evaluation.reasoning import extract_answer, load_problems, task_accuracy
from toolkit.sample_request import SampleRequest, Step

LINE = re.compile(r"^(\d+) ([-+*]) (\d+) = (\d+)$")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def check_worked_answer(problem: dict) -> int:
    """Recompute a problem from its text alone; return how many of its lines carry or borrow a digit."""
    start = int(re.search(r" has (\d+) ", problem["question"]).group(1))
    *lines, final = problem["answer"].split("\n")
    value, carries = start, 0
    for line in lines:
        a, op, b, c = LINE.match(line).groups()
        assert int(a) == value and OPS[op](int(a), int(b)) == int(c), line
        carries += (op == "+" and int(a) % 10 + int(b) % 10 >= 10) or (op == "-" and int(a) % 10 < int(b) % 10)
        value = int(c)
    assert final == f"#### {value}" and extract_answer(problem["answer"]) == str(value) == str(problem["result"])
    return carries


@pytest.mark.parametrize("name", list(LEVELS))
def test_every_level_is_checkable_and_held_out(name):
    d = LEVELS[name]
    train = generate(3000, "train", d)
    test = generate(300, "test", d, train_size=3000)
    carries = [check_worked_answer(p) for p in train + test]
    assert all(p["answer"].count("\n") == d.steps for p in test)
    assert not {p["question"] for p in test} & {p["question"] for p in train}   # never seen in training
    assert generate(300, "test", d, train_size=3000) == test                  # reproducible
    if name == "arith-hard":   # the harder level exists to make digits carry
        assert sum(c > 0 for c in carries) > len(carries) / 2
    if name == "copy":         # a copy problem states its answer and asks nothing else
        assert all(re.search(r" has (\d{4}) ", p["question"]).group(1) == str(p["result"]) for p in test)


@pytest.mark.parametrize("shift", [0, 2, -1])
def test_given_first_line_probe_continues_from_the_given_result(shift):
    for p in generate(200, "test", LEVELS["arith-hard"]):
        probe = given_first_line(p, shift)
        if probe is None:
            assert p["answer"].count("\n") < 2 or shift < 0
            continue
        question, given = probe["question"].rsplit("\n", 1)
        assert question == p["question"] and probe["given_first_result"] == probe["true_first_result"] + shift
        assert given.split(" = ")[0] == p["answer"].split("\n")[0].split(" = ")[0]   # same operands, new result
        # the worked answer is right when read from the given (possibly wrong) first line on
        check_worked_answer({"question": f"X has {probe['given_first_result']} y.", "answer": probe["answer"],
                             "result": probe["result"]})
        if shift == 0:
            assert probe["answer"] == p["answer"].split("\n", 1)[1] and probe["result"] == p["result"]


def test_levels_by_name_in_evaluation_and_bad_names():
    problems = load_problems("arith-hard", limit=5)
    assert [p.gold for p in problems] == [str(r["result"]) for r in generate(5, "test", LEVELS["arith-hard"])]
    assert level("arith", steps=3).steps == 3 and level("arith", steps=3).max_operand == LEVELS["arith"].max_operand
    with pytest.raises(UserError, match="unknown arithmetic task 'arith-xl'"):
        level("arith-xl")
    with pytest.raises(UserError, match="unknown task"):
        load_problems("arith-xl")


def trace(model, request):
    return list(model.sample(request))


@pytest.fixture(scope="module")
def mdlm():
    torch.manual_seed(0)
    return toolkit.load("mdlm")


def test_mdlm_cache_charges_each_row_its_own_evaluations(mdlm):
    # Rows of a batch finish revealing at different steps; alone, a row is re-evaluated at step k+1
    # only if it changed at step k (the first step always evaluates), so its cost is read off the trace.
    request = SampleRequest(length=24, steps=64, num_samples=6, seed=3, temperature=1.0)
    steps = trace(mdlm, request)
    from_trace = [1 + sum(bool(s.changed[r].any()) for s in steps[:-1]) for r in range(6)]
    assert steps[-1].nfe_per_row() == from_trace
    assert min(from_trace) < steps[-1].nfe <= 64          # the batch paid more than some rows needed
    # A batch of one pays exactly its own evaluations (the sampler's own count).
    alone = trace(mdlm, SampleRequest(length=24, steps=64, num_samples=1, seed=5, temperature=1.0))
    assert alone[-1].nfe_per_row() == [alone[-1].nfe]
    # Without the cache every row pays every step.
    plain = trace(mdlm, SampleRequest(length=24, steps=16, num_samples=3, seed=3, use_cache=False))
    assert plain[-1].nfe_per_row() == [16.0] * 3


@pytest.mark.parametrize("sampler", ["remdm", "block"])
def test_strategies_that_skip_evaluations_count_rows_from_their_reveals(mdlm, sampler):
    # ReMDM evaluates a row only when it reveals something; block decoding only while the row's
    # block still has masks (each such evaluation reveals at least one position).
    request = SampleRequest(length=24, steps=32, num_samples=6, seed=1, temperature=1.0, sampler=sampler)
    steps = trace(mdlm, request)
    revealed = [(s.changed & ~s.remasked) if s.remasked is not None else s.changed for s in steps]
    from_trace = [sum(bool(r[row].any()) for r in revealed) for row in range(6)]
    assert steps[-1].nfe_per_row() == from_trace
    assert max(from_trace) <= steps[-1].nfe


def test_task_accuracy_records_each_problems_own_nfe(mdlm, tmp_path, monkeypatch):
    problems = load_problems("copy", limit=4)
    lengths = {len(mdlm.encode(p.question + "\n")) for p in problems}
    problems = [p for p in problems if len(mdlm.encode(p.question + "\n")) == min(lengths)][:3]

    def generate_stub(req):
        b = req.num_samples
        tokens = torch.zeros(b, req.length, dtype=torch.long)
        return [], Step(step=9, t=0.0, s=0.0, tokens=tokens, changed=tokens.bool(), confidence=tokens.float(),
                        nfe=9, elapsed=0.0, row_nfe=torch.arange(1, b + 1))
    monkeypatch.setattr(mdlm, "generate", generate_stub)
    result = task_accuracy(mdlm, problems, SampleRequest(length=40, steps=9), batch_size=8)
    assert result["nfe"] == pytest.approx(sum(range(1, len(problems) + 1)) / len(problems))
