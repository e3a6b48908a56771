"""Mutation check of the family math: does the test suite notice a wrong sign or constant?

Applies one small source mutation at a time (operator swaps, comparison flips, constants
1->0/2, `1 - x` -> `x`, dropped unary minus, swapped call arguments, t <-> s style name swaps...)
to `toolkit/families/*.py` and `toolkit/schedule.py` in a COPY of the repository, runs the family
tests there (`-x`, one thread, a per-mutant timeout) and reports each mutant as killed or survived
with the mutated line. The working tree is never modified.

    python tools/mutation_check.py                       # family tests, default budget
    python tools/mutation_check.py --tests tests/test_families.py --max-mutants 150
    python tools/mutation_check.py --list                # only list the mutants

Mutants are restricted to functions that compute losses, NELBOs, posteriors, schedules and
samplers (see FOCUS); input validation and trace bookkeeping are left alone. When there are more
mutants than --max-mutants, a seeded sample is taken (same seed -> same mutants).
"""
from __future__ import annotations

import argparse
import ast
import copy
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TESTS = ["tests/test_families.py", "tests/test_family_math.py", "tests/test_family_reverse_steps.py",
                 "tests/test_finetune.py",   # the families' prompt-masked (fine-tuning) losses
                 "tests/test_fused_head.py",   # token_nll: fused and plain heads, weights, selected rows
                 "tests/test_duo_accelerators.py",   # Duo's curriculum, dual time and distillation targets
                 "tests/test_samplers.py"]   # the decoding contract (toolkit/decoding) under every strategy
TARGETS = ["toolkit/families/*.py", "toolkit/decoding/*.py", "toolkit/schedule.py"]
# functions (or methods) whose math the check mutates; others (validation, registry, records) are skipped
FOCUS = {
    "alpha", "alpha_prime", "sigma", "reveal_probability", "stratified_times", "antithetic_times",
    "__init__", "_inputs_targets", "next_token_logits", "without_mask", "scored_tokens", "nelbo", "loss",
    "sample", "corrupt", "subs_logits", "denoise", "token_nll", "covered_tokens",
    "weight", "selected_ce", "diffusion_terms", "duo_nelbo_terms", "duo_posterior", "x_theta",
    "permuted_order", "permuted_causal_mask", "sequential_mask", "sequential_inputs", "sequential_logits",
    "sequential_nll", "reveal", "logits", "commit", "_logits_cached", "_logits_full", "masked_tokens_init",
    "seeded_start",
}
# names swapped for each other (a wrong time or a wrong operand)
NAME_SWAPS = [("t", "s"), ("a_t", "a_s"), ("alpha_t", "alpha_s"), ("x0", "z_t"), ("z0", "x0"),
              ("masked", "fixed"), ("probs", "logits"), ("a", "ratio")]
BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
               ast.FloorDiv: ast.Div, ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv,
               ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
CMP_SWAPS = {ast.Lt: [ast.LtE, ast.Gt], ast.LtE: [ast.Lt, ast.GtE], ast.Gt: [ast.GtE, ast.Lt],
             ast.GtE: [ast.Gt, ast.LtE], ast.Eq: [ast.NotEq], ast.NotEq: [ast.Eq]}
METHOD_SWAPS = {"sum": "mean", "mean": "sum", "log": "log1p", "log1p": "log", "argmax": "argmin",
                "softmax": "log_softmax", "log_softmax": "softmax"}


@dataclass
class Mutant:
    path: str          # relative file path
    line: int
    function: str
    kind: str
    original: str      # the original source line
    mutated: str       # the mutated source line (or the mutated expression for multi-line nodes)
    source: str        # the whole mutated file


def _swap_name(name: str) -> str | None:
    for a, b in NAME_SWAPS:
        if name == a:
            return b
        if name == b:
            return a
    return None


