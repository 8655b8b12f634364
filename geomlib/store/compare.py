"""``geomlib.compare(a, b)``: two checkpoints layer against layer, gauge-aware, cached.

One cache entry per (A's identity, B's identity, parameters, schema version), in
A's model directory::

    <cache>/<slug(A)>-<identity_A[:12]>/compare-<key>.nc   (+ its .nc.json checksum record)

``compare`` is not a registered analysis: :func:`geomlib.load` and
:func:`geomlib.cached` of A never merge it (they only read registered
analyses), while ``geomlib list`` and ``geomlib cache verify|clean`` see it like
any other entry.  Models whose sizes differ (same model_type) get a
depth-normalized profile comparison built from each model's own ``gauge``
analysis, computed through :func:`geomlib.compute` (and cached by it).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import xarray as xr

from ..analyses.base import RunContext
from ..analyses.compare import NAME, PARAMS, PROFILE_DESCRIPTIONS, SCHEMA_VERSION
from ..analyses.params import Params
from ..errors import CacheError, CorruptCacheEntryError, InvalidArgumentError
from ..heap import map_large_blocks, threshold_for, trim_heap
from ..threads import thread_policy, using_threads
from . import cache

#: gauge variables whose adjacent pairs make the profile: (mlp_ or head_) -> the dim of their leading axis
_STEMS = {"mlp": "mlp_view", "head": "operator"}


def _entry_bytes(a, b) -> int:
    """A generous bound on one compare entry: float64 (L_a, L_b) arrays for a few dozen variables and the
    per-head ones, uncompressed."""
    na, nb, h = int(a.n_layers or 0), int(b.n_layers or 0), int(a.n_heads or 0)
    return 8 * na * nb * (64 + 4 * h) + 2**20


def _hit(path, key: str, ctx: RunContext) -> xr.Dataset | None:
    """The cached entry at ``path`` when it is intact and has ``key``; a damaged one is recomputed, not raised."""
    if not path.exists():
        return None
    try:
        ds = cache.read(path)
    except CorruptCacheEntryError as exc:  # repaired by recomputing: the write replaces the file
        if ctx.progress:
            print(f"geomlib: {exc} (recomputing it now)", file=sys.stderr, flush=True)
        return None
    return ds if ds.attrs.get("cache_key") == key else None


def compare(
    a: str | os.PathLike,
    b: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    *,
    device: str | None = "auto",
    progress: bool = True,
    force: bool = False,
    threads: int | None = None,
    hf_cache_dir: str | os.PathLike | None = None,
    **params,
) -> xr.Dataset:
    """Compare checkpoint ``a`` with checkpoint ``b`` layer against layer (gauge-aware), cached.

    Parameters
    ----------
    a, b : str or path
        Anything :func:`geomlib.open_model` accepts; the same model_type.
    cache_dir, device, progress, force, threads, hf_cache_dir
        As for :func:`geomlib.compute`.
    **params
        The compare parameters (:data:`geomlib.analyses.compare.PARAMS`): ``pairs`` ("auto",
        "corresponding", "all"), ``null_draws``, ``seed``, ``fold_norms``, ``precision``, ``block_mib``.

    Returns
    -------
    xarray.Dataset
        Same hidden size, head layout and MLP width (depths may differ): ``attrs["comparison"] ==
        "layer-to-layer"``, dims ``layer`` (A's n_a layers) and ``layer_b`` (B's n_b), e.g.
        ``raw_cos`` (family, layer, layer_b), ``mlp_matched_cos`` (mlp_view, layer, layer_b),
        ``head_matched`` (operator, layer, layer_b, head), ``gamma_cos`` (norm, layer, layer_b) and the
        residual-rotation null of each layer of A against B's layer ``null_layer_b``.  Other sizes:
        ``attrs["comparison"] == "depth-normalized profile"``, dims ``model`` ("a", "b") and ``depth``
        in [0, 1]; not a layer-to-layer comparison.

    Raises
    ------
    InvalidArgumentError
        An unknown or invalid parameter, or two different model types (one sentence each, before any weight is read).
    CacheError
        The cache cannot be written (checked before the computation).
    """
    p = Params(NAME, PARAMS, params)  # an unknown keyword names the allowed ones
    if not isinstance(force, bool):
        raise InvalidArgumentError(f"force={force!r} must be True or False")
    choice = thread_policy(threads)  # a bad count fails before any work
    root = cache.cache_root(cache_dir)
    cache.check_root(root)
    ctx = RunContext.create(device, progress)
    from ..analyses.compare.compute import run, shape_mismatch
    from ..model.checkpoint import open_model

    with open_model(a, hf_cache_dir=hf_cache_dir) as ca, open_model(b, hf_cache_dir=hf_cache_dir) as cb:
        why = shape_mismatch(ca, cb)  # different model types are refused here, from the headers
        # before the identities (which hash every payload byte the first time); a cache that cannot be written
        # may still serve a hit, so its failure waits unless no hit is possible
        unwritable = None
        try:
            cache.check_writable(root, _entry_bytes(ca, cb))
        except CacheError as exc:
            unwritable = exc
            if force or not any(root.glob(f"{cache.slug(ca.source)}-*")):
                raise
        key = cache.cache_key(NAME, ca.identity, {**p.key_dict(), "identity_b": cb.identity}, SCHEMA_VERSION)
        path = cache.entry_path(root, ca.source, ca.identity, NAME, key)
        ds = None if force else _hit(path, key, ctx)
        if ds is not None:
            return ds
        if unwritable is not None:  # now, not after the computation
            cache.check_writable(root, _entry_bytes(ca, cb))
        if why is None:
            with using_threads(choice.threads):
                if ctx.progress:
                    print(choice.describe(), file=sys.stderr, flush=True)
                # the gauge analysis' pieces on threads: freed layer-sized blocks leave the process (geomlib.heap)
                map_large_blocks(threshold_for(ca.hidden or 0))
                ds = run(ca, cb, p, ctx)
                trim_heap()
        else:
            ds = _profile(ca, cb, why, p, ctx, root, device, threads, hf_cache_dir)
            ds.attrs["threads"] = choice.threads
        ds.attrs["cache_key"] = key
        cache.write_atomic(ds, path)
    return ds


# ------------------------------------------------------------------------------- different sizes: profiles
def _on_grid(grid: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """``fp`` (..., P) at positions ``xp`` linearly interpolated onto ``grid`` (G,), constant beyond the ends.

    A grid point that falls on a position takes its value alone (a NaN neighbour does not reach it); between
    two positions a NaN in either gives NaN.
    """
    P = xp.size
    if P == 0:
        return np.full(fp.shape[:-1] + grid.shape, np.nan)
    pos = np.interp(grid, xp, np.arange(P, dtype=float))  # fractional index of each grid point
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, P - 1)
    t = pos - lo
    with np.errstate(invalid="ignore"):
        mixed = (1 - t) * fp[..., lo] + t * fp[..., hi]
    return np.where(t == 0, fp[..., lo], mixed)


def _adjacent(g: xr.Dataset, stem: str) -> dict[str, np.ndarray]:
    """A model's own adjacent-pair values (lead, n − 1): matched cos of (L, L+1), its null mean and std, z."""
    n = g.sizes["layer"]
    k = np.arange(max(n - 1, 0))
    cos = g[f"{stem}_matched_cos"].values[:, k, k + 1]
    mean = g[f"{stem}_matched_null_mean"].values[:, k]
    std = g[f"{stem}_matched_null_std"].values[:, k]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(std > 0, (cos - mean) / std, np.nan)
    return {"matched_cos": cos, "null_mean": mean, "null_std": std, "z": z}


