"""The Hub code path, offline: huggingface_hub's network calls are replaced by a local 'remote'."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import toolkit
from toolkit.cli.convert import main as convert_main
from toolkit.data.tokenizer import EMBEDDED_TOKENIZER
from toolkit.errors import UserError

hub = pytest.importorskip("huggingface_hub")
from test_convert import H, reference_logits, reference_weights, tokens_for  # noqa: E402


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A dict repo_id -> folder standing in for the Hub; pushes write there, downloads read there."""
    remote: dict[str, Path] = {}
    calls = {"download": []}

    def create_repo(self, repo_id, private=False, exist_ok=False, **kw):
        remote.setdefault(repo_id, tmp_path / "remote" / repo_id.replace("/", "--"))
        remote[repo_id].mkdir(parents=True, exist_ok=True)

    def create_commit(self, repo_id, operations, commit_message="", **kw):
        for op in operations:
            src = op.path_or_fileobj
            data = src if isinstance(src, bytes) else Path(src).read_bytes()
            (remote[repo_id] / op.path_in_repo).write_bytes(data)
        return type("Info", (), {"commit_url": f"https://hub.invalid/{repo_id}/commit/1"})()

    def snapshot_download(repo_id, revision=None, token=None, allow_patterns=None, **kw):
        calls["download"].append((repo_id, allow_patterns))
        if repo_id not in remote:
            raise OSError(f"Repository Not Found for url: https://hub.invalid/{repo_id}")
        return str(remote[repo_id])

    monkeypatch.setattr(hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(hub.HfApi, "create_commit", create_commit)
    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr("toolkit.checkpoints.hub_client.CACHE", tmp_path / "cache")
    return remote, calls


def converted(tmp_path, family="mdlm", seed=0) -> tuple[Path, dict]:
    sd = reference_weights(seed)
    torch.save({"backbone." + k: v for k, v in sd.items()}, tmp_path / "w.pt")
    convert_main([str(tmp_path / "w.pt"), "--family", family, "--out", str(tmp_path / "ckpt"),
                  "--tokenizer", str(EMBEDDED_TOKENIZER)])
    return tmp_path / "ckpt", sd


def test_push_then_load_by_hub_id(tmp_path, fake_hub):
    remote, calls = fake_hub
    ckpt, sd = converted(tmp_path)
    (ckpt / "state.pt").write_bytes(b"optimizer state: never uploaded")
    url = toolkit.push_to_hub(str(ckpt), "me/tiny-mdlm")
    assert "me/tiny-mdlm" in url
    assert sorted(p.name for p in remote["me/tiny-mdlm"].iterdir()) == \
        ["README.md", "config.json", "model.safetensors", "tokenizer.json"]
    model = toolkit.load("me/tiny-mdlm", precision="fp32")   # compared with an fp32 reference
    assert calls["download"][-1][0] == "me/tiny-mdlm"
    assert not any(p.endswith((".pt", ".bin", ".ckpt")) for p in calls["download"][-1][1])  # never pickles
    tokens = tokens_for(1)
    torch.testing.assert_close(model.net(tokens).double(), reference_logits(sd, tokens, torch.zeros(2), H, False),
                               rtol=1e-4, atol=1e-4)
    local = toolkit.load(str(ckpt))
    assert model.cfg.to_dict() == local.cfg.to_dict()


def test_reference_release_snapshot_is_converted_once(tmp_path, fake_hub, monkeypatch):
    remote, _ = fake_hub
    snap = tmp_path / "models--nvidia--SDLLM-Duo-1.7B-Base" / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    sd = reference_weights(4)
    save_file({"backbone." + k: v.contiguous() for k, v in sd.items()}, str(snap / "model.safetensors"))
    (snap / "config.json").write_text(json.dumps({"model_type": "sdllm", "n_heads": H, "model_length": 40}))
    shutil.copyfile(EMBEDDED_TOKENIZER, snap / "tokenizer.json")
    remote["nvidia/SDLLM-Duo-1.7B-Base"] = snap
    model = toolkit.load("nvidia/SDLLM-Duo-1.7B-Base", precision="fp32")   # compared with an fp32 reference
    assert model.cfg.family == "duo" and model.max_length == 40
    tokens, sigma = tokens_for(2), torch.tensor([0.7, 1.9])
    torch.testing.assert_close(model.net(tokens, sigma).double(), reference_logits(sd, tokens, sigma, H, False),
                               rtol=1e-4, atol=1e-4)

    def no_convert(*a, **k):
        raise AssertionError("converted twice")

    monkeypatch.setattr("toolkit.checkpoints.hub_client.convert", no_convert)
    again = toolkit.load("nvidia/SDLLM-Duo-1.7B-Base")
    assert again.path == model.path


def test_unknown_hub_id_is_one_user_error(fake_hub):
    with pytest.raises(UserError) as e:
        toolkit.load("nobody/nothing-here")
    assert "no local checkpoint 'nobody/nothing-here'" in str(e.value) and "\n" not in str(e.value)


def test_local_paths_never_go_to_the_hub(tmp_path, fake_hub, monkeypatch):
    _, calls = fake_hub
    ckpt, _ = converted(tmp_path)
    toolkit.load(str(ckpt))
    with pytest.raises(UserError):
        toolkit.load(str(tmp_path / "missing"))   # an absolute path is not a hub id
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="not found"):
        toolkit.load(f"{ckpt.name}/typo")          # under an existing local folder: a local miss
    assert calls["download"] == []