def function_names(func: ast.AST) -> set[str]:
    """Names bound inside a function (its arguments and assignment targets)."""
    names = {a.arg for a in ast.walk(func) if isinstance(a, ast.arg)}
    names |= {n.id for n in ast.walk(func) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names


def node_mutations(node: ast.AST, bound: set[str] = frozenset()):
    """Yield (kind, replacement node) for one expression node; names swap only to names in `bound`."""
    if isinstance(node, ast.BinOp):
        if type(node.op) in BINOP_SWAPS:
            yield f"{type(node.op).__name__}->{BINOP_SWAPS[type(node.op)].__name__}", \
                ast.BinOp(node.left, BINOP_SWAPS[type(node.op)](), node.right)
        if isinstance(node.op, ast.Sub) and isinstance(node.left, ast.Constant) and node.left.value == 1:
            yield "1-x->x", node.right
        if isinstance(node.op, (ast.Sub, ast.Div)):
            yield "swap operands", ast.BinOp(node.right, node.op, node.left)
        if isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            yield "drop right operand", node.left
    elif isinstance(node, ast.Compare) and len(node.ops) == 1:
        for new in CMP_SWAPS.get(type(node.ops[0]), []):
            yield f"{type(node.ops[0]).__name__}->{new.__name__}", ast.Compare(node.left, [new()], node.comparators)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Invert, ast.Not)):
        yield f"drop {type(node.op).__name__}", node.operand
    elif isinstance(node, ast.BoolOp):
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield f"{type(node.op).__name__}->{type(other).__name__}", ast.BoolOp(other, node.values)
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and not isinstance(node.value, bool):
        v = node.value
        options = {0: [1], 1: [0, 2], -1: [1, 0]}.get(v, [v + 1, v - 1] if isinstance(v, int) else [0.0, 2 * v])
        for new in options:
            yield f"const {v!r}->{new!r}", ast.Constant(new)
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        yield f"{node.value}->{not node.value}", ast.Constant(not node.value)
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and _swap_name(node.id) in bound:
        yield f"name {node.id}->{_swap_name(node.id)}", ast.Name(_swap_name(node.id), ast.Load())
    elif isinstance(node, ast.Call):
        if len(node.args) >= 2 and not any(isinstance(a, ast.Starred) for a in node.args):
            for i in range(len(node.args) - 1):
                if ast.dump(node.args[i]) != ast.dump(node.args[i + 1]):
                    args = list(node.args)
                    args[i], args[i + 1] = args[i + 1], args[i]
                    yield f"swap args {i},{i + 1}", ast.Call(node.func, args, node.keywords)
        if isinstance(node.func, ast.Attribute) and node.func.attr in METHOD_SWAPS:
            func = ast.Attribute(node.func.value, METHOD_SWAPS[node.func.attr], ast.Load())
            yield f".{node.func.attr}->.{METHOD_SWAPS[node.func.attr]}", ast.Call(func, node.args, node.keywords)


