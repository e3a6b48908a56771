"""The interface every family implements, and the registry that finds them by name.

A family owns its forward (noising) process, its training loss, its validation NELBO and
its reverse-step sampler. Nothing outside a family module looks at a family's name.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Iterator

import torch
import torch.nn.functional as F

from toolkit.errors import UserError
from toolkit.model.backbone import fuses_head, selects_rows
from toolkit.options import NoOptions, build, describe
from toolkit.sample_request import SampleRequest, Step
from toolkit.schedule import LogLinear

REGISTRY: dict[str, type["Family"]] = {}


def register(cls: type["Family"]) -> type["Family"]:
    REGISTRY[cls.name] = cls
    return cls


def get_family(name: str) -> type["Family"]:
    if name not in REGISTRY:
        raise UserError(f"unknown family '{name}' (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


class Family:
    """Base class. Subclasses set `name`, `Options` and implement the methods (docs/architecture.md,
    "The family contract", lists what the trainer, the samplers and the GUI call).

    `Options` (training) and `SamplingOptions` (what a request may change) are dataclasses whose
    fields are declared with toolkit.options.option: the CLI help, the GUI's controls and the
    checks all read those declarations."""

    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    # a regex for the names the reference implementation and its releases give the family
    # (algo names, model classes, SDLLM-<Family> repositories): how `convert` recognises it
    reference_names: ClassVar[str] = ""
    # option values of a checkpoint imported from the reference implementation (its protocols)
    imported_options: ClassVar[dict] = {}
    # sampling-time options a request may change (a None default: the checkpoint's own value)
    SamplingOptions: ClassVar[type] = NoOptions
    # how the denoiser attends while decoding: "bidirectional" or "causal_order" (causal over tokens
    # in reveal order, so prefix KV caches are exact); the samplers read it, never the family's name
    decode_attention: ClassVar[str] = "bidirectional"

    def __init_subclass__(cls, **kwargs):
        """A family's own `sample` runs without autograd, however it is called (directly, through a
        strategy or through LanguageModel): sampling never needs gradients, and the traces it
        yields must not hold a graph."""
        super().__init_subclass__(**kwargs)
        if "sample" in cls.__dict__:
            cls.sample = torch.no_grad()(cls.__dict__["sample"])

    def __init__(self, options, vocab_size: int, mask_id: int, eos_id: int):
        self.options = options if options is not None else self.Options()
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.eos_id = eos_id   # the [EOS] id; AR also starts every sequence with it (its BOS)
        self.schedule = self.noise_schedule()

    def noise_schedule(self) -> LogLinear:
        """alpha_t = 1 - t; a family whose options shape the schedule overrides this (Eso-LM)."""
        return LogLinear(1.0)

    # -- training and evaluation -------------------------------------------------------
    def forward_sample(self, x0: torch.Tensor, t: torch.Tensor, generator=None) -> torch.Tensor | None:
        """z_t ~ q(z_t | x0) at times t [B]; None for a family without a noising process (AR)."""
        return None

    # `loss_mask` [B, L] (bool, optional) marks the positions a loss covers (a response in
    # fine-tuning); the others (a prompt) stay clean, are never noised and never scored.
    def loss(self, net, x0: torch.Tensor, t: torch.Tensor, generator=None, loss_mask=None) -> torch.Tensor:
        """Scalar training loss for clean tokens x0 [B, L] at times t [B], per covered token."""
        raise NotImplementedError

    def nelbo(self, net, x0: torch.Tensor, t: torch.Tensor, generator=None, loss_mask=None) -> torch.Tensor:
        """Per-sequence NELBO in nats [B] (a one-sample estimate at times t; exact for AR)."""
        raise NotImplementedError

    #: True when `nelbo` is exact (no Monte Carlo over t).
    exact_likelihood: ClassVar[bool] = False

    def scored_tokens(self, x0: torch.Tensor) -> int:
        """How many tokens of x0 [B, L] `nelbo` scores (the per-token denominator)."""
        return x0.numel()

    def without_mask(self, logits: torch.Tensor) -> torch.Tensor:
        """fp32 logits with the [MASK] id's logit at -inf: the model never predicts [MASK]."""
        logits = logits.float()
        logits[..., self.mask_id] = float("-inf")
        return logits

    def token_nll(self, net, tokens, targets, select=None, weights=None, **net_kwargs) -> torch.Tensor:
        """-log p(targets | tokens) per position [B, L] (fp32; 0 where the bool `select` is False),
        [MASK] never predicted. With `select` the head runs only at those positions, or, with
        `head_rows=all`, at every position with the others' NLL zeroed: the same values, static
        shapes, no device sync. With `weights` ([B, L], no
        gradient) the scalar sum of weights * NLL instead.

        A backbone with `fused_head` (the default) computes it in its chunked head + cross-entropy
        (toolkit/model/fused_head.py) without forming [positions, V] logits; given the weights,
        it also forms the head's gradients during forward (one head product fewer). Any other
        network is asked for logits, and the cross-entropy taken here (the same numbers up to
        fp32 round-off).
        """
        if select is not None and not selects_rows(net):
            if weights is not None:
                return self.token_nll(net, tokens, targets, weights=torch.where(select, weights, 0.0), **net_kwargs)
            return torch.where(select, self.token_nll(net, tokens, targets, **net_kwargs), 0.0)
        if select is not None:
            net_kwargs["select"] = select
        if fuses_head(net):
            out = net(tokens, targets=targets, exclude=self.mask_id, weights=weights, **net_kwargs)
            if weights is not None:
                return out
            nll = out
        else:
            logits = self.without_mask(net(tokens, **net_kwargs))
            picked = targets if select is None else targets[select]
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), picked.reshape(-1), reduction="none")
        if select is None:
            nll = nll.view(targets.shape)
        else:
            out = torch.zeros(select.shape, dtype=nll.dtype, device=nll.device)
            out[select] = nll
            nll = out
        return nll if weights is None else torch.where(weights != 0, nll * weights, 0.0).sum()   # 0 * inf: 0

    # -- training hooks (the trainer calls them for every family; most need none) ------------
    def begin_train_step(self, step: int, net) -> None:
        """Called once before each optimizer step `step` (0-based) with the unwrapped network:
        for a family whose loss depends on training progress (a curriculum, a teacher)."""

    def train_state(self) -> dict:
        """Tensors the family needs to resume a run exactly (saved with the optimizer state)."""
        return {}

    def load_train_state(self, state: dict, net) -> None:
        """Restore what `train_state` returned (an empty dict for a run saved without any)."""

    # -- sampling ----------------------------------------------------------------------
    def sample(self, net, request: SampleRequest, device="cpu") -> Iterator[Step]:
        """Yield one Step per reverse step; the last holds the final tokens."""
        raise NotImplementedError

    def sampling_defaults(self) -> dict:
        """Each sampling option's value when a request leaves it out: its declared default, or
        (a family overriding this) a value of the checkpoint's own options."""
        return {spec.name: spec.default for spec in describe(self.SamplingOptions)}

    def sampling_settings(self, options: dict):
        """A request's sampling options as a checked `SamplingOptions` (strings parsed by type)."""
        return build(self.SamplingOptions, options, f"family {self.name}", self.sampling_defaults(),
                     noun="sampling option", where=f"{self.name} sampling option ")

    def check_sampling_options(self, options: dict) -> dict:
        return dataclasses.asdict(self.sampling_settings(options))


def covered_tokens(x0: torch.Tensor, loss_mask) -> torch.Tensor | int:
    """The loss's normaliser: every token of the batch, or the covered ones (like the reference)."""
    return x0.numel() if loss_mask is None else loss_mask.sum().clamp(min=1)


class MaskedFamily(Family):
    """The masked (absorbing-state) capability the masked decoding strategies need: [MASK] is
    `mask_id`, `subs_logits` (the SUBS parameterisation) never predicts it, and
    `reveal_probability(t, s)` is the chance that a masked token is revealed in the step t -> s.
    A strategy declares `requires = MaskedFamily` (toolkit/samplers/base.py) to run on it."""

    def subs_logits(self, logits):
        """SUBS: the model never predicts [MASK]."""
        return self.without_mask(logits)

    def reveal_probability(self, t, s):
        return self.schedule.reveal_probability(t, s)
