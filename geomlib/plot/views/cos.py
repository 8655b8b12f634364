"""Index-paired (gauge-confounded) view: raw and aligned weight cos-sim of one family, and their
difference against the null."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import xarray as xr

from ...analyses.phases import adjacent, phase_mean, phase_order
from ...analyses.weights.report import reference_null
from ..ranges import heat_scale
from ..spec import Panel, PanelSpec, Selection, ViewSpec
from ..traces import PHASE_COLORS, adjacent_note, contiguous, layer_heatmap, layers


def _null(ds: xr.Dataset, f: str) -> tuple[tuple | None, str]:
    """The per-layer null of the aligned cos-sim of family ``f`` (mean, std) and its name, or None."""
    if "aligned_null_mean" not in ds or "aligned_null_std" not in ds:
        return None, ""
    kind = reference_null(ds, f)
    sel = dict(null=kind, family=f) if "null" in ds["aligned_null_mean"].dims else dict(family=f)
    return (ds["aligned_null_mean"].sel(sel).values, ds["aligned_null_std"].sel(sel).values), f"{kind} null"


def _heat(z, ds, sel, hover, **scale) -> go.Heatmap:
    s = heat_scale(z, sel, hover, **scale)
    return layer_heatmap(s["z"], ds, sel.family, hover, s["colorscale"], s["zmin"], s["zmax"], colorbar=s["colorbar"])


def cos_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    z = ds["cos"].sel(family=sel.family).values
    null, name = _null(ds, sel.family)
    return Panel(f"raw cos-sim · {sel.family}", [_heat(z, ds, sel, "cos", null=null, null_name=name)],
                 x=dict(title="layer_b"), y=dict(title="layer"))


def delta_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    z = ds["delta"].sel(family=sel.family).values
    note = "" if np.isfinite(z).any() else f"no aligned cos-sim for {sel.family} (norm gains align trivially)"
    null, name = _null(ds, sel.family)
    if sel.scale == "z" and null is not None and "aligned_cos" in ds:
        # delta against the null-implied delta (null − raw) is the aligned cos against the null
        t = _heat(ds["aligned_cos"].sel(family=sel.family).values, ds, sel, "aligned cos (delta)",
                  null=null, null_name=name)
    else:
        t = _heat(z, ds, sel, "delta")
    return Panel(f"delta = aligned − raw · {sel.family}{adjacent_note(z)}", [t], x=dict(title="layer_b"),
                 y=dict(title="layer"), note=note)


def adjacent_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    """Adjacent-pair raw and aligned cos-sim vs depth, with the permutation (else scrambled) null band."""
    L = layers(ds)[:-1]
    f = sel.family
    raw = adjacent(ds["cos"].sel(family=f)).values
    ali = adjacent(ds["aligned_cos"].sel(family=f)).values
    kind = reference_null(ds, f)
    m = ds["aligned_null_mean"].sel(null=kind, family=f).values[:-1]
    s = ds["aligned_null_std"].sel(null=kind, family=f).values[:-1]
    band_x = np.concatenate([L, L[::-1]])
    band_y = np.concatenate([m + 2 * s, (m - 2 * s)[::-1]])
    traces = [
        go.Scatter(x=band_x, y=contiguous(band_y), mode="lines", fill="toself", fillcolor="rgba(128,128,128,0.25)",
                   line=dict(width=0), name=f"{kind} null ± 2σ", hoverinfo="skip", showlegend=False),
        go.Scatter(x=L, y=contiguous(m), mode="lines", line=dict(dash="dot", color="gray"), name="null mean",
                   showlegend=False, hovertemplate="pair %{x}-%{x}+1<br>null mean %{y:.4f}<extra></extra>"),
        go.Scatter(x=L, y=contiguous(raw), mode="lines+markers", name="raw", line=dict(color="#1f77b4"),
                   showlegend=False, hovertemplate=f"pair (%{{x}}, +1)<br>raw cos %{{y:.4f}}<extra>{f}</extra>"),
        go.Scatter(x=L, y=contiguous(ali), mode="lines+markers", name="aligned", line=dict(color="#ff7f0e"),
                   showlegend=False, hovertemplate=f"pair (%{{x}}, +1)<br>aligned cos %{{y:.4f}}<extra>{f}</extra>"),
    ]
    note = "" if np.isfinite(ali).any() else f"no aligned cos-sim for {f}"
    return Panel(f"adjacent pairs: raw (blue), aligned (orange), {kind} null band · {f}", traces,
                 x=dict(title="layer L of pair (L, L+1)"), y=dict(title="cos-sim"), note=note)


def phase_delta_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    """Per-phase mean delta with the null-implied delta (null − raw) ± 2σ, permutation null where present."""
    order = phase_order(ds)
    f = sel.family
    d = phase_mean(adjacent(ds["delta"].sel(family=f)), order).values
    raw = adjacent(ds["cos"].sel(family=f))
    kind = reference_null(ds, f)
    m = ds["aligned_null_mean"].sel(null=kind, family=f).isel(layer=slice(0, -1)) - raw
    s = ds["aligned_null_std"].sel(null=kind, family=f).isel(layer=slice(0, -1))
    nm = phase_mean(m, order).values
    ns = phase_mean(s, order).values
    colors = [PHASE_COLORS[i % len(PHASE_COLORS)] for i in range(len(order))]
    traces = [
        go.Bar(x=order, y=contiguous(d), marker_color=colors, name="mean delta", showlegend=False,
               hovertemplate=f"phase %{{x}}<br>mean delta %{{y:.4f}}<extra>{f}</extra>"),
        go.Scatter(x=order, y=contiguous(nm), mode="markers",
                   marker=dict(symbol="line-ew-open", size=22, color="black"),
                   error_y=dict(type="data", array=contiguous(2 * ns), visible=True), name="null delta ± 2σ",
                   showlegend=False, hovertemplate=f"phase %{{x}}<br>null delta %{{y:.4f}}<extra>{kind} null</extra>"),
    ]
    return Panel(f"per-phase mean delta vs {kind} null (black: ± 2σ) · {f}", traces, x=dict(title="phase"),
                 y=dict(title="delta"), categories=order)


_NULL = ("aligned_null_mean", "aligned_null_std")
VIEW = ViewSpec(
    name="cos",
    title="index-paired (gauge-confounded) weight cos-sim and delta (aligned − raw) against the null",
    panels=(
        PanelSpec(cos_panel, "raw cos-sim", ("heatmap",), reads=("cos",), requires=("weights",),
                  depends=("family", "scale", "mask_diagonal"), click="cell", depth="xy"),
        PanelSpec(delta_panel, "delta", ("heatmap",), reads=("delta",), requires=("weights",),
                  depends=("family", "scale", "mask_diagonal"), click="cell", depth="xy"),
        PanelSpec(adjacent_panel, "adjacent pairs vs null", ("scatter",) * 4, reads=("cos", "aligned_cos", *_NULL),
                  requires=("weights",), depends=("family",), click="depth", depth="x"),
        PanelSpec(phase_delta_panel, "per-phase delta", ("bar", "scatter"), reads=("delta", "cos", *_NULL),
                  requires=("weights",), depends=("family",)),
    ),
)
