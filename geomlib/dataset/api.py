"""``geomlib.compute`` and ``geomlib.load``: analyses of a model, cached as one xarray Dataset."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from typing import Iterable, Sequence

import xarray as xr

from ..errors import InvalidArgumentError
from . import cache
from .params import ANALYSES
from .phases import apply_phases, phase_labels


def _split_params(analyses: tuple[str, ...], params: dict) -> dict[str, dict]:
    """The keywords that belong to each analysis; every keyword must belong to one."""
    out, used = {}, set()
    for a in analyses:
        names = {f.name for f in dataclasses.fields(ANALYSES[a][0])}
        out[a] = {k: v for k, v in params.items() if k in names}
        used |= names
    unknown = sorted(set(params) - used)
    if unknown:
        raise InvalidArgumentError(
            f"unknown parameter(s) {', '.join(unknown)} for analyses {', '.join(analyses)}; "
            "see help(geomlib.compute) for the accepted ones"
        )
    return out


def _merge(parts: list[xr.Dataset]) -> xr.Dataset:
    merged = xr.merge(parts, combine_attrs="drop_conflicts", join="outer", compat="no_conflicts")
    merged.attrs["analyses"] = ",".join(p.attrs["analysis"] for p in parts)
    for k in ("analysis", "cache_key"):
        merged.attrs.pop(k, None)
    return merged


def compute(
    source: str | os.PathLike,
    analyses: Iterable[str] | str = ("weights",),
    cache_dir: str | os.PathLike | None = None,
    device: str | None = "auto",
    *,
    phases: Sequence[int] | None = None,
    phase_names: Sequence[str] | None = None,
    force: bool = False,
    progress: bool = True,
    hf_cache_dir: str | os.PathLike | None = None,
    **params,
) -> xr.Dataset:
    """Compute (or reuse from the cache) the analyses of a model, as one Dataset.

    Parameters
    ----------
    source : str or path
        Anything :func:`geomlib.open_model` accepts.
    analyses : iterable of str
        ``"weights"``: the weight-level geometry (:mod:`geomlib.dataset.weights`).
    cache_dir : path, optional
        Cache root (default ``$GEOMLIB_CACHE``, else ``./cache``).
    device : str
        ``"auto"`` uses CUDA when present.
    phases, phase_names : optional
        First layer of each phase after the first, and their names; default:
        the seeds' presets / fractional rule.  Labels only: never recomputes.
    force : bool
        Recompute even when a valid cache entry exists.
    **params
        Analysis parameters, e.g. ``aligned_pairs="all"``, ``null_draws=8``
        (see :class:`~geomlib.dataset.params.WeightParams`).

    Returns
    -------
    xarray.Dataset
        Dims ``family``, ``layer``, ``layer_b`` and per-analysis ones, float64
        values, provenance in ``attrs``; each analysis is cached in
        ``<cache>/<model>/<analysis>-<key>.nc``, written atomically.
    """
    from ..checkpoint import open_model

    analyses = cache.check_analyses(analyses, tuple(ANALYSES))
    per = {a: ANALYSES[a][0](**kw) for a, kw in _split_params(analyses, params).items()}
    root = cache.cache_root(cache_dir)
    parts = []
    with open_model(source, hf_cache_dir=hf_cache_dir) as ckpt:
        phase_labels(ckpt.n_layers, phases, phase_names)  # bad boundaries fail before any work
        for a in analyses:
            cls, schema, module = ANALYSES[a]
            key = cache.cache_key(a, ckpt.identity, per[a].as_dict(), schema)
            path = cache.entry_path(root, ckpt.source, ckpt.identity, a, key)
            ds = cache.read(path) if path.exists() and not force else None
            if ds is None or ds.attrs.get("cache_key") != key:
                mod = importlib.import_module(f".{module}", __package__)
                ds = mod.run(ckpt, per[a], device=device, progress=progress)
                ds.attrs["cache_key"] = key
                cache.write_atomic(ds, path)
            parts.append(ds)
    return apply_phases(_merge(parts), phases, phase_names)


def load(
    source: str | os.PathLike,
    analyses: Iterable[str] | str = ("weights",),
    cache_dir: str | os.PathLike | None = None,
    *,
    phases: Sequence[int] | None = None,
    phase_names: Sequence[str] | None = None,
    device: str | None = "auto",
    progress: bool = True,
    **params,
) -> xr.Dataset:
    """Open the cached analyses of ``source``; compute whatever is missing.

    Entries are matched by the source as it was given (and by ``params`` when
    some are passed; otherwise the newest entry wins) without opening the
    checkpoint, so viewing cached results needs neither torch nor the weights.
    :func:`compute` re-checks the checkpoint identity instead.
    """
    analyses = cache.check_analyses(analyses, tuple(ANALYSES))
    per = _split_params(analyses, params)
    label = os.fspath(source)
    entries = cache.entries(cache_dir)
    found = []
    for a in analyses:
        cls, schema, _ = ANALYSES[a]
        want = cls(**per[a]).as_dict() if per[a] else None
        hits = [e for e in entries if e.source == label and e.analysis == a and e.schema_version == schema
                and (want is None or json.loads(str(e.attrs.get("params", "{}"))) == want)]
        if not hits:
            return compute(source, analyses, cache_dir, device, phases=phases, phase_names=phase_names,
                           progress=progress, **params)
        found.append(cache.read(max(hits, key=lambda e: str(e.attrs.get("created", ""))).path))
    return apply_phases(_merge(found), phases, phase_names)
