"""What the dashboard shows: the cached models it can find, and one model's Dataset.

Torch-free: the dashboard (and Binder) browse cached results without the
compute extra.  Computing a new model is the only path that imports torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from ..analyses import registry
from ..errors import GeomlibError
from ..store import cache
from ..store.api import cached
from ..store.sweep import SCHEMA_VERSION as SWEEP_SCHEMA


def cache_dirs() -> list[Path]:
    """Cache roots to browse: ``$GEOMLIB_CACHE``, ``./cache``, ``../cache`` and the repository's ``cache/``.

    Voila runs a notebook in its own directory, so the repository cache is
    also looked up next to the notebook and next to the package.
    """
    cands = []
    if os.environ.get("GEOMLIB_CACHE"):
        cands.append(Path(os.environ["GEOMLIB_CACHE"]).expanduser())
    cands += [Path("cache"), Path("..") / "cache", Path(__file__).resolve().parents[2] / "cache"]
    out, seen = [], set()
    for c in cands:
        try:
            key = c.resolve()
        except OSError:
            continue
        if c.is_dir() and key not in seen:
            seen.add(key)
            out.append(c)
    return out


@dataclass(frozen=True)
class CatalogEntry:
    """A model with at least one cached analysis."""

    source: str
    label: str
    analyses: tuple[str, ...]
    damaged: tuple[str, ...] = ()  # analyses whose only cache entries failed their checksum or parse


def scan_roots(roots: list[Path] | None = None) -> tuple[list[cache.Entry], list[cache.Damaged]]:
    """The entries and damaged files of every cache root (default: :func:`cache_dirs`)."""
    good, bad = [], []
    for root in cache_dirs() if roots is None else roots:
        try:
            g, d = cache.scan(root)
        except GeomlibError:  # a root that is not a directory has nothing to show; the others still do
            continue
        good += g
        bad += d
    return good, bad


def catalog(roots: list[Path] | None = None) -> list[CatalogEntry]:
    """Every cached model, labelled with architecture, depth, quantization and the analyses it has.

    Only entries the analysis registry still reads count (an old schema
    version is as good as absent); the label's attributes are those of the
    newest entry of the model's first analysis.
    """
    good, bad = scan_roots(roots)
    found = [e for e in good if registry.is_current(e.analysis, e.schema_version)]
    out = []
    for source in sorted({e.source for e in found} | {d.source for d in bad if d.source}):
        newest = {a: cache.newest(found, source, a) for a in registry.names()}
        analyses = tuple(a for a, e in newest.items() if e is not None)
        broken = tuple(sorted({d.analysis for d in bad if d.source == source} - set(analyses)))
        mark = f" — damaged: {', '.join(broken)} (geomlib cache verify)" if broken else ""
        if not analyses:  # listed, so that the researcher learns why their model is not shown
            out.append(CatalogEntry(source, f"{source}{mark}", analyses, broken))
            continue
        a = newest[analyses[0]].attrs
        q = str(a.get("quantization", "none"))
        label = (f"{source} — {a.get('arch', '?')}, {a.get('n_layers', '?')} layers"
                 f"{', ' + q + ' quantized' if q != 'none' else ''} [{'+'.join(analyses)}]{mark}")
        out.append(CatalogEntry(source, label, analyses, broken))
    return out


def open_model_data(source: str, roots: list[Path] | None = None) -> xr.Dataset:
    """The merged cached Dataset of ``source`` with automatic phases."""
    return cached(source, cache_dir=roots if roots is not None else cache_dirs())


def families_with_data(ds: xr.Dataset) -> list[str]:
    """Families that have a finite all-pairs cosine (the family dropdown's choices)."""
    if "cos" not in ds:
        return []
    c = ds["cos"]
    ok = np.isfinite(c).any([d for d in c.dims if d != "family"])
    return [str(f) for f, good in zip(c["family"].values, ok.values) if good]


# -- compare mode and the training-dynamics view: sweeps' checkpoints and cached compares ---------------------------
#: how a sweep checkpoint is named among the compare mode's models: ``sweep:NAME @ CHECKPOINT``
CHECKPOINT_SEP = " @ "
_SWEEPS: dict[tuple, xr.Dataset] = {}


_FOUND: dict[tuple, tuple[tuple, dict[str, Path]]] = {}


def _stamp(roots: list[Path]) -> tuple:
    """What changes when a sweep is written or removed: each root's and each sweep directory's mtime."""
    out = []
    for root in roots:
        try:
            out.append((str(root), root.stat().st_mtime_ns,
                        tuple((d.name, d.stat().st_mtime_ns) for d in sorted(Path(root).glob("sweep-*")))))
        except OSError:
            out.append((str(root), None, ()))
    return tuple(out)


def sweep_entries(roots: list[Path] | None = None) -> dict[str, Path]:
    """The newest cached sweep file of each sweep name (``geomlib sweep``), by name.

    Remembered until a root or sweep directory changes: scanning verifies every entry's checksum,
    which took ~150 ms per call, and the training view asks on every redraw.
    """
    roots = [Path(r) for r in (cache_dirs() if roots is None else roots)]
    key, stamp = tuple(str(r) for r in roots), _stamp(roots)
    if key in _FOUND and _FOUND[key][0] == stamp:
        return dict(_FOUND[key][1])
    found = _scan_sweeps(roots)
    _FOUND[key] = (stamp, found)
    return dict(found)


def _scan_sweeps(roots: list[Path]) -> dict[str, Path]:
    out: dict[str, cache.Entry] = {}
    for e in scan_roots(roots)[0]:
        if e.analysis == "sweep" and int(e.schema_version) == SWEEP_SCHEMA:
            name = e.source.removeprefix("sweep:")
            if name not in out or str(e.attrs.get("created", "")) > str(out[name].attrs.get("created", "")):
                out[name] = e
    return {k: v.path for k, v in sorted(out.items())}


def open_sweep(name: str, roots: list[Path] | None = None) -> xr.Dataset:
    """The cached sweep ``name`` (kept in memory: a sweep is read once per file version)."""
    paths = sweep_entries(roots)
    if name not in paths:
        raise GeomlibError(f"no sweep named {name!r} is cached; the cached ones are "
                           f"{', '.join(paths) or 'none'} (make one with geomlib sweep)")
    path = paths[name]
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _SWEEPS:
        _SWEEPS.clear()  # one sweep at a time: they hold every checkpoint's analyses
        _SWEEPS[key] = cache.read(path)
    return _SWEEPS[key]


def checkpoint_choices(roots: list[Path] | None = None) -> list[tuple[str, str]]:
    """(label, key) of every checkpoint of every cached sweep, for the compare mode's model pickers."""
    out = []
    for name in sweep_entries(roots):
        ds = open_sweep(name, roots)
        for c in ds["checkpoint"].values:
            key = f"sweep:{name}{CHECKPOINT_SEP}{c}"
            out.append((f"{key} — {ds.attrs.get('arch', '?')}, {ds.sizes['layer']} layers (sweep checkpoint)", key))
    return out


def open_any(key: str, roots: list[Path] | None = None) -> xr.Dataset:
    """A cached model's Dataset, or one checkpoint of a cached sweep (``sweep:NAME @ CHECKPOINT``)."""
    if key.startswith("sweep:") and CHECKPOINT_SEP in key:
        name, _, ckpt = key.removeprefix("sweep:").partition(CHECKPOINT_SEP)
        ds = open_sweep(name, roots)
        if ckpt not in [str(c) for c in ds["checkpoint"].values]:
            raise GeomlibError(f"sweep {name!r} has no checkpoint {ckpt!r}; it has "
                               f"{', '.join(str(c) for c in ds['checkpoint'].values)}")
        one = ds.sel(checkpoint=ckpt).drop_vars([v for v in ds.data_vars if v.startswith(("prev_", "moved_"))])
        one.attrs = {**ds.attrs, "source": key}
        return one
    return open_model_data(key, roots)


def cached_compare(a: str, b: str, roots: list[Path] | None = None) -> xr.Dataset | None:
    """The newest cached :func:`geomlib.compare` of model ``a`` with model ``b`` (A's layers as rows), or None."""
    hits = [e for e in scan_roots(roots)[0]
            if e.analysis == "compare" and e.source == a and e.attrs.get("source_b") == b]
    if not hits:
        return None
    return cache.read(max(hits, key=lambda e: str(e.attrs.get("created", ""))).path)
