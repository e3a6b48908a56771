"""The app's logic (live runs, token states, guards, explorer), its `denoise` API through
gradio_client, 8 concurrent clients, and the embedded demo models."""
from __future__ import annotations

import json
import math
import random
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from gui import explorer, render
from gui.live import MAX_STEPS, Settings, check_settings, interleave, start, trace_json
from gui.models import ModelRegistry, embedded_names
from gui.strategies import DEFAULT_STRATEGY
from toolkit.errors import UserError
from toolkit.families import REGISTRY
from toolkit.options import describe
from toolkit.sample_request import SampleRequest

FAMILIES = ("ar", "mdlm", "duo", "esolm")


@pytest.fixture(scope="module")
def registry(tiny_checkpoint):
    torch.set_num_threads(1)
    keys = [tiny_checkpoint(f) for f in FAMILIES]
    return ModelRegistry(keys, evaluator=keys[0])


@pytest.fixture(scope="module")
def server(registry):
    from gui.app import serve_in_background
    demo, url = serve_in_background(registry, concurrency=2)
    yield url
    demo.close()


def finish(registry, keys, settings):
    runs = start(registry, keys, settings)
    for _ in interleave(runs):
        pass
    return runs


def test_live_runs_reproduce_direct_sampling(registry):
    """Interleaving the samplers changes nothing: each final text is the model's own for that request."""
    s = Settings(prompt="It is", length=20, steps=6, seed=3)
    runs = finish(registry, registry.keys, s)
    for r in runs:
        m = registry.get(r.key)
        text, last = m.generate(SampleRequest(length=20, steps=6, seed=3, prompt=m.encode("It is")))
        assert r.error is None and r.done
        assert r.texts()[0] == text[0]
        assert r.trace[-1]["tokens"] == last.tokens[0].tolist()
        assert [rec["step"] for rec in r.trace] == list(range(1, len(r.trace) + 1))
        assert r.stats()["tokens_per_s"] > 0 and r.stats()["nfe"] == last.nfe


def test_token_states_follow_the_trace(registry):
    """Masked families reveal (never 'change') and end with nothing masked; Duo never shows a mask."""
    runs = {r.model.family.name: r for r in finish(registry, registry.keys, Settings(length=16, steps=5, seed=1))}
    for name, run in runs.items():
        states = [[st for st, _, _ in render.token_states(run, i)] for i in range(len(run.trace))]
        assert "masked" not in states[-1], name
        for i, row in enumerate(states):     # a coloured state exactly where the trace says 'changed'
            marked = {j for j, st in enumerate(row) if st in ("revealed", "changed")}
            assert marked == set(run.trace[i]["changed"]), (name, i)
        if run.masked_start:
            assert not any("changed" in row for row in states), name
        else:
            assert not any("masked" in row for row in states) and "changed" in states[0], name
    assert runs["mdlm"].masked_start and not runs["duo"].masked_start
    html = render.render_runs(list(runs.values()))
    assert html.count('class="dlm-panel"') == 4 and html.count('data-final="1"') == 4


def test_guards_give_messages_not_crashes(registry):
    models = {k: registry.get(k) for k in registry.keys}
    cap = min(m.max_length for m in models.values())
    bad = [(Settings(length=cap + 1), f"length must be between 1 and {cap} tokens for the selected models "
                                      f"(got {cap + 1})"),
           (Settings(length=0), "length must be between 1 and"), (Settings(length=8, steps=0), "steps must be between 1 and"),
           (Settings(length=8, steps=100_000), f"steps must be between 1 and {MAX_STEPS} (got 100000)"),
           (Settings(length=8, temperature=-1), "temperature must be between 0 and"),
           (Settings(length=8, temperature=math.nan), "temperature must be between 0 and"),
           (Settings(length=8, top_p=0), "top_p must be in (0, 1] (got 0"), (Settings(length=8, top_p=2), "top_p must be in (0, 1] (got 2")]
    for s, needle in bad:
        with pytest.raises(UserError) as e:
            check_settings(s, models)
        assert needle in str(e.value), (needle, str(e.value))
    with pytest.raises(UserError, match="select at least one"):
        start(registry, [], Settings(length=8))
    with pytest.raises(UserError, match="unknown model"):
        start(registry, ["/not/registered"], Settings(length=8))
    with pytest.raises(UserError, match="not found|not a checkpoint"):
        registry.add("/no/such/checkpoint")


