"""Execute walkthroughs as readers see them: full mode, outputs saved in place, run time on top.

    OMP_NUM_THREADS=2 python notebooks/execute.py notebooks/03_training.ipynb [more.ipynb ...]

A notebook whose execution fails is left as it was. The measured wall time (with the machine's
core count and load) replaces the "Measured run time" line of its first cell.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
MARK = "**Measured run time (full mode):**"
PROGRESS = re.compile(r"\d+%\|")      # a tqdm frame: "AR:  45%|████▌     | 90/200 [...]"


def stamp(seconds: float, load: float) -> str:
    m, s = divmod(round(seconds), 60)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    return (f"{MARK} {m} min {s:02d} s on a {os.cpu_count()}-core CPU, no GPU ({when}, OMP_NUM_THREADS={threads}, "
            f"load average {load:.1f} at the start: the machine was shared with other jobs).")


def set_runtime(nb, line: str) -> None:
    first = nb.cells[0]
    lines = first.source.splitlines()
    hits = [i for i, text in enumerate(lines) if text.startswith(MARK)]
    if hits:
        lines[hits[0]] = line
    else:
        lines[1:1] = ["", line]
    first.source = "\n".join(lines)


def strip_progress(nb) -> None:
    """Drop progress-bar frames (and the blank lines between them) from stderr: noise in a saved notebook."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr" and
                                                            (PROGRESS.search(o.text) or not o.text.strip()))]


def execute(path: Path, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    load = os.getloadavg()[0]
    tic = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    seconds = time.perf_counter() - tic
    set_runtime(nb, stamp(seconds, load))
    strip_progress(nb)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = ap.parse_args(argv)
    os.environ.pop("DLM_NOTEBOOK_QUICK", None)          # the real run
    failed = 0
    for path in args.notebooks:
        try:
            seconds = execute(path, args.timeout)
            print(f"{path}: {seconds / 60:.1f} min", flush=True)
        except CellExecutionError as e:
            failed += 1
            print(f"{path}: FAILED, left unchanged\n{str(e)[-2000:]}", file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
