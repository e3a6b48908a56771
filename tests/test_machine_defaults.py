"""Every machine-dependent default has a forced mode, and each side this CPU can run is tested
(docs/precision.md lists them): compile, attention kernel, threads, the measured-choice cache.
`precision=auto` is tested in test_precision.py, the allocator tuning in test_allocator.py."""
from __future__ import annotations

import pytest
import torch

from toolkit import hardware
from toolkit.errors import UserError
from toolkit.model import attention
from toolkit.resolve import resolve


@pytest.mark.parametrize("value,device,expected", [("auto", "cpu", False), ("auto", "cuda", True),
                                                   ("true", "cpu", True), ("false", "cuda", False),
                                                   (True, "cpu", True)])
def test_compile_auto_is_on_for_gpus_only_and_true_false_force_it(value, device, expected):
    assert hardware.resolve_compile(value, device) is expected


def test_attention_auto_picks_xformers_only_on_cuda_with_the_package(monkeypatch):
    monkeypatch.setattr(attention, "xops", None)
    assert attention.resolve_backend("auto", "cpu") == "sdpa"
    assert attention.resolve_backend("auto", "cuda") == "sdpa"          # the package is missing
    monkeypatch.setattr(attention, "xops", object())
    assert attention.resolve_backend("auto", "cpu") == "sdpa"
    assert attention.resolve_backend("auto", "cuda") == "xformers"
    assert attention.resolve_backend("sdpa", "cuda") == "sdpa"          # forced
    with pytest.raises(UserError, match="needs the xformers package and a CUDA device"):
        attention.resolve_backend("xformers", "cpu")


def test_threads_setting_is_applied_and_zero_leaves_torchs_default(tmp_path):
    from toolkit.trainer import Trainer
    before = torch.get_num_threads()
    base = ["family=mdlm", "model=cpu-xxs", "seq_len=16", "batch_size=2", "max_steps=1", "progress=false"]
    try:
        Trainer(resolve([*base, "threads=1", f"out={tmp_path / 'a'}"]))
        assert torch.get_num_threads() == 1
        torch.set_num_threads(before)
        Trainer(resolve([*base, "threads=0", f"out={tmp_path / 'b'}"]))
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_the_measured_choice_cache_follows_its_variable_and_survives_an_unwritable_place(monkeypatch, tmp_path):
    monkeypatch.delenv(hardware.NATIVE_BF16_ENV, raising=False)
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("bf16 CPU", frozenset({"avx512_bf16"})))
    probe = hardware.Probe("forward", "k", lambda p: 1.0 if p == "fp32" else 2.0)
    monkeypatch.setenv(hardware.CACHE_ENV, str(tmp_path / "here"))
    assert hardware.choose_precision("auto", "cpu", probe).precision == "fp32"
    assert (tmp_path / "here" / "precision.json").is_file()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(hardware.CACHE_ENV, str(blocker))     # cannot be created: measured, not remembered
    assert hardware.choose_precision("auto", "cpu", probe).precision == "fp32"
