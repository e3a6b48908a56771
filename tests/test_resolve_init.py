"""One resolver: `init=` (fine-tuning from a checkpoint) is handled inside `toolkit.resolve.resolve`,
which reads the command line and the recipes once; programs build the same configs as objects."""
from __future__ import annotations

from dataclasses import replace

import pytest

from toolkit import resolve as resolver
from toolkit.checkpoints import rundir
from toolkit.config import OptimConfig, TrainConfig
from toolkit.errors import UserError
from toolkit.resolve import config_for, init_base, resolve, validate


def test_init_in_a_recipe_is_read_once_and_the_checkpoint_is_the_base(tmp_path, monkeypatch):
    recipe = tmp_path / "ft.yaml"
    recipe.write_text("init: mdlm\nlr: 1e-4\nformat: pairs\n")
    calls = {"recipe": 0, "checkpoint": 0}

    def counted(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped
    monkeypatch.setattr(resolver, "load_recipe", counted("recipe", resolver.load_recipe))
    monkeypatch.setattr(rundir, "read_config", counted("checkpoint", rundir.read_config))
    cfg = resolve([f"config={recipe}", "seq_len=24", "max_steps=3"])
    assert calls == {"recipe": 1, "checkpoint": 1}

    ckpt = rundir.resolve_path("mdlm")
    old, meta = rundir.read_config(ckpt)
    assert (cfg.family, cfg.options, cfg.model) == (old.family, old.options, old.model)   # from the checkpoint
    assert cfg.data.tokenizer == str(ckpt / meta.get("tokenizer", rundir.TOKENIZER))
    assert (cfg.data.eos_token, cfg.data.mask_token) == (old.data.eos_token, old.data.mask_token)
    assert (cfg.data.seq_len, cfg.data.format) == (24, "pairs")                        # the command line wins
    assert cfg.optim == replace(OptimConfig(), lr=1e-4)                                # fresh, plus the recipe
    assert cfg.train == replace(TrainConfig(), init="mdlm", max_steps=3)

    built = init_base("mdlm")          # the same config, built by a program
    built.optim.lr, built.data.format, built.data.seq_len, built.train.max_steps = 1e-4, "pairs", 24, 3
    validate(built)
    assert built == cfg


def test_init_cannot_change_the_family_and_an_empty_init_means_none():
    with pytest.raises(UserError, match="init=mdlm is a mdlm checkpoint: family=duo cannot change that"):
        resolve(["family=duo", "init=mdlm"])
    assert resolve(["init=mdlm", "init="]) == resolve([])   # the last init= wins: no base


def test_the_benchmark_config_built_as_an_object_equals_the_parsed_one(tmp_path):
    from toolkit.bench.train_speed import QUICK_SIZE, bench_config
    m = QUICK_SIZE
    built = bench_config("duo", m, "fp32", "cpu", False, str(tmp_path), ("lr=1e-3",))
    parsed = resolve(["family=duo", f"n_layers={m.n_layers}", f"d_model={m.d_model}", f"n_heads={m.n_heads}",
                      f"seq_len={m.seq_len}", f"max_seq_len={m.seq_len}", f"batch_size={m.batch}", "precision=fp32",
                      "compile=false", "device=cpu", "progress=false", "max_steps=1000", "eval_every=1000",
                      f"out={tmp_path}", "lr=1e-3"])
    assert built == parsed
    assert config_for("esolm") == resolve(["family=esolm"])
