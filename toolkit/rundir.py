"""Run-directory safety: durable writes, checkpoint recovery after a crash, one trainer per directory,
and never mixing two runs in one `out`.

A checkpoint is replaced by a swap of directories (`checkpoint.tmp` -> `checkpoint`, the old one parked
as `checkpoint.old`); a process killed anywhere in the swap leaves one of the three complete, and
`recover_checkpoint` puts it back in place on the next start. A half-written directory is never used.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

from toolkit import faults
from toolkit.errors import UserError

# settings that make two runs different runs (resuming with other values would silently mix them);
# max_steps, device, threads, logging cadence and the like may change between a run and its resume
IDENTITY = {"model": ("preset", "n_layers", "d_model", "n_heads", "cond_dim", "mlp_ratio", "vocab_size"),
            "data": None, "optim": None, "options": None, "train": ("batch_size", "seed")}
RUN_FILES = ("metrics.jsonl", "runtime.json", "checkpoint", "checkpoint.tmp", "checkpoint.old", "checkpoints",
             "best", "best.tmp", "best.old")


# -- durable writes ------------------------------------------------------------------------------
def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to the disk; directories only where the OS allows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:   # directories cannot be fsynced on some systems (Windows)
        if not path.is_dir() or e.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    for f in sorted(directory.iterdir()):
        fsync_path(f)
    fsync_path(directory)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a small file so a reader sees the old content or the new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    fsync_path(path.parent)


def append_line(path: Path, line: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


# -- checkpoint integrity and recovery -------------------------------------------------------------
def safetensors_problem(f: Path) -> str | None:
    """Why a .safetensors file is unusable (missing, cut short, garbled header), or None."""
    try:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return "empty or cut short"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return "cut short (header)"
            header = json.loads(fh.read(n))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        return f"not a safetensors file ({e.__class__.__name__})"
    if size != 8 + n + max(ends, default=0):
        return f"cut short or padded ({size} bytes, header says {8 + n + max(ends, default=0)})"
    return None


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why a checkpoint directory is incomplete or damaged, or None if every file is whole."""
    if not ckpt.is_dir():
        return "missing"
    try:
        meta = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or "family" not in meta:
            return "config.json is not a toolkit checkpoint config"
        json.loads((ckpt / meta.get("tokenizer", "tokenizer.json")).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"unreadable config or tokenizer ({e.__class__.__name__})"
    bad = safetensors_problem(ckpt / "model.safetensors")
    if bad:
        return f"model.safetensors {bad}"
    if (ckpt / "state.pt").exists():
        try:
            zipfile.ZipFile(ckpt / "state.pt").close()
        except (OSError, zipfile.BadZipFile):
            return "state.pt cut short"
    return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def recover_checkpoint(path: str | Path) -> str | None:
    """Finish or undo a save that was interrupted; returns what was done (None: nothing to do).

    `path` present: a leftover `.tmp` (a save killed while writing) and `.old` (killed before its
    removal) are deleted. `path` absent (killed between the two renames): the newest complete one of
    `.tmp` and `.old` takes its place; an incomplete one is deleted, never used.
    """
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    if not tmp.exists() and not old.exists():
        return None
    if path.exists():
        for p in (tmp, old):
            _remove(p)
        return f"removed the leftovers of an interrupted save next to {path}"
    for cand in (tmp, old):
        if cand.exists() and checkpoint_problem(cand) is None:
            os.replace(cand, path)
            fsync_path(path.parent)
            for p in (tmp, old):
                _remove(p)
            return f"recovered {path} from {cand.name} (a save was interrupted)"
    for p in (tmp, old):
        _remove(p)
    return f"removed an incomplete {tmp.name} (a first save was interrupted before it finished)"


def swap_in(tmp: Path, path: Path) -> None:
    """Replace `path` by the complete, fsynced directory `tmp`."""
    old = path.with_name(path.name + ".old")
    if path.exists():
        _remove(old)
        os.replace(path, old)
        faults.point("save.swap")          # no `path` at this instant: recover_checkpoint handles it
    os.replace(tmp, path)
    fsync_path(path.parent)
    faults.point("save.cleanup")
    _remove(old)


# -- one run per directory ---------------------------------------------------------------------------
class RunLock:
    """An exclusive lock on `out/.lock` for the trainer's lifetime; the OS drops it if the process dies."""

    def __init__(self, out: Path):
        self.path, self.fd = out / ".lock", None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:   # no advisory locks on this OS: nothing to enforce
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(f"{self.path.parent} is being trained by another process (pid {other}): "
                            "wait for it or use another out=") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def identity(cfg: dict) -> dict:
    """The settings that define a run (see IDENTITY), flattened to 'section.key' -> value."""
    out = {"family": cfg.get("family")}
    for section, keys in IDENTITY.items():
        values = cfg.get(section) or {}
        for k in (keys or sorted(values)):
            out[f"{section}.{k}"] = values.get(k)
    return out


def holds_run(out: Path) -> bool:
    return any((out / name).exists() for name in ("metrics.jsonl", "checkpoint", "checkpoint.tmp", "checkpoint.old"))


def check_out(out: Path, cfg: dict, resume: bool, overwrite: bool) -> None:
    """Refuse to start in a directory that holds another run (or this one, without resume=true)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out} is a file, not a directory")
    if not holds_run(out) or overwrite:
        return
    if not resume:
        raise UserError(f"{out} already holds a run: pass resume=true to continue it, overwrite=true to "
                        "replace it, or another out=")
    try:
        before = json.loads((out / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return   # no record of the settings (a run killed before writing it): the checkpoint decides
    old, new = identity(before), identity(cfg)
    changed = [f"{k}: {old[k]!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
    if changed:
        raise UserError(f"{out} holds a different run ({'; '.join(changed[:3])}"
                        f"{'; ...' if len(changed) > 3 else ''}): use another out=, or overwrite=true to replace it")


def clear_run(out: Path) -> None:
    """overwrite=true: delete the files of the previous run (only those the trainer writes)."""
    for name in RUN_FILES:
        _remove(out / name)


# -- metrics.jsonl ------------------------------------------------------------------------------------
def read_metrics_lines(f: Path) -> list[str]:
    """The complete lines of a metrics file; a last line cut short by a kill is dropped."""
    if not f.is_file():
        return []
    keep = []
    for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            json.loads(line)
        except ValueError:
            break
        keep.append(line)
    return keep


def truncate_metrics(f: Path, step: int) -> None:
    """Keep the lines up to `step` (a resumed run rewrites what came after its checkpoint)."""
    keep = [x for x in read_metrics_lines(f) if json.loads(x)["step"] <= step]
    atomic_write_text(f, "".join(x + "\n" for x in keep))
