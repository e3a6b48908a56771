"""The one place that turns `key=value` overrides and recipes into a checked RunConfig.

Keys may be dotted (`optim.lr=1e-3`) or bare when unique (`lr=1e-3`, `loss=low_var`);
`family=` picks the family (its options become keys), `model=` a size preset, and
`config=FILE.yaml` reads a recipe whose keys are applied before the command line's, and
`init=CKPT` starts from a checkpoint's config instead of the defaults (fine-tuning).
It sits above toolkit/families/ because a family's options dataclass comes from the registry.
Programs that build a config themselves start from `config_for` and call `validate`.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from toolkit.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig
from toolkit.errors import UserError
from toolkit.families import get_family
from toolkit.options import check, check_seed, coerce, parse_overrides


# keys whose type changed: a config saved before holds the old type, read as the new one
_SAVED_AS = {("train", "compile"): (bool, lambda v: str(v).lower()),   # bool -> 'true' | 'false' (+ 'auto')
             ("model", "fused_head"): (bool, lambda v: str(v).lower())}


def upgrade_saved(d: dict) -> dict:
    """A saved config with the value types of this version (older files are still read)."""
    d = dict(d)
    for (section, key), (old, convert) in _SAVED_AS.items():
        values = d.get(section)
        if isinstance(values, dict) and isinstance(values.get(key), old):
            d[section] = {**values, key: convert(values[key])}
    return d


def config_from_dict(d: dict) -> RunConfig:
    """A RunConfig from a saved config.json (checkpoints, run directories)."""
    d = upgrade_saved(d)
    return RunConfig.from_dict(d, get_family(d["family"]).Options())


def config_type_problem(d: dict) -> str | None:
    """Why a saved config (a checkpoint's config.json) has the wrong shape or value types, or None."""
    d = upgrade_saved(d)
    if not isinstance(d.get("family"), str):
        return "family must be a string"
    sections = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "train": TrainConfig}
    for s in RunConfig.SECTIONS:
        section = d.get(s, {})
        if not isinstance(section, dict):
            return f"{s} must be a mapping (got {type(section).__name__})"
        if s not in sections:
            continue   # the family's own options: checked by its validate()
        types = field_types(sections[s]())
        for k, v in section.items():
            typ = types.get(k)
            ok = (typ not in (int, float, bool, str) or (typ is bool and isinstance(v, bool))
                  or (typ is str and isinstance(v, str))
                  or (typ in (int, float) and isinstance(v, int if typ is int else (int, float)) and not isinstance(v, bool)))
            if not ok:
                return f"{s}.{k} must be {typ.__name__} (got {v!r})"
    return None


def field_types(obj) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints.get(f.name, f.type) for f in fields(obj)}


