"""Singular-value spectra over depth (WeightWatcher-style): σ vs rank of every layer, α and stable rank by layer,
against Gaussian matrices of the same shapes (the anchor layer's own spectra: :mod:`.anchor_spectra`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import xarray as xr
from plotly.colors import sample_colorscale

from ...analyses.spectra.report import HEAVY_ALPHA, VERY_HEAVY_ALPHA, layer_runs, spectra_families
from ...analyses.spectra.report import verdict as family_verdict
from ...arch.families import MATRIX_FAMILIES
from ..spec import Panel, PanelSpec, Selection, Unavailable, ViewSpec
from ..traces import ANCHOR_COLOR, DECADES, contiguous, layers

#: points per layer in the depth-coloured cloud: log-spaced ranks keep the log-log shape and the
#: panel small enough to resend on every anchor move
CLOUD_POINTS = 48
#: the σ-vs-rank panel's layers in this many depth groups, one line trace (and colour) each
DEPTH_GROUPS = 6
#: histogram bins of the anchor's ESD (log-spaced)
ESD_BINS = 30
FAMILY_COLORS = dict(zip(MATRIX_FAMILIES, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                                           "#e377c2")))


def resolve_family(ds: xr.Dataset, sel: Selection) -> Selection:
    # a norm gain has no spectrum: the view keeps showing a matrix family (the first, until one is chosen)
    fams = spectra_families(ds)
    return sel if sel.family in fams or not fams else replace(sel, family=fams[0])


def _family(ds: xr.Dataset, sel: Selection) -> str:
    if sel.family not in spectra_families(ds):
        raise Unavailable(f"no spectrum of {sel.family} in this model")
    return sel.family


def log_ranks(k: int, points: int = CLOUD_POINTS) -> np.ndarray:
    """About ``points`` distinct 0-based indices of ranks 1..k, evenly spaced in log rank."""
    return np.unique(np.round(np.geomspace(1, k, min(points, k))).astype(int) - 1) if k else np.zeros(0, int)


def _depth_groups(n: int, groups: int = DEPTH_GROUPS) -> list[np.ndarray]:
    """Layers 0..n-1 in ``groups`` consecutive runs (the last ones empty when n < groups)."""
    return [g for g in np.array_split(np.arange(n), groups)]


def spectrum_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    """σ vs rank, log-log: every layer's curve (log-spaced ranks), coloured by depth in a few groups.

    One line trace per depth group (a fixed number, with a legend), no markers: ~1.2k SVG markers made
    this figure the slowest of the page to redraw.  It does not follow the anchor (the anchor_spectra view does).
    """
    f = _family(ds, sel)
    s = ds["sigma"].sel(family=f).values.astype(float)  # (layer, sv_rank)
    k = int(np.isfinite(s).any(axis=0).sum())
    idx = log_ranks(k)
    n = s.shape[0]
    rank = ds["sv_rank"].values
    colors = sample_colorscale("Viridis", [i / max(DEPTH_GROUPS - 1, 1) for i in range(DEPTH_GROUPS)])
    traces = []
    for group, color in zip(_depth_groups(n), colors):
        # each layer's points followed by a gap (NaN) so that the layers' lines do not join
        xs = np.concatenate([np.r_[rank[idx], np.nan] for _ in group]) if len(group) else np.zeros(0)
        ys = np.concatenate([np.r_[s[L, idx], np.nan] for L in group]) if len(group) else np.zeros(0)
        ls = np.repeat(group, len(idx) + 1).astype(float)
        ys = np.where(ys > 0, ys, np.nan)  # a log axis has no 0 (an all-zero layer was warned about)
        name = (f"layers {group[0]}–{group[-1]}" if len(group) > 1 else f"layer {group[0]}") if len(group) else ""
        traces.append(go.Scatter(x=contiguous(xs), y=contiguous(ys), mode="lines", name=name,
                                 line=dict(color=color, width=1), customdata=contiguous(ls), showlegend=bool(len(group)),
                                 hovertemplate="layer %{customdata:.0f}<br>rank %{x}<br>σ %{y:.4g}<extra>" + f
                                 + "</extra>"))
    return Panel(f"singular values by rank · {f} (colour: depth)", traces,
                 x=dict(title="rank", **DECADES), y=dict(title="σ", **DECADES), legend_at="bottom left")


def _esd_histogram(lam: np.ndarray, bins: int = ESD_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Log-spaced density histogram of positive ``lam``: geometric bin centres and counts / (n · width)."""
    edges = np.geomspace(lam.min(), lam.max(), bins + 1) if lam.max() > lam.min() else np.array([lam.min() * 0.9,
                                                                                                lam.max() * 1.1])
    counts, edges = np.histogram(lam, edges)
    dens = counts / (lam.size * np.diff(edges))
    return np.sqrt(edges[:-1] * edges[1:]), np.where(counts > 0, dens, np.nan)


