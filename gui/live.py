"""Run several models side by side on one request, step by step, and keep their traces.

The samplers are generators of `Step` records; `interleave` advances each one reverse step
per round, so every panel moves while sampling (nothing is replayed). Each run times only
its own steps, so interleaving does not inflate a model's wall time or tokens/s.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

from toolkit.errors import UserError
from toolkit.sampling import SampleRequest

from gui.strategies import request_fields

MAX_STEPS = 512          # reverse steps a user may ask for
MAX_LENGTH = 512         # tokens, also capped by each model's context
MAX_TEMPERATURE = 5.0
MAX_PROMPT_CHARS = 20_000  # a prompt must fit the context anyway; this bounds the tokenizer's work


@dataclass
class Settings:
    prompt: str = ""
    length: int = 64
    steps: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    options: dict = field(default_factory=dict)   # family name -> {option: raw value ("" = default)}
    #   (plus the decoding strategy under "sampler" / "sampler_options", see gui/strategies.py)


def whole_number(value, name: str) -> int:
    """An integer from a UI/API value; anything else is a UserError naming the field."""
    try:
        f = float(value)
        if f != int(f):
            raise ValueError
        return int(f)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{name} must be a whole number (got {value!r})") from None


def check_settings(s: Settings, models: dict) -> None:
    """Bounds shared by the UI and the API; raises UserError with a message a user can act on."""
    if not models:
        raise UserError("select at least one model")
    cap = min([MAX_LENGTH] + [m.max_length for m in models.values()])
    if not 1 <= s.length <= cap:
        raise UserError(f"length must be between 1 and {cap} tokens for the selected models (got {s.length})")
    if len(s.prompt) > MAX_PROMPT_CHARS:
        raise UserError(f"the prompt is {len(s.prompt)} characters: at most {MAX_PROMPT_CHARS}")
    if not 1 <= s.steps <= MAX_STEPS:
        raise UserError(f"steps must be between 1 and {MAX_STEPS} (got {s.steps})")
    if not 0 <= s.temperature <= MAX_TEMPERATURE:   # NaN fails this too
        raise UserError(f"temperature must be between 0 and {MAX_TEMPERATURE} (got {s.temperature})")
    if not 0 < s.top_p <= 1:
        raise UserError(f"top-p must be in (0, 1] (got {s.top_p})")
    for key, m in models.items():
        n = len(m.encode(s.prompt)) if s.prompt else 0
        if n >= s.length:
            raise UserError(f"the prompt is {n} tokens for {key}: make it shorter or raise the length above {n}")


def family_options(model, settings: Settings) -> dict:
    """The settings' options for this model's family, blanks meaning 'the checkpoint default'."""
    raw = settings.options.get(model.family.name, {})
    return {k: v for k, v in raw.items() if v is not None and v != "" and k in model.family.sampling_options}


def starts_masked(model) -> bool:
    """Does this model's sampler start from the [MASK] state? One cheap probe step tells.

    Needed to tell 'revealed' (was masked) from 'changed' (was another token) at the first step.
    """
    cached = getattr(model, "_gui_starts_masked", None)
    if cached is None:
        req = SampleRequest(length=min(8, model.max_length), steps=1000, seed=0)
        first = next(iter(model.sample(req)))
        toks = first.tokens[0][~first.changed[0]]
        cached = bool((toks == model.family.mask_id).any())
        model._gui_starts_masked = cached
    return cached


class Run:
    """One model's sampling run: its generator, its trace, and its own timing."""

    def __init__(self, key: str, model, settings: Settings, num_samples: int = 1):
        self.key, self.model, self.settings = key, model, settings
        self.prompt_ids = model.encode(settings.prompt) if settings.prompt else []
        self.request = SampleRequest(num_samples=num_samples, length=settings.length, steps=settings.steps,
                                     temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed,
                                     prompt=self.prompt_ids, options=family_options(model, settings))
        self.trace: list[dict] = []
        self.seconds = 0.0
        self.done = False
        self.error: str | None = None
        self.last = None          # the latest Step (all samples)
        self.masked_start = True
        self._strings: dict[int, str] = {}
        try:
            self.request = replace(self.request, **request_fields(model, settings.options))
            model.check_request(self.request)
            self.masked_start = starts_masked(model)
            self._it = iter(model.sample(self.request))
        except UserError as e:
            self.fail(str(e))

    def fail(self, msg: str) -> None:
        self.error, self.done = msg, True

    def advance(self) -> None:
        """One reverse step (timed); marks the run done when the sampler is exhausted."""
        if self.done:
            return
        tic = time.perf_counter()
        try:
            step = next(self._it)
        except StopIteration:
            self.done = True
            return
        except UserError as e:
            self.fail(str(e))
            return
        finally:
            self.seconds += time.perf_counter() - tic
        self.last = step
        rec = step.to_dict(0)
        rec["seconds"] = round(self.seconds, 6)
        del rec["elapsed"]      # counts time spent in the other interleaved runs
        self.trace.append(rec)

    # -- views ---------------------------------------------------------------------------
    @property
    def generated_tokens(self) -> int:
        return self.request.num_samples * (self.request.length - len(self.prompt_ids))

    def stats(self, upto: int | None = None) -> dict:
        rec = self.trace[(upto or len(self.trace)) - 1] if self.trace else None
        seconds = rec["seconds"] if rec else 0.0
        done = self.done and (upto is None or upto >= len(self.trace))
        return {"step": rec["step"] if rec else 0, "nfe": rec["nfe"] if rec else 0, "seconds": seconds,
                "tokens_per_s": self.generated_tokens / seconds if done and seconds > 0 else None,
                "done": done, "total_steps": len(self.trace) if self.done else None}

    def token_string(self, i: int) -> str:
        if i not in self._strings:
            self._strings[i] = self.model.token_strings([i])[0]
        return self._strings[i]

    def texts(self) -> list[str]:
        """Final decoded text of every sample ('' before the first step)."""
        return [self.model.decode(row) for row in self.last.tokens] if self.last is not None else [""]

    def to_json(self) -> dict:
        ids = sorted({i for rec in self.trace for i in rec["tokens"]})
        return {"key": self.key, "family": self.model.family.name, "checkpoint": self.model.path,
                "request": asdict(self.request), "error": self.error, "stats": self.stats(),
                "final_text": self.texts()[0], "mask_id": self.model.family.mask_id,
                "token_strings": {str(i): self.token_string(i) for i in ids}, "steps": self.trace}


def start(registry, keys: list[str], settings: Settings, num_samples: int = 1) -> list[Run]:
    unknown = [k for k in keys if k not in registry.keys]
    if unknown:
        raise UserError(f"unknown model {unknown[0]!r} (available: {', '.join(registry.keys)}; add a checkpoint first)")
    models = {k: registry.get(k) for k in keys}
    check_settings(settings, models)
    return [Run(k, m, settings, num_samples) for k, m in models.items()]


def interleave(runs: list[Run]):
    """Advance every unfinished run by one step per round; yield after each round."""
    while not all(r.done for r in runs):
        for r in runs:
            r.advance()
        yield runs


def trace_json(runs: list[Run], settings: Settings) -> dict:
    return {"format": "dlm-toolkit-trace/1", "settings": asdict(settings), "runs": [r.to_json() for r in runs]}
