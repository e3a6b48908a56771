"""Drive the app in headless Chromium (Debian's `chromium`; Playwright never downloads a browser).

Selects all four families, generates, waits for the live run to finish, and checks every panel:
its final text is what the model generates for the same request, and its step counter reached
the requested steps. Saves a screenshot (to $GUI_ARTEFACTS or the test's tmp dir).
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
FAMILIES = ("ar", "mdlm", "duo", "esolm")

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="needs Debian's chromium at /usr/bin/chromium")]


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    from gui.app import serve_in_background
    from gui.models import ModelRegistry
    torch.set_num_threads(1)
    keys = [tiny_checkpoint(f) for f in FAMILIES]
    registry = ModelRegistry(keys, evaluator=keys[0])
    demo, url = serve_in_background(registry)
    yield registry, url
    demo.close()


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def wait_until_done(page, n: int) -> None:
    page.wait_for_function("n => document.querySelectorAll('#panels .dlm-panel[data-done=\"true\"]').length === n",
                           arg=n, timeout=120_000)


def wait_until_scrubbed_to_first_step(page) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('#panels .dlm-step')].every(e => e.dataset.step === '1')", timeout=30_000)


def test_browser_generates_with_all_families(server, tmp_path):
    from playwright.sync_api import sync_playwright

    from gui.render import short_name
    from toolkit.sample_request import SampleRequest
    registry, url = server
    prompt, length, seed = "It is a truth", 24, 7
    n_prompt = len(registry.get(registry.keys[0]).encode(prompt))
    steps = length - n_prompt          # AR takes one step per token; Duo adds its tail step
    expected, expected_steps = {}, {}
    for key in registry.keys:
        m = registry.get(key)
        req = SampleRequest(length=length, steps=steps, seed=seed, prompt=m.encode(prompt))
        texts, last = m.generate(req)
        expected[key], expected_steps[key] = texts[0], last.step

    shots = Path(os.environ.get("GUI_ARTEFACTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector("#generate", timeout=60_000)
            for key in registry.keys:                       # select all four (whatever the default)
                box = page.locator("#models").get_by_label(short_name(key), exact=True)
                if not box.is_checked():
                    box.check()
            page.locator("#prompt textarea").fill(prompt)
            set_number(page, "length", length)
            set_number(page, "steps", steps)
            set_number(page, "seed", seed)
            page.locator("#generate").click()
            wait_until_done(page, len(registry.keys))
            page.wait_for_selector("#download", state="visible", timeout=30_000)
            page.wait_for_selector("#run-plot [data-testid=matplotlib] img", timeout=30_000)
            page.screenshot(path=str(shots / "gui-denoise.png"), full_page=True)
            for key in registry.keys:
                panel = page.locator(f'#panels .dlm-panel[data-key="{key}"]')
                assert panel.count() == 1
                counter = int(panel.locator(".dlm-step").get_attribute("data-step"))
                assert counter == expected_steps[key] >= steps, (key, counter)
                final = panel.locator(".dlm-final").inner_text()
                assert final.strip() == expected[key].strip(), key
            assert "Done" in page.locator("#status").inner_text()
            # scrub back to the first step: every counter follows
            set_number(page, "scrub", 1)
            wait_until_scrubbed_to_first_step(page)
            page.screenshot(path=str(shots / "gui-scrubbed.png"), full_page=True)
        finally:
            browser.close()
    assert (shots / "gui-denoise.png").stat().st_size > 10_000


def test_browser_speed_quality_explorer(server, tmp_path):
    """The explorer's defaults (the strategies default_selection ticks, five step counts) run as they are,
    and give a point for every (model, strategy, distinct step count) with the table and the plot."""
    from playwright.sync_api import sync_playwright

    from gui.explorer_tab import default_selection
    from toolkit.samplers import supported
    registry, url = server
    shots = Path(os.environ.get("GUI_ARTEFACTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_role("tab", name="Speed-quality explorer").click()
            steps_box = page.locator("#x-steps textarea, #x-steps input").first
            counts = len(steps_box.input_value().replace(",", " ").split())
            page.locator("#x-go").click()          # the defaults, untouched
            page.wait_for_function("() => /Done|⚠️/.test(document.querySelector('#x-status')?.innerText || '')",
                                   timeout=300_000)
            status = page.locator("#x-status").inner_text()
            assert "Done" in status, status
            page.wait_for_selector("#x-plot [data-testid=matplotlib] img", timeout=30_000)
            page.screenshot(path=str(shots / "gui-explorer.png"), full_page=True)
            # every (model, strategy) pair has points: at most one per count (fewer where two counts take the
            # same steps: AR takes one per token whatever the count, and no sampler takes more than the length)
            keys, ticked = default_selection(registry)
            pairs = sum(len(set(ticked) & set(supported(registry.get(k).family))) for k in keys)
            points = int(re.search(r"Done: (\d+) point", status).group(1))
            assert pairs <= points <= pairs * counts, status
            assert "Reference: validation text" in status
            table = page.locator("#x-table").inner_text()
            assert all(s in table for s in ticked[1:]), table
        finally:
            browser.close()


@contextmanager
def app_page(url, width: int = 1366, height: int = 768):
    """The app in a fresh headless Chromium page of this size, closed afterwards."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector("#generate", timeout=60_000)
            yield page
        finally:
            browser.close()


