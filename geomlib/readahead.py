"""Start reading a local checkpoint into the page cache while Python is still importing torch.

A cold run spends about a second importing torch and xarray (CPU) and about as
long reading the first layers from disk (I/O); :func:`start` overlaps the two.
It only hints the kernel (``POSIX_FADV_WILLNEED``, from a daemon thread, so
that queuing the reads never delays the imports): nothing enters this process,
at most :func:`budget` bytes enter the page cache, and a source that is not a
local file or directory (a demo name, a hub id) is left alone.  Torch-free.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

#: never hint more than this (bytes): the streaming passes prefetch the rest layer by layer
MAX_BYTES = 1 << 30
SUFFIXES = (".safetensors", ".gguf")


def budget() -> int:
    """Bytes worth prefetching: at most :data:`MAX_BYTES` and an eighth of the available memory."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return MAX_BYTES if avail is None else min(MAX_BYTES, avail // 8)


def checkpoint_files(source: str | os.PathLike) -> list[Path]:
    """The weight files of a local checkpoint (a file, or a directory's top-level weight files)."""
    p = Path(source)
    try:
        if p.is_file():
            return [p] if p.suffix in SUFFIXES else []
        if p.is_dir():
            return sorted(f for f in p.iterdir() if f.suffix in SUFFIXES and f.is_file())
    except OSError:
        pass
    return []


def _advise(files: list[Path], limit: int) -> None:
    for f in files:
        if limit <= 0:
            return
        try:
            fd = os.open(f, os.O_RDONLY)
        except OSError:
            continue
        try:
            n = min(os.fstat(fd).st_size, limit)
            os.posix_fadvise(fd, 0, n, os.POSIX_FADV_WILLNEED)
            limit -= n
        except OSError:  # advisory: a filesystem without readahead reads on demand
            pass
        finally:
            os.close(fd)


def start(source: str | os.PathLike, limit: int | None = None) -> threading.Thread | None:
    """Hint the kernel to read the start of ``source``'s weight files in the background.

    Returns the (daemon) thread doing it, or None when there is nothing local to read.
    """
    if not hasattr(os, "posix_fadvise"):  # pragma: no cover - not on macOS / Windows
        return None
    files = checkpoint_files(source)
    if not files:
        return None
    t = threading.Thread(target=_advise, args=(files, budget() if limit is None else limit), daemon=True,
                         name="geomlib-readahead")
    t.start()
    return t