def test_prompt_length_advice_can_be_followed(registry):
    """A prompt longer than the models' context is told to shrink below it (never 'raise the length
    above 202' past the length's maximum); a prompt that fits is told the length range it may take."""
    models = {k: registry.get(k) for k in registry.keys}
    cap = min(m.max_length for m in models.values())
    long_prompt = "word " * (2 * cap)
    n = max(len(m.encode(long_prompt)) for m in models.values())
    assert n > cap
    with pytest.raises(UserError, match=f"at most {cap}: shorten it to fewer than {cap} tokens") as e:
        check_settings(Settings(prompt=long_prompt, length=cap), models)
    assert "raise the length" not in str(e.value)
    short = "word " * 6
    m = len(models[registry.keys[0]].encode(short))
    with pytest.raises(UserError, match=rf"raise the length above {m} \(at most {cap}\)"):
        check_settings(Settings(prompt=short, length=m), {registry.keys[0]: models[registry.keys[0]]})


def test_family_option_error_stays_in_its_panel(registry):
    """alpha_0 < 1 on an alpha_0 = 1 Eso-LM checkpoint: that panel says why; the others run."""
    s = Settings(length=12, steps=4, options={"esolm": {"alpha_0": "0.5"}, "duo": {"tail": "none"}})
    runs = {r.model.family.name: r for r in finish(registry, registry.keys, s)}
    assert "alpha_0" in runs["esolm"].error
    assert "alpha_0" in render.render_panel(runs["esolm"])
    assert all(r.error is None and r.done for n, r in runs.items() if n != "esolm")
    assert runs["duo"].request.options == {"tail": "none"}


def test_option_controls_come_from_sampling_options():
    import gradio as gr

    from gui.strategies import family_option_controls
    with gr.Blocks():
        controls = family_option_controls()
    expected = {(f, s.name) for f, fam in REGISTRY.items() for s in describe(fam.SamplingOptions)}
    assert {(f, o) for f, o, _ in controls} == expected


def test_trace_json_is_complete(registry):
    s = Settings(prompt="It", length=12, steps=4, seed=0)
    runs = finish(registry, registry.keys, s)
    data = json.loads(json.dumps(trace_json(runs, s)))
    assert [r["key"] for r in data["runs"]] == registry.keys
    for r, run in zip(data["runs"], runs):
        assert len(r["steps"]) == len(run.trace) and r["final_text"] == run.texts()[0]
        assert set(r["token_strings"]) >= {str(t) for t in r["steps"][-1]["tokens"]}


def test_pareto_front():
    rows = [{"tokens_per_s": 10, "gen_ppl": 50}, {"tokens_per_s": 20, "gen_ppl": 60},
            {"tokens_per_s": 5, "gen_ppl": 70}, {"tokens_per_s": 20, "gen_ppl": 55}]
    assert explorer.pareto_front(rows, "tokens_per_s", tie=0) == [0, 3]          # plain Pareto dominance
    rows[3]["repetitive"] = True       # off the frontier, which then takes the next best
    assert explorer.pareto_front(rows, "tokens_per_s", tie=0) == [0, 1]
    rows[3]["repetitive"], rows[0]["self_scored"] = False, True     # scored by itself: off the frontier too
    assert explorer.pareto_front(rows, "tokens_per_s", tie=0) == [3]
    assert explorer.parse_steps("8, 16 8 32") == [8, 16, 32]
    for bad in ("", "x", "0", str(MAX_STEPS + 1)):
        with pytest.raises(UserError):
            explorer.parse_steps(bad)


def test_frontier_treats_close_speeds_as_a_tie():
    """A point is beaten only by one no worse in Gen PPL and more than SPEED_TIE faster: medians that a
    rerun can swap (closer than that) keep both on the frontier."""
    tie = explorer.SPEED_TIE
    a = {"tokens_per_s": 100, "gen_ppl": 40}
    for noisy in (1 + tie * 0.5, 1 + tie * 0.9, 1 / (1 + tie * 0.9)):     # b's speed in three reruns
        assert explorer.pareto_front([a, {"tokens_per_s": 100 * noisy, "gen_ppl": 35}], "tokens_per_s") == [0, 1]
    assert explorer.pareto_front([a, {"tokens_per_s": 100 * (1 + tie) * 1.01, "gen_ppl": 35}], "tokens_per_s") == [1]
    assert explorer.pareto_front([a, {"tokens_per_s": 100 * (1 + tie) * 1.01, "gen_ppl": 45}], "tokens_per_s") == [0, 1]


