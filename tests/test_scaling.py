"""Scaling-law machinery: FLOPs and parameter counts against the reference, fits on synthetic
laws with known exponents, an interrupted sweep that restarts without redoing work, bad input."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from toolkit.presets import CPU_GRID, PAPER_GRID
from toolkit.scaling.flops import forward_flops, reference_forward_flops, steps_for_budget, train_flops_per_sequence
from toolkit.scaling.grid import param_counts

# The reference's per-model files: forward FLOPs per 2048-token sequence (V = 32,001) and (non-embedding, total) params.
REFERENCE = {"6M": (5.3026e10, 14_258_144, 22_450_400), "34M": (1.7057e11, 44_963_288, 61_347_800),
             "113M": (4.4941e11, 116_989_232, 141_566_000), "170M": (6.23779e11, 163_055_232, 187_632_000),
             "472M": (1.6187e12, 413_262_720, 454_224_000), "1233M": (4.0256e12, 1_016_354_208, 1_073_700_000),
             "2121M": (6.8054e12, 1_708_865_824, 1_778_500_000)}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_forward_flops_match_reference(name):
    layers, d, heads = PAPER_GRID[name]
    ref = REFERENCE[name][0]
    assert forward_flops(layers, d, 32001, 2048) == pytest.approx(ref, rel=5e-3)
    assert reference_forward_flops(layers, d, heads, 32001, 2048) == pytest.approx(ref, rel=1e-4)
    assert train_flops_per_sequence(layers, d, 32001, 2048) == 3 * forward_flops(layers, d, 32001, 2048)
    with_attention = forward_flops(layers, d, 32001, 2048, attention=True)
    assert with_attention - forward_flops(layers, d, 32001, 2048) == 4 * 2048 ** 2 * d * layers


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_param_counts_match_reference(name):
    layers, d, _ = PAPER_GRID[name]
    counts = param_counts(layers, d, 32001)
    assert counts["non_embedding"] == pytest.approx(REFERENCE[name][1], rel=1e-4)
    assert counts["total"] == pytest.approx(REFERENCE[name][2], rel=1e-4)
    assert counts["total"] - counts["non_embedding"] == 32001 * d


@pytest.mark.parametrize("name", ["cpu-xxs", "cpu-m", "6M"])
def test_param_counts_equal_the_backbone(name):
    from toolkit.resolve import resolve
    from toolkit.model.backbone import Backbone
    cfg = resolve([f"model={name}"])
    cfg.model.vocab_size = 4098
    net = Backbone(cfg.model)
    assert sum(p.numel() for p in net.parameters()) == param_counts(cfg.model.n_layers, cfg.model.d_model, 4098)["total"]


def test_cpu_grid_spans_30x():
    blocks = [param_counts(nl, d, 4098)["blocks"] for nl, d, _ in CPU_GRID.values()]
    assert max(blocks) / min(blocks) >= 30


def test_steps_for_budget():
    per_step = train_flops_per_sequence(2, 48, 4098, 32) * 4
    assert steps_for_budget(7 * per_step, 2, 48, 4098, 32, 4) == 7
    assert steps_for_budget(7 * per_step - 1, 2, 48, 4098, 32, 4) == 6
    assert steps_for_budget(0.5 * per_step, 2, 48, 4098, 32, 4) == 0


def test_flops_cli_json(capsys):
    from toolkit.cli.scaling import main
    out = main(["flops", "170M", "--seq-len", "2048", "--vocab", "32001", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["forward_per_sequence"]["paper"] == out["forward_per_sequence"]["paper"]
    assert printed["forward_per_sequence"]["paper"] == pytest.approx(6.23779e11, rel=5e-3)


# -- fits ------------------------------------------------------------------------------------------
def synthetic_isoflop(seed, a_n=0.6, a_l=-0.08, noise=0.01):
    """Valleys L = L*(C) + w (ln N - ln N*(C))^2 + noise around known power laws N*(C), L*(C)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in (1e12, 3e12, 1e13, 3e13, 1e14):
        n_star, l_star = 0.02 * c ** a_n, 50 * c ** a_l
        for u in np.linspace(-1.2, 1.2, 6):
            rows.append((n_star * np.exp(u), c, l_star + 0.08 * u * u + rng.normal(0, noise)))
    return map(np.array, zip(*rows))


