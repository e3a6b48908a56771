"""Named fault points: a process can be made to SIGKILL itself at an exact phase, for the reliability tests.

`DLM_KILL_AT=save.swap` kills at the first visit of the point `save.swap`; `save.swap@3` at its third
visit; `#17` at the 17th visit of any point. Unset (the normal case), a point costs one environment
lookup. `record()` lists the points a process visits, so a test can pick kill instants at random
(seeded) among every phase of a real run.
"""
from __future__ import annotations

import os
import signal

ENV = "DLM_KILL_AT"
_state = {"spec": None, "counts": {}, "total": 0}
_recording: list[str] | None = None


def point(name: str) -> None:
    """Mark a phase; kill this process here if DLM_KILL_AT names this visit."""
    if _recording is not None:
        _recording.append(name)
    spec = os.environ.get(ENV)
    if not spec:
        return
    if spec != _state["spec"]:          # a new spec (e.g. set in a forked child) starts counting afresh
        _state.update(spec=spec, counts={}, total=0)
    _state["total"] += 1
    _state["counts"][name] = _state["counts"].get(name, 0) + 1
    if spec.startswith("#"):
        hit = _state["total"] == int(spec[1:])
    else:
        target, _, nth = spec.partition("@")
        hit = target == name and _state["counts"][name] == int(nth or 1)
    if hit:
        os.kill(os.getpid(), signal.SIGKILL)


def record() -> list[str]:
    """Start listing visited points; returns the list that fills up (stop with `stop_recording`)."""
    global _recording
    _recording = []
    return _recording


def stop_recording() -> None:
    global _recording
    _recording = None