def test_cost_frontier_is_plain_dominance_drawn_as_a_one_way_staircase():
    rows = [{"nfe_per_token": c, "gen_ppl": p, "pareto": False} for c, p in
            [(1.0, 40), (0.25, 90), (0.5, 60), (0.5, 70), (0.125, 300), (1.0, 45)]]
    assert explorer.pareto_front(rows) == [0, 1, 2, 4]      # (0.5, 70) and (1.0, 45) are beaten
    with pytest.raises(UserError, match="unknown frontier axis"):
        explorer.pareto_front(rows, "seconds")
    explorer.mark_front(rows)
    xs, ys = explorer.staircase(rows)
    assert xs == [0.125, 0.25, 0.5, 1.0] and ys == [300, 90, 60, 40]
    rows[0]["pareto"] = rows[5]["pareto"] = True    # a tie-kept point that is worse than a cheaper one
    assert explorer.staircase(rows) == (xs, ys)   # only ever steps down


def test_repetition_flag_is_calibrated_on_real_text(registry):
    """Real validation text of the samples' length is (almost) never flagged; text repeating a few words is,
    including the 64-token case the old half-of-log(length) rule let through (entropy ~2.8 nats)."""
    from toolkit.data import load_data
    from toolkit.evaluation.generation import mean_entropy
    judge = registry.evaluator()
    val = load_data(judge.cfg.data).val
    for length in (16, 24, 32):
        ref = explorer.reference(judge, length)
        assert ref.threshold == pytest.approx(explorer.REPETITIVE_FRACTION * ref.entropy)
        chunks = [[int(t) for t in row[:length]] for row in val[:128]]
        flagged = sum(mean_entropy([c]) < ref.threshold for c in chunks)
        assert flagged <= 0.05 * len(chunks), (length, flagged)
        looping = [int(t) for t in val[0, :4]] * (length // 4)          # four tokens over and over
        assert mean_entropy([looping]) < ref.threshold
        assert 0 < ref.gen_ppl < 1e6 and ref.chunks == explorer.REFERENCE_CHUNKS
    ref64 = explorer.Reference(length=64, entropy=3.85, gen_ppl=55, chunks=32)   # the embedded models' text
    assert 2.9 < ref64.threshold and 2.9 >= 0.5 * math.log(64)                  # now flagged, then not


def test_explorer_sweep_scores_and_marks_frontier(registry):
    keys = registry.keys[1:3]
    for rows in explorer.sweep(registry, keys, [2, 4], Settings(length=12, seed=0), num_samples=2, repeats=3):
        pass
    assert len(rows) == 4
    for r in rows:       # the median of three timed runs, inside their range
        assert r["tokens_per_s_min"] <= r["tokens_per_s"] <= r["tokens_per_s_max"]
        assert r["tokens_per_s"] == pytest.approx(2 * 12 / r["seconds"], rel=0.01)
    assert not any(r["self_scored"] for r in rows)
    *_, judged = explorer.sweep(registry, registry.keys[:1], [2], Settings(length=12, seed=0), 1, repeats=1)
    assert judged[0]["self_scored"] and not judged[0]["pareto"]       # the judge's own samples
    assert all(math.isfinite(r["gen_ppl"]) and r["gen_ppl"] > 1 and r["entropy"] > 0 and r["tokens_per_s"] > 0
               for r in rows)
    front = [r for r in rows if r["pareto"]]
    fair = [r for r in rows if not r["repetitive"]]
    assert all(not f["repetitive"] for f in front) and (front or not fair)
    assert all(not (o["tokens_per_s"] > f["tokens_per_s"] and o["gen_ppl"] < f["gen_ppl"]) for f in front for o in fair)
    assert explorer.explorer_plot(rows) is not None


class NoisyClock:
    """perf_counter for a loaded machine: every reading advances by a random 0.05-0.5 s."""

    def __init__(self, seed):
        self.now, self.rng = 0.0, random.Random(seed)

    def __call__(self):
        self.now += self.rng.uniform(0.05, 0.5)
        return self.now


def test_two_default_sweeps_under_different_load_give_the_identical_frontier(registry, monkeypatch):
    from gui.explorer_tab import default_selection
    keys, strategies = default_selection(registry)
    sweeps = []
    for seed in (1, 2):
        monkeypatch.setattr(time, "perf_counter", NoisyClock(seed))
        *_, rows = explorer.sweep(registry, keys, list(explorer.DEFAULT_STEP_COUNTS[:3]), Settings(length=12, seed=0),
                                  2, strategies, repeats=2)
        sweeps.append(rows)
    monkeypatch.undo()
    front = [[(r["model"], r["sampler"], r["steps"]) for r in rows if r["pareto"]] for rows in sweeps]
    assert front[0] == front[1] and front[0]
    assert [r["tokens_per_s"] for r in sweeps[0]] != [r["tokens_per_s"] for r in sweeps[1]]   # the clocks differed
    assert all(r["nfe_per_token"] == pytest.approx(r["nfe"] / 12, abs=1e-4) for r in sweeps[0])


def test_default_plan_is_accepted_whatever_strategies_are_registered(registry, monkeypatch):
    """Defaults come from the registry: the default strategy plus the one most of the models offer; the
    point cap scales with the models ticked, so more registered strategies never refuse the defaults."""
    from gui.explorer_tab import default_selection
    from toolkit.samplers import SAMPLERS, Sampler, supported
    models = {k: registry.get(k) for k in registry.keys}
    for n in range(6):       # six toy strategies every family supports
        toy = type(f"Toy{n}", (Sampler,), {"name": f"toy{n}", "attentions": ("bidirectional", "causal_order")})
        monkeypatch.setitem(SAMPLERS, toy.name, toy())
    keys, ticked = default_selection(registry)
    assert len(ticked) == 2 and ticked[0] == DEFAULT_STRATEGY
    offered = [n for k in keys for n in supported(registry.get(k).family)]
    assert offered.count(ticked[1]) == max(offered.count(n) for n in set(offered) - {DEFAULT_STRATEGY})
    pairs = explorer.plan({k: models[k] for k in keys}, ticked, list(explorer.DEFAULT_STEP_COUNTS))
    assert len(pairs) * len(explorer.DEFAULT_STEP_COUNTS) <= explorer.point_cap(len(keys))
    every = list(SAMPLERS)
    with pytest.raises(UserError, match="points per model") as e:     # every strategy at many counts: refused
        explorer.plan({keys[1]: models[keys[1]]}, every, list(range(1, 9)))
    assert "\n" not in str(e.value)


def test_denoise_endpoint_with_gradio_client(registry, server):
    from gradio_client import Client
    client = Client(server, verbose=False)
    out = client.predict("It is", registry.keys, 16, 5, 11, api_name="/denoise")
    assert set(out["texts"]) == set(registry.keys) and not out["errors"]
    for key in registry.keys:
        m = registry.get(key)
        text, last = m.generate(SampleRequest(length=16, steps=5, seed=11, prompt=m.encode("It is")))
        assert out["texts"][key] == text[0]
        assert out["steps"][key] == last.step
    fam = {k: registry.get(k).family.name for k in registry.keys}
    assert all(out["steps"][k] >= 5 for k in registry.keys if fam[k] != "ar")   # AR: one step per token; Duo: +1 tail
    with pytest.raises(Exception, match="length must be between"):
        client.predict("", registry.keys, 10_000, 5, 0, api_name="/denoise")
    assert client.predict("", registry.keys[:1], 8, 2, 0, api_name="/denoise")["steps"]   # still serving


def test_eight_concurrent_clients(registry, server):
    from gradio_client import Client
    results, errors = {}, []

    def one(i):
        try:
            c = Client(server, verbose=False)
            results[i] = c.predict("", registry.keys, 12, 3, i, api_name="/denoise")
        except Exception as e:   # collected: the assertion below reports it
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors and sorted(results) == list(range(8))
    assert all(set(r["texts"]) == set(registry.keys) for r in results.values())
    assert len({r["texts"][registry.keys[1]] for r in results.values()}) > 1    # the seeds differ


def test_load_waves_answer_everything_in_bounded_memory(registry, server):
    """The CI load test (benchmarks/gui_load.py's hammer): two waves of 8 clients, each request answered,
    the server alive afterwards, and the second wave adds (almost) no memory: nothing accumulates."""
    from gui_load import hammer, peak_rss_mb, rss_mb
    first = hammer(server, registry.keys, 8, 12, 3, timeout=240)
    after_first = rss_mb()
    second = hammer(server, registry.keys, 8, 12, 3, timeout=240)
    grown = rss_mb() - after_first
    print(f"load: 2 x 8 clients, latency max {second['latency_max_s']} s, peak RSS {peak_rss_mb():.0f} MB, "
          f"second wave {grown:+.1f} MB")
    for r in (first, second):
        assert r["completed"] == 8 and r["unanswered"] == 0 and r["server_alive_after"], r
    assert grown < 100, f"memory grew by {grown:.0f} MB over a second wave of the same requests"


def test_full_queue_refuses_visibly(registry):
    """More clients than the queue holds: each request gets an answer or an explicit 'queue is full'."""
    from gui.app import serve_in_background
    from gui_load import hammer
    import time
    demo, url = serve_in_background(registry, concurrency=1, queue_size=1)
    real_get = registry.get
    registry.get = lambda key: time.sleep(1.5) or real_get(key)     # each request holds the worker a while
    try:
        r = hammer(url, registry.keys[:1], 6, 12, 4, timeout=240)
    finally:
        registry.get = real_get
        demo.close()
    assert r["unanswered"] == 0 and r["completed"] + len(r["errors"]) == 6 and r["completed"] >= 1
    assert r["errors"], "six clients at once with room for two: some must have been refused"
    assert all("queue" in e.lower() for e in r["errors"]), r["errors"]


@pytest.mark.skipif(set(FAMILIES) - set(embedded_names()), reason="embedded demo models not installed yet")
def test_embedded_demo_models():
    """The four embedded checkpoints load by name, stay small, and sample in the app's runner."""
    from toolkit.checkpoints import EMBEDDED_DIR
    size = sum(f.stat().st_size for name in FAMILIES for f in (EMBEDDED_DIR / name).iterdir())
    assert size < 25e6
    assert not any((EMBEDDED_DIR / n / "state.pt").exists() for n in FAMILIES)
    reg = ModelRegistry()
    assert reg.keys[:4] == list(FAMILIES)
    runs = finish(reg, list(FAMILIES), Settings(prompt="Elizabeth", length=24, steps=8, seed=0))
    for r in runs:
        assert r.error is None and r.model.family.name == r.key
        assert r.texts()[0].startswith("Elizabeth") and len(r.texts()[0]) > len("Elizabeth") + 10


def test_generate_endpoint_streams_and_guards(registry, server):
    """The UI's streaming handler: several updates per run, and a visible message for a bad request."""
    from gradio_client import Client
    client = Client(server, verbose=False)
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]["parameters"]
    defaults = [p["parameter_default"] for p in params]
    names = [p["parameter_name"] for p in params]

    def call(**over):
        args = list(defaults)
        for k, v in over.items():
            args[names.index(k)] = v
        return list(client.submit(*args, api_name="/generate"))

    n = len(names)
    assert n >= 8   # prompt, models, length, steps, temperature, top_p, seed, slow motion, family options...
    updates = call(**{names[0]: "It", names[1]: registry.keys, names[2]: 16, names[3]: 12, names[7]: 20})
    assert len(updates) >= 2 and "Done" in updates[-1][1]
    assert updates[-1][0].count('data-done="true"') == len(registry.keys)
    bad = call(**{names[1]: []})
    assert "select at least one model" in bad[-1][1]
    for name, value, needle in [("length", 10_000, "length must be between 1 and"), ("steps", 0, "steps must be between 1 and 512 (got 0)"),
                                ("steps", 100_000, "steps must be between 1 and 512 (got 100000)"),
                                ("temperature", -1, "temperature must be between 0 and"),
                                ("top_p", 2, "top_p must be in (0, 1] (got 2"), ("slow_motion_ms", -5, "slow_motion_ms must be")]:
        # the named message of check_settings (the /denoise one), never Gradio's "Value 0 is less than ..."
        status = call(**{names[1]: registry.keys, name: value})[-1][1]
        assert needle in status, (name, value, status)
    assert "Done" in call(**{names[0]: "", names[1]: registry.keys[:1], names[2]: 8, names[7]: 0})[-1][1]   # serving


