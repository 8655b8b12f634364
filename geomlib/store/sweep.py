"""``geomlib.sweep``: one model's geometry across training checkpoints (or any list of models), on Dask.

A sweep is an ordered list of checkpoints: sources given one by one, a hub id
at several revisions (``EleutherAI/pythia-160m`` with ``revisions=["step1000",
...]``, each downloaded when its task needs it), or a directory whose
``sweep.json`` lists them (what ``scripts/train_demo_sweep.py`` writes).  Each
(checkpoint, analysis) is one task, as is the :func:`geomlib.compare` of each
checkpoint with the one before it; the tasks run on a Dask cluster
(:mod:`geomlib.store.cluster`), each worker streams its checkpoint and writes its
own cache entry atomically, and this process assembles one Dataset:

- every analysis variable with a leading ``checkpoint`` dimension (labels, with
  ``step``, ``source`` and ``identity`` coordinates);
- ``prev_<v>``: the compare variables of each checkpoint against the previous one
  (``layer`` is the previous checkpoint's layer, ``layer_b`` this one's; all-NaN for
  the first); the ``previous`` coordinate names it (a checkpoint that failed is
  skipped: its neighbours are compared with each other);
- ``moved_<v>``: their diagonal, layer L against the same layer one checkpoint
  earlier: how far each layer moved.

The assembled Dataset is also written to the cache as ``sweep:<name>`` (the
dashboard's training-dynamics view reads it) and, on request, to a file.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import xarray as xr

from .. import __version__
from ..analyses import registry
from ..analyses.phases import apply_phases
from ..errors import GeomlibError, InvalidArgumentError, SourceNotFoundError
from ..validate import positive_int
from . import cache
from .api import _merge, _per_analysis
from .cluster import DEFAULT_WORKER_MEMORY, Outcome, Task, parse_bytes, resolve_scheduler, run_tasks

SCHEMA_VERSION = 1
MANIFEST = "sweep.json"
SWEEP_PREFIX = "sweep:"
_STEP = re.compile(r"(?:^|[^0-9a-z])(?:step|checkpoint|ckpt|iter)[-_]?0*(\d+)$", re.I)
#: attributes of a checkpoint's Dataset that differ per checkpoint: kept as ``checkpoint`` coordinates
_PER_CHECKPOINT = ("source", "identity")


@dataclass(frozen=True)
class Item:
    """One checkpoint of a sweep: where it is, what it is called, its training step when known."""

    source: str
    label: str
    step: int | None = None
    #: numbers a manifest gives per checkpoint beside label, step and path (``loss``...): ``checkpoint`` coordinates
    extra: tuple[tuple[str, float], ...] = ()


# ------------------------------------------------------------------------------------------------- the list
def _step_of(text: str) -> int | None:
    m = _STEP.search(text.rstrip("/"))
    return int(m.group(1)) if m else None


def _split(value: str | Sequence | None, what: str) -> list | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    if not items or any(isinstance(v, str) and not v for v in items):
        raise InvalidArgumentError(f"{what}={value!r} has an empty entry; give a comma-separated list such as "
                                   "step1000,step2000")
    return items


def _manifest(directory: Path) -> list[Item]:
    """The checkpoints listed by ``directory/sweep.json``: ``{"checkpoints": [{"label", "step", "path"}, ...]}``."""
    path = directory / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        rows = doc["checkpoints"]
        items = [Item(str((directory / r["path"]).resolve()), str(r.get("label") or Path(r["path"]).name),
                      None if r.get("step") is None else int(r["step"]),
                      tuple((k, float(v)) for k, v in r.items() if k not in ("label", "step", "path")
                            and isinstance(v, (int, float)) and not isinstance(v, bool)))
                 for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidArgumentError(
            f"{path} is not a sweep manifest ({exc.__class__.__name__}); it must hold {{\"checkpoints\": [{{\"label\": "
            "..., \"step\": ..., \"path\": ...}}, ...]}}, as scripts/train_demo_sweep.py writes"
        ) from None
    if not items:
        raise InvalidArgumentError(f"{path} lists no checkpoints; a sweep needs at least one")
    return items


def items_of(sources: str | os.PathLike | Sequence[str | os.PathLike], revisions=None, labels=None,
             steps=None) -> list[Item]:
    """The ordered checkpoints of a sweep (see the module docstring for the accepted forms)."""
    revisions = _split(revisions, "revisions")
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    try:
        sources = [os.fspath(s) for s in sources]
    except TypeError:
        raise InvalidArgumentError(f"sources={sources!r} is not a list of model sources; pass paths, hub ids or "
                                   "demo names") from None
    if not sources:
        raise InvalidArgumentError("a sweep needs at least one source; pass model paths, or a hub id with revisions")
    if revisions is not None:
        if len(sources) != 1 or "@" in sources[0]:
            raise InvalidArgumentError(f"revisions go with exactly one hub id without @revision, not {sources}; "
                                       "e.g. sweep('EleutherAI/pythia-160m', revisions=['step1000', 'step2000'])")
        if any("@" in r or "," in r or "/" in r for r in revisions):
            raise InvalidArgumentError(f"revisions {revisions} must be branch, tag or commit names without '@', "
                                       "',' or '/'")
        items = [Item(f"{sources[0]}@{r}", r, _step_of(r)) for r in revisions]
    elif len(sources) == 1 and Path(sources[0]).is_dir() and (Path(sources[0]) / MANIFEST).is_file():
        items = _manifest(Path(sources[0]))
    else:
        items = []
        for s in sources:
            local = Path(s).expanduser()
            # a path is sent to workers absolute (their working directory may differ); its label stays short
            src = str(local.resolve()) if local.exists() else s
            items.append(Item(src, local.name if local.exists() else s, _step_of(s)))
    labels, steps = _split(labels, "labels"), _split(steps, "steps")
    for given, what in ((labels, "labels"), (steps, "steps")):
        if given is not None and len(given) != len(items):
            raise InvalidArgumentError(f"{len(given)} {what} were given for {len(items)} checkpoints; give one per "
                                       "checkpoint, in order")
    if labels is not None:
        items = [Item(it.source, str(lb), it.step, it.extra) for it, lb in zip(items, labels)]
    if steps is not None:
        try:
            items = [Item(it.source, it.label, int(st), it.extra) for it, st in zip(items, steps)]
        except ValueError:
            raise InvalidArgumentError(f"steps={steps!r} are not all whole numbers; give training steps such as "
                                       "0,1000,2000") from None
    seen = [it.label for it in items]
    dup = sorted({lb for lb in seen if seen.count(lb) > 1})
    if dup:
        raise InvalidArgumentError(f"checkpoint label(s) {', '.join(dup)} occur twice; give distinct labels "
                                   "(--labels) or distinct sources")
    return items


# ------------------------------------------------------------------------------------------------- the tasks
def analysis_task(source: str, analysis: str, cache_dir: str, params: dict | None, device: str, threads: int | None,
                  force: bool, hf_cache_dir: str | None) -> xr.Dataset:
    """One checkpoint's analysis as cached (its own Dataset, unmerged), computed when missing (runs on a worker)."""
    from .api import compute_parts

    (ds,) = compute_parts(source, [analysis], cache_dir, device=device, progress=False, force=force,
                          threads=threads, hf_cache_dir=hf_cache_dir, **({analysis: params} if params else {}))
    return ds


