"""What a view's data says against its null, in one plain sentence (the pieces :attr:`ViewSpec.verdict` shares).

A verdict summarises the adjacent pairs (L, L+1) the view's null was drawn for: all of them, or,
with a phase selected, those whose first layer L lies in it (as the per-phase bars and
``geomlib report`` group them).  Against a null band mean ± 2σ a pair is "beyond" above it and
"below" under it; the sentence gives the observed range, the null as mean ± σ and the median z.
Everything reads numpy arrays of the cached Dataset (a few indexing operations), so a verdict
costs well under a millisecond or two and can follow every selection change.  Missing data: "".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr


def pick(ds: xr.Dataset, var: str, **coords) -> np.ndarray | None:
    """``ds[var]`` at ``coords`` (those of its dimensions) as floats, or None when anything is missing."""
    if var not in ds:
        return None
    da = ds[var]
    sel = {k: v for k, v in coords.items() if k in da.dims}
    for k, v in sel.items():
        if v not in da[k].values:
            return None
    a = np.asarray(da.sel(sel).values, dtype=float)
    return a if np.isfinite(a).any() else None


def adjacent(z: np.ndarray) -> np.ndarray:
    """The (L, L+1) values of an L x L array (leading dimensions kept), indexed by L."""
    n = z.shape[-1]
    return z[..., np.arange(n - 1), np.arange(1, n)]


def pairs(ds: xr.Dataset, phase: str) -> tuple[np.ndarray, str]:
    """Which adjacent pairs (by first layer L) a verdict summarises, and how to say it."""
    n = ds.sizes["layer"]
    labels = np.array([str(p) for p in ds["phase"].values]) if "phase" in ds.coords else np.array(["all"] * n)
    if phase == "all" or phase not in labels:
        return np.ones(n - 1, dtype=bool), f"adjacent pairs (L, L+1), all {n - 1}"
    mask = labels[:-1] == phase
    where = np.nonzero(mask)[0]
    span = f"L = {where[0]}–{where[-1]}" if where.size else "none"
    return mask, f"adjacent pairs (L, L+1) with L in phase {phase} ({span}, {mask.sum()} pairs)"


def num(x: float) -> str:
    """A value in two significant figures (enough to tell a cosine from its null)."""
    return f"{x:.2g}"


def zscore(z: float) -> str:
    """A z-score: whole numbers from 10 on, one decimal below."""
    return (f"{z:.0f}" if abs(z) >= 10 else f"{z:.1f}").replace("-0.0", "0.0")


def span(values: np.ndarray) -> str:
    """``lo–hi`` of the values (one value when they agree to two figures)."""
    lo, hi = num(float(np.min(values))), num(float(np.max(values)))
    return lo if lo == hi else f"{lo} to {hi}" if lo.startswith("-") else f"{lo}–{hi}"


@dataclass(frozen=True)
class Band:
    """Observed values against a null band, pair by pair (finite pairs only)."""

    values: np.ndarray
    z: np.ndarray
    mean: float  # the null's mean over those pairs
    std: float  # and its σ (of one draw: the band is mean ± 2σ)
    above: int
    below: int

    @property
    def n(self) -> int:
        return len(self.values)

    def null(self, name: str) -> str:
        """"a <name> of m ± σ (median z = …)"."""
        return f"a {name} of {num(self.mean)} ± {num(self.std)} (median z = {zscore(float(np.median(self.z)))})"

    def reading(self, beyond: str) -> str:
        """What the pairs say: ``beyond`` (the caller's words) when most (over half) lie above the band, else how they fall."""
        n, out = self.n, self.above + self.below
        if 2 * self.above > n:
            return beyond.replace("{far}", "far " if float(np.median(self.z)) >= 10 else "")
        if out == 0:
            return "not distinguishable from the null"
        if 2 * out < n:
            return f"mostly not distinguishable from the null ({out} of {n} pairs outside its ± 2σ band)"
        if self.above == 0:
            return f"below the null in {self.below} of {n} pairs"
        return f"outside the null band on both sides ({self.above} pairs above, {self.below} below, of {n})"


def against(values, mean, std, mask=None) -> Band | None:
    """``values`` against a null (arrays of the same length, or scalars), on the pairs in ``mask``; None if none."""
    v = np.asarray(values, dtype=float)
    m = np.broadcast_to(np.asarray(mean, dtype=float), v.shape)
    s = np.broadcast_to(np.asarray(std, dtype=float), v.shape)
    ok = np.isfinite(v) & np.isfinite(m) & np.isfinite(s) & (s > 0)
    if mask is not None:
        ok &= mask
    if not ok.any():
        return None
    v, m, s = v[ok], m[ok], s[ok]
    return Band(values=v, z=(v - m) / s, mean=float(m.mean()), std=float(s.mean()),
                above=int((v > m + 2 * s).sum()), below=int((v < m - 2 * s).sum()))


def median(values, mask=None) -> float:
    """The median of the finite ``values`` in ``mask`` (NaN when none)."""
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v) & (mask if mask is not None else True)
    return float(np.median(v[ok])) if ok.any() else float("nan")


def matched_verdict(ds: xr.Dataset, phase: str, stem: str, coords: dict, subject: str, label: str,
                    beyond: str) -> str:
    """The gauge-aware views' sentence: adjacent ``<stem>_matched_cos`` against its residual-rotation null, and
    the index-paired ``<stem>_same_index_cos`` median; "" when the variables or nulls are missing.

    ``coords`` picks the view's coordinate (``mlp_view`` or ``operator``); ``subject``, ``label`` and
    ``beyond`` are the sentence's words (``beyond`` may hold ``{far}``, see :meth:`Band.reading`).
    """
    z, same = pick(ds, f"{stem}_matched_cos", **coords), pick(ds, f"{stem}_same_index_cos", **coords)
    m, s = pick(ds, f"{stem}_matched_null_mean", **coords), pick(ds, f"{stem}_matched_null_std", **coords)
    if z is None or m is None or s is None:
        return ""
    mask, which = pairs(ds, phase)
    b = against(adjacent(z), m[:-1], s[:-1], mask)
    if b is None:
        return ""
    idx = median(adjacent(same), mask) if same is not None else np.nan
    tail = f"; index pairing gives {num(idx)} (median)" if np.isfinite(idx) else ""
    return (f"{subject}, {which}: {label} {span(b.values)} against {b.null('residual-rotation null')}: "
            + b.reading(beyond) + tail + ".")


__all__ = ["Band", "adjacent", "against", "matched_verdict", "median", "num", "pairs", "pick", "span", "zscore"]
