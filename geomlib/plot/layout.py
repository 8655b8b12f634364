"""Assemble panels into figures: one per view (the dashboard, exports) or several views stacked.

The dashboard shows one figure per view (a data change makes plotly.js redraw
a whole figure, so small figures redraw fast); exports use the same builder,
one view per file, and so can a multi-view figure.  Overlays
(phase bands, anchor lines, phase boundaries, "not computed" notes) are layout
shapes and annotations recomputed with the traces.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np
import plotly.graph_objects as go
import xarray as xr
from plotly.subplots import make_subplots

from .. import __version__
from ..analyses import registry
from . import legends, views
from .paper import finish, wrap
from .spec import Panel, Selection, build_panel, damaged_analyses
from .traces import ANCHOR_COLOR, side_colorbar

COLS = 4
#: a small explicit style instead of the "plotly_white" template: plotly re-applies a template's
#: hundreds of defaults on every relayout, which made moving an anchor line cost a full redraw
LIGHT = go.layout.Template(layout=dict(
    paper_bgcolor="white", plot_bgcolor="white", font=dict(color="#2a3f5f"),
    xaxis=dict(gridcolor="#EBF0F8", zerolinecolor="#EBF0F8", linecolor="#EBF0F8"),
    yaxis=dict(gridcolor="#EBF0F8", zerolinecolor="#EBF0F8", linecolor="#EBF0F8"),
    colorway=["#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692", "#B6E880"]))
ROW_HEIGHT = 400


def panels(ds: xr.Dataset, sel: Selection, names: tuple[str, ...] | None = None) -> list[list[Panel]]:
    """The panels of each view in ``names`` (default: every registered view), one row per view."""
    rows = []
    for v in views.names() if names is None else names:
        spec = views.get(v)
        s = spec.selection(ds, sel)
        rows.append([build_panel(p, ds, s) for p in spec.panels])
    return rows


def _axis_names(idx: int) -> tuple[str, str]:
    return ("x", "y") if idx == 1 else (f"x{idx}", f"y{idx}")


def phase_spans(ds: xr.Dataset) -> list[tuple[str, int, int]]:
    """(phase, first layer, last layer) of each run of equal labels along depth."""
    labels = [str(p) for p in ds["phase"].values]
    spans, start = [], 0
    for L in range(1, len(labels) + 1):
        if L == len(labels) or labels[L] != labels[start]:
            spans.append((labels[start], start, L - 1))
            start = L
    return spans


def overlays(ds: xr.Dataset, sel: Selection, grid: list[list[Panel]], cols: int = COLS) -> tuple[list, list]:
    """Shapes (phase bands, anchor lines, boundaries, selections) and annotations (notes) for a panel grid.

    The shape list has the same length and order for every selection of a model (a band with no
    phase chosen is invisible, not absent), so the dashboard can move shapes by editing their
    coordinates: plotly then redraws the shapes alone, where replacing the list redraws everything.
    """
    sel = sel.resolved(ds)
    shapes, notes = [], []
    spans = phase_spans(ds)
    chosen = next(((a, b) for p, a, b in spans if p == sel.phase), None)
    a0, b0 = chosen if chosen else (0, 0)
    on = chosen is not None
    band = dict(type="rect", fillcolor="rgba(255,215,0,0.22)", line=dict(width=0), layer="below")
    line = dict(type="line", line=dict(color=ANCHOR_COLOR, width=1.5, dash="dot"))
    for r, row in enumerate(grid):
        for c, panel in enumerate(row):
            xa, ya = _axis_names(r * cols + c + 1)
            if panel.depth_x:
                shapes.append(dict(band, xref=xa, yref=f"{ya} domain", x0=a0 - 0.5, x1=b0 + 0.5, y0=0, y1=1, visible=on))
                shapes.append(dict(line, xref=xa, yref=f"{ya} domain", x0=sel.anchor, x1=sel.anchor, y0=0, y1=1))
            if panel.depth_y:
                shapes.append(dict(band, yref=ya, xref=f"{xa} domain", y0=a0 - 0.5, y1=b0 + 0.5, x0=0, x1=1, visible=on))
                if panel.depth_x:  # an L x L heatmap: the anchor row too
                    shapes.append(dict(line, yref=ya, xref=f"{xa} domain", y0=sel.anchor, y1=sel.anchor, x0=0, x1=1))
            if panel.boundaries:  # the fitted phase boundaries, always shown on the entropy view
                for _, a, _ in spans[1:]:
                    if panel.depth_y:
                        shapes.append(dict(type="line", xref=f"{xa} domain", yref=ya, x0=0, x1=1, y0=a - 0.5,
                                           y1=a - 0.5, line=dict(color="white", width=2)))
                    else:
                        shapes.append(dict(type="line", yref=f"{ya} domain", xref=xa, y0=0, y1=1, x0=a - 0.5,
                                           x1=a - 0.5, line=dict(color="gray", width=1.5, dash="dash")))
            if panel.pair_box:
                L, Lb = sel.pair
                shapes.append(dict(type="rect", xref=xa, yref=ya, x0=Lb - 0.5, x1=Lb + 0.5, y0=L - 0.5, y1=L + 0.5,
                                   line=dict(color="black", width=2)))
            if panel.points is not None:
                px, py = panel.points[sel.anchor] if 0 <= sel.anchor < len(panel.points) else (np.nan, np.nan)
                ok = bool(np.isfinite(px) and np.isfinite(py))
                rx = 0.035 * (np.nanmax(panel.points[:, 0]) - np.nanmin(panel.points[:, 0]) or 1)
                ry = 0.035 * (np.nanmax(panel.points[:, 1]) - np.nanmin(panel.points[:, 1]) or 1)
                px, py = (float(px), float(py)) if ok else (0.0, 0.0)
                shapes.append(dict(type="circle", xref=xa, yref=ya, x0=px - rx, x1=px + rx, y0=py - ry, y1=py + ry,
                                   line=dict(color=ANCHOR_COLOR, width=3), visible=ok))
            if panel.categories:
                k = panel.categories.index(sel.phase) if sel.phase in panel.categories else 0
                shapes.append(dict(band, xref=xa, yref=f"{ya} domain", x0=k - 0.5, x1=k + 0.5, y0=0, y1=1,
                                   visible=sel.phase in panel.categories))
            if panel.note:
                notes.append(dict(text=panel.note, xref=f"{xa} domain", yref=f"{ya} domain", x=0.5, y=0.5,
                                  showarrow=False, font=dict(size=12, color="#a15c00"), bgcolor="rgba(255,255,255,0.8)"))
    return shapes, notes


def title_text(ds: xr.Dataset, sel: Selection | None = None) -> str:
    a = ds.attrs
    q = str(a.get("quantization", "none"))
    qt = f" · <b>{q} quantized</b>: numbers include quantization noise" if q != "none" else ""
    damaged = damaged_analyses(ds)
    missing = [x for x in registry.defaults() if x not in str(a.get("analyses", "")).split(",") and x not in damaged]
    mt = f" · not computed: {', '.join(missing)}" if missing else ""
    mt += f" · <b>damaged cache entry: {', '.join(damaged)}</b> (geomlib cache verify)" if damaged else ""
    # anchor and phase are not in the title: a title change makes plotly redraw the whole figure,
    # while moving shapes does not (the controls show them)
    return f"{a.get('source')} — {a.get('arch')}, {a.get('n_layers')} layers{qt}{mt}"


def point_ranges(panel: Panel, idx: int) -> dict[str, list[float]]:
    """Fixed axis ranges around a panel's layer points (subplot number ``idx``), empty if it has none."""
    if panel.points is None or not np.isfinite(panel.points).any():
        return {}
    lo, hi = np.nanmin(panel.points, axis=0), np.nanmax(panel.points, axis=0)
    pad = 0.12 * np.where(hi > lo, hi - lo, 1.0)
    xa, ya = ("xaxis", "yaxis") if idx == 1 else (f"xaxis{idx}", f"yaxis{idx}")
    return {xa: [float(lo[0] - pad[0]), float(hi[0] + pad[0])], ya: [float(lo[1] - pad[1]), float(hi[1] + pad[1])]}


