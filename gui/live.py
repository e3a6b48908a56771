"""Run several models side by side on one request, step by step, and keep their traces.

The samplers are generators of `Step` records; `interleave` advances each one reverse step
per round, so every panel moves while sampling (nothing is replayed). Each run times only
its own steps, so interleaving does not inflate a model's wall time or tokens/s.
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch

from toolkit.errors import UserError
from toolkit.options import check_seed, require_range
from toolkit.sample_request import SampleRequest
from toolkit.trace import request_json, trace_record

from gui.policy import CORES
from gui.render import token_label
from gui.strategies import strategy_request

MAX_STEPS = 512          # reverse steps a user may ask for
MAX_LENGTH = 512         # tokens, also capped by each model's context
MAX_TEMPERATURE = 5.0
MAX_PROMPT_CHARS = 20_000  # a prompt must fit the context anyway; this bounds the tokenizer's work
GUI_DEFAULTS = {"length": 64, "steps": 32}   # short enough to watch on a CPU


class Settings:
    """What a user asked for: the prompt as text (each model tokenizes it itself), the raw options per
    family as typed (family options, and the strategy under "sampler" / "sampler_options", see
    gui/strategies.py), and everything else as the SampleRequest every model starts from."""

    def __init__(self, prompt: str = "", options: dict | None = None, **request):
        self.prompt = prompt
        self.options = {fam: dict(raw) for fam, raw in (options or {}).items()}
        try:
            self.base = SampleRequest(**{**GUI_DEFAULTS, **request})
        except TypeError as e:
            raise UserError(f"unknown setting: {e}") from None

    def derive(self, options: dict | None = None, **request_changes) -> "Settings":
        """A copy with other options and/or request fields (the explorer's sweep points)."""
        out = Settings(self.prompt, self.options if options is None else options)
        out.base = replace(self.base, **request_changes)
        return out


def whole_number(value, name: str) -> int:
    """An integer from a UI/API value; anything else is a UserError naming the field."""
    try:
        f = float(value)
        if f != int(f):
            raise ValueError
        return value if isinstance(value, int) and not isinstance(value, bool) else int(f)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{name} must be a whole number (got {value!r})") from None


def number(value, name: str) -> float:
    """A float from a UI/API value; anything else is a UserError naming the field."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number (got {value!r})") from None


def length_cap(models: dict) -> int:
    """The longest request every one of these models can take."""
    return min([MAX_LENGTH] + [m.max_length for m in models.values()])


def check_settings(settings: Settings, models: dict) -> None:
    """Bounds shared by the UI and the API: a value outside them is refused with the one message of
    `require_range` naming the parameter (never clamped); advice it gives can be followed."""
    if not models:
        raise UserError("select at least one model")
    s, prompt = settings.base, settings.prompt
    cap = length_cap(models)
    require_range("length", s.length, 1, cap, " tokens for the selected models")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UserError(f"the prompt is {len(prompt)} characters: at most {MAX_PROMPT_CHARS}")
    require_range("steps", s.steps, 1, MAX_STEPS)
    require_range("temperature", s.temperature, 0, MAX_TEMPERATURE)
    require_range("top_p", s.top_p, 0, 1, low_open=True)
    check_seed(s.seed)
    for key, m in models.items():
        n = len(m.encode(prompt)) if prompt else 0
        if n >= cap:
            raise UserError(f"the prompt is {n} tokens for {key}, and the selected models hold at most {cap}: "
                            f"shorten it to fewer than {cap} tokens")
        if n >= s.length:
            raise UserError(f"the prompt is {n} tokens for {key}: raise the length above {n} (at most {cap}) "
                            "or shorten the prompt")


def starts_masked(family) -> bool:
    """Is the sampler's start (the forward process at t = 1) the all-[MASK] state? Tells 'revealed'
    (was masked) from 'changed' (was another token) at the first step; no noising (AR) reveals too."""
    x0 = torch.zeros(1, 8, dtype=torch.long)
    z = family.forward_sample(x0, torch.ones(1), generator=torch.Generator().manual_seed(0))
    return z is None or bool((z == family.mask_id).all())


class Run:
    """One model's sampling run: its generator, its trace, and its own timing."""

    def __init__(self, key: str, model, settings: Settings, num_samples: int = 1):
        self.key, self.model, self.settings = key, model, settings
        self.prompt_ids = model.encode(settings.prompt) if settings.prompt else []
        self.asked = settings.options.get(model.family.name, {})
        self.request: SampleRequest | None = None   # what runs; None when the options were refused
        self.trace: list[dict] = []
        self.seconds = 0.0
        self.done = False
        self.error: str | None = None
        self.last = None          # the latest Step (all samples)
        self.masked_start = starts_masked(model.family)
        self._strings: dict[int, str] = {}
        try:
            request = replace(settings.base, num_samples=num_samples, prompt=self.prompt_ids,
                              **strategy_request(model.family, self.asked))
            model.check_request(request)
            self._it = iter(model.sample(request))
            self.request = request
        except UserError as e:
            self.fail(str(e))

    def fail(self, msg: str) -> None:
        self.error, self.done = msg, True

    def advance(self) -> None:
        """One reverse step (timed); marks the run done when the sampler is exhausted."""
        if self.done:
            return
        CORES.apply()      # this request's share of the cores, on whichever thread runs this step
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
        req = self.request or self.settings.base
        return req.num_samples * (req.length - len(self.prompt_ids))

    def stats(self, upto: int | None = None) -> dict:
        rec = self.trace[(upto or len(self.trace)) - 1] if self.trace else None
        seconds = rec["seconds"] if rec else 0.0
        done = self.done and (upto is None or upto >= len(self.trace))
        return {"step": rec["step"] if rec else 0, "nfe": rec["nfe"] if rec else 0, "seconds": seconds,
                "tokens_per_s": self.generated_tokens / seconds if done and seconds > 0 else None,
                "done": done, "total_steps": len(self.trace) if self.done else None}

    def token_string(self, i: int) -> str:
        """How token `i` is shown: its text, or its bytes (`<0xE2>`) where that is not printable."""
        if i not in self._strings:
            self._strings[i] = token_label(self.model, i)
        return self._strings[i]

    def texts(self) -> list[str]:
        """Final decoded text of every sample ('' before the first step)."""
        return [self.model.decode(row) for row in self.last.tokens] if self.last is not None else [""]

    def to_json(self) -> dict:
        """The run as it ran (toolkit/trace.py reads it back and replays it): `request` is what was
        sampled, typed (None if refused: then `asked`, the raw controls, and `error` say why)."""
        ids = sorted({i for rec in self.trace for i in rec["tokens"]})
        return {"key": self.key, "family": self.model.family.name, "checkpoint": self.model.path,
                "precision": self.model.resolved_precision().precision,
                "asked": self.asked, "request": request_json(self.request) if self.request else None,
                "error": self.error, "stats": self.stats(),
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
    """The downloaded trace: the prompt text once, and each run's own record of what ran."""
    return trace_record(settings.prompt, [r.to_json() for r in runs])
