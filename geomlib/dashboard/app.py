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

import html
from contextlib import contextmanager
from dataclasses import replace

import ipywidgets as W
import traitlets

from ..analyses.heads import OPERATORS
from ..analyses.phases import phase_order
from ..errors import GeomlibError
from ..plot import views
from ..plot.layout import phase_spans
from ..plot.spec import FIELDS, SCALES, Selection, ViewSpec
from . import urlstate
from .data import CatalogEntry, cache_dirs, catalog, families_with_data, open_model_data
from .help import BUSY_HTML, MEAN_LABEL, METRIC_TIPS, OPERATOR_TIPS, SCALE_LABELS, TIPS
from .modes import MODES, CompareMode, Modes, TrainingMode
from .patches import Patches
from .plotview import PlotView
from .prefetch import Prefetch
from .tools import Tools

#: the traits that make up the selection.  The anchor, the phase and the selected pair's cell are
#: overlays (shapes): changing them redraws no data, which is what keeps the browser fast (plotly
#: redraws a whole figure on any data change, so each view is its own figure and a change redraws
#: only the panels, and views, whose declared ``depends`` it touches)
STATE = FIELDS
STICKY_CSS = ("<style>.geomlib-controls{position:sticky;top:0;z-index:20;background:#fff;"
              "border-bottom:1px solid #ddd;padding-bottom:2px}"
              ".geomlib-app,.geomlib-app .geomlib-model-box,.jp-OutputArea:has(.geomlib-app),"
              ".jp-OutputArea-child:has(.geomlib-app),.jp-OutputArea-output:has(.geomlib-app){overflow:visible}</style>")


def _facts(ds) -> str:
    """One line of facts about the model shown (a table took ~250 px of the first screen)."""
    a = ds.attrs
    rows = [("architecture", a.get("arch")), ("layers", f"{a.get('n_layers')} layers"),
            ("heads", f"{a.get('n_heads')}/{a.get('n_kv_heads')} heads (q/kv)"), ("head", f"head dim {a.get('head_dim')}"),
            ("hidden", f"hidden {a.get('hidden')}"), ("storage", a.get("dtype")),
            ("quantization", a.get("quantization")), ("analyses", a.get("analyses")),
            ("phases", f"phases: {a.get('phase_method')}"), ("identity", str(a.get("identity", ""))[:12] + "…")]
    cells = " · ".join(f"<span class='geomlib-{k}' title='{k}'>{html.escape(str(v))}</span>" for k, v in rows)
    return f"<div class='geomlib-facts' style='font-size:12px;color:#444;line-height:1.3'>{cells}</div>"


def phase_options(ds) -> list[tuple[str, str]]:
    """The phase dropdown's choices, each labelled with the layers it spans (its boundaries)."""
    spans: dict[str, list[str]] = {}
    for name, a, b in phase_spans(ds):
        spans.setdefault(name, []).append(f"{a}–{b}" if b > a else f"{a}")
    return [("all (no phase shaded)", "all")] + [(f"{p}: layers {', '.join(spans.get(p, ['?']))}", p)
                                                 for p in phase_order(ds)]


