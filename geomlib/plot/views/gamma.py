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
                      error_y=dict(type="data", array=contiguous(2 * s[ok]), visible=True), showlegend=False,
                      name="shuffle null", hovertemplate="PC%{x}<br>shuffle null %{y:.4f}<extra>± 2σ</extra>")
    return Panel(f"explained variance of unit {f} PCs (black: coordinate-shuffle null ± 2σ)",
                 [go.Bar(x=pcs, y=contiguous(ex), showlegend=False, name="explained",
                         hovertemplate="PC%{x}<br>%{y:.4f}<extra></extra>"), null],
                 x=dict(title="PC"), y=dict(title="fraction"))


def gamma_norm_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    f = _family(ds, sel)
    g = ds["gamma_norm"].sel(family=f).values
    return Panel(f"‖γ‖ of {f} by layer",
                 [go.Scatter(x=layers(ds), y=contiguous(g), mode="lines+markers", showlegend=False, name="norm",
                             hovertemplate="layer %{x}<br>‖γ‖ %{y:.4f}<extra></extra>")],
                 x=dict(title="layer"), y=dict(title="‖γ‖"))


VIEW = ViewSpec(
    name="gamma",
    title="norm-gain directions",
    panels=(
        PanelSpec(gamma_scatter_panel, "γ PCA", ("scatter",), reads=("gamma_pca_scores", "gamma_norm"),
                  requires=("weights",), depends=("family",), click="point"),
        PanelSpec(gamma_explained_panel, "γ explained variance", ("bar", "scatter"),
                  reads=("gamma_pca_explained", "gamma_norm"), requires=("weights",), depends=("family",)),
        PanelSpec(gamma_norm_panel, "‖γ‖ by layer", ("scatter",), reads=("gamma_norm",), requires=("weights",),
                  depends=("family",), click="depth", depth="x"),
    ),
    # the nulls are exported, not read: a dataset without them still draws the bars
    export_vars=("gamma_proj_top1", "gamma_resid_top1", "gamma_pca_null_mean", "gamma_pca_null_std"),
    resolve=_resolve,
)
