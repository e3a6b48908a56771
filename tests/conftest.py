"""Shared fixtures: tiny trained checkpoints of every family (a few seconds each, cached per session)."""
from __future__ import annotations

import pytest
import torch

from toolkit.checkpoints import EMBEDDED_DIR
from toolkit.checkpoints.rundir import CONFIG
from toolkit.resolve import resolve
from toolkit.families import REGISTRY


def train_tiny(out, family: str, *extra: str, steps: int = 4) -> str:
    """Train a very small model for a few steps and return its run directory."""
    from toolkit.trainer import Trainer
    cfg = resolve([f"family={family}", "model=cpu-xxs", "seq_len=32", "batch_size=4", f"max_steps={steps}",
                   "log_every=2", "eval_every=2", "eval_batches=2", "lr=3e-3", "progress=false",
                   f"out={out}", *extra])
    Trainer(cfg).fit()
    return str(out)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """tiny_checkpoint(family, *overrides) -> run directory, trained once per session per argument set."""
    cache: dict[tuple, str] = {}

    def make(family: str, *extra: str) -> str:
        key = (family, *extra)
        if key not in cache:
            torch.set_num_threads(1)
            out = tmp_path_factory.mktemp(f"ckpt-{family}") / "run"
            cache[key] = train_tiny(out, family, *extra)
        return cache[key]

    return make


@pytest.fixture(params=sorted(REGISTRY))
def family_name(request):
    """Every registered family (tests that train their own tiny checkpoint)."""
    return request.param


def has_embedded_model(family: str) -> bool:
    return (EMBEDDED_DIR / family / CONFIG).is_file()


@pytest.fixture(params=sorted(REGISTRY))
def embedded_family_name(request):
    """Every registered family with an embedded model (`toolkit.load(name)`); one without is skipped."""
    if not has_embedded_model(request.param):
        pytest.skip(f"family {request.param} has no embedded model")
    return request.param
