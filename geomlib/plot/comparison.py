"""Compare-mode figures: two models (or checkpoints) side by side, their difference, and their cross geometry.

:func:`side_by_side` sets one L × L variable of model A's own analyses next to
model B's and their difference A − B (on a symmetric range around 0, so that
where they agree reads white); :func:`cross_figure` shows a
:func:`geomlib.compare` Dataset: A's layers against B's, matched (gauge-aware)
and index-paired, each with its colour bar.  Pure: Datasets in, a plotly
figure out.
"""

from __future__ import annotations

import warnings

import numpy as np
import plotly.graph_objects as go
import xarray as xr
from plotly.subplots import make_subplots

from ..errors import InvalidArgumentError
from .traces import grid


def _square(ds: xr.Dataset, var: str, pick: dict | None, who: str) -> xr.DataArray:
    """``ds[var]`` reduced to (layer, layer_b): ``pick`` selects the other dims, else their mean."""
    if var not in ds:
        raise InvalidArgumentError(f"model {who} has no variable {var!r}; compute the analysis that makes it")
    da = ds[var]
    if pick:
        da = da.sel({k: v for k, v in pick.items() if k in da.dims})
    rest = [d for d in da.dims if d not in ("layer", "layer_b")]
    if {"layer", "layer_b"} - set(da.dims):
        raise InvalidArgumentError(f"{var!r} is not a layer × layer variable (dims {da.dims})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return (da.mean(rest) if rest else da).transpose("layer", "layer_b")


#: the layer × layer variables compare mode offers: label, and the dimension a second control picks from
#: (the coordinates both models have); any other dimension is averaged
VARIABLES = {
    "mlp_matched_cos": ("MLP cos, neurons matched (gauge-aware)", "mlp_view"),
    "head_matched_cos": ("head operator cos, heads matched (gauge-aware)", "operator"),
    "composition_mean": ("head composition (mean over head pairs)", "composition"),
    "cos": ("weight cos, index-paired (seed metric)", "family"),
    "mlp_same_index_cos": ("MLP cos, index-paired", "mlp_view"),
}


def variables(a: xr.Dataset, b: xr.Dataset) -> list[str]:
    """The :data:`VARIABLES` both Datasets hold with finite values."""
    return [v for v in VARIABLES if v in a and v in b and bool(np.isfinite(a[v].values).any())
            and bool(np.isfinite(b[v].values).any())]


def choices(a: xr.Dataset, b: xr.Dataset, var: str) -> list[str]:
    """The coordinates of ``var``'s picked dimension that both models have ([] when it has none)."""
    dim = VARIABLES.get(var, ("", ""))[1]
    if var not in a or var not in b or dim not in a[var].dims or dim not in b[var].dims:
        return []
    def finite(ds):  # a family the architecture lacks is all-NaN, not absent
        da = ds[var]
        ok = np.isfinite(da).any([d for d in da.dims if d != dim])
        return [str(c) for c, good in zip(da[dim].values, ok.values) if good]

    theirs = set(finite(b))
    return [c for c in finite(a) if c in theirs]


def squares(a: xr.Dataset, b: xr.Dataset, var: str, pick: dict | None = None,
            names: tuple[str, str] = ("A", "B")) -> tuple[xr.DataArray, xr.DataArray]:
    """``var`` of each model as (layer, layer_b): ``pick`` selects other dims, the rest are averaged."""
    return _square(a, var, pick, names[0]), _square(b, var, pick, names[1])


def _offdiag(z: np.ndarray) -> np.ndarray:
    return z[~np.eye(*z.shape, dtype=bool)]


def verdict(a: xr.Dataset, b: xr.Dataset, var: str, pick: dict | None = None,
            names: tuple[str, str] = ("A", "B")) -> str:
    """One sentence: how far A's ``var`` is from B's, cell by cell when the depths agree."""
    za, zb = squares(a, b, var, pick, names)
    label = VARIABLES.get(var, (var, ""))[0]
    adj = [np.nanmean(np.diagonal(z.values, 1)) if z.shape[0] > 1 and np.isfinite(np.diagonal(z.values, 1)).any()
           else np.nan for z in (za, zb)]
    adj_txt = f"adjacent-pair mean {adj[0]:.3f} in {names[0]}, {adj[1]:.3f} in {names[1]}"
    if za.shape != zb.shape:
        return (f"{label}: {names[0]} has {za.shape[0]} layers, {names[1]} {zb.shape[0]}, so there is no cell-by-cell "
                f"difference (geomlib compare gives a depth-normalized profile); {adj_txt}.")
    d = za.values - zb.values
    off = np.abs(np.where(np.eye(*d.shape, dtype=bool), np.nan, d))
    if not np.isfinite(off).any():
        return f"{label}: no off-diagonal cell is finite in both models."
    i, j = np.unravel_index(np.nanargmax(off), off.shape)
    if np.nanmax(off) == 0:
        return f"{label}: identical in {names[0]} and {names[1]} (every cell); {adj_txt}."
    return (f"{label}: off-diagonal cells differ by mean |{names[0]} − {names[1]}| = {np.nanmean(off):.3g}, most at "
            f"layer {i} vs layer_b {j} ({d[i, j]:+.3g}); {adj_txt}.")


def _bar(x: float, title: str) -> dict:
    return dict(title=dict(text=title, side="right"), x=x, xanchor="left", len=0.85, thickness=9)


def side_by_side(a: xr.Dataset, b: xr.Dataset, var: str = "mlp_matched_cos", pick: dict | None = None,
                 names: tuple[str, str] = ("A", "B")) -> go.Figure:
    """``var`` of model A, of model B, and A − B (same depths required for the difference)."""
    za, zb = _square(a, var, pick, names[0]), _square(b, var, pick, names[1])
    # the range the off-diagonal cells fill: a layer against itself is 1 by construction and would squeeze
    # the 0.01-level structure into one colour (the diagonal saturates instead)
    off = [z.values[~np.eye(*z.shape, dtype=bool)] for z in (za, zb)]
    both = np.concatenate(off)
    both = both[np.isfinite(both)]
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    same = za.shape == zb.shape
    diff = za.values - zb.values if same else np.full(za.shape, np.nan)
    d = np.nanmax(np.abs(diff)) if np.isfinite(diff).any() else 1.0
    gap = 0.1
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=gap,
                        subplot_titles=(f"{names[0]}: {var}", f"{names[1]}: {var}",
                                        f"{names[0]} − {names[1]}" if same else "difference: depths differ"))
    width = (1 - 2 * gap) / 3
    for k, (z, title) in enumerate(((za, var), (zb, var))):
        fig.add_trace(go.Heatmap(z=grid(z.values), x=z["layer_b"].values, y=z["layer"].values, colorscale="Viridis",
                                 zmin=lo, zmax=hi, showscale=k == 1, colorbar=_bar(2 * width + gap + 0.005, title)
                                 if k == 1 else None, name=names[k],
                                 hovertemplate="layer %{y}<br>layer_b %{x}<br>%{z:.4f}<extra></extra>"), 1, k + 1)
    fig.add_trace(go.Heatmap(z=grid(diff), x=za["layer_b"].values, y=za["layer"].values, colorscale="RdBu_r",
                             zmin=-d, zmax=d, zmid=0, colorbar=_bar(1.0, "difference"), name="difference",
                             hovertemplate="layer %{y}<br>layer_b %{x}<br>Δ %{z:.4f}<extra></extra>"), 1, 3)
    fig.update_xaxes(title_text="layer_b")
    fig.update_yaxes(autorange="reversed")  # layer 0 on top, as in every L × L view of the dashboard
    fig.update_yaxes(title_text="layer", col=1)
    fig.update_layout(height=380, margin=dict(l=60, r=80, t=60, b=50))
    return fig


