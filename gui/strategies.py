"""Per-family option and decoding-strategy controls, and their reading into a request.

Every control is built from an option's declaration (toolkit/options.py: type, default, choices,
help): a family's `SamplingOptions` become one control each; a strategy's `Options` are listed
beside its options box.

The choice travels with the family options (`Settings.options[family]`) under two reserved keys,
so the app passes it through like any other option; toolkit/samplers/requests.py routes each
option to the family or the strategy, exactly as the CLI does. Unsupported pairs or bad options
become the panel's error message, as every other per-model problem does.

The API's parameters follow `api_order`: family by family in registration order (the order of
imports in toolkit/families/__init__.py), each family's options in declaration order, then its
strategy and strategy options. Every family has a strategy control (hidden with one strategy), so
registering a family appends its parameters and registering a strategy adds none. (A new option
of an existing family goes after that family's other options: callers passing names are unaffected.)
"""
from __future__ import annotations

import gradio as gr

from toolkit.errors import UserError
from toolkit.families import REGISTRY
from toolkit.options import Spec, describe, parse_pairs, parse_spec
from toolkit.samplers import SAMPLERS, names, supported
from toolkit.samplers.requests import request_fields
from toolkit.sample_request import SampleRequest

SAMPLER_KEY, SAMPLER_OPTIONS_KEY = "sampler", "sampler_options"
DEFAULT_STRATEGY = SampleRequest.sampler      # what a request runs when it names no strategy


def default_strategy(family) -> str:
    """The strategy a request gets when none is chosen (the registry's default if the family has it)."""
    offered = supported(family)
    return DEFAULT_STRATEGY if DEFAULT_STRATEGY in offered else offered[0]


def control(spec: Spec, label: str) -> gr.components.Component:
    """The control for one declared option: a checkbox, a menu of its choices, a number, or a text
    box; blank (an option whose default is None) means the checkpoint's own value."""
    if spec.type is bool and spec.default is not None:
        return gr.Checkbox(value=spec.default, label=label, info=spec.help)
    if spec.choices:   # custom values pass, so a bad one is the panel's message, as from the CLI
        return gr.Dropdown(list(spec.choices), value=spec.default, label=label, info=spec.help, allow_custom_value=True)
    if spec.type in (int, float) and spec.default is not None:
        return gr.Number(value=spec.default, label=label, info=spec.help, precision=0 if spec.type is int else None)
    hint = "checkpoint default" if spec.default is None else f"default: {spec.default}"
    return gr.Textbox(value="", label=label, info=spec.help, placeholder=hint)


def family_option_controls() -> list[tuple[str, str, gr.components.Component]]:
    """One control per (family, declared sampling option) of every registered family."""
    return [(fam_name, spec.name, control(spec, f"{fam_name}: {spec.name}"))
            for fam_name, fam in REGISTRY.items() for spec in describe(fam.SamplingOptions)]


def strategy_options_hint(offered) -> tuple[str, str]:
    """(placeholder, info) of a strategy-options box: the offered strategies' declared options."""
    declared = [(n, describe(SAMPLERS[n].Options)) for n in offered]
    first = next((specs for _, specs in declared if specs), [])
    example = ", ".join(f"{s.name}={s.default}" for s in first[:2])
    listed = "; ".join(f"{n}: " + ", ".join(f"{s.name}={s.default}" for s in specs) for n, specs in declared if specs)
    return (f"e.g. {example}" if example else ""), f"KEY=VALUE pairs (commas or spaces). {listed}"


def sampler_controls() -> list[tuple[str, str, gr.components.Component]]:
    """A strategy dropdown and an options box for each family (shown where it offers more than one
    strategy: a hidden pair keeps the API's parameters the same whatever strategies are registered)."""
    controls = []
    for fam_name, fam in REGISTRY.items():
        offered = list(supported(fam))
        shown = len(offered) > 1
        info = "; ".join(f"{n}: {SAMPLERS[n].summary}" for n in offered)
        controls.append((fam_name, SAMPLER_KEY, gr.Dropdown(offered, value=default_strategy(fam),
                                                            label=f"{fam_name}: strategy", info=info, visible=shown,
                                                            elem_id=f"sampler-{fam_name}")))
        placeholder, hint = strategy_options_hint(offered)
        controls.append((fam_name, SAMPLER_OPTIONS_KEY, gr.Textbox("", label=f"{fam_name}: strategy options",
                                                                   placeholder=placeholder, info=hint, visible=shown)))
    return controls


def api_order(controls: list[tuple[str, str, gr.components.Component]]) -> list[tuple[str, str, gr.components.Component]]:
    """The (family, option, control) triples in the API's parameter order: family by family in
    registration order, its options before its strategy controls (the list's own order within)."""
    families = list(REGISTRY)
    section = {SAMPLER_KEY: 1, SAMPLER_OPTIONS_KEY: 1}
    return sorted(controls, key=lambda c: (families.index(c[0]), section.get(c[1], 0)))


def strategy_request(family, raw: dict) -> dict:
    """SampleRequest fields (sampler, options, sampler_options) from a family's raw UI/API options:
    blanks mean 'the checkpoint default'; the rest is routed by toolkit/samplers/requests.py."""
    raw = {k: v for k, v in (raw or {}).items() if v is not None and v != ""}
    name = raw.pop(SAMPLER_KEY, None) or default_strategy(family)
    if name in SAMPLERS and not SAMPLERS[name].reads_family_options:
        # a control always sends a value: one left at its declared default was not asked for
        defaults = {spec.name: spec.default for spec in describe(family.SamplingOptions)}
        raw = {k: v for k, v in raw.items() if k not in defaults or v != defaults[k]}
    pairs = parse_pairs(raw.pop(SAMPLER_OPTIONS_KEY, ""), "strategy options")
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
