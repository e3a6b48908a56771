"""A downloaded sampling trace (the app's "Download trace"): one typed record of what ran, and its replay.

    from toolkit.trace import load_trace, replay
    trace = load_trace("trace-abc.json")
    for run in trace.runs:
        assert replay(run) == run.tokens      # the same request on the same checkpoint: the same tokens

The file holds the prompt text once and, per model, the `SampleRequest` exactly as it was sampled
(strategy, family and strategy options with their declared types, the prompt's token ids, seed),
the checkpoint, the compute precision, and every step. There are no top-level settings to contradict
the runs: a run that was refused has no request, only what was asked and why.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from toolkit.checkpoints import load
from toolkit.errors import UserError
from toolkit.sample_request import SampleRequest

FORMAT = "dlm-toolkit-trace/2"


def request_json(request: SampleRequest) -> dict:
    """A request as JSON values (what `request_from_json` reads back to an equal request)."""
    return dataclasses.asdict(request)


def request_from_json(data: dict) -> SampleRequest:
    """The SampleRequest a trace recorded (JSON turns `fixed`'s integer positions into strings)."""
    known = {f.name for f in dataclasses.fields(SampleRequest)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"the trace's request has unknown fields: {', '.join(unknown)}")
    values = dict(data)
    values["fixed"] = {int(k): int(v) for k, v in (data.get("fixed") or {}).items()}
    return SampleRequest(**values)


def trace_record(prompt: str, runs: list[dict]) -> dict:
    """The file's top level: the format, the prompt text, and each run's record."""
    return {"format": FORMAT, "prompt": prompt, "runs": runs}


@dataclass
class TracedRun:
    key: str                        # the model as the app named it (an embedded name or a path)
    family: str
    checkpoint: str | None          # the directory it was loaded from
    precision: str                  # the compute precision it sampled in (fp32 or bf16)
    request: SampleRequest | None   # None: refused (then `error` says why)
    error: str | None
    tokens: list[int]               # the final tokens (the last step's)
    text: str


@dataclass
class Trace:
    prompt: str
    runs: list[TracedRun]


def load_trace(path: str | Path) -> Trace:
    """Read a downloaded trace; a file that is not one is a one-line UserError."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError:
        raise UserError(f"{path} is not a JSON trace") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise UserError(f"{path} is not a {FORMAT} trace (format: {found!r})")
    runs = [TracedRun(key=r["key"], family=r["family"], checkpoint=r.get("checkpoint"),
                      precision=r.get("precision", "fp32"),
                      request=request_from_json(r["request"]) if r.get("request") else None,
                      error=r.get("error"), tokens=r["steps"][-1]["tokens"] if r.get("steps") else [],
                      text=r.get("final_text", ""))
            for r in data["runs"]]
    return Trace(prompt=data.get("prompt", ""), runs=runs)


def replay(run: TracedRun, model=None) -> list[int]:
    """Sample the run's request again (on `model`, else its checkpoint loaded in its precision);
    returns the final tokens of its sample."""
    if run.request is None:
        raise UserError(f"{run.key} did not run ({run.error}): nothing to replay")
    if model is None:
        where = run.checkpoint if run.checkpoint and Path(run.checkpoint).is_dir() else run.key
        model = load(where)
        model.precision = run.precision
    _, last = model.generate(run.request)
    return last.tokens[0].tolist()
