"""The "Denoise" tab: every selected model samples from the same prompt and seed, step by step, side
by side; then the trace can be scrubbed and downloaded. Also the `denoise` API endpoint.

Everything family-specific comes from the models (the declared `Family.SamplingOptions` for the controls, the
Step trace for the view); nothing here looks at a family's name.
"""
from __future__ import annotations

import inspect
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from toolkit.errors import UserError
from toolkit.options import require_range

from gui import render
from gui.live import (MAX_LENGTH, MAX_STEPS, MAX_TEMPERATURE, Settings, interleave, number, start, trace_json,
                      whole_number)
from gui.models import ModelRegistry
from gui.policy import AccessPolicy, client_of
from gui.strategies import (SAMPLER_KEY, SAMPLER_OPTIONS_KEY, api_order, family_option_controls, options_from_api,
                            sampler_controls)

DEFAULT_PROMPT = "It is a truth universally acknowledged"
FRAME_SECONDS = 0.08        # at most ~12 screen updates a second while sampling
DEFAULT_DELAY_MS, MAX_DELAY_MS = 25, 500
TRACE_DIR = Path(tempfile.gettempdir()) / "dlm-gui-traces"


def settings_from(prompt, length, steps, temperature, top_p, seed, options: dict | None) -> Settings:
    """The UI's and the API's values as Settings; a value that is not a number is a message naming it
    (the bounds are checked once, by gui.live.check_settings, for every caller)."""
    return Settings(prompt or "", options, length=whole_number(length, "length"), steps=whole_number(steps, "steps"),
                    temperature=number(temperature, "temperature"), top_p=number(top_p, "top_p"),
                    seed=whole_number(0 if seed is None else seed, "seed"))


def number_box(value, label: str, low, high, elem_id: str | None = None, integer: bool = True, about: str = "",
               **layout):
    """A number field showing its bounds, with none of its own: a Gradio slider clamps a typed 100000
    to its maximum without a word (and its API check names no parameter), so an out-of-range value
    reaches gui.live.check_settings and comes back as its message."""
    return gr.Number(value, label=label, info=f"{low} to {high}" + (f": {about}" if about else ""),
                     precision=0 if integer else None, elem_id=elem_id, **layout)


def api_name_of(fam: str, opt: str) -> str:
    """The API parameter of a per-family control: `duo_tail`, `mdlm_strategy`, `mdlm_strategy_options`."""
    return f"{fam}_" + {SAMPLER_KEY: "strategy", SAMPLER_OPTIONS_KEY: "strategy_options"}.get(opt, opt)


