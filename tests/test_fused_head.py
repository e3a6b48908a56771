"""The chunked fused head + cross-entropy equals the plain one: values and gradients, fp32 and bf16
autocast, any per-row weighting; and the families' losses and gradients do not change with it."""
from __future__ import annotations

import copy

import pytest
import torch

from toolkit.config import TrainConfig
from toolkit.errors import UserError
from toolkit.families.ar import AR, AROptions
from toolkit.families.esolm import EsoLM, EsoOptions
from toolkit.families.mdlm import MaskedOptions, MDLM
from toolkit.model.backbone import fuses_head
from toolkit.model.fused_head import (default_chunk_rows, linear_cross_entropy, linear_cross_entropy_sum,
                                      unfused_cross_entropy)
from toolkit.model.lora import add_lora
from toolkit.resolve import resolve
from tests.test_backbone import small_net

D, VOCAB, EXCLUDED = 16, 50, 7
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])   # the same code runs on both


def head(n, seed=0, bias=True, device="cpu"):
    """x [n, D], W [V, D], b [V] (the excluded id's bias high, so dropping the exclusion shows), ids."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g).to(device).requires_grad_()
    w = (torch.randn(VOCAB, D, generator=g) * 0.5).to(device).requires_grad_()
    b = torch.randn(VOCAB, generator=g)
    b[EXCLUDED] = 3.0
    b = b.to(device).requires_grad_() if bias else None
    targets = torch.randint(0, VOCAB - 1, (n,), generator=g)
    targets[targets == EXCLUDED] = VOCAB - 1
    weights = torch.rand(n, generator=g) * 2 - 0.5     # arbitrary per-row gradient, some negative
    weights[::5] = 0.0                                  # and rows that do not count at all
    return x, w, b, targets.to(device), weights.to(device)


def nll_and_grads(fn, x, w, b, targets, weights, autocast=False):
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        nll = fn(x, w, b, targets)
    params = [p for p in (x, w, b) if p is not None]
    return nll, torch.autograd.grad((nll * weights).sum(), params)


def assert_grads_close(got, want, rtol):
    for g, r in zip(got, want):
        assert g.dtype == r.dtype and g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=rtol, atol=rtol * r.abs().max().item())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n,chunk", [(37, 8), (5, 64), (64, 16), (1, 1)])
@pytest.mark.parametrize("exclude", [None, EXCLUDED])
def test_fp32_nll_and_gradients_equal_the_unfused_head(n, chunk, exclude, device):
    x, w, b, targets, weights = head(n, device=device)
    fused, g_fused = nll_and_grads(lambda *a: linear_cross_entropy(*a, exclude, chunk_rows=chunk), x, w, b, targets, weights)
    plain, g_plain = nll_and_grads(lambda *a: unfused_cross_entropy(*a, exclude), x, w, b, targets, weights)
    assert fused.dtype == torch.float32 and fused.shape == (n,)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    assert_grads_close(g_fused, g_plain, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("exclude", [None, EXCLUDED])
def test_bf16_autocast_follows_nn_linear(exclude, device):
    """Under autocast the head's matmuls run in bf16 like nn.Linear; the softmax stays fp32."""
    x, w, b, targets, weights = head(45, seed=1, device=device)
    fused, g_fused = nll_and_grads(lambda *a: linear_cross_entropy(*a, exclude, chunk_rows=16), x, w, b,
                                   targets, weights, autocast=True)
    plain, g_plain = nll_and_grads(lambda *a: unfused_cross_entropy(*a, exclude), x, w, b, targets, weights,
                                   autocast=True)
    torch.testing.assert_close(fused, plain, rtol=1e-3, atol=1e-3)   # the same bf16 logits, rounded once
    assert_grads_close(g_fused, g_plain, rtol=2e-2)
    fp32, _ = nll_and_grads(lambda *a: unfused_cross_entropy(*a, exclude), x, w, b, targets, weights)
    assert (fused - fp32).abs().max() > 1e-4      # the bf16 matmul did happen (not silently fp32)


def test_no_bias_and_frozen_inputs():
    x, w, _, targets, weights = head(20, bias=False)
    fused, g_fused = nll_and_grads(lambda *a: linear_cross_entropy(*a, EXCLUDED, chunk_rows=6), x, w, None, targets, weights)
    plain, g_plain = nll_and_grads(lambda *a: unfused_cross_entropy(*a, EXCLUDED), x, w, None, targets, weights)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    assert_grads_close(g_fused, g_plain, rtol=1e-5)
    (gx,) = torch.autograd.grad((linear_cross_entropy(x, w.detach(), None, targets, chunk_rows=6) * weights).sum(), [x])
    (want,) = torch.autograd.grad((unfused_cross_entropy(x, w.detach(), None, targets) * weights).sum(), [x])
    torch.testing.assert_close(gx, want, rtol=1e-5, atol=1e-6)


