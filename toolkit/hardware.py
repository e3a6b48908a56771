"""What this machine computes fast: the CPU's model and flags, native bf16, and `precision=auto`.

bf16 autocast only pays on a CPU with bf16 matrix instructions (AVX-512-BF16 on AMD Zen 4 and
Intel Cooper Lake and later, AMX on Sapphire Rapids, BF16 on Armv8.6+); elsewhere oneDNN emulates
it and a matrix product runs 10-20x slower than in fp32. Even where it is native, bf16 pays only
for wide matrices: the demo models sample 1.5x slower in bf16 on a Zen 4 core. So `auto` decides
in two stages (`choose_precision`):

1. does the device multiply bf16 natively? A GPU with bf16 support; a CPU by its flags where the OS
   lists them, else one measurement of both formats; `DLM_NATIVE_BF16=1|0` overrides the CPU's answer;
2. on a native CPU, is bf16 faster for *this workload*? One forward (sampling, scoring) or one
   forward and backward (training) of the model at its own shapes, timed in both precisions. Each
   answer is remembered per (CPU, torch version, workload, shapes) in `precision.json`.

With `DLM_NATIVE_BF16=1` on a CPU without bf16, step 2 is skipped and `auto` means bf16: timing an
emulated bf16 would only measure the emulation, and the point of the switch is to run what a bf16
machine runs (slowly) where its numerics can be tested.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

from toolkit.errors import UserError

#: CPU flags that mean native bf16 matrix work (Linux /proc/cpuinfo names; Arm's is `bf16`).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
#: Flags worth stating next to a CPU figure (vector width and matrix extensions).
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
               "amx_int8", "asimd", "sve", "bf16", "i8mm")
CACHE_ENV = "DLM_CACHE_DIR"   # where the measured choice is remembered (default ~/.cache/dlm-toolkit)
NATIVE_BF16_ENV = "DLM_NATIVE_BF16"   # 1|0: resolve `auto` as a CPU with (without) native bf16 would
BF16_MARGIN = 1.1   # bf16 is chosen for a workload only when it is at least this much faster


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
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16), torch.no_grad():
        return best_of(lambda: a @ b, reps)


def cache_path() -> Path:
    """The file that remembers measured choices (`DLM_CACHE_DIR`, default ~/.cache/dlm-toolkit)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dlm-toolkit") / "precision.json"


def _remembered(key: str, measure: Callable[[], object], valid: Callable[[object], bool]):
    """The answer stored under `key` in precision.json, or `measure()`'s, stored for next time."""
    path = cache_path()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    if valid(known.get(key)):
        return known[key]
    answer = measure()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**known, key: answer}, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass   # a read-only home: measure again next time
    return answer


def measured_bf16_choice() -> bool:
    """Measure a bf16 and an fp32 matrix product once per (CPU, torch) and remember the answer."""
    return _remembered(f"{cpu_model()} | torch {torch.__version__}",
                       lambda: _gemm_seconds(torch.bfloat16) * 1.3 < _gemm_seconds(torch.float32),
                       lambda v: isinstance(v, bool))


def forced_native_bf16() -> bool | None:
    """`DLM_NATIVE_BF16`: 1 or 0 overrides what the CPU says; unset or empty leaves it to the CPU."""
    value = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if value in ("", "1", "0"):
        return None if value == "" else value == "1"
    raise UserError(f"{NATIVE_BF16_ENV} must be 1 or 0 (got {value!r})")


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Does this device multiply bf16 matrices natively (fast)? (`DLM_NATIVE_BF16` decides for a CPU.)"""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if dev.type != "cpu":
        return False
    forced = forced_native_bf16()
    if forced is not None:
        return forced
    known = native_bf16_from_flags()
    return measured_bf16_choice() if known is None else known


@dataclass(frozen=True)
class Probe:
    """A workload `auto` can time: `seconds(precision)` runs it once ('fp32' or 'bf16') and returns the
    wall time; `key` names its shapes (the cache key), `kind` what it is ('forward', 'train step')."""
    kind: str
    key: str
    seconds: Callable[[str], float]


@dataclass(frozen=True)
class Choice:
    """What `auto` (or an explicit setting) resolved to, and why: logged with every run."""
    precision: str
    reason: str


def best_of(run: Callable[[], None], reps: int = 3) -> float:
    """The fastest of `reps` timed calls after one warm-up call (first-call costs excluded)."""
    run()
    best = float("inf")
    for _ in range(reps):
        tic = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - tic)
    return best


def _workload_choice(probe: Probe) -> dict:
    key = f"{cpu_model()} | torch {torch.__version__} | {probe.kind} {probe.key}"

    def measure() -> dict:
        fp32, bf16 = probe.seconds("fp32"), probe.seconds("bf16")
        return {"bf16": bf16 * BF16_MARGIN < fp32, "fp32_s": round(fp32, 6), "bf16_s": round(bf16, 6)}
    return _remembered(key, measure, lambda v: isinstance(v, dict) and isinstance(v.get("bf16"), bool))


def choose_precision(name: str, device: torch.device | str, probe: Probe | None = None) -> Choice:
    """Resolve 'auto' (see the module docstring); 'bf16' and 'fp32' pass through.

    With a probe, a CPU with native bf16 gets bf16 only if the probe runs faster in it; without one
    (callers with no model at hand) native bf16 is enough."""
    if name != "auto":
        return Choice(name, "set explicitly")
    dev = torch.device(device)
    if dev.type != "cpu":
        native = native_bf16(dev)
        return Choice("bf16" if native else "fp32", f"auto: {dev.type} {'with' if native else 'without'} bf16")
    forced = forced_native_bf16()
    if forced is not None:
        return Choice("bf16" if forced else "fp32", f"auto: {NATIVE_BF16_ENV}={int(forced)} (forced, not timed)")
    if not native_bf16(dev):
        return Choice("fp32", "auto: this CPU has no native bf16")
    if probe is None:
        return Choice("bf16", "auto: this CPU has native bf16")
    m = _workload_choice(probe)
    faster = "bf16" if m["bf16"] else "fp32"
    return Choice(faster, f"auto: native bf16 CPU, {probe.kind} timed: fp32 {m['fp32_s'] * 1e3:.2f} ms,"
                          f" bf16 {m['bf16_s'] * 1e3:.2f} ms")


def resolve_precision(name: str, device: torch.device | str, probe: Probe | None = None) -> str:
    """'auto' -> bf16 where the device multiplies bf16 natively (and, given a probe, that workload runs
    faster in it), else fp32; bf16/fp32 pass through."""
    return choose_precision(name, device, probe).precision


def autocast(device: torch.device | str, precision: str):
    """The context a resolved precision computes in: bf16 autocast, or nothing for fp32."""
    dev = torch.device(device)
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")


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
