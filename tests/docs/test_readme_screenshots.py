"""The README's dashboard screenshots: one per view and mode, present, small, and shown by the README."""

from __future__ import annotations

import re
import struct
from pathlib import Path

from geomlib.plot.names import VIEW_NAMES

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "screenshots"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def test_every_view_and_mode_has_a_small_screenshot_the_readme_shows():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"\(docs/screenshots/([\w.-]+\.png)\)", readme))
    want = {"first-screen.png", "mode-compare.png", "mode-training.png"} | {
        f"view{k}-{v}.png" for k, v in enumerate(VIEW_NAMES, start=1)}
    assert want <= shown, sorted(want - shown)
    for name in shown:
        path = SHOTS / name
        assert path.is_file(), f"{name}: run scripts/readme_screenshots.py"
        w, h = _png_size(path)
        assert 600 <= w <= 1000 and 150 <= h <= 1000, (name, w, h)
        assert path.stat().st_size < 120_000, (name, path.stat().st_size)  # small: committed to the repository
    assert sum((SHOTS / n).stat().st_size for n in shown) < 1_000_000
