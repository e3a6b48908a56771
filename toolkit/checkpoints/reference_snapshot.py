"""A stand-in for a released reference checkpoint: a model written in the released layout.

The paper's models (`nvidia/SDLLM-<Family>-1.7B-Base`) are Hugging Face snapshots: weights in
`model.safetensors` under the reference's key names, a `config.json` with the head count and
length, and tokenizer files, in the Hub cache's `models--<owner>--<name>/snapshots/<revision>/`
folders. `write_reference_snapshot` writes any toolkit model that way (the key names are the
same), so the import path (`python -m toolkit.convert SNAPSHOT ...`) can be walked through and
tested offline, at toy size, with weights whose output is known.
"""
from __future__ import annotations

import json
from pathlib import Path

from toolkit.errors import UserError


def snapshot_dir(cache: str | Path, repo_id: str, revision: str = "synthetic") -> Path:
    """Where the Hub cache keeps a snapshot: CACHE/models--owner--name/snapshots/REVISION."""
    if repo_id.count("/") != 1:
        raise UserError(f"a repository id is 'owner/name' (got '{repo_id}')")
    return Path(cache) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / revision


def write_reference_snapshot(model, cache: str | Path, repo_id: str, revision: str = "synthetic") -> Path:
    """Write `model` (a loaded LanguageModel) as the snapshot `repo_id` would be; returns its folder."""
    from safetensors.torch import save_file   # deferred: only this writer needs it
    out = snapshot_dir(cache, repo_id, revision)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.net.state_dict().items()}
    state["rotary_emb.inv_freq"] = model.net.rotary_emb.inv_freq.detach().clone()
    save_file(state, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({"n_heads": model.cfg.model.n_heads,
                                                 "model_length": model.cfg.model.max_seq_len}, indent=2))
    model.tokenizer.save(str(out / "tokenizer.json"))
    return out