def test_seed_beyond_64_bits_is_a_message(registry, server):
    """torch seeds are signed 64-bit: a larger seed is refused with a message, in the app and the API."""
    from gradio_client import Client
    with pytest.raises(UserError, match="seed must be"):
        start(registry, registry.keys, Settings(length=8, seed=99999999999999999999))
    with pytest.raises(UserError, match="seed must be"):
        start(registry, registry.keys, Settings(length=8, seed=-1))
    client = Client(server, verbose=False)
    with pytest.raises(Exception, match="seed must be"):
        client.predict("", registry.keys, 8, 2, 99999999999999999999, api_name="/denoise")


def test_token_labels_are_readable_and_keep_every_byte(registry):
    """Byte-level pieces of a character and control bytes show as `<0xE2>`, never as U+FFFD or a raw
    control character; read back, the labels give exactly the text's UTF-8 bytes."""
    import re
    m = registry.get(registry.keys[0])
    text = "It’s a café — naïve\x00\x04 ok"
    ids = m.encode(text)
    run = start(registry, registry.keys[:1], Settings(length=8))[0]
    labels = [run.token_string(i) for i in ids]
    assert any(re.fullmatch(r"(<0x[0-9A-F]{2}>)+", lab) for lab in labels)
    assert all("\ufffd" not in lab and all(c.isprintable() or c in "\n\t" for c in lab) for lab in labels)
    raw = b"".join(bytes(int(h, 16) for h in re.findall(r"<0x([0-9A-F]{2})>", lab))
                   if re.fullmatch(r"(<0x[0-9A-F]{2}>)+", lab) else lab.encode() for lab in labels)
    assert raw == m.decode(ids).encode()


