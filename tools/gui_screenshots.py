"""The README's screenshots of the app, taken in headless Chromium (Debian's /usr/bin/chromium):
the Denoise tab mid-run at 1366x768, and the explorer after its default sweep, on the embedded models.

    python tools/gui_screenshots.py [--out docs/images]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = ap.parse_args(argv)
    import torch
    from playwright.sync_api import sync_playwright

    from gui.app import serve_in_background
    from gui.models import ModelRegistry
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    demo, url = serve_in_background(ModelRegistry())
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(url, wait_until="domcontentloaded")
            page.wait_for_selector("#generate", timeout=60_000)
            steps = page.locator("#steps input[type=number]")
            steps.fill("64")
            steps.press("Enter")
            page.locator("#generate").click()
            page.wait_for_function("() => [...document.querySelectorAll('#panels .dlm-panel[data-done=\"false\"] "
                                   ".dlm-step')].some(e => +e.dataset.step >= 24)", timeout=120_000)
            page.screenshot(path=str(args.out / "gui-denoise-midrun.png"))
            page.wait_for_selector("#download", state="visible", timeout=120_000)
            page.set_viewport_size({"width": 1366, "height": 900})
            page.get_by_role("tab", name="Speed-quality explorer").click()
            page.locator("#x-go").click()
            page.wait_for_function("() => /Done|⚠️/.test(document.querySelector('#x-status')?.innerText || '')",
                                   timeout=600_000)
            page.wait_for_selector("#x-plot [data-testid=matplotlib] img", timeout=60_000)
            page.locator("#x-plot").scroll_into_view_if_needed()
            page.locator("#x-plot").screenshot(path=str(args.out / "gui-explorer.png"))
            print(page.locator("#x-status").inner_text())
            browser.close()
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
