"""The training-dynamics view of a sweep (:func:`geomlib.sweep`): how far each layer moved between checkpoints.

Left: a layer × checkpoint heatmap of one ``moved_*`` variable (the cosine of
layer L at a checkpoint with layer L at the previous one; 1 = did not move),
with its colour bar.  Right: one layer's trajectory over training steps, with
the training loss on a second axis when the sweep's manifest recorded it.
Pure: a sweep Dataset in, a plotly figure out (the dashboard and exports show it).
"""

from __future__ import annotations

import warnings

import numpy as np
import plotly.graph_objects as go
import xarray as xr
from plotly.subplots import make_subplots

from ..errors import InvalidArgumentError
from .traces import grid

#: the leading dimension of each kind of moved_* variable, and the coordinate shown when none is picked
#: (None: the mean over that dimension)
_LEAD = {"mlp_view": "mean", "operator": None, "family": None, "norm": None}


def metrics(ds: xr.Dataset) -> list[str]:
    """The ``moved_*`` variables of a sweep Dataset that hold at least one finite value."""
    return [v for v in ds.data_vars if v.startswith("moved_") and bool(np.isfinite(ds[v].values).any())]


def movement(ds: xr.Dataset, var: str, pick: str | None = None) -> tuple[xr.DataArray, str]:
    """``var`` as a (checkpoint, layer) array and its label: ``pick`` selects the leading coordinate (a view,
    operator or family), else the default one (MLP: ``mean``) or the mean over it.

    Raises
    ------
    InvalidArgumentError
        ``ds`` is not a sweep with ``var``, or ``pick`` is not one of its coordinates.
    """
    lead = [d for d in ds[var].dims if d not in ("checkpoint", "layer")] if var in ds else []
    if "checkpoint" not in ds.dims or var not in ds or "layer" not in ds[var].dims or len(lead) > 1:
        raise InvalidArgumentError(f"{var!r} is not a variable of this sweep Dataset; choose one of "
                                   f"{', '.join(metrics(ds)) or 'none (was it swept with compare=False?)'}")
    da = ds[var]
    label = var.removeprefix("moved_")
    if not lead:
        return da.transpose("checkpoint", "layer"), label
    dim = lead[0]
    names = [str(c) for c in da[dim].values]
    want = pick if pick is not None else _LEAD.get(dim)
    if want is not None:
        if want not in names:
            raise InvalidArgumentError(f"{want!r} is not a {dim} of {var}; choose one of {', '.join(names)}")
        return da.sel({dim: want}).transpose("checkpoint", "layer"), f"{label} ({want})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a coordinate all-NaN (a family a model lacks)
        return da.mean(dim, skipna=True).transpose("checkpoint", "layer"), f"{label} (mean over {dim})"


def _ticks(ds: xr.Dataset) -> list[str]:
    steps = ds["step"].values if "step" in ds.coords else None
    return [f"{c}" if steps is None or steps[k] < 0 or str(steps[k]) in str(c) else f"{c} ({steps[k]})"
            for k, c in enumerate(ds["checkpoint"].values)]


def verdict(ds: xr.Dataset, var: str = "moved_mlp_matched_cos", pick: str | None = None) -> str:
    """One sentence: which layer moved most between consecutive checkpoints, and whether training settled."""
    z, label = movement(ds, var, pick)
    vals = z.values  # (checkpoint, layer); a checkpoint without a previous one is NaN
    ticks = [str(c) for c in ds["checkpoint"].values]
    rows = [k for k in range(vals.shape[0]) if np.isfinite(vals[k]).any()]
    if not rows:
        return f"{label}: no checkpoint has a previous one to compare with."
    k, L = np.unravel_index(np.nanargmin(np.where(np.isfinite(vals), vals, np.inf)), vals.shape)
    # the checkpoint it was compared with (a failed checkpoint in between is skipped: not always k - 1)
    prev = str(z["previous"].values[k]) if "previous" in z.coords and str(z["previous"].values[k]) \
        else ticks[max(k - 1, 0)]
    last = rows[-1]
    low = int(np.nanargmin(vals[last]))
    loss = ""
    if "loss" in ds.coords and np.isfinite(ds["loss"].values).sum() >= 2:
        lv = ds["loss"].values[np.isfinite(ds["loss"].values)]
        loss = f"; training loss {lv[0]:.3g} → {lv[-1]:.3g}"
    return (f"{label}: layer {L} moved most, cos {vals[k, L]:.3f} from {prev} to {ticks[k]}; in the last interval "
            f"(to {ticks[last]}) every layer kept cos ≥ {vals[last, low]:.3f} (lowest: layer {low}){loss}.")


def training_figure(ds: xr.Dataset, var: str = "moved_mlp_matched_cos", pick: str | None = None,
                    layer: int = -1) -> go.Figure:
    """The two-panel training-dynamics figure of sweep ``ds`` (see the module docstring)."""
    z, label = movement(ds, var, pick)
    n = z.sizes["layer"]
    if not -n <= layer < n:
        raise InvalidArgumentError(f"layer {layer} is out of range for {n} layers; use 0..{n - 1} or -1")
    layer %= n
    vals = z.values  # (checkpoint, layer)
    finite = vals[np.isfinite(vals)]
    # a colour range the data fills (cosines of a layer with itself between checkpoints cluster near 1)
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    spacing = 0.2  # the heatmap's colour bar and the trajectory's axis title sit in the gap
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=spacing,
                        specs=[[{}, {"secondary_y": True}]],
                        subplot_titles=(f"{label}, each layer vs itself a checkpoint earlier" if len(label) < 24 else label,
                                        f"layer {layer} over training"))
    ticks = _ticks(ds)
    fig.add_trace(go.Heatmap(
        z=grid(vals.T), x=ticks, y=z["layer"].values.astype(int), colorscale="Viridis", zmin=lo, zmax=hi,
        colorbar=dict(title=dict(text="cos vs previous checkpoint", side="right"), x=0.55 * (1 - spacing) + 0.01, xanchor="left",
                      len=0.9, thickness=10),
        hovertemplate="layer %{y}<br>%{x}<br>cos %{z:.4f}<extra></extra>", name=label), row=1, col=1)
    steps = ds["step"].values if "step" in ds.coords else np.arange(ds.sizes["checkpoint"])
    fig.add_trace(go.Scatter(x=steps, y=vals[:, layer], mode="lines+markers", name=f"{label}, layer {layer}",
                             text=ticks, hovertemplate="%{text}<br>cos %{y:.4f}<extra></extra>"), row=1, col=2)
    if "loss" in ds.coords:
        fig.add_trace(go.Scatter(x=steps, y=ds["loss"].values, mode="lines", name="training loss",
                                 line=dict(dash="dot", color="#888")), row=1, col=2, secondary_y=True)
        fig.update_yaxes(title_text="loss", row=1, col=2, secondary_y=True)
    fig.update_xaxes(title_text="checkpoint", row=1, col=1)
    fig.update_yaxes(title_text="layer", autorange="reversed", row=1, col=1)  # layer 0 on top, as elsewhere
    fig.update_xaxes(title_text="training step", row=1, col=2)
    fig.update_yaxes(title_text="cos vs previous checkpoint", row=1, col=2, secondary_y=False)
    fig.update_layout(height=420, margin=dict(l=60, r=60, t=60, b=60), legend=dict(orientation="h", y=-0.25),
                      title=dict(text=f"training dynamics · {ds.attrs.get('sweep_name', 'sweep')}", x=0.01))
    return fig


__all__ = ["metrics", "movement", "training_figure", "verdict"]
