"""The bad-input matrix (docs/reliability.md, "Bad input"): each row is one bad input given to a command line, and
each must end in a one-line `error: ...` naming the problem, exit code 2, no traceback, nothing overwritten."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from toolkit.checkpoints.rundir import EMBEDDED_DIR
from toolkit.sample import main as sample_main
from training.train import main as train_main

SAMPLE = ["--steps", "2", "--length", "8", "--num-samples", "1"]
TRAIN = ["model=cpu-4xs", "seq_len=32", "batch_size=4", "max_steps=1", "eval_batches=1", "progress=false", "threads=1"]


def damaged(tmp: Path, file: str | None, how) -> str:
    """A copy of the embedded mdlm checkpoint with one file removed (how=None) or rewritten."""
    d = tmp / "ckpt"
    shutil.copytree(EMBEDDED_DIR / "mdlm", d)
    if file is not None:
        f = d / file
        if how is None:
            f.unlink()
        else:
            f.write_bytes(how(f.read_bytes()))
    return str(d)


def edit_config(tmp: Path, change) -> str:
    d = damaged(tmp, None, None)
    f = Path(d) / "config.json"
    meta = json.loads(f.read_text())
    change(meta)
    f.write_text(json.dumps(meta))
    return d


EMPTY = lambda b: b""                                        # noqa: E731
TRUNCATED = lambda b: b[: len(b) // 2]                      # noqa: E731
CORRUPT = lambda b: bytes((x * 7 + 3) % 256 for x in b[:4096])   # noqa: E731

# (row id, the failing input, words the error must contain)
CHECKPOINT_ROWS = [
    ("checkpoint missing", lambda t: "/no/such/checkpoint", "checkpoint not found"),
    ("checkpoint dir empty", lambda t: (t / "e").mkdir() or str(t / "e"), "not a checkpoint directory"),
    ("config.json missing", lambda t: damaged(t, "config.json", None), "no config.json"),
    ("config.json empty", lambda t: damaged(t, "config.json", EMPTY), "cannot read"),
    ("config.json truncated", lambda t: damaged(t, "config.json", TRUNCATED), "cannot read"),
    ("config.json corrupt (not UTF-8)", lambda t: damaged(t, "config.json", CORRUPT), "cannot read"),
    ("config.json not a mapping", lambda t: damaged(t, "config.json", lambda b: b"[1, 2]"), "not a toolkit checkpoint"),
    ("config.json wrong type", lambda t: edit_config(t, lambda m: m["model"].update(d_model="wide")), "model.d_model must be int"),
    ("config.json section null", lambda t: edit_config(t, lambda m: m.update(model=None)), "model must be a mapping"),
    ("config.json unknown family", lambda t: edit_config(t, lambda m: m.update(family="gpt")), "unknown family"),
    ("config.json shape differs from weights", lambda t: edit_config(t, lambda m: m["model"].update(d_model=64, n_heads=2)),
     "weights do not match the config"),
    ("checkpoint vocabulary != tokenizer", lambda t: edit_config(t, lambda m: m["model"].update(vocab_size=100)),
     "model vocabulary 100"),
    ("model.safetensors missing", lambda t: damaged(t, "model.safetensors", None), "cannot read weights"),
    ("model.safetensors empty", lambda t: damaged(t, "model.safetensors", EMPTY), "cannot read weights"),
    ("model.safetensors truncated", lambda t: damaged(t, "model.safetensors", TRUNCATED), "cannot read weights"),
    ("model.safetensors corrupt", lambda t: damaged(t, "model.safetensors", CORRUPT), "cannot read weights"),
    ("tokenizer.json missing", lambda t: damaged(t, "tokenizer.json", None), "tokenizer file not found"),
    ("tokenizer.json truncated", lambda t: damaged(t, "tokenizer.json", TRUNCATED), "cannot read tokenizer"),
]


@pytest.mark.parametrize("row,make,needle", CHECKPOINT_ROWS, ids=[r[0] for r in CHECKPOINT_ROWS])
def test_bad_checkpoint(tmp_path, capsys, row, make, needle):
    path = make(tmp_path)
    before = snapshot(tmp_path)
    assert one_line_error(capsys, sample_main, [path, *SAMPLE], needle)
    assert snapshot(tmp_path) == before


SAMPLING_ROWS = [
    ("steps 0", ["--steps", "0"], "steps must be > 0"),
    ("steps negative", ["--steps", "-3"], "steps must be > 0"),
    ("steps absurdly large", ["--steps", "1000000000000"], "steps must be at most"),
    ("length beyond the context", ["--length", "100000"], "length must be in 1..128"),
    ("length 0", ["--length", "0"], "length must be in"),
    ("prompt of 1 MB", ["--prompt", "word " * 200_000], "the prompt is 200"),
    ("prompt not UTF-8", ["--prompt", b"\xff\xfeab".decode("utf-8", "surrogateescape")], "not valid UTF-8"),
    ("infill beyond the length", ["--infill", "100=hello"], "fixed positions outside"),
    ("unknown sampling option", ["--option", "foo=1"], "no sampling option 'foo'"),
    ("temperature NaN", ["--temperature", "nan"], "temperature must be >= 0"),
    ("steps not a number", ["--steps", "many"], "invalid int value"),
    ("seed negative", ["--seed", "-1"], "seed must be a whole number between 0 and 2**63 - 1 (got -1)"),
    ("seed not a number", ["--seed", "1.5"], "seed must be a whole number between 0 and 2**63 - 1 (got 1.5)"),
]


@pytest.mark.parametrize("row,args,needle", SAMPLING_ROWS, ids=[r[0] for r in SAMPLING_ROWS])
def test_bad_sampling_request(capsys, row, args, needle):
    base = [a for a in SAMPLE if True]
    if args[0] in base:   # the row's flag replaces the default one
        i = base.index(args[0])
        del base[i: i + 2]
    assert one_line_error(capsys, sample_main, ["mdlm", *base, *args], needle)


SEED_COMMANDS = [["toolkit.sample", "mdlm", "--steps", "4", "--length", "16", "--seed"],
                 ["toolkit", "evaluate", "mdlm", "--metrics", "nelbo", "--sequences", "1", "--seed"],
                 ["training.train", *TRAIN, "out=OUT", "seed="]]


@pytest.mark.parametrize("command", SEED_COMMANDS, ids=[c[0] + (f" {c[1]}" if c[0] == "toolkit" else "") for c in SEED_COMMANDS])
def test_every_command_checks_the_seed_the_same_way(tmp_path, command):
    """A seed beyond torch's signed 64 bits (the issue's `--seed 99999999999999999999`): the same one
    line from every command that takes a seed, exit 2, no traceback, nothing written."""
    import os
    import subprocess
    import sys
    seed = "99999999999999999999"
    args = [a.replace("OUT", str(tmp_path / "run")) for a in command]
    args = args[:-1] + [args[-1] + seed] if args[-1].endswith("=") else args + [seed]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", *args], cwd=Path(__file__).resolve().parent.parent, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"error: seed must be a whole number between 0 and 2**63 - 1 (got {seed})"]
    assert not (tmp_path / "run").exists()


def corpus(tmp, content: bytes) -> str:
    f = tmp / "corpus.txt"
    f.write_bytes(content)
    return f"data={f}"


TRAIN_ROWS = [
    ("unknown family", lambda t: ["family=gpt"], "unknown family"),
    ("unknown preset", lambda t: ["model=huge"], "unknown model preset"),
    ("unknown override key", lambda t: ["learning_rate=1"], "unknown config key"),
    ("wrong type (int)", lambda t: ["batch_size=abc"], "expected int"),
    ("wrong type (bool)", lambda t: ["resume=maybe"], "expected true/false"),
    ("wrong value (inf)", lambda t: ["lr=inf"], "lr must be a finite number"),
    ("max_steps 0", lambda t: ["max_steps=0"], "max_steps must be > 0"),
    ("max_steps negative", lambda t: ["max_steps=-5"], "max_steps must be > 0"),
    ("max_steps absurdly large", lambda t: ["max_steps=1e12"], "max_steps must be at most"),
    ("corpus missing", lambda t: ["data=/no/such/corpus.txt"], "not found"),
    ("corpus empty", lambda t: [corpus(t, b"")], "empty"),
    ("corpus not UTF-8", lambda t: [corpus(t, b"\xff\xfe\x00\x9c" * 100)], "cannot read data file"),
    ("corpus too small for seq_len", lambda t: [corpus(t, b"hello world")], "too few for two blocks"),
    ("tokenizer file missing", lambda t: ["tokenizer=/no/tok.json"], "not found"),
    ("recipe file missing", lambda t: ["config=/no/recipe.yaml"], "config file not found"),
    ("out is a file", lambda t: (t / "f").write_text("x") and [f"out={t / 'f'}"], "is a file"),
]


@pytest.mark.parametrize("row,make,needle", TRAIN_ROWS, ids=[r[0] for r in TRAIN_ROWS])
def test_bad_training_input(tmp_path, capsys, row, make, needle):
    args = make(tmp_path)
    out = [] if any(a.startswith("out=") for a in args) else [f"out={tmp_path / 'run'}"]
    before = snapshot(tmp_path)
    assert one_line_error(capsys, train_main, [*TRAIN, *args, *out], needle)
    assert snapshot(tmp_path) == before, "a refused run must not write anything"


def test_corpus_of_one_megabyte_trains(tmp_path):
    """1 MB of text is not bad input: it tokenizes and trains (the bound is the data, not its size)."""
    from toolkit.data.corpus import austen_documents
    text = "\n\n".join(austen_documents())[: 1 << 20]
    arg = corpus(tmp_path, text.encode())
    assert train_main([*TRAIN, arg, f"out={tmp_path / 'run'}"])["step"] == 1


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("existing") / "run"
    train_main([*TRAIN, "family=mdlm", f"out={out}"])
    return out


@pytest.mark.parametrize("row,args,needle", [
    ("out holds a run, no resume", ["family=mdlm"], "already holds a run"),
    ("out holds a run of another family", ["family=ar", "resume=true"], "holds a different run (family: 'mdlm' -> 'ar'"),
    ("out holds a run on other data", ["family=mdlm", "seq_len=16", "resume=true"], "holds a different run (data.seq_len"),
    ("resume and overwrite together", ["family=mdlm", "resume=true", "overwrite=true"], "contradict"),
], ids=lambda x: x if isinstance(x, str) and " " in x else None)
def test_out_holding_another_run_is_refused(existing_run, capsys, row, args, needle):
    before = snapshot(existing_run)
    assert one_line_error(capsys, train_main, [*TRAIN, *args, f"out={existing_run}"], needle)
    assert snapshot(existing_run) == before


def test_overwrite_flag_replaces_a_run(tmp_path):
    out = tmp_path / "run"
    train_main([*TRAIN, "family=mdlm", f"out={out}"])
    (out / "notes.txt").write_text("mine")          # not a run file: left alone
    train_main([*TRAIN, "family=ar", "overwrite=true", f"out={out}"])
    assert json.loads((out / "checkpoint" / "config.json").read_text())["family"] == "ar"
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [0, 1]
    assert (out / "notes.txt").read_text() == "mine"


# -- helpers ----------------------------------------------------------------------------------------------
def one_line_error(capsys, main, argv, needle) -> bool:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert needle in lines[0], (needle, lines[0])
    return True


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
