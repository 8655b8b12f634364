"""Colour ranges of the L x L heatmaps: the selection's ``scale`` mode and ``mask_diagonal``.

Cosine similarities between layers are often all within a few hundredths of 0 off the
diagonal, with 1 on it: a fixed -1..1 scale shows "a diagonal on white".  The modes:

* ``"symmetric"`` (default): ±max |off-diagonal value|, white at 0;
* ``"robust"``: the 2nd-98th percentile of the off-diagonal values (white at 0 when it is inside);
* ``"z"``: each value as a z-score against the variable's null (``(v - null_mean) / null_std``, the
  null of pair (L, L+1) used for every pair whose earlier layer is L), on a symmetric range; where the
  dataset has no null it falls back to symmetric and the colour bar title says so.

``mask_diagonal`` blanks the trivial diagonal (a layer against itself) so it takes no colour.
"""

from __future__ import annotations

import numpy as np

from .spec import SCALES
from .traces import pivot_colorscale

#: a sequential scale for quantities that are not signed (principal-angle cosines)
SEQUENTIAL = "Viridis"


def offdiag(*arrays) -> np.ndarray:
    """The finite values of ``arrays`` off the diagonal of their last two (square) dimensions, flattened."""
    out = []
    for a in arrays:
        a = np.asarray(a, dtype=float)
        if a.ndim >= 2 and a.shape[-1] == a.shape[-2]:
            a = a[..., ~np.eye(a.shape[-1], dtype=bool)]
        out.append(a[np.isfinite(a)].ravel())
    return np.concatenate(out) if out else np.array([])


def symmetric(*arrays) -> tuple[float, float]:
    """(-m, m) with m the largest |off-diagonal value|; (-1, 1) when there is none."""
    v = offdiag(*arrays)
    m = float(np.abs(v).max()) if v.size else 0.0
    m = m or 1.0
    return -m, m


def robust(*arrays, lo: float = 2.0, hi: float = 98.0) -> tuple[float, float]:
    """The ``lo``-th and ``hi``-th percentiles of the off-diagonal values (a non-empty interval)."""
    v = offdiag(*arrays)
    if not v.size:
        return -1.0, 1.0
    a, b = (float(x) for x in np.percentile(v, [lo, hi]))
    if b <= a:
        pad = abs(a) * 1e-3 or 1e-9
        a, b = a - pad, b + pad
    return a, b


def data_range(*arrays) -> tuple[float, float]:
    """(min, max) of the off-diagonal values (a non-empty interval)."""
    v = offdiag(*arrays)
    if not v.size:
        return 0.0, 1.0
    a, b = float(v.min()), float(v.max())
    return (a, b) if b > a else (a - 1e-9, b + 1e-9)


def mask_diagonal(z) -> np.ndarray:
    """A float copy of ``z`` with its (square) diagonal set to NaN."""
    z = np.array(z, dtype=float)
    if z.ndim >= 2 and z.shape[-1] == z.shape[-2]:
        z[..., np.arange(z.shape[-1]), np.arange(z.shape[-1])] = np.nan
    return z


def zscore(z, mean, std) -> np.ndarray:
    """``(z - mean) / std`` per cell of an L x L ``z``, with the per-layer null of the earlier layer of each pair.

    ``mean`` and ``std`` are scalars or per-layer arrays (the null of pair (L, L+1) is at L).
    """
    z = np.asarray(z, dtype=float)
    n = z.shape[-1]
    mean, std = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
    if mean.ndim:
        i, j = np.indices((n, n))
        k = np.minimum(i, j)
        mean, std = mean[k], std[k]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (z - mean) / std
    return np.where(np.isfinite(out), out, np.nan)


def heat_scale(z, sel, quantity: str, *, null=None, null_name: str = "null", shared=(), signed: bool = True) -> dict:
    """What an L x L heatmap of ``z`` gets for selection ``sel``: ``z``, ``zmin``, ``zmax``, ``colorscale`` and
    ``colorbar`` (its title: the quantity, and how it is scaled).

    null : (mean, std), optional
        The variable's null (scalars or per layer), used by ``scale="z"``.
    shared : arrays
        Other heatmaps shown on the same colour scale (their off-diagonal values widen the range).
    signed : bool
        A signed quantity (white at 0); else a sequential scale over the data's range.
    """
    scale = getattr(sel, "scale", "symmetric")
    masked = getattr(sel, "mask_diagonal", True)
    z = mask_diagonal(z) if masked else np.array(z, dtype=float)
    others = [np.asarray(a, dtype=float) for a in shared]
    title = quantity
    if scale == "z" and null is not None:
        z = zscore(z, *null)
        others = [zscore(a, *null) for a in others]
        lo, hi = symmetric(z, *others)
        return dict(z=z, zmin=lo, zmax=hi, colorscale=pivot_colorscale(lo, hi, 0.0),
                    colorbar=dict(title=dict(text=f"z of {quantity} vs {null_name}")))
    if scale == "z":
        title = f"{quantity} (no null: symmetric)"
    if scale == "robust":
        lo, hi = robust(z, *others)
        title = f"{quantity} (2–98%)"
    elif signed:
        lo, hi = symmetric(z, *others)
    else:
        lo, hi = data_range(z, *others)
    colorscale = pivot_colorscale(lo, hi, 0.0) if signed else SEQUENTIAL
    return dict(z=z, zmin=lo, zmax=hi, colorscale=colorscale, colorbar=dict(title=dict(text=title)))


__all__ = ["SCALES", "data_range", "heat_scale", "mask_diagonal", "offdiag", "robust", "symmetric", "zscore"]