def _skip_regions(tree: ast.AST) -> set[int]:
    """ids of nodes never mutated: docstrings, annotations, raise statements, keyword names."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Raise, ast.Assert)) or (isinstance(node, ast.If) and _raises_only(node)):
            skip.update(id(n) for n in ast.walk(node))
        if isinstance(node, (ast.arg, ast.AnnAssign)) and getattr(node, "annotation", None) is not None:
            skip.update(id(n) for n in ast.walk(node.annotation))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            skip.update(id(n) for n in ast.walk(node.returns))
        if isinstance(node, ast.JoinedStr):
            skip.update(id(n) for n in ast.walk(node))
    return skip


def _raises_only(node: ast.If) -> bool:
    return all(isinstance(s, ast.Raise) for s in node.body) and not node.orelse


def _replace_span(source: str, node: ast.AST, text: str) -> str:
    """Replace the source of `node` (ast offsets are UTF-8 byte columns) by `text`."""
    lines = source.splitlines(keepends=True)

    def offset(lineno: int, col: int) -> int:
        return sum(len(l) for l in lines[:lineno - 1]) + len(lines[lineno - 1].encode()[:col].decode())

    start, end = offset(node.lineno, node.col_offset), offset(node.end_lineno, node.end_col_offset)
    return source[:start] + text + source[end:]


def file_mutants(path: Path, rel: str) -> list[Mutant]:
    source = path.read_text()
    tree = ast.parse(source)
    skip = _skip_regions(tree)
    out: list[Mutant] = []
    src_lines = source.splitlines()

    def visit(node, func, bound):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            func, bound = node.name, function_names(node)
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            children = list(node.args.defaults) + list(node.args.kw_defaults or []) + body
            children = [c for c in children if c is not None]
        else:
            children = list(ast.iter_child_nodes(node))
        if func in FOCUS and id(node) not in skip and hasattr(node, "lineno"):
            for kind, new in node_mutations(node, bound):
                new = ast.fix_missing_locations(copy.deepcopy(new))
                text = "(" + ast.unparse(new) + ")"
                mutated = _replace_span(source, node, text)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        compile(mutated, rel, "exec")
                except SyntaxError:
                    continue
                if ast.dump(ast.parse(mutated)) == ast.dump(tree):
                    continue
                mline = mutated.splitlines()[node.lineno - 1] if node.lineno == node.end_lineno else text
                out.append(Mutant(rel, node.lineno, func, kind, src_lines[node.lineno - 1].strip(),
                                  mline.strip(), mutated))
        for child in children:
            visit(child, func, bound)

    visit(tree, None, set())
    return out


def all_mutants(root: Path) -> list[Mutant]:
    files = sorted({p for pattern in TARGETS for p in root.glob(pattern)})
    out = []
    for p in files:
        out.extend(file_mutants(p, str(p.relative_to(root))))
    return out


def copy_tree(root: Path, dest: Path) -> None:
    for name in ("toolkit", "tests", "training"):
        if (root / name).exists():
            shutil.copytree(root / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "conftest.py"):
        if (root / name).exists():
            shutil.copy2(root / name, dest / name)


# tests whose name has one of these words run first for a mutant of that file (-x stops sooner)
FIRST = {"ar.py": ["ar"], "duo.py": ["duo"], "esolm.py": ["esolm", "eso", "permuted", "sequential"],
         "mdlm.py": ["mdlm", "masked"], "causal_order.py": ["esolm", "eso", "permuted", "sequential"]}


class _RunFirst:
    """pytest plugin: move the tests most likely to kill this mutant to the front."""

    def __init__(self, words):
        self.words = set(words)

    def pytest_collection_modifyitems(self, items):
        def related(item) -> bool:
            return bool(self.words & set(re.split(r"[_\[\]\-,.]+", item.name.lower())))
        items.sort(key=lambda item: not related(item))


def _pytest_args(tests: list[str]) -> list[str]:
    return ["-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *tests]


def run_tests(workdir: Path, tests: list[str], timeout: float, fork: bool = True,
              first: list[str] = ()) -> tuple[str, float, str]:
    """Run the tests in `workdir`: (status, seconds, first failure line).

    With `fork`, a child of this process (which has already imported torch and pytest) runs
    pytest, so each mutant costs its tests and the import of `toolkit`, not a fresh interpreter.
    """
    start = time.perf_counter()
    if not fork:
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", *_pytest_args(tests)], cwd=workdir, env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "killed (timeout)", time.perf_counter() - start, ""
        code, output = proc.returncode, proc.stdout + proc.stderr
    else:
        log = workdir / ".mutation-output.txt"
        pid = os.fork()
        if pid == 0:   # child: fresh imports of toolkit/tests from the copy, then pytest
            try:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.chdir(workdir)
                sys.path.insert(0, str(workdir))
                import pytest
                code = pytest.main(_pytest_args(tests), plugins=[_RunFirst(first)])
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(int(code))
            except BaseException:   # noqa: BLE001  the child must never return into the parent's loop
                os._exit(3)
        deadline = start + timeout
        try:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.perf_counter() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    return "killed (timeout)", time.perf_counter() - start, ""
                time.sleep(0.05)
        except BaseException:   # interrupted: take the child down with us
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise
        code = os.waitstatus_to_exitcode(status)
        output = log.read_text(errors="replace")
    elapsed = time.perf_counter() - start
    tail = output.strip().splitlines()
    failed = next((l for l in tail if l.startswith("FAILED") or l.startswith("ERROR")), tail[-1] if tail else "")
    if code == 0:
        return "survived", elapsed, ""
    return ("killed" if code == 1 else f"killed (rc {code})"), elapsed, failed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=str(ROOT), help="repository root to copy (default: this checkout)")
    ap.add_argument("--tests", nargs="+", default=DEFAULT_TESTS)
    ap.add_argument("--per-function", type=int, default=25,
                    help="at most this many mutants per function (a seeded sample of the rest)")
    ap.add_argument("--max-mutants", type=int, default=400, help="then sample this many when there are more")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant")
    ap.add_argument("--only", default=None, help="only mutants whose file path contains this string")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--no-fork", action="store_true", help="a fresh interpreter per mutant (slower)")
    ap.add_argument("--report", default=None, help="also write the report to this file")
    ap.add_argument("--rerun", default=None, help="only the mutants a previous report lists as SURVIVED")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so the temporary copy is removed
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
                      PYTHONHASHSEED="0", CUDA_VISIBLE_DEVICES="")
    sys.dont_write_bytecode = True
    fork = not args.no_fork and hasattr(os, "fork")
    if fork:   # imported once here; every forked child reuses them
        import torch  # noqa: F401
        import numpy  # noqa: F401
        import pytest  # noqa: F401
        torch.set_num_threads(1)
    src = Path(args.src).resolve()
    mutants = all_mutants(src)
    if args.only:
        mutants = [m for m in mutants if args.only in m.path]
    total = len(mutants)
    rng = random.Random(args.seed)
    by_function: dict[tuple[str, str], list[Mutant]] = {}
    for m in mutants:
        by_function.setdefault((m.path, m.function), []).append(m)
    mutants = [m for group in by_function.values()
               for m in (group if len(group) <= args.per_function else rng.sample(group, args.per_function))]
    mutants.sort(key=lambda m: (m.path, m.line))
    if len(mutants) > args.max_mutants:
        mutants = sorted(rng.sample(mutants, args.max_mutants),
                         key=lambda m: (m.path, m.line))
    if args.rerun:
        wanted = set()
        for line in Path(args.rerun).read_text().splitlines():
            if line.strip().startswith("SURVIVED "):
                where, _, kind = line.strip()[len("SURVIVED "):].partition(" ")
                wanted.add((where, kind.split("] ", 1)[-1]))
        mutants = [m for m in all_mutants(src) if (f"{m.path}:{m.line}", m.kind) in wanted]
    if args.list:
        for m in mutants:
            print(f"{m.path}:{m.line} [{m.function}] {m.kind}: {m.mutated}")
        print(f"{len(mutants)} of {total} mutants")
        return 0

    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        work = Path(tmp)
        copy_tree(src, work)
        status, secs, why = run_tests(work, args.tests, args.timeout * 3, fork)
        if status != "survived":
            say(f"the unmutated tests fail in the copy ({why}); fix them first")
            return 2
        # canary: a broken schedule must fail the tests, or the copy is not what the tests import
        canary = work / "toolkit" / "schedule.py"
        kept = canary.read_text()
        canary.write_text(kept + "\nraise RuntimeError('mutation canary')\n")
        status_canary, _, _ = run_tests(work, args.tests, args.timeout * 3, fork)
        canary.write_text(kept)
        if status_canary == "survived":
            say("the tests do not import the copied toolkit (canary survived); run from the repository root")
            return 2
        say(f"baseline: tests pass in {secs:.1f}s; {len(mutants)} of {total} mutants; tests: {' '.join(args.tests)}")
        survivors, counts = [], {}
        for i, m in enumerate(mutants, 1):
            target = work / m.path
            original = target.read_text()
            target.write_text(m.source)
            try:
                status, secs, why = run_tests(work, args.tests, args.timeout, fork,
                                              FIRST.get(Path(m.path).name, []))
            finally:
                target.write_text(original)
            key = status.split()[0]
            counts[key] = counts.get(key, 0) + 1
            say(f"[{i}/{len(mutants)}] {status:<17} {secs:5.1f}s {m.path}:{m.line} [{m.function}] {m.kind}: "
                f"{m.mutated}" + (f"  <- {why[:120]}" if why and status != "killed" else ""))
            if status == "survived":
                survivors.append(m)
        say("")
        say(f"summary: {len(mutants)} mutants, {counts.get('killed', 0)} killed, {len(survivors)} survived")
        for m in survivors:
            say(f"  SURVIVED {m.path}:{m.line} [{m.function}] {m.kind}")
            say(f"      was: {m.original}")
            say(f"      now: {m.mutated}")
    if args.report:
        Path(args.report).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
