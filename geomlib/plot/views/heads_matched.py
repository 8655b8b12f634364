"""View: attention heads compared after matching them (gauge-aware), and how heads compose across layers.

Head order and each head's GL(d) are true symmetries: ``head_matched_cos``
compares layers after matching layer_b's heads to layer's, ``head_matched``
gives each head's value for the selected pair (with the head it was matched
to), and the composition scores (Elhage et al.; ``composition_score``, earlier
``layer`` into later ``layer_b``) say how much a head of an
earlier layer writes into what a head of a later layer reads.

The composition kind has no control of its own: it follows the operator (the
later head's circuit it reads into) and, for QK, the family dropdown: OV →
V-composition, QK → Q-composition when the family is ``q_proj``, else
K-composition.  The view's ``resolve`` puts that kind ("q", "k" or "v") in the
selection's ``family`` field, so the composition panels are rebuilt only when
the kind changes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import xarray as xr

from ..ranges import heat_scale
from ..spec import Panel, PanelSpec, Selection, Unavailable, ViewSpec
from ..traces import adjacent_note, adjacent_only, contiguous, grid, layer_heatmap, pivot_colorscale, side_colorbar
from ..verdicts import matched_verdict

KINDS = {"q": "Q", "k": "K", "v": "V"}


def composition_kind(ds: xr.Dataset, sel: Selection) -> str:
    """The composition kind shown for ``sel``: V for OV, Q or K for QK (Q with family q_proj)."""
    kind = "v" if sel.operator == "ov" else ("q" if sel.family == "q_proj" else "k")
    have = [str(c) for c in ds["composition"].values] if "composition" in ds.coords else []
    return kind if kind in have or not have else have[0]


def _resolve(ds: xr.Dataset, sel: Selection) -> Selection:
    return replace(sel, family=composition_kind(ds, sel))


def _colorbar(build, title: str) -> tuple[list, dict]:
    """The x domain and colour bar of the panel ``build`` draws (the bar in a strip of its own column)."""
    return side_colorbar([p.build for p in VIEW.panels].index(build), len(VIEW.panels), title)


def baseline(ds: xr.Dataset) -> float:
    """The RMS composition score of unrelated heads: the ``composition_baseline`` attr, else 1/√hidden."""
    b = ds.attrs.get("composition_baseline")
    if b is None and ds.attrs.get("hidden"):
        b = 1 / np.sqrt(float(ds.attrs["hidden"]))
    return float(b) if b is not None else float("nan")


def _baseline_text(ds: xr.Dataset) -> str:
    """What unrelated heads score, for a subtitle."""
    return f"baseline 1/√hidden = {baseline(ds):.3f} (white)"


def head_matched_cos_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    op = sel.operator
    z = ds["head_matched_cos"].sel(operator=op).values
    null = None
    if "head_matched_null_mean" in ds and "head_matched_null_std" in ds:
        null = (ds["head_matched_null_mean"].sel(operator=op).values, ds["head_matched_null_std"].sel(operator=op).values)
    s = heat_scale(z, sel, "cos", null=null, null_name="matched-head null")
    t = layer_heatmap(s["z"], ds, f"head_matched_cos ({op})", "matched head cos", s["colorscale"], s["zmin"],
                      s["zmax"], colorbar=s["colorbar"])
    domain, _ = _colorbar(head_matched_cos_panel, "cos")
    return Panel(f"{op.upper()} cos after matching heads (mean over heads){adjacent_note(z)}", [t],
                 x=dict(title="layer_b", domain=domain), y=dict(title="layer"))


def pair_matched_heads_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    """Per head of ``layer``: its operator cos with the head of ``layer_b`` it was matched to."""
    op, (a, b) = sel.operator, sel.pair
    H = ds.sizes["head"]
    heads = np.arange(H)
    v = ds["head_matched"].sel(operator=op, layer=a, layer_b=b).values
    to = ds["head_assignment"].sel(layer=a, layer_b=b).values.astype(int)
    colors = ["#ff7f0e" if h == sel.head else "#1f77b4" for h in heads]
    mean = float(ds["head_matched_cos"].sel(operator=op, layer=a, layer_b=b)) if "head_matched_cos" in ds else np.nan
    lo = min(a, b)
    band = [np.nan] * 4
    if abs(a - b) == 1 and "head_matched_null_mean" in ds and "head_matched_null_std" in ds:
        nm = float(ds["head_matched_null_mean"].sel(operator=op, layer=lo))
        ns = float(ds["head_matched_null_std"].sel(operator=op, layer=lo))
        band = [nm - 2 * ns, nm - 2 * ns, nm + 2 * ns, nm + 2 * ns]
    traces = [
        go.Bar(x=heads, y=contiguous(v), marker_color=colors, customdata=np.ascontiguousarray(to),
               name="matched cos per head", showlegend=True,
               hovertemplate=f"head %{{x}} of layer {a} → head %{{customdata}} of layer {b}<br>matched cos "
                             f"%{{y:.4f}}<extra>{op.upper()}</extra>"),
        go.Scatter(x=[-0.5, H - 0.5], y=contiguous([mean, mean]), mode="lines", line=dict(dash="dash", color="black"),
                   name="mean over heads", showlegend=True,
                   hovertemplate="mean over heads %{y:.4f}<extra>head_matched_cos</extra>"),
        go.Scatter(x=[-0.5, H - 0.5, H - 0.5, -0.5], y=contiguous(band), mode="lines", fill="toself",
                   fillcolor="rgba(128,128,128,0.3)", line=dict(width=0), name="rotation null of the mean ± 2σ",
                   showlegend=True, hoverinfo="skip"),
    ]
    note = ""
    if not np.isfinite(v).any():
        done = np.isfinite(ds["head_matched"].sel(operator=op).values).any(-1)  # (layer, layer_b): pair matched
        note = f"pair ({a}, {b}) not matched" + (" (adjacent pairs only)" if adjacent_only(
            np.where(done, 1.0, np.nan)) else "")
    return Panel(f"pair ({a}, {b}): {op.upper()} matched cos per head", traces,
                 x=dict(title=f"head of layer {a}"), y=dict(title="matched cos"), note=note)


def _composition_scale(ds: xr.Dataset, z) -> dict:
    """Colours of a composition heatmap: the data's range, white at the baseline (red above, blue below)."""
    finite = np.asarray(z, dtype=float)[np.isfinite(z)]
    b = baseline(ds)
    lo = float(min(finite.min(), b)) if finite.size and np.isfinite(b) else float(finite.min()) if finite.size else 0.0
    hi = float(max(finite.max(), b)) if finite.size and np.isfinite(b) else float(finite.max()) if finite.size else 1.0
    hi = hi if hi > lo else lo + 1e-9
    return dict(colorscale=pivot_colorscale(lo, hi, b), zmin=lo, zmax=hi)


