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
from .phases import apply_phases, check_phase_spec


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


#: attributes that differ per analysis file: prefixed with the analysis name when merged
_PER_ANALYSIS = ("params", "created", "device", "cache_key", "schema_version")


def _merge(parts: list[xr.Dataset]) -> xr.Dataset:
    """One Dataset from the analyses' files; per-analysis provenance keeps its analysis prefix."""
    renamed = []
    for p in parts:
        q = p.copy()
        a = q.attrs.pop("analysis")
        for k in _PER_ANALYSIS:
            if k in q.attrs:
                q.attrs[f"{a}_{k}"] = q.attrs.pop(k)
        q.attrs.pop("warnings", None)
        renamed.append(q)
    merged = xr.merge(renamed, combine_attrs="drop_conflicts", join="outer", compat="no_conflicts")
    merged.attrs["analyses"] = ",".join(p.attrs["analysis"] for p in parts)
    merged.attrs["warnings"] = "\n".join(w for p in parts for w in str(p.attrs.get("warnings", "")).splitlines()
                                         if w)
    return merged


def compute(
    source: str | os.PathLike,
    analyses: Iterable[str] | str = ("weights",),
    cache_dir: str | os.PathLike | None = None,
    device: str | None = "auto",
    *,
    phases: str | Sequence[int] | None = None,
    phase_names: Sequence[str] | None = None,
    n_phases: int | None = None,
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
        ``"weights"`` (default): the weight-level geometry, seeds 003/000/004
        (:mod:`geomlib.dataset.weights`); ``"heads"``: per-head QK/OV operators,
        seeds 001/002, and attention entropy from a forward pass, which needs
        the model's tokenizer unless ``dynamic=False``
        (:mod:`geomlib.dataset.heads`).  The command line computes both.
    cache_dir : path, optional
        Cache root (default ``$GEOMLIB_CACHE``, else ``./cache``).
    device : str
        ``"auto"`` uses CUDA when present.
    phases, phase_names, n_phases : optional
        ``"auto"`` (default): phases fitted by change-point segmentation of
        the attention-entropy profile, else of a weight profile, their number
        ``n_phases`` or chosen by an extended BIC; ``"seed"``: the seeds' presets /
        fractional rule; or the first layer of each phase after the first.
        ``phase_names``: one name per phase.  See
        :func:`~geomlib.dataset.phases.apply_phases`.  Labels only: never recomputes.
    force : bool
        Recompute even when a valid cache entry exists.
    **params
        Analysis parameters, e.g. ``aligned_pairs="all"``, ``null_draws=8``,
        ``dynamic=False``, ``k=8`` (see :class:`~geomlib.dataset.params.WeightParams`
        and :class:`~geomlib.dataset.params.HeadParams`); a keyword shared by
        both analyses (``null_draws``, ``seed``, ``block_mib``) applies to both.

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
        check_phase_spec(ckpt.n_layers, phases, phase_names, n_phases)  # a bad spec fails before any work
        plans = []
        for a in analyses:
            cls, schema, module = ANALYSES[a]
            key = cache.cache_key(a, ckpt.identity, per[a].as_dict(), schema)
            path = cache.entry_path(root, ckpt.source, ckpt.identity, a, key)
            ds = cache.read(path) if path.exists() and not force else None
            if ds is not None and ds.attrs.get("cache_key") != key:
                ds = None
            mod = importlib.import_module(f".{module}", __package__)
            if ds is None and hasattr(mod, "preflight"):
                mod.preflight(ckpt, per[a])  # every check before any expensive work
            plans.append((a, key, path, ds, mod))
        for a, key, path, ds, mod in plans:
            if ds is None:
                ds = mod.run(ckpt, per[a], device=device, progress=progress)
                ds.attrs["cache_key"] = key
                cache.write_atomic(ds, path)
            parts.append(ds)
    return apply_phases(_merge(parts), phases, phase_names, n_phases)


def load(
    source: str | os.PathLike,
    analyses: Iterable[str] | str = ("weights",),
    cache_dir: str | os.PathLike | None = None,
    *,
    phases: str | Sequence[int] | None = None,
    phase_names: Sequence[str] | None = None,
    n_phases: int | None = None,
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
                           n_phases=n_phases, progress=progress, **params)
        found.append(cache.read(max(hits, key=lambda e: str(e.attrs.get("created", ""))).path))
    return apply_phases(_merge(found), phases, phase_names, n_phases)


def cached(
    source: str | os.PathLike,
    cache_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    phases: str | Sequence[int] | None = None,
    phase_names: Sequence[str] | None = None,
    n_phases: int | None = None,
) -> xr.Dataset:
    """Every analysis cached for ``source`` (the newest of each), merged; never computes.

    ``cache_dir`` may list several cache roots.  Needs neither torch nor the
    weights: this is what the dashboard and Binder open.

    Raises
    ------
    SourceNotFoundError
        Nothing is cached for ``source``.
    """
    from ..errors import SourceNotFoundError

    roots = list(cache_dir) if isinstance(cache_dir, (list, tuple)) else [cache_dir]
    label = os.fspath(source)
    newest: dict[str, cache.Entry] = {}
    for root in roots:
        for e in cache.entries(root):
            if e.source != label or e.analysis not in ANALYSES or e.schema_version != ANALYSES[e.analysis][1]:
                continue
            best = newest.get(e.analysis)
            if best is None or str(e.attrs.get("created", "")) > str(best.attrs.get("created", "")):
                newest[e.analysis] = e
    if not newest:
        where = ", ".join(str(cache.cache_root(r)) for r in roots)
        raise SourceNotFoundError(
            f"nothing is cached for {label!r} under {where}; compute it first (geomlib compute {label})"
        )
    parts = [cache.read(newest[a].path) for a in ANALYSES if a in newest]
    return apply_phases(_merge(parts), phases, phase_names, n_phases)
