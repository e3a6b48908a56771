"""The run directory's one owner (toolkit.checkpoints.rundir) and the one metrics table."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from toolkit.checkpoints import rundir
from toolkit.errors import UserError
from toolkit.evaluation.generation import unigram_entropy
from toolkit.evaluation.metrics import METRICS, Samples, format_scores, rounded, score_samples


def write_lines(run, lines):
    run.mkdir(parents=True, exist_ok=True)
    (run / rundir.METRICS).write_text("".join(lines))


def test_metrics_reader_stops_at_a_line_cut_short(tmp_path):
    run = tmp_path / "run"
    write_lines(run, [json.dumps({"step": 0}) + "\n", json.dumps({"step": 10}) + "\n", '{"step": 20, "train_lo'])
    assert [r["step"] for r in rundir.read_metrics(run)] == [0, 10]
    assert rundir.read_metrics(tmp_path / "missing") == []


def test_truncate_keeps_records_up_to_the_checkpoint_and_drops_a_cut_line(tmp_path):
    run = tmp_path / "run"
    write_lines(run, [json.dumps({"step": s}) + "\n" for s in (0, 10, 20, 30)] + ['{"step": 4'])
    rundir.truncate_metrics(run, 20)
    assert [r["step"] for r in rundir.read_metrics(run)] == [0, 10, 20]
    assert (run / rundir.METRICS).read_text().endswith("\n")
    rundir.append_metrics(run, {"step": 30})
    assert [r["step"] for r in rundir.read_metrics(run)] == [0, 10, 20, 30]


def test_save_checkpoint_takes_a_state_dict(tmp_path):
    import torch

    from toolkit.resolve import resolve
    cfg = resolve(["family=mdlm"])
    state = {"w": torch.arange(6.0).view(2, 3)}
    ckpt = rundir.save_checkpoint(rundir.checkpoint_dir(tmp_path), cfg, state, None, train_state={"step": torch.tensor(3)})
    assert torch.equal(rundir.load_weights(ckpt)["w"], state["w"])
    assert int(rundir.load_train_state(ckpt)["step"]) == 3
    assert rundir.read_config(ckpt)[0].family == "mdlm"


class Judge:
    """An evaluator whose NLL is one nat per character: Gen PPL must be e."""
    name = "judge"

    def nll(self, text):
        return float(len(text)), len(text)


def test_score_samples_is_the_metric_definitions():
    s = Samples(texts=["abc", "de"], tokens=[[1, 1, 2, 3], [4, 4, 4, 4]], nfe=7, seconds=2.0, generated=8)
    out = score_samples(s, tuple(METRICS), Judge())
    assert out["gen_ppl"] == pytest.approx(math.e) and out["evaluator"] == "judge" and out["evaluator_tokens"] == 5
    assert out["entropy"] == pytest.approx((unigram_entropy([1, 1, 2, 3]) + 0.0) / 2)
    assert out["tokens_per_s"] == 4.0 and out["nfe"] == 7
    assert list(out)[:1] == ["gen_ppl"]
    assert format_scores(out) == [f"gen_ppl {math.e:.2f}", f"entropy {out['entropy']:.3f}", "4.0 tok/s", "nfe 7"]
    assert rounded(out)["gen_ppl"] == round(math.e, 2)
    with pytest.raises(UserError):
        score_samples(s, ("gen_ppl",))            # no evaluator
    with pytest.raises(UserError):
        score_samples(s, ("bogus",))


def test_python_m_toolkit_lists_and_dispatches_the_commands():
    run = lambda *a: subprocess.run([sys.executable, "-m", "toolkit", *a], capture_output=True, text=True)  # noqa: E731
    listing = run()
    assert listing.returncode == 0 and "sample" in listing.stdout and "scaling" in listing.stdout
    assert run("bogus").returncode == 2
    bad = run("scaling", "flops")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")


def test_a_run_made_before_an_option_existed_resumes_only_with_that_option_at_its_default(tmp_path):
    from toolkit.resolve import resolve
    cfg = resolve(["family=duo", f"out={tmp_path}"])
    new, defaults = cfg.to_dict(), cfg.defaults_dict()
    old = json.loads(json.dumps(new))
    del old["options"]["curriculum"]                  # the record of a run from an older version
    (tmp_path / rundir.RUN_CONFIG).write_text(json.dumps(old))
    (tmp_path / rundir.METRICS).write_text("")
    rundir.check_out(tmp_path, new, resume=True, overwrite=False, defaults=defaults)   # default: resumes
    new["options"]["curriculum"] = not defaults["options"]["curriculum"]
    with pytest.raises(UserError, match="options.curriculum"):
        rundir.check_out(tmp_path, new, resume=True, overwrite=False, defaults=defaults)
    old["options"]["curriculum"] = defaults["options"]["curriculum"]   # recorded, and changed: refused
    (tmp_path / rundir.RUN_CONFIG).write_text(json.dumps(old))
    with pytest.raises(UserError, match="options.curriculum"):
        rundir.check_out(tmp_path, new, resume=True, overwrite=False, defaults=defaults)


def test_a_run_resumes_from_another_checkout_when_its_files_are_the_same_bytes(tmp_path):
    """A run's record names the embedded tokenizer by its absolute path: the same file seen from
    another checkout (another path, the same bytes) is the same run; a different file is not."""
    from toolkit.resolve import resolve
    out, here, there = tmp_path / "run", tmp_path / "a" / "tok.json", tmp_path / "b" / "tok.json"
    for p in (here, there):
        p.parent.mkdir()
        p.write_text('{"vocab": 1}')
    cfg = resolve(["family=mdlm", f"out={out}"])
    old, new = cfg.to_dict(), cfg.to_dict()
    old["data"]["tokenizer"], new["data"]["tokenizer"] = str(here), str(there)
    out.mkdir()
    (out / rundir.RUN_CONFIG).write_text(json.dumps(old))
    (out / rundir.METRICS).write_text("")
    rundir.check_out(out, new, resume=True, overwrite=False)
    there.write_text('{"vocab": 2}')                   # same size, other bytes: another tokenizer
    with pytest.raises(UserError, match="data.tokenizer"):
        rundir.check_out(out, new, resume=True, overwrite=False)
    there.unlink()                                     # a path that names no file cannot be compared
    with pytest.raises(UserError, match="data.tokenizer"):
        rundir.check_out(out, new, resume=True, overwrite=False)
