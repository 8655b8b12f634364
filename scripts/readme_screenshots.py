"""The README's screenshots of the dashboard: the first screen, each view, compare mode and the training view.

Serves the dashboard with Voila on the committed demo datasets (as ``make dashboard``), opens it in headless
Chromium (Debian's, never a Playwright download) at a laptop size, and writes small PNGs (downscaled,
128-colour palette) to ``docs/screenshots/``:

    .venv/bin/python scripts/readme_screenshots.py [--out docs/screenshots] [--width 1366] [--px 900]
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.dashboard_latency import CHROMIUM_ARGS, Voila, chromium_path  # noqa: E402

SWEEP_A, SWEEP_B = "sweep:demo-tiny-llama @ step 200", "sweep:demo-tiny-llama @ step 400"


def small_png(data: bytes, px: int) -> bytes:
    """``data`` (a PNG) at most ``px`` wide, with a 128-colour palette: a few tens of KB each."""
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    if img.width > px:
        img = img.resize((px, round(img.height * px / img.width)), Image.LANCZOS)
    out = io.BytesIO()
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, format="PNG", optimize=True)
    return out.getvalue()


def wait_drawn(page, view: str, timeout: float = 120_000) -> None:
    page.wait_for_function(
        f"() => {{ const g = document.querySelector('.geomlib-plot[data-view=\"{view}\"]'); "
        "return !!(g && g._fullLayout && g.offsetParent !== null && g.querySelectorAll('.nsewdrag').length); }",
        timeout=timeout)
    page.evaluate("() => new Promise((r) => setTimeout(r, 300))")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--width", type=int, default=1366, help="browser window width (default 1366)")
    ap.add_argument("--px", type=int, default=900, help="width of the written PNGs (default 900)")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from geomlib.plot.names import VIEW_NAMES

    args.out.mkdir(parents=True, exist_ok=True)
    shots: dict[str, bytes] = {}
    voila = Voila(args.out / "voila.log")
    try:
        voila.wait_up()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": 768})
            page.goto(voila.url, timeout=180_000)
            for v in VIEW_NAMES:
                wait_drawn(page, v)
            page.mouse.move(0, 0)
            shots["first-screen"] = page.screenshot()
            for k, v in enumerate(VIEW_NAMES, start=1):
                # the view's one-line verdict sits just above its figure: both in the picture
                el = page.locator(f".geomlib-plot[data-view='{v}']")
                box = el.bounding_box()
                verdict = page.locator(f".geomlib-verdict[data-view='{v}']")
                top = verdict.bounding_box()["y"] if verdict.count() else box["y"]
                el.scroll_into_view_if_needed()
                box = el.bounding_box()
                top = verdict.bounding_box()["y"] if verdict.count() else box["y"]
                shots[f"view{k}-{v}"] = page.screenshot(full_page=False, clip={
                    "x": 0, "y": top, "width": args.width, "height": box["y"] + box["height"] - top})
            page.locator(".widget-toggle-button", has_text=re.compile(r"^\s*compare\s*$")).first.click()
            wait_drawn(page, "compare")
            for label, key in (("A", SWEEP_A), ("B", SWEEP_B)):
                select = page.locator(".widget-dropdown").filter(
                    has=page.locator("label.widget-label", has_text=re.compile(rf"^{label}$"))).locator("select")
                value = next(o for o in select.evaluate("s => Array.from(s.options, (o) => o.value)")
                             if o.startswith(key))
                select.select_option(value)
            page.wait_for_function("() => { const g = document.querySelector('.geomlib-plot[data-view=\"compare\"]');"
                                   f" return g && g.layout.meta && g.layout.meta.b === {SWEEP_B!r}; }}",
                                   timeout=60_000)
            page.evaluate("() => new Promise((r) => setTimeout(r, 300))")
            shots["mode-compare"] = page.screenshot()
            page.locator(".widget-toggle-button", has_text=re.compile(r"^\s*training\s*$")).first.click()
            wait_drawn(page, "training")
            shots["mode-training"] = page.screenshot()
            browser.close()
    finally:
        voila.stop()
    (args.out / "voila.log").unlink(missing_ok=True)
    total = 0
    for name, data in shots.items():
        png = small_png(data, args.px)
        (args.out / f"{name}.png").write_bytes(png)
        total += len(png)
        print(f"{name}.png: {len(png) / 1024:.0f} KiB")
    print(f"{len(shots)} screenshots, {total / 1024:.0f} KiB in all -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
