"""Directions of the norm gains (γ) across depth: PCA of the unit gains (against the
coordinate-shuffle null), their norms."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import xarray as xr

from ...analyses.phases import phase_order
from ..spec import Panel, PanelSpec, Selection, Unavailable, ViewSpec
from ..traces import PHASE_COLORS, contiguous, layers
from ..verdicts import num, pick, zscore


def norm_families(ds: xr.Dataset) -> list[str]:
    """Families that are norm gains (a finite ‖γ‖ at every layer)."""
    if "gamma_norm" not in ds:
        return []
    g = ds["gamma_norm"]
    ok = np.isfinite(g).all([d for d in g.dims if d != "family"])
    return [str(f) for f, good in zip(g["family"].values, ok.values) if good]


def norm_family(ds: xr.Dataset, sel: Selection) -> str | None:
    """The norm family the γ view shows: the selected one if it is a norm gain, else the first available."""
    ok = norm_families(ds)
    if sel.family in ok:
        return sel.family
    return ok[0] if ok else None


def _resolve(ds: xr.Dataset, sel: Selection) -> Selection:
    # the view follows the family dropdown only when a norm gain is chosen: choosing a projection keeps
    # the γ view as it was (and does not rebuild it)
    return replace(sel, family=norm_family(ds, sel) or sel.family)


def _family(ds: xr.Dataset, sel: Selection) -> str:
    if sel.family not in norm_families(ds):
        raise Unavailable("no norm gains in this model's cached analyses")
    return sel.family


def gamma_scatter_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    f = _family(ds, sel)
    sc = ds["gamma_pca_scores"].sel(family=f)
    pc1, pc2 = sc.isel(pc=0).values, sc.isel(pc=1).values
    labels = [str(p) for p in ds["phase"].values]
    order = phase_order(ds)
    colors = [PHASE_COLORS[order.index(p) % len(PHASE_COLORS)] for p in labels]
    idx = np.arange(len(labels))
    # one trace, coloured per point: every trace costs the browser work on each redraw
    trace = go.Scatter(
        x=contiguous(pc1), y=contiguous(pc2), mode="markers+text", text=[str(int(L)) for L in idx],
        textposition="top center", textfont=dict(size=8),
        customdata=np.ascontiguousarray(np.stack([idx, np.array(labels, dtype=object)], 1)),
        marker=dict(size=9, color=colors), name="layers", showlegend=False,
        hovertemplate="layer %{customdata[0]}<br>PC1 %{x:.4f}<br>PC2 %{y:.4f}<extra>phase %{customdata[1]}</extra>")
    return Panel(f"γ PCA of unit {f} gains (colour: phase; click a point)", [trace],
                 x=dict(title="PC1"), y=dict(title="PC2"), points=np.stack([pc1, pc2], axis=1))


def gamma_explained_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    """Explained variance of the first PCs, with the coordinate-shuffle null (mean ± 2σ) where it was computed."""
    f = _family(ds, sel)
    ex = ds["gamma_pca_explained"].sel(family=f).values
    ex = ex[np.isfinite(ex)][:10]
    pcs = np.arange(1, len(ex) + 1)
    # datasets cached before the null existed, or computed with null_draws=0, draw the bars alone (no
    # note: the bars are complete); the scatter stays, empty, so the trace skeleton does not depend on the data
    m = s = np.full(len(ex), np.nan)
    if "gamma_pca_null_mean" in ds:
        m = ds["gamma_pca_null_mean"].sel(family=f).values[: len(ex)]
        s = ds["gamma_pca_null_std"].sel(family=f).values[: len(ex)]
    ok = np.isfinite(m) & np.isfinite(s)
    null = go.Scatter(x=pcs[ok], y=contiguous(m[ok]), mode="markers",
                      marker=dict(symbol="line-ew-open", size=18, color="black"),
                      error_y=dict(type="data", array=contiguous(2 * s[ok]), visible=True), showlegend=bool(ok.any()),
                      name="coordinate-shuffle null ± 2σ", hovertemplate="PC%{x}<br>shuffle null %{y:.4f}<extra>± 2σ</extra>")
    return Panel(f"explained variance of unit {f} PCs vs coordinate-shuffle null",
                 [go.Bar(x=pcs, y=contiguous(ex), showlegend=True, name="explained variance",
                         hovertemplate="PC%{x}<br>%{y:.4f}<extra></extra>"), null],
                 x=dict(title="PC"), y=dict(title="fraction"))


def gamma_norm_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    f = _family(ds, sel)
    g = ds["gamma_norm"].sel(family=f).values
    return Panel(f"‖γ‖ of {f} by layer",
                 [go.Scatter(x=layers(ds), y=contiguous(g), mode="lines+markers", showlegend=False, name="norm",
                             hovertemplate="layer %{x}<br>‖γ‖ %{y:.4f}<extra></extra>")],
                 x=dict(title="layer"), y=dict(title="‖γ‖"))


def verdict(ds: xr.Dataset, sel: Selection) -> str:
    """PC1 of the unit gains of the shown norm family against the coordinate-shuffle null; "" without gains."""
    f = sel.family  # resolved: a norm family when the model has one
    ex = pick(ds, "gamma_pca_explained", family=f) if f in norm_families(ds) else None
    if ex is None or not np.isfinite(ex[0]):
        return ""
    pc1, n = float(ex[0]), ds.sizes["layer"]
    head = f"{f} gains, all {n} layers: PC1 of the unit γ directions explains {num(pc1)} of their variance"
    m, s = pick(ds, "gamma_pca_null_mean", family=f), pick(ds, "gamma_pca_null_std", family=f)
    if m is None or s is None or not (np.isfinite(m[0]) and np.isfinite(s[0]) and s[0] > 0):
        return head + "; this cache has no coordinate-shuffle null (gamma_null_draws=0 or an older cache), so " \
                      "nothing is claimed against chance."
    z = (pc1 - m[0]) / s[0]
    if z > 2:
        say = f"the layers' gains share coordinate-aligned directions {'far ' if z >= 10 else ''}beyond chance"
    elif z < -2:
        say = "less concentrated than gains with no common axis"
    else:
        say = "no more shared direction than shuffled gains give"
    return f"{head} against a coordinate-shuffle null of {num(m[0])} ± {num(s[0])} (z = {zscore(z)}): {say}."


_INFO = {
    "pca": "Each layer's norm gain γ, scaled to unit length, centred over layers and projected on the first two "
           "principal components of those unit vectors: one point per layer, coloured by phase. Layers close "
           "together have gains pointing the same way; the path through depth shows how the gain direction drifts. "
           "No null for the positions: the explained-variance panel tests whether the components are stronger "
           "than shuffled gains give.",
    "explained": "The fraction of the variance of the centred unit gain vectors explained by each principal "
                 "component (bars), with the coordinate-shuffle null as mean ± 2σ (black). A bar above its null "
                 "marker means the layers' gains share directions beyond chance; PC1 matters most. Null: each "
                 "layer's γ coordinates shuffled independently (norms and value distributions kept, shared axes "
                 "destroyed) and the PCA redone, gamma_null_draws times; absent from older caches.",
    "norm": "‖γ_L‖, the Euclidean norm of each layer's effective norm gain vector. It shows how strongly each "
            "layer's normalisation rescales its input, as a trend over depth. No null: a norm has no chance level "
            "here, only its shape along depth is read.",
}

VIEW = ViewSpec(
    name="gamma",
    title="norm-gain directions",
    panels=(
        PanelSpec(gamma_scatter_panel, "γ PCA", ("scatter",), reads=("gamma_pca_scores", "gamma_norm"),
                  requires=("weights",), depends=("family",), click="point", info=_INFO["pca"]),
        PanelSpec(gamma_explained_panel, "γ explained variance", ("bar", "scatter"),
                  reads=("gamma_pca_explained", "gamma_norm"), requires=("weights",), depends=("family",),
                  info=_INFO["explained"]),
        PanelSpec(gamma_norm_panel, "‖γ‖ by layer", ("scatter",), reads=("gamma_norm",), requires=("weights",),
                  depends=("family",), click="depth", depth="x", info=_INFO["norm"]),
    ),
    # the nulls are exported, not read: a dataset without them still draws the bars
    export_vars=("gamma_proj_top1", "gamma_resid_top1", "gamma_pca_null_mean", "gamma_pca_null_std"),
    resolve=_resolve,
    verdict=verdict,
)
