"""Fine-tuning on prompt/response pairs: the prompt is never noised, scored or resampled."""
import dataclasses
import json

import pytest
import torch

from toolkit.config import resolve
from toolkit.errors import UserError
from toolkit.families import REGISTRY
from toolkit.sampling import SampleRequest
from tests.test_backbone import small_net

V, MASK, BOS, L, P = 50, 49, 48, 12, 5


def option_variants(fam_cls):
    """The family's default options, and each non-default objective it has (low_var, alpha_0 < 1)."""
    names = {f.name for f in dataclasses.fields(fam_cls.Options)}
    out = [fam_cls.Options()]
    if "loss" in names:
        out.append(dataclasses.replace(fam_cls.Options(), loss="low_var"))
    if "alpha_0" in names:
        out.append(dataclasses.replace(fam_cls.Options(), alpha_0=0.5))
    return out


CASES = [(name, opts) for name in sorted(REGISTRY) for opts in option_variants(REGISTRY[name])]


class Spy(torch.nn.Module):
    """Wraps a backbone: adds a learnable bias per output position and records every input."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []
        self.bias = torch.nn.Parameter(torch.zeros(L, V))

    def forward(self, tokens, sigma=None, *, positions=None, select=None, **kw):
        out = self.net(tokens, sigma, positions=positions, **kw)
        pos = positions if positions is not None else torch.arange(tokens.shape[1]).expand_as(tokens)
        self.calls.append((tokens.detach().clone(), pos.clone()))
        out = out + self.bias[pos]
        return out[select] if select is not None else out


def batch(seed=0, b=6):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 40, (b, L), generator=g)
    mask = torch.zeros(b, L, dtype=torch.bool)
    mask[:, P:] = True
    return x0, mask


def prompt_inputs(calls) -> list[torch.Tensor]:
    """Per network call, the input id at each (row, prompt position), -1 where none was fed."""
    out = []
    for tokens, pos in calls:
        seen = torch.full((tokens.shape[0], P), -1, dtype=torch.long)
        rows = torch.arange(tokens.shape[0])[:, None].expand_as(pos)
        keep = pos < P
        seen[rows[keep], pos[keep]] = tokens[keep]
        out.append(seen)
    return out


@pytest.mark.parametrize("name,opts", CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_prompt_is_never_noised_nor_scored(name, opts):
    fam = REGISTRY[name](opts, V, MASK, BOS)
    spy = Spy(small_net(vocab=V))
    x0, mask = batch()
    fed = []
    for seed, t in [(1, torch.linspace(0.05, 0.95, 6)), (2, torch.full((6,), 0.999))]:
        for objective in (fam.loss, lambda *a, **k: fam.nelbo(*a, **k).sum()):
            spy.calls.clear()
            spy.zero_grad()
            objective(spy, x0, t, torch.Generator().manual_seed(seed), loss_mask=mask).backward()
            grad = spy.bias.grad.abs().sum(-1)
            assert torch.all(grad[:P] == 0), f"prompt positions got gradient {grad[:P]}"
            assert torch.all(grad[P:] > 0)
            fed.append(prompt_inputs(spy.calls))
    # what the network sees at prompt positions does not depend on t or the noise draws
    for run in fed[1:]:
        assert len(run) == len(fed[0]) and all(torch.equal(a, b) for a, b in zip(run, fed[0]))


@pytest.mark.parametrize("name,opts", CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_loss_does_not_depend_on_prompt_targets_when_inputs_are_fixed(name, opts):
    """Equal losses for full masks vs. masks over the response only, once prompt CE terms vanish:
    the response-only loss is the full loss's response part, normalised by response tokens."""
    fam = REGISTRY[name](opts, V, MASK, BOS)
    net = small_net(vocab=V)
    x0, mask = batch(seed=3)
    t = torch.full((x0.shape[0],), 0.5)
    a = fam.loss(net, x0, t, torch.Generator().manual_seed(2), loss_mask=mask)
    b = fam.loss(net, x0, t, torch.Generator().manual_seed(2), loss_mask=torch.ones_like(mask))
    plain = fam.loss(net, x0, t, torch.Generator().manual_seed(2))
    assert torch.isfinite(a) and torch.allclose(b, plain, atol=1e-6)   # an all-True mask is pre-training
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_sampling_never_alters_per_sample_prompts(name):
    fam = REGISTRY[name](REGISTRY[name].Options(), V, MASK, BOS)
    net = small_net(vocab=V)
    prompts = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    req = SampleRequest(num_samples=3, length=10, steps=4, prompts=prompts, seed=0)
    steps = list(fam.sample(net, req))
    for step in steps:
        assert step.tokens[:, :4].tolist() == prompts
    assert (steps[-1].tokens[:, 4:] != MASK).all()
