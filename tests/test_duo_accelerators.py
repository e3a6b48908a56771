"""Duo's curriculum (Gaussian relaxation through the duality) and discrete consistency distillation."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from toolkit.config import ModelConfig
from toolkit.families.duality import DualTime, argmax_probability, gaussian_latent, gaussian_noise
from toolkit.families.duo import Duo, DuoOptions, distill_gap, duo_nelbo_terms, tempered_softmax_inverse
from toolkit.model.backbone import Backbone

ROOT = Path(__file__).resolve().parents[1]


def tiny_net(n, seed=0):
    torch.manual_seed(seed)
    net = Backbone(ModelConfig(n_layers=1, d_model=16, n_heads=2, cond_dim=16, vocab_size=n, max_seq_len=32))
    for p in net.parameters():   # the zero-initialised heads would make every output uniform
        torch.nn.init.normal_(p, std=0.3)
    return net


def mc_latent(n, gamma, draws, seed=0):
    """Gaussian latents of clean id 0: [draws, n]."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.zeros(draws, 1, dtype=torch.long)
    return gaussian_latent(x0, torch.full((draws,), gamma), n, gaussian_noise(x0, n, g))[:, 0]


@pytest.mark.parametrize("n", [8, 50])
@pytest.mark.parametrize("gamma", [-3.5, -2.5, -1.75, -1.0])
def test_argmax_of_the_gaussian_is_the_uniform_state_marginal_at_the_dual_time(n, gamma):
    """Monte Carlo arg-max frequencies vs q(z_t | x) = alpha e_x + (1 - alpha) / N from the quadrature."""
    draws = 200_000
    alpha = float(DualTime(n, "simple").alpha(torch.tensor([gamma]))[0])
    freq = torch.bincount(mc_latent(n, gamma, draws).argmax(-1), minlength=n).double() / draws
    q = torch.full((n,), (1 - alpha) / n, dtype=torch.float64)
    q[0] += alpha
    tol = 5 * (q * (1 - q) / draws).sqrt() + 1e-12
    assert ((freq - q).abs() <= tol).all(), (freq[:3], q[:3])


def test_tempered_softmax_input_tends_to_the_discrete_marginal():
    """As the temperature -> 0 the soft input's mean is q(z_t | x); at temperature 1 it is not."""
    n, gamma, draws = 8, -2.0, 100_000
    alpha = float(DualTime(n, "series").alpha(torch.tensor([gamma]))[0])
    q = torch.full((n,), (1 - alpha) / n)
    q[0] += alpha
    w = mc_latent(n, gamma, draws, seed=1)
    cold, warm = (w * 1e3).softmax(-1).mean(0), w.softmax(-1).mean(0)
    tol = 5 * (q * (1 - q) / draws).sqrt()
    assert ((cold - q).abs() <= tol).all()
    assert (warm - q).abs().max() > 10 * tol.max()


def test_simple_and_series_dual_times_agree_with_the_quadrature_derivative():
    n = 4098
    gammas = torch.linspace(-4.0, -0.5, 15, dtype=torch.float64)
    simple, series = DualTime(n, "simple"), DualTime(n, "series")
    a1, d1 = simple.alpha_dalpha(gammas)
    a2, d2 = series.alpha_dalpha(gammas)
    h = 1e-4   # central difference of the quadrature itself: independent of both derivatives
    num = (argmax_probability(gammas + h, n) - argmax_probability(gammas - h, n)) / (2 * h) * n / (n - 1)
    assert torch.allclose(a1, a2, atol=1e-5)
    assert torch.allclose(d2, num, rtol=1e-4, atol=1e-6)
    assert torch.allclose(d1, num, rtol=5e-3, atol=5e-4)   # forward difference, 1e-3 apart (the repo's)
    assert (d2 < 0).all()   # more log-SNR noise, fewer clean tokens


