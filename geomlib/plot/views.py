"""Plotly panels of the dashboard, as pure functions of (Dataset, Selection).

Every panel returns a fixed number of traces whatever the data (empty traces
where an analysis is missing), so the dashboard's figures can update
traces in place.  The same builders make the standalone figures that are
exported for writeups, so the screen and the paper show the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import plotly.graph_objects as go
import xarray as xr

from ..analyses.phases import adjacent, phase_mean

PHASE_COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
ANCHOR_COLOR = "#d62728"


@dataclass(frozen=True)
class Selection:
    """What the user selected; the dashboard's single shared state, as a value."""

    anchor: int = -1
    family: str = "q_proj"
    phase: str = "all"
    operator: str = "qk"
    head: int = -1  # -1: mean over heads
    op_metric: str = "cos"  # or "pa_mean"
    pair: tuple[int, int] | None = None

    def resolved(self, ds: xr.Dataset) -> "Selection":
        n = ds.sizes["layer"]
        anchor = self.anchor % n
        # the pair is chosen by clicking a cell; until then the last adjacent pair.  It does not follow
        # the anchor, so moving the anchor only moves overlays (fast: no data is redrawn)
        pair = self.pair if self.pair is not None else (max(n - 2, 0), n - 1)
        return replace(self, anchor=anchor, pair=pair)


@dataclass
class Panel:
    """Traces of one subplot plus what its axes and overlays need."""

    title: str
    traces: list
    x: dict = field(default_factory=dict)
    y: dict = field(default_factory=dict)
    depth_x: bool = False  # x is a layer axis: phase bands and the anchor line go here
    depth_y: bool = False
    note: str = ""  # shown in the panel when data is missing
    boundaries: bool = False  # draw every fitted phase boundary (the entropy view)
    pair_box: bool = False  # mark the selected (layer, layer_b) cell
    points: np.ndarray | None = None  # (n_layers, 2) where each layer sits: the anchor is ringed there
    categories: list | None = None  # phase names on a categorical x axis: the chosen phase is shaded


def _c(a) -> np.ndarray:
    """Contiguous float arrays (plotly's widget serializer drops non-contiguous ones silently)."""
    return np.ascontiguousarray(np.asarray(a, dtype=float))


def _z(a) -> list:
    """A heatmap grid as nested lists, NaN as None.

    plotly's widget serializer sends only 1-D arrays as binary buffers; a 2-D
    array goes as JSON, where NaN is not valid: jupyter_client then re-encodes
    every such message and prints a warning into the Voila page.
    """
    a = np.asarray(a, dtype=float)
    return np.where(np.isfinite(a), a, None).tolist()


def _layers(ds: xr.Dataset) -> np.ndarray:
    return np.ascontiguousarray(ds["layer"].values.astype(int))


def _missing(var: str, ds: xr.Dataset) -> bool:
    return var not in ds or not np.isfinite(ds[var].values).any()


def _heatmap(z, ds, name, hover_z, colorscale="Viridis", zmin=None, zmax=None, zmid=None, colorbar_x=None):
    L = _layers(ds)
    return go.Heatmap(
        z=_z(z), x=L, y=L, colorscale=colorscale, zmin=zmin, zmax=zmax, zmid=zmid, name=name,
        hovertemplate=f"layer %{{y}}<br>layer_b %{{x}}<br>{hover_z} %{{z:.4f}}<extra>{name}</extra>",
        colorbar=dict(len=0.2, thickness=10, x=colorbar_x) if colorbar_x is not None else dict(len=0.2, thickness=10),
        showscale=False,
    )


# -- view 1: weights -------------------------------------------------------------------------------
def cos_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    if _missing("cos", ds):
        n = ds.sizes["layer"]
        return Panel("raw cos-sim", [_heatmap(np.full((n, n), np.nan), ds, "cos", "cos")],
                     note="weights analysis not computed", depth_x=True, depth_y=True)
    z = ds["cos"].sel(family=sel.family).values
    return Panel(f"raw cos-sim · {sel.family}", [_heatmap(z, ds, sel.family, "cos", "RdBu", -1, 1, 0)],
                 x=dict(title="layer_b"), y=dict(title="layer"), depth_x=True, depth_y=True)


