"""The benchmark package: its report's structure (a `--quick` run), its FLOP accounting, the
precision choice, the README writer and its one-line errors. Speed itself is never asserted."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolkit import hardware
from toolkit.bench import peaks, report, targets
from toolkit.bench.train_speed import Size
from toolkit.data.tokenizer import load_tokenizer
from toolkit.errors import UserError
from toolkit.families import REGISTRY
from toolkit.scaling.flops import forward_flops

ROOT = Path(__file__).resolve().parents[1]
VOCAB = load_tokenizer().get_vocab_size()   # the embedded tokenizer the sampling models use


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    proc = subprocess.run([sys.executable, "-m", "toolkit.bench", "--quick", "--device", "cpu", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text()), proc.stdout


def test_quick_report_has_every_part(quick_report):
    r, printed = quick_report
    m = r["machine"]
    assert m["cpu"] and isinstance(m["cpu_flags"], list) and m["torch"] == torch.__version__
    assert r["auto_precision"] == hardware.resolve_precision("auto", "cpu")
    for precision in ("fp32", "bf16"):
        assert r["peaks"][precision]["square"]["flops_per_s"] > 0
        assert r["peaks"][precision]["quick"]["flops_per_s"] > 0
    families = set(REGISTRY)
    assert {t["family"] for t in r["train"]} == families
    assert {t["precision"] for t in r["train"]} == {"fp32", "bf16"}
    for t in r["train"]:
        assert t["tokens_per_s"] > 0 and t["model_flops_per_s"] > 0
        # the ratio is the model FLOP rate over the peak of the row's own precision
        assert t["of_model_gemm_peak"] == pytest.approx(
            t["model_flops_per_s"] / r["peaks"][t["precision"]]["quick"]["flops_per_s"])
        assert t["of_model_gemm_peak_with_attention"] > t["of_model_gemm_peak"]   # attention adds work
    assert {f["precision"] for f in r["forward"]} == {"fp32", "bf16"}
    assert {s["family"] for s in r["sampling"]} == families
    for s in r["sampling"]:
        assert s["cache_speedup"] == pytest.approx(s["cached_tokens_per_s"] / s["plain_tokens_per_s"])
        assert s["nfe_plain"] >= 1
        for label in ("cached", "plain"):   # every generated token costs at least one forwarded position
            assert s[f"{label}_positions_per_s"] >= 0.999 * s[f"{label}_tokens_per_s"]
            assert s[f"{label}_of_square_gemm_peak"] == pytest.approx(s[f"{label}_positions_per_s"] * forward_flops(
                2, 64, VOCAB, 1) / r["peaks"]["fp32"]["square"]["flops_per_s"])
    assert "no --reference" in r["reference"]["skipped"]
    assert {(c["precision"], c["variant"]) for c in r["head"]} == {(p, v) for p in ("fp32", "bf16")
                                                                     for v in ("plain", "fused", "fused_sum")}
    for c in r["head"]:
        assert c["seconds"] > 0 and c["speedup_vs_plain"] > 0
    assert isinstance(r["targets"], list)
    for title in ("Matrix-product peaks", "Training", "Forward only", "Sampling", "Reference backbone", "Output head"):
        assert title in printed


def test_gemm_shapes_add_up_to_the_paper_forward_flops():
    size = Size("x", 3, 96, 4, 40, 5, 300)
    shapes = peaks.gemm_shapes(size.model_config(), size.tokens)
    counted = sum((1 if name == "head" else size.n_layers) * 2 * a * b * c for name, (a, b, c) in shapes.items())
    assert counted == pytest.approx(forward_flops(3, 96, 300, 40) * size.batch)


def test_model_gemm_peak_is_the_flop_weighted_rate(monkeypatch):
    rates = {(8, 16, 48): 1.0, (8, 16, 16): 2.0, (8, 16, 64): 4.0, (8, 64, 16): 4.0, (8, 16, 10): 0.5}
    monkeypatch.setattr(peaks, "gemm_rate", lambda shape, *a, **k: rates[shape])
    m = Size("x", 2, 16, 2, 8, 1, 10).model_config()
    got = peaks.model_gemm_peak(m, 8, "fp32", torch.device("cpu"), 1.0)["flops_per_s"]
    flops = {s: 2 * s[0] * s[1] * s[2] * (1 if s[2] == 10 else 2) for s in rates}
    assert got == pytest.approx(sum(flops.values()) / sum(f / rates[s] for s, f in flops.items()))


@pytest.mark.parametrize("flags,expected", [({"avx2", "avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16"),
                                            ({"asimd", "bf16"}, "bf16"), ({"avx2", "fma"}, "fp32")])
def test_auto_precision_follows_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.delenv(hardware.NATIVE_BF16_ENV, raising=False)   # the CPU decides, not the override
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("Some CPU", frozenset(flags)))
    assert hardware.resolve_precision("auto", "cpu") == expected
    assert hardware.resolve_precision("fp32", "cpu") == "fp32"


def test_without_flags_auto_measures_once_and_remembers(monkeypatch, tmp_path):
    monkeypatch.delenv(hardware.NATIVE_BF16_ENV, raising=False)
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("Flagless CPU", None))
    monkeypatch.setenv(hardware.CACHE_ENV, str(tmp_path))
    calls = []

    def fake_seconds(dtype, **kw):
        calls.append(dtype)
        return 1.0 if dtype == torch.bfloat16 else 2.0   # bf16 twice as fast

    monkeypatch.setattr(hardware, "_gemm_seconds", fake_seconds)
    assert hardware.resolve_precision("auto", "cpu") == "bf16"
    assert len(calls) == 2
    assert hardware.resolve_precision("auto", "cpu") == "bf16"
    assert len(calls) == 2   # remembered, not measured again
    assert json.loads((tmp_path / "precision.json").read_text()) == {f"Flagless CPU | torch {torch.__version__}": True}


@pytest.mark.parametrize("bf16_faster", [True, False])
def test_trainer_times_its_own_step_on_a_bf16_cpu(monkeypatch, tmp_path, bf16_faster):
    """On a CPU without bf16 `auto` is fp32 untimed; on one with it, the trainer's probe (a real forward and
    backward of its shapes) is run in both precisions and the faster one is used and logged."""
    from toolkit.bench.train_speed import QUICK_SIZE, trainer_for
    from toolkit.trainer import loop
    monkeypatch.delenv(hardware.NATIVE_BF16_ENV, raising=False)
    monkeypatch.setenv(hardware.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("No-bf16 CPU", frozenset({"avx2"})))
    plain = trainer_for("mdlm", QUICK_SIZE, "auto", torch.device("cpu"), False, str(tmp_path / "a"))
    assert plain.precision == "fp32" and "no native bf16" in plain.precision_choice.reason
    timings = iter([2.0, 1.0] if bf16_faster else [1.0, 1.05])   # fp32 first, then bf16
    ran = []

    def fake_best_of(run, reps=3):
        run()                 # the probe really runs (shapes, backward) ...
        ran.append(True)
        return next(timings)  # ... but the clock is ours
    monkeypatch.setattr(loop, "best_of", fake_best_of)
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("bf16 CPU", frozenset({"avx512_bf16"})))
    trainer = trainer_for("mdlm", QUICK_SIZE, "auto", torch.device("cpu"), False, str(tmp_path / "b"))
    assert len(ran) == 2 and trainer.precision == ("bf16" if bf16_faster else "fp32")   # 1.05x is within the margin
    assert "train step timed" in trainer.precision_choice.reason
    assert all(p.grad is None for p in trainer.net.parameters())   # the probe leaves no gradient behind
    assert trainer.describe()["precision_reason"] == trainer.precision_choice.reason


def test_readme_section_is_replaced_between_markers_only(quick_report, tmp_path):
    r, _ = quick_report
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\nbefore\n{report.START}\nold table\n{report.END}\nafter\n")
    report.write_readme_section(readme, [r])
    text = readme.read_text()
    assert text.startswith("# Title\nbefore\n") and text.endswith(f"{report.END}\nafter\n")
    assert "old table" not in text and r["machine"]["cpu"] in text and r["date"] in text
    report.write_readme_section(readme, [r])
    assert readme.read_text() == text   # regenerating from the same report changes nothing
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    with pytest.raises(UserError, match="markers"):
        report.write_readme_section(bare, [r])


def test_targets_compare_value_and_goal():
    base = {"device": "cpu", "auto_precision": "bf16",
            "reference": {"forward": [{"setting": "as shipped", "size": "fwd-d256", "toolkit_auto_over_reference": 2.3}]},
            "train": [{"family": "mdlm", "size": "d512", "precision": "bf16", "of_model_gemm_peak": 0.44},
                      {"family": "mdlm", "size": "d512", "precision": "fp32", "of_model_gemm_peak": 0.9}]}
    got = targets.evaluate_targets(base)
    assert [(t["value"], t["met"]) for t in got] == [(2.3, True), (0.44, False)]   # the fp32 row is not the auto one
    gpu = {"device": "cuda:0", "train": [{"family": "mdlm", "size": "170M", "tokens_per_s": 300.0, "of_square_gemm_peak": 0.41},
                                         {"family": "ar", "size": "170M", "tokens_per_s": 400.0, "of_square_gemm_peak": 0.3}],
           "reference": {"train": {"size": "170M", "tokens_per_s": 250.0}}}
    assert [t["met"] for t in targets.evaluate_targets(gpu)] == [True, False, False]   # 300/250 = 1.2 < 1.5


@pytest.mark.parametrize("args,message", [
    (["--readme", "README.md"], "--from"),
    (["--reference", "/nonexistent/dir"], "models/dit.py"),
    (["--parts", "peaks,warp"], "unknown part warp"),
    (["--families", "gpt"], "unknown family gpt"),
    (["--device", "tpu"], "device"),
    (["--threads", "-1"], "--threads"),
    (["--variant", "warp_drive=1"], "unknown config key"),
    (["--variant", "fused"], "KEY=VALUE"),
])
def test_bad_arguments_are_one_line_errors(args, message):
    proc = subprocess.run([sys.executable, "-m", "toolkit.bench", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and message in proc.stderr and "Traceback" not in proc.stderr


def test_reference_loader_names_what_is_missing(tmp_path, monkeypatch):
    from toolkit.bench import reference
    with pytest.raises(UserError, match="no models/dit.py"):
        reference.load_dit(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "dit.py").write_text("raise ImportError('flash_attn is missing')\n")
    monkeypatch.setattr(reference, "NEEDS", ("json", "no_such_module_xyz"))
    with pytest.raises(UserError, match="needs no_such_module_xyz: pip install no_such_module_xyz"):
        reference.load_dit(tmp_path)
    monkeypatch.setattr(reference, "NEEDS", ("json",))   # its imports present: the file's own error shows
    with pytest.raises(UserError, match="flash_attn is missing"):
        reference.load_dit(tmp_path)


def test_compile_auto_is_off_on_a_cpu_and_explicit_values_pass():
    assert hardware.resolve_compile("auto", "cpu") is False
    assert hardware.resolve_compile("true", "cpu") is True and hardware.resolve_compile("false", "cpu") is False
    assert hardware.resolve_compile(False, "cpu") is False   # configs saved when compile was a bool
    from toolkit.resolve import resolve
    with pytest.raises(UserError, match="compile must be one of auto, true, false"):
        resolve(["compile=maybe"])


def test_configs_saved_with_a_bool_compile_still_load():
    """`compile` was a bool before `auto`: the embedded models' config.json files hold one."""
    from toolkit.resolve import config_from_dict, config_type_problem
    from toolkit.resolve import resolve
    saved = resolve([]).to_dict()
    saved["train"]["compile"] = False
    assert config_type_problem(saved) is None
    assert config_from_dict(saved).train.compile == "false"
    saved["train"]["compile"] = 3
    assert "train.compile must be str" in config_type_problem(saved)


def test_readme_tables_are_those_the_committed_reports_give(tmp_path):
    """docs/performance.md's benchmark tables are regenerated from the JSON reports its command names."""
    import re
    readme = (ROOT / "docs" / "performance.md").read_text()
    commands = re.finditer(r"python -m toolkit\.bench --readme docs/performance\.md((?:\s*\\?\s*--from \S+)+)", readme)
    command = next((c for c in commands if "benchmarks/results/" in c.group(1)), None)   # not the usage example
    assert command, "docs/performance.md names the command that writes its tables"
    sources = re.findall(r"--from (\S+)", command.group(1))
    assert "benchmarks/results/bench_cpu.json" in sources
    copy = tmp_path / "README.md"
    copy.write_text(readme)
    reports = [json.loads((ROOT / s).read_text()) for s in sources]
    report.write_readme_section(copy, reports)
    assert copy.read_text() == readme