def test_no_rows_gives_an_empty_nll_and_zero_gradients():
    """MDLM at small t can mask nothing: the head then scores zero rows."""
    x, w, b, targets, _ = head(0)
    nll = linear_cross_entropy(x, w, b, targets, EXCLUDED)
    gx, gw, gb = torch.autograd.grad(nll.sum(), [x, w, b])
    assert nll.shape == (0,) and gx.shape == (0, D) and not gw.any() and not gb.any()


def test_the_excluded_id_gets_no_probability_and_no_gradient():
    x, w, b, targets, weights = head(30)
    nll = linear_cross_entropy(x, w, b, targets, EXCLUDED, chunk_rows=8)
    (gb,) = torch.autograd.grad(nll.sum(), [b])
    assert gb[EXCLUDED] == 0 and (gb != 0).sum() > VOCAB // 2
    gain = linear_cross_entropy(x, w, b, targets, None, chunk_rows=8) - nll   # a +3 logit removed
    assert (gain >= 0).all() and gain.mean() > 0.1


def test_full_logits_are_never_kept_for_backward():
    """What autograd saves is O(N d + V d): no [N, V] tensor (the plain head saves several)."""
    n, chunk = 512, 32
    x, w, b, targets, _ = head(n)
    for fn, expect_big in ((lambda: linear_cross_entropy(x, w, b, targets, EXCLUDED, chunk_rows=chunk), False),
                           (lambda: unfused_cross_entropy(x, w, b, targets, EXCLUDED), True)):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            fn()
        assert (max(saved) >= n * VOCAB) == expect_big


def test_weighted_sum_variant_equals_weighting_the_rows():
    x, w, b, targets, weights = head(41, seed=2)
    total = linear_cross_entropy_sum(x, w, b, targets, weights, EXCLUDED, chunk_rows=8)
    grads = torch.autograd.grad(3.0 * total, [x, w, b])
    plain, g_plain = nll_and_grads(lambda *a: unfused_cross_entropy(*a, EXCLUDED), x, w, b, targets, 3.0 * weights)
    torch.testing.assert_close(total, (plain * weights).sum(), rtol=1e-5, atol=1e-5)
    assert_grads_close(grads, g_plain, rtol=1e-5)


def test_default_chunk_keeps_a_chunk_of_logits_near_the_size_of_x():
    rows = default_chunk_rows(16384, 768, 32001)
    assert rows & (rows - 1) == 0 and 16384 * 768 <= rows * 32001 < 2 * 16384 * 768
    assert default_chunk_rows(10, 4, 50_000) == 64


# ---- the families ----------------------------------------------------------------------------

V, MASK, BOS = 50, 49, 48
FAMILIES = {"ar": lambda: AR(None, V, MASK, BOS), "ar-reference": lambda: AR(AROptions(score="reference"), V, MASK, BOS),
            "mdlm": lambda: MDLM(MaskedOptions(), V, MASK, BOS),
            "mdlm-low_var": lambda: MDLM(MaskedOptions(loss="low_var"), V, MASK, BOS),
            "esolm": lambda: EsoLM(EsoOptions(alpha_0=0.5), V, MASK, BOS)}


def loss_and_grads(fam, net, x0, t, loss_mask, autocast=False):
    net.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = fam.loss(net, x0, t, torch.Generator().manual_seed(3), loss_mask=loss_mask)
        nelbo = fam.nelbo(net, x0, t, torch.Generator().manual_seed(4), loss_mask=loss_mask)
    loss.backward()
    return loss.detach(), nelbo.detach(), {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("masked", [False, True])
def test_family_loss_nelbo_and_gradients_equal_with_and_without_fusion(name, masked):
    fam = FAMILIES[name]()
    net = small_net(vocab=V)
    with torch.no_grad():
        net.output_layer.linear.bias[MASK] = 4.0    # [MASK] likely unless suppressed: a dropped exclude shows
    plain_net = copy.deepcopy(net)
    plain_net.cfg = copy.copy(net.cfg)
    plain_net.cfg.fused_head = False
    assert fuses_head(net) and not fuses_head(plain_net)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 40, (6, 12), generator=g)
    t = torch.rand(6, generator=g) * 0.9 + 0.05
    loss_mask = torch.arange(12).expand(6, 12) >= 4 if masked else None
    calls = []
    net.output_layer.linear.register_forward_hook(lambda *_: calls.append(1))
    fused = loss_and_grads(fam, net, x0, t, loss_mask)
    assert calls == []            # the fused head never called the plain linear layer
    plain = loss_and_grads(fam, plain_net, x0, t, loss_mask)
    torch.testing.assert_close(fused[0], plain[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused[1], plain[1], rtol=1e-5, atol=1e-5)
    assert fused[2].keys() == plain[2].keys() and "output_layer.linear.weight" in fused[2]
    for k in plain[2]:
        torch.testing.assert_close(fused[2][k], plain[2][k], rtol=1e-4, atol=1e-7, msg=k)


@pytest.mark.parametrize("name", ["ar", "mdlm"])
def test_family_loss_under_bf16_autocast(name):
    fam, net = FAMILIES[name](), small_net(vocab=V)
    plain_net = copy.deepcopy(net)
    plain_net.cfg = copy.copy(net.cfg)
    plain_net.cfg.fused_head = False
    x0 = torch.randint(0, 40, (4, 16), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.2, 0.4, 0.6, 0.8])
    fused, plain = (loss_and_grads(fam, n, x0, t, None, autocast=True) for n in (net, plain_net))
    torch.testing.assert_close(fused[0], plain[0], rtol=1e-3, atol=1e-3)
    for k in plain[2]:
        ref = plain[2][k]
        torch.testing.assert_close(fused[2][k], ref, rtol=3e-2, atol=3e-2 * ref.abs().max().item(), msg=k)