def delta_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    n = ds.sizes["layer"]
    if _missing("delta", ds):
        return Panel("delta", [_heatmap(np.full((n, n), np.nan), ds, "delta", "delta")],
                     note="weights analysis not computed", depth_x=True, depth_y=True)
    z = ds["delta"].sel(family=sel.family).values
    note = "" if np.isfinite(z).any() else f"no aligned cos-sim for {sel.family} (norm gains align trivially)"
    return Panel(f"delta = aligned − raw · {sel.family}", [_heatmap(z, ds, sel.family, "delta", "Viridis", 0, 1)],
                 x=dict(title="layer_b"), y=dict(title="layer"), depth_x=True, depth_y=True, note=note)


def adjacent_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    """Adjacent-pair raw and aligned cos-sim vs depth, with the scrambled null band."""
    L = _layers(ds)[:-1]
    empty = [go.Scatter(x=L, y=_c(np.full(len(L), np.nan)), name=n, showlegend=False) for n in range(4)]
    if _missing("aligned_cos", ds):
        return Panel("adjacent pairs vs null", empty, depth_x=True, note="weights analysis not computed")
    f = sel.family
    raw = adjacent(ds["cos"].sel(family=f)).values
    ali = adjacent(ds["aligned_cos"].sel(family=f)).values
    m = ds["aligned_null_mean"].sel(null="scrambled", family=f).values[:-1]
    s = ds["aligned_null_std"].sel(null="scrambled", family=f).values[:-1]
    band_x = np.concatenate([L, L[::-1]])
    band_y = np.concatenate([m + 2 * s, (m - 2 * s)[::-1]])
    traces = [
        go.Scatter(x=band_x, y=_c(band_y), fill="toself", fillcolor="rgba(128,128,128,0.25)",
                   line=dict(width=0), name="scrambled null ± 2σ", hoverinfo="skip", showlegend=False),
        go.Scatter(x=L, y=_c(m), mode="lines", line=dict(dash="dot", color="gray"), name="null mean",
                   showlegend=False, hovertemplate="pair %{x}-%{x}+1<br>null mean %{y:.4f}<extra></extra>"),
        go.Scatter(x=L, y=_c(raw), mode="lines+markers", name="raw", line=dict(color="#1f77b4"), showlegend=False,
                   hovertemplate=f"pair (%{{x}}, +1)<br>raw cos %{{y:.4f}}<extra>{f}</extra>"),
        go.Scatter(x=L, y=_c(ali), mode="lines+markers", name="aligned", line=dict(color="#ff7f0e"),
                   showlegend=False, hovertemplate=f"pair (%{{x}}, +1)<br>aligned cos %{{y:.4f}}<extra>{f}</extra>"),
    ]
    note = "" if np.isfinite(ali).any() else f"no aligned cos-sim for {f}"
    return Panel(f"adjacent pairs: raw (blue), aligned (orange), null band · {f}", traces,
                 x=dict(title="layer L of pair (L, L+1)"), y=dict(title="cos-sim"), depth_x=True, note=note)


