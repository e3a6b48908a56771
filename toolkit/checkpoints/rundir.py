"""The run directory and the checkpoint directory: their layout, and every read and write of them.

    RUN/                    a training run (`out=`)
      config.json           the resolved run config
      runtime.json          how it ran (device, ranks, attention backend, ...)
      metrics.jsonl         one JSON record per logged step
      checkpoint/           a checkpoint directory (below), replaced atomically at each save
    CHECKPOINT/             self-describing: loadable on its own
      model.safetensors     the weights
      config.json           the run config (family, model, data) + format, step, tokens
      tokenizer.json        the tokenizer the model was trained with
      state.pt              optimizer, step and loss window: only needed to resume (read weights-only)

No other module names these files: they ask this one.

Nothing is lost on a fault: every file is fsynced before it is renamed into place; a checkpoint is
replaced by swapping directories (`checkpoint.tmp` -> `checkpoint`, the old one parked as
`checkpoint.old`), so a process killed anywhere leaves one complete copy, which `recover_checkpoint`
puts back on the next start (a half-written directory is deleted, never used). One trainer holds
`RUN/.lock` at a time, and a run refuses an `out` that holds a different run.
"""
from __future__ import annotations

import errno
import filecmp
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from toolkit.config import RunConfig
from toolkit.data.tokenizer import EMBEDDED_TOKENIZER
from toolkit import faults
from toolkit.errors import UserError
from toolkit.resolve import config_from_dict, config_type_problem

FORMAT = "dlm-toolkit/1"
EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
METRICS, RUN_CONFIG, RUNTIME, CHECKPOINT = "metrics.jsonl", "config.json", "runtime.json", "checkpoint"
WEIGHTS, CONFIG, TOKENIZER, STATE = "model.safetensors", "config.json", "tokenizer.json", "state.pt"
BEST, HISTORY, LOCK = "best", "checkpoints", ".lock"   # keep_best=true; keep_last=N > 1; one trainer at a time
RUN_FILES = (METRICS, RUNTIME, CHECKPOINT, CHECKPOINT + ".tmp", CHECKPOINT + ".old", HISTORY, BEST, BEST + ".tmp",
             BEST + ".old")
# settings that make two runs different runs (resuming with other values would silently mix them);
# max_steps, device, threads, logging cadence and the like may change between a run and its resume
IDENTITY = {"model": ("preset", "n_layers", "d_model", "n_heads", "cond_dim", "mlp_ratio", "vocab_size"),
            "data": None, "optim": None, "options": None, "train": ("batch_size", "seed")}


# -- metrics.jsonl ---------------------------------------------------------------------------
def metrics_file(run: str | Path) -> Path:
    return Path(run) / METRICS


def has_metrics(run: str | Path) -> bool:
    return metrics_file(run).exists()


