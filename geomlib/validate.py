"""Argument checks shared by every layer of the package (a leaf module: imports only the errors)."""

from __future__ import annotations

import numbers
import os
import tempfile

from .errors import InvalidArgumentError


def positive_int(name: str, value: object, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` if it is an integer in ``minimum..maximum`` (no upper bound by default; bools refused), else
    one-sentence error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum \
            or (maximum is not None and value > maximum):
        span = f"of at least {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise InvalidArgumentError(f"{name}={value!r} is not allowed; pass an integer {span}")
    return int(value)


def unwritable(directory: str | os.PathLike, prefix: str = ".geomlib-probe-") -> str | None:
    """Why a new file cannot be written in ``directory`` (the OS's words), or None when one can.

    It is tried, not asked: ``os.access`` says yes to root where nobody can write (a read-only mount, an
    immutable directory), and a full filesystem may take the write and refuse only at ``fsync``.  The probe
    is an unnamed temporary file where the filesystem has ``O_TMPFILE`` (else named ``prefix...`` and
    removed at once), so a killed process leaves nothing behind.
    """
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=prefix) as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__
    return None


__all__ = ["positive_int", "unwritable"]