def compare_task(a: str, b: str, cache_dir: str, params: dict, device: str, threads: int | None, force: bool,
                 hf_cache_dir: str | None) -> xr.Dataset:
    """The compare of two checkpoints, read from or written to the cache (runs on a worker)."""
    from .compare import compare

    return compare(a, b, cache_dir, device=device, progress=False, force=force, threads=threads,
                   hf_cache_dir=hf_cache_dir, **params)


def _key(*parts: str) -> str:
    return "geomlib-" + "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts)


# ------------------------------------------------------------------------------------------------- assembly
def _checkpoint(parts: list[xr.Dataset]) -> xr.Dataset:
    """One checkpoint's analyses as one Dataset, merged and phase-labelled as :func:`geomlib.compute` does."""
    return apply_phases(_merge(parts), None, None, None)


def _diagonal(da: xr.DataArray) -> xr.DataArray:
    """``da[..., L, L]`` over the layers the two checkpoints share: layer L against the same layer."""
    n = min(da.sizes["layer"], da.sizes["layer_b"])
    idx = xr.DataArray(np.arange(n), dims="layer")
    return da.isel(layer=idx, layer_b=idx).drop_vars("layer_b", errors="ignore").assign_coords(layer=np.arange(n))


def _transitions(items: list[Item], compares: dict[int, tuple[str, xr.Dataset]]) -> xr.Dataset:
    """``prev_*`` and ``moved_*`` variables along ``checkpoint`` (NaN where a compare is missing), and the
    ``previous`` coordinate: the checkpoint each one was compared with."""
    rows = []
    for k, it in enumerate(items):
        prev, c = compares.get(k, ("", None))
        out = {}
        for name, v in (c.data_vars.items() if c is not None else ()):
            if not np.issubdtype(v.dtype, np.floating):
                continue  # assignments and counts do not average over a missing checkpoint
            out[f"prev_{name}"] = v.assign_attrs(description="the previous checkpoint (layer) against this one "
                                                 "(layer_b): " + str(v.attrs.get("description", name)))
            if {"layer", "layer_b"} <= set(v.dims) and name.endswith("_cos"):
                out[f"moved_{name}"] = _diagonal(v).assign_attrs(
                    description=f"{name} of layer L at this checkpoint against layer L at the previous one "
                                "(1: the layer did not move; the diagonal of prev_" + name + ")",
                    pairing=v.attrs.get("pairing", ""))
        rows.append(xr.Dataset(out, coords={"previous": ((), prev)}).expand_dims(checkpoint=[it.label]))
    return xr.concat(rows, dim="checkpoint", join="outer", data_vars="all", coords="different",
                     compat="equals", combine_attrs="drop")


