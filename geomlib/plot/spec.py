"""Views declared as data: a view is a title and panels; a panel is a builder plus what it reads.

A :class:`PanelSpec` says what a panel needs (dataset variables, analyses),
which parts of the shared :class:`Selection` it follows and what a click on
it sets.  Everything generic is derived from those declarations, here and in
the dashboard, instead of being repeated per panel:

* the "not computed" placeholder (:func:`build_panel`): a panel whose analysis
  or variable is missing gets an empty panel of the same trace skeleton, with
  a note saying what is missing;
* which panels the dashboard rebuilds when the selection changes (``depends``);
* what a click sets (``click``);
* the data a view exports, and how it is narrowed (:mod:`geomlib.plot.export`).

Builders are pure functions ``(Dataset, Selection) -> Panel`` of data that is
there; one may raise :class:`Unavailable` for a data-dependent gap (a model
without norm gains) and gets the same placeholder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import plotly.graph_objects as go
import xarray as xr

from .traces import side_colorbar

#: what a click on a panel sets: "cell" an L x L heatmap cell (pair = (y, x), anchor = x), "depth" a layer on
#: the x axis (anchor), "row" a layer on the y axis (anchor), "point" point k is layer k (anchor)
Click = Literal["cell", "depth", "row", "point"]
CLICKS = ("cell", "depth", "row", "point")
#: Selection fields that pick a coordinate of a dimension of the same name (a view following one of them shows,
#: and exports, that coordinate only)
SELECTS = ("family", "operator")
#: the colour-range modes of ``Selection.scale``
SCALES = ("symmetric", "robust", "z")
#: Selection fields a panel may depend on
FIELDS = ("anchor", "family", "phase", "operator", "head", "op_metric", "pair", "scale", "mask_diagonal")


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
    #: colour range of the L x L heatmaps: "symmetric" (±max |off-diagonal|), "robust" (2nd-98th
    #: percentile) or "z" (z-scores against the variable's null); see :mod:`geomlib.plot.ranges`
    scale: str = "symmetric"
    mask_diagonal: bool = True  # blank the trivial diagonal of L x L cosine heatmaps

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale {self.scale!r} is not one of {', '.join(SCALES)}")

    def resolved(self, ds: xr.Dataset) -> Selection:
        n = ds.sizes["layer"]
        anchor = self.anchor % n
        # the pair is chosen by clicking a cell; until then the last adjacent pair.  It does not follow
        # the anchor, so moving the anchor only moves overlays (fast: no data is redrawn)
        pair = self.pair if self.pair is not None else (max(n - 2, 0), n - 1)
        return replace(self, anchor=anchor, pair=pair)


@dataclass
class Panel:
    """Traces of one subplot plus what its axes and overlays need.

    A builder sets the data-dependent fields; :func:`build_panel` sets the static ones
    (``depth_x``, ``depth_y``, ``boundaries``, ``pair_box``) from the panel's spec.
    """

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
    info: str = ""  # the panel's help (from its spec): definition, how to read it, its null
    #: the corner of the plot area its legend sits in (a panel with several named traces has one)
    legend_at: str = "top right"


class Unavailable(Exception):
    """Raised by a builder when the data it needs is not there; the message is the panel's note."""


#: an empty trace of each kind: the placeholder keeps the panel's trace skeleton, so the dashboard can
#: update traces in place and every model of a figure has the same traces
_EMPTY = {
    "heatmap": lambda: go.Heatmap(z=[], showscale=False),
    "scatter": lambda: go.Scatter(x=[], y=[], showlegend=False),
    "bar": lambda: go.Bar(x=[], y=[], showlegend=False),
}


