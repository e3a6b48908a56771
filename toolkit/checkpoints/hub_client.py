"""Hugging Face Hub: publish a toolkit checkpoint, and load one (or a released reference model) by id.

    toolkit.push_to_hub("runs/x", "me/mdlm-austen")        # or: python -m toolkit.hub push runs/x me/mdlm-austen
    model = toolkit.load("me/mdlm-austen")                 # any 'owner/name' that is not a local path
    model = toolkit.load("nvidia/SDLLM-Duo-1.7B-Base")     # reference release: converted once, then cached

Only weights and JSON/tokenizer files are fetched (never pickles), and a reference release is
converted with toolkit.convert into a cache directory keyed by its snapshot.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from toolkit.checkpoints.reference_import import convert, declared_family, read_source
from toolkit.checkpoints.loading import load_checkpoint
from toolkit.checkpoints.rundir import CONFIG, EMBEDDED_DIR, TOKENIZER, WEIGHTS, resolve_path
from toolkit.errors import UserError

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
FETCH = ["*.json", "*.safetensors", "*.tiktoken", "*.model", "README.md"]
PUSH = [CONFIG, WEIGHTS, TOKENIZER]
CACHE = Path.home() / ".cache" / "dlm-toolkit" / "hub"


def looks_like_hub_id(name: str) -> bool:
    """'owner/name' that is not a local path (nor under an existing local folder: 'runs/typo' stays
    a local miss) and not an embedded model."""
    name = str(name)
    return (bool(HUB_ID.fullmatch(name)) and not Path(name.split("/")[0]).exists()
            and not (EMBEDDED_DIR / name).exists())


def _hub():
    try:
        import huggingface_hub   # deferred: optional (the [hub] extra)
    except ImportError:
        raise UserError("the Hub needs the 'huggingface_hub' package (pip install dlm-toolkit[hub])") from None
    return huggingface_hub


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{e.__class__.__name__}: {text.splitlines()[0]}" if text else e.__class__.__name__


def snapshot(repo_id: str, revision: str | None = None, token: str | None = None) -> Path:
    """A local snapshot of the repository (the Hub's cache; offline mode uses it as is)."""
    hub = _hub()
    try:
        return Path(hub.snapshot_download(repo_id=repo_id, revision=revision, token=token, allow_patterns=FETCH))
    except Exception as e:   # network, authentication, missing repository: all one message
        raise UserError(f"no local checkpoint '{repo_id}', and the Hugging Face Hub gave {_first_line(e)}") from None


def is_toolkit_checkpoint(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG).read_text()).get("format", "").startswith("dlm-toolkit/")
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def from_pretrained(repo_id: str, revision: str | None = None, device: str = "cpu", family: str | None = None,
                    token: str | None = None, **convert_kwargs):
    """A LanguageModel from a Hub repository: a toolkit checkpoint, or a reference release to convert."""
    path = snapshot(repo_id, revision, token)
    if is_toolkit_checkpoint(path):
        return load_checkpoint(str(path), device)
    _, meta, _ = read_source(str(path))
    family = family or declared_family(meta, repo_id)
    if family is None:
        raise UserError(f"{repo_id} is not a toolkit checkpoint and does not say its family: pass family=")
    key = hashlib.sha256(f"{path.resolve()}|{family}|{sorted(convert_kwargs.items())}".encode()).hexdigest()[:16]
    out = CACHE / f"{repo_id.replace('/', '--')}-{key}"
    if not (out / CONFIG).is_file():
        convert(str(path), family, str(out), force=True, name=repo_id, **convert_kwargs)
    return load_checkpoint(str(out), device)


def model_card(cfg: dict, repo_id: str) -> str:
    m = cfg.get("model", {})
    return (f"---\nlibrary_name: dlm-toolkit\ntags:\n- diffusion-language-model\n- {cfg.get('family')}\n---\n"
            f"# {repo_id}\n\nA `{cfg.get('family')}` language model trained with dlm-toolkit: "
            f"{m.get('n_layers')} layers, width {m.get('d_model')}, {m.get('n_heads')} heads, "
            f"vocabulary {m.get('vocab_size')}, context {cfg.get('data', {}).get('seq_len')}.\n\n"
            f"```python\nimport toolkit\nmodel = toolkit.load(\"{repo_id}\")\n```\n")


def push_to_hub(checkpoint, repo_id: str, private: bool = False, token: str | None = None,
                commit_message: str = "Upload dlm-toolkit checkpoint") -> str:
    """Upload weights, config and tokenizer (not the optimizer state) in one commit; returns its URL."""
    hub = _hub()
    ckpt = resolve_path(getattr(checkpoint, "path", None) or str(checkpoint))
    cfg = json.loads((ckpt / CONFIG).read_text())
    ops = [hub.CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(ckpt / name)) for name in PUSH]
    if not (ckpt / "README.md").is_file():
        ops.append(hub.CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=model_card(cfg, repo_id).encode()))
    api = hub.HfApi(token=token)
    try:
        api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id=repo_id, operations=ops, commit_message=commit_message)
    except Exception as e:
        raise UserError(f"cannot push to '{repo_id}': {_first_line(e)}") from None
    return str(getattr(info, "commit_url", info))