def test_approach2_recovers_exponents_within_ci():
    from toolkit.scaling.fit import fit_isoflop
    covered = {"a_N": 0, "a_D": 0, "a_L": 0}
    for seed in range(10):
        n, c, loss = synthetic_isoflop(seed)
        fit = fit_isoflop(n, c, loss, n_boot=200, seed=seed)
        for k, true in (("a_N", 0.6), ("a_D", 0.4), ("a_L", -0.08)):
            lo, hi = fit.intervals[k]
            assert hi - lo < 0.1                      # informative, not vacuous
            assert abs(fit.exponents[k] - true) < 0.05
            covered[k] += lo <= true <= hi
    assert all(v >= 7 for v in covered.values()), covered   # nominal 95%; a few misses allowed
    # without noise the vertex is exact
    n, c, loss = synthetic_isoflop(0, noise=0.0)
    fit = fit_isoflop(n, c, loss, n_boot=0)
    assert fit.exponents["a_N"] == pytest.approx(0.6, abs=1e-6)
    assert fit.predict("N", 1e13) == pytest.approx(0.02 * 1e13 ** 0.6, rel=1e-5)


def test_approach3_recovers_chinchilla_law_within_ci():
    from toolkit.scaling.fit import fit_parametric
    E, A, B, alpha, beta = 1.7, 400.0, 410.0, 0.34, 0.28
    rng = np.random.default_rng(1)
    n, d, y = [], [], []
    for c in (1e12, 3e12, 1e13, 3e13, 1e14):
        n_star = (alpha * A / (beta * B)) ** (1 / (alpha + beta)) * (c / 6) ** (beta / (alpha + beta))
        for u in np.linspace(-1.5, 1.5, 7):
            nn = n_star * np.exp(u)
            n.append(nn), d.append(c / (6 * nn))
            y.append((E + A / nn ** alpha + B / d[-1] ** beta) * np.exp(rng.normal(0, 0.005)))
    fit = fit_parametric(n, d, y, n_boot=60, seed=0)
    for k, true in (("alpha", alpha), ("beta", beta), ("E", E), ("a_N", beta / (alpha + beta))):
        lo, hi = fit.intervals[k]
        assert lo <= true <= hi, (k, true, lo, hi)
    assert fit.intervals["alpha"][1] - fit.intervals["alpha"][0] < 0.15
    assert fit.intervals["a_N"][1] - fit.intervals["a_N"][0] < 0.1
    assert fit.identified
    # the same design when the loss does not depend on N: alpha is not identified, so a_N means nothing
    flat = fit_parametric(n, d, [(E + B / dd ** beta) * np.exp(rng.normal(0, 0.005)) for dd in d], n_boot=60)
    assert not flat.identified


def test_valley_without_a_usable_minimum_is_nan():
    from toolkit.scaling.fit import fit_valley
    n = np.array([1e5, 2e5, 4e5, 8e5])
    concave = fit_valley(n, [5.0, 5.2, 5.3, 5.2], 1e12)
    assert np.isnan(concave.n_star) and not concave.in_range
    far = fit_valley(n, 5 + 1e-4 * (np.log(n) - np.log(1e12)) ** 2, 1e12)   # vertex ~1e6 x beyond the sizes
    assert np.isnan(far.n_star)
    inside = fit_valley(n, 5 + 0.1 * (np.log(n) - np.log(3e5)) ** 2, 1e12)
    assert inside.n_star == pytest.approx(3e5, rel=1e-6) and inside.in_range
    assert inside.d_star == pytest.approx(1e12 / (6 * 3e5))