def composition_mean_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    k = sel.family  # resolved: the composition kind
    z = ds["composition_mean"].sel(composition=k).values
    t = layer_heatmap(z, ds, f"composition_mean ({k})", f"{KINDS.get(k, k)}-composition")
    domain, bar = _colorbar(composition_mean_panel, "score")
    t.update(showscale=True, colorbar=bar, **_composition_scale(ds, z))
    return Panel(f"{KINDS.get(k, k)}-composition, mean over head pairs · {_baseline_text(ds)}{adjacent_note(z)}", [t],
                 x=dict(title="later layer_b", domain=domain), y=dict(title="earlier layer"))


def pair_composition_panel(ds: xr.Dataset, sel: Selection) -> Panel:
    """Head x head_b composition of the selected pair, earlier layer on y (a pair below the diagonal is swapped)."""
    k = sel.family
    a, b = sorted(sel.pair)
    if a == b:
        raise Unavailable(f"layer {a} with itself: composition needs two layers, pick an off-diagonal cell")
    z = ds["composition_score"].sel(composition=k, layer=a, layer_b=b).values
    H, Hb = z.shape
    domain, bar = _colorbar(pair_composition_panel, "score")
    t = go.Heatmap(z=grid(z), x=np.arange(Hb), y=np.arange(H), name=f"composition_score ({k}) {a} → {b}",
                   hovertemplate=(f"head %{{y}} of layer {a} → head %{{x}} of layer {b}<br>"
                                  f"{KINDS.get(k, k)}-composition %{{z:.4f}}<extra></extra>"),
                   showscale=True, colorbar=bar, **_composition_scale(ds, z))
    note = ""
    if not np.isfinite(z).any():
        done = np.isfinite(ds["composition_score"].sel(composition=k).values).any((-2, -1))  # (layer, layer_b)
        note = f"no composition for pair ({a}, {b})" + (" (adjacent pairs only)" if adjacent_only(
            np.where(done, 1.0, np.nan)) else "")
    return Panel(f"{KINDS.get(k, k)}-composition of heads {a} → {b} · baseline {baseline(ds):.3f} (white)",
                 [t], x=dict(title=f"head_b (layer {b})", domain=domain),
                 y=dict(title=f"head (layer {a})", autorange="reversed"), note=note)