@dataclass(frozen=True)
class PanelSpec:
    """One panel of a view.

    Attributes
    ----------
    build : callable
        ``(Dataset, Selection) -> Panel``; the selection is resolved (and passed through the view's
        ``resolve``).  Called only when everything below is present.
    title : str
        Title of the placeholder shown when the panel's data is missing.
    traces : tuple of {"heatmap", "scatter", "bar"}
        The trace skeleton ``build`` returns, whatever the data (the placeholder has the same).
    reads : tuple of str
        Dataset variables it shows (checked before building; exported with the view).
    requires : tuple of str
        Analyses (registry names) it needs.
    depends : tuple of str
        Selection fields whose change rebuilds it (the anchor, the phase and the pair's cell are
        overlays: a panel that only marks them does not depend on them).
    click : {"cell", "depth", "row", "point"} or None
        What a click on its first trace sets.
    depth : {"", "x", "y", "xy"}
        Which axes are layer axes (phase bands, anchor lines and fixed ranges go there).
    boundaries, pair_box : bool
        Draw every phase boundary / outline the selected (layer, layer_b) cell.
    info : str
        The panel's help, shown on hover of the ℹ next to its title in the dashboard: what it shows
        (definition), how to read it, and its null (what it would look like by chance), in that order.
    """

    build: Callable[[xr.Dataset, Selection], Panel]
    title: str
    traces: tuple[str, ...]
    reads: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    depends: tuple[str, ...] = ()
    click: Click | None = None
    depth: str = ""
    boundaries: bool = False
    pair_box: bool = False
    info: str = ""
    #: its place in its view (set by :class:`ViewSpec`): where its colour bar goes
    col: int = 0
    ncols: int = 1

    def __post_init__(self) -> None:
        # declarations are checked once, when a view module is imported, not on every redraw
        bad = [t for t in self.traces if t not in _EMPTY] + [f for f in self.depends if f not in FIELDS]
        if bad or self.click not in (None, *CLICKS) or self.depth not in ("", "x", "y", "xy"):
            raise ValueError(f"panel {self.title!r}: bad declaration {bad or (self.click, self.depth)}")


@dataclass(frozen=True)
class ViewSpec:
    """A view: one row of the dashboard, one exported figure, one data export.

    Attributes
    ----------
    name : str
        Its key (``geomlib export --view NAME``); the module declaring it has this name.
    title : str
        One line shown above it and on its exported figure.
    panels : tuple of PanelSpec
        Left to right.
    export_vars : tuple of str
        Variables exported with the view besides those its panels read.
    resolve : callable, optional
        ``(Dataset, Selection) -> Selection``: how this view reads the shared selection (the γ view
        shows the selected family only when it is a norm gain).
    verdict : callable, optional
        ``(Dataset, Selection) -> str``: one plain sentence on what the view's data says against its
        null for the current selection (shown above the view); "" when there is nothing to say.
        It gets the selection resolved as the view reads it: call :meth:`verdict_for` with the
        shared one.
    """

    name: str
    title: str
    panels: tuple[PanelSpec, ...]
    export_vars: tuple[str, ...] = ()
    resolve: Callable[[xr.Dataset, Selection], Selection] | None = None
    verdict: Callable[[xr.Dataset, Selection], str] | None = None

    def __post_init__(self) -> None:
        # each panel learns its column, so its heatmap's colour bar sits in a strip of its own column
        n = len(self.panels)
        object.__setattr__(self, "panels", tuple(replace(p, col=i, ncols=n) for i, p in enumerate(self.panels)))

    def selection(self, ds: xr.Dataset, sel: Selection) -> Selection:
        """The resolved selection as this view reads it."""
        s = sel.resolved(ds)
        return self.resolve(ds, s) if self.resolve is not None else s

    def verdict_for(self, ds: xr.Dataset, sel: Selection) -> str:
        """The view's one-sentence verdict for the shared selection ``sel`` ("" when it has none).

        Resolves ``sel`` as the view reads it, as its panels get it, then calls ``verdict``.
        """
        return self.verdict_at(ds, self.selection(ds, sel))

    def verdict_at(self, ds: xr.Dataset, res: Selection) -> str:
        """The verdict for ``res``, a selection already resolved as this view reads it (:meth:`selection`)."""
        return self.verdict(ds, res) if self.verdict is not None else ""

    @property
    def variables(self) -> tuple[str, ...]:
        """Every variable the view shows or exports, in declaration order."""
        return tuple(dict.fromkeys([v for p in self.panels for v in p.reads] + list(self.export_vars)))

    @property
    def depends(self) -> tuple[str, ...]:
        """Selection fields any of its panels follows."""
        return tuple(f for f in FIELDS if any(f in p.depends for p in self.panels))


def _not_computed(ds: xr.Dataset) -> dict[str, str]:
    """Optional parts each analysis left out, from the ``<analysis>_not_computed`` attrs ("part: reason" lines)."""
    out = {}
    for k, v in ds.attrs.items():
        if k.endswith("_not_computed"):
            for line in str(v).splitlines():
                part, _, why = line.partition(":")
                if part.strip():
                    out[part.strip()] = why.strip()
    return out


