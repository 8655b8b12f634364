"""sha256 of whole tensor payloads, memoised per checkpoint file.

A checkpoint's identity (:attr:`geomlib.model.Checkpoint.identity`) keys the
results cache, so it must change when any stored byte changes: an in-place
edit of a few rows (ablation, the usual interpretability workflow) must not
hit the old entry.  Every payload byte is therefore hashed, which costs one
read of the checkpoint (sha256 runs at about 1.7 GB/s per core with SHA
extensions).  A small JSON memo per file, keyed by the file's resolved path and
its stat fingerprint, makes every later identity of an unchanged file free.

Memos live in ``$GEOMLIB_DIGEST_CACHE``, else
``${XDG_CACHE_HOME:-~/.cache}/geomlib/digests``.  A memo that cannot be read,
parsed or written is ignored: the payload is hashed again and the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Union

from ..errors import CorruptCheckpointError

#: bump when what a digest covers changes, so that older memos stop matching
VERSION = 1
#: bytes hashed per read: small enough that the copy and the hash find them in the CPU cache (on a 1 GB
#: file 1 MiB cost about the CPU time of hashlib.file_digest, 4 MiB ~10 % more, 32 MiB twice as much)
CHUNK = 1 << 20

#: payload bytes hashed by this process so far (memo hits add nothing): shows that a memo was used
hashed_bytes = 0
_count_lock = threading.Lock()  # files may be hashed on several threads

Reader = Callable[[str, int, int], Union[bytes, bytearray, memoryview]]


def tensor_digests(path: str | os.PathLike | None, sizes: Mapping[str, int], read: Reader) -> dict[str, bytes]:
    """sha256 of each tensor's stored payload, taken from the memo of ``path`` while the file is unchanged.

    Parameters
    ----------
    path : str, path or None
        The local file that holds these tensors; None hashes them without a memo.
    sizes : mapping of str to int
        Tensor name -> payload bytes (``TensorInfo.nbytes``), for tensors of ``path`` only.
    read : callable
        ``read(name, start, length) -> bytes-like``: ``length`` payload bytes of
        tensor ``name`` from byte ``start``.

    Returns
    -------
    dict of str to bytes
        Tensor name -> 32-byte sha256 of its whole payload, for every name in ``sizes``.

    Notes
    -----
    The memo matches only the same resolved path with the same ``st_size``,
    ``st_mtime_ns``, ``st_ctime_ns``, ``st_ino`` and ``st_dev``: the ctime
    changes on every write even when a tool restores the mtime, and a copy or
    a replaced file has a new inode.  A file changed within a few clock ticks
    before hashing is not memoised (a second write in the same tick would keep
    the fingerprint; git calls this "racy"), so it is hashed again next time.
    """
    memo = _memo_file(path) if path is not None else None
    if memo is None:
        return {name: _hash(name, size, read) for name, size in sizes.items()}
    resolved, memo_path = memo
    started = time.time_ns()
    try:
        before = _fingerprint(resolved)
    except OSError:  # the store read it a moment ago; if stat fails now, just do without the memo
        return {name: _hash(name, size, read) for name, size in sizes.items()}
    known = _load(memo_path, resolved, before)  # name -> (nbytes, digest); empty unless current
    out: dict[str, bytes] = {}
    for name, size in sizes.items():
        got = known.get(name)
        out[name] = got[1] if got is not None and got[0] == size else _hash(name, size, read)
    if any(known.get(name) != (size, out[name]) for name, size in sizes.items()):
        known.update({name: (size, out[name]) for name, size in sizes.items()})
        _save(memo_path, resolved, before, started, known)
    return out


def _hash(name: str, size: int, read: Reader) -> bytes:
    h = hashlib.sha256()
    for start in range(0, size, CHUNK):
        length = min(CHUNK, size - start)
        buf = read(name, start, length)
        if len(buf) != length:  # a short read would silently identify a prefix of the tensor
            raise CorruptCheckpointError(
                f"tensor {name!r} yielded {len(buf)} bytes at offset {start} where {length} were expected; "
                "the file is truncated or changed while it was read, re-download it"
            )
        h.update(buf)  # hashlib releases the GIL on large buffers, so files hash in parallel
    global hashed_bytes
    with _count_lock:
        hashed_bytes += size
    return h.digest()


def _memo_dir() -> Path:
    env = os.environ.get("GEOMLIB_DIGEST_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "geomlib" / "digests"


def _memo_file(path: str | os.PathLike) -> tuple[Path, Path] | None:
    """``(resolved checkpoint file, its memo file)``, or None when either cannot be named."""
    try:
        resolved = Path(path).resolve()
        # one memo per file, named by its path (hub snapshots resolve to the blob they link to)
        key = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:32]
        return resolved, _memo_dir() / f"{key}.json"
    except (OSError, RuntimeError):  # no home directory, a symlink loop
        return None


def _fingerprint(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _load(memo: Path, resolved: Path, fingerprint: list[int]) -> dict[str, tuple[int, bytes]]:
    """The memo's digests if it describes this very file as it is now, else nothing."""
    try:
        data = json.loads(memo.read_text(encoding="utf-8"))
        if data["version"] != VERSION or data["path"] != str(resolved) or data["stat"] != fingerprint:
            return {}
        return {name: (nbytes, bytes.fromhex(hexdigest)) for name, (nbytes, hexdigest) in data["tensors"].items()
                if type(nbytes) is int and len(hexdigest) == 64}
    except Exception:  # missing, unreadable or corrupt in any way: hash again, never fail the run
        return {}


def _save(memo: Path, resolved: Path, fingerprint: list[int], started: int, digests: dict[str, tuple[int, bytes]]) -> None:
    """Write the memo atomically (temp file + ``os.replace``) when the file is safe to memoise; errors are ignored."""
    # Timestamps advance in clock ticks (a jiffy; a whole second on FAT and some FUSE mounts), and a
    # second write within the tick of the last change would keep the fingerprint: a file whose ctime
    # (set by every write, and by a restoring utime) is that close to the start of hashing is not
    # memoised, nor is one that changed while it was hashed.
    ctime = fingerprint[2]
    settle = 2_000_000_000 if ctime % 1_000_000_000 == 0 else 50_000_000
    if started - ctime < settle:
        return
    try:
        if _fingerprint(resolved) != fingerprint:
            return
        memo.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "version": VERSION,
            "path": str(resolved),
            "stat": fingerprint,
            "tensors": {name: [nbytes, digest.hex()] for name, (nbytes, digest) in sorted(digests.items())},
        }
        fd, tmp = tempfile.mkstemp(prefix=f".{memo.stem}.", suffix=".tmp", dir=memo.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, memo)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:  # read-only or full disk, a directory in the way: the memo is an optimisation only
        pass

