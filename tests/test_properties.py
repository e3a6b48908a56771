"""Property-based checks (hypothesis): any override string, sampler request or GUI input ends in a valid
result or a clean UserError, never another exception. Each test prints how many cases it tried."""
from __future__ import annotations

import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from toolkit.config import RunConfig  # noqa: E402
from toolkit.errors import UserError  # noqa: E402
from toolkit.resolve import resolve  # noqa: E402
from toolkit.sample_request import SampleRequest  # noqa: E402

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None, derandomize=True)
KEYS = ["family", "model", "lr", "batch_size", "grad_accum", "seq_len", "max_steps", "loss", "alpha_0", "resume",
        "precision", "attention", "warmup_steps", "optim.lr", "train.seed", "data.val_fraction", "keep_last",
        "on_nonfinite", "eval_every", "model.d_model", "model.n_heads", "min_lr_ratio", "nope", "train.nope", "x.y"]
VALUES = st.one_of(
    st.sampled_from(["0", "-1", "1", "2", "7", "1e12", "1e-3", "nan", "inf", "-inf", "true", "false", "mdlm", "ar",
                     "duo", "esolm", "low_var", "elbo", "cpu-xs", "tiny", "huge", "bf16", "auto", "", " ", "0.5",
                     "1.5", "skip", "stop", "12.5"]),
    st.text(max_size=12),
)
OVERRIDE = st.one_of(st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"), st.text(max_size=20))
tried: dict[str, int] = {}


def count(name: str) -> None:
    tried[name] = tried.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print("\nhypothesis cases tried: " + ", ".join(f"{k}={v}" for k, v in sorted(tried.items())))


@FAST
@given(st.lists(OVERRIDE, max_size=6))
def test_override_strings_give_a_config_or_a_user_error(args):
    count("overrides")
    try:
        cfg = resolve(args)
    except UserError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(cfg, RunConfig) and cfg.train.max_steps > 0 and cfg.optim.lr > 0
    assert all(math.isfinite(v) for v in (cfg.optim.lr, cfg.optim.min_lr_ratio, cfg.data.val_fraction))


@pytest.fixture(scope="module")
def model():
    import toolkit
    torch.set_num_threads(1)
    return toolkit.load("mdlm")


NUM = st.one_of(st.integers(-3, 40), st.sampled_from([10 ** 12, 129, 128]))
FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 0.5, 1.0, 1.0001]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture], database=None, derandomize=True)
@given(steps=NUM, length=NUM, num_samples=st.integers(-1, 2), temperature=FLOAT, top_p=FLOAT,
       prompt=st.lists(st.integers(-2, 5000), max_size=4),
       options=st.dictionaries(st.sampled_from(["greedy_tail", "alpha_0", "foo"]),
                               st.sampled_from(["true", "false", "0.5", "x", ""]), max_size=2))
@example(steps=2, length=8, num_samples=1, temperature=1.0, top_p=1.0, prompt=[-2], options={})   # found by hand:
@example(steps=2, length=8, num_samples=1, temperature=1.0, top_p=1.0, prompt=[5000], options={})  # ids off the vocab
def test_sampler_options_give_samples_or_a_user_error(model, steps, length, num_samples, temperature, top_p,
                                                      prompt, options):
    count("sampler")
    req = SampleRequest(num_samples=num_samples, length=length, steps=steps, temperature=temperature, top_p=top_p,
                        prompt=prompt, options=options)
    try:
        model.check_request(req)
        if steps > 40:
            return   # valid but slow to run here; the checks above are what this test is about
        texts, last = model.generate(req)
    except UserError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert len(texts) == num_samples and last.tokens.shape == (num_samples, length)


@pytest.fixture(scope="module")
def denoise():
    from gui.app import build_app
    from gui.models import ModelRegistry
    from gui.policy import AccessPolicy
    demo = build_app(ModelRegistry(["mdlm"]), policy=AccessPolicy.for_launch("0.0.0.0", share=False))
    fns = demo.fns.values() if isinstance(demo.fns, dict) else demo.fns
    return next(f.fn for f in fns if f.api_name == "denoise")


ANY = st.one_of(st.integers(-5, 600), st.floats(allow_nan=True), st.text(max_size=5), st.none(),
                st.sampled_from([10 ** 30, "8", "2.0", "1e3"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture], database=None, derandomize=True)
@given(prompt=st.one_of(st.text(max_size=40), st.none()), families=st.one_of(
           st.lists(st.sampled_from(["mdlm", "ar", "../etc", ""]), max_size=2), st.text(max_size=6)),
       length=ANY, steps=ANY, seed=ANY)
def test_gui_inputs_give_a_result_or_a_message(denoise, prompt, families, length, steps, seed):
    import gradio as gr
    count("gui")
    try:
        out = denoise(prompt, families, length, steps, seed)
    except gr.Error as e:
        assert str(e.message if hasattr(e, "message") else e)
        return
    assert set(out["texts"]) == set([families] if isinstance(families, str) else families)