def test_trace_records_what_ran(registry):
    """A run whose strategy options were refused records no request (and what was asked and why);
    a run that ran records the strategy and options it ran with."""
    s = Settings(length=12, steps=4, options={"mdlm": {"sampler": "confidence", "sampler_options": "k=x"},
                                              "esolm": {"sampler": "confidence", "sampler_options": "k=2"}})
    runs = finish(registry, registry.keys, s)
    data = {r["family"]: r for r in json.loads(json.dumps(trace_json(runs, s)))["runs"]}
    assert data["mdlm"]["request"] is None and data["mdlm"]["error"] and data["mdlm"]["asked"]["sampler"] == "confidence"
    assert data["esolm"]["request"]["sampler"] == "confidence" and data["esolm"]["request"]["sampler_options"] == {"k": 2}
    assert data["ar"]["request"]["sampler"] == data["duo"]["request"]["sampler"] == SampleRequest().sampler
    assert data["ar"]["error"] is None and data["esolm"]["error"] is None


def test_downloaded_trace_is_one_typed_record_that_replays(registry):
    """The saved trace keeps the prompt text, no top-level settings to contradict the runs, each run's
    request with typed options; toolkit.trace reads it back and replays every run to the same tokens."""
    from gui.denoise_tab import save_trace
    from toolkit.trace import load_trace, replay
    s = Settings(prompt="It is a truth", length=20, steps=6, seed=4, temperature=0.9,
                 options={"mdlm": {"sampler": "remdm", "sampler_options": "eta=0.1"},
                          "duo": {"tail": "none"}, "esolm": {"sampler": "confidence", "sampler_options": "k=2"}})
    runs = finish(registry, registry.keys, s)
    path = save_trace(runs, s)
    raw = json.loads(Path(path).read_text())
    assert set(raw) == {"format", "prompt", "runs"} and raw["prompt"] == "It is a truth"
    trace = load_trace(path)
    by_family = {r.family: r for r in trace.runs}
    assert by_family["mdlm"].request.sampler == "remdm" and by_family["mdlm"].request.sampler_options == {"eta": 0.1}
    assert by_family["esolm"].request.sampler_options == {"k": 2} and by_family["duo"].request.options == {"tail": "none"}
    for traced, run in zip(trace.runs, runs):
        assert traced.request == run.request and traced.request.prompt == run.model.encode("It is a truth")
        assert traced.tokens == run.trace[-1]["tokens"]
        assert replay(traced) == traced.tokens, traced.key        # loaded afresh from its checkpoint
        assert replay(traced, model=registry.get(traced.key)) == traced.tokens


