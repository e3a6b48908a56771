"""Turning command-line choices into requests: --sampler NAME, --option KEY=VALUE, sweep specs.

Kept here (not in the CLIs) so that `sample`, `evaluate` and any other front end route options
the same way: a key the family knows goes to the family, a key the strategy knows to the strategy.
"""
from __future__ import annotations

from dataclasses import replace

from toolkit.errors import UserError
from toolkit.options import describe, parse_spec
from toolkit.samplers.base import SAMPLERS, family_option_readers, get_sampler, names, split_options, supported
from toolkit.sample_request import SampleRequest


def request_fields(family, name: str, raw: dict) -> dict:
    """SampleRequest fields for strategy `name` and KEY=VALUE options split between family and strategy."""
    family_opts, sampler_opts = split_options(family, name, raw)
    return {"sampler": name, "options": family_opts, "sampler_options": sampler_opts}


def listing(family=None) -> str:
    """Every strategy with its options (and, given a family, whether it supports it)."""
    lines = []
    for n in names():
        s = SAMPLERS[n]
        mark = "" if family is None else ("  [supported]" if n in supported(family) else "  [not for this family]")
        lines.append(f"{n}: {s.summary}{mark}")
        lines += [f"    {o.name}={o.default!r}  {o.help_text()}" for o in describe(s.Options)]
    return "\n".join(lines)


def sweep_requests(family, base: SampleRequest, specs: list[str], shared: dict, steps: list[int]) -> list[SampleRequest]:
    """One request per (strategy spec, step count). `shared` options go to every listed strategy that
    reads them: a family option to the strategies reading the family's options, a strategy option to
    the strategies having it; a key no listed strategy reads is a UserError."""
    fam_keys = set(family.sampling_defaults())
    parsed = [(get_sampler(name, family), inline) for name, inline in map(parse_spec, specs or ["ancestral"])]
    fields = {s.name: s.option_names() for s, _ in parsed}
    readers = [s.name for s, _ in parsed if s.reads_family_options]
    for k in shared:
        if k in fam_keys and not readers:
            raise UserError(f"family {family.name}'s sampling option '{k}' is read by none of the samplers"
                            f" {', '.join(fields)} (only by: {', '.join(family_option_readers(family)) or 'none'})")
        if k not in fam_keys and not any(k in keys for keys in fields.values()):
            raise UserError(f"unknown option '{k}' for family {family.name} and samplers {', '.join(fields)}")
    out = []
    for sampler, inline in parsed:
        fam = {k: v for k, v in shared.items() if k in fam_keys and sampler.reads_family_options}
        smp = {**{k: v for k, v in shared.items() if k in fields[sampler.name]}, **inline}
        out += [replace(base, steps=s, sampler=sampler.name, options=fam, sampler_options=smp) for s in steps]
    return out
