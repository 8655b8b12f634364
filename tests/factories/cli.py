"""What a run of the command line returned and printed, and the project's one-error-line contract on it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass


@dataclass
class CliResult:
    """What one ``geomlib`` command returned and printed (in process, or a subprocess via :meth:`of`)."""

    code: int
    out: str
    err: str

    @classmethod
    def of(cls, proc: subprocess.CompletedProcess) -> "CliResult":
        """The result of a subprocess run with ``capture_output=True, text=True``."""
        return cls(proc.returncode, proc.stdout, proc.stderr)

    def one_error_line(self, *words: str) -> str:
        """Assert exit 2, empty stdout and exactly one ``geomlib: error: ...`` line holding ``words``."""
        assert self.code == 2, (self.code, self.out, self.err)
        assert "Traceback" not in self.err and "Traceback" not in self.out
        assert self.out == "", self.out
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("geomlib: error: "), lines[0]
        for w in words:
            assert w in lines[0], (w, lines[0])
        return lines[0]
