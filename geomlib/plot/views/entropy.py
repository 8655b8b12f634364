"""Attention entropy per layer and head, and the phases fitted to its depth profile."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import xarray as xr

from ..spec import Panel, PanelSpec, Selection, ViewSpec
from ..traces import contiguous, grid, layers


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


VIEW = ViewSpec(
    name="entropy",
    title="attention entropy and phases",
    panels=(
        PanelSpec(entropy_panel, "attention entropy", ("heatmap",), reads=("attn_entropy",), requires=("heads",),
                  click="row", depth="y", boundaries=True),
        PanelSpec(entropy_profile_panel, "mean entropy by layer", ("scatter",), reads=("attn_entropy",),
                  requires=("heads",), click="depth", depth="x", boundaries=True),
    ),
)
