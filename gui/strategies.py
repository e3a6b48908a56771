"""Per-family decoding-strategy controls (toolkit/samplers/) and their reading into a request.

The choice travels with the family options (`Settings.options[family]`) under two reserved keys,
so the app passes it through like any other option; toolkit/samplers/requests.py routes each
option to the family or the strategy, exactly as the CLI does. Unsupported pairs or bad options
become the panel's error message, as every other per-model problem does.
"""
from __future__ import annotations

import gradio as gr

from toolkit.errors import UserError
from toolkit.families import REGISTRY
from toolkit.samplers import SAMPLERS, names, supported
from toolkit.samplers.requests import parse_spec, request_fields
from toolkit.sampling import SampleRequest
from toolkit.values import parse_options

SAMPLER_KEY, SAMPLER_OPTIONS_KEY = "sampler", "sampler_options"
DEFAULT_STRATEGY = SampleRequest.sampler      # what a request runs when it names no strategy


def default_strategy(family) -> str:
    """The strategy a request gets when none is chosen (the registry's default if the family has it)."""
    offered = supported(family)
    return DEFAULT_STRATEGY if DEFAULT_STRATEGY in offered else offered[0]


def sampler_controls() -> list[tuple[str, str, gr.components.Component]]:
    """A strategy dropdown and an options box for each family that offers more than one strategy."""
    controls = []
    for fam_name, fam in sorted(REGISTRY.items()):
        offered = list(supported(fam))
        if len(offered) < 2:
            continue
        info = "; ".join(f"{n}: {SAMPLERS[n].summary}" for n in offered)
        controls.append((fam_name, SAMPLER_KEY, gr.Dropdown(offered, value=default_strategy(fam),
                                                            label=f"{fam_name}: strategy", info=info,
                                                            elem_id=f"sampler-{fam_name}")))
        controls.append((fam_name, SAMPLER_OPTIONS_KEY,
                         gr.Textbox("", label=f"{fam_name}: strategy options", placeholder="e.g. k=4, threshold=0.9",
                                    info="KEY=VALUE pairs; `python -m toolkit.sample mdlm --sampler list` lists them")))
    return controls


def parse_pairs(text) -> dict:
    """'k=4, threshold=0.9' (commas or spaces), or already a dict -> {'k': '4', 'threshold': '0.9'}."""
    if isinstance(text, dict):
        return dict(text)
    return parse_options(str(text or "").replace(",", " ").split(), flag="strategy options")


def strategy_request(family, raw: dict) -> dict:
    """SampleRequest fields (sampler, options, sampler_options) from a family's raw UI/API options:
    blanks mean 'the checkpoint default'; the rest is routed by toolkit/samplers/requests.py."""
    raw = {k: v for k, v in (raw or {}).items() if v is not None and v != ""}
    name = raw.pop(SAMPLER_KEY, None) or default_strategy(family)
    pairs = parse_pairs(raw.pop(SAMPLER_OPTIONS_KEY, ""))
    clash = set(pairs) & set(raw)
    if clash:
        raise UserError(f"option {sorted(clash)[0]} is given twice (as a family and a strategy option)")
    return request_fields(family, name, {**raw, **pairs})


def options_from_api(strategies: dict | None, options: dict | None) -> dict:
    """The `denoise` API's {family: "name[:k=v,...]"} and {family: {option: value}} as Settings.options."""
    for name, value in (("strategies", strategies), ("options", options)):
        if value is not None and not isinstance(value, dict):
            raise UserError(f"{name} must map a family name to a value (got {value!r})")
    unknown = [f for f in [*(strategies or {}), *(options or {})] if f not in REGISTRY]
    if unknown:
        raise UserError(f"unknown family '{unknown[0]}' (known: {', '.join(sorted(REGISTRY))})")
    bad = [f for f, raw in (options or {}).items() if not isinstance(raw, dict)]
    if bad:
        raise UserError(f"options for {bad[0]} must map option names to values (got {options[bad[0]]!r})")
    out = {fam: dict(raw) for fam, raw in (options or {}).items()}
    for fam, spec in (strategies or {}).items():
        name, pairs = parse_spec(str(spec))
        out.setdefault(fam, {}).update({SAMPLER_KEY: name, SAMPLER_OPTIONS_KEY: pairs})
    return out


def strategy_names() -> list[str]:
    return names()
