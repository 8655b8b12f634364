"""Compare mode and the training-dynamics view: two more ways into the cached results, one widget each.

:class:`CompareMode` sets two models (or two checkpoints of a cached sweep)
side by side on one layer × layer variable, with their difference and, when
``geomlib compare A B`` is cached, their cross geometry.  :class:`TrainingMode`
shows a cached sweep (:func:`geomlib.sweep`): a layer × checkpoint heatmap of
how far each layer moved, and one layer's trajectory with the loss.

Each is a widget whose state is traitlets (set a trait, the figure follows);
the figures are the pure functions of :mod:`geomlib.plot.comparison` and
:mod:`geomlib.plot.training`; each has a one-line verdict above it.
"""

from __future__ import annotations

import html
import time

import ipywidgets as W
import traitlets

from ..errors import GeomlibError
from ..plot import comparison, training
from ..plot.layout import LIGHT
from . import urlstate
from .data import cached_compare, checkpoint_choices, open_any, open_sweep, sweep_entries
from .plotview import PlotView

#: what the page shows: one model's views, two models side by side, or a sweep's training dynamics
MODES = ("model", "compare", "training")


def _line(cls: str, text: str, error: bool = False) -> str:
    style = "color:#b00020" if error else "color:#333"
    return f"<div class='{cls}' style='font-size:13px;{style};margin:2px 0 4px 0'>{html.escape(text)}</div>"


def _fit(fig) -> None:
    """Width follows the page (the view resizes with it); the height stays the figure's; the views' style."""
    fig.update_layout(width=None, autosize=True, template=LIGHT)


