"""The committed demo datasets, opened once per session for the plot tests (torch-free)."""

from __future__ import annotations

from pathlib import Path

import pytest

from geomlib.store import cached

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def smol():
    return cached("demo:smollm2-135m", ROOT / "cache")


@pytest.fixture(scope="session")
def minilm():
    return cached("demo:minilm-l6", ROOT / "cache")
