"""The ipywidgets denoising viewer, driven through its callbacks (no browser): real traces, the
GUI's renderer, a step scrubber that changes what is shown, messages for bad settings."""
from __future__ import annotations

import pytest
import torch

from gui import render
from gui.models import ModelRegistry
from gui.notebook_viewer import DenoiseViewer


@pytest.fixture(scope="module")
def viewer(tiny_checkpoint):
    torch.set_num_threads(1)
    keys = [tiny_checkpoint("mdlm"), tiny_checkpoint("duo")]
    v = DenoiseViewer(ModelRegistry(keys, evaluator=None), length=16, steps=6, seed=2)
    v.button.click()            # the Sample button's own callback
    return v


def test_sample_fills_the_scrubber_and_shows_the_last_step(viewer):
    assert [r.error for r in viewer.runs] == [None, None] and all(r.done for r in viewer.runs)
    last = max(len(r.trace) for r in viewer.runs)
    assert viewer.step.max == viewer.play.max == last and viewer.step.value == last and not viewer.step.disabled
    assert viewer.html.value.endswith(render.render_runs(viewer.runs, upto=last))
    assert viewer.html.value.count('data-final="1"') == 2


def test_moving_the_step_slider_replays_the_trace(viewer):
    end = viewer.html.value
    viewer.step.value = 1
    first = viewer.html.value
    assert first != end and first.endswith(render.render_runs(viewer.runs, upto=1))
    # MDLM starts from [MASK]: after one of six steps most positions are still masked, none at the end
    mdlm_first = first.split('data-key="')[1]
    assert mdlm_first.count("tok masked") > 0 and end.split('data-key="')[1].count("tok masked") == 0
    viewer.step.value = viewer.step.max
    assert viewer.html.value == end


def test_a_bad_setting_shows_a_message_and_disables_the_scrubber(viewer):
    viewer.prompt.value = "word " * 40
    viewer.sample()
    try:
        assert 'class="dlm-msg"' in viewer.html.value and "prompt" in viewer.html.value
        assert viewer.step.disabled and viewer.runs == []
    finally:
        viewer.prompt.value = ""