#: the hover box of a subplot title's ℹ: readable on any panel
INFO_HOVERLABEL = dict(bgcolor="white", bordercolor="#888", font=dict(size=12, color="#222"))
#: U+2139: DejaVu Sans (the fonts a bare Debian Chromium has) draws it; the circled ⓘ showed as a box there
INFO_MARK = " ℹ"
INFO_CHARS = 70


def panel_title(panel: Panel, info: bool = False) -> dict:
    """The subplot-title annotation keys of ``panel``: ``text``, and with ``info`` its help on hover.

    With ``info`` (and a panel that has help) the title ends in " ℹ" and hovering it shows the
    panel's ``info`` (wrapped at about 70 characters): keys ``text``, ``hovertext``, ``hoverlabel``.
    Without, only ``text`` (the plain title).  The dashboard patches its titles with
    ``dict(annotation, **panel_title(panel, info=True))``.
    """
    if not (info and panel.info):
        return {"text": panel.title}
    # the help is plain text: escaped, so "α < 2" is not read as plotly markup (plotly decodes &lt;)
    return {"text": panel.title + INFO_MARK, "hovertext": _info_text(panel.info), "hoverlabel": INFO_HOVERLABEL}


@lru_cache(maxsize=256)
def _info_text(info: str) -> str:
    """A panel's help as hover text: escaped, wrapped (the dashboard asks on every refresh)."""
    return wrap(info.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"), INFO_CHARS)


def _legends(fig: go.Figure, panel: Panel, idx: int, first: int) -> None:
    """Subplot ``idx``'s legend, when its panel may show several named traces (placed by :func:`legends.place`).

    Declared for every panel of two or more non-heatmap traces, even one whose current data shows
    fewer: the dashboard swaps traces in place, and a trace whose legend the layout lacks would get
    plotly's default place, outside the plot.
    """
    if sum(t.type != "heatmap" for t in panel.traces) < 2:
        return
    lid = legends.legend_for(idx)
    for t in fig.data[first:]:
        if t.showlegend and t.legend:  # a stacked figure: the panel's column id becomes its subplot's
            t.legend = lid
    fig.layout[lid] = legends.style(panel.legend_at)


def build_figure(ds: xr.Dataset, sel: Selection, names: tuple[str, ...] | None = None,
                 caption: str | None = None, title: str | None = None,
                 grid: list[list[Panel]] | None = None,
                 cols: int | None = None, info: bool = False) -> tuple[go.Figure, list[list[list[int]]]]:
    """One figure, a row per view (default: every registered view); returns it and the trace indices of each panel.

    ``grid`` passes panels already built for ``names`` (one row each), so callers that keep them
    do not build them twice.  ``info``: each subplot title ends in " ℹ" and shows its panel's help
    on hover (see :func:`panel_title`); exports leave it off.
    """
    grid = panels(ds, sel, names) if grid is None else grid
    if cols is None:
        cols = max(len(r) for r in grid) if len(grid) == 1 else max(COLS, *(len(r) for r in grid))
    titles = []
    for row in grid:
        titles += [p.title for p in row] + [""] * (cols - len(row))
    fig = make_subplots(rows=len(grid), cols=cols, subplot_titles=titles, horizontal_spacing=0.06,
                        vertical_spacing=0.09 if len(grid) > 1 else 0.1)
    index: list[list[list[int]]] = []
    for r, row in enumerate(grid):
        index.append([])
        for c, panel in enumerate(row):
            first = len(fig.data)
            for t in panel.traces:
                fig.add_trace(t, row=r + 1, col=c + 1)
            index[-1].append(list(range(first, len(fig.data))))
            _legends(fig, panel, r * cols + c + 1, first)
            if len(grid) > 1:  # colour bars are placed in paper coordinates: keep each in its own row
                y0, y1 = fig.get_subplot(r + 1, c + 1).yaxis.domain
                for t in fig.data[first:]:
                    if t.type == "heatmap":
                        t.colorbar.update(y=(y0 + y1) / 2, len=0.95 * (y1 - y0))
            fig.update_xaxes(row=r + 1, col=c + 1, **panel.x)
            fig.update_yaxes(row=r + 1, col=c + 1, **panel.y)
            # fixed ranges wherever overlays sit in data coordinates: a shape on an autoranged axis
            # makes plotly recompute the whole figure when it moves, on a fixed one only the shape
            n = ds.sizes["layer"]
            if panel.depth_x:
                fig.update_xaxes(row=r + 1, col=c + 1, range=[-0.5, n - 0.5], autorange=False)
            if panel.depth_y:
                fig.update_yaxes(row=r + 1, col=c + 1, range=[n - 0.5, -0.5], autorange=False)
            if panel.categories:
                fig.update_xaxes(row=r + 1, col=c + 1, range=[-0.5, len(panel.categories) - 0.5], autorange=False)
            for axis, rng in point_ranges(panel, r * cols + c + 1).items():
                fig.layout[axis].update(range=rng, autorange=False)
        for c in range(len(row), cols):
            fig.update_xaxes(row=r + 1, col=c + 1, visible=False)
            fig.update_yaxes(row=r + 1, col=c + 1, visible=False)
    shapes, notes = overlays(ds, sel, grid, cols)
    # subplot titles: small; make_subplots made one per non-empty title, in row-major order
    for ann, panel in zip(fig.layout.annotations, [p for row in grid for p in row if p.title]):
        ann.update(font=dict(size=11), **panel_title(panel, info))
    annotations = list(fig.layout.annotations) + notes
    height = ROW_HEIGHT * len(grid) + (90 if len(grid) > 1 or caption or title is None else 70)
    if caption:
        annotations.append(dict(text=caption, xref="paper", yref="paper", x=0, y=-0.08 if len(grid) == 1 else -0.03,
                                showarrow=False, xanchor="left", font=dict(size=9, color="#555")))
        height += 40
    fig.update_layout(shapes=shapes, annotations=annotations, height=height, width=1600 if cols == 4 else 420 * cols,
                      title=dict(text=title if title is not None else title_text(ds, sel), font=dict(size=14)),
                      margin=dict(l=50, r=20, t=80, b=60),
                      showlegend=bool(legends.ids(fig)), template=LIGHT, hovermode="closest")
    for t in fig.data:  # only a panel legend's traces are listed: plotly lists every trace by default
        if not t.legend:
            t.showlegend = False
    legends.place(fig)
    return fig, index


def caption(ds: xr.Dataset, view: str, sel: Selection) -> str:
    """Provenance for a figure or data export: model, identity, versions, parameters, selection."""
    a = ds.attrs
    s = sel.resolved(ds)
    params = "; ".join(f"{an}: {a.get(an + '_params', '')}" for an in str(a.get("analyses", "")).split(",") if an)
    return (f"geomlib {a.get('geomlib_version', __version__)} · {a.get('source')} ({a.get('arch')}, "
            f"{a.get('dtype')}, quantization {a.get('quantization', 'none')}) · identity {str(a.get('identity', ''))[:16]}"
            f" · view {view}: family {s.family}, anchor {s.anchor}, operator {s.operator}, "
            f"head {'mean' if s.head < 0 else s.head}, pair {s.pair}, phases {a.get('phase_method')}"
            f"<br>{params}")


def standalone(ds: xr.Dataset, view: str, sel: Selection, width: str | None = None) -> go.Figure:
    """The figure of one view, with its provenance caption below the plot area, for export.

    ``width``: None (screen size, as the dashboard), "column" (3.5 in) or "page" (7.2 in); see
    :func:`geomlib.plot.paper.finish`.
    """
    row = panels(ds, sel, (view,))[0]
    cols = len(row)
    if width == "column" and cols > 2:  # one paper column: two panels a row
        cols = 2
        grid = [[_recolumn(p, i % 2, 2) for i, p in enumerate(row[k:k + 2], start=k)] for k in range(0, len(row), 2)]
    else:
        grid = [row]
    fig, _ = build_figure(ds, sel, (view,), title="", grid=grid, cols=cols)
    title = views.title(view) + "<br>" + title_text(ds, sel)
    return finish(fig, cols, caption(ds, view, sel), title, width, rows=len(grid))


def _recolumn(panel: Panel, col: int, ncols: int) -> Panel:
    """``panel`` moved to column ``col`` of ``ncols``: its heatmap's colour bar strip moves with it."""
    if "domain" not in panel.x:
        return panel
    domain, bar = side_colorbar(col, ncols)
    for t in panel.traces:
        if t.type == "heatmap":
            t.colorbar.update(x=bar["x"])
    return replace(panel, x={**panel.x, "domain": domain})
