"""Shared pytest configuration: tiny checkpoints are built per test in tmp_path."""

from __future__ import annotations

import os

import pytest

from tests.factories.cli import CliResult

# Tests never reach the hub: everything is built locally or shipped in wheels.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session", autouse=True)
def _digest_memos_in_tmp(tmp_path_factory):
    """Checkpoint digest memos (:mod:`geomlib.io.digest`) go to a session temp dir, never to ``~/.cache``."""
    before = os.environ.get("GEOMLIB_DIGEST_CACHE")
    os.environ["GEOMLIB_DIGEST_CACHE"] = str(tmp_path_factory.mktemp("digest-memos"))
    yield
    if before is None:
        os.environ.pop("GEOMLIB_DIGEST_CACHE", None)
    else:
        os.environ["GEOMLIB_DIGEST_CACHE"] = before


@pytest.fixture
def run_cli(capsys, monkeypatch, tmp_path):
    """Run ``geomlib ARGS`` in this process (``geomlib.cli.main``): no interpreter or torch start-up per call.

    The command runs from ``tmp_path`` against an empty, offline HF cache (as a user without the
    model would), so nothing lands in the repository and nothing is downloaded.  argparse's own
    exits (``--help``, ``--version``, usage errors) are returned as their exit status.
    """
    from geomlib.cli import main

    empty = tmp_path / "empty-hf-cache"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(empty))
    monkeypatch.chdir(tmp_path)

    def run(*args, **env: str) -> CliResult:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        capsys.readouterr()  # drop what earlier steps printed
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help, --version, usage errors
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return run