def assemble(items: list[Item], results: dict[str, xr.Dataset],
             compares: dict[int, tuple[str, xr.Dataset]]) -> xr.Dataset:
    """The sweep Dataset from the per-checkpoint Datasets (by label) and the compares (by index of the later
    checkpoint: the label of the earlier one and the Dataset)."""
    done = [it for it in items if it.label in results]
    per = []
    for it in done:
        ds = results[it.label]
        coords = {"step": ("checkpoint", [-1 if it.step is None else it.step])}
        coords.update({k: ("checkpoint", [v]) for k, v in it.extra})
        for a in _PER_CHECKPOINT:
            coords[a] = ("checkpoint", [str(ds.attrs.get(a, it.source))])
        per.append(ds.expand_dims(checkpoint=[it.label]).assign_coords(coords))
    body = xr.concat(per, dim="checkpoint", join="outer", data_vars="all", coords="different", compat="equals",
                     combine_attrs="drop_conflicts")
    for a in _PER_CHECKPOINT:
        body.attrs.pop(a, None)
    at = {it.label: k for k, it in enumerate(items)}
    moved = _transitions(done, {j: compares[at[it.label]] for j, it in enumerate(done) if at[it.label] in compares})
    # the checkpoints' own coordinates lead (their family order is the model's); a coordinate only the
    # compares have (e.g. null_layer_b's) comes with them
    return xr.merge([body, moved], join="left", compat="no_conflicts", combine_attrs="override")


