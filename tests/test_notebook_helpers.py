"""The toolkit helpers the notebooks call: objective diagnostics, live training and its curves,
the reference-layout snapshot writer, and the paper's iso-FLOP minima."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import toolkit
from toolkit.convert import main as convert_main
from toolkit.errors import UserError
from toolkit.evaluation.objectives import (TIME_SCHEMES, gradient_noise, loss_gradients, nelbo_draws, noised_views,
                                           with_options)
from toolkit.checkpoints.reference_snapshot import snapshot_dir, write_reference_snapshot
from toolkit.scaling.paper import paper_minima, plot_minima_side_by_side
from toolkit.trainer.curves import compute_saving, flops_to_reach, plot_training, slug, train_live

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife. However little known the feelings or views of such a man may be "
        "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
        "surrounding families, that he is considered the rightful property of some one or other of "
        "their daughters.") * 3


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    return {f: toolkit.load(f) for f in ("ar", "mdlm", "duo", "esolm")}


@pytest.fixture(scope="module")
def batch(models):
    ids = models["mdlm"].encode(TEXT)
    return torch.tensor(ids[: 4 * 32]).view(4, 32)


# -- forward processes ---------------------------------------------------------------------------
def test_noised_views_follow_each_forward_process(models):
    mask = "▒"
    assert noised_views(models["ar"], TEXT, [0.5]) == []           # AR has no noising process
    n = len(models["mdlm"].encode(TEXT))
    for t in (0.1, 0.5, 0.9):
        row = noised_views(models["mdlm"], TEXT, [t], seed=1)[0]
        assert abs(row["noised"] - t) < 4 * math.sqrt(t * (1 - t) / n)   # each token masked w.p. 1 - alpha_t = t
        assert row["text"].count(mask) == round(row["noised"] * n)
    duo = noised_views(models["duo"], TEXT, [0.9], seed=1)[0]
    assert mask not in duo["text"] and 0.7 < duo["noised"] < 0.95    # replaced by uniform ids (some by themselves)
    eso = noised_views(models["esolm"], TEXT, [0.0], seed=1)[0]      # alpha_0 = 0.5: half left for the AR phase
    assert eso["alpha_t"] == 0.5 and abs(eso["noised"] - 0.5) < 4 * math.sqrt(0.25 / n)


# -- NELBO and gradient spread -------------------------------------------------------------------
def test_nelbo_draws_agree_in_mean_and_ar_is_exact(models, batch):
    ar = nelbo_draws(models["ar"], batch, 3, "iid")
    assert float(ar.std()) == 0.0
    draws = {s: nelbo_draws(models["mdlm"], batch, 24, s) for s in TIME_SCHEMES}
    means = [float(d.mean()) for d in draws.values()]
    se = max(float(d.std()) for d in draws.values()) / math.sqrt(24)
    assert max(means) - min(means) < 5 * se          # three unbiased estimators of one expectation
    with pytest.raises(UserError, match="time scheme"):
        nelbo_draws(models["mdlm"], batch, 2, "sobol")


def test_with_options_copies_and_checks(models):
    fam = models["mdlm"].family
    low = with_options(fam, loss="low_var")
    assert low.options.loss == "low_var" and fam.options.loss == "elbo" and low.mask_id == fam.mask_id
    with pytest.raises(UserError):
        with_options(fam, loss="l2")
    with pytest.raises(UserError):
        with_options(fam, alpha=2)


def test_gradient_noise_formula_and_scale_invariance():
    g = torch.tensor(np.random.default_rng(0).normal(1.0, 0.5, (6, 10)))
    out = gradient_noise(g)
    manual = np.var(g.numpy(), axis=0, ddof=1).sum()
    assert out["variance"] == pytest.approx(manual) and out["mean_sq_norm"] == pytest.approx(float((g.mean(0) ** 2).sum()))
    assert gradient_noise(3 * g)["noise_to_signal"] == pytest.approx(out["noise_to_signal"])
    assert gradient_noise(g[:1].repeat(4, 1))["variance"] == pytest.approx(0.0)


def test_low_var_objective_has_less_gradient_noise_on_the_same_draws(models, batch):
    """Same seeds = same times and masks: the two gradients differ only by the 1/t weights."""
    net, fam = models["mdlm"].net, models["mdlm"].family
    elbo = loss_gradients(net, with_options(fam, loss="elbo"), batch, 8, seed=3)
    low = loss_gradients(net, with_options(fam, loss="low_var"), batch, 8, seed=3)
    assert elbo.shape == low.shape and not torch.allclose(elbo, low)
    assert torch.allclose(loss_gradients(net, fam, batch, 2, seed=3), elbo[:2])     # reproducible draws
    assert gradient_noise(low)["noise_to_signal"] < gradient_noise(elbo)["noise_to_signal"]


# -- training curves -----------------------------------------------------------------------------
def curve(flops, losses):
    return pd.DataFrame({"flops": flops, "val_nelbo": losses})


def test_flops_to_reach_and_compute_saving():
    base = curve([0, 1e9, 2e9, 4e9], [8.0, 6.0, 5.0, 4.0])
    assert flops_to_reach(base, 5.0) == pytest.approx(2e9)
    assert flops_to_reach(base, 3.0) != flops_to_reach(base, 3.0)        # never reached: nan
    assert flops_to_reach(base, 9.0) == 1e9                              # reached at the first evaluation
    assert flops_to_reach(curve([1e9, 2e9, 4e9], [6.0, 7.0, 5.0]), 6.0) == 1e9   # running best, first crossing
    faster = base.assign(flops=base["flops"] / 2)
    assert compute_saving(base, faster)["saving"] == pytest.approx(0.5)
    assert compute_saving(base, base)["saving"] == pytest.approx(0.0)


def test_train_live_trains_each_run_and_plots_them(tmp_path):
    runs = {"MDLM (low-var)": {"family": "mdlm", "loss": "low_var"}}
    common = dict(model="cpu-4xs", seq_len=16, batch_size=2, max_steps=4, log_every=2, eval_every=2,
                  eval_batches=1, threads=1)
    out = train_live(runs, tmp_path, common, show=False)
    assert [p.name for p in out.values()] == ["mdlm-low-var"] == [slug(k) for k in runs]
    metrics = (out["MDLM (low-var)"] / "metrics.jsonl").read_text()
    assert '"step": 4' in metrics and "low_var" in (out["MDLM (low-var)"] / "config.json").read_text()
    fig = plot_training(out)
    left, right = fig.axes[:2]
    assert len(left.get_lines()) >= 1 and len(right.get_lines()) >= 1
    again = train_live(runs, tmp_path, common, show=False)    # a finished run is reused, not retrained
    assert (again["MDLM (low-var)"] / "metrics.jsonl").read_text() == metrics
    with pytest.raises(UserError):
        train_live({"bad": {"family": "nope"}}, tmp_path, common, show=False)


# -- a released-checkpoint stand-in --------------------------------------------------------------
def test_reference_snapshot_converts_back_to_the_same_model(models, tmp_path):
    snap = write_reference_snapshot(models["duo"], tmp_path / "hub", "nvidia/SDLLM-Duo-1.7B-Base")
    assert snap == snapshot_dir(tmp_path / "hub", "nvidia/SDLLM-Duo-1.7B-Base")
    assert snap.parts[-3:] == ("models--nvidia--SDLLM-Duo-1.7B-Base", "snapshots", "synthetic")
    out = convert_main([str(snap), "--family", "duo", "--out", str(tmp_path / "conv")])
    back = toolkit.load(str(out))
    x = torch.tensor([models["duo"].encode("It is a truth")])
    sigma = torch.full((1,), 0.7)
    assert torch.equal(back.net(x, sigma), models["duo"].net(x, sigma))
    with pytest.raises(SystemExit):   # the repository name says Duo
        convert_main([str(snap), "--family", "mdlm", "--out", str(tmp_path / "conv2")])
    with pytest.raises(UserError):
        snapshot_dir(tmp_path, "no-owner")


# -- the paper's minima --------------------------------------------------------------------------
def test_paper_minima_table_and_side_by_side_plot():
    paper = paper_minima()
    assert len(paper) == 20 and set(paper["variant"]) == {"ar", "mdlm_loss-low_var", "duo", "esolm"}
    for _, sub in paper.groupby("variant"):          # read off the figure: N* grows and L* falls with C
        sub = sub.sort_values("budget")
        assert sub["n_star"].is_monotonic_increasing and sub["loss_star"].is_monotonic_decreasing
    ours = pd.DataFrame({"variant": ["ar", "ar", "mdlm"], "budget": [1e12, 1e13, 1e12],
                         "loss_star": [4.8, 4.1, 5.9], "n_star": [2e5, 6e5, float("nan")]})
    fig = plot_minima_side_by_side(ours)
    assert len(fig.axes) >= 4 and all(ax.get_xscale() == "log" for ax in fig.axes[:4])
