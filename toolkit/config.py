"""Typed run configuration and the one place that resolves `key=value` overrides.

Keys may be dotted (`optim.lr=1e-3`) or bare when unique (`lr=1e-3`, `loss=low_var`);
`family=` picks the family (its options become keys), `model=` a size preset, and
`config=FILE.yaml` reads a recipe whose keys are applied before the command line's.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from toolkit import presets
from toolkit.errors import UserError


@dataclass
class ModelConfig:
    preset: str = "tiny"
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    cond_dim: int = 128          # width of the time embedding fed to adaLN
    mlp_ratio: int = 4
    vocab_size: int = 0          # filled from the tokenizer
    max_seq_len: int = 256       # rotary tables are built up to this length
    attention: str = "auto"      # auto | sdpa | xformers | math

    def apply_preset(self, name: str) -> None:
        try:
            self.n_layers, self.d_model, self.n_heads = presets.preset(name)
        except KeyError:
            raise UserError(f"unknown model preset '{name}' (known: {', '.join(presets.preset_names())})") from None
        self.preset = name


@dataclass
class DataConfig:
    data: str = "austen"          # 'austen', a local text file, or a hub dataset name
    tokenizer: str = ""          # tokenizer.json path; empty = the embedded Austen BPE
    seq_len: int = 256
    val_fraction: float = 0.02
    text_field: str = "text"      # hub datasets: which column holds the text
    max_documents: int = 0        # hub datasets: 0 = all
    eos_token: str = "[EOS]"      # the tokenizer's document separator (imported vocabularies: '</s>')
    mask_token: str = "[MASK]"    # the absorbing [MASK] state (imported vocabularies: '<mask>')
    format: str = "text"          # text (packed pre-training) | pairs (prompt/response fine-tuning)
    prompt_field: str = "question"   # pairs: which field holds the prompt
    response_field: str = "answer"   # pairs: which field holds the response
    data_config: str = ""         # hub datasets: the dataset's configuration name (gsm8k: main)


@dataclass
class OptimConfig:
    lr: float = 2e-4
    min_lr_ratio: float = 0.1     # cosine decays to lr * min_lr_ratio (paper: 2e-4 -> 2e-5)
    warmup_steps: int = -1        # -1: max(1% of steps, 100), capped at 10% of steps
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 32          # global sequences per optimizer step
    grad_accum: int = 1
    device: str = "auto"          # auto | cpu | cuda | cuda:N
    precision: str = "auto"       # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    compile: bool = False
    fsdp: bool = False            # shard parameters with FSDP2 under torchrun
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 8
    save_every: int = 500
    out: str = "runs/default"
    resume: bool = False
    threads: int = 0              # CPU threads; 0 = torch default
    progress: bool = True
    init: str = ""                # start from this checkpoint (run dir, embedded name, converted dir)
    lora_rank: int = 0            # > 0: train LoRA adapters of this rank on the blocks' linear layers
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: str = "attn_qkv,attn_out,mlp.0,mlp.2"   # linear layers of each block to adapt


@dataclass
class RunConfig:
    family: str = "mdlm"
    options: Any = None           # the family's own options dataclass
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    SECTIONS = ("options", "model", "data", "optim", "train")

    def to_dict(self) -> dict:
        d = {"family": self.family}
        for s in self.SECTIONS:
            d[s] = dataclasses.asdict(getattr(self, s))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        from toolkit.families import get_family
        fam = get_family(d["family"])
        cfg = cls(family=d["family"], options=fam.Options())
        for s in cls.SECTIONS:
            section = getattr(cfg, s)
            for k, v in d.get(s, {}).items():
                if hasattr(section, k):
                    setattr(section, k, v)
        return cfg

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def parse_value(raw: str, typ: Any, key: str) -> Any:
    """Parse a command-line string into the field's declared type."""
    if isinstance(typ, str):  # postponed annotations
        typ = {"int": int, "float": float, "bool": bool, "str": str}.get(typ, str)
    if typ is bool:
        low = raw.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise UserError(f"{key}: expected true/false, got '{raw}'")
    if typ in (int, float):
        try:
            v = float(raw)
            if typ is int:
                if v != int(v):
                    raise ValueError
                return int(v)
            return v
        except ValueError:
            raise UserError(f"{key}: expected {typ.__name__}, got '{raw}'") from None
    return raw


