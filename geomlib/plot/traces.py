"""Small helpers the view modules share: colours, array conversion for plotly, the layer heatmap, colour bars."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import xarray as xr

PHASE_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
ANCHOR_COLOR = "#d62728"
#: a log axis labelled at each decade only (plotly's default also labels 2 and 5, or every digit, between them):
#: spectra span several decades, and each label costs the browser a text measurement on every redraw
DECADES = dict(type="log", dtick=1)


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


def layer_heatmap(z, ds: xr.Dataset, name: str, hover_z: str, colorscale="Viridis", zmin=None, zmax=None,
                  zmid=None, colorbar: dict | None = None) -> go.Heatmap:
    """An L x L heatmap (layer on y, layer_b on x) with a hover naming both layers and the value.

    Its colour bar is titled ``hover_z`` unless ``colorbar`` says otherwise; where it goes is set by
    :func:`geomlib.plot.spec.build_panel` (a strip of the panel's own column).
    """
    L = layers(ds)
    return go.Heatmap(
        z=grid(z), x=L, y=L, colorscale=colorscale, zmin=zmin, zmax=zmax, zmid=zmid, name=name,
        hovertemplate=f"layer %{{y}}<br>layer_b %{{x}}<br>{hover_z} %{{z:.4f}}<extra>{name}</extra>",
        colorbar=colorbar or dict(title=dict(text=hover_z)), showscale=True,
    )


#: ``horizontal_spacing`` of :func:`geomlib.plot.layout.build_figure` (where a panel's colour bar can sit)
SUBPLOT_SPACING = 0.06


def side_colorbar(col: int, ncols: int, title: str = "", spacing: float = SUBPLOT_SPACING) -> tuple[list, dict]:
    """Room for a colour bar inside subplot ``col`` (0-based) of a one-row figure of ``ncols`` panels.

    Returns the x-axis ``domain`` to give the panel (its column, less a strip on the right) and the
    ``colorbar`` of its heatmap, in that strip.  Plotly places colour bars in paper coordinates, not
    per subplot, and the gap between subplots holds the next panel's axis labels: the bar goes into
    its own panel's column instead.  That is right in the dashboard and in a standalone export
    (one view, one row); a figure stacking several views keeps the horizontal place only.
    """
    width = (1 - spacing * (ncols - 1)) / ncols
    x0 = col * (width + spacing)
    x1 = x0 + width
    domain = [x0, x1 - 0.17 * width]
    bar = dict(x=x1 - 0.15 * width, xanchor="left", y=0.5, yanchor="middle", len=0.9, thickness=8, xpad=0,
               outlinewidth=0, tickfont=dict(size=9), ticklabeloverflow="allow", title=dict(text=title, side="right", font=dict(size=9)))
    return domain, bar


def pivot_colorscale(zmin: float, zmax: float, pivot: float, low: str = "#2166ac", mid: str = "#f7f7f7",
                     high: str = "#b2182b") -> list:
    """A diverging colour scale over ``[zmin, zmax]`` that is ``mid`` exactly at ``pivot`` (a baseline).

    Unlike ``zmid`` the range stays the data's: a score that cannot be negative gets no negative colours.
    """
    if not (np.isfinite(zmin) and np.isfinite(zmax) and zmax > zmin) or not np.isfinite(pivot):
        return [[0.0, mid], [1.0, high]]
    p = float(np.clip((pivot - zmin) / (zmax - zmin), 0.0, 1.0))
    if p <= 0.0:
        return [[0.0, mid], [1.0, high]]
    if p >= 1.0:
        return [[0.0, low], [1.0, mid]]
    return [[0.0, low], [p, mid], [1.0, high]]


def adjacent_only(z) -> bool:
    """Whether an L x L array (or a stack of them) holds adjacent pairs only: nothing finite two layers apart."""
    z = np.asarray(z, dtype=float)
    n = z.shape[-1]
    i, j = np.indices((n, n))
    return n > 2 and bool(np.isfinite(z[..., np.abs(i - j) >= 2]).sum() == 0) and bool(np.isfinite(z).any())


def adjacent_note(z) -> str:
    """A title suffix saying why most cells of an adjacent-only L x L heatmap are empty, else ""."""
    return " · adjacent pairs only: computed for (L, L+1)" if adjacent_only(z) else ""


__all__ = ["adjacent_note", "ANCHOR_COLOR", "PHASE_COLORS", "SUBPLOT_SPACING", "adjacent_only", "contiguous", "grid", "layer_heatmap",
           "layers", "pivot_colorscale", "side_colorbar"]
