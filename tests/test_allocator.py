"""The glibc allocator tuning: applied once, opt-out honoured, never an error elsewhere."""
import ctypes
import platform
import subprocess
import sys

import pytest

from toolkit import hardware

LINUX_GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not LINUX_GLIBC, reason="glibc only")
def test_large_blocks_stay_on_the_heap_after_tuning():
    # mallinfo2's hblks counts blocks served by mmap: a new 64 MiB tensor adds one by default
    # and none once the threshold is raised (run in a fresh process: the setting is process-wide).
    code = """
import ctypes, sys, torch
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6"); libc.mallinfo2.restype = Info
if sys.argv[1] == "tuned":
    from toolkit.hardware import tune_allocator; assert tune_allocator()
before = libc.mallinfo2().hblks
x = torch.empty(1 << 24)
print(libc.mallinfo2().hblks - before)
"""
    counts = {mode: int(subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                                       check=True, env={"DLM_TUNE_MALLOC": "1", "PATH": ""}).stdout.strip())
              for mode in ("default", "tuned")}
    assert counts == {"default": 1, "tuned": 0}, counts


def test_opt_out_and_non_linux(monkeypatch):
    hardware.tune_allocator.cache_clear()
    monkeypatch.setenv("DLM_TUNE_MALLOC", "0")
    assert hardware.tune_allocator() is False
    hardware.tune_allocator.cache_clear()
    monkeypatch.delenv("DLM_TUNE_MALLOC")
    monkeypatch.setattr(hardware.platform, "system", lambda: "Darwin")
    assert hardware.tune_allocator() is False
    hardware.tune_allocator.cache_clear()
