"""``geomlib.compute``, ``geomlib.load`` and ``geomlib.cached``: analyses of a model as one xarray Dataset.

:func:`compute` opens the checkpoint and computes what the cache lacks;
:func:`load` and :func:`cached` only read the cache (no torch, no weights).
Every list of analyses and parameters comes from :mod:`geomlib.analyses`.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Iterable, Sequence

import xarray as xr

from ..analyses import registry
from ..analyses.base import PAIRING
from ..analyses.phases import apply_phases, check_phase_spec
from ..errors import CacheError, CorruptCacheEntryError, InvalidArgumentError, SourceNotFoundError
from ..heap import map_large_blocks, threshold_for, trim_heap
from ..threads import thread_policy, using_threads
from . import cache

#: attributes that differ per analysis file: prefixed with the analysis name when merged
_PER_ANALYSIS = ("params", "created", "device", "threads", "cache_key", "schema_version", "not_computed")


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


def _per_analysis(names: tuple[str, ...], params: dict[str, Any]) -> dict[str, Any]:
    """The parameter dict of each selected analysis; keywords must be analysis names."""
    unknown = sorted(set(params) - set(registry.names()))
    if unknown:
        raise InvalidArgumentError(
            f"unknown keyword(s) {', '.join(unknown)}; analysis parameters go in a dict named after their analysis, "
            f"e.g. heads={{'k': 8}} (analyses: {', '.join(registry.names())})"
        )
    unused = sorted(set(params) - set(names))
    if unused:
        raise InvalidArgumentError(
            f"parameters were given for {', '.join(unused)}, which is not among the analyses {list(names)}; "
            "add it to analyses or drop its parameters"
        )
    return {a: params.get(a) for a in names}


def _entry_bytes(ckpt) -> int:
    """A generous bound on one cached entry's size, whatever the analysis: float64 layer x layer arrays for a
    few dozen variables and the per-head-pair ones (gauge's composition scores), uncompressed."""
    n, h = int(ckpt.n_layers or 0), int(ckpt.n_heads or 0)
    return 8 * n * n * (64 + 4 * h * h) + 2**20


def _announce_cost(ckpt, todo: dict, device, threads: int) -> None:
    """One stderr line with the estimated duration when the run looks long (:mod:`geomlib.analyses.cost`).

    Advisory only: an estimate that cannot be made (a shape the counters do not
    know) must not stop the run it describes.
    """
    from ..analyses import cost

    try:
        est = cost.estimate(ckpt, todo, device, threads)
    except Exception:  # noqa: BLE001 - see the docstring
        return
    cost.announce(est)


def compute(
    source: str | os.PathLike,
    analyses: Iterable[str] | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    device: str | None = "auto",
    progress: bool = True,
    force: bool = False,
    phases: str | Sequence[int] | None = None,
    phase_names: Sequence[str] | None = None,
    n_phases: int | None = None,
    hf_cache_dir: str | os.PathLike | None = None,
    threads: int | None = None,
    **params: dict,
) -> xr.Dataset:
    """Compute the analyses of a model that the cache lacks, and return them all as one Dataset.

    Parameters
    ----------
    source : str or path
        Anything :func:`geomlib.open_model` accepts.
    analyses : str or iterable of str, optional
        Names from :func:`geomlib.analyses.names` (``"weights"``, ``"heads"``, ...);
        default: every registered analysis, as the command line does.
    cache_dir : path, optional
        Cache root (default ``$GEOMLIB_CACHE``, else ``./cache``).
    device : str
        ``"auto"`` uses CUDA when present; resolved once for every analysis.
    progress : bool
        Progress bars with ETA; before any analysis runs, one line on stderr with the thread
        count, and one with the estimated duration when it exceeds
        :data:`geomlib.analyses.cost.THRESHOLD_S` seconds.
    force : bool
        Recompute even when a valid cache entry exists.
    phases, phase_names, n_phases : optional
        Phase labels (never recomputes); see :func:`~geomlib.analyses.phases.apply_phases`.
    threads : int, optional
        torch/BLAS threads to compute with; default: :func:`geomlib.threads.choose_threads`
        (``GEOMLIB_THREADS`` or ``OMP_NUM_THREADS`` when set, else the cores not already busy).
        Applied for the duration of the call, recorded as each dataset's ``threads``
        attribute; not part of the cache key (it does not change the numbers' meaning).
    **params : dict
        One dict per analysis, named after it: ``weights={"null_draws": 0}``,
        ``heads={"forward_pass": False, "k": 8}``.  Each analysis' parameters
        are listed by ``geomlib compute --help`` and in the README.

    Returns
    -------
    xarray.Dataset
        Dims ``family``, ``layer``, ``layer_b``, ``operator``, ``head``... float64
        values, provenance in ``attrs``; each analysis is cached in
        ``<cache>/<model>/<analysis>-<key>.nc``, written atomically.
    """
    parts = compute_parts(source, analyses, cache_dir, device=device, progress=progress, force=force,
                          phases=phases, phase_names=phase_names, n_phases=n_phases, hf_cache_dir=hf_cache_dir,
                          threads=threads, **params)
    return apply_phases(_merge(parts), phases, phase_names, n_phases)


def compute_parts(source, analyses=None, cache_dir=None, *, device="auto", progress=True, force=False, phases=None,
                  phase_names=None, n_phases=None, hf_cache_dir=None, threads=None, **params) -> list[xr.Dataset]:
    """:func:`compute`'s work: each analysis' own Dataset, as cached, before merging and phases.

    A sweep's worker returns these, so that the client merges a checkpoint's analyses (and labels its
    phases) once, as :func:`compute` does.
    """
    from ..analyses.base import RunContext
    from ..model.checkpoint import open_model

    names = registry.resolve(analyses)
    given = _per_analysis(names, params)
    per = {a: registry.get(a).make_params(given[a]) for a in names}
    if not isinstance(force, bool):
        raise InvalidArgumentError(f"force={force!r} must be True or False")
    choice = thread_policy(threads)  # a bad count fails before any work
    root = cache.cache_root(cache_dir)
    cache.check_root(root)  # a cache path that is a file fails before the checkpoint is opened
    ctx = RunContext.create(device, progress)

    def hit(ckpt, a: str, p) -> tuple[str, xr.Dataset | None]:
        key = cache.cache_key(a, ckpt.identity, p.key_dict(), registry.get(a).schema_version)
        path = cache.entry_path(root, ckpt.source, ckpt.identity, a, key)
        if force or not path.exists():
            return key, None
        try:
            ds = cache.read(path)
        except CorruptCacheEntryError as exc:  # repaired by recomputing: the write replaces the file
            if ctx.progress:
                print(f"geomlib: {exc} (recomputing it now)", file=sys.stderr, flush=True)
            return key, None
        return key, (ds if ds.attrs.get("cache_key") == key else None)

    parts = []
    with open_model(source, hf_cache_dir=hf_cache_dir) as ckpt:
        check_phase_spec(ckpt.n_layers, phases, phase_names, n_phases)  # a bad spec fails before any work
        # the cache is checked before the identity, which hashes every payload byte the first time; a cache
        # that cannot be written may still serve hits, so its failure waits unless no hit is possible
        unwritable = None
        try:
            cache.check_writable(root, _entry_bytes(ckpt) * len(names))
        except CacheError as exc:
            unwritable = exc
            if force or not any(root.glob(f"{cache.slug(ckpt.source)}-*")):
                raise
        plans = []
        for a in names:  # every pre-flight check before any analysis runs
            an, p, actx = registry.get(a), per[a], ctx.for_analysis()
            key, ds = hit(ckpt, a, p)
            if ds is None:
                q = an.preflight(ckpt, p, actx)
                if q != p:  # an optional part was switched off: the key says so
                    p = q
                    key, ds = hit(ckpt, a, p)
            plans.append((a, an, p, actx, key, ds))
        todo = {a: p for a, _, p, _, _, ds in plans if ds is None}
        if todo and unwritable is not None:  # now, not after the computation; the space needed is now known
            cache.check_writable(root, _entry_bytes(ckpt) * len(todo))
        with using_threads(choice.threads):
            if todo and ctx.progress:
                print(choice.describe(), file=sys.stderr, flush=True)
                _announce_cost(ckpt, todo, ctx.device, choice.threads)
            for a, an, p, actx, key, ds in plans:
                if ds is None:
                    if an.maps_large_blocks:  # freed layer-sized blocks leave the process (geomlib.heap)
                        map_large_blocks(threshold_for(ckpt.hidden or 0))
                    ds = an.run(ckpt, p, actx)
                    trim_heap()  # the analysis' freed temporaries go back to the OS before the next one
                    for v in ds.data_vars.values():
                        if "layer_b" in v.dims:  # a cross-layer comparison: say how it paired units
                            v.attrs.setdefault("pairing", PAIRING.get(an.pairing, an.pairing))
                    ds.attrs["cache_key"] = key
                    cache.write_atomic(ds, cache.entry_path(root, ckpt.source, ckpt.identity, a, key))
                parts.append(ds)
    return parts


def load(
    source: str | os.PathLike,
    analyses: Iterable[str] | str | None = None,
    cache_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    phases: str | Sequence[int] | None = None,
    phase_names: Sequence[str] | None = None,
    n_phases: int | None = None,
    **params: dict,
) -> xr.Dataset:
    """The cached analyses of ``source`` as one Dataset; never computes.

    Entries are matched by the source as it was given and by the parameters
    passed (the newest entry among those that match wins) without opening the
    checkpoint, so reading results needs
    neither torch nor the weights.  :func:`compute` re-checks the checkpoint
    identity instead.

    Parameters
    ----------
    analyses : str or iterable of str, optional
        Analyses that must be cached; default: every one that is.
    cache_dir : path or list of paths, optional
        Cache root(s) to look in.
    **params : dict
        As for :func:`compute`: ``heads={"k": 8}`` selects entries computed with ``k=8``
        (whatever their other parameters).

    Raises
    ------
    SourceNotFoundError
        A named analysis (or, by default, every analysis) is not cached for ``source``.
    """
    named = analyses is not None
    names = registry.resolve(analyses) if named else registry.names()
    given = _per_analysis(names, params)
    roots = list(cache_dir) if isinstance(cache_dir, (list, tuple)) else [cache_dir]
    label = os.fspath(source)
    scans = [cache.scan(r) for r in roots]
    entries = [e for good, _ in scans for e in good]
    damaged = [d for _, bad in scans for d in bad if d.source == label]
    parts, missing = [], []
    for a in names:
        want = None
        if given[a]:  # the values asked for (validated, files by content); the others may be anything
            key = registry.get(a).make_params(given[a]).key_dict()
            want = {k: key[k] for k in given[a] if k in key}
        e = cache.newest(entries, label, a, want)
        if e is None:
            missing.append(a)
        else:
            parts.append(cache.read(e.path))
    broken = [d for d in damaged if d.analysis in missing]
    if broken and (named or not parts):
        raise CorruptCacheEntryError(f"{broken[0].message}, and {label!r} has no other {broken[0].analysis} entry; "
                                     f"recompute it (geomlib compute {label} --force) or remove it "
                                     "(geomlib cache clean)")
    if (named and missing) or not parts:
        where = ", ".join(str(cache.cache_root(r)) for r in roots)
        what = ", ".join(missing) if named else "nothing"
        raise SourceNotFoundError(
            f"{what} is cached for {label!r} under {where}"
            + (" with those parameters" if any(given.values()) else "")
            + f"; compute it first (geomlib compute {label}"
            + (f" --analyses {','.join(missing)})" if named else ")")
        )
    ds = apply_phases(_merge(parts), phases, phase_names, n_phases)
    if broken:  # what a viewer should say instead of "not computed"
        ds.attrs["damaged"] = "\n".join(f"{d.analysis}: {d.message}" for d in broken)
    return ds


def cached(
    source: str | os.PathLike,
    cache_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    phases: str | Sequence[int] | None = None,
    phase_names: Sequence[str] | None = None,
    n_phases: int | None = None,
) -> xr.Dataset:
    """Every analysis cached for ``source`` (the newest of each), merged; never computes.

    What the dashboard and Binder open: ``load(source, cache_dir=roots)``.
    """
    return load(source, None, cache_dir, phases=phases, phase_names=phase_names, n_phases=n_phases)


__all__ = ["cached", "compute", "compute_parts", "load"]