def phase_delta_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    """Per-phase mean delta with the null-implied delta (scrambled null − raw) ± 2σ."""
    order = list(dict.fromkeys(str(p) for p in ds["phase"].values))
    empty = [go.Bar(x=order, y=_c(np.full(len(order), np.nan)), showlegend=False),
             go.Scatter(x=order, y=_c(np.full(len(order), np.nan)), mode="markers", showlegend=False)]
    if _missing("delta", ds):
        return Panel("per-phase delta", empty, note="weights analysis not computed")
    f = sel.family
    d = phase_mean(adjacent(ds["delta"].sel(family=f)), order).values
    raw = adjacent(ds["cos"].sel(family=f))
    m = ds["aligned_null_mean"].sel(null="scrambled", family=f).isel(layer=slice(0, -1)) - raw
    s = ds["aligned_null_std"].sel(null="scrambled", family=f).isel(layer=slice(0, -1))
    nm = phase_mean(m, order).values
    ns = phase_mean(s, order).values
    colors = [PHASE_COLORS[i % len(PHASE_COLORS)] for i in range(len(order))]
    traces = [
        go.Bar(x=order, y=_c(d), marker_color=colors, name="mean delta", showlegend=False,
               hovertemplate=f"phase %{{x}}<br>mean delta %{{y:.4f}}<extra>{f}</extra>"),
        go.Scatter(x=order, y=_c(nm), mode="markers", marker=dict(symbol="line-ew-open", size=22, color="black"),
                   error_y=dict(type="data", array=_c(2 * ns), visible=True), name="null delta ± 2σ",
                   showlegend=False, hovertemplate="phase %{x}<br>null delta %{y:.4f}<extra>scrambled null</extra>"),
    ]
    return Panel(f"per-phase mean delta vs null (black: ± 2σ) · {f}", traces, x=dict(title="phase"),
                 y=dict(title="delta"), categories=order)


# -- view 2: per-head operators ------------------------------------------------------------------------
def _op_var(sel: Selection) -> str:
    return f"{sel.operator}_{sel.op_metric}"


def operator_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    n = ds.sizes["layer"]
    var = _op_var(sel)
    if _missing(var, ds):
        return Panel("operator", [_heatmap(np.full((n, n), np.nan), ds, var, var)],
                     note="heads analysis not computed for this model", depth_x=True, depth_y=True)
    da = ds[var]
    z = da.mean("head").values if sel.head < 0 else da.sel(head=sel.head).values
    who = "mean over heads" if sel.head < 0 else f"head {sel.head}"
    label = {"cos": "operator cos-sim", "pa_mean": "principal-angle cos (top-k)"}[sel.op_metric]
    return Panel(f"{sel.operator.upper()} {label} · {who} (click a cell)",
                 [_heatmap(z, ds, var, label, "RdBu" if sel.op_metric == "cos" else "Viridis",
                           -1 if sel.op_metric == "cos" else 0, 1, 0 if sel.op_metric == "cos" else None)],
                 x=dict(title="layer_b"), y=dict(title="layer"), depth_x=True, depth_y=True, pair_box=True)


def pair_heads_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    var = _op_var(sel)
    H = ds.sizes.get("head", 0)
    heads = np.arange(H)
    if _missing(var, ds):
        return Panel("per-head values of the pair", [go.Bar(x=heads, y=_c(np.zeros(H) * np.nan), showlegend=False),
                                                      go.Scatter(x=[], y=[], showlegend=False)],
                     note="heads analysis not computed for this model")
    a, b = sel.pair
    v = ds[var].sel(layer=a, layer_b=b).values
    m = float(ds[f"{sel.operator}_null_mean"].sel(metric=sel.op_metric))
    s = float(ds[f"{sel.operator}_null_std"].sel(metric=sel.op_metric))
    colors = ["#ff7f0e" if h == sel.head else "#1f77b4" for h in heads]
    return Panel(f"pair ({a}, {b}): {var} per head (gray: random-head null ± 2σ)",
                 [go.Bar(x=heads, y=_c(v), marker_color=colors, showlegend=False, name=var,
                         hovertemplate=f"head %{{x}}<br>{var} %{{y:.4f}}<extra>pair ({a}, {b})</extra>"),
                  go.Scatter(x=[-0.5, H - 0.5, H - 0.5, -0.5], y=_c([m - 2 * s, m - 2 * s, m + 2 * s, m + 2 * s]),
                             fill="toself", fillcolor="rgba(128,128,128,0.3)", line=dict(width=0),
                             showlegend=False, hoverinfo="skip")],
                 x=dict(title="head"), y=dict(title=var))