def test_running_requests_share_the_cores(registry):
    """Two requests at once sample on half the threads each (a thread count is per OS thread in torch,
    so each step sets its own); one request alone gets them all; outside a request nothing changes."""
    from gui.policy import CORES, AccessPolicy
    policy, saved = AccessPolicy(), CORES.total
    CORES.total = 4
    seen: dict = {}
    both = threading.Barrier(2)

    def request(name: str, wait: bool):
        with policy.run_slot(None):
            if wait:
                both.wait()
            finish(registry, registry.keys[:1], Settings(length=8, steps=2))   # Run.advance applies the share
            seen[name] = torch.get_num_threads()
            if wait:
                both.wait()

    def outside():
        torch.set_num_threads(3)
        CORES.apply()
        seen["outside"] = torch.get_num_threads()

    try:
        pair = [threading.Thread(target=request, args=(n, True)) for n in ("a", "b")]
        for t in pair:
            t.start()
        for t in pair:
            t.join()
        alone = threading.Thread(target=request, args=("alone", False))
        alone.start()
        alone.join()
        bystander = threading.Thread(target=outside)
        bystander.start()
        bystander.join()
    finally:
        CORES.total = saved
        torch.set_num_threads(1)
    assert seen == {"a": 2, "b": 2, "alone": 4, "outside": 3} and CORES.running == 0


