"""The served dashboard: a real Voila server on loopback, rendered by headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_path() -> str:
    """Debian's chromium (installed by .ci/run); never a browser downloaded by Playwright."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no system Chromium on PATH: install Debian's `chromium` package (.ci/run does)")


@pytest.fixture(scope="module")
def voila_url():
    port = _free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "voila.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "voila", str(ROOT / "notebooks" / "dashboard.ipynb"), f"--port={port}",
         "--no-browser", "--Voila.ip=127.0.0.1", "--show_tracebacks=True"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except urllib.error.HTTPError:
            break  # the server answered
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"voila did not start; see {log.name}")
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        yield b
        b.close()


@pytest.mark.slow
def test_dashboard_renders_demo_facts_and_reacts(voila_url, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(voila_url, timeout=120_000)
    facts = page.locator("table.geomlib-facts")
    facts.wait_for(timeout=120_000)
    assert page.locator("td.geomlib-arch").inner_text() == "llama"
    assert page.locator("td.geomlib-n_layers").inner_text() == "30"
    assert "quantization noise" in page.locator(".geomlib-quantized").inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard-demo.png"), full_page=True)

    # choose the other demo in the dropdown: the kernel reopens and the table changes
    page.locator("select").select_option(index=1)  # option 1 is demo:minilm-l6
    page.wait_for_function(
        "() => document.querySelector('td.geomlib-arch')?.textContent === 'bert'", timeout=60_000
    )
    assert page.locator("td.geomlib-n_layers").inner_text() == "6"
    page.screenshot(path=str(ARTIFACTS / "dashboard-minilm.png"), full_page=True)
    assert not errors, errors
