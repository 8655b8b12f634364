"""The dashboard: one shared selection state, controls bound to it, one linked figure per view.

Every control writes a trait of :class:`Dashboard`; every view observes the
traits; every click on a depth axis or a heatmap cell writes them too.  Only
the panels whose inputs changed are rebuilt, and the browser receives one
patch with just those traces and the overlays that moved (:mod:`.plotview`).

Nothing here names a view or a panel: the views, which selection fields each
panel follows (``PanelSpec.depends``) and what a click on it sets
(``PanelSpec.click``) come from :mod:`geomlib.plot.views`.
"""

from __future__ import annotations

import base64
import html
import time

import ipywidgets as W
import traitlets

from ..analyses.heads import OPERATORS
from ..analyses.phases import phase_order
from ..errors import GeomlibError
from ..plot import export, views
from ..plot.layout import build_figure, overlays, point_ranges, title_text
from ..plot.spec import FIELDS, Selection, ViewSpec, build_panel
from .data import CatalogEntry, cache_dirs, catalog, families_with_data, open_model_data
from .plotview import PlotView

#: the traits that make up the selection.  The anchor, the phase and the selected pair's cell are
#: overlays (shapes): changing them redraws no data, which is what keeps the browser fast (plotly
#: redraws a whole figure on any data change, so each view is its own figure and a change redraws
#: only the panels, and views, whose declared ``depends`` it touches)
STATE = FIELDS


def _facts(ds) -> str:
    a = ds.attrs
    rows = [("architecture", a.get("arch")), ("layers", a.get("n_layers")),
            ("heads (q/kv)", f"{a.get('n_heads')}/{a.get('n_kv_heads')}"), ("head dim", a.get("head_dim")),
            ("hidden", a.get("hidden")), ("storage", a.get("dtype")), ("quantization", a.get("quantization")),
            ("analyses", a.get("analyses")), ("phases", a.get("phase_method")),
            ("identity", str(a.get("identity", ""))[:16] + "…")]
    cells = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th>"
                    f"<td class='geomlib-{k.split()[0]}'>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table class='geomlib-facts' style='font-size:12px'>{cells}</table>"


