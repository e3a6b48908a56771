"""Every registered family by its contract (docs/architecture.md, "The family contract"), embedded model
or not, on a tiny checkpoint trained here: a training run, NELBO >= 0 and finite, a sample with every
strategy the registry offers it that ends with no mask left, the GUI's start state, the explorer's
plan, FLOPs and save/load.

Two worked examples ride along, registered only inside this module: a cosine-schedule masked family
(its own schedule, NELBO and ancestral sampler: `CosineMasked`) and a margin strategy (a new ranking
rule in a few lines: `Margin`). Both are removed from the registries afterwards.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import pytest
import torch

import toolkit
from toolkit.checkpoints import load
from toolkit.checkpoints.rundir import TOKENIZER, checkpoint_dir, read_metrics, save_checkpoint
from toolkit.decoding import seeded_start
from toolkit.errors import UserError
from toolkit.families import REGISTRY
from toolkit.families.base import MaskedFamily, covered_tokens, register
from toolkit.options import option
from toolkit.samplers import SAMPLERS, names, supported
from toolkit.samplers import register as register_strategy
from toolkit.samplers.ranked import Ranked, RankedOptions
from toolkit.sample_request import Clock, SampleRequest, Step, draw, filter_probs, time_grid
from toolkit.scaling.flops import train_flops_per_sequence
from toolkit.schedule import EPS


# --- worked example 1: a cosine-schedule masked family in one module -----------------------------
class CosineSchedule:
    """alpha_t = cos(pi t / 2) for a float or a tensor t (the schedule protocol); clamped at 0, as
    fp32 cos(pi / 2) is -4e-8."""

    def alpha(self, t):
        return torch.cos(math.pi / 2 * t).clamp(min=0) if torch.is_tensor(t) else max(math.cos(math.pi / 2 * t), 0.0)

    def alpha_prime(self, t):
        return -math.pi / 2 * (torch.sin(math.pi / 2 * t) if torch.is_tensor(t) else math.sin(math.pi / 2 * t))

    def sigma(self, t):
        a = self.alpha(t)
        return -torch.log(torch.clamp(a, min=EPS)) if torch.is_tensor(a) else -math.log(max(a, EPS))

    def reveal_probability(self, t, s):
        return (self.alpha(s) - self.alpha(t)) / (1 - self.alpha(t))


@dataclass
class CosineSampling:
    greedy_last: bool = option(False, "the last step takes the arg-max instead of a draw")


class CosineMasked(MaskedFamily):
    name = "toy_cosine"   # a `_` in the name: the scaling labels split at the registered name
    SamplingOptions = CosineSampling

    def noise_schedule(self):
        return CosineSchedule()

    def corrupt(self, x0, t, generator=None, loss_mask=None):
        masked = torch.rand(x0.shape, generator=generator, device=x0.device) < (1 - self.schedule.alpha(t))[:, None]
        if loss_mask is not None:
            masked &= loss_mask
        return torch.where(masked, self.mask_id, x0), masked

    def forward_sample(self, x0, t, generator=None):
        return self.corrupt(x0, t, generator)[0]

    def nelbo(self, net, x0, t, generator=None, loss_mask=None):
        z, masked = self.corrupt(x0, t, generator, loss_mask)
        weight = -self.schedule.alpha_prime(t) / (1 - self.schedule.alpha(t))
        return weight * self.token_nll(net, z, x0, select=masked).sum(1)

    def loss(self, net, x0, t, generator=None, loss_mask=None):
        return self.nelbo(net, x0, t, generator, loss_mask).sum() / covered_tokens(x0, loss_mask)

    def sample(self, net, request, device="cpu"):
        greedy_last = self.sampling_settings(request.options).greedy_last
        gen, z, fixed = seeded_start(request, self.mask_id, device)
        confidence, grid, clock, nfe = fixed.float(), time_grid(request.steps), Clock(), 0
        for k in range(request.steps):
            t, s = float(grid[k]), float(grid[k + 1])
            u = torch.rand(z.shape, generator=gen).to(device)
            reveal = (z == self.mask_id) & ~fixed & (u < self.schedule.reveal_probability(t, s))
            if reveal.any():
                nfe += 1
                probs = filter_probs(self.subs_logits(net(z, select=reveal)), request.temperature, request.top_p)
                last = greedy_last and k == request.steps - 1
                new = probs.argmax(-1) if last else draw(probs, torch.rand(probs.shape[0], generator=gen).to(device))
                z = z.masked_scatter(reveal, new)
                confidence = confidence.masked_scatter(reveal, probs.gather(-1, new[:, None]).squeeze(-1))
            yield Step(step=k + 1, t=t, s=s, tokens=z.clone(), changed=reveal, confidence=confidence.clone(),
                       nfe=nfe, elapsed=clock())


# --- worked example 2: a margin strategy in a few lines ------------------------------------------
def top_two_gap(logits, ids, p):
    top = logits.softmax(-1).topk(2, dim=-1).values
    return top[:, 0] - top[:, 1]


class Margin(Ranked):
    name = "toy_margin"
    summary = "reveal the masked positions whose top-1 minus top-2 probability is largest"
    Options = RankedOptions

    def score_for(self, o):
        return top_two_gap
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def worked_examples():
    register(CosineMasked)
    register_strategy(Margin)
    yield
    REGISTRY.pop(CosineMasked.name)
    SAMPLERS.pop(Margin.name)


FAMILIES = sorted({*REGISTRY, CosineMasked.name})


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(params=FAMILIES)
def trained(request, tiny_checkpoint):
    """(family name, run directory, its LanguageModel) for every registered family and the cosine one."""
    run = tiny_checkpoint(request.param)
    return request.param, run, load(run)


def test_the_worked_examples_are_registered_only_here():
    assert CosineMasked.name in REGISTRY and Margin.name in SAMPLERS
    assert Margin.name in supported(CosineMasked) and Margin.name not in supported(REGISTRY["duo"])


def test_training_records_finite_losses_and_the_flops_of_its_steps(trained):
    name, run, model = trained
    records = read_metrics(run)
    train = [r for r in records if "train_loss" in r]
    assert train and all(math.isfinite(r["train_loss"]) for r in train), records
    m, last = model.cfg.model, train[-1]
    per_seq = train_flops_per_sequence(m.n_layers, m.d_model, m.vocab_size, model.cfg.data.seq_len)
    assert last["flops"] == pytest.approx(last["step"] * model.cfg.train.batch_size * per_seq, rel=1e-9)


def test_nelbo_is_finite_and_non_negative(trained):
    _, _, model = trained
    x0 = torch.randint(0, model.cfg.model.vocab_size, (4, model.max_length))
    x0[x0 == model.family.mask_id] = 0
    nelbo = model.nelbo(x0, generator=torch.Generator().manual_seed(0))
    assert nelbo.shape == (4,) and torch.isfinite(nelbo).all() and (nelbo >= 0).all(), nelbo


def test_every_offered_strategy_ends_with_no_mask_left(trained):
    _, _, model = trained
    offered = supported(model.family)
    assert offered[0] == "ancestral" and set(offered) <= set(names())
    for strategy in offered:
        req = SampleRequest(num_samples=2, length=16, steps=4, seed=2, prompt=model.encode("It")[:1], sampler=strategy,
                            sampler_options={"block_size": 8} if "block_size" in SAMPLERS[strategy].option_names() else {})
        steps = list(model.sample(req))
        assert steps and (steps[-1].tokens != model.family.mask_id).all(), strategy
        assert steps[-1].tokens[:, 0].tolist() == [req.prompt[0]] * 2, strategy


def test_the_gui_start_state_matches_the_first_steps(trained):
    """A family that starts from all-[MASK] (the GUI's `starts_masked`) never changes a revealed token
    under its ancestral sampler: every position holds [MASK] until the one step that reveals it."""
    pytest.importorskip("gradio")
    from gui.live import starts_masked
    _, _, model = trained
    fam = model.family
    start = fam.forward_sample(torch.zeros(1, 8, dtype=torch.long), torch.ones(1), torch.Generator().manual_seed(0))
    assert starts_masked(fam) == (start is None or bool((start == fam.mask_id).all()))
    if not starts_masked(fam):
        return
    steps = list(model.sample(SampleRequest(num_samples=2, length=16, steps=6, seed=1)))
    before = torch.full_like(steps[0].tokens, fam.mask_id)
    for s in steps:
        assert (before[s.changed] == fam.mask_id).all() and torch.equal(s.tokens[~s.changed], before[~s.changed])
        before = s.tokens


def test_the_explorer_plans_every_offered_strategy(trained):
    pytest.importorskip("gradio")
    from gui.explorer import plan
    name, run, model = trained
    assert plan({run: model}, names(), [4]) == [(run, s) for s in supported(model.family)]


def test_save_and_load_give_the_same_model(trained, tmp_path):
    _, run, model = trained
    out = save_checkpoint(tmp_path / "copy", model.cfg, model.net.state_dict(), str(checkpoint_dir(run) / TOKENIZER))
    again = load(str(out))
    assert type(again.family) is type(model.family) and again.family.options == model.family.options
    req = SampleRequest(num_samples=2, length=12, steps=3, seed=4)
    assert torch.equal(again.generate(req)[1].tokens, model.generate(req)[1].tokens)
    x0 = torch.randint(0, model.family.mask_id, (2, 12))
    t = torch.full((2,), 0.5)
    assert torch.equal(again.nelbo(x0, t, torch.Generator().manual_seed(1)), model.nelbo(x0, t, torch.Generator().manual_seed(1)))


def test_family_sampling_options_are_refused_by_strategies_that_do_not_read_them(trained):
    _, _, model = trained
    fam = model.family
    for spec in dataclasses.fields(fam.SamplingOptions):
        given = {spec.name: fam.sampling_defaults()[spec.name]}
        for strategy in supported(fam):
            req = SampleRequest(length=8, steps=2, sampler=strategy, options=given)
            if SAMPLERS[strategy].reads_family_options:
                model.check_request(req)
            else:
                with pytest.raises(UserError, match=f"does not read family {fam.name}'s sampling option '{spec.name}'"):
                    model.check_request(req)


# --- the worked examples do what they claim ------------------------------------------------------
def test_the_cosine_schedule_takes_floats_and_tensors_alike():
    sch = CosineSchedule()
    t = torch.tensor([0.0, 0.3, 1.0])
    assert torch.allclose(sch.alpha(t), torch.tensor([sch.alpha(float(x)) for x in t]))
    assert sch.alpha(0.0) == 1.0 and abs(sch.alpha(1.0)) < 1e-12
    grad = torch.func.grad(lambda x: sch.alpha(x))(torch.tensor(0.3))   # alpha' is alpha's derivative
    assert float(grad) == pytest.approx(sch.alpha_prime(0.3))


def test_the_margin_strategy_reveals_the_largest_margins_first(tiny_checkpoint):
    """Each step's revealed positions hold the largest top-1 minus top-2 gaps, recomputed by a
    separate forward pass of the denoiser on the step's input; and it agrees with confidence:rank=margin."""
    model = load(tiny_checkpoint("mdlm"))
    req = SampleRequest(num_samples=2, length=16, steps=4, seed=3, sampler=Margin.name, sampler_options={"k": 3})
    steps = list(model.sample(req))
    before = torch.full_like(steps[0].tokens, model.family.mask_id)
    for s in steps:
        with torch.no_grad():
            probs = model.family.subs_logits(model.net(before)).softmax(-1)
        top = probs.topk(2, dim=-1).values
        gap = (top[..., 0] - top[..., 1]).masked_fill(before != model.family.mask_id, -1.0)
        for b in range(2):
            chosen = s.changed[b].nonzero().flatten()
            assert len(chosen) == min(3, int((before[b] == model.family.mask_id).sum()))
            assert gap[b, chosen].min() >= gap[b].topk(len(chosen)).values.min() - 1e-5
        before = s.tokens
    library = SampleRequest(**{**req.__dict__, "sampler": "confidence", "sampler_options": {"k": 3, "rank": "margin"}})
    assert torch.equal(model.generate(library)[1].tokens, steps[-1].tokens)


def test_an_unread_option_is_exit_2_on_the_command_line(tiny_checkpoint, capsys):
    from toolkit.cli.sample import main
    run = tiny_checkpoint(CosineMasked.name)
    assert main([run, "--steps", "2", "--length", "8", "--option", "greedy_last=true", "--json"]) == 0
    json.loads(capsys.readouterr().out)
    with pytest.raises(SystemExit) as e:
        main([run, "--steps", "2", "--length", "8", "--sampler", "confidence", "--option", "greedy_last=true"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "sampler confidence does not read family toy_cosine's sampling option 'greedy_last'" in err


def test_an_unread_option_is_the_panels_message_in_the_app(tiny_checkpoint):
    """Given to a strategy that does not read it, a family option is that model's message; a control left
    at its declared default (the app always sends one) is not an option given."""
    pytest.importorskip("gradio")
    from gui.live import Settings, interleave, start
    from gui.models import ModelRegistry
    run = tiny_checkpoint(CosineMasked.name)
    registry = ModelRegistry([run], evaluator=None)
    for value, refused in (("true", True), (False, False)):
        runs = start(registry, [run], Settings(length=8, steps=2, options={
            CosineMasked.name: {"sampler": "confidence", "greedy_last": value}}))
        for _ in interleave(runs):
            pass
        assert (runs[0].error is not None) == refused, runs[0].error
        if refused:
            assert "does not read family toy_cosine's sampling option 'greedy_last'" in runs[0].error
            assert "\n" not in runs[0].error


def test_the_gui_api_only_grows_when_a_family_is_registered():
    """/generate's parameters before registering a family are a prefix of those after; /denoise's stay."""
    pytest.importorskip("gradio")
    from gui.app import build_app
    from gui.models import ModelRegistry

    def api():
        info = build_app(ModelRegistry(["mdlm"], evaluator=None)).get_api_info()["named_endpoints"]
        return {k: [p["parameter_name"] for p in info[k]["parameters"]] for k in ("/generate", "/denoise")}

    @dataclass
    class ExtraSampling:
        knob: int = option(1, "a toy option")

    class Extra(CosineMasked):
        name = "aaa_extra"   # sorts before every other family: registration order must still append it
        SamplingOptions = ExtraSampling

    before = api()
    register(Extra)
    try:
        after = api()
    finally:
        REGISTRY.pop(Extra.name)
    assert after["/denoise"] == before["/denoise"]
    assert after["/generate"][:len(before["/generate"])] == before["/generate"]
    assert after["/generate"][len(before["/generate"]):] == ["aaa_extra_knob", "aaa_extra_strategy",
                                                             "aaa_extra_strategy_options"]


def test_scaling_labels_split_at_a_registered_family_name():
    from toolkit.scaling.plan import Variant, label_parts
    from toolkit.scaling.plots import variant_label
    label = Variant(CosineMasked.name, (("loss", "x"),)).label
    assert label_parts(label) == (CosineMasked.name, "loss-x") and variant_label(label) == "toy_cosine, loss=x"
    assert label_parts("mdlm_loss-low_var") == ("mdlm", "loss-low_var")