def test_plan_filters_and_notes():
    from toolkit.scaling.plan import make_plan, parse_variant
    per_step = train_flops_per_sequence(2, 48, 4098, 32) * 4
    plan = make_plan([parse_variant("mdlm"), parse_variant("mdlm:loss=low_var")], [100 * per_step],
                     ["cpu-xxs", "cpu-xs", "cpu-s"], batch_size=4, seq_len=32, vocab_size=4098,
                     train_tokens=100 * 4 * 32 // 2, max_epochs=1.5)
    assert {p.size for p in plan.points} == {"cpu-xs", "cpu-s"}          # cpu-xxs would see 2 epochs
    assert any("2.0 epochs" in note for note in plan.skipped)
    assert any("a parabola fit needs 3" in note for note in plan.skipped)
    names = {p.name.split("_C")[0] for p in plan.points}
    assert names == {"mdlm/cpu-xs", "mdlm/cpu-s", "mdlm_loss-low_var/cpu-xs", "mdlm_loss-low_var/cpu-s"}


def test_grid_cli(capsys):
    from toolkit.cli.scaling import main
    rows = main(["grid", "--json", "--vocab", "4098"])
    assert len(rows) == len(CPU_GRID) + len(PAPER_GRID)
    assert json.loads(capsys.readouterr().out)[0]["size"] == "cpu-4xs"


def test_fit_cli_and_analysis(tmp_path, capsys):
    from toolkit.scaling import analysis
    from toolkit.cli.scaling import main
    n, c, loss = synthetic_isoflop(3)
    rows = [{"variant": v, "size": f"s{i % 6}", "params": int(nn), "budget": cc, "tokens": int(cc / (6 * nn)),
             "val_nelbo": ll + shift, "status": "finished"}
            for v, shift in (("good", 0.0), ("worse", 0.05)) for i, (nn, cc, ll) in enumerate(zip(n, c, loss))]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    main(["fit", str(tmp_path / "results.csv"), "--bootstrap", "50", "--plots"])
    assert "a_N" in capsys.readouterr().out
    assert {"minima.csv", "exponents.csv", "isoflop.png", "optima.png"} <= {p.name for p in tmp_path.iterdir()}
    assert "good < worse" in (tmp_path / "summary.md").read_text()   # the lower curve ranks first


# -- sweeps ------------------------------------------------------------------------------------------
TINY = ["family=mdlm", "sizes=cpu-xxs,cpu-xs", "seq_len=32", "batch_size=4", "eval_batches=1",
        "log_every=1", "save_every=1", "threads=1", "lr=3e-3"]


def tiny_budget():
    # 6 steps of cpu-xxs; cpu-xs gets fewer (a handful of steps each)
    return 6 * train_flops_per_sequence(2, 48, 4098, 32) * 4


def test_sweep_interrupted_then_restarted_skips_finished_runs(tmp_path, capsys):
    from toolkit.resolve import resolve
    from toolkit.trainer import Trainer
    from training import sweep
    out = tmp_path / "sw"
    args = TINY + [f"budgets={tiny_budget():.6g}", f"out={out}"]
    sweep.main(args + ["max_runs=1"])                     # stop after one run
    first = capsys.readouterr().out
    assert "2 runs planned, 1 to run now" in first
    runs = sorted(p.parent for p in out.glob("runs/*/*/metrics.jsonl"))
    assert len(runs) == 1
    done_metrics = (runs[0] / "metrics.jsonl").read_bytes()
    done_mtime = (runs[0] / "metrics.jsonl").stat().st_mtime_ns

    # the other run dies at its third step, after checkpointing step 2
    other = next(r for r in (out / "runs" / "mdlm").iterdir() if r not in runs)
    run_args = json.loads((other / "sweep_args.json").read_text())
    torch.set_num_threads(1)
    trainer = Trainer(resolve([a for a in run_args if not a.startswith("resume=")] + ["progress=false"]))
    real_step = trainer.train_step

    def dying_step():
        if trainer.state.step == 2:
            raise KeyboardInterrupt
        return real_step()

    trainer.train_step = dying_step
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert sweep.run_status(other, trainer.cfg.train.max_steps) == "partial"

    df = sweep.main(args)                                  # restart: resume one, skip the other
    second = capsys.readouterr().out
    assert "1 to run now" in second and "resume" in second
    assert (df["status"] == "finished").all() and df["val_nelbo"].notna().all()
    assert (runs[0] / "metrics.jsonl").read_bytes() == done_metrics
    assert (runs[0] / "metrics.jsonl").stat().st_mtime_ns == done_mtime
    steps = [json.loads(line)["step"] for line in (other / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == trainer.cfg.train.max_steps
    results = pd.read_csv(out / "results.csv")
    assert set(results.columns) >= {"family", "options", "size", "params", "budget", "tokens", "epochs",
                                    "val_nelbo", "wall_s"}
    assert (out / "launch.sh").read_text().count("training.train") == 2
    assert "--array=0-1" in (out / "slurm_array.sh").read_text()

    sweep.main(args)                                       # a third time: nothing to do
    assert "0 to run now" in capsys.readouterr().out


def test_sweep_refuses_a_run_started_with_other_settings(tmp_path):
    from toolkit.errors import UserError
    from training.sweep import claim
    run = tmp_path / "run"
    claim(run, ["family=mdlm", "lr=1e-3", "threads=1", f"out={run}"])
    claim(run, ["family=mdlm", "lr=1e-3", "threads=2", f"out={run}"])    # threads do not change results
    with pytest.raises(UserError, match="other settings"):
        claim(run, ["family=mdlm", "lr=2e-3", "threads=1", f"out={run}"])


def test_print_launcher_starts_nothing(tmp_path, capsys):
    from training import sweep
    out = tmp_path / "sw"
    df = sweep.main(TINY + [f"budgets={tiny_budget():.6g}", f"out={out}", "launcher=print"])
    printed = capsys.readouterr().out
    assert printed.count("python -m training.train") == 2 and not (out / "runs").exists()
    assert (df["status"] == "new").all()
    plan = pd.read_csv(out / "plan.csv")
    assert list(plan["max_steps"])[0] == 6 and (plan["epochs"] > 0).all()


def _cli_error(capsys, fn, argv):
    with pytest.raises(SystemExit) as e:
        fn(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_bad_input_gives_one_line_errors(tmp_path, capsys):
    from toolkit.cli.scaling import main as scaling_main
    from training.sweep import main as sweep_main
    out = f"out={tmp_path / 'sw'}"
    assert "too small for one step" in _cli_error(capsys, sweep_main, TINY + ["budgets=1e3", out])
    assert "unknown size" in _cli_error(capsys, sweep_main, ["family=mdlm", "sizes=cpu-huge", "budgets=1e12", out])
    assert "unknown family" in _cli_error(capsys, sweep_main, ["family=xyz", "sizes=cpu-xs", "budgets=1e12", out])
    assert "no option" in _cli_error(capsys, sweep_main, ["family=mdlm:foo=1", "sizes=cpu-xs", "budgets=1e12", out])
    assert "set by the sweep" in _cli_error(capsys, sweep_main, TINY + ["budgets=1e12", "max_steps=3", out])
    assert "not a number" in _cli_error(capsys, sweep_main, TINY + ["budgets=lots", out])
    (tmp_path / "empty.csv").write_text("variant,size,params,budget,tokens,val_nelbo\n")
    assert "empty results table" in _cli_error(capsys, scaling_main, ["fit", str(tmp_path / "empty.csv")])
    assert "not found" in _cli_error(capsys, scaling_main, ["fit", str(tmp_path / "missing.csv")])
    assert "unknown size" in _cli_error(capsys, scaling_main, ["flops", "7B"])
    assert "too small" in _cli_error(capsys, scaling_main, ["flops", "170M", "--budget", "1e9"])


def test_summary_recovers_a_known_compute_saving(tmp_path):
    """`good` reaches at C the loss `worse` reaches at C / 0.7: both ways of measuring must say 30%."""
    from toolkit.scaling import analysis
    from toolkit.scaling.summary import saving_rows, summary_markdown
    rows = []
    for variant, scale in (("worse", 1.0), ("good", 1 / 0.7)):
        for c in (1e12, 3e12, 1e13, 3e13, 1e14):       # exact valleys around N*(C scale), L*(C scale)
            n_star, l_star = 0.02 * (c * scale) ** 0.6, 50 * (c * scale) ** -0.08
            for u in np.linspace(-1.2, 1.2, 6):
                rows.append({"variant": variant, "size": f"u{u:.2f}", "params": n_star * math.exp(u), "budget": c,
                             "tokens": 1, "val_nelbo": l_star + 0.08 * u * u, "epochs": 0.5, "wall_s": 60})
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    df = analysis.load_results(tmp_path)
    fits = analysis.fit_variants(df, n_boot=0)
    table = saving_rows(df, fits, "good", "worse")
    assert [r["budget"] for r in table] == [1e12, 3e12, 1e13, 3e13, 1e14]
    for r in table:
        assert r["saving_law"] == pytest.approx(0.3, abs=1e-6)     # exact valleys -> exact L*(C) law
    assert math.isnan(table[0]["saving_interp"])                   # below what `good` reached: no extrapolation
    for r in table[1:]:
        assert r["saving_interp"] == pytest.approx(0.3, abs=0.01)  # interpolation between budgets 3x apart
    report = summary_markdown(df, fits, [("good", "worse")])
    assert "| 1e+12 |" in report and "good < worse" in report and "+30.0%" in report
    assert "Summed wall time of the runs: 60.0 min" in report
    best_sizes = ", ".join(f"{0.02 * c ** 0.6 * math.exp(-0.24):.3g}" for c in (1e12, 3e12, 1e13, 3e13, 1e14))
    assert f"| worse | {best_sizes} |" in report                     # the best trained size per budget


def test_fit_cli_rejects_an_unknown_compare_variant(tmp_path, capsys):
    from toolkit.cli.scaling import main
    n, c, loss = synthetic_isoflop(1)
    pd.DataFrame({"variant": "mdlm", "size": [f"s{i % 6}" for i in range(len(n))], "params": n, "budget": c,
                  "tokens": 1, "val_nelbo": loss}).to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(SystemExit) as e:
        main(["fit", str(tmp_path / "results.csv"), "--compare", "duo:mdlm"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --compare: no runs of variant 'duo' (variants: mdlm)"