# ------------------------------------------------------------------------------------------------- the entry point
def sweep(
    sources: str | os.PathLike | Sequence[str | os.PathLike],
    analyses: Iterable[str] | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    revisions: str | Sequence[str] | None = None,
    labels: str | Sequence[str] | None = None,
    steps: str | Sequence[int] | None = None,
    name: str | None = None,
    compare: bool = True,
    compare_params: dict | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    memory_per_worker: int | str = DEFAULT_WORKER_MEMORY,
    device: str = "auto",
    progress: bool = True,
    force: bool = False,
    threads: int | None = 1,
    hf_cache_dir: str | os.PathLike | None = None,
    **params: dict,
) -> xr.Dataset:
    """Compute the analyses of every checkpoint of a sweep (and compare consecutive ones) as one Dataset.

    Parameters
    ----------
    sources : str, path or list
        The checkpoints in order: paths, hub ids, demo names; or one hub id with ``revisions``; or one
        directory holding a ``sweep.json`` manifest.
    analyses : str or iterable of str, optional
        As for :func:`geomlib.compute` (default: every default analysis a sweep computes, see
        ``Analysis.sweep_default``).
    cache_dir : path, optional
        Cache root, shared by every worker (on a cluster: a shared filesystem path).
    revisions : str or list of str, optional
        Revisions of the one hub id in ``sources`` (``"step1000,step2000"``); steps are read from names
        such as ``step1000``.
    labels, steps : list, optional
        One per checkpoint: the ``checkpoint`` coordinate and its training step.
    name : str, optional
        The sweep's name in the cache (``sweep:<name>``); default from the sources.
    compare : bool
        Also compare each checkpoint with the previous one (``prev_*``, ``moved_*`` variables).
    compare_params : dict, optional
        Parameters of :func:`geomlib.compare`.
    scheduler : str, optional
        ``"local"`` (a LocalCluster, default), ``"serial"`` (this process) or ``tcp://HOST:8786``;
        ``$DASK_SCHEDULER_ADDRESS`` when not given.
    workers, memory_per_worker : optional
        Local cluster size (default: free cores, as many as memory holds) and each worker's memory limit.
    threads : int or None
        torch threads per task (1: one task per core; None: geomlib's policy, for ``scheduler="serial"``).
    progress : bool
        One progress bar over tasks and the cluster's dashboard link on stderr.
    **params : dict
        One dict per analysis, as for :func:`geomlib.compute`.

    Returns
    -------
    xarray.Dataset
        Dims ``checkpoint`` then each analysis' own; ``attrs["failed"]`` lists the checkpoints (and
        compares) that failed with their one-line errors; those checkpoints are left out.

    Raises
    ------
    GeomlibError
        Bad arguments (before any work), or every checkpoint failed.
    """
    items = items_of(sources, revisions, labels, steps)
    names = registry.resolve(analyses, sweep=True)
    given = _per_analysis(names, params)
    for a in names:  # a bad parameter fails here, not once per task on the workers
        registry.get(a).make_params(given[a])
    if not isinstance(compare, bool) or not isinstance(force, bool) or not isinstance(progress, bool):
        raise InvalidArgumentError("compare, force and progress must be True or False")
    cparams = dict(compare_params or {})
    root = cache.cache_root(cache_dir).resolve()
    cache.check_root(root)
    cache.check_writable(root)
    where = resolve_scheduler(scheduler)
    memory_per_worker = parse_bytes(memory_per_worker)
    if workers is not None:
        workers = positive_int("workers", workers)
    hf = None if hf_cache_dir is None else str(Path(hf_cache_dir).expanduser().resolve())
    if compare and len(items) > 1:
        from ..analyses.compare import NAME, PARAMS
        from ..analyses.params import Params

        Params(NAME, PARAMS, cparams)  # the compare parameters are refused here, not on every worker
    index = {_key(it.label, a): k for k, it in enumerate(items) for a in names}
    bad: set[int] = set()

    def compare_of(p: int, k: int) -> Task:
        return Task(_key(items[k].label, "compare", items[p].label),
                    f"{items[k].label}: compare with {items[p].label}", compare_task,
                    (items[p].source, items[k].source, str(root), cparams, device, threads, force, hf))

    def chain() -> list[tuple[int, int]]:
        """(previous, k) for each checkpoint not known to have failed: each against the last good one before it."""
        good = [k for k in range(len(items)) if k not in bad]
        return list(zip(good, good[1:])) if compare else []

    def follow_up(key: str, outcome: Outcome) -> list[Task]:
        # a failed checkpoint drops out of the chain: its neighbours are compared with each other instead
        if outcome.ok or key not in index or index[key] in bad:
            return []
        bad.add(index[key])
        return [compare_of(p, k) for p, k in chain()]

    tasks = [Task(_key(it.label, a), f"{it.label}: {a}", analysis_task,
                  (it.source, a, str(root), given[a], device, threads, force, hf)) for it in items for a in names]
    tasks += [compare_of(p, k) for p, k in chain()]
    outcomes = run_tasks(tasks, where, workers=workers, memory_per_worker=memory_per_worker, progress=progress,
                         follow_up=follow_up)
    failed, results, compares = [], {}, {}
    for it in items:
        got = [outcomes[_key(it.label, a)] for a in names]
        err = next((o for o in got if not o.ok), None)
        if err is not None:
            failed.append(f"{it.label}: {err.error}")
        else:
            results[it.label] = _checkpoint([o.value for o in got])
    bad = {k for k, it in enumerate(items) if it.label not in results}
    for p, k in chain():
        o: Outcome = outcomes[_key(items[k].label, "compare", items[p].label)]
        if o.ok:
            compares[k] = (items[p].label, o.value)
        else:
            failed.append(f"{items[k].label}: compare with {items[p].label}: {o.error}")
    if not results:
        raise SourceNotFoundError(f"every checkpoint of the sweep failed; the first: {failed[0]}")
    ds = assemble(items, results, compares)
    warn = []
    for it in items:
        if it.label in results:
            warn += [f"{it.label}: {w}" for w in str(results[it.label].attrs.get("warnings", "")).splitlines() if w]
    name = name or _default_name(items, sources)
    ds.attrs.update({
        "analysis": "sweep", "schema_version": SCHEMA_VERSION, "source": SWEEP_PREFIX + name, "sweep_name": name,
        "analyses": ",".join(names), "checkpoints": json.dumps([{**it.__dict__, "extra": dict(it.extra)} for it in items]),
        "failed": "\n".join(failed), "warnings": "\n".join(warn), "geomlib_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "scheduler": where,
        "compared": "consecutive checkpoints" if compare else "no",
    })
    identity = cache.cache_key("sweep", ",".join(str(ds["identity"].values.tolist())), {"analyses": list(names)},
                               SCHEMA_VERSION)
    ds.attrs["identity"] = identity
    ds.attrs["cache_key"] = identity
    try:  # the dashboard's copy; the result is returned even where the cache cannot take it
        cache.write_atomic(ds, cache.entry_path(root, SWEEP_PREFIX + name, identity, "sweep", identity))
    except GeomlibError as exc:
        print(f"geomlib: warning: the sweep could not be cached ({exc})", file=sys.stderr)
    return ds


