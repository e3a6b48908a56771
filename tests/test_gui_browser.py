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
    """Wait until n panels have settled (finished or failed); a failed panel fails the test with its message."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    try:
        page.wait_for_function("n => document.querySelectorAll('#panels .dlm-panel[data-done=\"true\"], "
                               "#panels .dlm-panel[data-done=\"error\"]').length === n", arg=n, timeout=120_000)
    except PlaywrightTimeout:
        states = page.evaluate("() => [...document.querySelectorAll('#panels .dlm-panel')].map(e => e.dataset.done)")
        raise AssertionError(f"panels not done after 120 s: states {states}, status "
                             f"{page.locator('#status').inner_text()!r}") from None
    failed = page.locator('#panels .dlm-panel[data-done="error"]')
    assert failed.count() == 0, [failed.nth(i).inner_text() for i in range(failed.count())]


def choose(page, elem_id: str, value: str) -> None:
    """Pick a dropdown entry by clicking it in the open list (Enter on a still-filtering list may pick
    nothing), and wait until the box shows it."""
    box = page.locator(f"#{elem_id} input")
    box.click()
    page.get_by_role("option", name=value, exact=True).click()
    page.wait_for_function("([id, v]) => document.querySelector(`#${id} input`).value === v", arg=[elem_id, value],
                           timeout=30_000)


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
        panels_y = page.locator("#panels .dlm-grid").bounding_box()["y"]
        wait_until_done(page, len(registry.keys))
        page.wait_for_function("() => (document.querySelector('#status')?.innerText || '').includes('Done')")
        # the status line's final text ("Done: ... s with pauses.") must not push the panels down
        assert abs(page.locator("#panels .dlm-grid").bounding_box()["y"] - panels_y) < 1
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


def status_says(page, needle: str) -> None:
    page.wait_for_function("n => (document.querySelector('#status')?.innerText || '').includes(n)", arg=needle,
                           timeout=120_000)


def open_more_settings(page) -> None:
    page.locator("#more").get_by_text("More settings").first.click()
    page.wait_for_selector("#temperature", state="visible")


def test_browser_out_of_range_numbers_are_named_not_clamped(server):
    """Steps 100000, length 10^6, temperature -1, top-p 2 typed into the form: each is refused with the
    message naming the parameter (the one /denoise gives), visibly, and the typed value stays as typed."""
    registry, url = server
    cap = min(registry.get(k).max_length for k in registry.keys)
    with app_page(url) as page:
        set_number(page, "length", 16)
        set_number(page, "steps", 100000)
        page.locator("#generate").click()
        status_says(page, "steps must be between 1 and 512 (got 100000)")
        assert "steps must be between 1 and 512 (got 100000)" in page.locator("#panels").inner_text()
        assert page.locator("#steps input[type=number]").input_value() == "100000"     # not clamped to 512
        set_number(page, "steps", 8)
        set_number(page, "length", 1000000)
        page.locator("#generate").click()
        status_says(page, f"length must be between 1 and {cap} tokens for the selected models (got 1000000)")
        set_number(page, "length", 16)
        open_more_settings(page)
        set_number(page, "temperature", -1)
        page.locator("#generate").click()
        status_says(page, "temperature must be between 0 and 5.0 (got -1.0)")
        set_number(page, "temperature", 1)
        set_number(page, "top-p", 2)
        page.locator("#generate").click()
        status_says(page, "top_p must be in (0, 1] (got 2.0)")
        set_number(page, "top-p", 1)
        page.locator("#generate").click()
        wait_until_done(page, len(registry.keys))      # in range again: it runs


def test_browser_downloaded_trace_replays_to_the_same_tokens(server, tmp_path):
    """Generate with MDLM on ReMDM (eta=0.1), download the trace: it names what ran (typed options, the
    prompt text) and toolkit.trace replays every run to the tokens the app showed."""
    from toolkit.trace import load_trace, replay
    registry, url = server
    mdlm = next(k for k in registry.keys if registry.get(k).family.name == "mdlm")
    with app_page(url) as page:
        page.locator("#prompt textarea").fill("It is a truth")
        set_number(page, "length", 20)
        set_number(page, "steps", 8)
        set_number(page, "seed", 3)
        open_more_settings(page)
        page.get_by_text("Decoding strategy (per family)").click()
        choose(page, "sampler-mdlm", "remdm")
        page.get_by_label("mdlm: strategy options").fill("eta=0.1")
        page.locator("#generate").click()
        wait_until_done(page, len(registry.keys))
        page.wait_for_selector("#download", state="visible", timeout=30_000)
        shown = {k: page.locator(f'#panels .dlm-panel[data-key="{k}"] .dlm-final').inner_text() for k in registry.keys}
        with page.expect_download() as download:
            page.locator("#download").click()
        path = tmp_path / "trace.json"
        download.value.save_as(path)
    trace = load_trace(path)
    assert trace.prompt == "It is a truth" and [r.key for r in trace.runs] == registry.keys
    ran = {r.key: r for r in trace.runs}
    assert ran[mdlm].request.sampler == "remdm" and ran[mdlm].request.sampler_options == {"eta": 0.1}
    for run in trace.runs:
        assert run.error is None and run.request.seed == 3 and run.request.length == 20
        assert run.text.strip() == shown[run.key].strip()
        assert replay(run) == run.tokens, run.key


def test_browser_panels_and_run_plot_use_the_family_palette(server):
    """Each panel's swatch and its bars in the per-step plot have the family's colour of every other
    figure (toolkit.plotting.family_colour)."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from toolkit.plotting import family_colour
    registry, url = server
    with app_page(url, 1500, 1000) as page:
        set_number(page, "length", 16)
        set_number(page, "steps", 8)
        page.locator("#generate").click()
        wait_until_done(page, len(registry.keys))
        page.wait_for_selector("#run-plot [data-testid=matplotlib] img", timeout=30_000)
        for key in registry.keys:
            colour = family_colour(registry.get(key).family.name)
            swatch = page.locator(f'#panels .dlm-panel[data-key="{key}"] .dlm-swatch')
            rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
            assert swatch.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(%d, %d, %d)" % rgb, key
        src = page.locator("#run-plot [data-testid=matplotlib] img").get_attribute("src")
        png = (base64.b64decode(src.split(",", 1)[1]) if src.startswith("data:")
               else page.request.get(src if src.startswith("http") else url.rstrip("/") + src).body())
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(int)
    for key in registry.keys:
        colour = family_colour(registry.get(key).family.name)
        rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
        assert (abs(pixels - rgb).max(axis=1) <= 6).sum() > 30, key     # its bars are drawn in its colour