def test_remasked_tokens_show_what_they_withdrew(registry):
    """ReMDM sends revealed tokens back to [MASK]: the panel shows the withdrawn token struck through."""
    s = Settings(prompt="It", length=24, steps=12, seed=2,
                 options={"mdlm": {"sampler": "remdm", "sampler_options": "eta=0.5, schedule=cap"}})
    run = finish(registry, [registry.keys[1]], s)[0]
    assert run.error is None
    shown = 0
    for i, rec in enumerate(run.trace):
        if not rec["remasked"]:
            continue
        html = render.render_panel(run, upto=i + 1)
        for pos in rec["remasked"]:
            withdrawn = run.trace[i - 1]["tokens"][pos]
            assert withdrawn != run.model.family.mask_id
            label = render._esc(run.token_string(withdrawn))
            assert f'>{label}</span>' in html and "withdrew" in html
            shown += 1
    assert shown > 0


def test_api_parameters_are_named_and_denoise_takes_the_ui_options(registry, server):
    """/generate names every input (no param_8 ...) and output (no value_37); /denoise takes
    temperature, top-p, a strategy and family options and samples exactly what they ask for."""
    import re
    from gradio_client import Client
    client = Client(server, verbose=False)
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    gen = [p["parameter_name"] for p in api["/generate"]["parameters"]]
    assert not [n for n in gen if re.fullmatch(r"param_\d+", n)], gen
    assert {"prompt", "models", "seed", "mdlm_strategy", "mdlm_strategy_options", "duo_tail"} <= set(gen)
    assert not [r["label"] for r in api["/generate"]["returns"] if re.fullmatch(r"value_\d+", r["label"] or "")]
    assert [r["label"] for r in api["/denoise"]["returns"]] == ["result"]          # not gr.api's "1st"
    assert api["/explore"]["returns"][0]["label"] == "Gen PPL vs cost"  # not gen_ppl_vs_tokenss
    den = [p["parameter_name"] for p in api["/denoise"]["parameters"]]
    assert den[:5] == ["prompt", "families", "length", "steps", "seed"]      # positional callers keep working
    assert {"temperature", "top_p", "strategies", "options"} <= set(den)
    mdlm = registry.keys[1]
    out = client.predict(prompt="It is", families=[mdlm], length=16, steps=4, seed=5, temperature=0.7, top_p=0.9,
                         strategies={"mdlm": "confidence:k=2"}, options={}, api_name="/denoise")
    m = registry.get(mdlm)
    text, _ = m.generate(SampleRequest(length=16, steps=4, seed=5, temperature=0.7, top_p=0.9, prompt=m.encode("It is"),
                                       sampler="confidence", sampler_options={"k": 2}))
    assert out["texts"][mdlm] == text[0] and not out["errors"]
    out = client.predict(prompt="", families=[mdlm], length=8, steps=2, seed=0, strategies={"mdlm": "nonsense"},
                         api_name="/denoise")
    assert "nonsense" in out["errors"][mdlm]


def test_port_in_use_is_one_line(registry, capsys):
    """`python -m gui --port N` with N taken: exit 2 and one line naming the port and --port."""
    import socket

    from gui.__main__ import main
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SystemExit) as e:
            main(["--port", str(port), "--models", registry.keys[0], "--evaluator", registry.keys[0]])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and str(port) in err and "--port" in err