def _field_types(obj) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints.get(f.name, f.type) for f in fields(obj)}


def parse_overrides(args: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for a in args:
        if "=" not in a or a.startswith("="):
            raise UserError(f"expected key=value, got '{a}'")
        k, v = a.split("=", 1)
        pairs.append((k.strip(), v.strip()))
    return pairs


def load_recipe(path: str) -> list[tuple[str, str]]:
    import yaml
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


def resolve(args: list[str] | None = None, base: RunConfig | None = None) -> RunConfig:
    """Build a RunConfig from `key=value` strings (recipes first, then the command line)."""
    from toolkit.families import get_family

    pairs = parse_overrides(args or [])
    expanded: list[tuple[str, str]] = []
    for k, v in pairs:
        expanded.extend(load_recipe(v) if k == "config" else [(k, v)])
    family = base.family if base else "mdlm"
    for k, v in expanded:
        if k == "family":
            family = v
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
    hits = [(s, obj) for s, obj in candidates if name in _field_types(obj)]
    if not hits:
        known = sorted({f for _, obj in candidates for f in _field_types(obj)})
        raise UserError(f"unknown config key '{key}' for family {cfg.family} (known: {', '.join(known)})")
    if len(hits) > 1:
        raise UserError(f"ambiguous key '{key}': use one of {', '.join(f'{s}.{name}' for s, _ in hits)}")
    section, obj = hits[0]
    setattr(obj, name, parse_value(raw, _field_types(obj)[name], key))


def validate(cfg: RunConfig) -> None:
    t, m, d, o = cfg.train, cfg.model, cfg.data, cfg.optim
    checks = [
        (t.max_steps > 0, f"max_steps must be > 0 (got {t.max_steps})"),
        (t.batch_size > 0, f"batch_size must be > 0 (got {t.batch_size})"),
        (t.grad_accum > 0 and t.batch_size % t.grad_accum == 0,
         f"grad_accum ({t.grad_accum}) must be > 0 and divide batch_size ({t.batch_size})"),
        (d.seq_len > 1, f"seq_len must be > 1 (got {d.seq_len})"),
        (0 < d.val_fraction < 1, f"val_fraction must be in (0, 1) (got {d.val_fraction})"),
        (o.lr > 0, f"lr must be > 0 (got {o.lr})"),
        (0 <= o.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1] (got {o.min_lr_ratio})"),
        (m.d_model % m.n_heads == 0 and (m.d_model // m.n_heads) % 2 == 0,
         f"d_model ({m.d_model}) must split into n_heads ({m.n_heads}) heads of even size"),
        (m.attention in ("auto", "sdpa", "xformers", "math"),
         f"attention must be auto, sdpa, xformers or math (got '{m.attention}')"),
        (t.precision in ("auto", "bf16", "fp32"), f"precision must be auto, bf16 or fp32 (got '{t.precision}')"),
        (d.format in ("text", "pairs"), f"format must be text or pairs (got '{d.format}')"),
        (t.lora_rank >= 0, f"lora_rank must be >= 0 (got {t.lora_rank})"),
        (t.log_every > 0 and t.eval_every > 0 and t.save_every > 0 and t.eval_batches > 0,
         "log_every, eval_every, save_every and eval_batches must be > 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)
    m.max_seq_len = max(m.max_seq_len, d.seq_len)
    validate_options = getattr(cfg.options, "validate", None)
    if validate_options:
        validate_options()