def _profile(ca, cb, why: str, p: Params, ctx: RunContext, root, device, threads, hf_cache_dir) -> xr.Dataset:
    """Each model's own gauge analysis (through :func:`geomlib.compute`, cached there) on relative depth.

    Pair (L, L+1) of a model with n layers sits at depth (L + ½)/(n − 1), the midpoint of its layers' depths;
    the grid is the pair midpoints of the model with more pairs, so its values are its own.
    """
    from ..analyses.compare.compute import pair_provenance
    from .api import compute

    gauge = {"null_draws": p.null_draws, "seed": p.seed, "fold_norms": p.fold_norms, "precision": p.precision,
             "block_mib": p.block_mib}  # the gauge defaults for compare's defaults: a default compute is a hit
    own = {m: compute(c.source, "gauge", root, device=device, progress=ctx.progress, threads=threads,
                      hf_cache_dir=hf_cache_dir, gauge=gauge) for m, c in (("a", ca), ("b", cb))}
    pairs = {m: max(g.sizes["layer"] - 1, 0) for m, g in own.items()}
    G = max(pairs.values())
    grid = (np.arange(G) + 0.5) / max(G, 1)
    data, coords = {}, {"model": ["a", "b"], "depth": grid}
    for stem, lead in _STEMS.items():
        labels = sorted(set(own["a"][lead].values.tolist()) & set(own["b"][lead].values.tolist()),
                        key=own["a"][lead].values.tolist().index)
        coords[lead] = labels
        per = {}
        for m, g in own.items():
            vals = _adjacent(g.sel({lead: labels}), stem)
            xp = (np.arange(pairs[m]) + 0.5) / max(pairs[m], 1)
            per[m] = {q: _on_grid(grid, xp, v) for q, v in vals.items()}
        for q in ("matched_cos", "null_mean", "null_std", "z"):
            data[f"{stem}_adjacent_{q}"] = (("model", lead, "depth"), np.stack([per["a"][q], per["b"][q]]))
    data["n_layers"] = (("model",), np.array([ca.n_layers, cb.n_layers], dtype=np.int64))
    ds = xr.Dataset(data, coords=coords)
    for k, v in ds.data_vars.items():
        v.attrs["description"] = PROFILE_DESCRIPTIONS[k]
    for m, g in own.items():
        for w in str(g.attrs.get("warnings", "")).splitlines():
            if w:
                ctx.warnings.append(f"{m.upper()}: {w}")
    ds.attrs.update(pair_provenance(ca, cb, p, ctx, "depth-normalized profile"))
    ds.attrs.update({
        "comparison_note": (f"the weights of A and B cannot be paired ({why}): each model's own gauge analysis "
                            "(adjacent layers, against its own residual-rotation null) is placed on relative "
                            "depth; no variable compares a layer of A with a layer of B"),
        "gauge_cache_key_a": str(own["a"].attrs.get("gauge_cache_key", "")),
        "gauge_cache_key_b": str(own["b"].attrs.get("gauge_cache_key", "")),
    })
    return ds


__all__ = ["compare"]