def pair_spectra_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    var = f"{sel.operator}_singvals"
    if _missing(var, ds):
        return Panel("spectra", [go.Scatter(x=[], y=[], showlegend=False), go.Scatter(x=[], y=[], showlegend=False)],
                     note="heads analysis not computed for this model")
    a, b = sel.pair
    h = max(sel.head, 0)
    sa = ds[var].sel(layer=a, head=h).values
    sb = ds[var].sel(layer=b, head=h).values
    T = float(ds[f"{sel.operator}_rescale_T"].sel(layer=a, layer_b=b, head=h))
    r = float(ds[f"{sel.operator}_rescale_resid"].sel(layer=a, layer_b=b, head=h))
    k = np.arange(len(sa))
    return Panel(f"head {h}: σ_{a} vs T·σ_{b} (T={T:.3g}, resid={r:.3f})",
                 [go.Scatter(x=k, y=_c(sa), mode="lines", name=f"σ layer {a}", showlegend=False,
                             hovertemplate=f"rank %{{x}}<br>σ %{{y:.4g}}<extra>layer {a}, head {h}</extra>"),
                  go.Scatter(x=k, y=_c(T * sb), mode="lines", line=dict(dash="dash"), name=f"T σ layer {b}",
                             showlegend=False,
                             hovertemplate=f"rank %{{x}}<br>T·σ %{{y:.4g}}<extra>layer {b}, head {h}</extra>")],
                 x=dict(title="rank"), y=dict(title="singular value", type="log"))


def pair_signs_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    var = f"{sel.operator}_sign_agree"
    if _missing(var, ds):
        return Panel("sign agreement", [go.Scatter(x=[], y=[], showlegend=False)],
                     note="heads analysis not computed for this model")
    a, b = sel.pair
    da = ds[var].sel(layer=a, layer_b=b)
    v = da.mean("head").values if sel.head < 0 else da.sel(head=sel.head).values
    t = ds["topk"].values.astype(int)
    return Panel(f"pair ({a}, {b}): eigenvalue sign agreement by top-k",
                 [go.Scatter(x=t, y=_c(v), mode="lines+markers", showlegend=False, name="sign agreement",
                             hovertemplate=f"top-%{{x}}<br>agreement %{{y:.3f}}<extra>pair ({a}, {b})</extra>")],
                 x=dict(title="top-k", type="log"), y=dict(title="fraction agreeing", range=[0, 1.05]))


# -- view 3: gamma ------------------------------------------------------------------------------------------
def norm_family(ds: xr.Dataset, sel: Selection) -> str | None:
    """The norm family the γ view shows: the selected one if it is a norm gain, else the first available."""
    if "gamma_norm" not in ds:
        return None
    ok = [str(f) for f in ds["family"].values if np.isfinite(ds["gamma_norm"].sel(family=f).values).all()]
    if sel.family in ok:
        return sel.family
    return ok[0] if ok else None


def gamma_scatter_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    f = norm_family(ds, sel)
    if f is None:
        return Panel("γ PCA", [go.Scatter(x=[], y=[], showlegend=False)],
                     note="no norm gains in this model's cached analyses")
    sc = ds["gamma_pca_scores"].sel(family=f)
    pc1, pc2 = sc.isel(pc=0).values, sc.isel(pc=1).values
    labels = [str(p) for p in ds["phase"].values]
    order = list(dict.fromkeys(labels))
    colors = [PHASE_COLORS[order.index(p) % len(PHASE_COLORS)] for p in labels]
    layers = np.arange(len(labels))
    # one trace, coloured per point: every trace costs the browser work on each redraw
    trace = go.Scatter(
        x=_c(pc1), y=_c(pc2), mode="markers+text", text=[str(int(L)) for L in layers], textposition="top center",
        textfont=dict(size=8), customdata=np.ascontiguousarray(np.stack([layers, np.array(labels, dtype=object)], 1)),
        marker=dict(size=9, color=colors), name="layers", showlegend=False,
        hovertemplate="layer %{customdata[0]}<br>PC1 %{x:.4f}<br>PC2 %{y:.4f}<extra>phase %{customdata[1]}</extra>")
    return Panel(f"γ PCA of unit {f} gains (colour: phase; click a point)", [trace],
                 x=dict(title="PC1"), y=dict(title="PC2"), points=np.stack([pc1, pc2], axis=1))