def load_recipe(path: str) -> list[tuple[str, str]]:
    import yaml   # deferred: only recipes need it
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"cannot parse {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of key: value")
    return [(str(k), "" if v is None else str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in data.items()]


def config_for(family: str) -> RunConfig:
    """A RunConfig of `family` with every setting at its default: a program sets its fields and
    calls `validate` (`resolve` is for `key=value` text: command lines, recipes, user input)."""
    return RunConfig(family=family, options=get_family(family).Options())


def resolve(args: list[str] | None = None, base: RunConfig | None = None) -> RunConfig:
    """Build a RunConfig from `key=value` strings (recipes first, then the command line).

    `init=CKPT` (fine-tuning; on the command line or in a recipe) makes the checkpoint's config the
    base (`init_base`) instead of the defaults; every other `key=value` still overrides it.
    """
    pairs = parse_overrides(args or [], "each setting")
    expanded: list[tuple[str, str]] = []
    for k, v in pairs:
        expanded.extend(load_recipe(v) if k == "config" else [(k, v)])
    families = [v for k, v in expanded if k == "family"]
    inits = [v for k, v in expanded if k in ("init", "train.init")]
    if base is None and inits and inits[-1]:
        base = init_base(inits[-1], families[-1] if families else None)
    family = families[-1] if families else base.family if base else RunConfig.family
    fam = get_family(family)  # raises UserError on an unknown name
    cfg = base or RunConfig()
    if cfg.options is None or cfg.family != family:
        cfg.family, cfg.options = family, fam.Options()
    for k, v in expanded:
        if k in ("family",):
            continue
        if k == "model" and "." not in k:
            cfg.model.apply_preset(v)
            continue
        set_key(cfg, k, v)
    validate(cfg)
    return cfg


def init_base(name: str, family: str | None = None) -> RunConfig:
    """The base config of a run fine-tuned from checkpoint `name` (a run, a checkpoint directory,
    an embedded model): its family, options, architecture, tokenizer, special tokens and seq_len;
    the optimisation and training settings start from their defaults."""
    # deferred: toolkit.checkpoints imports this module (it reads saved configs with config_from_dict)
    from toolkit.checkpoints.rundir import read_config, resolve_path, tokenizer_file
    ckpt = resolve_path(name)
    old, meta = read_config(ckpt)
    if family is not None and family != old.family:
        raise UserError(f"init={name} is a {old.family} checkpoint: family={family} cannot change that")
    cfg = RunConfig(family=old.family, options=old.options, model=old.model)
    cfg.data.tokenizer = str(tokenizer_file(ckpt, meta))
    cfg.data.eos_token, cfg.data.mask_token = old.data.eos_token, old.data.mask_token
    cfg.data.seq_len = old.data.seq_len
    cfg.train.init = name
    return cfg


def set_key(cfg: RunConfig, key: str, raw: str) -> None:
    if "." in key:
        section_name, name = key.split(".", 1)
        if section_name == "family":
            section_name = "options"
        if section_name not in RunConfig.SECTIONS:
            raise UserError(f"unknown config section '{section_name}' in '{key}'")
        candidates = [(section_name, getattr(cfg, section_name))]
    else:
        name = key
        candidates = [(s, getattr(cfg, s)) for s in RunConfig.SECTIONS]
    hits = [(s, obj) for s, obj in candidates if name in field_types(obj)]
    if not hits:
        known = sorted({f for _, obj in candidates for f in field_types(obj)})
        raise UserError(f"unknown config key '{key}' for family {cfg.family} (known: {', '.join(known)})")
    if len(hits) > 1:
        raise UserError(f"ambiguous key '{key}': use one of {', '.join(f'{s}.{name}' for s, _ in hits)}")
    section, obj = hits[0]
    setattr(obj, name, coerce(raw, field_types(obj)[name], key))


MAX_STEPS = 10 ** 9   # beyond this a step count is a typo, not a plan


def validate(cfg: RunConfig) -> None:
    t, m, d, o = cfg.train, cfg.model, cfg.data, cfg.optim
    checks = [
        (t.max_steps > 0, f"max_steps must be > 0 (got {t.max_steps})"),
        (t.max_steps <= MAX_STEPS, f"max_steps must be at most {MAX_STEPS:.0e} (got {t.max_steps})"),
        (t.stop_at >= 0, f"stop_at must be >= 0 (0: run to max_steps; got {t.stop_at})"),
        (t.keep_last >= 1, f"keep_last must be >= 1 (got {t.keep_last})"),
        (t.resume + t.overwrite < 2, "resume=true and overwrite=true contradict each other: pick one"),
        (t.batch_size > 0, f"batch_size must be > 0 (got {t.batch_size})"),
        (t.grad_accum > 0 and t.batch_size % t.grad_accum == 0,
         f"grad_accum ({t.grad_accum}) must be > 0 and divide batch_size ({t.batch_size})"),
        (d.seq_len > 1, f"seq_len must be > 1 (got {d.seq_len})"),
        (0 < d.val_fraction < 1, f"val_fraction must be in (0, 1) (got {d.val_fraction})"),
        (o.lr > 0, f"lr must be > 0 (got {o.lr})"),
        (0 <= o.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1] (got {o.min_lr_ratio})"),
        (min(m.n_layers, m.d_model, m.n_heads, m.cond_dim, m.mlp_ratio) > 0,
         "n_layers, d_model, n_heads, cond_dim and mlp_ratio must be > 0"),
        (m.n_heads > 0 and m.d_model % m.n_heads == 0 and (m.d_model // m.n_heads) % 2 == 0,
         f"d_model ({m.d_model}) must split into n_heads ({m.n_heads}) heads of even size"),
        (t.lora_rank >= 0, f"lora_rank must be >= 0 (got {t.lora_rank})"),
        (t.log_every > 0 and t.eval_every > 0 and t.save_every > 0 and t.eval_batches > 0,
         "log_every, eval_every, save_every and eval_batches must be > 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)
    check_seed(t.seed)
    for section in (m, d, o, t, cfg.options):
        for k, v in (dataclasses.asdict(section).items() if dataclasses.is_dataclass(section) else ()):
            if isinstance(v, float) and not math.isfinite(v):
                raise UserError(f"{k} must be a finite number (got {v})")
    for section in (m, d, o, t):
        check(section)   # declared choices (toolkit/config.py)
    m.max_seq_len = max(m.max_seq_len, d.seq_len)
    if cfg.options is not None:
        check(cfg.options)   # the family's declared choices and its own validate()
