"""A ready-to-use model: one family + one backbone + its tokenizer.

This is what `toolkit.load` returns and what the CLIs, the GUI and the notebooks use.
"""
from __future__ import annotations

from typing import Iterator

import torch

from toolkit.config import RunConfig
from toolkit.errors import UserError
from toolkit.options import check_seed, require_choice
from toolkit.families import get_family
from toolkit.hardware import Choice, Probe, autocast, best_of, choose_precision
from toolkit.model.attention import resolve_backend
from toolkit.model.backbone import Backbone, unwrap_backbone
from toolkit.samplers import resolve_sampler
from toolkit.samplers import sample as run_sampler
from toolkit.sample_request import SampleRequest, Step
from toolkit.schedule import antithetic_times

MAX_SAMPLING_STEPS = 1_000_000   # beyond this a step count is a typo (and its time grid would not fit in memory)


def build_family(cfg: RunConfig, tokenizer):
    fam_cls = get_family(cfg.family)
    d = cfg.data   # special tokens are named in the config: '[MASK]'/'[EOS]', or an imported vocabulary's
    return fam_cls(cfg.options, cfg.model.vocab_size, tokenizer.token_to_id(d.mask_token), tokenizer.token_to_id(d.eos_token))


class LanguageModel:
    def __init__(self, cfg: RunConfig, tokenizer, net: Backbone | None = None, device="cpu"):
        self.cfg, self.tokenizer = cfg, tokenizer
        cfg.model.vocab_size = cfg.model.vocab_size or tokenizer.get_vocab_size()
        self.family = build_family(cfg, tokenizer)
        self.net = net if net is not None else Backbone(cfg.model)
        self.device = torch.device(device)
        self.net.to(self.device).eval()
        self.net.backend = resolve_backend(cfg.model.attention, self.device)
        self.path: str | None = None
        self.precision = "auto"   # inference: auto (bf16 where native and faster for this model), bf16 or fp32

    @property
    def precision(self) -> str:
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        require_choice("precision", value, ("auto", "bf16", "fp32"))
        self._precision, self._choice = value, None
        self.resolved_precision()   # now, so that the network computes in it however it is called

    def resolved_precision(self) -> Choice:
        """What `precision` means on this device for this model (auto: bf16 only where the device has
        native bf16 and one forward of this model at its full length is faster in it), with the reason.
        The network computes in it wherever it is called from (`Backbone.precision`)."""
        if self._choice is None:
            self._choice = choose_precision(self._precision, self.device, self._forward_probe())
            backbone = unwrap_backbone(self.net)
            if backbone is not None:
                backbone.precision = self._choice.precision
        return self._choice

    def _forward_probe(self) -> Probe:
        """One forward of 8 sequences at the model's full length: what sampling and scoring repeat."""
        m, net, device, length = self.cfg.model, self.net, self.device, self.max_length
        tokens = torch.randint(0, m.vocab_size, (8, length), generator=torch.Generator().manual_seed(0)).to(device)
        sigma = torch.full((8,), 0.5, device=device)

        def seconds(precision: str) -> float:
            def forward():
                with torch.no_grad(), autocast(device, precision):
                    net(tokens, sigma)
            return best_of(forward)
        return Probe("forward", f"d{m.d_model} L{m.n_layers} H{m.n_heads} V{m.vocab_size} 8x{length}", seconds)

    def inference(self):
        """Sampling and scoring: no autograd, the network in its resolved precision (weights stay fp32;
        the samplers take probabilities in fp32)."""
        self.resolved_precision()
        return torch.no_grad()

    @property
    def name(self) -> str:
        return self.cfg.family

    @property
    def max_length(self) -> int:
        return self.cfg.data.seq_len

    def to(self, device) -> "LanguageModel":
        self.device = torch.device(device)
        self.net.to(self.device)
        self.net.backend = resolve_backend(self.cfg.model.attention, self.device)
        self._choice = None   # `auto` may resolve differently on the new device
        self.resolved_precision()
        return self

    # -- text helpers --------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:   # bytes that were not UTF-8, smuggled in as surrogates (argv, files)
            raise UserError("the text is not valid UTF-8") from None
        return self.tokenizer.encode(text).ids

    def decode(self, ids, show_mask: bool = False) -> str:
        mask = self.tokenizer.token_to_id(self.cfg.data.mask_token)
        ids = [int(i) for i in ids]
        if show_mask:
            return "".join("▒" if i == mask else self.tokenizer.decode([i]) for i in ids)
        return self.tokenizer.decode([i for i in ids if i != mask])

    def token_strings(self, ids) -> list[str]:
        """Each id decoded on its own (for per-token display)."""
        return [self.tokenizer.decode([int(i)]) for i in ids]

    # -- sampling --------------------------------------------------------------------------
    def check_request(self, req: SampleRequest) -> None:
        if req.steps <= 0:
            raise UserError(f"steps must be > 0 (got {req.steps})")
        if req.steps > MAX_SAMPLING_STEPS:
            raise UserError(f"steps must be at most {MAX_SAMPLING_STEPS} (got {req.steps})")
        if req.length <= 0 or req.length > self.max_length:
            raise UserError(f"length must be in 1..{self.max_length} for this model (got {req.length})")
        if req.num_samples <= 0:
            raise UserError(f"num_samples must be > 0 (got {req.num_samples})")
        if req.prompts and (len(req.prompts) != req.num_samples or len({len(p) for p in req.prompts}) != 1):
            raise UserError(f"prompts: expected {req.num_samples} prefixes of one length"
                            f" (got {len(req.prompts)} of lengths {sorted({len(p) for p in req.prompts})})")
        if req.prompt_length >= req.length:
            raise UserError(f"the prompt is {req.prompt_length} tokens: it must be shorter than length={req.length}")
        if not 0 < req.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1] (got {req.top_p})")
        if not req.temperature >= 0:   # NaN fails this too
            raise UserError(f"temperature must be >= 0 (got {req.temperature})")
        check_seed(req.seed)
        vocab = self.cfg.model.vocab_size
        wrong = [int(t) for t in [*req.prompt, *req.fixed.values()] if not 0 <= int(t) < vocab]
        if wrong:
            raise UserError(f"token ids outside this model's vocabulary 0..{vocab - 1}: {wrong[:5]}")
        bad = [p for p in req.fixed if not 0 <= p < req.length]
        if bad:
            raise UserError(f"fixed positions outside 0..{req.length - 1}: {bad}")
        self.family.check_sampling_options(req.options)
        resolve_sampler(self.family, req)

    def sample(self, request: SampleRequest) -> Iterator[Step]:
        """Iterate over the reverse steps (the trace); the last Step holds the final tokens."""
        self.check_request(request)
        self.net.eval()
        self.resolved_precision()
        steps = run_sampler(self.family, self.net, request, self.device)
        while True:        # no_grad per step: a caller's code between steps runs as it would anyway
            with torch.no_grad():
                step = next(steps, None)
            if step is None:
                return
            yield step

    def generate(self, request: SampleRequest) -> tuple[list[str], Step]:
        last = None
        for last in self.sample(request):
            pass
        return [self.decode(row) for row in last.tokens], last

    # -- likelihood ------------------------------------------------------------------------
    def nelbo(self, x0: torch.Tensor, t: torch.Tensor | None = None, generator=None) -> torch.Tensor:
        """Per-sequence NELBO in nats [B] (one Monte Carlo draw of t unless given)."""
        self.net.eval()
        x0 = x0.to(self.device)
        if t is None:
            t = antithetic_times(x0.shape[0], generator).to(self.device)
        with self.inference():
            return self.family.nelbo(self.net, x0, t, generator).float()

    def num_params(self, non_embedding: bool = True) -> int:
        return self.net.num_params(non_embedding)
