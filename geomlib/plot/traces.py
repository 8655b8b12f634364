"""Small helpers the view modules share: colours, array conversion for plotly, the layer heatmap."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import xarray as xr

PHASE_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
ANCHOR_COLOR = "#d62728"


def contiguous(a) -> np.ndarray:
    """Contiguous float arrays (plotly's widget serializer drops non-contiguous ones silently)."""
    return np.ascontiguousarray(np.asarray(a, dtype=float))


def grid(a) -> list:
    """A heatmap grid as nested lists, NaN as None.

    plotly's widget serializer sends only 1-D arrays as binary buffers; a 2-D
    array goes as JSON, where NaN is not valid: jupyter_client then re-encodes
    every such message and prints a warning into the Voila page.
    """
    a = np.asarray(a, dtype=float)
    return np.where(np.isfinite(a), a, None).tolist()


def layers(ds: xr.Dataset) -> np.ndarray:
    """The layer numbers, as contiguous ints."""
    return np.ascontiguousarray(ds["layer"].values.astype(int))


def layer_heatmap(z, ds: xr.Dataset, name: str, hover_z: str, colorscale: str = "Viridis", zmin=None, zmax=None,
                  zmid=None) -> go.Heatmap:
    """An L x L heatmap (layer on y, layer_b on x) with a hover naming both layers and the value."""
    L = layers(ds)
    return go.Heatmap(
        z=grid(z), x=L, y=L, colorscale=colorscale, zmin=zmin, zmax=zmax, zmid=zmid, name=name,
        hovertemplate=f"layer %{{y}}<br>layer_b %{{x}}<br>{hover_z} %{{z:.4f}}<extra>{name}</extra>",
        colorbar=dict(len=0.2, thickness=10), showscale=False,
    )


__all__ = ["ANCHOR_COLOR", "PHASE_COLORS", "contiguous", "grid", "layer_heatmap", "layers"]