def verdict(ds: xr.Dataset, sel: Selection) -> str:
    """Adjacent matched head cos (the selected operator) against the residual-rotation null; "" without them."""
    op = sel.operator
    return matched_verdict(ds, sel.phase, "head", dict(operator=op), f"{op.upper()} heads",
                           "matched head cos (mean over heads)", "consecutive layers share heads {far}beyond chance")


_INFO = {
    "cos": "Mean over heads of the QK (W_Qᵀ W_K) or OV (W_O W_V) operator cosine between layer and layer_b after "
           "layer_b's heads are matched to layer's (one joint, GQA-consistent assignment; invariant to each head's "
           "GL(d) and to head order). Red: matched heads compute similar operators; white: 0, as unrelated heads "
           "give; the diagonal is blank. Null: the same matching after a random (Haar) rotation of layer+1's "
           "residual side, drawn for adjacent pairs (the z scale scores cells against it).",
    "pair": "For the selected pair: each head of layer, its operator cosine with the head of layer_b it was matched "
            "to (hover: which; the selected head in orange), and the mean over heads (dashed). Bars well above the "
            "gray band are heads with a close counterpart in the other layer. Null: for an adjacent pair, the "
            "residual-rotation null of the mean over heads, ± 2σ; single heads scatter wider than that band, and "
            "a pair further apart has no null.",
    "comp": "Mean over all head pairs of the Q-, K- or V-composition score (Elhage et al. 2021): how much the OV "
            "output of a head of the earlier layer lands in the query, key or value input of a head of the later "
            "layer_b, norm gains folded in. Red: later heads read what earlier heads write, beyond the baseline; "
            "blue: less than unrelated heads. No per-pair null: random heads score about 1/√hidden (RMS), the "
            "baseline drawn in white.",
    "pair_comp": "The composition score of every head of the earlier layer (rows) into every head of the later "
                 "layer (columns) of the selected pair. A red cell is a head whose output that later head reads "
                 "strongly; a red row is a writer many heads read, a red column a reader of many heads. No per-pair "
                 "null: random heads score about 1/√hidden (white).",
}

VIEW = ViewSpec(
    name="heads_matched",
    title="gauge-aware heads: operators compared after matching heads, and composition between layers "
          "(kind: OV → V; QK → Q with family q_proj, else K)",
    panels=(
        PanelSpec(head_matched_cos_panel, "matched head cos", ("heatmap",), reads=("head_matched_cos",),
                  requires=("gauge",), depends=("operator", "scale", "mask_diagonal"), click="cell", depth="xy", pair_box=True,
                  info=_INFO["cos"]),
        PanelSpec(pair_matched_heads_panel, "matched cos per head of the pair", ("bar", "scatter", "scatter"),
                  reads=("head_matched", "head_assignment"), requires=("gauge",),
                  depends=("operator", "head", "pair"), info=_INFO["pair"]),
        PanelSpec(composition_mean_panel, "composition (mean over head pairs)", ("heatmap",),
                  reads=("composition_mean",), requires=("gauge",), depends=("family",), click="cell", depth="xy",
                  pair_box=True, info=_INFO["comp"]),
        PanelSpec(pair_composition_panel, "composition of the pair's heads", ("heatmap",), reads=("composition_score",),
                  requires=("gauge",), depends=("family", "pair"), info=_INFO["pair_comp"]),
    ),
    export_vars=("head_same_index_cos", "head_unmatched_cos", "head_different_index_cos", "head_matched_null_mean",
                 "head_matched_null_std"),
    resolve=_resolve,
    verdict=verdict,
)
