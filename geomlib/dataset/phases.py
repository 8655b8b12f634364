"""Phase labels along depth, phase coordinates and per-phase summaries (xarray groupby).

The seeds hard-code "measured entropy boundaries" for two models and a
fractional rule for the rest.  :func:`seed_phase` reproduces that rule exactly;
:func:`phase_labels` applies it, or user-given boundaries, to a whole model.

Phases are labels, not data: they are attached when a dataset is returned and
are not part of the cache key, so trying other boundaries never recomputes.
Torch-free.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr

from ..errors import InvalidArgumentError


#: seed 000's tables: n_layers -> (model they were measured on, last layer of each phase)
PRESETS: dict[int, tuple[str, tuple[tuple[str, int], ...]]] = {
    64: ("Qwen3-32B", (("A", 6), ("B", 9), ("C", 31), ("D", 46), ("E", 58), ("tail", 63))),
    36: ("Qwen3-4B", (("A", 6), ("B", 9), ("C", 23), ("D", 33), ("tail", 35))),
}

#: seed 000's fractional rule for other depths: phase starts while L / n < bound
FRACTIONAL: tuple[tuple[str, float], ...] = (("A", 0.11), ("B", 0.15), ("C", 0.5), ("D", 0.75), ("E", 0.92))


def seed_phase(L: int, n_layers: int) -> str:
    """Phase of layer ``L`` exactly as seed 000's ``phase_of`` assigns it."""
    if n_layers in PRESETS:
        for name, last in PRESETS[n_layers][1]:
            if L <= last:
                return name
        return PRESETS[n_layers][1][-1][0]
    frac = L / n_layers
    for name, bound in FRACTIONAL:
        if frac < bound:
            return name
    return "tail"


def _names(k: int) -> list[str]:
    letters = [chr(ord("A") + i) for i in range(min(k, 26))]
    return letters + [f"P{i}" for i in range(26, k)]


def phase_labels(
    n_layers: int,
    boundaries: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
) -> tuple[list[str], str, list[int]]:
    """Phase label of every layer.

    Parameters
    ----------
    n_layers : int
    boundaries : sequence of int, optional
        First layer of each phase after the first (``[7, 10, 32]`` makes phases
        0-6, 7-9, 10-31, 32-end).  Overrides the presets.
    names : sequence of str, optional
        One name per phase (default A, B, C, ...).

    Returns
    -------
    labels : list of str, one per layer
    method : str
        ``"user"``, ``"preset:Qwen3-32B"``, ``"preset:Qwen3-4B"`` or ``"fractional"``.
    starts : list of int
        First layer of each phase, 0 included.
    """
    if boundaries is None:
        labels = [seed_phase(L, n_layers) for L in range(n_layers)]
        method = f"preset:{PRESETS[n_layers][0]}" if n_layers in PRESETS else "fractional"
        starts = [L for L in range(n_layers) if L == 0 or labels[L] != labels[L - 1]]
        return labels, method, starts
    b = sorted({int(x) for x in boundaries} - {0})
    if any(not 0 < x < n_layers for x in b):
        raise InvalidArgumentError(
            f"phase boundaries {list(boundaries)} must lie in 1..{n_layers - 1} (first layer of each later phase) "
            f"for a {n_layers}-layer model; drop or fix the out-of-range ones"
        )
    starts = [0] + b
    if names is None:
        names = _names(len(starts))
    if len(names) != len(starts) or len(set(names)) != len(names):
        raise InvalidArgumentError(
            f"{len(starts)} phases need {len(starts)} distinct names, got {list(names)}; pass one name per phase"
        )
    labels = []
    for L in range(n_layers):
        k = max(i for i, s in enumerate(starts) if s <= L)
        labels.append(str(names[k]))
    return labels, "user", starts


def apply_phases(ds: xr.Dataset, boundaries: Sequence[int] | None = None,
                 names: Sequence[str] | None = None) -> xr.Dataset:
    """``ds`` with a ``phase`` coordinate on ``layer`` (and ``phase_b`` on ``layer_b``).

    Without ``boundaries`` the seeds' presets apply (64 layers: Qwen3-32B,
    36: Qwen3-4B) and their fractional rule otherwise; the method and the
    first layer of each phase are recorded in ``attrs``.
    """
    n = ds.sizes["layer"]
    labels, method, starts = phase_labels(n, boundaries, names)
    ds = ds.assign_coords(phase=("layer", np.array(labels, dtype=object).astype(str)))
    if "layer_b" in ds.dims:
        ds = ds.assign_coords(phase_b=("layer_b", np.array(labels, dtype=object).astype(str)))
    ds.attrs["phase_method"] = method
    ds.attrs["phase_starts"] = np.array(starts, dtype=np.int64)
    ds.attrs["phase_names"] = ",".join(dict.fromkeys(labels))
    return ds


def adjacent(da: xr.DataArray) -> xr.DataArray:
    """The (layer, layer+1) diagonal of a (..., layer, layer_b) variable, indexed by the first layer."""
    n = da.sizes["layer"]
    first = xr.DataArray(np.arange(n - 1), dims="layer")
    second = xr.DataArray(np.arange(1, n), dims="layer")
    out = da.isel(layer=first, layer_b=second)
    return out.drop_vars([c for c in ("layer_b", "phase_b") if c in out.coords])


def phase_order(ds: xr.Dataset) -> list[str]:
    return list(dict.fromkeys(ds["phase"].values.tolist()))


def phase_mean(da: xr.DataArray, order: Sequence[str] | None = None) -> xr.DataArray:
    """Mean over the layers of each phase (groupby on the ``phase`` coordinate), in depth order.

    ``order`` lists the phases to return (NaN for one with no layer here, e.g.
    a last phase holding only the last layer has no adjacent pair).
    """
    order = list(order) if order is not None else list(dict.fromkeys(da["phase"].values.tolist()))
    return da.groupby("phase").mean("layer").reindex(phase=order)


def phase_direction_stats(ds: xr.Dataset, family: str) -> xr.Dataset:
    """Seed 004's per-phase table for one norm family.

    Returns
    -------
    Dataset over ``phase`` with ``n`` (layers), ``norm_mean``, ``norm_std``,
    ``intra_cos`` (mean cosine between distinct layers of the phase, NaN for a
    one-layer phase) and ``vs_other_cos`` (mean cosine to layers of other phases).
    """
    c = ds["cos"].sel(family=family)
    g = ds["gamma_norm"].sel(family=family)
    same = c["phase"] == c["phase_b"]
    distinct = c["layer"] != c["layer_b"]
    order = phase_order(ds)
    intra = c.where(same & distinct).groupby("phase").mean(["layer", "layer_b"]).sel(phase=order)
    other = c.where(~same).groupby("phase").mean(["layer", "layer_b"]).sel(phase=order)
    grouped = g.groupby("phase")
    return xr.Dataset(
        {
            "n": grouped.count("layer").sel(phase=order),
            "norm_mean": grouped.mean("layer").sel(phase=order),
            "norm_std": grouped.std("layer").sel(phase=order),
            "intra_cos": intra,
            "vs_other_cos": other,
        }
    )
