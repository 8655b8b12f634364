"""A small anywidget around plotly.js: the dashboard's one figure, updated by patches.

plotly's ``FigureWidget`` answers every update with a diff of the whole layout
and of every trace sent back to the kernel; with 13 linked panels that costs
more than the redraw itself.  This widget sends plotly.js once, the figure
once per model, then only what changed: trace objects for data that changed,
``relayout`` keys for overlays (moving a shape redraws that shape alone).
Clicks come back as one small message.

The views being looked at redraw first: each view tells the kernel how much of
the window it fills (``in_view``; the kernel rebuilds and sends the most
visible first), and a view far out of sight keeps its patches, merged, until it
comes within a window's height of the viewport or the page has had no change
for 1.5 s.
"""

from __future__ import annotations

import base64
import json
import math
from functools import lru_cache
from pathlib import Path

import anywidget
import numpy as np
import traitlets
from plotly.utils import PlotlyJSONEncoder

_ESM = r"""
// quiet time before a view out of sight catches up (a page may set globalThis.__geomlibCatchUpMs: tests do)
const CATCH_UP_MS = 1500;
const catchUpMs = () => globalThis.__geomlibCatchUpMs ?? CATCH_UP_MS;

async function plotlyFrom(src) {
  if (!globalThis.Plotly && src) {
    // evaluate the UMD bundle with no module system in sight, so it defines globalThis.Plotly
    (new Function("define", "module", "exports", src)).call(globalThis, undefined, undefined, undefined);
  }
  // views without the source (only one carries the 4.5 MB) wait for the one that has it
  while (!globalThis.Plotly) await new Promise((r) => setTimeout(r, 20));
  return globalThis.Plotly;
}

export default {
  async render({ model, el }) {
    const Plotly = await plotlyFrom(model.get("_plotly"));
    const div = document.createElement("div");
    div.className = "geomlib-plot";
    div.dataset.view = model.get("name");
    el.appendChild(div);
    // "shapes[3].x0" -> layout.shapes[3].x0 = v (to fold layout edits into one react when data changes too)
    const setPath = (obj, path, v) => {
      const keys = path.replace(/\[(\d+)\]/g, ".$1").split(".");
      let o = obj;
      for (const k of keys.slice(0, -1)) { if (o[k] === undefined) o[k] = {}; o = o[k]; }
      o[keys[keys.length - 1]] = v;
    };
    // a figure without a width takes the widget's, given to plotly as a number: left to autosize,
    // plotly re-reads the page's computed style on every redraw (about 5 ms a figure)
    const autoWidth = () => !(model.get("figure").layout || {}).width;
    const draw = () => {
      const f = model.get("figure");
      const layout = Object.assign({}, f.layout || {});
      if (autoWidth() && el.clientWidth > 0) Object.assign(layout, { width: el.clientWidth, autosize: false });
      Plotly.react(div, f.data || [], layout, model.get("config"));
    };
    // overlays (anchor lines, phase bands, selections) are drawn here, in an SVG laid over the plot,
    // from the same shape dicts the exported figures carry: moving a plotly shape makes plotly
    // re-derive and redraw the figure's every shape (tens of ms per figure); moving a line here is free
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("class", "geomlib-overlay");
    svg.style.cssText = "position:absolute;left:0;top:0;pointer-events:none;overflow:visible";
    div.style.position = "relative";
    const px = (ref, v, horizontal) => {
      const fl = div._fullLayout;
      const [name, domain] = String(ref).split(" ");
      const ax = fl[(horizontal ? "xaxis" : "yaxis") + name.slice(1)];
      if (!ax) return NaN;
      if (domain === "domain") return horizontal ? ax._offset + v * ax._length : ax._offset + (1 - v) * ax._length;
      // categorical axes (the per-phase bars) place category k at linear position k
      return ax._offset + ax.l2p(ax.type === "category" || ax.type === "multicategory" ? v : ax.d2l(v));
    };
    const paint = () => {
      if (!div._fullLayout) return;
      svg.setAttribute("width", div._fullLayout.width);
      svg.setAttribute("height", div._fullLayout.height);
      svg.replaceChildren();
      for (const s of model.get("overlays") || []) {
        if (s.visible === false) continue;
        const x0 = px(s.xref, s.x0, true), x1 = px(s.xref, s.x1, true);
        const y0 = px(s.yref, s.y0, false), y1 = px(s.yref, s.y1, false);
        if (![x0, x1, y0, y1].every(Number.isFinite)) continue;
        let e;
        if (s.type === "line") {
          e = document.createElementNS(NS, "line");
          e.setAttribute("x1", x0); e.setAttribute("x2", x1); e.setAttribute("y1", y0); e.setAttribute("y2", y1);
        } else if (s.type === "circle") {
          e = document.createElementNS(NS, "ellipse");
          e.setAttribute("cx", (x0 + x1) / 2); e.setAttribute("cy", (y0 + y1) / 2);
          e.setAttribute("rx", Math.abs(x1 - x0) / 2); e.setAttribute("ry", Math.abs(y1 - y0) / 2);
        } else {
          e = document.createElementNS(NS, "rect");
          e.setAttribute("x", Math.min(x0, x1)); e.setAttribute("y", Math.min(y0, y1));
          e.setAttribute("width", Math.abs(x1 - x0)); e.setAttribute("height", Math.abs(y1 - y0));
        }
        const line = s.line || {};
        e.setAttribute("fill", s.fillcolor || "none");
        e.setAttribute("stroke", line.width === 0 ? "none" : (line.color || "#444"));
        e.setAttribute("stroke-width", line.width === undefined ? 2 : line.width);
        if (line.dash === "dot") e.setAttribute("stroke-dasharray", "2,3");
        if (line.dash === "dash") e.setAttribute("stroke-dasharray", "6,4");
        e.setAttribute("data-type", s.type);
        svg.appendChild(e);
      }
      div.__overlays = model.get("overlays") || [];  // what the page shows, for tests and benchmarks
    };
    draw();
    div.appendChild(svg);
    paint();
    // the figure takes the page's width (no layout.width): follow the widget's width as the window, or
    // a view shown after being hidden (compare / training modes), changes it
    let lastWidth = el.clientWidth;
    new ResizeObserver(() => {
      const w = el.clientWidth;
      if (w > 0 && Math.abs(w - lastWidth) > 2 && autoWidth() && div._fullLayout) {
        lastWidth = w;
        Plotly.relayout(div, { width: w, autosize: false }).then(paint);
      }
    }).observe(el);
    div.on("plotly_afterplot", paint);
    div.on("plotly_relayout", paint);
    model.on("change:overlays", paint);
    // a view far from the viewport keeps its patches (merged: the latest trace and key win) and redraws
    // when it comes near, or once the page has had no change for 1.5 s (a redraw started while the
    // user is still changing things would hold up the views being looked at): those redraw first, and a
    // view that several quick changes touch while out of sight redraws once
    let pending = null, timer = null, idle = null, near = true;
    const later = () => {
      if (timer !== null || idle !== null) return;
      const tick = () => {
        const wait = catchUpMs() - (performance.now() - globalThis.__geomlibLastPatch);
        if (wait > 0) { timer = setTimeout(tick, wait); return; }
        timer = null;
        idle = requestIdleCallback(() => { idle = null; apply(); }, { timeout: 2000 });
      };
      timer = setTimeout(tick, catchUpMs());
    };
    const apply = () => {
      if (timer !== null) { clearTimeout(timer); timer = null; }
      if (idle !== null) { cancelIdleCallback(idle); idle = null; }
      const p = pending;
      pending = null;
      if (!p) return;
      const relayout = p.relayout, traces = p.traces;
      if (Object.keys(traces).length) {
        // data changed: one react with the layout edits folded in (one redraw, not two)
        const data = div.data.slice();
        for (const [i, t] of Object.entries(traces)) {
          const old = data[+i];
          data[+i] = Object.assign({ xaxis: old.xaxis, yaxis: old.yaxis }, t);
        }
        const layout = div.layout;
        for (const [k, v] of Object.entries(relayout)) setPath(layout, k, v);
        Plotly.react(div, data, layout, model.get("config"));
      } else if (Object.keys(relayout).length) {
        Plotly.relayout(div, relayout);
      }
      div.__drawn = p.seq;  // the last patch applied, for tests and benchmarks (a synced trait cost a round trip)
    };
    div.__pending = () => pending !== null;  // for tests and benchmarks
    new IntersectionObserver((entries) => {
      near = entries[entries.length - 1].isIntersecting;
      if (near) apply();
    }, { rootMargin: "100% 0px" }).observe(el);  // "near": within a window's height of it
    // how much of the window the view fills (in twentieths): the kernel rebuilds the most prominent views first
    new IntersectionObserver((entries) => {
      const e = entries[entries.length - 1];
      const h = (e.rootBounds && e.rootBounds.height) || window.innerHeight || 1;
      const share = e.isIntersecting ? Math.round(20 * e.intersectionRect.height / h) / 20 : 0;
      if (share !== model.get("in_view")) { model.set("in_view", share); model.save_changes(); }
    }, { threshold: Array.from({ length: 11 }, (_, i) => i / 10) }).observe(el);
    model.on("change:figure", () => { pending = null; draw(); paint(); });
    model.on("change:patch", () => {
      const p = model.get("patch") || {};
      globalThis.__geomlibLastPatch = performance.now();  // any view's: the page is still changing
      pending = pending || { traces: {}, relayout: {}, seq: 0 };
      Object.assign(pending.traces, p.traces || {});
      Object.assign(pending.relayout, p.relayout || {});
      pending.seq = p.seq || 0;
      if (near) apply();
      else later();
    });
    div.on("plotly_click", (ev) => {
      const pt = (ev && ev.points && ev.points[0]) || null;
      if (!pt) return;
      model.set("click", { seq: performance.now(), curve: pt.curveNumber, point: pt.pointNumber,
                           x: pt.x, y: pt.y, customdata: pt.customdata === undefined ? null : pt.customdata });
      model.save_changes();
    });
  },
};
"""