class Dashboard(Tools, Modes, Patches, Prefetch, W.VBox):
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
    scale = traitlets.Enum(SCALES, "symmetric")
    mask_diagonal = traitlets.Bool(True)
    pair = traitlets.Tuple(traitlets.Int(), traitlets.Int(), default_value=(-1, -1))
    busy = traitlets.Bool(False)
    error = traitlets.Unicode("")
    render_ms = traitlets.Float(0.0)
    #: what the page shows: one model's views, two models side by side, or a sweep's training dynamics
    mode = traitlets.Enum(MODES, "model")
    _switching = False  # a model is being loaded: its traits do not redraw the old figures

    def __init__(self, source: str | None = None, roots=None, query: str | None = None, **kwargs) -> None:
        self._roots = roots
        self._entries: list[CatalogEntry] = catalog(roots if roots is not None else cache_dirs())
        if not self._entries:
            raise GeomlibError(
                "no cached datasets were found (looked in $GEOMLIB_CACHE, ./cache, ../cache and the repository's "
                "cache/); compute one with: geomlib compute demo:smollm2-135m"
            )
        self._ds = None
        self._startup_error = ""
        self._compare_w: CompareMode | None = None  # built when first shown
        self._training_w: TrainingMode | None = None
        # the views registered now: a view registered later shows in the next dashboard built
        self._specs: dict[str, ViewSpec] = {v: views.get(v) for v in views.names()}
        self._last: dict[tuple[str, int], tuple] = {}
        self._panels: dict = {}
        self._build_controls()
        super().__init__(**kwargs)
        # a link's view (the notebook passes the page's query string: urlstate.request_query)
        params = urlstate.parse(query)
        url_notes = []
        if "model" in params and not source:
            if self._cached(params["model"]):
                source = params["model"]
            else:
                url_notes.append(f"model={params['model']!r} ignored: not a cached model")
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
        url_notes += self._apply_url(params)
        # the traits lead: each widget takes its trait's value, then both stay in step
        for widget, trait in ((self._anchor, "anchor"), (self._family, "family"), (self._phase, "phase"),
                              (self._operator, "operator"), (self._metric, "op_metric"), (self._head, "head"),
                              (self._scale, "scale"), (self._mask, "mask_diagonal")):
            W.link((self, trait), (widget, "value"))
        # one figure per view, kept here as plain go.Figures (the source of truth, what tests and exports
        # read); the browser gets each once, then patches (see plotview)
        self.views = {v: PlotView(name=v, carry_plotly=(i == 0)) for i, v in enumerate(self._specs)}
        for v, pv in self.views.items():
            pv.observe(lambda ch, v=v: self._on_click(v, ch), "click")
        self._build_figures()
        self._url = urlstate.URLSync(layout=W.Layout(display="none"))
        self._verdicts = {v: W.HTML(tooltip="what this view's data says against its null, for the current selection")
                          for v in self._specs}
        self._verdict_text: dict[str, str] = {}
        self._update_verdicts()
        self._model_box = W.VBox([self._controls] + [w for v in self._specs
                                                     for w in (self._verdicts[v], self.views[v])])
        self._model_box.add_class("geomlib-model-box")
        self.add_class("geomlib-app")
        self._mode_box = W.VBox(layout=W.Layout(display="none"))  # compare mode or the training view, when chosen
        tools = W.VBox([W.HTML("<hr style='margin:6px 0'>", tooltip="below: export a view, compute another model"),
                        self._export_box, self._compute_box])
        self.children = [self._header, self._model_box, self._mode_box, tools, self._url]
        W.link((self, "mode"), (self._mode, "value"))
        self.observe(self._on_mode, names="mode")
        self.observe(self._on_state, names=list(STATE))
        self.observe(self._on_busy, names="busy")
        self.observe(self._on_source, names="source")
        self.observe(self._write_url, names=[*STATE, "source", "mode"])
        url_notes += self._apply_mode(params)
        self._write_url()
        self._url_notes(url_notes)
        if self._startup_error:
            self._set_error(GeomlibError(self._startup_error))

    # -- state -----------------------------------------------------------------------------------------
    def selection(self) -> Selection:
        pair = None if self.pair == (-1, -1) else tuple(self.pair)
        return Selection(self.anchor, self.family, self.phase, self.operator, self.head, self.op_metric, pair,
                         scale=self.scale, mask_diagonal=self.mask_diagonal)

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
            self._phase.options = phase_options(ds)
            if self.phase not in self._phases():
                self.phase = "all"
            H = ds.sizes.get("head", 0)
            self._head.options = [(MEAN_LABEL, -1)] + [(str(h), h) for h in range(H)]
            if self.head >= H:
                self.head = -1
            self.anchor = n - 1
            self.pair = (-1, -1)
        self._info.value = _facts(ds)
        self._links.value = ""  # a download offered for the previous model is not this model's
        self._last, self._panels = {}, {}

    def _apply_url(self, params: dict) -> list[str]:
        """Set the traits a link's parameters ask for; one line per value that does not fit this model."""
        ds = self._ds
        values, bad = urlstate.validate(
            params, n_layers=ds.sizes["layer"], families=list(self._family.options),
            phases=self._phases(), heads=ds.sizes.get("head", 0), operators=tuple(OPERATORS))
        with self.hold_trait_notifications():
            for k, v in values.items():
                setattr(self, k, v)
        return bad

    def _phases(self) -> list[str]:
        return [value for _, value in self._phase.options]

    def _cached(self, source: str) -> bool:
        return source in {e.source for e in self._entries if e.analyses}

    def _url_notes(self, notes: list[str]) -> None:
        """What a link asked for and did not get: one line, under the facts."""
        if notes:
            self._info.value += ("<div class='geomlib-url-note' style='font-size:12px;color:#b00020'>"
                                 f"{html.escape('; '.join(notes))}</div>")

    def apply_query(self, query: str | None) -> list[str]:
        """Show the view a link's query string describes; the values ignored, one line each (also shown)."""
        params = urlstate.parse(query)
        notes = []
        if "model" in params and params["model"] != self.source:
            if self._cached(params["model"]):
                self.source = params["model"]
            else:
                notes.append(f"model={params['model']!r} ignored: not a cached model")
        notes += self._apply_url(params)
        notes += self._apply_mode(params)
        if params:
            # each view's whole figure again: a page that renders now draws ``figure``, not the patches before it
            with self._busy():
                self._build_figures()
        self._url_notes(notes)
        return notes

    def _write_url(self, change=None) -> None:
        self._url.query = urlstate.serialize(urlstate.state_of(self))

    # -- controls ----------------------------------------------------------------------------------------
    def _build_controls(self) -> None:
        self._model = W.Dropdown(options=[(e.label, e.source) for e in self._entries], description="model",
                                 layout=W.Layout(width="44em", max_width="100%"))
        self._anchor = W.IntSlider(description="anchor", min=0, max=1, continuous_update=False,
                                   layout=W.Layout(width="30em"))
        self._family = W.Dropdown(description="family", layout=W.Layout(width="16em"))
        self._phase = W.Dropdown(description="phase", options=[("all (no phase shaded)", "all")],
                                 layout=W.Layout(width="19em"))
        self._operator = W.ToggleButtons(options=[(op.upper(), op) for op in OPERATORS], description="operator",
                                         style={"button_width": "4em"})
        self._metric = W.ToggleButtons(options=[("cos", "cos"), ("angles", "pa_mean")], description="metric",
                                       style={"button_width": "5em"})
        self._head = W.Dropdown(description="head", options=[(MEAN_LABEL, -1)], layout=W.Layout(width="17em"))
        self._scale = W.Dropdown(description="range", options=[(SCALE_LABELS[k], k) for k in SCALES],
                                 layout=W.Layout(width="16.5em"))
        self._mask = W.Checkbox(description="mask diagonal", indent=False, layout=W.Layout(width="9em"))
        self._model.observe(lambda ch: ch["new"] and ch["new"] != self.source and setattr(self, "source", ch["new"]),
                            "value")
        self._status = W.HTML()
        self._busy_label = W.HTML(layout=W.Layout(min_width="7em"))
        self._info = W.HTML()
        self._mode = W.ToggleButtons(options=[("one model", "model"), ("compare", "compare"),
                                              ("training", "training")], style={"button_width": "7em"})
        self._title = W.HTML("<h3 style='margin:4px 12px 4px 0'>geomlib · layer geometry of transformer weights</h3>"
                             + STICKY_CSS)
        self._header = W.VBox([W.HBox([self._title, self._mode, self._busy_label],
                                      layout=W.Layout(align_items="center", flex_flow="row wrap")),
                               self._info, self._status])
        self._controls = W.VBox([W.HBox([self._model, self._anchor], layout=W.Layout(width="auto", flex_flow="row wrap")),
                                 W.HBox([self._family, self._phase, self._operator, self._metric, self._head,
                                         self._scale, self._mask], layout=W.Layout(width="auto", flex_flow="row wrap"))])
        # the controls stay at the top of the window while the views scroll under them: a researcher looking
        # at any view can change what it shows (the boxes around them must not clip, or sticky has no effect)
        self._controls.add_class("geomlib-controls")
        self._build_tools()
        self._tooltips()

    def _tooltips(self) -> None:
        """What each control selects, on hover (an unset tooltip reads "null" in the page)."""
        for w, tip in ((self._model, TIPS["model"]), (self._anchor, TIPS["anchor"]), (self._family, TIPS["family"]),
                       (self._phase, TIPS["phase"]), (self._operator, TIPS["operator"]),
                       (self._metric, TIPS["op_metric"]), (self._head, TIPS["head"]), (self._scale, TIPS["scale"]),
                       (self._mask, TIPS["mask_diagonal"]), (self._src, TIPS["compute"]),
                       (self._go, TIPS["go"]), (self._cancel, TIPS["cancel"]), (self._view, TIPS["view"]),
                       (self._fmt, TIPS["format"]), (self._save, TIPS["export"])):
            w.tooltip = tip
            if isinstance(w, W.Dropdown) and w.description:
                # ipywidgets 8 shows a described Dropdown's tooltip nowhere: the label carries it as its title
                w.description_allow_html = True
                w.description = f"<span title=\"{html.escape(tip)}\">{html.escape(w.description)}</span>"
        # display-only widgets have a (hidden) label too, whose title would read "null"
        for w, tip in ((self._status, "the last error, in one line"), (self._info, "facts of the model shown"),
                       (self._busy_label, "shown while a change is applied"),
                       (self._compute_msg, "the compute's progress, then its outcome in one line"),
                       (self._links, "the download link of the last export"),
                       (self._title, "geomlib dashboard")):
            w.tooltip = tip
        self._mode.tooltips = [TIPS["mode_" + m] for _, m in self._mode.options]
        self._mode.tooltip = "what the page shows: " + "; ".join(TIPS["mode_" + m] for _, m in self._mode.options)
        self._operator.tooltips = [OPERATOR_TIPS[op] for _, op in self._operator.options]
        self._metric.tooltips = [METRIC_TIPS[m] for _, m in self._metric.options]

    def _freeze(self, frozen: bool) -> None:
        for w in (self._model, self._anchor, self._family, self._phase, self._operator, self._metric, self._head,
                  self._scale, self._mask, self._src, self._go, self._save):
            w.disabled = frozen

    # -- figure updates ------------------------------------------------------------------------------------
    def _on_state(self, change) -> None:
        if not self._switching:
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
        with self._busy():
            self._switch(change)

    def _switch(self, change) -> None:
        # the new model's traits (anchor, family, ...) must not redraw the old figures: its own are built below
        try:
            self._switching = True
            try:
                self._load(change["new"])
            finally:
                self._switching = False
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

    def _update_verdicts(self) -> None:
        """Each view's one-line verdict against its null, for the current selection (sent only when it changed)."""
        sel = self.selection()
        for v, spec in self._specs.items():
            # moving the anchor (the commonest change) reuses the sentence of every view that does not follow it
            res = self._view_selection(v, sel)
            key = (v, res if "anchor" in spec.depends else replace(res, anchor=0))
            text = self._verdict_memo.get(key)
            if text is None:
                try:
                    text = spec.verdict_at(self._ds, res)
                except Exception as exc:  # noqa: BLE001 - a verdict must never break the view it sums up
                    text = f"(no verdict: {exc.__class__.__name__})"
                self._verdict_memo[key] = text
            if self._verdict_text.get(v) != text:
                self._verdict_text[v] = text
                self._verdicts[v].value = (f"<div class='geomlib-verdict' data-view='{v}' style='font-size:13px;"
                                           f"color:#1a3d6d;margin:8px 0 0 4px'>{html.escape(text)}</div>"
                                           if text else "")

    @contextmanager
    def _busy(self):
        """``busy`` (and the page's "updating…" label) while a change that touches data is applied."""
        was = self.busy
        self.busy = True
        try:
            yield
        finally:
            self.busy = was

    def _on_busy(self, change) -> None:
        self._busy_label.value = BUSY_HTML if change["new"] else ""

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

    def _set_error(self, exc: Exception) -> None:
        self.error = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        self._status.value = f"<span class='geomlib-error' style='color:#b00020'>{html.escape(self.error)}</span>"

    @property
    def dataset(self):
        return self._ds


def build_app(source: str | None = None, roots=None, query: str | None = None) -> Dashboard:
    """The whole dashboard, ready to ``display``; ``query``: a link's query string (see :mod:`.urlstate`)."""
    return Dashboard(source, roots, query=query)


__all__ = ["Dashboard", "build_app"]
