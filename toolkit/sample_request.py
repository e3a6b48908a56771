"""Shared sampling pieces: the request, the per-step trace record, and token drawing.

Every family's sampler is a generator of `Step` records, one per reverse step; the last one
holds the final tokens. Consumers (CLI, GUI, notebooks) only read these records.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch


@dataclass
class SampleRequest:
    num_samples: int = 1
    length: int = 128
    steps: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    prompt: list[int] = field(default_factory=list)     # prefix ids held fixed
    fixed: dict[int, int] = field(default_factory=dict)  # position -> id held fixed (infilling)
    use_cache: bool = True
    options: dict = field(default_factory=dict)          # family sampling options (tail, nucleus, alpha_0)
    sampler: str = "ancestral"                           # decoding strategy (toolkit/samplers/)
    sampler_options: dict = field(default_factory=dict)  # that strategy's options (k, threshold, ...)
    prompts: list[list[int]] = field(default_factory=list)  # one prefix per sample (equal lengths); overrides prompt

    def fixed_positions(self) -> dict[int, int]:
        """Positions held fixed in every sample (the per-sample `prompts` are not included)."""
        d = {} if self.prompts else dict(enumerate(self.prompt))
        d.update(self.fixed)
        return d

    @property
    def prompt_length(self) -> int:
        return len(self.prompts[0]) if self.prompts else len(self.prompt)

    def prompt_rows(self, device="cpu") -> torch.Tensor:
        """[num_samples, prompt_length] prefix ids: the shared prompt, or one per sample (batched tasks)."""
        rows = self.prompts or [list(self.prompt)] * self.num_samples
        return torch.tensor(rows, dtype=torch.long, device=device).view(self.num_samples, self.prompt_length)


@dataclass
class Step:
    """One reverse step of a sampler (tensors are [batch, length])."""
    step: int                 # 1-based index of this step
    t: float                  # time before the step
    s: float                  # time after the step
    tokens: torch.Tensor      # current ids (the mask id where still masked)
    changed: torch.Tensor     # bool: positions whose id changed in this step
    confidence: torch.Tensor  # probability the model gave the current id (1 for fixed/prompt)
    nfe: int                  # network evaluations so far
    elapsed: float            # seconds since sampling started
    remasked: torch.Tensor | None = None   # bool: positions turned back into [MASK] (ReMDM); None = none
    row_nfe: torch.Tensor | None = None    # [batch] evaluations each row needed; None = `nfe` for every row

    def nfe_per_row(self) -> list[float]:
        """Each row's own cost: the evaluations it would have needed if sampled alone.

        A sampler that skips an evaluation when nothing changed (MDLM's no-change cache, ReMDM,
        block decoding) skips it for the batch only when no row changed, so the batch's `nfe`
        overstates a row that finished early; such samplers count `row_nfe` per row."""
        if self.row_nfe is None:
            return [float(self.nfe)] * self.tokens.shape[0]
        return self.row_nfe.float().tolist()

    def to_dict(self, batch_index: int | None = None) -> dict:
        pick = (lambda x: x[batch_index]) if batch_index is not None else (lambda x: x)
        remasked = self.remasked if self.remasked is not None else torch.zeros_like(self.changed)
        return {"step": self.step, "t": self.t, "s": self.s, "nfe": self.nfe,
                "elapsed": round(self.elapsed, 6),
                "tokens": pick(self.tokens).tolist(),
                "changed": pick(self.changed).nonzero().squeeze(-1).tolist() if batch_index is not None
                else [row.nonzero().squeeze(-1).tolist() for row in self.changed],
                "remasked": pick(remasked).nonzero().squeeze(-1).tolist() if batch_index is not None
                else [row.nonzero().squeeze(-1).tolist() for row in remasked],
                "confidence": [round(c, 4) for c in pick(self.confidence).flatten().tolist()]
                if batch_index is not None else [[round(c, 4) for c in r] for r in self.confidence.tolist()]}


class Clock:
    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def filter_probs(logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    """Softmax with temperature and nucleus (top-p) truncation, renormalised.

    temperature 0 or top_p -> 0 reduces to greedy (all mass on the arg-max).
    """
    logits = logits.float()
    if temperature <= 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return top_p_filter((logits / temperature).softmax(-1), top_p)


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus truncation of a distribution: keep the most likely ids up to mass top_p, renormalise."""
    if top_p >= 1.0:
        return probs
    sorted_p, idx = probs.sort(-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p          # mass strictly above each entry
    keep_sorted = before < top_p
    keep_sorted[..., 0] = True                        # always keep the most likely id
    keep = torch.zeros_like(keep_sorted).scatter(-1, idx, keep_sorted)
    probs = probs * keep
    return probs / probs.sum(-1, keepdim=True)


def draw(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw of one id per row with given uniforms (same uniforms -> same ids)."""
    cdf = probs.cumsum(-1)
    u = uniform.unsqueeze(-1) * cdf[..., -1:]
    return torch.searchsorted(cdf, u.contiguous(), right=True).clamp_(max=probs.shape[-1] - 1).squeeze(-1)


def time_grid(steps: int, device="cpu") -> torch.Tensor:
    """t from 1 to 0 in `steps` equal steps."""
    return torch.linspace(1.0, 0.0, steps + 1, device=device)
