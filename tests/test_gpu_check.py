"""The GPU check script's CPU-reachable parts: its parity code (sdpa vs math) and its refusal without CUDA."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

from toolkit.config import ModelConfig  # noqa: E402


def test_parity_code_path_on_cpu_sdpa_vs_math():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=2, vocab_size=50, max_seq_len=32)
    rows = gpu_check.parity(("sdpa", "math"), torch.device("cpu"), cfg, seq_len=16)
    assert {r["pattern"] for r in rows} == {"bidirectional", "causal", "explicit_mask", "kv_cache"}
    assert {r["dtype"] for r in rows} == {"float32", "bfloat16"}
    assert all(r["ok"] for r in rows), rows
    assert max(r["max_rel_diff_logits"] for r in rows if r["dtype"] == "float32") < 1e-5


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                       ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                       ("Some Future GPU", None)])
def test_peak_lookup(name, peak):
    assert gpu_check.peak_bf16_tflops(name) == peak


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: no CUDA device: this check needs one NVIDIA GPU (see environment.yml)"]


def test_xformers_installed_without_its_kernels_counts_as_absent(tmp_path):
    """A wheel built for another CUDA/torch imports fine but has no kernels: auto must pick SDPA
    and an explicit attention=xformers must say why, in one line (seen on a CUDA 13 machine)."""
    fake = tmp_path / "xformers"
    (fake / "ops" / "fmha").mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '9.9.9'\n_has_cpp_library = False\n")
    (fake / "ops" / "__init__.py").write_text("")
    (fake / "ops" / "fmha" / "__init__.py").write_text("")
    (fake / "ops" / "fmha" / "attn_bias.py").write_text("class LowerTriangularFromBottomRightMask: pass\n")
    code = ("from toolkit.model import attention as a\n"
            "from toolkit.errors import UserError\n"
            "print(a.xops is None, a.resolve_backend('auto', 'cuda'))\n"
            "try:\n    a.resolve_backend('xformers', 'cuda')\nexcept UserError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()
    assert first == "True sdpa"
    assert "xformers 9.9.9 is installed but its CUDA kernels did not load" in second