def test_fuses_head_sees_through_compile_and_peft_and_not_through_other_wrappers():
    net = small_net(vocab=V)
    assert fuses_head(torch.compile(net))
    assert not fuses_head(torch.nn.Sequential(net)) and not fuses_head(lambda *a, **k: None)
    pytest.importorskip("peft")
    assert fuses_head(add_lora(small_net(vocab=V), TrainConfig(lora_rank=2)))


def test_backbone_returns_nll_shaped_like_the_targets():
    net = small_net(vocab=V)
    tokens = torch.randint(0, 40, (3, 10))
    select = torch.rand(3, 10, generator=torch.Generator().manual_seed(0)) < 0.5
    with torch.no_grad():
        logits = net(tokens, select=select).float()
        logits[:, MASK] = float("-inf")
        want = torch.nn.functional.cross_entropy(logits, tokens[select], reduction="none")
        for targets in (tokens, tokens[select]):   # [B, L] or already at the selected positions
            torch.testing.assert_close(net(tokens, select=select, targets=targets, exclude=MASK), want)
        assert net(tokens, targets=tokens, causal=True).shape == (3, 10)


def test_fused_head_is_a_config_key():
    assert resolve([]).model.fused_head == "auto"
    assert resolve(["fused_head=false"]).model.fused_head == "false"
    with pytest.raises(UserError, match="fused_head"):
        resolve(["model.fused_head=sometimes"])


@pytest.mark.parametrize("name", ["mdlm", "esolm"])
@pytest.mark.parametrize("fused", [True, False])
def test_head_rows_all_equals_selected(name, fused):
    """head_rows=all (every row, unscored ones zeroed: what `auto` runs on a GPU) gives the loss,
    NELBO and gradients of head_rows=selected (only the scored rows: what a CPU runs)."""
    from toolkit.model.backbone import selects_rows
    fam = FAMILIES[name]()
    net = small_net(vocab=V)
    net.cfg = copy.copy(net.cfg)
    net.cfg.fused_head = fused
    dense = copy.deepcopy(net)
    dense.cfg = copy.copy(net.cfg)
    net.cfg.head_rows, dense.cfg.head_rows = "selected", "all"
    assert selects_rows(net) and not selects_rows(dense)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 40, (6, 12), generator=g)
    t = torch.rand(6, generator=g) * 0.9 + 0.05
    rows = []
    dense.output_layer.norm_final.register_forward_hook(lambda m, i, o: rows.append(o.shape[:-1].numel()))
    want, got = loss_and_grads(fam, net, x0, t, None), loss_and_grads(fam, dense, x0, t, None)
    assert rows and all(r % x0.numel() == 0 for r in rows)   # the dense head ran on whole sequences (Eso-LM: 2L)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    for k in want[2]:
        torch.testing.assert_close(got[2][k], want[2][k], rtol=1e-4, atol=1e-7, msg=k)


def test_head_rows_default_selects_and_fused_head_auto_follows_the_device():
    from toolkit.model.backbone import selects_rows
    net = small_net(vocab=V)
    assert net.cfg.head_rows == "selected" and selects_rows(net)
    assert selects_rows(lambda *a, **k: None)   # not a backbone: select as before
    assert net.cfg.fused_head == "auto" and fuses_head(net)   # on a CPU
    if torch.cuda.is_available():
        assert not fuses_head(copy.deepcopy(net).cuda())
    for value, expected in (("true", True), ("false", False), (True, True), (False, False)):
        net.cfg.fused_head = value
        assert fuses_head(net) is expected
