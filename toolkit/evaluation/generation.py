"""Sample-quality and speed metrics: generative perplexity, unigram entropy, throughput.

Generative perplexity scores decoded samples with a separate evaluator language model: any
toolkit checkpoint (default: the embedded AR model) or a local Hugging Face causal LM. The
text is re-tokenised with the evaluator's own tokenizer, so any pair of models can be used.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from toolkit.checkpoints import load
from toolkit.errors import UserError
from toolkit.evaluation.likelihood import text_nll
from toolkit.options import require_choice
from toolkit.sample_request import SampleRequest


DEFAULT_EVALUATOR = "ar"   # the embedded autoregressive checkpoint scores Gen PPL unless told otherwise


class ToolkitEvaluator:
    """A toolkit checkpoint as evaluator: exact NLL for AR, the MC NELBO bound otherwise."""

    def __init__(self, model, mc_samples: int = 16):
        self.model, self.mc_samples = model, mc_samples
        self.name = model.path or model.name

    def nll(self, text: str) -> tuple[float, int]:
        ids = self.model.encode(text)
        if not ids:
            return 0.0, 0
        with self.model.inference():     # the model's precision (auto: bf16 where native)
            total, _, n = text_nll(self.model, ids, self.mc_samples)
        return total, n


class HFEvaluator:
    """A Hugging Face causal LM from the local cache only (never downloads).

    Two scoring protocols (the README says which one each figure uses):
    - `reference` (default; the paper's Gen PPL): the evaluator's tokenizer encodes the text as it
      normally does (a Llama-style tokenizer adds its BOS, GPT-2's adds nothing); the ids are cut
      into windows of the evaluator's context and each window's tokens after its first are scored;
    - `bos`: the text is encoded without special tokens, each window gets one BOS in front and
      every text token is scored (no token is lost at window starts).
    """

    PROTOCOLS = ("reference", "bos")

    def __init__(self, name: str, device="cpu", protocol: str = "reference"):
        import transformers   # deferred: optional (the [eval] extra) and slow to import
        require_choice("gen-ppl protocol", protocol, self.PROTOCOLS)
        try:
            self.tok = transformers.AutoTokenizer.from_pretrained(name, local_files_only=True)
            self.net = transformers.AutoModelForCausalLM.from_pretrained(name, local_files_only=True).to(device).eval()
        except Exception as e:  # missing files, unknown architecture, ...
            first = str(e).splitlines()[0] if str(e) else e.__class__.__name__
            raise UserError(f"evaluator not found: {name} (Hugging Face, local files only: {first})") from None
        self.name, self.device, self.protocol = name, device, protocol
        self.context = int(getattr(self.net.config, "max_position_embeddings", 1024) or 1024)

    def windows(self, text: str) -> list[list[int]]:
        """The id windows the evaluator sees; in each, every id after the first is a target."""
        if self.protocol == "reference":
            ids = self.tok(text)["input_ids"]
            return [ids[i: i + self.context] for i in range(0, len(ids), self.context)]
        bos = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        return [[bos] + ids[i: i + self.context - 1] for i in range(0, len(ids), self.context - 1)]

    @torch.no_grad()
    def nll(self, text: str) -> tuple[float, int]:
        total, scored = 0.0, 0
        for ids in self.windows(text):
            if len(ids) < 2:
                continue
            window = torch.tensor([ids], device=self.device)
            logits = self.net(window).logits[0, :-1].float()
            total += float(torch.nn.functional.cross_entropy(logits, window[0, 1:], reduction="sum"))
            scored += len(ids) - 1
        return total, scored


def load_evaluator(name: str, device="cpu", mc_samples: int = 16, protocol: str = "reference",
                   precision: str = "auto"):
    """A toolkit checkpoint path or embedded name first (computing in `precision`); then a locally
    cached Hugging Face model (in its own dtype)."""
    try:
        return ToolkitEvaluator(load(name, device, precision), mc_samples)
    except UserError as toolkit_error:
        try:
            import transformers  # noqa: F401  (deferred: optional, the [eval] extra)
        except ImportError:
            raise UserError(f"evaluator not found: {toolkit_error}; and `transformers` is not installed"
                            " for Hugging Face evaluators (pip install 'dlm-toolkit[eval]')") from None
        looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1
        if looks_like_path and not Path(name).is_dir():   # a missing local path, not a hub name
            raise UserError(f"evaluator not found: {toolkit_error}") from None
        return HFEvaluator(name, device, protocol)


def gen_ppl(evaluator, texts: list[str]) -> dict:
    """exp(total NLL / total tokens) of the texts under the evaluator (tokens counted by it)."""
    total, n = 0.0, 0
    for text in texts:
        nll, k = evaluator.nll(text)
        total, n = total + nll, n + k
    if n == 0:
        raise UserError("gen_ppl: the samples are empty after decoding")
    return {"gen_ppl": math.exp(total / n), "evaluator": evaluator.name, "evaluator_tokens": n}


def unigram_entropy(ids) -> float:
    """Entropy (nats) of the empirical token distribution of one sample; low = repetitive."""
    counts = torch.tensor(list(Counter(int(i) for i in ids).values()), dtype=torch.float64)
    p = counts / counts.sum()
    return float(-(p * p.log()).sum())


def mean_entropy(rows) -> float:
    return sum(unigram_entropy(r) for r in rows) / len(rows)


@dataclass
class Throughput:
    tokens_per_s: float
    seconds: float          # mean wall time of one timed run
    tokens: int             # generated tokens per run (batch x new positions)
    nfe: int                # network evaluations per run
    repeats: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def throughput(model, request: SampleRequest, repeats: int = 1, warmup: int = 1) -> Throughput:
    """Generated tokens per second of `model.generate(request)`, after `warmup` untimed runs."""
    if repeats <= 0 or warmup < 0:
        raise UserError(f"repeats must be > 0 and warmup >= 0 (got {repeats}, {warmup})")
    for _ in range(warmup):
        model.generate(request)
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    start = time.perf_counter()
    for r in range(repeats):
        _, last = model.generate(replace(request, seed=request.seed + r))
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    seconds = (time.perf_counter() - start) / repeats
    new = request.num_samples * (request.length - len(request.fixed_positions()))
    return Throughput(tokens_per_s=new / seconds, seconds=seconds, tokens=new, nfe=last.nfe, repeats=repeats)
