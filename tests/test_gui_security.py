"""The GUI when shared: where it binds, the checkpoint-path field and allowed roots, per-client limits.

The handlers are called directly (as Gradio would call them, with a stand-in gr.Request); the
browser test (tests/test_gui_browser.py) covers the page itself.
"""
from __future__ import annotations

import os
import shutil
import threading
from types import SimpleNamespace

import pytest
import torch

from gui.__main__ import main as gui_main
from gui.app import build_app
from gui.models import ModelRegistry
from gui.policy import AccessPolicy, host_and_port
from toolkit.checkpoints.rundir import EMBEDDED_DIR
from toolkit.errors import UserError


def request(ip="10.0.0.5"):
    return SimpleNamespace(client=SimpleNamespace(host=ip))


def handler(demo, name):
    fns = demo.fns.values() if isinstance(demo.fns, dict) else demo.fns
    return next(f.fn for f in fns if f.api_name == name)


def component(demo, elem_id):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


@pytest.fixture(scope="module")
def registry():
    torch.set_num_threads(1)
    return ModelRegistry(["mdlm"], evaluator="ar")


def test_binding_defaults_env_and_flags(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    assert host_and_port(None, None) == ("127.0.0.1", 7860)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8123")
    assert host_and_port(None, None) == ("0.0.0.0", 8123)
    assert host_and_port("127.0.0.1", 9000) == ("127.0.0.1", 9000)      # flags win over the environment
    monkeypatch.setenv("GRADIO_SERVER_PORT", "http")
    with pytest.raises(UserError, match="GRADIO_SERVER_PORT must be a port number"):
        host_and_port(None, None)
    with pytest.raises(UserError, match="port must be in"):
        host_and_port(None, 70000)


def test_cli_passes_env_binding_and_policy_to_launch(monkeypatch):
    import gui.app
    seen = {}
    monkeypatch.setattr(gui.app, "launch", lambda demo, host, port, share: seen.update(host=host, port=port, share=share))
    monkeypatch.setattr(gui.app, "build_app", lambda reg, conc, policy, threads: seen.update(policy=policy))
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8124")
    gui_main(["--models", "mdlm"])
    assert (seen["host"], seen["port"]) == ("0.0.0.0", 8124)
    assert seen["policy"].public and not seen["policy"].paths_enabled and seen["policy"].runs_per_client == 2
    monkeypatch.delenv("GRADIO_SERVER_NAME")
    gui_main(["--models", "mdlm"])
    assert seen["host"] == "127.0.0.1" and not seen["policy"].public and seen["policy"].paths_enabled
    gui_main(["--models", "mdlm", "--share"])
    assert seen["policy"].public


def test_shared_app_turns_the_path_field_off(registry):
    demo = build_app(registry, policy=AccessPolicy.for_launch("0.0.0.0", share=False))
    assert component(demo, "ckpt-path").interactive is False
    add = handler(demo, "add_path")
    *_, status = add(str(EMBEDDED_DIR / "ar"), [], [])
    assert "off while the app is shared" in status and str(EMBEDDED_DIR / "ar") not in registry.keys
    local = build_app(registry, policy=AccessPolicy.for_launch("127.0.0.1", share=False))
    assert component(local, "ckpt-path").interactive is not False


def test_allowed_roots_admit_inside_and_refuse_outside(registry, tmp_path):
    root, outside = tmp_path / "allowed", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    shutil.copytree(EMBEDDED_DIR / "duo", root / "duo")
    shutil.copytree(EMBEDDED_DIR / "duo", outside / "duo")
    os.symlink(outside / "duo", root / "sneaky")            # a link out of the root does not count as inside
    policy = AccessPolicy.for_launch("0.0.0.0", share=True, roots=[root])
    demo = build_app(registry, policy=policy)
    assert component(demo, "ckpt-path").interactive is not False
    add = handler(demo, "add_path")
    for bad in (outside / "duo", root / "sneaky", root / ".." / "elsewhere" / "duo", "/etc"):
        *_, status = add(str(bad), [], [])
        assert "outside the allowed checkpoint folders" in status, status
    *_, status = add(str(root / "duo"), [], [])
    assert status.startswith("Loaded") and str(root / "duo") in registry.keys
    *_, status = add("esolm", [], [])                           # embedded names stay available
    assert status.startswith("Loaded")
    with pytest.raises(UserError, match="not a directory"):
        AccessPolicy.for_launch("0.0.0.0", False, roots=[tmp_path / "nope"])


def test_denoise_loads_checkpoint_paths_as_the_load_button_does(tmp_path):
    """/denoise's `families` takes a checkpoint directory (its docstring says so): loaded locally, inside
    the allowed roots when shared, refused with the Load button's message outside them."""
    root, outside = tmp_path / "allowed", tmp_path / "elsewhere"
    for d in (root, outside):
        shutil.copytree(EMBEDDED_DIR / "duo", d / "duo")
    local = handler(build_app(ModelRegistry(["mdlm"], evaluator=None)), "denoise")
    out = local("", ["mdlm", str(outside / "duo")], 8, 2, 0, request=request())
    assert set(out["texts"]) == {"mdlm", str(outside / "duo")} and not out["errors"]
    shared = handler(build_app(ModelRegistry(["mdlm"], evaluator=None),
                               policy=AccessPolicy.for_launch("0.0.0.0", share=False, roots=[root])), "denoise")
    assert str(root / "duo") in shared("", [str(root / "duo")], 8, 2, 0, request=request())["texts"]
    with pytest.raises(Exception, match="outside the allowed checkpoint folders"):
        shared("", [str(outside / "duo")], 8, 2, 0, request=request())


def test_runs_per_client_are_bounded(registry):
    policy = AccessPolicy.for_launch("0.0.0.0", share=False, runs_per_client=1)
    demo = build_app(registry, policy=policy)
    denoise = handler(demo, "denoise")
    gate, entered = threading.Event(), threading.Event()
    real_get = registry.get

    def slow_get(key):          # hold the first request inside its run until released
        entered.set()
        gate.wait(10)
        return real_get(key)

    registry.get = slow_get
    try:
        t = threading.Thread(target=denoise, args=("", ["mdlm"], 8, 2, 0),
                             kwargs={"request": request("10.0.0.5")})
        t.start()
        assert entered.wait(10)
        with pytest.raises(Exception, match="already have 1 request"):
            denoise("", ["mdlm"], 8, 2, 0, request=request("10.0.0.5"))
        registry.get = real_get
        out = denoise("", ["mdlm"], 8, 2, 0, request=request("10.0.0.6"))     # another client is not held up
        assert out["texts"]["mdlm"] is not None
    finally:
        registry.get = real_get
        gate.set()
        t.join(10)
    assert denoise("", ["mdlm"], 8, 2, 0, request=request("10.0.0.5"))["steps"]["mdlm"] == 2   # the slot was released
    assert not policy._running


def test_requests_are_bounded(registry):
    demo = build_app(registry, policy=AccessPolicy.for_launch("0.0.0.0", share=False))
    denoise = handler(demo, "denoise")
    for args, needle in [(("", ["mdlm"], 10_000, 2, 0), "length must be between"),
                         (("", ["mdlm"], 8, 100_000, 0), "steps must be between"),
                         (("x" * 100_000, ["mdlm"], 8, 2, 0), "at most 20000"),
                         (("", ["mdlm"], "eight", 2, 0), "length must be a whole number")]:
        with pytest.raises(Exception, match=needle):
            denoise(*args, request=request())
