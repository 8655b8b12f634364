"""Report sections and the one-sentence verdict of the spectra analysis (torch-free)."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from ...arch.families import MATRIX_FAMILIES
from ..report import _f

#: WeightWatcher's reading of α (Martin & Mahoney 2021): below 2 very heavy-tailed (over-fit or
#: over-regularised), 2 to 6 heavy-tailed (well trained), above 6 light tail, random-like
VERY_HEAVY_ALPHA = 2.0
HEAVY_ALPHA = 6.0


def spectra_families(ds: xr.Dataset) -> list[str]:
    """Matrix families with a finite ``esd_alpha`` or ``spectral_norm`` somewhere, in canonical order."""
    if "spectral_norm" not in ds:
        return []
    sn = ds["spectral_norm"].transpose("family", ...)
    # one pass over the array (the dashboard asks on every refresh): per family, any finite value
    ok = np.isfinite(sn.values.reshape(sn.shape[0], -1)).any(axis=1)
    have = {str(f) for f, good in zip(sn["family"].values, ok) if good}
    return [f for f in MATRIX_FAMILIES if f in have]


def layer_runs(layers) -> str:
    """``[3, 4, 5, 9]`` -> ``"3–5, 9"``."""
    layers = [int(x) for x in layers]
    runs, start = [], None
    for k, L in enumerate(layers):
        if start is None:
            start = L
        if k + 1 == len(layers) or layers[k + 1] != L + 1:
            runs.append(f"{start}" if start == L else f"{start}–{L}")
            start = None
    return ", ".join(runs)


def _null(ds: xr.Dataset, f: str, var: str) -> float:
    return float(ds[var].sel(family=f)) if var in ds else math.nan


def verdict(ds: xr.Dataset, family: str, where: str = "") -> str:
    """One sentence on ``family``'s α over depth against WeightWatcher's ranges and the Gaussian null; "" if none.

    ``where`` names the layers ``ds`` holds when it is a subset (``"phase B (layers 4–9)"``).
    """
    if "esd_alpha" not in ds or family not in ds["esd_alpha"]["family"].values:
        return ""
    a = ds["esd_alpha"].sel(family=family).values
    ok = np.isfinite(a)
    if not ok.any():
        return ""
    L = ds["layer"].values
    lo, hi = int(np.nanargmin(a)), int(np.nanargmax(a))
    heavy = L[ok & (a < HEAVY_ALPHA)]
    very = L[ok & (a < VERY_HEAVY_ALPHA)]
    head = f"{family}, {where}" if where else family
    if ok.sum() == 1:
        out = f"{head}: α {a[lo]:.1f} (layer {L[lo]})"
    else:
        out = (f"{head}: α from {a[lo]:.1f} (layer {L[lo]}) to {a[hi]:.1f} (layer {L[hi]}) over depth, "
               f"median {np.median(a[ok]):.1f}")
    out += f"; {len(heavy)} of {int(ok.sum())} layers heavy-tailed (α < {HEAVY_ALPHA:g})"
    if len(very):
        out += f", layers {layer_runs(very)} very heavy (α < {VERY_HEAVY_ALPHA:g})"
    m, s, mn = (_null(ds, family, v) for v in ("esd_alpha_null_mean", "esd_alpha_null_std", "esd_alpha_null_min"))
    if math.isfinite(m):
        below = L[ok & (a < mn)] if math.isfinite(mn) else []
        out += (f"; Gaussian matrices of this shape give α {m:.1f} ± {s:.1f} (lowest {mn:.1f}), "
                f"{len(below)} layers below all of them")
    return out + "."


def sections(ds: xr.Dataset) -> list[str]:
    """Per family: α, stable rank and spectral norm over depth, against the Gaussian null."""
    fams = spectra_families(ds)
    if not fams:
        return []
    out = ["", "=== Are the layers' spectra heavy-tailed? Power-law α of each layer's ESD (WeightWatcher: < 2 very "
           "heavy, 2–6 heavy-tailed/well trained, > 6 random-like) ==="]
    out.append(f" {'L':>6}" + "".join(f" {f:>10}" for f in fams))
    for L in ds["layer"].values:
        out.append(f" {int(L):>6}" + "".join(_f(float(ds['esd_alpha'].sel(family=f, layer=L)), ".2f", 11)
                                              for f in fams))
    if "esd_alpha_null_mean" in ds:
        out.append(f" {'null':>6}" + "".join(_f(_null(ds, f, "esd_alpha_null_mean"), ".2f", 11) for f in fams)
                   + "   (mean α of Gaussian matrices of the same shape)")
    out += ["", "=== How many directions carry each matrix? Stable rank ‖W‖_F²/‖W‖₂², median over layers ==="]
    out.append(f" {'family':>10} {'median':>9} {'min':>9} {'max':>9} {'Gaussian':>9} {'‖W‖₂ med':>9}")
    for f in fams:
        sr = ds["stable_rank"].sel(family=f).values
        sn = ds["spectral_norm"].sel(family=f).values
        fin = np.isfinite(sr)
        med = float(np.median(sr[fin])) if fin.any() else math.nan
        lo_, hi_ = (float(sr[fin].min()), float(sr[fin].max())) if fin.any() else (math.nan, math.nan)
        snm = float(np.nanmedian(sn)) if np.isfinite(sn).any() else math.nan
        out.append(f" {f:>10} {_f(med, '.1f', 9)} {_f(lo_, '.1f', 9)} {_f(hi_, '.1f', 9)} "
                   f"{_f(_null(ds, f, 'stable_rank_null_mean'), '.1f', 9)} {_f(snm, '.3g', 9)}")
    out += ["", "Verdicts:"] + [f"  {verdict(ds, f)}" for f in fams if verdict(ds, f)]
    return out


__all__ = ["HEAVY_ALPHA", "VERY_HEAVY_ALPHA", "layer_runs", "sections", "spectra_families", "verdict"]
