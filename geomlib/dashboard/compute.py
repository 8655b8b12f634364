"""The compute box's job: ``geomlib compute`` in a subprocess, watched by a thread, cancellable.

A subprocess rather than a call in the kernel: a bad source is the command's
one ``geomlib: error: …`` sentence (never a traceback in the page), the kernel
keeps answering clicks (the Cancel button) while the model computes, and
cancelling is interrupting that process: the cache writes are atomic, so an
interrupted compute leaves nothing half-written.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

PREFIX = "geomlib: error: "


def _last_line(text: str) -> str:
    """The last non-empty line of a progress stream (tqdm redraws with carriage returns)."""
    parts = [p.strip() for p in text.replace("\r", "\n").split("\n")]
    return next((p for p in reversed(parts) if p), "")


class ComputeJob:
    """One ``geomlib compute SOURCE --cache ROOT`` run.

    ``on_progress(line)`` is called with the latest progress line; ``on_done(ok, message)`` once, with
    ``ok`` True when the model was cached, else the one-line reason ("cancelled", or the command's error).
    """

    def __init__(self, source: str, cache_root: Path | None, on_progress: Callable[[str], None],
                 on_done: Callable[[bool, str], None]) -> None:
        self.source = source
        cmd = [sys.executable, "-m", "geomlib.cli", "compute", source]
        if cache_root is not None:
            cmd += ["--cache", str(cache_root)]
        self.cancelled = False
        self._on_progress, self._on_done = on_progress, on_done
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self._err: list[str] = []
        self._thread = threading.Thread(target=self._watch, name=f"geomlib-compute {source}", daemon=True)
        self._thread.start()

    def _pump_stdout(self) -> None:
        for raw in iter(self._proc.stdout.readline, b""):
            line = raw.decode(errors="replace").strip()
            if line:
                self._on_progress(line)

    def _watch(self) -> None:
        out = threading.Thread(target=self._pump_stdout, daemon=True)
        out.start()
        buf = ""
        while True:
            chunk = self._proc.stderr.read1(4096) if hasattr(self._proc.stderr, "read1") else self._proc.stderr.read(4096)
            if not chunk:
                break
            buf += chunk.decode(errors="replace")
            line = _last_line(buf[-2000:])
            if line and not line.startswith("geomlib:"):
                self._on_progress(line)
        rc = self._proc.wait()
        out.join(5)
        errors = [ln[len(PREFIX):] for ln in buf.replace("\r", "\n").splitlines() if ln.startswith(PREFIX)]
        if self.cancelled:
            self._on_done(False, "cancelled")
        elif rc == 0:
            self._on_done(True, "")
        else:
            reason = errors[-1] if errors else (_last_line(buf) or f"geomlib compute exited with status {rc}")
            self._on_done(False, reason.splitlines()[0])

    def cancel(self, grace: float = 20.0) -> None:
        """Interrupt the compute (it leaves nothing half-written), killing it if it does not stop in ``grace`` s."""
        if self._proc.poll() is not None:
            return
        self.cancelled = True
        self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(grace)
        except subprocess.TimeoutExpired:
            self._proc.kill()

    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
