"""An unreachable hub fails fast with one line, or falls back to the cached snapshot.

Real network failures, no internet needed: ``HF_ENDPOINT`` points at

* a local port with nothing listening (the connection is refused at once),
* a local socket that accepts connections and never answers (the read times out),
* a host name under ``.invalid``, which no resolver may resolve (RFC 6761).

The CLI cases run ``geomlib`` in a fresh interpreter with ``HF_HUB_OFFLINE``
unset (huggingface_hub reads ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` once, at
import).  The interpreter pre-imports torch and huggingface_hub and then runs
``python -m geomlib`` (``runpy``), timing only that: on a loaded two-core
machine torch's import alone takes 2 to 6 s, which says nothing about how long
geomlib waits for the hub.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from geomlib.errors import GeomlibError, HubError
from geomlib.io.hub import DEFAULT_HUB_TIMEOUT, open_hub
from tests.factories.hf import make_checkpoint
from tests.factories.hub import cache_repo
from tests.factories.hub import dir_files as _dir_files

REPO_ROOT = Path(__file__).resolve().parents[2]
UNRESOLVABLE = "http://geomlib-no-such-host.invalid"
BUDGET_S = 5.0  # what the user may wait for geomlib to give up, or to fall back to the cache

# ``python -c RUNNER ARGS...``: ``python -m geomlib ARGS...`` with the clock started after start-up.
RUNNER = """
import os, runpy, sys, time
import geomlib.model, huggingface_hub.hf_api  # torch and the hub client: start-up, not the wait for the hub
sys.argv = ["geomlib", *sys.argv[1:]]
start = time.monotonic()
try:
    runpy.run_module("geomlib", run_name="__main__", alter_sys=True)
finally:
    with open(os.environ["GEOMLIB_TEST_ELAPSED"], "w") as f:
        f.write(repr(time.monotonic() - start))
