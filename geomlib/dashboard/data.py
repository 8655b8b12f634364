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


def catalog(roots: list[Path] | None = None) -> list[CatalogEntry]:
    """Every cached model, labelled with architecture, depth, quantization and the analyses it has.

    Only entries the analysis registry still reads count (an old schema
    version is as good as absent); the label's attributes are those of the
    newest entry of the model's first analysis.
    """
    roots = cache_dirs() if roots is None else roots
    found, bad = [], []
    for root in roots:
        try:
            good, damaged = cache.scan(root)
        except GeomlibError:  # a root that is not a directory has nothing to show; the others still do
            continue
        found += [e for e in good if registry.is_current(e.analysis, e.schema_version)]
        bad += damaged
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
