"""What this machine computes fast: the CPU's model and flags, native bf16, and `precision=auto`.

bf16 autocast only pays on a CPU with bf16 matrix instructions (AVX-512-BF16 on AMD Zen 4 and
Intel Cooper Lake and later, AMX on Sapphire Rapids, BF16 on Armv8.6+); elsewhere oneDNN emulates
it and a matrix product runs 10-20x slower than in fp32. So `auto` asks the CPU: its flags where
the OS lists them, else one measurement of both formats, remembered per CPU and torch version.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from functools import lru_cache
from pathlib import Path

import torch

#: CPU flags that mean native bf16 matrix work (Linux /proc/cpuinfo names; Arm's is `bf16`).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
#: Flags worth stating next to a CPU figure (vector width and matrix extensions).
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
               "amx_int8", "asimd", "sve", "bf16", "i8mm")
CACHE_ENV = "DLM_CACHE_DIR"   # where the measured choice is remembered (default ~/.cache/dlm-toolkit)


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str] | None]:
    """(model name, flags) from /proc/cpuinfo (Linux) or sysctl (macOS); flags None if unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    model, flags = "", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and flags is None:
            flags = frozenset(value.split())
    if platform.system() == "Darwin":
        model = _sysctl("machdep.cpu.brand_string") or model
        if _sysctl("hw.optional.arm.FEAT_BF16") == "1":
            flags = frozenset({"bf16"})
        elif _sysctl("hw.optional.arm.FEAT_BF16") == "0":
            flags = frozenset()
    return model or platform.processor() or platform.machine(), flags


def _sysctl(name: str) -> str:
    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model() -> str:
    return _cpuinfo()[0]


def cpu_flags() -> list[str]:
    """The SHOWN_FLAGS this CPU has (empty when the OS does not list flags)."""
    flags = _cpuinfo()[1] or frozenset()
    return [f for f in SHOWN_FLAGS if f in flags]


def native_bf16_from_flags() -> bool | None:
    """True/False when the CPU's flags say; None when the OS lists no flags."""
    flags = _cpuinfo()[1]
    return None if flags is None else any(f in flags for f in BF16_FLAGS)


def _gemm_seconds(dtype: torch.dtype, n: int = 512, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    with ctx, torch.no_grad():
        a @ b
        best = float("inf")
        for _ in range(reps):
            tic = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - tic)
    return best


def measured_bf16_choice() -> bool:
    """Measure a bf16 and an fp32 matrix product once per (CPU, torch) and remember the answer."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dlm-toolkit")
    key = f"{cpu_model()} | torch {torch.__version__}"
    path = root / "precision.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), bool):
        return known[key]
    faster = _gemm_seconds(torch.bfloat16) * 1.3 < _gemm_seconds(torch.float32)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**(known if isinstance(known, dict) else {}), key: faster}, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass   # a read-only home: measure again next time
    return faster


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Does this device multiply bf16 matrices natively (fast)?"""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if dev.type != "cpu":
        return False
    known = native_bf16_from_flags()
    return measured_bf16_choice() if known is None else known


def resolve_precision(name: str, device: torch.device | str) -> str:
    """'auto' -> bf16 on a GPU or on a CPU with native bf16, else fp32; bf16/fp32 pass through."""
    if name != "auto":
        return name
    return "bf16" if native_bf16(device) else "fp32"


def resolve_compile(name: str | bool, device: torch.device | str) -> bool:
    """'auto' -> torch.compile on a GPU (it fuses the many small element-wise kernels: 1.4-2.5x on an
    H200), not on a CPU, where it gained 12% per step at d = 512 but costs a minute or two of
    compiling on a small machine, more than most CPU runs last; true/false pass. A bool is
    accepted too: configs saved before `auto` existed hold one."""
    value = str(name).lower()
    if value == "auto":
        return torch.device(device).type == "cuda"
    return value == "true"


def describe(device: torch.device | str = "cpu") -> dict:
    """The facts a benchmark figure needs next to it."""
    dev = torch.device(device)
    info = {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "native_bf16_cpu": native_bf16("cpu"),
            "torch": torch.__version__, "python": platform.python_version(), "os": platform.platform(terse=True)}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                    cuda=torch.version.cuda, gpu_sms=props.multi_processor_count)
    return info


#: glibc mallopt parameters (malloc.h): M_TRIM_THRESHOLD and M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_ALLOCATOR_LIMIT = 1 << 30   # blocks up to 1 GiB come from the heap and stay there


@lru_cache(maxsize=1)
def tune_allocator() -> bool:
    """Keep large CPU tensors on glibc's heap instead of a fresh mmap per allocation.

    By default glibc maps every block above a dynamic threshold (at most 32 MiB) with mmap and
    unmaps it on free, so a loop that allocates the same [rows, vocabulary] temporaries each step
    pays page faults and zeroing every time (Duo's closed-form loss: 3x the step time, most of it
    in the kernel). Raising the mmap and trim thresholds lets freed blocks be reused. Returns
    whether the setting was applied (glibc only; `DLM_TUNE_MALLOC=0` opts out). Idempotent.
    """
    if os.environ.get("DLM_TUNE_MALLOC", "1") == "0" or platform.system() != "Linux":
        return False
    try:
        import ctypes   # deferred: only a Linux process tunes glibc
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _ALLOCATOR_LIMIT)) and \
            bool(libc.mallopt(_M_TRIM_THRESHOLD, _ALLOCATOR_LIMIT))
    except (OSError, AttributeError):   # not glibc (musl, ...): leave the allocator alone
        return False