def damaged_analyses(ds: xr.Dataset) -> list[str]:
    """Analyses whose cache entry was found damaged when ``ds`` was loaded (``damaged`` attr, "analysis: why" lines)."""
    return [line.partition(":")[0].strip() for line in str(ds.attrs.get("damaged", "")).splitlines() if line.strip()]


def missing_note(panel: PanelSpec, ds: xr.Dataset, sel: Selection) -> str | None:
    """Why ``panel`` cannot be drawn for ``ds`` and ``sel``, or None when it can."""
    present = [a for a in str(ds.attrs.get("analyses", "")).split(",") if a]
    damaged = damaged_analyses(ds)
    for a in panel.requires:
        if a not in present:
            return f"{a} cache entry damaged (geomlib cache verify)" if a in damaged else f"{a} analysis not computed"
    skipped = _not_computed(ds)
    for v in panel.reads:
        if v in skipped:
            return f"{v} not computed: {skipped[v]}" if skipped[v] else f"{v} not computed"
        if v not in ds or not np.isfinite(ds[v].values).any():
            return f"{v} not in the cached analyses"
        for f in SELECTS:
            value = getattr(sel, f)
            if f in ds[v].dims and f in panel.depends and value not in ds[f].values:
                return f"no {f} {value!r} in this model"
    return None


def with_colorbar(out: Panel, panel: PanelSpec) -> Panel:
    """Give the panel's first heatmap a colour bar in a strip of the panel's own column, titled with its quantity.

    Every heatmap gets one (a placeholder keeps the room, without a bar), so colour bars never overlap
    another subplot: the panel's x domain leaves the strip free (see :func:`side_colorbar`).
    """
    heat = [t for t in out.traces if isinstance(t, go.Heatmap)]
    if not heat:
        return out
    domain, bar = side_colorbar(panel.col, panel.ncols)
    t = heat[0]
    title = (t.colorbar.title.text if t.colorbar and t.colorbar.title and t.colorbar.title.text else "") or \
        (t.name or "")
    bar["title"]["text"] = title
    z = np.asarray(t.z if t.z is not None else [], dtype=float)
    t.update(showscale=bool(z.size and np.isfinite(z).any()), colorbar=bar, overwrite=True)
    for other in heat[1:]:
        other.update(showscale=False)
    return replace(out, x={**out.x, "domain": out.x.get("domain", domain)})


def legend_id(col: int) -> str:
    """The legend of the panel in subplot ``col + 1`` (0-based ``col``) of a figure: plotly's ``legend2``, ...

    One legend per panel, drawn inside it; the default ``legend`` stays unused.
    """
    return f"legend{col + 2}"


def with_legend(out: Panel, panel: PanelSpec) -> Panel:
    """Put the panel's named traces (``showlegend=True``) in a legend of its own, when there are two or more.

    Set on the traces themselves, not only on the figure: the dashboard replaces a panel's traces
    with the rebuilt ones, and a trace without its ``legend`` would fall into the default one.  Every
    other trace gets ``showlegend=False`` explicitly (plotly shows a trace in a legend by default).
    """
    shown = {id(t) for t in out.traces if t.showlegend and t.name}
    for t in out.traces:
        on = len(shown) > 1 and id(t) in shown
        t.update(showlegend=on, legend=legend_id(panel.col) if on else None)
    return out


def build_panel(panel: PanelSpec, ds: xr.Dataset, sel: Selection) -> Panel:
    """The panel for a view-resolved selection: built, or the generic placeholder with its note."""
    note = missing_note(panel, ds, sel)
    out = None
    if note is None:
        try:
            out = panel.build(ds, sel)
        except Unavailable as exc:
            note = str(exc)
    if out is None:
        out = Panel(panel.title, [_EMPTY[t]() for t in panel.traces], note=note or "")
    out = with_legend(with_colorbar(out, panel), panel)
    return replace(out, depth_x="x" in panel.depth, depth_y="y" in panel.depth, boundaries=panel.boundaries,
                   pair_box=panel.pair_box and not note, info=panel.info)


__all__ = ["CLICKS", "FIELDS", "SCALES", "SELECTS", "Panel", "PanelSpec", "Selection", "Unavailable", "ViewSpec",
           "build_panel", "legend_id", "missing_note"]
