"""The widget viewer in a real JupyterLab, driven by headless Chromium (Debian's `chromium`).

Starts `jupyter lab` on a one-cell notebook that shows a DenoiseViewer, runs the cell, presses
Sample, waits for the panels to finish, then types 1 into the step slider's readout and checks
that the rendered step counters follow.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="needs Debian's chromium at /usr/bin/chromium")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lab")
    ckpt = tiny_checkpoint("mdlm")
    source = ("from gui.models import ModelRegistry\nfrom gui.notebook_viewer import DenoiseViewer\n"
              f"viewer = DenoiseViewer(ModelRegistry([{ckpt!r}], evaluator=None), length=16, steps=6)\nviewer.widget")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nbformat.write(nb, folder / "viewer.ipynb")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "JUPYTER_CONFIG_DIR": str(folder / "config")}
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.port={port}",
                             "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.allow_root=True",
                             "--LabApp.extension_manager=readonly", f"--ServerApp.root_dir={folder}",
                             "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(folder / "lab.log", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url + "/api", timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("jupyter lab did not start: " + (folder / "lab.log").read_text()[-1000:])
    yield url
    proc.terminate()
    proc.wait(30)


def dismiss_dialogs(page, most: int = 5) -> None:
    """A JupyterLab dialog (on a loaded machine, e.g. a slow kernel's) blocks every click: print what it
    said, so a real error stays visible, and close it."""
    for _ in range(most):
        dialog = page.locator(".jp-Dialog")
        if not dialog.count():
            return
        print("JupyterLab dialog:", dialog.first.inner_text()[:500])
        accept = dialog.first.locator(".jp-Dialog-button.jp-mod-accept")
        if accept.count():
            accept.first.click()
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(500)


def test_viewer_samples_and_scrubs_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{lab}/lab/tree/viewer.ipynb", wait_until="domcontentloaded")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            page.wait_for_function(   # the kernel has started and is idle
                "() => /idle/i.test(document.querySelector('.jp-Notebook-ExecutionIndicator')?.getAttribute('data-status')"
                " || document.body.innerText)", timeout=180_000)
            try:   # a run request sent before the kernel's channels are up is dropped: ask again
                for _ in range(12):
                    dismiss_dialogs(page)
                    try:
                        page.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor").first.click(timeout=15_000)
                        page.keyboard.press("Control+Enter")    # run the cell in place (no new cell)
                        page.wait_for_selector(".dlm-viewer-sample", timeout=15_000)
                        break
                    except Exception:
                        continue
                page.wait_for_selector(".dlm-viewer-sample", timeout=30_000)
            except Exception:
                page.screenshot(path=str(tmp_path / "lab-timeout.png"), full_page=True)
                print(page.locator(".jp-Notebook").inner_text()[-3000:])
                raise
            dismiss_dialogs(page)
            page.locator(".dlm-viewer-sample").click()
            page.wait_for_selector('.dlm-panel[data-done="true"]', timeout=120_000)
            last = int(page.locator(".dlm-step").first.get_attribute("data-step"))
            assert last >= 2
            track = page.locator(".dlm-viewer-step .slider-container, .dlm-viewer-step .widget-slider").first
            assert track.bounding_box()["width"] >= 360      # a scrubber wide enough to pick one step of ~100
            readout = page.locator(".dlm-viewer-step .widget-readout")
            readout.click()
            page.keyboard.press("Control+A")
            page.keyboard.type("1")
            page.keyboard.press("Enter")
            page.wait_for_function("() => document.querySelector('.dlm-step')?.dataset.step === '1'", timeout=60_000)
            assert page.locator(".dlm-panel .tok.masked").count() > 0     # MDLM after one step: still masked
            page.screenshot(path=str(Path(os.environ.get("GUI_ARTEFACTS", tmp_path)) / "notebook-viewer.png"))
        finally:
            browser.close()