def test_relaxed_loss_at_zero_temperature_is_the_discrete_nelbo_at_the_dual_time():
    n = 50
    net = tiny_net(n)
    o = DuoOptions(curriculum=True, curriculum_start=0, curriculum_end=10, tau_log10_start=-4, tau_log10_end=-4)
    fam = Duo(o, n, n - 1, 0)
    fam.begin_train_step(3, net)
    x0 = torch.randint(0, n - 1, (3, 8), generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.2, 0.5, 0.9])
    loss = fam.loss(net, x0, t, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    gamma = o.gamma_min + t.double() * (o.gamma_max - o.gamma_min)
    z = gaussian_latent(x0, gamma, n, gaussian_noise(x0, n, g)).argmax(-1)
    alpha = (n * argmax_probability(gamma, n) - 1) / (n - 1)
    h = 1e-4
    dalpha = (argmax_probability(gamma + h, n) - argmax_probability(gamma - h, n)) / (2 * h) * n / (n - 1)
    probs = fam.without_mask(net(z, -torch.log(alpha).float())).softmax(-1)
    ref = duo_nelbo_terms(probs, x0, z, alpha.float(), (dalpha * (o.gamma_max - o.gamma_min)).float()[:, None])
    assert ref.min() >= 0
    assert loss.item() == pytest.approx(ref.mean().item(), rel=2e-3)
    fam.options.tau_log10_start = fam.options.tau_log10_end = 0.0   # warm: the soft input is no one-hot
    assert fam.loss(net, x0, t, torch.Generator().manual_seed(1)).item() != pytest.approx(loss.item(), rel=1e-2)


def test_curriculum_clock_and_its_end():
    o = DuoOptions(curriculum=True, curriculum_start=100, curriculum_end=200)
    assert tempered_softmax_inverse(o, 0) == pytest.approx(10.0)
    assert tempered_softmax_inverse(o, 150) == pytest.approx(10 ** 1.5)
    assert tempered_softmax_inverse(o, 200) == pytest.approx(100.0)
    n = 50
    net = tiny_net(n)
    x0 = torch.randint(0, n - 1, (2, 8), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.3, 0.7])
    fam, plain = Duo(o, n, n - 1, 0), Duo(DuoOptions(), n, n - 1, 0)
    fam.begin_train_step(201, net)
    after = fam.loss(net, x0, t, torch.Generator().manual_seed(5))
    assert after.item() == plain.loss(net, x0, t, torch.Generator().manual_seed(5)).item()
    fam.begin_train_step(200, net)
    assert fam.loss(net, x0, t, torch.Generator().manual_seed(5)).item() != after.item()


def distill_family(n, steps=8, every=3):
    return Duo(DuoOptions(distill=True, distill_steps=steps, teacher_every=every), n, n - 1, 0)


def test_distillation_rounds_halve_the_steps_and_refresh_the_teacher():
    n = 50
    o = distill_family(n).options
    assert [distill_gap(o, s) for s in (0, 2, 3, 6, 9, 30)] == [1 / 8, 1 / 8, 2 / 8, 4 / 8, 1.0, 1.0]
    fam, net = distill_family(n), tiny_net(n)
    fam.begin_train_step(0, net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1)
    for step in (1, 2):   # mid-round: the teacher keeps the round's first weights
        fam.begin_train_step(step, net)
        assert all(torch.equal(fam.teacher.state_dict()[k], before[k]) for k in before)
    fam.begin_train_step(3, net)
    assert all(torch.equal(fam.teacher.state_dict()[k], v) for k, v in net.state_dict().items())
    assert not any(p.requires_grad for p in fam.teacher.parameters())


def test_an_ema_teacher_is_the_students_running_average_at_each_refresh():
    n, decay = 50, 0.5
    fam, net = Duo(DuoOptions(distill=True, distill_steps=8, teacher_every=3, teacher_ema=decay), n, n - 1, 0), tiny_net(n)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    for step in range(4):       # the weights move by step + 1 before each step after the first
        if step:
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.1 * step)
            expected = {k: decay * expected[k] + (1 - decay) * v for k, v in net.state_dict().items()}
        fam.begin_train_step(step, net)
    assert all(torch.allclose(fam.teacher.state_dict()[k], v) for k, v in expected.items())
    assert not all(torch.allclose(fam.teacher.state_dict()[k], v) for k, v in net.state_dict().items())


