"""Per-family decoding-strategy controls (toolkit/samplers/) and their reading into a request.

The choice travels with the family options (`Settings.options[family]`) under two reserved keys,
so the app passes it through like any other option; unsupported pairs or bad options become
the panel's error message, as every other per-model problem does.
"""
from __future__ import annotations

import gradio as gr

from toolkit.errors import UserError
from toolkit.families import REGISTRY
from toolkit.samplers import SAMPLERS, names

SAMPLER_KEY, SAMPLER_OPTIONS_KEY = "sampler", "sampler_options"


def sampler_controls() -> list[tuple[str, str, gr.components.Component]]:
    """A strategy dropdown and an options box for each family that offers more than one strategy."""
    controls = []
    for fam_name, fam in sorted(REGISTRY.items()):
        offered = list(getattr(fam, "samplers", ("ancestral",)))
        if len(offered) < 2:
            continue
        info = "; ".join(f"{n}: {SAMPLERS[n].summary}" for n in offered)
        controls.append((fam_name, SAMPLER_KEY, gr.Dropdown(offered, value=offered[0], label=f"{fam_name}: strategy",
                                                            info=info, elem_id=f"sampler-{fam_name}")))
        controls.append((fam_name, SAMPLER_OPTIONS_KEY,
                         gr.Textbox("", label=f"{fam_name}: strategy options", placeholder="e.g. k=4, threshold=0.9",
                                    info="KEY=VALUE pairs; `python -m toolkit.sample mdlm --sampler list` lists them")))
    return controls


def parse_pairs(text: str) -> dict:
    """'k=4, threshold=0.9' (commas or spaces) -> {'k': '4', 'threshold': '0.9'}."""
    out = {}
    for part in str(text or "").replace(",", " ").split():
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise UserError(f"strategy options are KEY=VALUE pairs (got '{part}')")
        out[key.strip()] = value.strip()
    return out


def request_fields(model, options: dict) -> dict:
    """SampleRequest fields (sampler, sampler_options) for a model from its family's raw options."""
    raw = options.get(model.family.name, {})
    name = raw.get(SAMPLER_KEY) or "ancestral"
    return {"sampler": name, "sampler_options": parse_pairs(raw.get(SAMPLER_OPTIONS_KEY, ""))}


def strategy_names() -> list[str]:
    return names()
