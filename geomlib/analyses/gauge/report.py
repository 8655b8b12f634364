"""Report sections of the gauge analysis (torch-free)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..phases import adjacent, phase_mean, phase_order


def _verdict(value: float, m: float, s: float) -> str:
    if not (np.isfinite(value) and np.isfinite(m) and np.isfinite(s)):
        return "no null band"
    if value > m + 2 * s:
        return "shared structure beyond the symmetry"
    if value < m - 2 * s:
        return "below the null"
    return "inside the null band: matching alone explains it"


def _block(ds: xr.Dataset, var: str, dim: str, title: str) -> list[str]:
    if var not in ds or not ds.sizes.get(dim):
        return []
    order = phase_order(ds)
    out = ["", f"=== {title} ===",
           f" {dim:>10} {'phase':>6} {'matched':>9} {'index-paired':>13} {'null (± 2σ)':>17}  verdict"]
    matched = phase_mean(adjacent(ds[var]), order)
    same = phase_mean(adjacent(ds[var.replace("matched", "same_index")]), order)
    stem = var.removesuffix("_cos")
    null_m = ds[f"{stem}_null_mean"].isel(layer=slice(0, -1))
    null_s = ds[f"{stem}_null_std"].isel(layer=slice(0, -1))
    nm, ns = phase_mean(null_m, order), phase_mean(null_s, order)
    for c in ds[dim].values.tolist():
        for p in order:
            v = float(matched.sel({dim: c, "phase": p}))
            if not np.isfinite(v):
                continue  # a phase with no adjacent pair inside it
            m, s = float(nm.sel({dim: c, "phase": p})), float(ns.sel({dim: c, "phase": p}))
            band = f"{m:.3f} ± {2 * s:.3f}" if np.isfinite(m) else "—"
            out.append(f" {str(c):>10} {p:>6} {v:>9.4f} {float(same.sel({dim: c, 'phase': p})):>13.4f} {band:>17}  "
                       + _verdict(v, m, s))
    return out


def sections(ds: xr.Dataset) -> list[str]:
    lines = ["", f"Symmetry group used: {ds.attrs.get('symmetry_group', '?')}"]
    lines += _block(ds, "mlp_matched_cos", "mlp_view",
                    "Do adjacent layers' MLPs share structure once neurons are matched? Matched vs index-paired "
                    "cos, adjacent pairs, by phase, against the residual-rotation null")
    lines += _block(ds, "head_matched_cos", "operator",
                    "Do adjacent layers' heads share operators once heads are matched? Matched vs index-paired "
                    "operator cos, adjacent pairs, by phase, against the residual-rotation null")
    if "head_matched_cos" in ds and ds.sizes.get("operator"):
        gain = adjacent(ds["head_matched_cos"] - ds["head_same_index_cos"]).mean("layer")
        lines.append(" seed 001 paired heads by index; matching raises the adjacent operator cos by "
                     + ", ".join(f"{op} {float(gain.sel(operator=op)):+.4f}" for op in ds["operator"].values.tolist()))
    return lines