def esd_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    """The anchor layer's ESD of λ = σ² (log-log density) with the fitted power law from x_min."""
    f, a = _family(ds, sel), sel.anchor
    s = ds["sigma"].sel(family=f, layer=a).values.astype(float)
    s = s[np.isfinite(s)]
    # the numerical-rank cut of the analysis, at float32 storage precision
    lam = (s[s > s.max() * 1e-6] ** 2) if s.size and s.max() > 0 else np.zeros(0)
    if lam.size == 0:
        raise Unavailable(f"layer {a} {f} has no spectrum (NaN or zero weights)")
    x, dens = _esd_histogram(lam)
    alpha, xmin, ks, nt = (float(ds[v].sel(family=f, layer=a)) for v in
                           ("esd_alpha", "esd_alpha_xmin", "esd_ks", "esd_n_tail"))
    hist = go.Scatter(x=contiguous(x), y=contiguous(dens), mode="lines+markers", line=dict(shape="hvh", color="#555"),
                      marker=dict(size=4), name="ESD", showlegend=True,
                      hovertemplate="λ %{x:.4g}<br>density %{y:.4g}<extra>layer " + str(a) + "</extra>")
    if np.isfinite(alpha):
        lx = np.geomspace(xmin, lam.max(), 40)
        # the CSN tail density, scaled by the tail's share of all eigenvalues to sit on the full histogram
        ly = (nt / lam.size) * (alpha - 1) / xmin * (lx / xmin) ** (-alpha)
        title = f"ESD of layer {a} {f}: α = {alpha:.2f} from x_min = {xmin:.3g} (KS {ks:.3f}, {int(nt)} λ)"
    else:
        lx = ly = np.zeros(0)
        title = f"ESD of layer {a} {f}: no power-law fit (too few eigenvalues)"
    fit = go.Scatter(x=contiguous(lx), y=contiguous(ly), mode="lines", line=dict(color=ANCHOR_COLOR, dash="dash"),
                     name=f"power law α = {alpha:.2f}" if np.isfinite(alpha) else "power law", showlegend=True,
                     hovertemplate="λ %{x:.4g}<br>fit %{y:.4g}<extra>power law</extra>")
    return Panel(title, [hist, fit], x=dict(title="λ = σ²", type="log"), y=dict(title="density", type="log"),
                 legend_at="bottom left")


def _by_family(ds: xr.Dataset, sel: Selection, var: str, null: str, label: str) -> Panel:
    """``var`` over depth, one line per matrix family (the selected one thicker), and its Gaussian null."""
    fams = spectra_families(ds)
    if sel.family not in fams:
        raise Unavailable(f"no {var} of {sel.family} in this model")
    L = layers(ds)
    traces = []
    for f in MATRIX_FAMILIES:  # a fixed trace per canonical family: the skeleton does not depend on the model
        on = f in fams
        y = ds[var].sel(family=f).values if on else np.zeros(0)
        traces.append(go.Scatter(
            # markers on the selected family only: every SVG marker is redrawn on each change of the view
            x=L if on else np.zeros(0, int), y=contiguous(y), mode="lines+markers" if f == sel.family else "lines",
            name=f, showlegend=on,
            line=dict(color=FAMILY_COLORS[f], width=3 if f == sel.family else 1.2),
            marker=dict(size=6 if f == sel.family else 3), opacity=1.0 if f == sel.family else 0.7,
            hovertemplate=f"layer %{{x}}<br>{label} %{{y:.3f}}<extra>{f}</extra>"))
    m = float(ds[null].sel(family=sel.family)) if null in ds else np.nan
    traces.append(go.Scatter(
        x=L[[0, -1]] if np.isfinite(m) else np.zeros(0, int), y=contiguous([m, m] if np.isfinite(m) else []),
        mode="lines", line=dict(color=FAMILY_COLORS[sel.family], dash="dot", width=1.5),
        name=f"Gaussian null · {sel.family}", showlegend=bool(np.isfinite(m)),
        hovertemplate=f"Gaussian matrices of {sel.family}'s shape: {label} %{{y:.3f}}<extra>null</extra>"))
    return Panel(f"{label} by layer (thick: {sel.family}; dotted: its Gaussian null)", traces,
                 x=dict(title="layer"), y=dict(title=label, type="log"), legend_at="top right")