def _default_name(items: list[Item], sources) -> str:
    first = os.fspath(sources if isinstance(sources, (str, os.PathLike)) else sources[0])
    if "@" in items[0].source and not Path(first).exists():
        return first.split("@")[0]
    return Path(first).name or first


def load_sweep(name: str, cache_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None) -> xr.Dataset:
    """The newest cached sweep called ``name`` (``sweep:<name>`` in ``geomlib list``), or a sweep file's path."""
    if Path(name).suffix == ".nc" and Path(name).is_file():
        return cache.read(Path(name))
    label = name if name.startswith(SWEEP_PREFIX) else SWEEP_PREFIX + name
    roots = list(cache_dir) if isinstance(cache_dir, (list, tuple)) else [cache_dir]
    hits = [e for r in roots for e in cache.scan(r)[0] if e.analysis == "sweep" and e.source == label]
    if not hits:
        raise SourceNotFoundError(f"no sweep named {name!r} is cached under "
                                  f"{', '.join(str(cache.cache_root(r)) for r in roots)}; run geomlib sweep first")
    return cache.read(max(hits, key=lambda e: str(e.attrs.get("created", ""))).path)


def sweeps(cache_dir: str | os.PathLike | None = None) -> list[str]:
    """Names of the cached sweeps."""
    return sorted({e.source[len(SWEEP_PREFIX):] for e in cache.scan(cache_dir)[0] if e.analysis == "sweep"})


__all__ = ["Item", "analysis_task", "assemble", "compare_task", "items_of", "load_sweep", "sweep", "sweeps"]
