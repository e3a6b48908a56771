"""The "Denoise" tab: every selected model samples from the same prompt and seed, step by step, side
by side; then the trace can be scrubbed and downloaded. Also the `denoise` API endpoint.

Everything family-specific comes from the models (`Family.sampling_options` for the controls, the
Step trace for the view); nothing here looks at a family's name.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from toolkit.errors import UserError
from toolkit.families import REGISTRY

from gui import render
from gui.live import (MAX_LENGTH, MAX_STEPS, MAX_TEMPERATURE, Settings, interleave, start, trace_json,
                      whole_number)
from gui.models import ModelRegistry
from gui.policy import AccessPolicy, client_of
from gui.strategies import sampler_controls

DEFAULT_PROMPT = "It is a truth universally acknowledged"
FRAME_SECONDS = 0.08        # at most ~12 screen updates a second while sampling
DEFAULT_DELAY_MS, MAX_DELAY_MS = 25, 500
TRACE_DIR = Path(tempfile.gettempdir()) / "dlm-gui-traces"


def option_controls() -> list[tuple[str, str, gr.components.Component]]:
    """One control per (family, sampling option) of every registered family."""
    controls = []
    for fam_name, fam in sorted(REGISTRY.items()):
        for opt, (default, help_text) in fam.sampling_options.items():
            label = f"{fam_name}: {opt}"
            if isinstance(default, bool):
                comp = gr.Checkbox(value=default, label=label, info=help_text)
            elif isinstance(default, (int, float)):
                comp = gr.Number(value=default, label=label, info=help_text)
            else:   # no fixed default: blank means the checkpoint's own value
                comp = gr.Textbox(value="", label=label, info=help_text, placeholder="checkpoint default")
            controls.append((fam_name, opt, comp))
    return controls


def settings_from(prompt, length, steps, temperature, top_p, seed, option_keys, option_values) -> Settings:
    options: dict = {}
    for (fam, opt), value in zip(option_keys, option_values):
        options.setdefault(fam, {})[opt] = value
    try:
        temperature, top_p = float(temperature), float(top_p)
    except (TypeError, ValueError):
        raise UserError(f"temperature and top-p must be numbers (got {temperature!r}, {top_p!r})") from None
    return Settings(prompt=prompt or "", length=whole_number(length, "length"), steps=whole_number(steps, "steps"),
                    temperature=temperature, top_p=top_p, seed=whole_number(seed or 0, "seed"), options=options)


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
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                models = gr.CheckboxGroup(choices, value=registry.keys[:4], label="Models", elem_id="models")
                with gr.Row():
                    path = gr.Textbox(label="Add a checkpoint directory", scale=3, elem_id="ckpt-path",
                                      interactive=policy.paths_enabled,
                                      placeholder="runs/my-run" if policy.paths_enabled else
                                      "off: this app is shared (the operator can allow folders)")
                    add = gr.Button("Load", scale=1, size="sm", interactive=policy.paths_enabled)
                prompt = gr.Textbox(DEFAULT_PROMPT, label="Prompt (held fixed)", lines=2, elem_id="prompt")
                length = gr.Slider(1, length_max, value=min(64, length_max), step=1, label="Length (tokens)",
                                   elem_id="length")
                steps = gr.Slider(1, MAX_STEPS, value=32, step=1, label="Steps", elem_id="steps",
                                  info="left-to-right decoding takes one step per token whatever this says")
                with gr.Row():
                    temperature = gr.Slider(0, MAX_TEMPERATURE, value=1.0, step=0.05, label="Temperature")
                    top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.01, label="Top-p")
                with gr.Row():
                    seed = gr.Number(0, label="Seed", precision=0, elem_id="seed")
                    slow = gr.Slider(0, MAX_DELAY_MS, value=DEFAULT_DELAY_MS, step=5, label="Slow motion (ms per step)",
                                     info="a pause between steps so small models can be watched; "
                                          "not counted in wall time or tokens/s", elem_id="slow")
                with gr.Accordion("Family options", open=False):
                    controls = option_controls()
                with gr.Accordion("Decoding strategy (per family)", open=False):
                    controls += sampler_controls()
                go = gr.Button("Generate", variant="primary", elem_id="generate")
                status = gr.Markdown("", elem_id="status")
            with gr.Column(scale=3):
                panels = gr.HTML(render.LEGEND, elem_id="panels")
                scrub = gr.Slider(1, 2, value=1, step=1, label="Scrub through the trace (after a run)",
                                  interactive=False, elem_id="scrub")
                plot = gr.Plot(label="Per step: tokens changed (bars) and mean confidence (line)", show_label=False,
                               elem_id="run-plot")
                download = gr.DownloadButton("Download trace (JSON)", visible=False, elem_id="download")
        runs_state = gr.State(None, time_to_live=3600)   # traces are dropped an hour after a run

    option_keys = [(fam, opt) for fam, opt, _ in controls]

    def generate(request: gr.Request, prompt_v, keys, length_v, steps_v, temp_v, top_p_v, seed_v, slow_v,
                 *opt_values):
        try:
            settings = settings_from(prompt_v, length_v, steps_v, temp_v, top_p_v, seed_v, option_keys, opt_values)
            with policy.run_slot(client_of(request)):
                yield from _generate(settings, keys, slow_v)
        except UserError as e:
            gr.Warning(str(e))
            yield (render.message_html(str(e)), f"⚠️ {e}", None, gr.update(), None, gr.update(visible=False))

    def _generate(settings, keys, slow_v):
        runs = start(registry, list(keys or []), settings)
        tic, shown = time.perf_counter(), 0.0
        try:
            delay = min(max(float(slow_v or 0), 0.0), MAX_DELAY_MS) / 1000
        except (TypeError, ValueError):
            raise UserError(f"slow motion must be a number of milliseconds (got {slow_v!r})") from None
        if delay != delay:   # NaN
            delay = 0.0
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
        paused = " (with slow-motion pauses)" if delay else ""
        msg = f"Done in {time.perf_counter() - tic:.2f} s{paused}." + (" Errors: " + "; ".join(failed) if failed else "")
        yield (render.render_runs(runs, labels=labels), msg, render.run_plot(runs),
               gr.update(minimum=1, maximum=max(total, 2), value=total, interactive=total > 1),
               runs, gr.update(value=save_trace(runs, settings), visible=True))

    go.click(generate, [prompt, models, length, steps, temperature, top_p, seed, slow, *[c for *_, c in controls]],
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
                request: gr.Request = None) -> dict:
        """Sample with each model; return the final texts and per-model step counts."""
        keys = [families] if isinstance(families, str) else list(families or [])
        try:
            settings = Settings(prompt=prompt or "", length=whole_number(length, "length"),
                                steps=whole_number(steps, "steps"), seed=whole_number(seed, "seed"))
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


__all__ = ["denoise_tab", "denoise_endpoint", "option_controls", "MAX_LENGTH"]