def cross_figure(ds: xr.Dataset) -> go.Figure:
    """A compare Dataset (layer-to-layer): A's layers (rows) against B's (columns), matched MLP cos, matched
    head cos (mean over operators) and raw cos (mean over families), one colour bar each."""
    if ds.attrs.get("comparison") != "layer-to-layer":
        raise InvalidArgumentError(f"this compare is a {ds.attrs.get('comparison', 'non-compare')!r} result; the "
                                   "cross figure needs a layer-to-layer compare (models of one layout)")
    panels = [(v, pick, title) for v, pick, title in (
        ("mlp_matched_cos", {"mlp_view": "mean"}, "MLP, neurons matched"),
        ("head_matched_cos", None, "heads, matched (QK/OV mean)"),
        ("raw_cos", None, "raw, index-paired (family mean)")) if v in ds]
    gap = 0.1
    width = (1 - gap * (len(panels) - 1)) / len(panels)
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=gap, subplot_titles=[t for *_, t in panels])
    for k, (v, pick, _) in enumerate(panels):
        z = _square(ds, v, pick, "A/B")
        fig.add_trace(go.Heatmap(z=grid(z.values), x=z["layer_b"].values, y=z["layer"].values, colorscale="Viridis",
                                 colorbar=_bar(k * (width + gap) + width + 0.005, "cos"), name=v,
                                 hovertemplate="A layer %{y}<br>B layer %{x}<br>cos %{z:.4f}<extra></extra>"),
                      1, k + 1)
    fig.update_xaxes(title_text=f"B: {ds.attrs.get('source_b', 'B')}"[:60])
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(title_text=f"A: {ds.attrs.get('source_a', 'A')}"[:60], col=1)
    fig.update_layout(height=380, margin=dict(l=70, r=60, t=60, b=60))
    return fig


__all__ = ["VARIABLES", "choices", "cross_figure", "side_by_side", "squares", "variables", "verdict"]
