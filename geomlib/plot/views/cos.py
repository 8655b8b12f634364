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
from ..verdicts import adjacent as adjacent_values
from ..verdicts import against, median, pairs, pick, span


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
                   line=dict(width=0), name=f"{kind} null ± 2σ", hoverinfo="skip", showlegend=True),
        go.Scatter(x=L, y=contiguous(m), mode="lines", line=dict(dash="dot", color="gray"), name=f"{kind} null mean",
                   showlegend=True, hovertemplate="pair %{x}-%{x}+1<br>null mean %{y:.4f}<extra></extra>"),
        go.Scatter(x=L, y=contiguous(raw), mode="lines+markers", name="adjacent raw cos", line=dict(color="#1f77b4"),
                   showlegend=True, hovertemplate=f"pair (%{{x}}, +1)<br>raw cos %{{y:.4f}}<extra>{f}</extra>"),
        go.Scatter(x=L, y=contiguous(ali), mode="lines+markers", name="adjacent aligned cos",
                   line=dict(color="#ff7f0e"), showlegend=True,
                   hovertemplate=f"pair (%{{x}}, +1)<br>aligned cos %{{y:.4f}}<extra>{f}</extra>"),
    ]
    note = "" if np.isfinite(ali).any() else f"no aligned cos-sim for {f}"
    return Panel(f"adjacent pairs: raw and aligned vs {kind} null · {f}", traces,
                 x=dict(title="layer L of pair (L, L+1)"), y=dict(title="cos-sim"), note=note, legend_at="bottom right")


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
        go.Bar(x=order, y=contiguous(d), marker_color=colors, name="mean delta (aligned − raw)", showlegend=True,
               hovertemplate=f"phase %{{x}}<br>mean delta %{{y:.4f}}<extra>{f}</extra>"),
        go.Scatter(x=order, y=contiguous(nm), mode="markers",
                   marker=dict(symbol="line-ew-open", size=22, color="black"),
                   error_y=dict(type="data", array=contiguous(2 * ns), visible=True), name=f"{kind} null delta ± 2σ",
                   showlegend=True, hovertemplate=f"phase %{{x}}<br>null delta %{{y:.4f}}<extra>{kind} null</extra>"),
    ]
    return Panel(f"per-phase mean delta vs {kind} null · {f}", traces, x=dict(title="phase"),
                 y=dict(title="delta"), categories=order)


def verdict(ds: xr.Dataset, sel: Selection) -> str:
    """Adjacent aligned cos of the family against its permutation (else scrambled) null; raw cos alone for gains."""
    f = sel.family
    raw, ali = pick(ds, "cos", family=f), pick(ds, "aligned_cos", family=f)
    if raw is None:
        return ""
    mask, which = pairs(ds, sel.phase)
    r = adjacent_values(raw)
    if not np.isfinite(r[mask]).any():
        return ""
    b = None
    if ali is not None and "aligned_null_mean" in ds and f in ds["aligned_null_mean"]["family"].values:
        kind = reference_null(ds, f)
        m, s = pick(ds, "aligned_null_mean", null=kind, family=f), pick(ds, "aligned_null_std", null=kind, family=f)
        b = against(adjacent_values(ali), m[:-1], s[:-1], mask) if m is not None and s is not None else None
    if b is None:  # norm gains: no aligned cos, no null
        return (f"{f}, {which}: raw cos {span(r[mask & np.isfinite(r)])} (index-paired); no aligned cos and so "
                "no null for this family: nothing is claimed against chance.")
    return (f"{f}, {which}: aligned cos {span(b.values)} against {b.null(f'{kind} null')}: "
            + b.reading("index-paired rows of consecutive layers line up {far}beyond a random relabelling "
                        "(gauge-confounded)")
            + f"; raw cos {span(r[mask & np.isfinite(r)])}, median {median(r, mask):.2g}.")


_INFO = {
    "cos": "Frobenius cosine ⟨W_L, W_L'⟩ / (‖W_L‖ ‖W_L'‖) of the selected family's weight matrices, neuron i "
           "(head h) of one layer against neuron i (head h) of the other. Red: the matrices point the same way; "
           "white: orthogonal, as unrelated matrices of this size nearly are; the diagonal is blank. It is "
           "gauge-confounded (relabelling neurons changes it) and has no null of its own: the z scale scores it "
           "against the aligned-cos null.",
    "delta": "delta = aligned cos − raw cos, the aligned cos being the cosine after the best orthogonal rotation "
             "of the residual-stream side, ‖W_Lᵀ W_L'‖_* / (‖W_L‖ ‖W_L'‖) (adjacent pairs by default). Large: "
             "the layers agree once the residual basis is rotated, far more than index-paired; near 0: the rotation "
             "adds nothing. Null: aligned cos after relabelling layer L+1 by a random true symmetry (permutation "
             "null; the z scale shows the aligned cos against it); norm gains have none.",
    "adjacent": "For each adjacent pair (L, L+1): the raw cos, the aligned cos and the null of the aligned cos as "
                "its mean ± 2σ band. Aligned above the band: index-paired neurons/heads of consecutive layers line "
                "up beyond a random relabelling by the layer's own symmetries; inside it: the rotation alone "
                "explains the alignment. Null: layer L+1 relabelled by a random neuron/head permutation (the same "
                "function) and realigned, σ pooled over pairs (the scrambled null where no permutation null was "
                "drawn).",
    "phase": "Per phase: the mean delta (aligned − raw) over the adjacent pairs whose first layer is in it (bars, "
             "phase colours), with the null-implied delta (null aligned cos − raw cos) ± 2σ (black). A bar above "
             "its black marker means alignment beyond the null in that phase; the selected phase is shaded. Null: "
             "the permutation (else scrambled) null of the aligned cos, less the observed raw cos, averaged over "
             "the phase's pairs.",
}

_NULL = ("aligned_null_mean", "aligned_null_std")
VIEW = ViewSpec(
    name="cos",
    title="index-paired (gauge-confounded) weight cos-sim and delta (aligned − raw) against the null",
    panels=(
        PanelSpec(cos_panel, "raw cos-sim", ("heatmap",), reads=("cos",), requires=("weights",),
                  depends=("family", "scale", "mask_diagonal"), click="cell", depth="xy", info=_INFO["cos"]),
        PanelSpec(delta_panel, "delta", ("heatmap",), reads=("delta",), requires=("weights",),
                  depends=("family", "scale", "mask_diagonal"), click="cell", depth="xy", info=_INFO["delta"]),
        PanelSpec(adjacent_panel, "adjacent pairs vs null", ("scatter",) * 4, reads=("cos", "aligned_cos", *_NULL),
                  requires=("weights",), depends=("family",), click="depth", depth="x", info=_INFO["adjacent"]),
        PanelSpec(phase_delta_panel, "per-phase delta", ("bar", "scatter"), reads=("delta", "cos", *_NULL),
                  requires=("weights",), depends=("family",), info=_INFO["phase"]),
    ),
    verdict=verdict,
)
