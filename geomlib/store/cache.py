"""The on-disk cache: one directory per model, one netCDF file per analysis and parameter set.

Layout::

    <cache>/<source-slug>-<identity[:12]>/<analysis>-<key>.nc

``key`` hashes the schema version, the analysis, the checkpoint identity and
the parameters, so changing any of them recomputes instead of serving stale
numbers.  Files are written to a temporary name in the same directory and
renamed into place: a crash never leaves a half file that loads.

This module needs only xarray and netCDF4 (no torch), so cached results can
be listed and opened where the compute extra is not installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import xarray as xr

from ..errors import CorruptCheckpointError

ENGINE = "netcdf4"
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 24 * 3600


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory: the argument, else ``$GEOMLIB_CACHE``, else ``./cache``."""
    if cache_dir is not None and str(cache_dir) != "":
        return Path(cache_dir).expanduser()
    env = os.environ.get("GEOMLIB_CACHE")
    return Path(env).expanduser() if env else Path("cache")


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


def write_atomic(ds: xr.Dataset, path: Path) -> Path:
    """Write ``ds`` to ``path`` so that readers see either nothing or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in path.parent.glob(_TMP_PREFIX + "*"):
        # leftovers of crashed writers (a live writer's file is younger than a day)
        try:
            if now - old.stat().st_mtime > _STALE_TMP_SECONDS:
                old.unlink()
        except OSError:
            pass
    tmp = path.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}.nc"
    try:
        # zlib keeps committed demo datasets small; floats stay exact (lossless)
        encoding = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars if ds[v].dtype.kind in "fiu"}
        ds.to_netcdf(tmp, engine=ENGINE, encoding=encoding)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read(path: Path) -> xr.Dataset:
    """Load a cached dataset fully into memory (no file handle stays open)."""
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            return ds.load()
    except (OSError, ValueError) as exc:
        raise CorruptCheckpointError(
            f"cached dataset {path} cannot be read ({exc.__class__.__name__}); delete it and compute again"
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
        q = a.get("quantization", "none")
        return (f"{self.source} ({a.get('arch', '?')}, {a.get('n_layers', '?')} layers"
                f"{', ' + q if q not in ('none', None) else ''})")


def entries(cache_dir: str | os.PathLike | None = None) -> list[Entry]:
    """Every readable cached analysis under the cache root, sorted by source then analysis."""
    root = cache_root(cache_dir)
    out = []
    if not root.is_dir():
        return out
    for path in sorted(root.glob("*/*.nc")):
        if path.name.startswith(_TMP_PREFIX):
            continue
        try:
            with xr.open_dataset(path, engine=ENGINE) as ds:
                attrs = dict(ds.attrs)
        except (OSError, ValueError):
            continue  # unreadable files are not entries; `read` explains when asked directly
        if "analysis" not in attrs or "cache_key" not in attrs:
            continue
        out.append(Entry(path, str(attrs.get("source", "")), str(attrs.get("identity", "")),
                         str(attrs["analysis"]), str(attrs["cache_key"]), int(attrs.get("schema_version", -1)), attrs))
    return sorted(out, key=lambda e: (e.source, e.analysis, e.path.name))


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
