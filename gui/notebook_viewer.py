"""The denoising viewer as an ipywidgets app for JupyterLab.

The same pieces as the Gradio app: `gui.live` runs the models side by side and keeps their
traces, `gui.render` draws the panels (token colouring and confidence opacity). Only the
controls differ: a model picker, prompt, length, steps and seed, a Sample button, and a step
scrubber (with a play button) that replays the traces.

    from gui.notebook_viewer import DenoiseViewer
    DenoiseViewer().widget          # the last expression of a cell shows it
"""
from __future__ import annotations

import ipywidgets as W

from toolkit.errors import UserError

from gui.live import MAX_LENGTH, MAX_STEPS, Settings, interleave, length_cap, start
from gui.models import ModelRegistry
from gui.render import CSS, message_html, render_runs


class DenoiseViewer:
    """Widgets plus their callbacks; `sample()` and `show(step)` are what the buttons call."""

    def __init__(self, registry: ModelRegistry | None = None, keys: list[str] | None = None, prompt: str = "",
                 length: int = 48, steps: int = 32, seed: int = 0, live: bool = True):
        self.registry = registry or ModelRegistry()
        self.runs: list = []
        self.live = live        # redraw after every reverse step while sampling
        self.models = W.SelectMultiple(options=self.registry.keys, value=tuple(keys or self.registry.keys),
                                       description="models", rows=min(4, max(1, len(self.registry.keys))))
        self.prompt = W.Text(value=prompt, description="prompt", placeholder="optional prefix")
        cap = length_cap({k: self.registry.get(k) for k in self.registry.keys}) if self.registry.keys else MAX_LENGTH
        self.length = W.IntSlider(value=min(length, cap), min=4, max=cap, description="length")   # the models' context
        self.steps = W.IntSlider(value=steps, min=1, max=min(MAX_STEPS, 256), description="steps")
        self.seed = W.IntText(value=seed, description="seed")
        self.button = W.Button(description="Sample", button_style="primary", icon="play")
        # as wide as the output allows: at the default ~124 px one pixel was several of 95 steps
        self.step = W.IntSlider(value=0, min=0, max=0, description="show step", disabled=True,
                                layout=W.Layout(flex="1 1 auto", width="auto", min_width="360px"))
        self.play = W.Play(value=0, min=0, max=0, interval=120, description="replay", disabled=True)
        W.jslink((self.play, "value"), (self.step, "value"))
        for widget, name in ((self.button, "sample"), (self.step, "step"), (self.play, "play")):
            widget.add_class(f"dlm-viewer-{name}")   # stable selectors for browser tests
        self.html = W.HTML(value=self._page(""))
        self.button.on_click(lambda _: self.sample())
        self.step.observe(lambda change: self.show(change["new"]), names="value")
        controls = W.VBox([self.models, self.prompt, self.length, self.steps, self.seed, self.button])
        self.widget = W.VBox([controls, W.HBox([self.play, self.step], layout=W.Layout(width="100%")), self.html])

    def _page(self, body: str) -> str:
        return f"<style>{CSS}</style>{body}"

    def settings(self) -> Settings:
        return Settings(prompt=self.prompt.value, length=self.length.value, steps=self.steps.value,
                        seed=self.seed.value)

    def sample(self) -> None:
        """Run the picked models on the controls' settings; a bad setting shows a message."""
        try:
            self.runs = start(self.registry, list(self.models.value), self.settings())
        except UserError as e:
            self.runs = []
            self.step.disabled = self.play.disabled = True
            self.html.value = self._page(message_html(str(e)))
            return
        for runs in interleave(self.runs):
            if self.live:
                self.html.value = self._page(render_runs(runs))
        last = max((len(r.trace) for r in self.runs), default=0)
        self.play.max = self.step.max = last
        self.step.min = self.play.min = min(1, last)
        self.step.disabled = self.play.disabled = last == 0
        if self.step.value == last:
            self.show(last)
        self.step.value = last          # observe() redraws when the value changes

    def show(self, step: int) -> None:
        """Every panel as it was after reverse step `step` (1-based; a finished run shows its end)."""
        if self.runs:
            self.html.value = self._page(render_runs(self.runs, upto=max(step, 1)))
