"""How the dashboard keeps its views in step with the selection: panels, patches, and the order they go in.

A change rebuilds only the panels whose selection key changed (``PanelSpec.depends``, as each view reads the
selection), takes them from a per-model memo when they were built before, and sends each view one patch: its
changed traces (JSON text, encoded once per panel) and the overlays and titles that moved.  The views near the
page's window go first, the most visible first; a view far from it is rebuilt a moment later (``DEFER_S``), once
the browser has redrawn what is being looked at.  The ``go.Figure`` of each view (exports, tests) catches up
only when read (:attr:`Patches.figures`).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict

from ..plot import views
from ..plot.layout import build_figure, overlays, panel_title, point_ranges, title_text
from ..plot.spec import Selection, build_panel
from .plotview import to_json_safe
from .prefetch import MEMO_PANELS, running_loop

#: seconds a view far from the window waits before it is rebuilt after a change (the views near it go first)
DEFER_S = 0.15
#: selections remembered per model as each view reads them (:meth:`Patches._view_selection`)
RESOLVED_MAX = 4096


class Patches:
    """Mixin of :class:`~geomlib.dashboard.app.Dashboard`: builds its figures and keeps them in step."""

    def _view_title(self, v: str) -> str:
        # the first view carries the model line (quantization label, analyses missing); the others their name
        return title_text(self._ds, None) if v == next(iter(self._specs)) else views.title(v)

    def _view_selection(self, v: str, sel: Selection) -> Selection:
        """``sel`` as view ``v`` reads it (:meth:`ViewSpec.selection`), remembered per model: some views read the
        dataset to resolve it (which families have spectra, which are norm gains), and a change asks once per view
        to refresh, once more for the verdicts, and prefetching once per view and neighbouring step."""
        res = self._resolved.get((v, sel))
        if res is None:
            if len(self._resolved) >= RESOLVED_MAX:
                self._resolved.clear()
            res = self._resolved[(v, sel)] = self._specs[v].selection(self._ds, sel)
        return res

    def _key(self, spec, res: Selection) -> tuple:
        """What a panel's traces depend on: the selection fields it declares, as its view reads them."""
        return tuple(getattr(res, f) for f in spec.depends)

    @property
    def figures(self) -> dict:
        """Each view's figure as a ``go.Figure``, up to date (what tests and exports read).

        A refresh sends the browser plain dicts and keeps the figures' catching up for when they are
        read: assigning shapes or traces to a ``go.Figure`` validates every property, and doing that on
        every anchor move cost more than the rest of a refresh.
        """
        if self._later:
            self._catch_up()
        for v, pending in self._pending.items():
            if pending:
                self._apply(self._figs[v], pending)
                pending.clear()
        return self._figs

    @staticmethod
    def _apply(fig, pending: dict) -> None:
        with fig.batch_update():
            for i, text in pending.get("traces", {}).items():
                props = json.loads(text)
                fig.data[i].update({k: val for k, val in props.items() if k != "type"}, overwrite=True)
            if "shapes" in pending:
                fig.layout.shapes = pending["shapes"]
            if "annotations" in pending:
                fig.layout.annotations = pending["annotations"]

    def _build_figures(self) -> None:
        """Build every view's figure for the current model and send each whole to the browser."""
        sel = self.selection()
        self._figs, self._index, self._panels, self._last = {}, {}, {}, {}
        self._pending: dict[str, dict] = {v: {} for v in self._specs}
        if getattr(self, "_later_handle", None) is not None:
            self._later_handle.cancel()
        self._later: set[str] = set()  # views far from the window whose rebuild waits (see _defer)
        self._later_handle = None
        self._shapes, self._annotations, self._titles, self._axes = {}, {}, {}, {}
        self._verdict_memo: dict[tuple, str] = {}  # per model
        self._resolved: dict[tuple, Selection] = {}  # (view, selection) -> the selection as the view reads it
        self._memo: OrderedDict[tuple, object] = OrderedDict()  # (view, panel, key) -> Panel, per model
        self._json: dict[int, list[str]] = {}  # id(Panel) -> its traces as JSON text
        for v, view in self._specs.items():
            res = self._view_selection(v, sel)
            for c, p in enumerate(view.panels):
                self._last[(v, c)] = key = self._key(p, res)
                self._panels[(v, c)] = self._panel(v, c, key, res)
            row = [self._panels[(v, c)] for c in range(len(view.panels))]
            fig, index = build_figure(self._ds, sel, (v,), title=self._view_title(v), grid=[row], info=True)
            fig.update_layout(width=None, autosize=True)  # the page's width (PlotView resizes with it)
            # plotly's default hides tick labels past the page's edge by measuring each one on every
            # redraw; the margins hold them here, and the measuring was a tenth of a redraw
            fig.update_xaxes(ticklabeloverflow="allow")
            fig.update_yaxes(ticklabeloverflow="allow")
            # colour bars, legends and titles sit inside their panels: a margin plotly widened for them (when a
            # colour bar's tick labels changed width, say) made it draw the whole figure a second time
            fig.update_layout(margin_autoexpand=False)
            self._figs[v], self._index[v] = fig, index[0]
            self._shapes[v] = [sh.to_plotly_json() for sh in fig.layout.shapes]
            self._annotations[v] = [a.to_plotly_json() for a in fig.layout.annotations]
            self._titles[v] = self._annotations[v][:len(row)]  # each subplot title's place and font
            for c, panel in enumerate(row):  # the axis properties each panel set, as it set them
                for name, props in (("xaxis", panel.x), ("yaxis", panel.y)):
                    self._axes[(v, name if c == 0 else f"{name}{c + 1}")] = dict(props)
            self.views[v].show(fig)
        if hasattr(self, "_verdicts"):
            self._update_verdicts()
        self._curve = {v: {i: c for c, ids in enumerate(self._index[v]) for i in ids} for v in self._specs}
        self._prefetch_restart()

    def refresh(self, force: bool = False) -> None:
        """Rebuild only the panels whose inputs changed; send each view only what changed in it."""
        with self._busy():
            self._refresh(force)

    def _refresh(self, force: bool) -> None:
        t0 = time.perf_counter()
        sel = self.selection()
        plan = []
        for v in self._specs:
            res, keys, changed = self._changes(v, sel, force)
            plan.append((bool(changed), -self.views[v].in_view, v, res, keys, changed))
        # each view is sent as soon as it is ready and the browser redraws in that order: first the views whose
        # overlays alone moved (an anchor line costs the browser next to nothing), then the rebuilt views, the
        # most visible first (the browser puts off redrawing those far out of sight: see plotview)
        later = []
        for _, _, v, res, keys, changed in sorted(plan, key=lambda t: t[:2]):
            if changed and not force and self._out_of_sight(v, sel):
                later.append(v)
                continue
            self._rebuild(v, sel, res, keys, changed, force)
        self._defer(later)
        self._update_verdicts()
        self.render_ms = (time.perf_counter() - t0) * 1000
        self.error = ""
        self._status.value = ""
        self._prefetch_restart()

    def _changes(self, v: str, sel: Selection, force: bool = False) -> tuple[Selection, list[tuple], list[int]]:
        """View ``v`` for the selection ``sel``: the selection as it reads it, each panel's key, and the panels
        whose key differs from the one shown (every panel with ``force``)."""
        res = self._view_selection(v, sel)
        keys = [self._key(p, res) for p in self._specs[v].panels]
        return res, keys, [c for c, key in enumerate(keys) if force or self._last.get((v, c)) != key]

    def _rebuild(self, v: str, sel: Selection, res: Selection, keys: list, changed: list[int], force: bool = False) -> None:
        """Build view ``v``'s changed panels (``changed``, for the panel keys ``keys``) and send its patch."""
        for c in changed:
            self._last[(v, c)] = keys[c]
            if force:
                self._memo.pop((v, c, keys[c]), None)
            self._panels[(v, c)] = self._panel(v, c, keys[c], res)
        self._patch(v, sel, changed)

    def _out_of_sight(self, v: str, sel: Selection) -> bool:
        """Whether view ``v`` can be rebuilt a moment later: it is far from the page's window (the page would not
        redraw it before it comes near anyway), its overlays (drawn at once wherever a view is) do not move, and
        a kernel event loop runs to do it."""
        if self.views[v].near or running_loop() is None:
            return False
        row = [self._panels[(v, c)] for c in range(len(self._specs[v].panels))]
        return overlays(self._ds, sel, [row], len(row))[0] == self._shapes.get(v)

    def _defer(self, names: list[str]) -> None:
        """Rebuild views ``names`` (out of sight) once the browser has had time to redraw the views in sight.

        Building and sending them at once took the kernel's and the page's share of the machine while the
        browser redrew what is being looked at; the page would not draw them before they come near anyway.
        """
        if not names:
            return
        self._later.update(names)
        if self._later_handle is None:
            self._later_handle = running_loop().call_later(DEFER_S, self._catch_up)

    def _catch_up(self) -> None:
        """Rebuild the views put off by :meth:`_defer` for the selection shown now."""
        if self._later_handle is not None:
            self._later_handle.cancel()
            self._later_handle = None
        names, self._later = [v for v in self._specs if v in self._later], set()
        sel = self.selection()
        for v in names:
            try:
                self._rebuild(v, sel, *self._changes(v, sel))
            except Exception as exc:  # noqa: BLE001 - run from the event loop: shown on the page, not lost in a log
                self._set_error(exc)

    def _panel(self, v: str, c: int, key: tuple, res: Selection):
        """Panel ``c`` of view ``v`` for the selection key ``key``: remembered per model, since researchers go
        back and forth between a few families, operators and heads; with its traces as JSON for the browser."""
        hit = self._memo.get((v, c, key))
        if hit is not None:
            self._memo.move_to_end((v, c, key))
            return hit
        panel = build_panel(self._specs[v].panels[c], self._ds, res)
        self._memo[(v, c, key)] = panel
        # as JSON text, encoded once: sent as a nested dict, every patch cost the kernel a walk of it for
        # binary buffers (ipywidgets) and an encoding (the kernel's session), while the browser redraws
        self._json[id(panel)] = [json.dumps(to_json_safe(t.to_plotly_json()), separators=(",", ":"))
                                 for t in panel.traces]
        while len(self._memo) > MEMO_PANELS:
            self._json.pop(id(self._memo.popitem(last=False)[1]), None)
        return panel

    def _patch(self, v: str, sel: Selection, changed: list[int]) -> None:
        row = [self._panels[(v, c)] for c in range(len(self._specs[v].panels))]
        pending = self._pending[v]
        traces: dict[int, dict] = {}
        relayout: dict = {}
        for c in changed:
            for i, props in zip(self._index[v][c], self._json[id(row[c])]):
                traces[i] = props
            # the panel's axes follow it too (the per-head axis names the operator and metric shown); a
            # changed property is set on the figure now, to send plotly's normalised form of it
            for name, props in (("xaxis", row[c].x), ("yaxis", row[c].y)):
                axis = name if c == 0 else f"{name}{c + 1}"
                last = self._axes.setdefault((v, axis), {})
                for k, val in props.items():
                    if k in last and last[k] == val:
                        continue
                    last[k] = val
                    fig = self._figs[v]
                    fig.layout[axis][k] = val
                    after = fig.layout[axis][k]
                    relayout[f"{axis}.{k}"] = after.to_plotly_json() if hasattr(after, "to_plotly_json") else after
            for axis, rng in point_ranges(row[c], c + 1).items():  # γ points moved: refit their fixed axes
                self._figs[v].layout[axis].range = rng
                relayout[f"{axis}.range"] = rng
        if traces:
            pending.setdefault("traces", {}).update(traces)
        # shapes and annotations are compared with what was last set, kept here as plain dicts: reading
        # them back from the figure (to_plotly_json, a deep copy) cost more than the rest of a refresh
        shapes, notes = overlays(self._ds, sel, [row], len(row))
        if self._shapes.get(v) != shapes:
            pending["shapes"] = shapes  # the exported figure carries them; the browser draws them as overlays
            self._shapes[v] = shapes
            self.views[v].set_overlays(shapes)
        base = self._titles[v]
        new = [dict(a, **panel_title(p, info=True)) for a, p in zip(base, row)] + notes
        if new != self._annotations.get(v):
            pending["annotations"] = new
            self._annotations[v] = new
            relayout["annotations"] = new
        self.views[v].send(traces, relayout)