def test_distillation_target_is_the_teacher_one_gap_earlier_on_the_same_path():
    n, step = 50, 4   # round 1: dt = 2/8
    fam, student = distill_family(n), tiny_net(n, seed=0)
    fam.begin_train_step(step, tiny_net(n, seed=1))   # the teacher: other weights
    teacher = tiny_net(n, seed=1)
    x0 = torch.randint(0, n - 1, (3, 8), generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0.1, 0.6, 0.95])
    loss = fam.loss(student, x0, t, torch.Generator().manual_seed(7))
    # independent recomputation: the same noise, both ends of the path, alphas by direct quadrature
    o, dt = fam.options, 0.25
    eps = gaussian_noise(x0, n, torch.Generator().manual_seed(7))
    t_hi = (t + dt).clamp(max=1.0)
    ends = []
    for time in (t_hi, t_hi - dt):
        gamma = o.distill_gamma_min + time.double() * (o.distill_gamma_max - o.distill_gamma_min)
        a, s = torch.sigmoid(-gamma).sqrt().float(), torch.sigmoid(gamma).sqrt().float()
        z = (a[:, None, None] * torch.nn.functional.one_hot(x0, n) + s[:, None, None] * eps).argmax(-1)
        ends.append((z, ((n * argmax_probability(gamma, n) - 1) / (n - 1)).float()))
    (z_t, a_t), (z_s, a_s) = ends
    assert (z_t != z_s).any() and (z_s == x0).float().mean() >= (z_t == x0).float().mean()
    logp = [fam.log_probs(net, z, a) for net, z, a in ((student, z_t, a_t), (teacher, z_s, a_s))]
    kl = (logp[0].exp() * (logp[0] - logp[1])).sum(-1).mean()
    assert loss.item() == pytest.approx(kl.item(), rel=1e-5)
    again = fam.trajectory(x0, t_hi, t_hi - dt, torch.Generator().manual_seed(7))   # deterministic path
    assert torch.equal(again[0], z_t) and torch.equal(again[1], z_s)
    assert torch.equal(*fam.trajectory(x0, t_hi, t_hi, torch.Generator().manual_seed(7))[:2])
    grads = torch.autograd.grad(loss, [p for p in student.parameters()], allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_resumed_distillation_matches_an_uninterrupted_one(tmp_path, tiny_checkpoint):
    """Killed after step 6 (checkpoint at 4, teacher from step 3): the resume restores the teacher."""
    teacher_run = tiny_checkpoint("duo")
    args = [f"init={teacher_run}", "distill=true", "distill_steps=8", "teacher_every=3", "batch_size=4",
            "max_steps=8", "log_every=1", "eval_every=4", "eval_batches=1", "save_every=4", "lr=3e-3",
            "progress=false", "threads=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    whole, part = tmp_path / "whole", tmp_path / "part"
    subprocess.run([sys.executable, "-m", "training.train", *args, f"out={whole}"], check=True, env=env, cwd=ROOT)
    killed = subprocess.run([sys.executable, "-m", "training.train", *args, f"out={part}"],
                            env={**env, "DLM_KILL_AT": "train.optimizer@6"}, cwd=ROOT)
    assert killed.returncode != 0
    subprocess.run([sys.executable, "-m", "training.train", *args, f"out={part}", "resume=true"],
                   check=True, env=env, cwd=ROOT)

    def losses(run):
        return [(r["step"], r.get("train_loss"), r.get("val_nelbo"))
                for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    assert losses(part) == losses(whole)
    from toolkit.checkpoints.rundir import load_weights
    a, b = load_weights(whole / "checkpoint"), load_weights(part / "checkpoint")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not math.isnan(losses(whole)[-1][1])
