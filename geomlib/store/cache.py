"""The on-disk cache: one directory per model, one netCDF file per analysis and parameter set.

Layout::

    <cache>/<source-slug>-<identity[:12]>/<analysis>-<key>.nc
    <cache>/<source-slug>-<identity[:12]>/<analysis>-<key>.nc.json   (its checksum record)

``key`` hashes the schema version, the analysis, the checkpoint identity and
the parameters, so changing any of them recomputes instead of serving stale
numbers.  Files are written to a temporary name in the same directory and
renamed into place: a crash never leaves a half file that loads.  Every entry
carries a sha256 record checked before netCDF parses a byte (the netCDF C
library can crash the process on corrupt metadata), so a damaged file is
reported by name and the others keep working (:func:`scan`, ``geomlib cache
verify|clean``).

This module needs only xarray and netCDF4 (no torch), so cached results can
be listed and opened where the compute extra is not installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import xarray as xr

from ..errors import CacheError, CorruptCacheEntryError
from ..validate import unwritable

ENGINE = "netcdf4"
_TMP_PREFIX = ".tmp-"
#: a temporary file whose writer cannot be checked (another host) is swept after this long
_STALE_TMP_SECONDS = 24 * 3600
#: each entry ``<analysis>-<key>.nc`` has a checksum record ``<analysis>-<key>.nc.json`` beside it
RECORD_SUFFIX = ".json"
_HOST = re.sub(r"[^A-Za-z0-9]+", "", socket.gethostname())[:32] or "host"
#: free space the cache must keep beyond the estimated entries (netCDF writes a little more than its data)
_SPACE_MARGIN = 4 * 2**20
_FIX = "recompute it (geomlib compute SOURCE --force) or remove it (geomlib cache clean)"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory: the argument, else ``$GEOMLIB_CACHE``, else ``./cache``."""
    if cache_dir is not None and str(cache_dir) != "":
        return Path(cache_dir).expanduser()
    env = os.environ.get("GEOMLIB_CACHE")
    return Path(env).expanduser() if env else Path("cache")


def _where(root: Path) -> str:
    return f"the cache directory {root}" + (" ($GEOMLIB_CACHE)" if os.environ.get("GEOMLIB_CACHE") and
                                            Path(os.environ["GEOMLIB_CACHE"]).expanduser() == root else "")


def check_root(root: Path) -> None:
    """Refuse a cache root that exists but is not a directory (cheap; nothing is created)."""
    if root.exists() and not root.is_dir():
        raise CacheError(f"{_where(root)} is a file, not a directory; pass --cache DIR (cache_dir=) or set "
                         "GEOMLIB_CACHE to a directory")


