"""The models the app can show: embedded names plus any checkpoint directory a user adds.

Loading is lazy and cached (a model is read once and shared by all sessions: inference never
mutates it), and guarded by a lock so two sessions asking at once load it only once.
"""
from __future__ import annotations

import threading
from pathlib import Path

from toolkit.checkpoints import EMBEDDED_DIR, load, resolve_path
from toolkit.checkpoints.rundir import CONFIG
from toolkit.errors import UserError
from toolkit.evaluation.generation import DEFAULT_EVALUATOR
from toolkit.families import REGISTRY

def embedded_names() -> list[str]:
    """Embedded checkpoints present in this installation, those named after a family first (in the
    registry's order), then any others."""
    if not EMBEDDED_DIR.is_dir():
        return []
    found = sorted(d.name for d in EMBEDDED_DIR.iterdir() if (d / CONFIG).is_file())
    return [n for n in REGISTRY if n in found] + [n for n in found if n not in REGISTRY]


class ModelRegistry:
    """Maps a display key (an embedded name or a path) to a loaded LanguageModel."""

    def __init__(self, keys: list[str] | None = None, evaluator: str | None = DEFAULT_EVALUATOR,
                 precision: str = "auto"):
        self.precision = precision      # every model's inference precision (auto: bf16 where native)
        self._lock = threading.Lock()
        self._models: dict = {}
        self.keys: list[str] = []
        self.evaluator_key = evaluator
        for k in (keys if keys is not None else embedded_names()):
            self.add(k, load_now=False)

    def add(self, key: str, load_now: bool = True) -> str:
        """Register a name or a checkpoint path (validated now); returns the key to use."""
        key = key.strip()
        if not key:
            raise UserError("enter a checkpoint directory (or an embedded model name)")
        resolve_path(key)    # raises a UserError with a clear message if it is not a checkpoint
        if load_now:
            self.get(key)
        if key not in self.keys:
            self.keys.append(key)
        return key

    def get(self, key: str):
        with self._lock:
            if key not in self._models:
                self._models[key] = load(key, precision=self.precision)
            return self._models[key]

    def evaluator(self):
        """The model that scores Gen PPL (default: the embedded autoregressive checkpoint)."""
        if not self.evaluator_key:
            raise UserError("no evaluator model configured (start the app with --evaluator)")
        return self.get(self.evaluator_key)

    def describe(self, key: str) -> str:
        """A short label: family, size and where it comes from."""
        m = self.get(key)
        where = "embedded" if Path(m.path or "").parent == EMBEDDED_DIR else m.path
        return f"{m.family.name} · {m.num_params(False) / 1e6:.2f}M params · {where}"