def test_explorer_figure_tells_families_and_strategies_apart(registry):
    """Colour = family (distinct), marker = strategy (distinct), the legend outside the data, and labels
    that say what they count (steps taken, median timings, the judge)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from toolkit.plotting import family_colour, strategy_marker
    from toolkit.samplers import names
    assert len({family_colour(f) for f in REGISTRY}) == len(REGISTRY)
    assert len({strategy_marker(s) for s in names()}) == len(names())
    rows = [{"model": m, "family": f, "sampler": s, "steps": st, "nfe": st, "tokens_per_s": tps,
             "tokens_per_s_min": tps * 0.9, "tokens_per_s_max": tps * 1.1, "gen_ppl": ppl, "entropy": 3.5,
             "repetitive": rep, "self_scored": m == "ar", "pareto": False}
            for m, f, s, st, tps, ppl, rep in [("ar", "ar", "ancestral", 64, 300, 30, False),
                                               ("mdlm", "mdlm", "ancestral", 8, 900, 90, False),
                                               ("mdlm", "mdlm", "confidence", 8, 1000, 25, True),
                                               ("esolm", "esolm", "block", 8, 1200, 80, False)]]
    for r in rows:
        r["nfe_per_token"] = r["nfe"] / 64
    for i in explorer.pareto_front(rows, "tokens_per_s"):
        rows[i]["pareto"] = True
    assert "network evaluations per generated token" in explorer.explorer_plot(rows).axes[0].get_xlabel()
    fig = explorer.explorer_plot(rows, "ar", explorer.Reference(64, 3.85, 55.0, 32), axis="tokens_per_s")
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    legend = ax.get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert any("scored by itself" in t for t in texts) and any("repetitive" in t and "3.47" in t for t in texts)
    assert any("real text" in t for t in texts)
    renderer = fig.canvas.get_renderer()
    assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    assert "steps taken" in ax.get_title() and "median" in ax.get_xlabel() and "ar" in ax.get_ylabel()
    drawn = {c.get_label(): c.lines[0] for c in ax.containers}        # one error-bar series per (model, strategy)
    colour = {k: line.get_color() for k, line in drawn.items()}
    assert colour["mdlm"] == colour["mdlm · confidence"] != colour["esolm · block"] != colour["ar"]
    assert drawn["mdlm"].get_marker() != drawn["mdlm · confidence"].get_marker()


def test_nfe_figure_draws_each_series_as_the_explorer_does(registry):
    """The notebook's NFE panels and the explorer figure give a (model, strategy) one style: the same
    colour, marker and line style, one legend entry each (no repeated palette), outside the data."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    rows = [{"model": m, "family": f, "sampler": s, "steps": st, "nfe": st, "nfe_per_token": st / 64,
             "tokens_per_s": 100.0 * st,
             "gen_ppl": 50.0 + st, "entropy": 3.5, "repetitive": False, "self_scored": False, "pareto": False}
            for m, f, s in [("mdlm", "mdlm", "ancestral"), ("mdlm", "mdlm", "block"),
                            ("duo", "duo", "ancestral"), ("duo-distilled", "duo", "ancestral")]
            for st in (4, 8)]
    ref = explorer.Reference(64, 3.85, 55.0, 32)
    scatter, nfe = explorer.explorer_plot(rows, "ar", ref), explorer.nfe_plot(rows, "ar", ref)
    FigureCanvasAgg(nfe).draw()
    drawn = {c.get_label(): c.lines[0] for c in scatter.axes[0].containers}
    lines = {line.get_label(): line for line in nfe.axes[1].get_lines()}
    assert set(drawn) == {"mdlm", "mdlm · block", "duo", "duo-distilled"} <= set(lines)
    for label, line in drawn.items():
        assert (lines[label].get_color(), lines[label].get_marker(), lines[label].get_linestyle()) == \
            (line.get_color(), line.get_marker(), line.get_linestyle())
    assert lines["duo"].get_linestyle() != lines["duo-distilled"].get_linestyle()   # two checkpoints, one family
    assert any("repetition threshold" in t for t in lines) and any("real text" in t for t in lines)
    legend, ax = nfe.axes[1].get_legend(), nfe.axes[1]
    renderer = nfe.canvas.get_renderer()
    assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    assert "NFE" in ax.get_xlabel() and "nats" in ax.get_ylabel() and "ar" in nfe.axes[0].get_ylabel()