def with_parameter_names(handler, names: list[str]):
    """`handler(request, *values)` as a function whose signature names each input: Gradio names the
    API's parameters after it (a *values signature would show them as param_8, param_9, ...)."""
    def named(request: gr.Request, *values):
        yield from handler(request, *values)

    named.__signature__ = inspect.Signature(
        [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)]
        + [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    named.__annotations__ = {"request": gr.Request}
    named.__doc__ = handler.__doc__
    return named


def save_trace(runs, settings) -> str:
    """Write the trace for download; files older than an hour are swept so the folder stays small."""
    TRACE_DIR.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - 3600
    for old in TRACE_DIR.glob("trace-*.json"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass
    f = tempfile.NamedTemporaryFile("w", dir=TRACE_DIR, prefix="trace-", suffix=".json", delete=False)
    with f:
        json.dump(trace_json(runs, settings), f)
    return f.name


@dataclass
class DenoiseTab:
    """The components other parts of the app wire to (adding a checkpoint updates both tabs)."""
    models: gr.CheckboxGroup
    path: gr.Textbox
    add: gr.Button
    status: gr.Markdown


def denoise_tab(registry: ModelRegistry, labels: dict, choices: list, length_max: int,
                policy: AccessPolicy | None = None) -> DenoiseTab:
    """Lay out the tab (inside an open gr.Blocks) and wire its handlers."""
    policy = policy or AccessPolicy()
    with gr.Tab("Denoise"):
        # Prompt and Generate first, then the few settings most runs change: all of it above the fold at
        # 1366x768, so the panels (and their step counters) stay in view while a run plays.
        with gr.Row(equal_height=False):
            prompt = gr.Textbox(DEFAULT_PROMPT, label="Prompt (held fixed)", lines=1, scale=4, elem_id="prompt")
            with gr.Column(scale=1, min_width=180):
                go = gr.Button("Generate", variant="primary", elem_id="generate")
                status = gr.Markdown("", label="Status", elem_id="status")
        with gr.Row(equal_height=False):
            models = gr.CheckboxGroup(choices, value=registry.keys[:4], label="Models", elem_id="models", scale=2)
            length = number_box(min(64, length_max), "Length (tokens)", 1, length_max, "length", scale=1,
                                min_width=120)
            steps = number_box(32, "Steps (AR: one per token)", 1, MAX_STEPS, "steps", scale=1, min_width=120)
            seed = number_box(0, "Seed", 0, "2**63 - 1", "seed", scale=1, min_width=120)
        with gr.Accordion("More settings: temperature, top-p, slow motion, checkpoints, family options, strategies",
                          open=False, elem_id="more"):
            with gr.Row():
                temperature = number_box(1.0, "Temperature (0: greedy)", 0, MAX_TEMPERATURE, "temperature",
                                         integer=False, min_width=160)
                top_p = number_box(1.0, "Top-p (1: off)", "above 0", 1, "top-p", integer=False, min_width=160)
                slow = number_box(DEFAULT_DELAY_MS, "Slow motion (ms per step)", 0, MAX_DELAY_MS, "slow", scale=2,
                                  min_width=320, about="a pause between steps so small models can be watched; "
                                                       "not counted in wall time or tokens/s")
            with gr.Row():
                path = gr.Textbox(label="Add a checkpoint directory", scale=3, elem_id="ckpt-path",
                                  interactive=policy.paths_enabled,
                                  placeholder="runs/my-run" if policy.paths_enabled else
                                  "off: this app is shared (the operator can allow folders)")
                add = gr.Button("Load", scale=1, size="sm", interactive=policy.paths_enabled)
            with gr.Accordion("Family options", open=False):
                controls = family_option_controls()
            with gr.Accordion("Decoding strategy (per family)", open=False):
                controls += sampler_controls()
        # the scrubber sits above the panels, so it stays under the pointer whatever height they take
        scrub = gr.Slider(1, 2, value=1, step=1, label="Scrub through the trace (after a run)",
                          interactive=False, elem_id="scrub")
        panels = gr.HTML(render.LEGEND, label="Panels", elem_id="panels")
        plot = gr.Plot(label="Per step: tokens changed (bars) and mean confidence (line)", show_label=False,
                       elem_id="run-plot")
        download = gr.DownloadButton("Download trace (JSON)", label="Trace", visible=False, elem_id="download")
        runs_state = gr.State(None, time_to_live=3600)   # traces are dropped an hour after a run

    controls = api_order(controls)   # the API's parameters: appended to, never reordered, by a new family
    option_keys = [(fam, opt) for fam, opt, _ in controls]

    def generate(request: gr.Request, prompt_v, keys, length_v, steps_v, temp_v, top_p_v, seed_v, slow_v,
                 *opt_values):
        """Sample with every selected model, streaming (panels HTML, status, plot, scrubber, -, trace file)."""
        try:
            options: dict = {}
            for (fam, opt), value in zip(option_keys, opt_values):
                options.setdefault(fam, {})[opt] = value
            settings = settings_from(prompt_v, length_v, steps_v, temp_v, top_p_v, seed_v, options)
            delay = whole_number(0 if slow_v is None else slow_v, "slow_motion_ms")
            require_range("slow_motion_ms", delay, 0, MAX_DELAY_MS)
            with policy.run_slot(client_of(request)):
                yield from _generate(settings, keys, delay / 1000)
        except UserError as e:
            gr.Warning(str(e))
            yield (render.message_html(str(e)), f"⚠️ {e}", None, gr.update(), None, gr.update(visible=False))

    def _generate(settings, keys, delay):
        runs = start(registry, list(keys or []), settings)
        tic, shown = time.perf_counter(), 0.0
        for _ in interleave(runs):
            if delay:
                time.sleep(delay)
            now = time.perf_counter()
            if now - shown >= FRAME_SECONDS:
                shown = now
                yield (render.render_runs(runs, labels=labels), "Sampling…", gr.update(), gr.update(),
                       gr.update(), gr.update())
        total = max([len(r.trace) for r in runs] or [1])
        failed = [f"{r.key}: {r.error}" for r in runs if r.error]
        paused = " with pauses" if delay else ""
        msg = f"Done: {time.perf_counter() - tic:.2f} s{paused}." + (" Errors: " + "; ".join(failed) if failed else "")
        yield (render.render_runs(runs, labels=labels), msg, render.run_plot(runs),
               gr.update(minimum=1, maximum=max(total, 2), value=total, interactive=total > 1),
               runs, gr.update(value=save_trace(runs, settings), visible=True))

    names = ["prompt", "models", "length", "steps", "temperature", "top_p", "seed", "slow_motion_ms",
             *[api_name_of(fam, opt) for fam, opt in option_keys]]
    go.click(with_parameter_names(generate, names), [prompt, models, length, steps, temperature, top_p, seed, slow, *[c for *_, c in controls]],
             [panels, status, plot, scrub, runs_state, download], api_name="generate",
             show_progress="hidden")     # the default overlay would dim the live panels

    def scrub_to(runs, upto):
        if not runs:
            return gr.update()
        return render.render_runs(runs, upto=int(upto), labels=labels)

    scrub.input(scrub_to, [runs_state, scrub], panels, trigger_mode="always_last", api_visibility="private")
    return DenoiseTab(models, path, add, status)


def denoise_endpoint(registry: ModelRegistry, policy: AccessPolicy | None = None):
    """The `denoise` API: final texts and per-model step counts, NFE and seconds (no streaming)."""
    policy = policy or AccessPolicy()

    def denoise(prompt: str, families: list[str], length: int = 64, steps: int = 32, seed: int = 0,
                temperature: float = 1.0, top_p: float = 1.0, strategies: dict | None = None,
                options: dict | None = None, request: gr.Request = None) -> dict[str, dict]:
        """Sample with each model (`families`: model names, or checkpoint directories, which are loaded
        as the UI's Load button does and refused the same way when the app is shared); return the final
        texts and per-model step counts, NFE and seconds. `strategies` maps a family to a decoding
        strategy, optionally with its options ("confidence" or "confidence:k=4"); `options` maps a family
        to its sampling options ({"duo": {"tail": "none"}}). A model whose options are refused is in `errors`."""
        names = [families] if isinstance(families, str) else list(families or [])
        try:
            settings = settings_from(prompt, length, steps, temperature, top_p, seed,
                                     options_from_api(strategies, options))
            keys = [k if k in registry.keys else policy.add_model(registry, k) for k in names]
            with policy.run_slot(client_of(request)):
                runs = start(registry, keys, settings)
                for _ in interleave(runs):
                    pass
        except UserError as e:
            raise gr.Error(str(e)) from None
        return {"texts": {r.key: r.texts()[0] for r in runs},
                "steps": {r.key: len(r.trace) for r in runs},
                "nfe": {r.key: r.last.nfe if r.last is not None else 0 for r in runs},
                "seconds": {r.key: round(r.seconds, 4) for r in runs},
                "errors": {r.key: r.error for r in runs if r.error}}

    return denoise


__all__ = ["denoise_tab", "denoise_endpoint", "MAX_LENGTH"]
