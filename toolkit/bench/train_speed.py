"""Training and forward throughput, as a fraction of the measured matrix-product peak.

Training runs the real `Trainer.train_step` (forward, backward, clipping, AdamW) on synthetic
tokens of any vocabulary size, so the figure is what `python -m training.train` gets, and
`vocab_size` can match the paper's models instead of the embedded 4k tokenizer. MFU uses the
paper's accounting (6 N per token, attention scores excluded).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace

import torch

from toolkit.bench.timing import autocast, best_seconds, peak_memory_gib, reset_peak_memory
from toolkit.config import ModelConfig, RunConfig
from toolkit.data.packing import PackedData
from toolkit.model.backbone import Backbone
from toolkit.resolve import config_for, resolve
from toolkit.scaling.flops import forward_flops, train_flops_per_sequence
from toolkit.scaling.grid import Size as ModelSize


@dataclass(frozen=True)
class Size(ModelSize):
    """One benchmarked shape: a model (the scaling grid's Size), a sequence length and a batch."""
    seq_len: int
    batch: int
    vocab_size: int = 4096

    def model_config(self) -> ModelConfig:
        return ModelConfig(preset=self.name, n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads,
                           vocab_size=self.vocab_size, max_seq_len=self.seq_len)

    @property
    def tokens(self) -> int:
        return self.seq_len * self.batch

    def forward_flops_per_token(self) -> float:
        return forward_flops(self.n_layers, self.d_model, self.vocab_size, self.seq_len) / self.seq_len

    def describe(self) -> str:
        return f"{self.n_layers}x{self.d_model}, T={self.seq_len}, batch {self.batch}, V={self.vocab_size}"


QUICK_SIZE = Size("quick", 2, 64, 2, 32, 4, 512)   # every part in seconds (CI checks the report's structure)


class SyntheticTokenizer:
    """Just what the trainer asks of a tokenizer: the vocabulary size and two special ids."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def get_vocab_size(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> int:
        return self.vocab_size - 1 if "MASK" in token.upper() else self.vocab_size - 2


def synthetic_data(size: Size, n_train: int = 64) -> PackedData:
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, size.vocab_size - 2, (n_train + 2, size.seq_len), generator=g)
    return PackedData(train=blocks[:n_train], val=blocks[n_train:], tokenizer=SyntheticTokenizer(size.vocab_size),
                      n_tokens=blocks.numel())


def bench_config(family: str, size: Size, precision: str, device: torch.device | str, compile_: bool, out: str,
                 extra: tuple[str, ...] = ()) -> RunConfig:
    """The run config of a throughput measurement: `size`'s shape, never a validation pass."""
    m, cfg = size, config_for(family)
    cfg.model = replace(cfg.model, n_layers=m.n_layers, d_model=m.d_model, n_heads=m.n_heads, max_seq_len=m.seq_len)
    cfg.data.seq_len = m.seq_len
    cfg.train = replace(cfg.train, batch_size=m.batch, precision=precision, compile=str(compile_).lower(),
                        device=str(device), progress=False, max_steps=1000, eval_every=1000, out=out)
    return resolve(list(extra), base=cfg)   # the bench command's own key=value settings; validates


def trainer_for(family: str, size: Size, precision: str, device: torch.device, compile_: bool, out: str,
                extra: tuple[str, ...] = ()):
    from toolkit.trainer import Trainer   # deferred: the trainer pulls in the data and checkpoint layers
    cfg = bench_config(family, size, precision, device, compile_, out, extra)
    trainer = Trainer(cfg, data=synthetic_data(size, max(64, 4 * size.batch)))
    trainer.net.train()
    return trainer


def train_throughput(family: str, size: Size, precision: str, device: torch.device, *, compile_: bool = False,
                     budget_s: float = 3.0, repeats: int = 3, extra: tuple[str, ...] = ()) -> dict:
    """Tokens/s and model FLOP/s of full optimizer steps (the first steps warm up)."""
    with tempfile.TemporaryDirectory() as out:
        trainer = trainer_for(family, size, precision, device, compile_, out, extra)

        def one_step():
            trainer.train_step()

        reset_peak_memory(device)
        seconds = best_seconds(one_step, device, warmup=3 if compile_ else 2, repeats=repeats, budget_s=budget_s)
        params = trainer.net.num_params(False), trainer.net.num_params(True)
        flops = trainer.flops_per_seq * size.batch
        with_attention = train_flops_per_sequence(size.n_layers, size.d_model, size.vocab_size, size.seq_len,
                                                  attention=True) * size.batch
        memory = peak_memory_gib(device)
    return {"family": family, "size": size.name, "shape": size.describe(), "precision": precision,
            "compile": compile_, "tokens_per_s": size.tokens / seconds, "model_flops_per_s": flops / seconds,
            "attention_flops_per_s": with_attention / seconds,
            "step_s": seconds, "params_total": params[0], "params_non_embedding": params[1],
            "peak_memory_gib": memory}


def random_backbone(m: ModelConfig, device: torch.device, seed: int = 0) -> Backbone:
    """Every weight random (the adaLN and head layers are zero-initialised for training)."""
    torch.manual_seed(seed)
    net = Backbone(m).to(device)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(std=0.02)
    return net


def forward_inputs(size: Size, device: torch.device):
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, size.vocab_size, (size.batch, size.seq_len), generator=g).to(device)
    return tokens, torch.rand(size.batch, generator=g).to(device)


def forward_throughput(net, size: Size, precision: str, device: torch.device, *, budget_s: float = 2.0,
                       call=None) -> dict:
    """Tokens/s of a bidirectional forward pass (no gradients) of `net` (or `call(tokens, sigma)`)."""
    tokens, sigma = forward_inputs(size, device)
    call = call or net

    def run():
        with autocast(device, precision), torch.no_grad():
            call(tokens, sigma)

    reset_peak_memory(device)
    seconds = best_seconds(run, device, warmup=2, repeats=3, budget_s=budget_s, min_sample_s=0.02)
    return {"size": size.name, "shape": size.describe(), "precision": precision, "tokens_per_s": size.tokens / seconds,
            "model_flops_per_s": size.forward_flops_per_token() * size.tokens / seconds,
            "peak_memory_gib": peak_memory_gib(device)}