#: plotly.js config of every view: no logo, nothing that sends the figure or its data to a cloud service
CONFIG = {
    "displaylogo": False,
    "responsive": False,
    "showLink": False,
    "showSendToCloud": False,
    "showEditInChartStudio": False,
    "modeBarButtonsToRemove": ["sendDataToCloud", "editInChartStudio"],
}


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    import plotly

    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text(encoding="utf-8")


def to_json_safe(obj):
    """Plain JSON types for widget messages: numpy arrays as (nested) lists, NaN and ±inf as null.

    Lists rather than plotly's base64 typed arrays keep ``gd.data`` readable as plain numbers in
    the page (the browser tests read it); the arrays here are small.
    """
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:  # plotly's own base64 typed-array encoding (to_plotly_json)
            arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=np.dtype(obj["dtype"]))
            if obj.get("shape"):
                arr = arr.reshape([int(n) for n in str(obj["shape"]).split(",")])
            return to_json_safe(arr)
        return {str(k): to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f":
            return to_json_safe(obj.tolist())
        if obj.dtype.kind in "iub":
            return obj.tolist()
        return [to_json_safe(v) for v in obj.tolist()]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.floating,)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return json.loads(json.dumps(obj, cls=PlotlyJSONEncoder))


class PlotView(anywidget.AnyWidget):
    """Traits: ``figure`` (the whole figure, per model), ``overlays`` (its shapes, drawn over it), ``patch``
    (changes), ``click`` and ``in_view`` (the share of the window it fills), both from the browser."""

    _esm = _ESM
    _plotly = traitlets.Unicode().tag(sync=True)
    name = traitlets.Unicode("").tag(sync=True)
    config = traitlets.Dict(default_value=CONFIG).tag(sync=True)
    figure = traitlets.Dict().tag(sync=True)
    overlays = traitlets.List().tag(sync=True)
    patch = traitlets.Dict().tag(sync=True)
    click = traitlets.Dict().tag(sync=True)
    #: the share of the browser's window the view fills, 0 to 1 (set by the browser; 1 without one)
    in_view = traitlets.Float(1.0).tag(sync=True)

    def __init__(self, carry_plotly: bool = True, **kwargs) -> None:
        # plotly.js travels once per page: the first view carries it, the others wait for it
        super().__init__(_plotly=_plotly_js() if carry_plotly else "", **kwargs)
        self._seq = 0

    def show(self, fig) -> None:
        """Send a whole figure (a new model, or a first draw); its shapes go to the overlay layer."""
        spec = to_json_safe(fig.to_plotly_json())
        shapes = spec.get("layout", {}).pop("shapes", [])
        with self.hold_sync():
            self.overlays = shapes
            self.figure = spec

    def set_overlays(self, shapes: list[dict]) -> None:
        self.overlays = to_json_safe(shapes)

    def send(self, traces: dict[int, dict], relayout: dict) -> None:
        """Send changed traces (index -> full trace dict, already :func:`to_json_safe`) and relayout keys, as one patch."""
        if not traces and not relayout:
            return
        self._seq += 1
        self.patch = {"seq": self._seq, "traces": {str(i): t for i, t in traces.items()},
                      "relayout": to_json_safe(relayout)}