def read_metrics(run: str | Path) -> list[dict]:
    """The logged records, in order; [] when there are none.

    A line cut short (a run killed while writing) ends the list: what follows it cannot be trusted.
    """
    f = metrics_file(run)
    if not f.is_file():
        return []
    out = []
    for line in f.read_text().splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def append_metrics(run: str | Path, record: dict) -> None:
    try:
        with open(metrics_file(run), "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise UserError(f"cannot write {metrics_file(run)}: {e.strerror or e}") from None


def truncate_metrics(run: str | Path, step: int) -> None:
    """Keep the records up to `step` (those a resumed run will not write again); drop a cut line."""
    f = metrics_file(run)
    if not f.is_file():
        return
    keep = [r for r in read_metrics(run) if r["step"] <= step]
    atomic_write_text(f, "".join(json.dumps(r) + "\n" for r in keep))


def remove_metrics(run: str | Path) -> None:
    metrics_file(run).unlink(missing_ok=True)


def write_run_info(run: str | Path, cfg: RunConfig, runtime: dict) -> None:
    """The run's resolved config and how it executes (written at every start or resume)."""
    atomic_write_text(Path(run) / RUN_CONFIG, json.dumps(cfg.to_dict(), indent=2) + "\n")
    atomic_write_text(Path(run) / RUNTIME, json.dumps(runtime, indent=2) + "\n")


# -- checkpoint directories ------------------------------------------------------------------
def checkpoint_dir(run: str | Path) -> Path:
    return Path(run) / CHECKPOINT


def has_train_state(ckpt: str | Path) -> bool:
    return (Path(ckpt) / STATE).is_file()


def has_resumable_state(run: str | Path) -> bool:
    """A checkpoint to resume from, counting one a killed save left as .tmp/.old (resume recovers it)."""
    ckpt = checkpoint_dir(run)
    return any(has_train_state(ckpt.with_name(ckpt.name + suffix)) for suffix in ("", ".tmp", ".old"))


def save_checkpoint(path: str | Path, cfg: RunConfig, state_dict: dict, tokenizer_path: str | None,
                    train_state: dict | None = None, extra: dict | None = None) -> Path:
    """Write atomically: every file into a temporary sibling, fsynced, then swapped in (`swap_in`).

    config.json is written last, so a directory with a readable one is complete. A failed write
    (disk full, unwritable folder) leaves the previous checkpoint as it was.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        recover_checkpoint(path)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        save_file(state, str(tmp / WEIGHTS))
        faults.point("save.weights")
        shutil.copyfile(tokenizer_path or EMBEDDED_TOKENIZER, tmp / TOKENIZER)
        if train_state is not None:
            torch.save(train_state, tmp / STATE)
            faults.point("save.state")
        meta = {"format": FORMAT, **cfg.to_dict(), "tokenizer": TOKENIZER, **(extra or {})}
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
        fsync_tree(tmp)
        faults.point("save.fsynced")
        swap_in(tmp, path)
    except (OSError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(e, "strerror", None) or str(e)
        kept = "; the previous checkpoint is intact" if path.exists() else ""
        raise UserError(f"cannot write checkpoint {path}: {reason}{kept}") from None
    return path


def resolve_path(name_or_path: str) -> Path:
    """A checkpoint directory, a run directory holding `checkpoint/`, or an embedded name."""
    p = Path(name_or_path)
    if (p / CHECKPOINT / CONFIG).is_file():
        return p / CHECKPOINT
    if (p / CONFIG).is_file():
        return p
    embedded = EMBEDDED_DIR / str(name_or_path)
    if (embedded / CONFIG).is_file():
        return embedded
    if p.exists():
        raise UserError(f"{name_or_path} is not a checkpoint directory (no config.json)")
    known = sorted(d.name for d in EMBEDDED_DIR.iterdir()) if EMBEDDED_DIR.is_dir() else []
    raise UserError(f"checkpoint not found: {name_or_path}"
                    + (f" (embedded models: {', '.join(known)})" if known else ""))


def read_config(ckpt: Path) -> tuple[RunConfig, dict]:
    try:
        meta = json.loads((ckpt / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:   # ValueError: bad JSON, or bytes that are not UTF-8
        raise UserError(f"cannot read {ckpt / CONFIG}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(meta, dict) or "family" not in meta:
        raise UserError(f"{ckpt / CONFIG} is not a toolkit checkpoint config")
    problem = config_type_problem(meta)
    if problem:
        raise UserError(f"{ckpt / CONFIG}: {problem}")
    return config_from_dict(meta), meta


def tokenizer_file(ckpt: Path, meta: dict) -> Path:
    return ckpt / meta.get("tokenizer", TOKENIZER)


def load_weights(ckpt: Path) -> dict:
    try:
        return load_file(str(ckpt / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"cannot read weights {ckpt / WEIGHTS}: {e}") from None


def load_train_state(ckpt: Path) -> dict | None:
    f = ckpt / STATE
    if not f.is_file():
        return None
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read training state {f}: {e.__class__.__name__}") from None


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
        meta = json.loads((ckpt / CONFIG).read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or "family" not in meta:
            return "config.json is not a toolkit checkpoint config"
        json.loads(tokenizer_file(ckpt, meta).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"unreadable config or tokenizer ({e.__class__.__name__})"
    bad = safetensors_problem(ckpt / WEIGHTS)
    if bad:
        return f"model.safetensors {bad}"
    if (ckpt / STATE).exists():
        try:
            zipfile.ZipFile(ckpt / STATE).close()
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
        self.path, self.fd = out / LOCK, None

    def acquire(self) -> "RunLock":
        try:
            import fcntl   # deferred: POSIX only
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


def _recorded_keys(cfg: dict) -> set[str]:
    """The 'section.key' names a stored config actually holds (identity() fills the rest with None)."""
    return {"family"} | {f"{section}.{k}" for section in IDENTITY for k in (cfg.get(section) or {})}


def holds_run(out: Path) -> bool:
    return any((out / name).exists() for name in (METRICS, CHECKPOINT, CHECKPOINT + ".tmp", CHECKPOINT + ".old"))


def check_out(out: Path, cfg: dict, resume: bool, overwrite: bool, defaults: dict | None = None) -> None:
    """Refuse to start in a directory that holds another run (or this one, without resume=true).

    `defaults` (a config dict with every option at its default) lets a run made before an option
    existed resume: a setting absent from its record matches when the new value is the default. A
    path that changed but names a file with the same bytes (an embedded tokenizer seen from another
    checkout of the toolkit) is the same setting."""
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out} is a file, not a directory")
    if not holds_run(out) or overwrite:
        return
    if not resume:
        raise UserError(f"{out} already holds a run: pass resume=true to continue it, overwrite=true to "
                        "replace it, or another out=")
    try:
        before = json.loads((out / RUN_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return   # no record of the settings (a run killed before writing it): the checkpoint decides
    old, new, recorded = identity(before), identity(cfg), _recorded_keys(before)
    default = identity(defaults) if defaults is not None else {}
    changed = [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in new if not _same_setting(old.get(k), new[k])
               and not (k not in recorded and k in default and default[k] == new[k])]
    if changed:
        raise UserError(f"{out} holds a different run ({'; '.join(changed[:3])}"
                        f"{'; ...' if len(changed) > 3 else ''}): use another out=, or overwrite=true to replace it")


def _same_setting(old, new) -> bool:
    if old == new:
        return True
    if not (isinstance(old, str) and isinstance(new, str)):
        return False
    try:
        return Path(old).is_file() and Path(new).is_file() and filecmp.cmp(old, new, shallow=False)
    except OSError:
        return False


def clear_run(out: Path) -> None:
    """overwrite=true: delete the files of the previous run (only those the trainer writes)."""
    for name in RUN_FILES:
        _remove(out / name)