class Dashboard(W.VBox):
    """The geomlib dashboard.

    Traits (the shared state)
    -------------------------
    source : str            cached model shown
    anchor : int            anchor layer (-1: the last)
    family : str            weight family of view 1 (and γ family of view 3 when it is a norm)
    phase : str             "all" or a phase name: shaded on every depth axis, filters per-phase bars
    operator : "qk" | "ov"  per-head operator of view 2
    head : int              -1 for the mean over heads, else one head
    op_metric : "cos" | "pa_mean"   heatmap of view 2
    pair : (int, int)       the (layer, layer_b) pair whose detail view 2 shows
    busy, error, render_ms  computing / last error (one line) / last refresh time
    """

    source = traitlets.Unicode("")
    anchor = traitlets.Int(-1)
    family = traitlets.Unicode("q_proj")
    phase = traitlets.Unicode("all")
    operator = traitlets.Enum(tuple(OPERATORS), "qk")
    head = traitlets.Int(-1)
    op_metric = traitlets.Enum(("cos", "pa_mean"), "cos")
    pair = traitlets.Tuple(traitlets.Int(), traitlets.Int(), default_value=(-1, -1))
    busy = traitlets.Bool(False)
    error = traitlets.Unicode("")
    render_ms = traitlets.Float(0.0)

    def __init__(self, source: str | None = None, roots=None, **kwargs) -> None:
        self._roots = roots
        self._entries: list[CatalogEntry] = catalog(roots if roots is not None else cache_dirs())
        if not self._entries:
            raise GeomlibError(
                "no cached datasets were found (looked in $GEOMLIB_CACHE, ./cache, ../cache and the repository's "
                "cache/); compute one with: geomlib compute demo:smollm2-135m"
            )
        self._ds = None
        self._startup_error = ""
        # the views registered now: a view registered later shows in the next dashboard built
        self._specs: dict[str, ViewSpec] = {v: views.get(v) for v in views.names()}
        self._last: dict[tuple[str, int], tuple] = {}
        self._panels: dict = {}
        self._build_controls()
        super().__init__(**kwargs)
        first = source or next((e.source for e in self._entries if e.source == "demo:smollm2-135m"
                                and e.analyses), next((e.source for e in self._entries if e.analyses),
                                                      self._entries[0].source))
        try:
            self._load(first)
        except GeomlibError as exc:
            # a damaged model must not keep the dashboard from starting: open the first one that loads
            if not self._load_any(exclude=first):
                raise GeomlibError(f"no cached model could be opened ({str(exc).splitlines()[0]}); run geomlib "
                                   "cache verify to see the damaged entries") from None
            self._startup_error = str(exc).splitlines()[0]
        # the traits lead: each widget takes its trait's value, then both stay in step
        for widget, trait in ((self._anchor, "anchor"), (self._family, "family"), (self._phase, "phase"),
                              (self._operator, "operator"), (self._metric, "op_metric"), (self._head, "head")):
            W.link((self, trait), (widget, "value"))
        # one figure per view, kept here as plain go.Figures (the source of truth, what tests and exports
        # read); the browser gets each once, then patches (see plotview)
        self.views = {v: PlotView(name=v, carry_plotly=(i == 0)) for i, v in enumerate(self._specs)}
        for v, pv in self.views.items():
            pv.observe(lambda ch, v=v: self._on_click(v, ch), "click")
        self._build_figures()
        self.children = [self._header, self._controls, self._compute_box, *self.views.values(), self._export_box]
        self.observe(self._on_state, names=list(STATE))
        self.observe(self._on_source, names="source")
        if self._startup_error:
            self._set_error(GeomlibError(self._startup_error))

    # -- state -----------------------------------------------------------------------------------------
    def selection(self) -> Selection:
        pair = None if self.pair == (-1, -1) else tuple(self.pair)
        return Selection(self.anchor, self.family, self.phase, self.operator, self.head, self.op_metric, pair)

    def _load(self, source: str) -> None:
        self._ds = open_model_data(source, self._roots)
        ds = self._ds
        n = ds.sizes["layer"]
        # a model without the weights analysis has no families: the dropdown keeps the current one (unused)
        fams = families_with_data(ds) or ([str(f) for f in ds["family"].values] if "family" in ds.dims else
                                          [self.family])
        with self.hold_trait_notifications():
            self.source = source
            self._model.value = source
            self._anchor.max = n - 1
            self._family.options = fams
            if self.family not in fams:
                self.family = fams[0]
            self._phase.options = ["all"] + phase_order(ds)
            if self.phase not in self._phase.options:
                self.phase = "all"
            H = ds.sizes.get("head", 0)
            self._head.options = [("mean", -1)] + [(str(h), h) for h in range(H)]
            if self.head >= H:
                self.head = -1
            self.anchor = n - 1
            self.pair = (-1, -1)
        self._info.value = _facts(ds)
        self._last, self._panels = {}, {}

    # -- controls ----------------------------------------------------------------------------------------
    def _build_controls(self) -> None:
        lay = W.Layout(width="auto")
        self._model = W.Dropdown(options=[(e.label, e.source) for e in self._entries], description="model",
                                 layout=W.Layout(width="46em"))
        self._anchor = W.IntSlider(description="anchor", min=0, max=1, continuous_update=False,
                                   layout=W.Layout(width="30em"))
        self._family = W.Dropdown(description="family", layout=W.Layout(width="16em"))
        self._phase = W.Dropdown(description="phase", options=["all"], layout=W.Layout(width="14em"))
        self._operator = W.ToggleButtons(options=[(op.upper(), op) for op in OPERATORS], description="operator",
                                         style={"button_width": "4em"})
        self._metric = W.ToggleButtons(options=[("cos", "cos"), ("angles", "pa_mean")], description="metric",
                                       style={"button_width": "5em"})
        self._head = W.Dropdown(description="head", options=[("mean", -1)], layout=W.Layout(width="12em"))
        self._model.observe(lambda ch: ch["new"] and ch["new"] != self.source and setattr(self, "source", ch["new"]),
                            "value")
        self._status = W.HTML()
        self._info = W.HTML()
        self._header = W.HBox([W.HTML("<h3 style='margin:4px 0'>geomlib · layer geometry of transformer "
                                      "weights</h3>"), self._info], layout=W.Layout(justify_content="space-between"))
        self._controls = W.VBox([W.HBox([self._model, self._anchor], layout=lay),
                                 W.HBox([self._family, self._phase, self._operator, self._metric, self._head],
                                        layout=lay), self._status])
        self._src = W.Text(placeholder="path, .gguf, org/name or demo:…", description="compute",
                           layout=W.Layout(width="34em"))
        self._go = W.Button(description="compute", icon="play", button_style="primary")
        self._log = W.Output(layout=W.Layout(max_height="8em", overflow="auto"))
        self._go.on_click(lambda _: self.compute(self._src.value.strip()))
        self._compute_box = W.VBox([W.HBox([self._src, self._go]), self._log])
        self._view = W.Dropdown(options=list(self._specs), description="export", layout=W.Layout(width="14em"))
        self._fmt = W.Dropdown(options=list(export.FORMATS), value="png", layout=W.Layout(width="8em"))
        self._save = W.Button(description="export", icon="download")
        self._links = W.HTML()
        self._save.on_click(lambda _: self.export_to_link(self._view.value, self._fmt.value))
        self._export_box = W.HBox([self._view, self._fmt, self._save, self._links])

    def _freeze(self, frozen: bool) -> None:
        for w in (self._model, self._anchor, self._family, self._phase, self._operator, self._metric, self._head,
                  self._src, self._go, self._save):
            w.disabled = frozen

    # -- figure updates ------------------------------------------------------------------------------------
    def _on_state(self, change) -> None:
        self.refresh()

    def _load_any(self, exclude: str) -> bool:
        """Load the first catalogued model other than ``exclude`` that opens; whether one did."""
        for e in self._entries:
            if e.source != exclude and e.analyses:
                try:
                    self._load(e.source)
                    return True
                except GeomlibError:
                    continue
        return False

    def _on_source(self, change) -> None:
        try:
            self._load(change["new"])
        except GeomlibError as exc:
            # the previous model stays on screen, and the selectors say so
            with self.hold_trait_notifications():
                self.unobserve(self._on_source, names="source")
                try:
                    self.source = change["old"]
                    self._model.value = change["old"]
                finally:
                    self.observe(self._on_source, names="source")
            self._set_error(exc)
            return
        self._build_figures()

    def _view_title(self, v: str) -> str:
        # the first view carries the model line (quantization label, analyses missing); the others their name
        return title_text(self._ds, None) if v == next(iter(self._specs)) else views.title(v)

    def _key(self, spec, res: Selection) -> tuple:
        """What a panel's traces depend on: the selection fields it declares, as its view reads them."""
        return tuple(getattr(res, f) for f in spec.depends)

    def _build_figures(self) -> None:
        """Build every view's figure for the current model and send each whole to the browser."""
        sel = self.selection()
        self.figures, self._index, self._panels, self._last = {}, {}, {}, {}
        for v, view in self._specs.items():
            res = view.selection(self._ds, sel)
            for c, p in enumerate(view.panels):
                self._last[(v, c)] = self._key(p, res)
                self._panels[(v, c)] = build_panel(p, self._ds, res)
            row = [self._panels[(v, c)] for c in range(len(view.panels))]
            fig, index = build_figure(self._ds, sel, (v,), title=self._view_title(v), grid=[row])
            self.figures[v], self._index[v] = fig, index[0]
            self.views[v].show(fig)
        self._curve = {v: {i: c for c, ids in enumerate(self._index[v]) for i in ids} for v in self._specs}

    def refresh(self, force: bool = False) -> None:
        """Rebuild only the panels whose inputs changed; send each view only what changed in it."""
        t0 = time.perf_counter()
        sel = self.selection()
        for v, view in self._specs.items():
            res = view.selection(self._ds, sel)
            changed = []
            for c, p in enumerate(view.panels):
                key = self._key(p, res)
                if force or self._last.get((v, c)) != key:
                    self._last[(v, c)] = key
                    self._panels[(v, c)] = build_panel(p, self._ds, res)
                    changed.append(c)
            self._patch(v, sel, changed)
        self.render_ms = (time.perf_counter() - t0) * 1000
        self.error = ""
        self._status.value = ""

    def _patch(self, v: str, sel: Selection, changed: list[int]) -> None:
        fig = self.figures[v]
        row = [self._panels[(v, c)] for c in range(len(self._specs[v].panels))]
        traces: dict[int, dict] = {}
        relayout: dict = {}
        for c in changed:
            for i, trace in zip(self._index[v][c], row[c].traces):
                props = trace.to_plotly_json()
                fig.data[i].update({k: val for k, val in props.items() if k != "type"}, overwrite=True)
                traces[i] = props
            for axis, rng in point_ranges(row[c], c + 1).items():  # γ points moved: refit their fixed axes
                fig.layout[axis].range = rng
                relayout[f"{axis}.range"] = rng
        shapes, notes = overlays(self._ds, sel, [row], len(row))
        if [sh.to_plotly_json() for sh in fig.layout.shapes] != shapes:
            fig.layout.shapes = shapes  # the exported figure carries them; the browser draws them as overlays
            self.views[v].set_overlays(shapes)
        old = [a.to_plotly_json() for a in fig.layout.annotations]
        new = [dict(a, text=p.title) for a, p in zip(old, row)] + notes
        if new != old:
            fig.layout.annotations = new
            relayout["annotations"] = new
        self.views[v].send(traces, relayout)

    def _on_click(self, v: str, change) -> None:
        """A click in the browser: what it sets is the clicked panel's declared ``click``."""
        ev = change["new"] or {}
        c = self._curve[v].get(ev.get("curve"))
        if c is None or ev.get("x") is None:
            return
        kind = self._specs[v].panels[c].click
        if kind == "cell":  # L x L heatmaps: (layer, layer_b) = (y, x)
            with self.hold_trait_notifications():
                self.pair = (int(ev["y"]), int(ev["x"]))
                self.anchor = int(ev["x"])
        elif kind == "row":  # layers on y (the entropy heatmap)
            self.anchor = int(ev["y"])
        elif kind == "point":  # point k is layer k (the γ scatter)
            if ev.get("point") is not None:
                self.anchor = int(ev["point"])
        elif kind == "depth":  # lines over depth
            self.anchor = int(round(float(ev["x"])))

    # -- actions -------------------------------------------------------------------------------------------------
    def _set_error(self, exc: Exception) -> None:
        self.error = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        self._status.value = f"<span class='geomlib-error' style='color:#b00020'>{html.escape(self.error)}</span>"

    def compute(self, source: str) -> None:
        """Compute ``source`` (every default analysis) into the first cache root with progress shown, then show it."""
        if not source:
            self._set_error(GeomlibError("type a model source first: a path, a .gguf file, org/name or demo:NAME"))
            return
        self.busy = True
        self._freeze(True)
        self._log.clear_output()
        try:
            from ..store.api import compute  # the only path that imports torch (when it runs)

            target = (self._roots or cache_dirs() or [None])[0]
            with self._log:
                compute(source, cache_dir=target, progress=True)
            self._entries = catalog(self._roots if self._roots is not None else cache_dirs())
            self._model.options = [(e.label, e.source) for e in self._entries]
            self.source = source
        except GeomlibError as exc:
            self._set_error(exc)
        except ImportError:
            self._set_error(GeomlibError("computing needs the compute extra: pip install 'geomlib[compute]'"))
        finally:
            self._freeze(False)
            self.busy = False

    def export_to_link(self, view: str, fmt: str) -> bytes | None:
        """Render one export and offer it as a download link (the way files leave a Voila page)."""
        self._freeze(True)
        try:
            data = export.render(self._ds, view, self.selection(), fmt)
        except GeomlibError as exc:
            self._set_error(exc)
            return None
        finally:
            self._freeze(False)
        name = f"{self.source.replace(':', '-').replace('/', '-')}-{view}{export.SUFFIX[fmt]}"
        b64 = base64.b64encode(data).decode()
        self._links.value = (f"<a class='geomlib-download' download='{html.escape(name)}' "
                             f"href='data:{export.MIME[fmt]};base64,{b64}'>download {html.escape(name)}</a>")
        return data

    @property
    def dataset(self):
        return self._ds


def build_app(source: str | None = None, roots=None) -> Dashboard:
    """The whole dashboard, ready to ``display``."""
    return Dashboard(source, roots)


__all__ = ["Dashboard", "build_app"]
