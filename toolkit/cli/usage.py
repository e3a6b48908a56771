"""Help text generated from the declarations it describes (toolkit/options.py): the config
dataclasses, the families' and strategies' options, and the family registry, so no list of
names, defaults or help is written twice."""
from __future__ import annotations

from toolkit import presets
from toolkit.config import RunConfig
from toolkit.families import REGISTRY
from toolkit.options import describe


def family_names() -> list[str]:
    """Registered families, in registration order (importing toolkit.families fills the registry)."""
    return list(REGISTRY)


def families_line() -> str:
    return "families: " + ", ".join(family_names())


def _fields(cls) -> list[str]:
    lines = []
    for spec in describe(cls):
        text, helps = f"  {spec.name}={spec.default}", spec.help_text()
        lines.append(f"{text:<28} {helps}" if helps else text)
    return lines


def _inline(cls) -> str:
    return ", ".join(f"{s.name}={s.default}" + (f" ({s.help_text()})" if s.help_text() else "")
                     for s in describe(cls)) or "none"


def family_options_text() -> str:
    """Every family's training options and sampling options (for --help of any command)."""
    return "\n".join(f"  {name:<8} options: {_inline(fam.Options)}; sampling options: "
                     + (", ".join(f"{s.name}={s.default}" for s in describe(fam.SamplingOptions)) or "none")
                     for name, fam in REGISTRY.items())


def sampling_options_text() -> str:
    lines = ["family sampling options (--option KEY=VALUE):"]
    for name, fam in REGISTRY.items():
        lines += [f"  {name}: {s.name} (default {s.default}): {s.help_text()}" for s in describe(fam.SamplingOptions)]
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
        out.extend(_fields(type(getattr(cfg, section))))
    out += ["", "[options] (per family)", family_options_text()]
    return "\n".join(out) + "\n"
