"""Text sources: the embedded Austen corpus, any local UTF-8 file, or a Hugging Face dataset.

Everything returns plain text documents; tokenisation and packing live in `packing.py`.
"""
from __future__ import annotations

import gzip
import os
import re
from pathlib import Path
from typing import Iterator

from toolkit.errors import UserError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
AUSTEN_PATH = ASSETS / "austen.txt.gz"
AUSTEN_TITLES = ("Pride and Prejudice", "Sense and Sensibility", "Emma", "Mansfield Park",
                 "Northanger Abbey", "Persuasion")


def unwrap_paragraphs(text: str) -> str:
    """Join hard-wrapped lines into one line per paragraph (Gutenberg texts wrap at ~70 chars)."""
    paragraphs = re.split(r"\n\s*\n", text)
    return "\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def austen_documents() -> list[str]:
    """The six novels, one document each (each starts at its title line)."""
    with gzip.open(AUSTEN_PATH, "rt", encoding="utf-8") as f:
        raw = f.read()
    starts = sorted(m.start() for title in AUSTEN_TITLES
                    if (m := re.search(rf"^{title}$", raw, re.M | re.I)))
    bounds = starts[1:] + [len(raw)]
    return [unwrap_paragraphs(raw[a:b]) for a, b in zip(starts, bounds)]


def file_documents(path: str) -> list[str]:
    """A local UTF-8 text file as one document (paragraph wrapping is kept as is)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"data file not found: {path}")
    try:
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt", encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read data file {path}: {e.__class__.__name__}: {e}") from None
    if not text.strip():
        raise UserError(f"data file is empty: {path}")
    return [text]


def hub_documents(name: str, split: str = "train", text_field: str = "text",
                  max_documents: int | None = None, streaming: bool = True) -> Iterator[str]:
    """Documents of a Hugging Face dataset (streamed so large corpora never sit in memory)."""
    try:
        import datasets   # deferred: optional (hub datasets only) and slow to import
    except ImportError:  # pragma: no cover - datasets is a core dependency
        raise UserError("the 'datasets' package is needed for hub datasets") from None
    try:
        ds = datasets.load_dataset(name, split=split, streaming=streaming)
    except Exception as e:  # the hub raises many kinds; all mean "cannot use this name"
        first = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise UserError(f"cannot load dataset '{name}': {first}") from None
    for i, row in enumerate(ds):
        if max_documents is not None and i >= max_documents:
            break
        if text_field not in row:
            raise UserError(f"dataset '{name}' has no field '{text_field}' (fields: {sorted(row)})")
        yield row[text_field]


def documents(source: str, **hub_kwargs) -> Iterator[str] | list[str]:
    """Resolve `data=`: 'austen', a local text file, a local dataset folder, or a hub dataset name."""
    if source == "austen":
        return austen_documents()
    if Path(source).is_dir():  # a local dataset folder (json/jsonl/csv/parquet/txt), as on the hub
        return hub_documents(source, **hub_kwargs)
    if os.path.sep in source or source.startswith(".") or Path(source).exists():
        return file_documents(source)
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", source) and not Path(source).suffix in {".txt", ".gz"}:
        return hub_documents(source, **hub_kwargs)
    return file_documents(source)