def test_browser_controls_and_running_panels_fit_a_laptop_screen(server, tmp_path):
    """At 1366x768, Generate is visible without scrolling; while a run plays, every panel's step
    counter is in view; the slow-motion help is not squeezed into a narrow column."""
    registry, url = server
    shots = Path(os.environ.get("GUI_ARTEFACTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with app_page(url) as page:
        box = page.locator("#generate").bounding_box()
        assert box["y"] + box["height"] <= 768, box
        set_number(page, "length", 24)
        set_number(page, "steps", 400)          # long enough (25 ms a step) to look at it mid-run
        page.locator("#generate").click()
        page.wait_for_function("() => [...document.querySelectorAll('#panels .dlm-panel[data-done=\"false\"] "
                               ".dlm-step')].some(e => +e.dataset.step > 3)", timeout=60_000)
        assert page.evaluate("window.scrollY") == 0
        stats = page.locator("#panels .dlm-stats")
        assert stats.count() == len(registry.keys)
        for i in range(stats.count()):
            b = stats.nth(i).bounding_box()
            assert 0 <= b["y"] and b["y"] + b["height"] <= 768, (i, b)
        page.screenshot(path=str(shots / "gui-midrun-1366x768.png"))
        wait_until_done(page, len(registry.keys))
        page.locator("#more").get_by_text("More settings").first.click()
        page.wait_for_selector("#slow", state="visible")
        assert page.locator("#slow").bounding_box()["width"] >= 300


def test_browser_scrubber_stays_under_the_pointer(server):
    """Scrubbing from the last step to the first must not move the slider (panel heights change)."""
    registry, url = server
    with app_page(url) as page:
        set_number(page, "length", 32)
        set_number(page, "steps", 16)
        page.locator("#generate").click()
        wait_until_done(page, len(registry.keys))
        page.wait_for_function("() => !document.querySelector('#scrub input[type=range]').disabled",
                               timeout=30_000)
        before = page.locator("#scrub input[type=range]").bounding_box()
        set_number(page, "scrub", 1)
        wait_until_scrubbed_to_first_step(page)
        after = page.locator("#scrub input[type=range]").bounding_box()
        assert abs(after["y"] - before["y"]) < 1, (before, after)


def test_browser_out_of_range_seed_is_a_message(server):
    """A seed beyond 64 bits: a one-line message in the status, not blank panels."""
    registry, url = server
    with app_page(url) as page:
        set_number(page, "length", 16)
        set_number(page, "seed", "99999999999999999999")
        page.locator("#generate").click()
        page.wait_for_function("() => (document.querySelector('#status')?.innerText || '').includes('seed must be')",
                               timeout=60_000)
        assert "seed must be" in page.locator("#panels").inner_text()