def gamma_explained_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    f = norm_family(ds, sel)
    if f is None:
        return Panel("γ explained variance", [go.Bar(x=[], y=[], showlegend=False)], note="no norm gains")
    ex = ds["gamma_pca_explained"].sel(family=f).values
    ex = ex[np.isfinite(ex)][:10]
    return Panel(f"explained variance of unit {f} PCs",
                 [go.Bar(x=np.arange(1, len(ex) + 1), y=_c(ex), showlegend=False, name="explained",
                         hovertemplate="PC%{x}<br>%{y:.4f}<extra></extra>")],
                 x=dict(title="PC"), y=dict(title="fraction"))


def gamma_norm_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    f = norm_family(ds, sel)
    L = _layers(ds)
    if f is None:
        return Panel("‖γ‖ by layer", [go.Scatter(x=L, y=_c(np.full(len(L), np.nan)), showlegend=False)],
                     depth_x=True, note="no norm gains")
    g = ds["gamma_norm"].sel(family=f).values
    return Panel(f"‖γ‖ of {f} by layer", [go.Scatter(x=L, y=_c(g), mode="lines+markers", showlegend=False,
                                                      name="norm", hovertemplate="layer %{x}<br>‖γ‖ %{y:.4f}<extra></extra>")],
                 x=dict(title="layer"), y=dict(title="‖γ‖"), depth_x=True)


# -- view 4: entropy and phases ---------------------------------------------------------------------
def entropy_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    L = _layers(ds)
    H = ds.sizes.get("head", 1)
    if _missing("attn_entropy", ds):
        return Panel("attention entropy", [go.Heatmap(z=_z(np.full((len(L), H), np.nan)), showscale=False)],
                     note="attention entropy not computed (heads analysis without --no-dynamic)", depth_y=True,
                     boundaries=True)
    e = ds["attn_entropy"].values
    return Panel("attention entropy (nats), layer x head, with phase boundaries",
                 [go.Heatmap(z=_z(e), x=np.arange(H), y=L, colorscale="Magma", showscale=False, name="entropy",
                             hovertemplate="layer %{y}<br>head %{x}<br>entropy %{z:.4f} nats<extra></extra>")],
                 x=dict(title="head"), y=dict(title="layer", autorange="reversed"), depth_y=True, boundaries=True)


def entropy_profile_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    L = _layers(ds)
    if _missing("attn_entropy", ds):
        return Panel("mean entropy by layer", [go.Scatter(x=L, y=_c(np.full(len(L), np.nan)), showlegend=False)],
                     depth_x=True, note="attention entropy not computed", boundaries=True)
    m = ds["attn_entropy"].mean("head").values
    return Panel(f"mean entropy by layer · phases: {ds.attrs.get('phase_method', '?')}",
                 [go.Scatter(x=L, y=_c(m), mode="lines+markers", showlegend=False, name="entropy",
                             hovertemplate="layer %{x}<br>mean entropy %{y:.4f}<extra></extra>")],
                 x=dict(title="layer"), y=dict(title="nats"), depth_x=True, boundaries=True)


#: views (one per row of the dashboard, one exported figure each) and their panels
VIEWS: dict[str, tuple] = {
    "cos": (cos_panel, delta_panel, adjacent_panel, phase_delta_panel),
    "operator": (operator_panel, pair_heads_panel, pair_spectra_panel, pair_signs_panel),
    "gamma": (gamma_scatter_panel, gamma_explained_panel, gamma_norm_panel),
    "entropy": (entropy_panel, entropy_profile_panel),
}

from .names import VIEW_NAMES  # noqa: E402  (checked here so the CLI's list cannot drift)

assert tuple(VIEWS) == VIEW_NAMES, (tuple(VIEWS), VIEW_NAMES)
