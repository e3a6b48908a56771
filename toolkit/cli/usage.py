"""Help text generated from the code it describes: the config dataclasses (a field's trailing
`# comment` is its help) and the family registry, so no list of names is written twice."""
from __future__ import annotations

import dataclasses
import inspect
import re

from toolkit import presets
from toolkit.config import RunConfig
from toolkit.families import REGISTRY

_FIELD = re.compile(r"^\s+(\w+)\s*:[^#]*?#\s*(.+)$")


def field_help(cls) -> dict[str, str]:
    """{field: its trailing comment} for a dataclass and its bases."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            m = _FIELD.match(line)
            if m:
                out[m.group(1)] = m.group(2).strip()
    return out


def family_names() -> list[str]:
    """Registered families, in registration order (importing toolkit.families fills the registry)."""
    return list(REGISTRY)


def families_line() -> str:
    return "families: " + ", ".join(family_names())


def _fields(obj) -> list[str]:
    helps = field_help(type(obj))
    lines = []
    for f in dataclasses.fields(obj):
        default = getattr(obj, f.name)
        text = f"  {f.name}={default}"
        if f.name in helps:
            text = f"{text:<28} {helps[f.name]}"
        lines.append(text)
    return lines


def family_options_text() -> str:
    """Every family's training options and sampling options (for --help of any command)."""
    lines = []
    for name, fam in REGISTRY.items():
        opts, helps = fam.Options(), field_help(fam.Options)
        train = ", ".join(f"{f.name}={getattr(opts, f.name)}" + (f" ({helps[f.name]})" if f.name in helps else "")
                          for f in dataclasses.fields(opts)) or "none"
        sampling = ", ".join(f"{k}={v}" for k, (v, _) in fam.sampling_options.items()) or "none"
        lines.append(f"  {name:<8} options: {train}; sampling options: {sampling}")
    return "\n".join(lines)


def sampling_options_text() -> str:
    lines = ["family sampling options (--option KEY=VALUE):"]
    for name, fam in REGISTRY.items():
        for k, (v, help_text) in fam.sampling_options.items():
            lines.append(f"  {name}: {k} (default {v}): {help_text}")
    return "\n".join(lines)


def train_usage(head: str) -> str:
    """`python -m training.train --help`: every key, its default and its help, section by section."""
    cfg = RunConfig()
    names = presets.preset_names()
    out = [head.rstrip(), "",
           f"family=NAME      {', '.join(family_names())} (default {cfg.family}); its options become keys",
           f"model=PRESET     {', '.join(names[:4])}, ... {', '.join(names[-3:])} (sets n_layers, d_model, n_heads)",
           "config=FILE.yaml a recipe of key: value lines, applied before the command line",
           "Keys are bare when unique (lr=1e-3) or dotted (optim.lr=1e-3).", ""]
    for section in ("model", "data", "optim", "train"):
        out.append(f"[{section}]")
        out.extend(_fields(getattr(cfg, section)))
    out += ["", "[options] (per family)", family_options_text()]
    return "\n".join(out) + "\n"