"""


def _refused_url() -> str:
    """A local URL whose port had a listener a moment ago and has none now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent_url():
    """A local URL whose server accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed at teardown
                return
            held.append(conn)  # kept open, unanswered, until teardown

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for conn in held:
        conn.close()


@pytest.fixture(params=["refused", "silent", "unresolvable"])
def unreachable_url(request):
    if request.param == "refused":
        return _refused_url()
    if request.param == "unresolvable":
        return UNRESOLVABLE
    return request.getfixturevalue("silent_url")


def _geomlib(tmp_path: Path, endpoint: str, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``geomlib ARGS`` against ``endpoint`` with HF_HOME in ``tmp_path``: (result, seconds geomlib took)."""
    # a user's default settings: online, telemetry on (huggingface_hub 2.x then asks the hub for
    # its "agent harness" list before the first request, one more request that gets no answer)
    unset = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_HUB_ETAG_TIMEOUT", "HF_TOKEN",
             "HF_HUB_DISABLE_TELEMETRY", "DISABLE_TELEMETRY")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    elapsed = tmp_path / "elapsed"
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf-home"), GEOMLIB_TEST_ELAPSED=str(elapsed),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])))
    (tmp_path / "hf-home").mkdir(exist_ok=True)
    # the old behaviour (30 s of retries, or forever against the silent server) must end as a failure, not a hang
    proc = subprocess.run([sys.executable, "-c", RUNNER, *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    return proc, float(elapsed.read_text())


def test_cli_fails_fast_with_one_line(tmp_path, unreachable_url):
    proc, took = _geomlib(tmp_path, unreachable_url, "info", "someorg/somemodel")
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert took <= BUDGET_S, (took, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), proc.stderr
    line = lines[0]
    assert line.startswith("geomlib: error: could not reach the Hugging Face hub"), line
    for word in ("someorg/somemodel", unreachable_url, "offline", "HF_HUB_OFFLINE=1", "--hf-cache",
                 "local model directory"):
        assert word in line, (word, line)


def test_cli_compute_fails_fast_too(tmp_path):
    proc, took = _geomlib(tmp_path, _refused_url(), "compute", "someorg/somemodel")
    assert proc.returncode == 2 and took <= BUDGET_S, (proc.returncode, took, proc.stderr)
    assert len(proc.stderr.splitlines()) == 1 and "HF_HUB_OFFLINE=1" in proc.stderr, proc.stderr


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_cached_model_opens_with_hub_unreachable(tmp_path, kind, request):
    """A model in the local HF cache opens, quietly, when the hub does not answer."""
    endpoint = _refused_url() if kind == "refused" else request.getfixturevalue("silent_url")
    src, _ = make_checkpoint(tmp_path / "src", "llama", n_layers=2)
    cache_repo(tmp_path / "hf-home" / "hub", "someorg/cached-model", _dir_files(src))
    proc, took = _geomlib(tmp_path, endpoint, "info", "--json", "someorg/cached-model")
    assert proc.returncode == 0, proc.stderr
    assert took <= BUDGET_S, took
    assert proc.stderr == ""
    facts = json.loads(proc.stdout)
    assert facts["source"] == "someorg/cached-model" and facts["n_layers"] == 2


# In-process: huggingface_hub is already imported, so its endpoint and offline
# flag are patched where it reads them at call time.


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Offline mode off, an empty HF cache, and a way to point the hub client at an endpoint."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_ETAG_TIMEOUT", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    return lambda url: monkeypatch.setattr(constants, "ENDPOINT", url)


def test_hf_hub_etag_timeout_bounds_the_wait(online, silent_url, monkeypatch):
    """HF_HUB_ETAG_TIMEOUT sets the wait; geomlib leaves the environment and the client's logging as they were."""
    online(silent_url)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "0.5")
    env, level = dict(os.environ), logging.getLogger("huggingface_hub").level
    start = time.monotonic()
    with pytest.raises(HubError) as ei:
        open_hub("someorg/somemodel")
    took = time.monotonic() - start
    assert took < DEFAULT_HUB_TIMEOUT - 1, took  # the variable, not the default, set the wait
    msg = str(ei.value)
    assert "no answer within 0.5 s" in msg and "HF_HUB_ETAG_TIMEOUT" in msg and "\n" not in msg
    assert dict(os.environ) == env and logging.getLogger("huggingface_hub").level == level


def test_hanging_name_lookup_is_cut_off(online, monkeypatch):
    """The HTTP client's timeouts do not cover name resolution; geomlib's deadline does."""
    online("http://geomlib-hanging-lookup.test")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "0.5")
    release = threading.Event()
    real = socket.getaddrinfo

    def hanging(host, *args, **kwargs):
        if "geomlib-hanging-lookup" in str(host):
            release.wait(60)  # a resolver that drops packets
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    start = time.monotonic()
    try:
        with pytest.raises(HubError, match="no answer within 0.5 s"):
            open_hub("someorg/somemodel")
    finally:
        release.set()
    assert time.monotonic() - start < 0.5 + 1


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan"])
def test_bad_hf_hub_etag_timeout_is_one_sentence(online, monkeypatch, value):
    online(_refused_url())
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", value)
    with pytest.raises(GeomlibError, match="HF_HUB_ETAG_TIMEOUT") as ei:
        open_hub("someorg/somemodel")
    assert repr(value) in str(ei.value) and "\n" not in str(ei.value)


def test_cached_fallback_downloads_nothing_more(online, tmp_path):
    """Resolved from the cache because the hub is down, a file missing there is an error at once, not a retry loop."""
    online(_refused_url())
    src, _ = make_checkpoint(tmp_path / "src", "llama", n_layers=2)
    config = (src / "config.json").read_bytes()
    cache_repo(tmp_path / "cache", "someorg/cached-model", {"config.json": config})
    repo = open_hub("someorg/cached-model")
    assert repo.files == ["config.json"] and repo.unreachable and "Connection refused" in repo.unreachable
    assert repo.fetch("config.json").read_bytes() == config
    start = time.monotonic()
    with pytest.raises(HubError) as ei:
        repo.fetch("model.safetensors")
    assert time.monotonic() - start < 1
    msg = str(ei.value)
    assert "model.safetensors" in msg and "could not be reached" in msg and "HF_HUB_OFFLINE=1" in msg
