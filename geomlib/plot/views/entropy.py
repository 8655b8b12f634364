"""Attention entropy per layer and head, and the phases fitted to its depth profile."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import xarray as xr

from ..spec import Panel, PanelSpec, Selection, ViewSpec
from ..traces import contiguous, grid, layers
from ..verdicts import num, pick


def entropy_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    H = ds.sizes["head"]
    e = ds["attn_entropy"].values
    return Panel("attention entropy (nats), layer x head, with phase boundaries",
                 [go.Heatmap(z=grid(e), x=np.arange(H), y=layers(ds), colorscale="Magma",
                             colorbar=dict(title=dict(text="entropy (nats)")),
                             name="entropy",
                             hovertemplate="layer %{y}<br>head %{x}<br>entropy %{z:.4f} nats<extra></extra>")],
                 x=dict(title="head"), y=dict(title="layer", autorange="reversed"))


def entropy_profile_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    m = ds["attn_entropy"].mean("head").values
    return Panel(f"mean entropy by layer · phases: {ds.attrs.get('phase_method', '?')}",
                 [go.Scatter(x=layers(ds), y=contiguous(m), mode="lines+markers", showlegend=False, name="entropy",
                             hovertemplate="layer %{x}<br>mean entropy %{y:.4f}<extra></extra>")],
                 x=dict(title="layer"), y=dict(title="nats"))


def verdict(ds: xr.Dataset, sel: Selection) -> str:
    """The fitted phases of the entropy profile (layers, mean entropy, bootstrap support); no claim against chance."""
    e = pick(ds, "attn_entropy")
    if e is None or "phase" not in ds.coords:
        return ""
    labels = [str(p) for p in ds["phase"].values]
    freq = ds["phase_boundary_freq"].values if "phase_boundary_freq" in ds.coords else np.full(len(labels), np.nan)
    mean = np.nanmean(np.where(np.isfinite(e), e, np.nan), axis=1) if np.isfinite(e).any() else None
    parts, starts = [], []
    for name in dict.fromkeys(labels):
        idx = [i for i, p in enumerate(labels) if p == name]
        m = mean[idx][np.isfinite(mean[idx])] if mean is not None else np.array([])
        parts.append(f"{name} layers {idx[0]}–{idx[-1]}" + (f" (mean {num(float(m.mean()))} nats)" if m.size else ""))
        if idx[0]:
            starts.append(f"{idx[0]}" + (f" ({freq[idx[0]]:.0%})" if np.isfinite(freq[idx[0]]) else ""))
    method = ds.attrs.get("phase_method", "?")
    k = f"{len(parts)} phase{'s' if len(parts) > 1 else ''} ({method})"
    if sel.phase != "all" and sel.phase in labels:
        head = "Phase " + next(p for p in parts if p.startswith(f"{sel.phase} ")) + f" of {k}"
    else:
        head = f"{k}: " + ", ".join(parts)
    boot = " of bootstrap replicates over text windows" if any("%" in b for b in starts) else ""
    bounds = f"; boundaries at layers {', '.join(starts)}{boot}" if starts else ""
    return head + bounds + "; no null: a segmentation of this model's entropy profile, not a test against chance."


_INFO = {
    "heat": "Attention entropy per layer and head: the Shannon entropy (nats) of each query's attention "
            "distribution, averaged over the query positions of a fixed text (named in the provenance); the "
            "white lines are the fitted phase boundaries. Bright: diffuse attention spread over many tokens; "
            "dark: sharp attention on a few (0 is all weight on one token). No null: a query at position t can "
            "reach at most ln(t + 1) nats, and the phases are a fit, not a test against chance.",
    "profile": "The mean attention entropy over heads, by layer, with the phase boundaries (dashed) fitted by "
               "change points to each layer's sorted head entropies (method in the title). Steps in the curve "
               "are what the fit splits on; how often the bootstrap over text windows finds each boundary says "
               "how stable it is. No null: the phases describe this model's profile, they are not tested "
               "against chance.",
}

VIEW = ViewSpec(
    name="entropy",
    title="attention entropy and phases",
    panels=(
        PanelSpec(entropy_panel, "attention entropy", ("heatmap",), reads=("attn_entropy",), requires=("heads",),
                  click="row", depth="y", boundaries=True, info=_INFO["heat"]),
        PanelSpec(entropy_profile_panel, "mean entropy by layer", ("scatter",), reads=("attn_entropy",),
                  requires=("heads",), click="depth", depth="x", boundaries=True, info=_INFO["profile"]),
    ),
    verdict=verdict,
)
