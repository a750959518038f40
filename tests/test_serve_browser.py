"""The web playground in headless Chromium (Debian's ``chromium``, driven by Playwright; no browser download).

Run it with ``make test-browser`` (installs ``chromium`` with apt-get when it is missing and sets
``LMCONTROL_BROWSER_TEST=1``; ``make test-slow`` skips it, so CI runs it once). It serves the
embedded model with the committed pirate compressed prompt loaded, ticks that control in the page, generates
base and controlled outputs side by side and waits for their scores. With ``LMCONTROL_UPDATE_SCREENSHOT=1``
the screenshot is written to ``docs/img/serve-playground.png`` (the one docs/serving.md shows).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("LMCONTROL_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "docs" / "img" / "serve-playground.png"
PIRATE = REPO / "artifacts" / "compressed-pirate"


@pytest.fixture(scope="module")
def server(embedded):
    from lmcontrol.engine import Engine
    from lmcontrol.serve.app import create_app
    from lmcontrol.serve.config import ServeSettings
    from lmcontrol.serve.controls import ControlStore
    from lmcontrol.serve.server import uvicorn_in_thread

    store = ControlStore(embedded)
    store.load("pirate", f"compressed:{PIRATE}", trusted=True)
    store.load("terse", "system:Answer in one short sentence.", trusted=True)
    app = create_app(Engine(embedded, max_batch_size=4), store, ServeSettings(max_tokens=64))
    srv, thread, port = uvicorn_in_thread(app)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_playground_streams_base_and_controlled_side_by_side(server, tmp_path):
    if os.environ.get("LMCONTROL_BROWSER_TEST") != "1":
        pytest.skip("the browser test runs with `make test-browser` (LMCONTROL_BROWSER_TEST=1)")
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (make test-browser installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            assert "smollm2" in page.inner_text("#model")
            page.check("input.control-toggle[data-name='pirate']")
            page.fill("#prompt", "Tell me about the ocean.")
            page.fill("#max-tokens", "40")
            page.click("#generate")
            page.wait_for_function("document.getElementById('status').textContent === 'done'"
                                   " || document.getElementById('status').textContent.startsWith('error')",
                                   timeout=240_000)
            assert page.inner_text("#status") == "done", page.inner_text("#status")
            base, controlled = page.inner_text("#base-output"), page.inner_text("#controlled-output")
            assert base.strip() and controlled.strip() and base != controlled
            assert "Ahoy" in controlled  # the compressed pirate prompt's rule
            assert "@pirate" in page.inner_text("#controlled-label")
            for side in ("base", "controlled"):
                metrics = page.eval_on_selector_all(f"#{side}-scores .score", "els => els.map(e => e.dataset.metric)")
                assert metrics == ["toxicity", "sentiment", "reward"]
            out = SCREENSHOT if os.environ.get("LMCONTROL_UPDATE_SCREENSHOT") == "1" else tmp_path / "playground.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            assert out.stat().st_size > 10_000
        finally:
            browser.close()
