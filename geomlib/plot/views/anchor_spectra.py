"""The anchor layer's spectra: every matrix family's singular values, and the selected family's ESD with its tail.

Its own small view, apart from :mod:`.spectra` (all layers, by family): it is the one view whose data
follows the anchor, and a small figure redraws fast when the anchor moves (everywhere else the anchor
is an overlay that redraws no data).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import xarray as xr

from ...analyses.spectra.report import HEAVY_ALPHA
from ...arch.families import MATRIX_FAMILIES
from ..spec import Panel, PanelSpec, Selection, Unavailable, ViewSpec
from ..traces import DECADES, contiguous
from .spectra import FAMILY_COLORS, INFO, esd_panel, log_ranks, resolve_family, spectra_families


def families_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    """σ vs rank of the anchor layer, log-log, one line per matrix family (the selected one thicker)."""
    fams = spectra_families(ds)
    if not fams:
        raise Unavailable("no spectrum in this model")
    a = sel.anchor
    traces = []
    for f in MATRIX_FAMILIES:  # a fixed trace per canonical family: the skeleton does not depend on the model
        s = ds["sigma"].sel(family=f, layer=a).values.astype(float) if f in fams else np.zeros(0)
        s = s[np.isfinite(s) & (s > 0)]
        k = log_ranks(s.size)  # log-spaced ranks: the log-log shape, in a figure small enough to redraw fast
        traces.append(go.Scatter(
            x=contiguous(k + 1), y=contiguous(s[k]), mode="lines", name=f, showlegend=f in fams,
            line=dict(color=FAMILY_COLORS[f], width=3 if f == sel.family else 1.2),
            opacity=1.0 if f == sel.family else 0.75,
            hovertemplate=f"rank %{{x}}<br>σ %{{y:.4g}}<extra>layer {a} {f}</extra>"))
    return Panel(f"singular values of layer {a}, every family (thick: {sel.family})", traces,
                 x=dict(title="rank", **DECADES), y=dict(title="σ", **DECADES), legend_at="bottom left")


def verdict(ds: xr.Dataset, sel: Selection) -> str:
    """The anchor layer's α per family against the Gaussian null of the selected family; "" when missing."""
    fams = spectra_families(ds)
    if sel.family not in fams or "esd_alpha" not in ds:
        return ""
    a = sel.anchor
    al = {f: float(ds["esd_alpha"].sel(family=f, layer=a)) for f in fams}
    fit = {f: v for f, v in al.items() if np.isfinite(v)}
    if sel.family not in fit:
        return f"layer {a} {sel.family}: no power-law fit (too few eigenvalues)."
    heavy = [f for f, v in fit.items() if v < HEAVY_ALPHA]
    null = ""
    if "esd_alpha_null_mean" in ds and np.isfinite(float(ds["esd_alpha_null_mean"].sel(family=sel.family))):
        m = float(ds["esd_alpha_null_mean"].sel(family=sel.family))
        sd = float(ds["esd_alpha_null_std"].sel(family=sel.family)) if "esd_alpha_null_std" in ds else np.nan
        null = f" against {m:.1f} ± {sd:.1f} for Gaussian matrices of its shape"
    return (f"layer {a}: {sel.family} α = {fit[sel.family]:.2f}{null}; heavy-tailed (α < {HEAVY_ALPHA:g}) in "
            f"{len(heavy)} of {len(fit)} families{' (' + ', '.join(heavy) + ')' if heavy else ''}.")


_FAMILIES_INFO = ("The anchor layer's singular values σ against rank, log-log, one line per matrix family (the "
                  "selected family thick). Curves that stay high and straight are heavy-tailed, spread over many "
                  "directions; a curve that drops early is nearly low-rank. Null: a Gaussian matrix of the same "
                  "shape gives a flat Marchenko–Pastur curve that bends down only near its last ranks.")

VIEW = ViewSpec(
    name="anchor_spectra",
    title="the anchor layer's spectra: every family's singular values, the family's ESD and its power-law tail",
    panels=(
        PanelSpec(families_panel, "singular values of the anchor layer", ("scatter",) * len(MATRIX_FAMILIES),
                  reads=("sigma",), requires=("spectra",), depends=("family", "anchor"), info=_FAMILIES_INFO),
        PanelSpec(esd_panel, "ESD of the anchor layer", ("scatter", "scatter"),
                  reads=("sigma", "esd_alpha", "esd_alpha_xmin", "esd_ks", "esd_n_tail"), requires=("spectra",),
                  depends=("family", "anchor"), info=INFO["esd"]),
    ),
    export_vars=("esd_alpha_null_mean", "esd_alpha_null_std"),
    resolve=resolve_family,
    verdict=verdict,
)
