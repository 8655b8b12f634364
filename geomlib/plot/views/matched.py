"""View: MLPs compared between layers after matching their neurons (gauge-aware), next to the index-paired cosine.

Neuron order is a true symmetry of the network: pairing neuron i of one layer
with neuron i of another (``mlp_same_index_cos``) measures the relabelling as
much as the weights.  ``mlp_matched_cos`` compares layers after matching the
neurons; both heatmaps share one colour scale, and the adjacent-pair line sets
the matched cosine against the residual-rotation null.

Which MLP quantity (``mlp_view``) is shown follows the family dropdown, the way
the γ view follows it only for norm gains: ``gate_proj`` shows the gate rows,
``up_proj`` / ``down_proj`` the up/down quantity (``up``, ``down`` or the
signed ``up_down``), any other family the ``mean`` the matching maximised.
The view's ``resolve`` puts that mlp_view in the selection's ``family`` field,
so the dashboard rebuilds the view only when the shown quantity changes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import xarray as xr

from ...analyses.gauge import MLP_VIEW_OF
from ...analyses.phases import adjacent
from ..ranges import heat_scale
from ..spec import Panel, PanelSpec, Selection, ViewSpec
from ..traces import adjacent_note, contiguous, layer_heatmap, layers, side_colorbar
from ..verdicts import matched_verdict

MATCHED_COLOR, SAME_COLOR = "#ff7f0e", "#7f7f7f"


def mlp_view(ds: xr.Dataset, family: str) -> str:
    """The mlp_view shown for ``family``: its own quantity when it is an MLP family, else the mean."""
    have = [str(v) for v in ds["mlp_view"].values] if "mlp_view" in ds.coords else []
    for v in (*MLP_VIEW_OF.get(family, ()), "mean"):
        if v in have:
            return v
    return have[0] if have else "mean"


def _resolve(ds: xr.Dataset, sel: Selection) -> Selection:
    return replace(sel, family=mlp_view(ds, sel.family))


def _heatmap_panel(ds: xr.Dataset, var: str, v: str, build, title: str, hover: str, sel: Selection) -> Panel:
    """The L x L heatmap of ``var`` for mlp_view ``v``, on one colour scale with the other heatmap, with its bar.

    In z mode the matched cos is scored against the rotation null (the index-paired one has none:
    it falls back to the shared symmetric range, and its colour bar says so).
    """
    z = ds[var].sel(mlp_view=v).values
    others = [ds[k].sel(mlp_view=v).values for k in ("mlp_matched_cos", "mlp_same_index_cos")
              if k != var and k in ds and v in ds[k]["mlp_view"].values]
    null = None
    if var == "mlp_matched_cos" and "mlp_matched_null_mean" in ds and "mlp_matched_null_std" in ds:
        null = (ds["mlp_matched_null_mean"].sel(mlp_view=v).values, ds["mlp_matched_null_std"].sel(mlp_view=v).values)
    s = heat_scale(z, sel, "cos", null=null, null_name="rotation null",
                   shared=others if sel.scale != "z" or null is None else ())
    t = layer_heatmap(s["z"], ds, f"{var} ({v})", hover, s["colorscale"], s["zmin"], s["zmax"], colorbar=s["colorbar"])
    domain, bar = side_colorbar([p.build for p in VIEW.panels].index(build), len(VIEW.panels))
    return Panel(f"{title} · {v}{adjacent_note(z)}", [t], x=dict(title="layer_b", domain=domain),
                 y=dict(title="layer"))


def matched_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    # resolved: sel.family is the mlp_view
    return _heatmap_panel(ds, "mlp_matched_cos", sel.family, matched_panel, "MLP cos after matching neurons",
                          "matched cos", sel)


def same_index_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    return _heatmap_panel(ds, "mlp_same_index_cos", sel.family, same_index_panel,
                          "index-paired (gauge-confounded)", "index-paired cos", sel)


def matched_adjacent_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    """Adjacent-pair matched and index-paired cos vs depth, with the residual-rotation null band."""
    v = sel.family
    L = layers(ds)[:-1]
    matched = adjacent(ds["mlp_matched_cos"].sel(mlp_view=v)).values
    same = adjacent(ds["mlp_same_index_cos"].sel(mlp_view=v)).values
    m = ds["mlp_matched_null_mean"].sel(mlp_view=v).values[:-1]
    s = ds["mlp_matched_null_std"].sel(mlp_view=v).values[:-1]
    band_x = np.concatenate([L, L[::-1]])
    band_y = np.concatenate([m + 2 * s, (m - 2 * s)[::-1]])
    traces = [
        go.Scatter(x=band_x, y=contiguous(band_y), mode="lines", fill="toself", fillcolor="rgba(128,128,128,0.25)",
                   line=dict(width=0), name="rotation null ± 2σ", hoverinfo="skip", showlegend=True),
        go.Scatter(x=L, y=contiguous(m), mode="lines", line=dict(dash="dot", color="gray"), name="null mean",
                   showlegend=True, hovertemplate="pair (%{x}, +1)<br>null mean %{y:.4f}<extra></extra>"),
        go.Scatter(x=L, y=contiguous(matched), mode="lines+markers", name="adjacent matched cos",
                   line=dict(color=MATCHED_COLOR), showlegend=True,
                   hovertemplate=f"pair (%{{x}}, +1)<br>matched cos %{{y:.4f}}<extra>{v}</extra>"),
        go.Scatter(x=L, y=contiguous(same), mode="lines+markers", name="adjacent index-paired cos",
                   line=dict(color=SAME_COLOR, dash="dash"), showlegend=True,
                   hovertemplate=f"pair (%{{x}}, +1)<br>index-paired cos %{{y:.4f}}<extra>{v}</extra>"),
    ]
    note = "" if np.isfinite(matched).any() else f"no matched cos-sim for {v}"
    return Panel(f"adjacent pairs: matched and index-paired vs rotation null · {v}", traces,
                 x=dict(title="layer L of pair (L, L+1)"), y=dict(title="cos-sim"), note=note, legend_at="bottom right")


def verdict(ds: xr.Dataset, sel: Selection) -> str:
    """Adjacent matched MLP cos (the selected mlp_view) against the residual-rotation null; "" without them."""
    v = sel.family  # resolved: the mlp_view
    return matched_verdict(ds, sel.phase, "mlp", dict(mlp_view=v), f"MLP neurons ({v})", "matched cos",
                           "consecutive layers share neurons {far}beyond chance")


_INFO = {
    "matched": "Cosine between the MLPs of layer and layer_b after layer_b's neurons are permuted (with the "
               "per-neuron sign/scale the activation allows) to best match layer's: gate compares gate rows, "
               "up_down the rank-1 maps down_i up_iᵀ, mean the average the matching maximised. Red: the layers "
               "share the same neurons up to relabelling; white: nothing beyond 0; the diagonal (a layer with "
               "itself) is blank. Null: the same matching after a random (Haar) rotation of layer+1's residual "
               "side, drawn for adjacent pairs only; it is above 0, since matching alone finds some similarity "
               "(the z scale scores every cell against it).",
    "same": "The same MLP cosine with neuron i of layer paired with neuron i of layer_b, without matching. Near 0 "
            "even for similar layers, because neuron order is arbitrary: what it measures is confounded by that "
            "relabelling symmetry. No null of its own: read it against the matched panel, on the same colour scale.",
    "adjacent": "For each adjacent pair (L, L+1): the matched MLP cosine, the index-paired one, and the "
                "residual-rotation null as its mean ± 2σ band. A matched line above the band means consecutive "
                "layers share neurons beyond what matching finds between unrelated layers; the gap to the "
                "index-paired line is what neuron relabelling hides. Null: layer L+1's residual side rotated at "
                "random (Haar) and rematched, one draw per pair, σ pooled over the pairs.",
}


_NULL = ("mlp_matched_null_mean", "mlp_matched_null_std")
VIEW = ViewSpec(
    name="matched",
    title="gauge-aware MLPs: layers compared after matching neurons, against index pairing and the null",
    panels=(
        PanelSpec(matched_panel, "MLP matched cos", ("heatmap",), reads=("mlp_matched_cos",), requires=("gauge",),
                  depends=("family", "scale", "mask_diagonal"), click="cell", depth="xy", pair_box=True,
                  info=_INFO["matched"]),
        PanelSpec(same_index_panel, "MLP index-paired cos", ("heatmap",), reads=("mlp_same_index_cos",),
                  requires=("gauge",), depends=("family", "scale", "mask_diagonal"), click="cell", depth="xy", pair_box=True,
                  info=_INFO["same"]),
        PanelSpec(matched_adjacent_panel, "adjacent matched pairs vs null", ("scatter",) * 4,
                  reads=("mlp_matched_cos", "mlp_same_index_cos", *_NULL), requires=("gauge",), depends=("family",),
                  click="depth", depth="x", info=_INFO["adjacent"]),
    ),
    export_vars=("mlp_frac_fixed",),
    resolve=_resolve,
    verdict=verdict,
)
