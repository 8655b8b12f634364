"""Index-paired (gauge-confounded) view: per-head QK / OV operators between layers, and the detail of one
(layer, layer_b) pair."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import xarray as xr

from ..ranges import heat_scale
from ..spec import Panel, PanelSpec, Selection, ViewSpec
from ..traces import adjacent_note, contiguous, layer_heatmap

#: heatmap metric -> how its axis is labelled
METRICS = {"cos": "operator cos-sim", "pa_mean": "principal-angle cos (top-k)"}


def _metric(ds: xr.Dataset, sel: Selection) -> xr.DataArray:
    """The selected operator's (layer, layer_b, head) values of the selected metric."""
    return ds[f"head_{sel.op_metric}"].sel(operator=sel.operator)


def _label(sel: Selection) -> str:
    """How the metric is named in titles and hovers: its variable and operator."""
    return f"head_{sel.op_metric} ({sel.operator})"


def operator_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    da = _metric(ds, sel)
    z = da.mean("head").values if sel.head < 0 else da.sel(head=sel.head).values
    who = "mean over heads" if sel.head < 0 else f"head {sel.head}"
    label = METRICS[sel.op_metric]
    null = None
    if "head_null_mean" in ds and "head_null_std" in ds:
        pick = dict(operator=sel.operator, metric=sel.op_metric)
        null = (float(ds["head_null_mean"].sel(pick)), float(ds["head_null_std"].sel(pick)))
    s = heat_scale(z, sel, label, null=null, null_name="random-head null", signed=sel.op_metric == "cos")
    t = layer_heatmap(s["z"], ds, _label(sel), label, s["colorscale"], s["zmin"], s["zmax"], colorbar=s["colorbar"])
    return Panel(f"{sel.operator.upper()} {label} · {who} (click a cell){adjacent_note(z)}", [t],
                 x=dict(title="layer_b"), y=dict(title="layer"))


def pair_heads_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    H = ds.sizes["head"]
    heads = np.arange(H)
    a, b = sel.pair
    name = _label(sel)
    v = _metric(ds, sel).sel(layer=a, layer_b=b).values
    m = float(ds["head_null_mean"].sel(operator=sel.operator, metric=sel.op_metric))
    s = float(ds["head_null_std"].sel(operator=sel.operator, metric=sel.op_metric))
    colors = ["#ff7f0e" if h == sel.head else "#1f77b4" for h in heads]
    return Panel(f"pair ({a}, {b}): {name} per head (gray: random-head null ± 2σ)",
                 [go.Bar(x=heads, y=contiguous(v), marker_color=colors, showlegend=False, name=name,
                         hovertemplate=f"head %{{x}}<br>{name} %{{y:.4f}}<extra>pair ({a}, {b})</extra>"),
                  go.Scatter(x=[-0.5, H - 0.5, H - 0.5, -0.5],
                             y=contiguous([m - 2 * s, m - 2 * s, m + 2 * s, m + 2 * s]),
                             fill="toself", fillcolor="rgba(128,128,128,0.3)", line=dict(width=0),
                             showlegend=False, hoverinfo="skip")],
                 x=dict(title="head"), y=dict(title=name))


def pair_spectra_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    a, b = sel.pair
    h = max(sel.head, 0)
    op = dict(operator=sel.operator, head=h)
    sa = ds["head_singvals"].sel(layer=a, **op).values
    sb = ds["head_singvals"].sel(layer=b, **op).values
    T = float(ds["head_rescale_T"].sel(layer=a, layer_b=b, **op))
    r = float(ds["head_rescale_resid"].sel(layer=a, layer_b=b, **op))
    k = np.arange(len(sa))
    return Panel(f"head {h}: σ_{a} vs T·σ_{b} (T={T:.3g}, resid={r:.3f})",
                 [go.Scatter(x=k, y=contiguous(sa), mode="lines", name=f"σ layer {a}", showlegend=False,
                             hovertemplate=f"rank %{{x}}<br>σ %{{y:.4g}}<extra>layer {a}, head {h}</extra>"),
                  go.Scatter(x=k, y=contiguous(T * sb), mode="lines", line=dict(dash="dash"), name=f"T σ layer {b}",
                             showlegend=False,
                             hovertemplate=f"rank %{{x}}<br>T·σ %{{y:.4g}}<extra>layer {b}, head {h}</extra>")],
                 x=dict(title="rank"), y=dict(title="singular value", type="log"))


def pair_signs_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    a, b = sel.pair
    da = ds["head_sign_agree"].sel(operator=sel.operator, layer=a, layer_b=b)
    v = da.mean("head").values if sel.head < 0 else da.sel(head=sel.head).values
    t = ds["topk"].values.astype(int)
    return Panel(f"pair ({a}, {b}): eigenvalue sign agreement by top-k",
                 [go.Scatter(x=t, y=contiguous(v), mode="lines+markers", showlegend=False, name="sign agreement",
                             hovertemplate=f"top-%{{x}}<br>agreement %{{y:.3f}}<extra>pair ({a}, {b})</extra>")],
                 x=dict(title="top-k", type="log"), y=dict(title="fraction agreeing", range=[0, 1.05]))


_METRIC_VARS = ("head_cos", "head_pa_mean")
VIEW = ViewSpec(
    name="operator",
    title="index-paired (gauge-confounded) per-head operators (click a cell for the pair's detail)",
    panels=(
        PanelSpec(operator_panel, "operator", ("heatmap",), reads=_METRIC_VARS, requires=("heads",),
                  depends=("operator", "op_metric", "head", "scale", "mask_diagonal"), click="cell", depth="xy", pair_box=True),
        PanelSpec(pair_heads_panel, "per-head values of the pair", ("bar", "scatter"),
                  reads=(*_METRIC_VARS, "head_null_mean", "head_null_std"), requires=("heads",),
                  depends=("operator", "op_metric", "head", "pair")),
        PanelSpec(pair_spectra_panel, "spectra", ("scatter", "scatter"),
                  reads=("head_singvals", "head_rescale_T", "head_rescale_resid"), requires=("heads",),
                  depends=("operator", "head", "pair")),
        PanelSpec(pair_signs_panel, "sign agreement", ("scatter",), reads=("head_sign_agree",), requires=("heads",),
                  depends=("operator", "head", "pair")),
    ),
    export_vars=("head_T",),
)