class CompareMode(W.VBox):
    """Two models or checkpoints side by side.

    Traits
    ------
    a, b : str          the two sources (a cached model, or ``sweep:NAME @ CHECKPOINT``)
    var : str           the layer × layer variable (:data:`geomlib.plot.comparison.VARIABLES`)
    pick : str          the coordinate of its picked dimension (family, operator, MLP view…)
    error, render_ms    the last error (one line), the last redraw's time
    """

    a = traitlets.Unicode("")
    b = traitlets.Unicode("")
    var = traitlets.Unicode("mlp_matched_cos")
    pick = traitlets.Unicode("")
    error = traitlets.Unicode("")
    render_ms = traitlets.Float(0.0)

    def __init__(self, choices: list[tuple[str, str]], roots=None, a: str = "", b: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        if len(choices) < 2:
            raise GeomlibError("compare mode needs two cached models or sweep checkpoints; "
                               f"{len(choices)} found (compute another with geomlib compute)")
        self._roots, self._data = roots, {}
        keys = [k for _, k in choices]
        a = a if a in keys else keys[0]
        if b not in keys or b == a:  # default: one of A's shape (architecture and depth, from the labels) if any
            shape = dict((k, label.partition(" — ")[2].split(" [")[0].split(" (")[0]) for label, k in choices)
            b = next((k for k in keys if k != a and shape[k] == shape[a]), next(k for k in keys if k != a))
        self._a = W.Dropdown(options=choices, value=a, description="A", layout=W.Layout(width="34em"))
        self._b = W.Dropdown(options=choices, value=b, description="B", layout=W.Layout(width="34em"))
        self._var = W.Dropdown(description="variable", layout=W.Layout(width="26em"))
        self._pick = W.Dropdown(description="of", layout=W.Layout(width="14em"))
        for w, tip in ((self._a, "model A: a cached model, or a checkpoint of a cached sweep"),
                       (self._b, "model B, compared with A"),
                       (self._var, "the layer × layer variable shown for A, for B, and as A − B"),
                       (self._pick, "which family, operator or MLP view of the variable (the others are averaged)")):
            w.tooltip = tip
        self.verdict = W.HTML()
        self.plot = PlotView(name="compare", carry_plotly=False)
        self.cross_note = W.HTML()
        self.cross = PlotView(name="cross", carry_plotly=False, layout=W.Layout(display="none"))
        self.children = [W.HBox([self._a, self._b], layout=W.Layout(flex_flow="row wrap")),
                         W.HBox([self._var, self._pick], layout=W.Layout(flex_flow="row wrap")),
                         self.verdict, self.plot, self.cross_note, self.cross]
        with self.hold_trait_notifications():
            self.a, self.b = a, b
        W.link((self, "a"), (self._a, "value"))
        W.link((self, "b"), (self._b, "value"))
        # setting a dropdown's options resets its value: those resets are not the user's choice
        self._syncing = False
        self._var.observe(lambda ch: not self._syncing and ch["new"] and setattr(self, "var", ch["new"]), "value")
        self._pick.observe(lambda ch: not self._syncing and ch["new"] is not None and setattr(self, "pick", ch["new"]),
                           "value")
        self.observe(lambda ch: self._models(), names=["a", "b"])
        self.observe(lambda ch: self._options(), names="var")
        self.observe(lambda ch: self.redraw(), names="pick")
        self._models()

    def _open(self, key: str):
        if key not in self._data:
            self._data[key] = open_any(key, self._roots)
        return self._data[key]

    def _models(self) -> None:
        """A or B changed: the variables both have, then the figure and the cross geometry."""
        try:
            A, B = self._open(self.a), self._open(self.b)
        except GeomlibError as exc:
            self._fail(exc)
            return
        names = comparison.variables(A, B)
        if not names:
            self._fail(GeomlibError(f"{self.a} and {self.b} share no layer × layer variable; compute the gauge "
                                    "analysis of both"))
            return
        var = self.var if self.var in names else names[0]
        self._syncing = True
        try:
            self._var.options = [(comparison.VARIABLES[v][0], v) for v in names]
            self._var.value = var
        finally:
            self._syncing = False
        if var != self.var:
            self.var = var  # the options follow (observer)
        else:
            self._options()
        self._cross(A, B)

    def _options(self) -> None:
        A, B = self._open(self.a), self._open(self.b)
        opts = comparison.choices(A, B, self.var)
        default = "mean" if "mean" in opts else (opts[0] if opts else "")
        pick = self.pick if self.pick in opts else default
        self._syncing = True
        try:
            self._pick.options = opts
            self._pick.value = pick or None
        finally:
            self._syncing = False
        self._pick.layout.display = None if opts else "none"
        if pick != self.pick:
            self.pick = pick  # redraws (observer)
        else:
            self.redraw()

    def selection(self) -> dict:
        dim = comparison.VARIABLES.get(self.var, ("", ""))[1]
        return {dim: self.pick} if self.pick else {}

    def redraw(self) -> None:
        t0 = time.perf_counter()
        try:
            A, B = self._open(self.a), self._open(self.b)
            pick = self.selection()
            fig = comparison.side_by_side(A, B, self.var, pick)
            text = comparison.verdict(A, B, self.var, pick)
        except GeomlibError as exc:
            self._fail(exc)
            return
        _fit(fig)
        fig.update_layout(meta=dict(a=self.a, b=self.b, var=self.var, pick=self.pick),  # what it shows, for the page
                          title=dict(text=f"A: {self.a} · B: {self.b}", x=0.01, font=dict(size=13)))
        self.plot.show(fig)
        self.error = ""
        self.verdict.value = _line("geomlib-verdict geomlib-compare-verdict", text)
        self.render_ms = (time.perf_counter() - t0) * 1000

    def _cross(self, A, B) -> None:
        ds = None
        if not (self.a.startswith("sweep:") or self.b.startswith("sweep:")):
            ds = cached_compare(self.a, self.b, self._roots)
        if ds is not None and ds.attrs.get("comparison") == "layer-to-layer":
            fig = comparison.cross_figure(ds)
            _fit(fig)
            self.cross.show(fig)
            self.cross.layout.display = None
            self.cross_note.value = _line("geomlib-cross-note", f"cross geometry: {self.a}'s layers against "
                                                                f"{self.b}'s (geomlib compare, cached)")
        else:
            self.cross.layout.display = "none"
            why = ("checkpoints of a sweep: the training view shows each against the previous one"
                   if self.a.startswith("sweep:") or self.b.startswith("sweep:") else
                   f"no layer-to-layer compare of A with B is cached: geomlib compare {self.a} {self.b}")
            self.cross_note.value = _line("geomlib-cross-note", why)

    def _fail(self, exc: Exception) -> None:
        self.error = str(exc).splitlines()[0]
        self.verdict.value = _line("geomlib-verdict geomlib-error", self.error, error=True)


class TrainingMode(W.VBox):
    """The training-dynamics view of a cached sweep.

    Traits
    ------
    sweep : str       the cached sweep's name
    metric : str      a ``moved_*`` variable (each layer against itself a checkpoint earlier)
    layer : int       the layer whose trajectory is shown (a click on the heatmap sets it)
    error, render_ms  the last error (one line), the last redraw's time
    """

    sweep = traitlets.Unicode("")
    metric = traitlets.Unicode("moved_mlp_matched_cos")
    layer = traitlets.Int(-1)
    error = traitlets.Unicode("")
    render_ms = traitlets.Float(0.0)

    def __init__(self, roots=None, sweep: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self._roots = roots
        names = list(sweep_entries(roots))
        if not names:
            raise GeomlibError("no sweep is cached: make one with geomlib sweep (or make demo-sweep)")
        self._sweep = W.Dropdown(options=names, description="sweep", layout=W.Layout(width="24em"))
        self._metric = W.Dropdown(description="metric", layout=W.Layout(width="26em"))
        self._layer = W.IntSlider(description="layer", min=0, max=1, continuous_update=False,
                                  layout=W.Layout(width="26em"))
        for w, tip in ((self._sweep, "a cached sweep: checkpoints of one training run (geomlib sweep)"),
                       (self._metric, "how much each layer moved: its cosine with itself a checkpoint earlier "
                                      "(1 = unchanged)"),
                       (self._layer, "the layer whose trajectory is plotted; click a heatmap cell to choose it")):
            w.tooltip = tip
        self.verdict = W.HTML()
        self.plot = PlotView(name="training", carry_plotly=False)
        self.plot.observe(self._on_click, "click")
        self.children = [W.HBox([self._sweep, self._metric, self._layer], layout=W.Layout(flex_flow="row wrap")),
                         self.verdict, self.plot]
        self.sweep = sweep if sweep in names else names[0]
        self._sweep.value = self.sweep
        self._load()
        W.link((self, "sweep"), (self._sweep, "value"))
        W.link((self, "layer"), (self._layer, "value"))
        self._metric.observe(lambda ch: ch["new"] and setattr(self, "metric", ch["new"]), "value")
        self.observe(lambda ch: self._load(), names="sweep")
        self.observe(lambda ch: self.redraw(), names=["metric", "layer"])

    @property
    def dataset(self):
        return open_sweep(self.sweep, self._roots)

    def _load(self) -> None:
        ds = self.dataset
        names = training.metrics(ds)
        n = ds.sizes["layer"]
        with self.hold_trait_notifications():
            self._metric.options = [(m.removeprefix("moved_"), m) for m in names]
            if self.metric not in names and names:
                self.metric = names[0]
            self._metric.value = self.metric if names else None
            self._layer.max = n - 1
            if not 0 <= self.layer < n:
                self.layer = n - 1
        self.redraw()

    def redraw(self) -> None:
        t0 = time.perf_counter()
        try:
            ds = self.dataset
            fig = training.training_figure(ds, self.metric, layer=self.layer)
            text = training.verdict(ds, self.metric)
        except GeomlibError as exc:
            self.error = str(exc).splitlines()[0]
            self.verdict.value = _line("geomlib-verdict geomlib-error", self.error, error=True)
            return
        _fit(fig)
        fig.update_layout(meta=dict(sweep=self.sweep, metric=self.metric, layer=self.layer))
        self.plot.show(fig)
        self.error = ""
        self.verdict.value = _line("geomlib-verdict geomlib-training-verdict", text)
        self.render_ms = (time.perf_counter() - t0) * 1000

    def _on_click(self, change) -> None:
        ev = change["new"] or {}
        if ev.get("curve") == 0 and ev.get("y") is not None:  # the heatmap: y is the layer
            self.layer = int(ev["y"])


class Modes:
    """The mode switch of :class:`~geomlib.dashboard.Dashboard` (a mixin: uses its widgets and state).

    ``mode`` "model" shows the one-model views; "compare" and "training" hide them and show
    :class:`CompareMode` or :class:`TrainingMode`, each built when first shown.
    """

    def _on_mode(self, change) -> None:
        with self._busy():
            self._show_mode()

    def _show_mode(self) -> None:
        m = self.mode
        self._model_box.layout.display = None if m == "model" else "none"
        self._info.layout.display = None if m == "model" else "none"  # the facts are the one model's
        widget = None
        try:
            if m == "compare":
                widget = self.compare_mode()
            elif m == "training":
                widget = self.training_mode()
        except GeomlibError as exc:  # nothing to compare or no sweep cached: one line, in place of the view
            self._set_error(exc)
            widget = W.HTML(f"<div class='geomlib-mode-empty' style='color:#b00020'>{html.escape(self.error)}</div>")
        self._mode_box.children = [widget] if widget is not None else []
        self._mode_box.layout.display = "none" if widget is None else None

    def compare_mode(self) -> CompareMode:
        """Compare mode's widget (built when first asked for): A and B default to the model shown and the next."""
        if self._compare_w is None:
            want = getattr(self, "_want", {})
            choices = [(e.label, e.source) for e in self._entries if e.analyses] + checkpoint_choices(self._roots)
            self._compare_w = CompareMode(choices, self._roots, a=want.get("a") or self.source, b=want.get("b", ""))
            self._compare_w.observe(self._write_url, names=["a", "b", "var", "pick"])
        return self._compare_w

    def training_mode(self) -> TrainingMode:
        """The training-dynamics widget (built when first asked for)."""
        if self._training_w is None:
            self._training_w = TrainingMode(self._roots, sweep=getattr(self, "_want", {}).get("sweep", ""))
            self._training_w.observe(self._write_url, names=["sweep", "metric", "layer"])
        return self._training_w

    def _apply_mode(self, params: dict) -> list[str]:
        """The mode a link asks for, and its compare/training settings; one line per value ignored."""
        notes = []
        self._want = {k: params[k] for k in ("a", "b", "sweep") if k in params}
        if "mode" in params:
            if params["mode"] in MODES:
                self.mode = params["mode"]
            else:
                notes.append(f"mode={params['mode']!r} ignored: one of {', '.join(MODES)}")
        if self.mode == "compare" and self._compare_w is not None:
            c = self._compare_w
            for key, trait, options in (("cvar", "var", lambda: [v for _, v in c._var.options]),
                                        ("cpick", "pick", lambda: list(c._pick.options))):
                if key in params:
                    if params[key] in options():
                        setattr(c, trait, params[key])
                    else:
                        notes.append(f"{key}={params[key]!r} ignored: one of {', '.join(options())}")
        if self.mode == "training" and self._training_w is not None:
            t = self._training_w
            if "tmetric" in params:
                names = [v for _, v in t._metric.options]
                if params["tmetric"] in names:
                    t.metric = params["tmetric"]
                else:
                    notes.append(f"tmetric={params['tmetric']!r} ignored: one of {', '.join(names)}")
            if "tlayer" in params:
                n = t.dataset.sizes["layer"]
                k = urlstate.as_int(params["tlayer"])
                if k is not None and 0 <= k < n:
                    t.layer = k
                else:
                    notes.append(f"tlayer={params['tlayer']!r} ignored: a layer 0–{n - 1}")
        return notes


__all__ = ["MODES", "CompareMode", "Modes", "TrainingMode"]
