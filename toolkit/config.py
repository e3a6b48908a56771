"""Typed run configuration: the dataclasses and nothing that needs a family or a model.

This module is a leaf (tests/test_architecture.py keeps it so): turning `key=value` strings
into a RunConfig needs the family registry and lives in toolkit/resolve.py. A field's trailing
comment is its help text in `python -m training.train --help`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
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
    fused_head: str = "auto"     # chunked head + cross-entropy, no [N, V] logits: auto (on a CPU; off on a GPU, where it breaks torch.compile's graph) | true | false
    head_rows: str = "selected"  # selected (the head runs only where a loss scores) | all (every row, unscored ones weighted 0: static shapes, no device sync)

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
    stop_at: int = 0              # end this session after step N (0: at max_steps); the LR schedule still spans max_steps and resume=true goes on
    batch_size: int = 32          # global sequences per optimizer step
    grad_accum: int = 1
    device: str = "auto"          # auto | cpu | cuda | cuda:N
    precision: str = "auto"       # auto (bf16 on a GPU or a CPU with native bf16, else fp32) | bf16 | fp32
    compile: str = "auto"         # auto (yes on a GPU; no on a CPU: +12% per step, but minutes of compiling) | true | false
    fsdp: bool = False            # shard parameters with FSDP2 under torchrun
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 8
    save_every: int = 500
    out: str = "runs/default"
    resume: bool = False
    overwrite: bool = False       # replace a run already in `out` (otherwise refused unless resume=true)
    keep_last: int = 1            # >1: also keep the last N checkpoints in out/checkpoints/step-N
    keep_best: bool = False       # also keep the checkpoint of the lowest val_nelbo in out/best
    on_nonfinite: str = "stop"    # NaN/inf loss or gradient: stop (keep the last good checkpoint) | skip the step
    threads: int = 0              # CPU threads; 0 = torch default
    progress: bool = True
    init: str = ""                # start from this checkpoint (run dir, embedded name, converted dir)
    lora_rank: int = 0            # > 0: train LoRA adapters of this rank on the blocks' linear layers
    lora_alpha: float = 16.0      # LoRA scale numerator (the update is alpha / rank * B A)
    lora_dropout: float = 0.0     # dropout on the LoRA branch's input
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