def alpha_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    return _by_family(ds, sel, "esd_alpha", "esd_alpha_null_mean", "α")


def stable_rank_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    return _by_family(ds, sel, "stable_rank", "stable_rank_null_mean", "stable rank")


def verdict(ds: xr.Dataset, sel: Selection) -> str:
    """The selected family's α over depth (the selected phase's layers, when one is chosen); "" when missing."""
    if sel.phase != "all" and "phase" in ds.coords:
        keep = np.nonzero(np.array([str(p) for p in ds["phase"].values]) == sel.phase)[0]
        if keep.size:
            return family_verdict(ds.isel(layer=keep), sel.family,
                                  f"phase {sel.phase} (layers {layer_runs(ds['layer'].values[keep])})")
    return family_verdict(ds, sel.family)


INFO = {
    "spectrum": "Singular values σ of the selected family's weight matrix W (out x in) against their rank, log-log, "
                "one curve per layer coloured by depth (the next view shows the anchor layer's)."
                " A straight stretch is a power law; "
                "a steep drop at the end is the matrix's small directions. Null: a Gaussian random matrix of the "
                "same shape has a Marchenko–Pastur spectrum, a flat curve bending down only near the last ranks, "
                "with no straight heavy-tailed stretch at the top.",
    "esd": "The empirical spectral density (ESD) of the anchor layer's eigenvalues λ = σ² of WᵀW, as a log-binned "
           "density histogram, with the power law p(λ) ∝ λ^−α fitted to its tail from x_min (Clauset–Shalizi–"
           "Newman: maximum likelihood α, x_min minimising the Kolmogorov–Smirnov distance KS). Small KS: the "
           "tail is close to a power law. Null: a Gaussian matrix's ESD is the Marchenko–Pastur bulk with a hard "
           "upper edge: no tail, and a fit there gives a large, unstable α.",
    "alpha": f"WeightWatcher's α (the ESD tail exponent above) for each layer and matrix family. α < "
             f"{HEAVY_ALPHA:g}: heavy-tailed, read by WeightWatcher as well-trained (2–6); < {VERY_HEAVY_ALPHA:g}: "
             f"very heavy (possibly over-fit); > {HEAVY_ALPHA:g}: random-like. Click a layer to anchor it. Null "
             "(dotted): the mean α of seeded Gaussian matrices of the selected family's shape, large and noisy "
             "(see esd_alpha_null_std) because a Marchenko–Pastur bulk has no power-law tail.",
    "stable": "Stable rank ‖W‖_F² / ‖W‖₂² = Σσ²/σ₁²: how many directions carry the matrix's energy, 1 for rank one "
              "up to min(out, in) for a flat spectrum; invariant to rescaling W. Low: a few large singular values "
              "dominate. Null (dotted): a Gaussian matrix of the selected family's shape, about "
              "out·in/(√out + √in)²; trained layers usually sit far below it.",
}

VIEW = ViewSpec(
    name="spectra",
    title="singular-value spectra over depth and heavy tails (WeightWatcher-style α, stable rank)",
    panels=(
        # the anchor layer's own spectra (the one data that follows the anchor) are the next view's
        PanelSpec(spectrum_panel, "singular values by rank", ("scatter",) * DEPTH_GROUPS, reads=("sigma",),
                  requires=("spectra",), depends=("family",), info=INFO["spectrum"]),
        PanelSpec(alpha_panel, "α by layer", ("scatter",) * (len(MATRIX_FAMILIES) + 1),
                  reads=("esd_alpha",), requires=("spectra",), depends=("family",),
                  click="depth", depth="x", info=INFO["alpha"]),
        PanelSpec(stable_rank_panel, "stable rank by layer", ("scatter",) * (len(MATRIX_FAMILIES) + 1),
                  reads=("stable_rank",), requires=("spectra",), depends=("family",),
                  click="depth", depth="x", info=INFO["stable"]),
    ),
    # the nulls are exported, not read: a run with null_draws=0 still draws the lines
    export_vars=("spectral_norm", "esd_alpha_null_mean", "esd_alpha_null_std", "esd_alpha_null_min",
                 "stable_rank_null_mean"),
    resolve=resolve_family,
    verdict=verdict,
)
