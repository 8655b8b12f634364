"""Index-paired (gauge-confounded) view: per-head QK / OV operators between layers, and the detail of one
(layer, layer_b) pair."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import xarray as xr

from ..ranges import heat_scale
from ..spec import Panel, PanelSpec, Selection, ViewSpec
from ..traces import adjacent_note, contiguous, layer_heatmap
from ..verdicts import adjacent, against, num, pairs, span, zscore

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
    null, null_name = None, "random-head null"
    if "head_null_mean" in ds and "head_null_std" in ds:
        pick = dict(operator=sel.operator, metric=sel.op_metric)
        null = (float(ds["head_null_mean"].sel(pick)), float(ds["head_null_std"].sel(pick)))
        if sel.head < 0:  # as in the verdict: a mean over H independent random heads is narrower by √H
            H = da.sizes["head"]
            null, null_name = (null[0], null[1] / np.sqrt(H)), f"random-head null, σ/√{H}"
    s = heat_scale(z, sel, label, null=null, null_name=null_name, signed=sel.op_metric == "cos")
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
    return Panel(f"pair ({a}, {b}): {name} per head vs random-head null",
                 [go.Bar(x=heads, y=contiguous(v), marker_color=colors, showlegend=True,
                         name=f"{METRICS[sel.op_metric]} per head",
                         hovertemplate=f"head %{{x}}<br>{name} %{{y:.4f}}<extra>pair ({a}, {b})</extra>"),
                  go.Scatter(x=[-0.5, H - 0.5, H - 0.5, -0.5],
                             y=contiguous([m - 2 * s, m - 2 * s, m + 2 * s, m + 2 * s]),
                             mode="lines", fill="toself", fillcolor="rgba(128,128,128,0.3)", line=dict(width=0),
                             name="random-head null ± 2σ", showlegend=True, hoverinfo="skip")],
                 x=dict(title="head"), y=dict(title=name))


def rescale_fit(sa: np.ndarray, sb: np.ndarray) -> tuple[float, float]:
    """(T, resid): the scalar T minimising ‖σ_a − T σ_b‖ and ‖σ_a − T σ_b‖ / ‖σ_a‖ (head_rescale_T / _resid)."""
    ok = np.isfinite(sa) & np.isfinite(sb)
    a, b = sa[ok], sb[ok]
    if not ok.any() or not (b @ b) > 0 or not (a @ a) > 0:
        return float("nan"), float("nan")
    T = float(a @ b / (b @ b))
    return T, float(np.linalg.norm(a - T * b) / np.linalg.norm(a))


def pair_spectra_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    """Singular values of the pair's operators by rank: one head's, or the mean over heads at each rank.

    For the mean the rescale T and its residual are fitted to the mean spectra (the curves shown); for
    one head they are the cached ``head_rescale_T`` / ``head_rescale_resid``.
    """
    a, b = sel.pair
    sv = ds["head_singvals"].sel(operator=sel.operator)
    if sel.head < 0:
        who = "mean over heads"
        sa, sb = (sv.sel(layer=L).mean("head").values for L in (a, b))
        T, r = rescale_fit(sa, sb)
    else:
        who = f"head {sel.head}"
        op = dict(operator=sel.operator, head=sel.head)
        sa, sb = (sv.sel(layer=L, head=sel.head).values for L in (a, b))
        T = float(ds["head_rescale_T"].sel(layer=a, layer_b=b, **op))
        r = float(ds["head_rescale_resid"].sel(layer=a, layer_b=b, **op))
    k = np.arange(len(sa))
    return Panel(f"{who}: σ_{a} vs T·σ_{b} (T={T:.3g}, resid={r:.3f})",
                 [go.Scatter(x=k, y=contiguous(sa), mode="lines", name=f"σ layer {a}", showlegend=True,
                             hovertemplate=f"rank %{{x}}<br>σ %{{y:.4g}}<extra>layer {a}, {who}</extra>"),
                  go.Scatter(x=k, y=contiguous(T * sb), mode="lines", line=dict(dash="dash"), name=f"T·σ layer {b}",
                             showlegend=True,
                             hovertemplate=f"rank %{{x}}<br>T·σ %{{y:.4g}}<extra>layer {b}, {who}</extra>")],
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


def verdict(ds: xr.Dataset, sel: Selection) -> str:
    """Adjacent same-index operator similarity (the selected metric, head or mean) against the random-head null."""
    var, op, metric = f"head_{sel.op_metric}", sel.operator, sel.op_metric
    null = ("head_null_mean", "head_null_std")
    if var not in ds or any(v not in ds for v in null) or op not in ds[var]["operator"].values \
            or metric not in ds["head_null_mean"]["metric"].values:
        return ""
    da = ds[var].sel(operator=op).transpose("layer", "layer_b", "head")
    m, s = (float(ds[v].sel(operator=op, metric=metric)) for v in null)
    if sel.head < 0:  # the null of a mean over H independent random heads is narrower by √H
        H = da.sizes["head"]
        z, who, s = da.mean("head").values, f"mean over {H} heads", s / np.sqrt(H)
    elif sel.head < da.sizes["head"]:
        z, who = da.isel(head=sel.head).values, f"head {sel.head}"
    else:
        return ""
    mask, which = pairs(ds, sel.phase)
    b = against(adjacent(z), m, s, mask)
    if b is None:
        return ""
    pa, pb = sel.pair
    here = float(z[pa, pb]) if pa != pb else float("nan")
    tail = f"; the selected pair ({pa}, {pb}): {num(here)} (z = {zscore((here - m) / s)})" if np.isfinite(here) else ""
    return (f"{op.upper()} {METRICS[metric]}, {who}, {which}: {span(b.values)} against "
            f"{b.null('random-head null')}: "
            + b.reading("same-index heads of consecutive layers are {far}more alike than random heads "
                        "(index-paired, gauge-confounded)") + tail + ".")


_INFO = {
    "operator": "Between layer and layer_b, for the head with the same index: the cosine of their QK (W_Qᵀ W_K) or "
                "OV (W_O W_V) operators (cos), or the mean cosine of the principal angles between the top-k "
                "eigenvector subspaces of the operators' symmetric parts (pa_mean); one head or the mean over heads. "
                "High: same-index heads compute similar operators; near the null: no more alike than random heads. "
                "Null: pairs of independent random-Gaussian heads of the model's shapes (about 0 for cos, about "
                "0.1 for pa_mean; the z scale uses it); index pairing is gauge-confounded, see the matched-heads view.",
    "heads": "For the selected pair: the selected metric for each head index, layer's head h against layer_b's "
             "head h (the selected head in orange). Bars above the gray band are head pairs more alike than random "
             "heads; bars inside it are not distinguishable from them. Null: the random-Gaussian head null, mean ± "
             "2σ of one head pair.",
    "spectra": "Singular values by rank of the operator of layer (solid) and of layer_b times T (dashed), T the "
               "scalar minimising ‖σ_layer − T σ_layer_b‖ and resid = ‖σ_layer − T σ_layer_b‖ / ‖σ_layer‖, for the "
               "selected head or, with the mean, for the mean over heads of the singular values at each rank. "
               "Curves that coincide (small resid) mean the two spectra have the same shape up to one scale; the "
               "y axis is logarithmic. Null: random heads of these shapes match almost as well (a random-head "
               "resid of about 0.01), so a small resid alone is not evidence of shared structure.",
    "signs": "The fraction of the top-k eigenvalues of the operators' symmetric parts whose signs agree between "
             "layer and layer_b, eigenvalues paired by magnitude rank, for growing k (the selected head or the mean "
             "over heads). 1: every sign agrees; about 0.5: no more than chance. Null: random heads give about 0.5 "
             "± 0.2, and pairing eigenvalues by rank is arbitrary, so read it as descriptive.",
}

_METRIC_VARS = ("head_cos", "head_pa_mean")
VIEW = ViewSpec(
    name="operator",
    title="index-paired (gauge-confounded) per-head operators (click a cell for the pair's detail)",
    panels=(
        PanelSpec(operator_panel, "operator", ("heatmap",), reads=_METRIC_VARS, requires=("heads",),
                  depends=("operator", "op_metric", "head", "scale", "mask_diagonal"), click="cell", depth="xy",
                  pair_box=True, info=_INFO["operator"]),
        PanelSpec(pair_heads_panel, "per-head values of the pair", ("bar", "scatter"),
                  reads=(*_METRIC_VARS, "head_null_mean", "head_null_std"), requires=("heads",),
                  depends=("operator", "op_metric", "head", "pair"), info=_INFO["heads"]),
        PanelSpec(pair_spectra_panel, "spectra", ("scatter", "scatter"),
                  reads=("head_singvals", "head_rescale_T", "head_rescale_resid"), requires=("heads",),
                  depends=("operator", "head", "pair"), info=_INFO["spectra"]),
        PanelSpec(pair_signs_panel, "sign agreement", ("scatter",), reads=("head_sign_agree",), requires=("heads",),
                  depends=("operator", "head", "pair"), info=_INFO["signs"]),
    ),
    export_vars=("head_T",),
    verdict=verdict,
)
