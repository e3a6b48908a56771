"""Typed run configuration: the dataclasses and nothing that needs a family or a model.

This module is a leaf (tests/test_architecture.py keeps it so): turning `key=value` strings
into a RunConfig needs the family registry and lives in toolkit/resolve.py. Every field is
declared with toolkit.options.option: its help and choices are what `python -m training.train
--help` prints and what toolkit/resolve.py checks.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit import presets
from toolkit.errors import UserError
from toolkit.options import option

ATTENTION_BACKENDS = ("sdpa", "xformers", "math")   # the kernels of toolkit/model/attention.py
SWITCH = ("auto", "true", "false")


@dataclass
class ModelConfig:
    preset: str = option("tiny")
    n_layers: int = option(4)
    d_model: int = option(128)
    n_heads: int = option(4)
    cond_dim: int = option(128, "width of the time embedding fed to adaLN")
    mlp_ratio: int = option(4)
    vocab_size: int = option(0, "filled from the tokenizer")
    max_seq_len: int = option(256, "rotary tables are built up to this length")
    attention: str = option("auto", "the attention kernel (auto: xformers on a GPU when installed, else sdpa)",
                            ("auto", *ATTENTION_BACKENDS))
    fused_head: str = option("auto", "chunked head + cross-entropy, no [N, V] logits (auto: on a CPU; off on a GPU,"
                                     " where it breaks torch.compile's graph)", SWITCH)
    head_rows: str = option("selected", "selected: the head runs only where a loss scores; all: every row, unscored"
                                        " ones weighted 0 (static shapes, no device sync)", ("selected", "all"))

    def apply_preset(self, name: str) -> None:
        try:
            self.n_layers, self.d_model, self.n_heads = presets.preset(name)
        except KeyError:
            raise UserError(f"unknown model preset '{name}' (known: {', '.join(presets.preset_names())})") from None
        self.preset = name


@dataclass
class DataConfig:
    data: str = option("austen", "'austen', a local text file, or a hub dataset name")
    tokenizer: str = option("", "tokenizer.json path; empty = the embedded Austen BPE")
    seq_len: int = option(256)
    val_fraction: float = option(0.02)
    text_field: str = option("text", "hub datasets: which column holds the text")
    max_documents: int = option(0, "hub datasets: 0 = all")
    eos_token: str = option("[EOS]", "the tokenizer's document separator (imported vocabularies: '</s>')")
    mask_token: str = option("[MASK]", "the absorbing [MASK] state (imported vocabularies: '<mask>')")
    format: str = option("text", "text: packed pre-training; pairs: prompt/response fine-tuning", ("text", "pairs"))
    prompt_field: str = option("question", "pairs: which field holds the prompt")
    response_field: str = option("answer", "pairs: which field holds the response")
    data_config: str = option("", "hub datasets: the dataset's configuration name (gsm8k: main)")


@dataclass
class OptimConfig:
    lr: float = option(2e-4)
    min_lr_ratio: float = option(0.1, "cosine decays to lr * min_lr_ratio (paper: 2e-4 -> 2e-5)")
    warmup_steps: int = option(-1, "-1: max(1% of steps, 100), capped at 10% of steps")
    weight_decay: float = option(0.1)
    beta1: float = option(0.9)
    beta2: float = option(0.95)
    eps: float = option(1e-8)
    grad_clip: float = option(1.0)


@dataclass
class TrainConfig:
    max_steps: int = option(1000)
    stop_at: int = option(0, "end this session after step N (0: at max_steps); the LR schedule still spans"
                             " max_steps and resume=true goes on")
    batch_size: int = option(32, "global sequences per optimizer step")
    grad_accum: int = option(1)
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    precision: str = option("auto", "auto: bf16 on a GPU or a CPU with native bf16, else fp32",
                            ("auto", "bf16", "fp32"))
    compile: str = option("auto", "torch.compile (auto: yes on a GPU; no on a CPU: +12% per step, but minutes"
                                  " of compiling)", SWITCH)
    fsdp: bool = option(False, "shard parameters with FSDP2 under torchrun")
    seed: int = option(0)
    log_every: int = option(10)
    eval_every: int = option(100)
    eval_batches: int = option(8)
    save_every: int = option(500)
    out: str = option("runs/default")
    resume: bool = option(False)
    overwrite: bool = option(False, "replace a run already in `out` (otherwise refused unless resume=true)")
    keep_last: int = option(1, ">1: also keep the last N checkpoints in out/checkpoints/step-N")
    keep_best: bool = option(False, "also keep the checkpoint of the lowest val_nelbo in out/best")
    on_nonfinite: str = option("stop", "on a NaN/inf loss or gradient: stop (keep the last good checkpoint) or"
                                       " skip the step", ("stop", "skip"))
    threads: int = option(0, "CPU threads; 0 = torch default")
    progress: bool = option(True)
    init: str = option("", "start from this checkpoint (run dir, embedded name, converted dir)")
    lora_rank: int = option(0, "> 0: train LoRA adapters of this rank on the blocks' linear layers")
    lora_alpha: float = option(16.0, "LoRA scale numerator (the update is alpha / rank * B A)")
    lora_dropout: float = option(0.0, "dropout on the LoRA branch's input")
    lora_targets: str = option("attn_qkv,attn_out,mlp.0,mlp.2", "linear layers of each block to adapt")


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

    def defaults_dict(self) -> dict:
        """`to_dict()` of this family's config with every setting at its default."""
        options = type(self.options)() if self.options is not None else None
        return RunConfig(family=self.family, options=options).to_dict()

    @classmethod
    def from_dict(cls, d: dict, options: Any = None) -> "RunConfig":
        """A config from `to_dict()` output; `options` is the family's options dataclass to fill
        (toolkit.resolve.config_from_dict looks it up in the family registry)."""
        cfg = cls(family=d["family"], options=options)
        for s in cls.SECTIONS:
            section = getattr(cfg, s)
            if section is None:
                continue
            for k, v in d.get(s, {}).items():
                if hasattr(section, k):
                    setattr(section, k, v)
        return cfg

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