def check_writable(root: Path, need_bytes: int = 0) -> None:
    """Fail now, in one sentence, if entries of about ``need_bytes`` cannot be written under ``root``.

    Creates ``root`` if needed and writes a small probe file (:func:`geomlib.validate.unwritable`), so a
    read-only mount, an immutable or foreign directory and a full disk are found before any computation,
    not after it.
    """
    check_root(root)
    fix = "pass --cache DIR (cache_dir=) or set GEOMLIB_CACHE to a writable directory"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"{_where(root)} cannot be created ({_reason(exc)}); {fix}") from None
    why = unwritable(root, prefix=_tmp_name("-"))  # a named fallback probe is swept like a writer's leftover
    if why is not None:
        raise CacheError(f"{_where(root)} is not writable ({why}); {fix}")
    free = shutil.disk_usage(root).free
    if free < need_bytes + _SPACE_MARGIN:
        raise CacheError(f"{_where(root)} has {free / 2**20:.1f} MB free, and the results need about "
                         f"{(need_bytes + _SPACE_MARGIN) / 2**20:.1f} MB; free some space or {fix}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__


def slug(source: str) -> str:
    """A filesystem-safe short name for a source (``demo:smollm2-135m`` -> ``demo-smollm2-135m``)."""
    name = Path(source).name if ("/" in source or os.sep in source) and Path(source).exists() else source
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return (s or "model")[:64]


def cache_key(analysis: str, identity: str, params: dict, schema_version: int) -> str:
    blob = json.dumps({"analysis": analysis, "identity": identity, "params": params, "schema": schema_version},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def model_dir(root: Path, source: str, identity: str) -> Path:
    return root / f"{slug(source)}-{identity[:12]}"


def entry_path(root: Path, source: str, identity: str, analysis: str, key: str) -> Path:
    return model_dir(root, source, identity) / f"{analysis}-{key}.nc"


def record_path(path: Path) -> Path:
    """The checksum record of the entry ``path`` (copy both to move an entry)."""
    return path.with_name(path.name + RECORD_SUFFIX)


# ------------------------------------------------------------------------------------------ temporaries
def _tmp_name(suffix: str) -> str:
    # host and pid in the name: a leftover whose writer is known dead is swept at once
    return f"{_TMP_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex}{suffix}"


def _writer_alive(name: str) -> bool | None:
    """Whether the process that made temporary file ``name`` still runs; None when it cannot be told."""
    m = re.match(re.escape(_TMP_PREFIX) + r"([A-Za-z0-9]+)-(\d+)-[0-9a-f]{32}", name)
    if m is None or m.group(1) != _HOST:
        return None  # an older name, or a writer on another host sharing this filesystem
    try:
        os.kill(int(m.group(2)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def sweep_temporaries(directory: Path, now: float | None = None) -> list[Path]:
    """Remove the temporary files of dead writers in ``directory`` (and any older than a day); return them."""
    now = time.time() if now is None else now
    gone = []
    for old in directory.glob(_TMP_PREFIX + "*"):
        try:
            alive = _writer_alive(old.name)
            if alive is False or (alive is None and now - old.stat().st_mtime > _STALE_TMP_SECONDS):
                old.unlink()
                gone.append(old)
        except OSError:
            pass
    return gone


# ------------------------------------------------------------------------------------------ checksums
def _digest(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _problem(path: Path) -> str | None:
    """Why the bytes of entry ``path`` cannot be trusted, or None when they match their checksum record.

    Checked before netCDF parses anything: the netCDF/HDF5 C library can crash the process on corrupt
    metadata, so a damaged file must never reach it.
    """
    try:
        record = json.loads(record_path(path).read_text())
    except FileNotFoundError:
        return "it has no checksum record (written by an older geomlib, or the record was lost)"
    except (OSError, ValueError):
        return "its checksum record is unreadable"
    if not (isinstance(record, dict) and isinstance(record.get("sha256"), str)
            and isinstance(record.get("size"), int)):
        return "its checksum record is malformed"
    try:
        size = path.stat().st_size
        if size != record["size"]:
            return f"it has {size} bytes where {record['size']} were written (truncated or extended)"
        digest, _ = _digest(path)
    except OSError as exc:
        return f"it cannot be read ({_reason(exc)})"
    if digest != record["sha256"]:
        return "its bytes changed after it was written (checksum mismatch)"
    return None


def verify(path: Path) -> str | None:
    """Why entry ``path`` is damaged, or None; a mismatch is re-checked once (a writer may be replacing it)."""
    problem = _problem(path)
    if problem is not None and "checksum" in problem:
        time.sleep(0.05)  # the record is renamed into place just before the file: a reader may fall in between
        problem = _problem(path)
    return problem


def write_atomic(ds: xr.Dataset, path: Path) -> Path:
    """Write ``ds`` to ``path`` so that readers see either nothing or the whole file, with its checksum record.

    Raises :class:`~geomlib.errors.CacheError` (one sentence) when the directory or the disk refuses the
    write; no temporary file is left behind.
    """
    fix = "free some space, or pass --cache DIR (cache_dir=) on a writable filesystem"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"the cache entry directory {path.parent} cannot be created ({_reason(exc)}); {fix}") from None
    sweep_temporaries(path.parent)
    tmp, rec_tmp = path.parent / _tmp_name(".nc"), path.parent / _tmp_name(RECORD_SUFFIX)
    rec = record_path(path)
    placed = False
    try:
        # zlib keeps committed demo datasets small; floats stay exact (lossless)
        encoding = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars if ds[v].dtype.kind in "fiu"}
        ds.to_netcdf(tmp, engine=ENGINE, encoding=encoding)
        digest, size = _digest(tmp)
        record = {"sha256": digest, "size": size, "source": str(ds.attrs.get("source", "")),
                  "analysis": str(ds.attrs.get("analysis", "")), "created": str(ds.attrs.get("created", ""))}
        with open(rec_tmp, "w") as fh:
            json.dump(record, fh)
        os.replace(rec_tmp, rec)
        placed = True
        os.replace(tmp, path)
        placed = False
    except (OSError, RuntimeError) as exc:
        why = _reason(exc)
        if not isinstance(exc, OSError):  # netCDF reports a full disk or a size limit as "NetCDF: HDF error"
            try:
                why += f", with {shutil.disk_usage(path.parent).free / 2**20:.1f} MB free there"
            except OSError:
                pass
        raise CacheError(f"the cache entry {path} could not be written ({why}); {fix}") from None
    finally:
        for t in (tmp, rec_tmp) + ((rec,) if placed else ()):  # a record without its new file would lie
            try:
                t.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                pass
    return path


def read(path: Path) -> xr.Dataset:
    """Load a cached dataset fully into memory (no file handle stays open), after checking its checksum.

    Raises :class:`~geomlib.errors.CorruptCacheEntryError` naming the file when it is damaged.
    """
    problem = verify(path)
    if problem is not None:
        raise CorruptCacheEntryError(f"the cached dataset {path} is damaged: {problem}; {_FIX}")
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            return ds.load()
    except Exception as exc:  # noqa: BLE001 - intact bytes that still do not parse: say which file, never crash
        raise CorruptCacheEntryError(
            f"the cached dataset {path} cannot be parsed ({exc.__class__.__name__}); {_FIX}"
        ) from None


@dataclass(frozen=True)
class Entry:
    """One cached analysis file, described from its attributes alone."""

    path: Path
    source: str
    identity: str
    analysis: str
    key: str
    schema_version: int
    attrs: dict

    @property
    def label(self) -> str:
        a = self.attrs
        if self.analysis == "compare":  # geomlib.compare's entries live in A's directory and name B
            return f"{self.source} compare with {a.get('source_b', '?')}"
        q = a.get("quantization", "none")
        return (f"{self.source} ({a.get('arch', '?')}, {a.get('n_layers', '?')} layers"
                f"{', ' + q if q not in ('none', None) else ''})")


@dataclass(frozen=True)
class Damaged:
    """A cache file that cannot be trusted or parsed: reported by name, never opened again.

    ``source`` and ``analysis`` come from its checksum record when that is readable (else the
    analysis from the file name and no source).
    """

    path: Path
    reason: str
    source: str | None
    analysis: str

    @property
    def message(self) -> str:
        return f"{self.path} is damaged: {self.reason}"


def _damaged(path: Path, reason: str) -> Damaged:
    try:
        record = json.loads(record_path(path).read_text())
        source = str(record["source"]) if isinstance(record, dict) and record.get("source") else None
    except (OSError, ValueError):
        source = None
    return Damaged(path, reason, source, path.name.rsplit("-", 1)[0])


def _entry(path: Path) -> Entry | Damaged | None:
    """The entry at ``path``, a :class:`Damaged` record of why not, or None for a netCDF file that is not ours."""
    problem = verify(path)
    if problem is not None:
        return _damaged(path, problem)
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            attrs = dict(ds.attrs)
    except Exception as exc:  # noqa: BLE001 - intact bytes that do not parse
        return _damaged(path, f"it cannot be parsed ({exc.__class__.__name__})")
    if "analysis" not in attrs or "cache_key" not in attrs:
        return None
    try:
        version = int(attrs.get("schema_version", -1))
        json.loads(str(attrs.get("params", "{}")))
    except (TypeError, ValueError):
        return _damaged(path, f"its schema_version {attrs.get('schema_version')!r} or params attribute is malformed")
    return Entry(path, str(attrs.get("source", "")), str(attrs.get("identity", "")), str(attrs["analysis"]),
                 str(attrs["cache_key"]), version, attrs)


def scan(cache_dir: str | os.PathLike | None = None) -> tuple[list[Entry], list[Damaged]]:
    """Every cached analysis under the cache root and every damaged file, each list sorted.

    Each file's checksum is verified before netCDF parses it (a few ms per MB).
    """
    root = cache_root(cache_dir)
    check_root(root)
    good: list[Entry] = []
    bad: list[Damaged] = []
    if not root.is_dir():
        return good, bad
    for path in sorted(root.glob("*/*.nc")):
        if path.name.startswith(_TMP_PREFIX):
            continue
        e = _entry(path)
        if isinstance(e, Entry):
            good.append(e)
        elif isinstance(e, Damaged):
            bad.append(e)
    return sorted(good, key=lambda e: (e.source, e.analysis, e.path.name)), bad


def entries(cache_dir: str | os.PathLike | None = None) -> list[Entry]:
    """Every intact cached analysis under the cache root, sorted by source then analysis (see :func:`scan`)."""
    return scan(cache_dir)[0]


def orphans(cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Checksum records whose entry is gone, and temporary files of dead (or day-old) writers."""
    root = cache_root(cache_dir)
    if not root.is_dir():
        return []
    out = [r for r in sorted(root.glob(f"*/*.nc{RECORD_SUFFIX}"))
           if not r.name.startswith(_TMP_PREFIX) and not r.with_name(r.name[: -len(RECORD_SUFFIX)]).exists()]
    now = time.time()
    # model directories hold writers' temporaries, the root the writability probes of check_writable
    for t in sorted([*root.glob(f"{_TMP_PREFIX}*"), *root.glob(f"*/{_TMP_PREFIX}*")]):
        alive = _writer_alive(t.name)
        try:
            if alive is False or (alive is None and now - t.stat().st_mtime > _STALE_TMP_SECONDS):
                out.append(t)
        except OSError:
            pass
    return out


def remove(path: Path, root: Path | None = None) -> None:
    """Delete an entry (or an orphan) and its checksum record; an emptied model directory goes too (never
    ``root``, the cache directory itself)."""
    for p in (path, record_path(path)) if path.suffix == ".nc" and not path.name.startswith(_TMP_PREFIX) else (path,):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    if root is not None and path.parent.resolve() == root.resolve():
        return
    try:
        path.parent.rmdir()  # only succeeds when empty
    except OSError:
        pass


def newest(entries: list[Entry], source: str, analysis: str, params: dict | None = None) -> Entry | None:
    """The most recently created entry of ``analysis`` for ``source`` at the registry's schema version.

    ``params``: only entries computed with these values (the parameters not named may have any value).
    """
    from ..analyses import registry

    def matches(e: Entry) -> bool:
        stored = json.loads(str(e.attrs.get("params", "{}")))
        return all(k in stored and stored[k] == v for k, v in (params or {}).items())

    hits = [e for e in entries if e.source == source and e.analysis == analysis
            and registry.is_current(analysis, e.schema_version) and matches(e)]
    return max(hits, key=lambda e: str(e.attrs.get("created", "")), default=None)
