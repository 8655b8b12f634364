// geomlib's plot view (anywidget ES module; see plotview.py): plotly.js draws the data, this draws the overlays,
// colour bars and legends, applies the kernel's patches, and reports clicks and where the view is on the page.

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

const NS = "http://www.w3.org/2000/svg";
const measure = document.createElement("canvas").getContext("2d");

// an SVG element with these attributes (and text), appended to parent when one is given
function svgEl(name, attrs, { text, parent } = {}) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

// plotly's automatic ticks for a colour bar: about one per 40 px (4 to 9 intervals), the step 2, 5 or 10 times
// a power of ten, labelled with as many decimals as the step needs, trailing zeros dropped, a true minus sign
function ticks(lo, hi, px) {
  const rough = (hi - lo) / (Math.min(Math.max(px / 40, 4), 9) + 1);
  if (!(rough > 0) || !Number.isFinite(rough)) return [];
  const base = Math.pow(10, Math.floor(Math.log10(rough)));
  const step = base * ([2, 5, 10].find((m) => m > rough / base) || 10);
  const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  const label = (v) => {
    const s = Math.abs(v) < step * 1e-6 ? "0" : digits > 6 ? v.toExponential(1) : v.toFixed(digits);
    return (s.includes(".") && !s.includes("e") ? s.replace(/0+$/, "").replace(/\.$/, "") : s).replace("-", "\u2212");
  };
  const out = [];
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) out.push([k * step, label(k * step)]);
  return out;
}

// one vertical colour bar as SVG, placed as plotly places a colorbar with these settings (paper x and y, len as
// a fraction of the plot area's height, thickness in px), for trace t (plotly's resolved zmin, zmax, colorscale)
function colorBar(cb, t, size, font, id) {
  const g = svgEl("g", { class: "geomlib-colorbar" });
  const thick = cb.thickness ?? 30, ypad = cb.ypad ?? 10, xpad = cb.xpad ?? 10;
  const len = (cb.len ?? 1) * size.h;
  const yc = size.t + (1 - (cb.y ?? 0.5)) * size.h;
  const top = (cb.yanchor === "top" ? yc : cb.yanchor === "bottom" ? yc - len : yc - len / 2) + ypad;
  const h = Math.max(len - 2 * ypad, 1);
  const xp = size.l + (cb.x ?? 1.02) * size.w;
  const left = (cb.xanchor === "right" ? xp - thick : cb.xanchor === "center" ? xp - thick / 2 : xp) + xpad;
  const grad = svgEl("linearGradient", { id, x1: 0, y1: 1, x2: 0, y2: 0 }, { parent: svgEl("defs", {}, { parent: g }) });
  let scale = t.colorscale || [[0, "#fff"], [1, "#000"]];
  if (t.reversescale) scale = scale.map(([f, c]) => [1 - f, c]).reverse();
  for (const [f, c] of scale) svgEl("stop", { offset: f, "stop-color": c }, { parent: grad });
  svgEl("rect", { x: left, y: top, width: thick, height: h, fill: `url(#${id})` }, { parent: g });
  const tf = cb.tickfont || {}, fs = tf.size ?? font.size ?? 12, family = tf.family || font.family || "sans-serif";
  const color = tf.color || font.color || "#444";
  measure.font = `${fs}px ${family}`;
  let widest = 0;
  for (const [v, text] of ticks(t.zmin, t.zmax, h)) {
    const y = top + h * (1 - (v - t.zmin) / (t.zmax - t.zmin));
    svgEl("text", { x: left + thick + 3, y, dy: "0.35em", "font-size": fs, "font-family": family, fill: color,
                    class: "geomlib-cb-tick" }, { text, parent: g });
    widest = Math.max(widest, measure.measureText(text).width);
  }
  const title = ((cb.title || {}).text || "").replace(/<[^>]*>/g, "");
  if (title) {
    const tfont = (cb.title || {}).font || {}, ts = tfont.size ?? fs;
    const x = left + thick + 3 + widest + 3 + ts * 0.8, y = top + h / 2;
    svgEl("text", { x, y, transform: `rotate(-90 ${x} ${y})`, "text-anchor": "middle", "font-size": ts,
                    "font-family": tfont.family || family, fill: tfont.color || color, class: "geomlib-cb-title" },
          { text: title, parent: g });
  }
  g.dataset.trace = t.index;
  return g;
}

// a panel's legend as HTML, placed as plotly places a legend with these settings (paper x and y, anchors),
// listing traces [index, plotly's full trace (its resolved colours), hidden]; onClick(index, isolate)
function legend(spec, entries, size, fl, font, lid, onClick) {
  const box = document.createElement("div");
  box.className = "geomlib-legend";
  box.dataset.legend = lid;
  const x = size.l + (spec.x ?? 1.02) * size.w, y = size.t + (1 - (spec.y ?? 1)) * size.h;
  const fs = (spec.font || {}).size ?? font.size ?? 12;
  const st = box.style;
  st.cssText = `position:absolute;pointer-events:auto;cursor:pointer;user-select:none;white-space:nowrap;`
    + `padding:1px 4px;line-height:${Math.round(fs * 1.45)}px;font-size:${fs}px;font-family:${font.family || "sans-serif"};`
    + `color:${font.color || "#444"};background:${spec.bgcolor || "rgba(255,255,255,0.7)"};`
    + `border:${spec.borderwidth ?? 0}px solid ${spec.bordercolor || "#444"}`;
  if (spec.xanchor === "right") st.right = `${fl.width - x}px`; else st.left = `${x}px`;
  if (spec.yanchor === "bottom") st.bottom = `${fl.height - y}px`; else st.top = `${y}px`;
  for (const [i, t, off] of entries) {
    const row = document.createElement("div");
    row.className = "geomlib-legend-item";
    row.dataset.trace = i;
    row.style.opacity = off ? "0.45" : "1";
    row.appendChild(swatch(t, Math.max(spec.itemwidth ?? 30, 24), fs));
    const name = document.createElement("span");
    name.textContent = t.name || "";
    row.appendChild(name);
    row.addEventListener("click", () => onClick(i, false));
    row.addEventListener("dblclick", () => onClick(i, true));
    box.appendChild(row);
  }
  return box;
}

// what a trace looks like, as plotly's legend shows it: a filled box for fills and bars, else its line and marker
function swatch(t, w, fs) {
  const h = Math.round(fs * 1.2);
  const svg = svgEl("svg", { width: w, height: h });
  svg.style.cssText = "vertical-align:middle;margin-right:4px";
  const el = (name, attrs) => svgEl(name, attrs, { parent: svg });
  const first = (c) => (Array.isArray(c) ? c[0] : c);
  const line = t.line || {}, marker = t.marker || {};
  const mode = t.mode || "";
  if (t.type === "bar" || (t.fill && t.fill !== "none")) {
    el("rect", { x: w * 0.2, y: h * 0.2, width: w * 0.6, height: h * 0.6,
                 fill: t.type === "bar" ? first(marker.color) || "#888" : t.fillcolor || "#ccc",
                 stroke: line.width ? first(line.color) || "none" : "none", "stroke-width": Math.min(line.width || 0, 2) });
    return svg;
  }
  if (mode.includes("lines")) {
    const dash = { dot: "2,2", dash: "5,3", dashdot: "5,2,2,2", longdash: "8,3" }[line.dash] || "none";
    el("line", { x1: 2, x2: w - 2, y1: h / 2, y2: h / 2, stroke: first(line.color) || "#444",
                 "stroke-width": Math.min(Math.max(line.width ?? 2, 1), 4), "stroke-dasharray": dash });
  }
  const err = t.error_y || {};
  if (err.visible) {  // an error bar: a vertical stroke with caps
    const c = err.color || first(marker.color) || "#444", a = h * 0.15, b = h * 0.85, cx = w / 2;
    el("path", { d: `M${cx},${a}V${b}M${cx - 3},${a}h6M${cx - 3},${b}h6`, stroke: c, fill: "none", "stroke-width": 1 });
  }
  if (mode.includes("markers")) {
    const symbol = String(first(marker.symbol) ?? "circle"), c = first(marker.color) || first(line.color) || "#444";
    const r = Math.min(Math.max((marker.size ?? 6) / 2, 2), 5), open = symbol.endsWith("-open");
    const paint = open ? { fill: "none", stroke: c, "stroke-width": 1.5 } : { fill: c };
    if (symbol.startsWith("line-ew")) el("line", { x1: w * 0.2, x2: w * 0.8, y1: h / 2, y2: h / 2, stroke: c, "stroke-width": 1.5 });
    else if (symbol.startsWith("line-ns")) el("line", { x1: w / 2, x2: w / 2, y1: h * 0.15, y2: h * 0.85, stroke: c, "stroke-width": 1.5 });
    else if (symbol.startsWith("square")) el("rect", { x: w / 2 - r, y: h / 2 - r, width: 2 * r, height: 2 * r, ...paint });
    else if (symbol.startsWith("diamond")) el("path", { d: `M${w / 2},${h / 2 - r}l${r},${r}l${-r},${r}l${-r},${-r}Z`, ...paint });
    else el("circle", { cx: w / 2, cy: h / 2, r, ...paint });
  }
  return svg;
}

// one view's redraw per frame, across the page: the browser runs the messages already queued before it paints, so
// the view being looked at (sent first) showed only once the views sent after it had redrawn too.  A redraw that
// comes while another one's frame has not been painted yet waits for that paint, in the order they came
const frames = globalThis.__geomlibFrames ??= { busy: false, queue: [] };
function nextPaint(fn) {
  requestAnimationFrame(() => setTimeout(fn, 0));  // a task after the next frame's rendering
}
function drawInTurn(fn) {
  if (!frames.busy) {
    frames.busy = true;
    try { fn(); } finally { nextPaint(drainFrames); }  // a redraw that throws must not stop the others
  } else if (!frames.queue.includes(fn)) {
    frames.queue.push(fn);
  }
}
function drainFrames() {
  const fn = frames.queue.shift();
  if (!fn) { frames.busy = false; return; }
  try { fn(); } finally { nextPaint(drainFrames); }
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
    // colour bars are drawn here (paintBars), from each heatmap's colorbar settings and the range plotly
    // resolved: plotly's own were a fifth of every redraw of a heatmap view (it measures their labels and
    // title each time).  Exported figures keep plotly's
    const bars = [];  // trace index -> the colorbar settings of a heatmap that shows one, else null
    // so are the per-panel legends (paintLegends; plotly's were a quarter of a redraw of the spectra views):
    // trace index -> its legend id, for a trace listed in a panel's legend (``legend: "legend2"``...)
    const listed = [];
    const hidden = new Set();  // traces hidden from their legend: they stay hidden when their data changes
    const forPlotly = (t, i) => {
      bars[i] = t.type === "heatmap" && t.showscale !== false ? (t.colorbar || {}) : null;
      listed[i] = t.showlegend === true && /^legend\d+$/.test(t.legend || "") ? t.legend : null;
      if (!bars[i] && !listed[i] && !hidden.has(i)) return t;
      const out = Object.assign({}, t);
      if (bars[i]) out.showscale = false;
      if (listed[i]) out.showlegend = false;
      if (hidden.has(i)) out.visible = "legendonly";
      return out;
    };
    const draw = () => {
      const f = model.get("figure");
      const layout = Object.assign({}, f.layout || {});
      if (autoWidth() && el.clientWidth > 0) Object.assign(layout, { width: el.clientWidth, autosize: false });
      bars.length = 0;
      listed.length = 0;
      hidden.clear();
      const data = (f.data || []).map(forPlotly);
      if (listed.some(Boolean)) layout.showlegend = data.some((t) => t.showlegend === true);  // plotly lists the rest
      Plotly.react(div, data, layout, model.get("config"));
    };
    // overlays (anchor lines, phase bands, selections) are drawn here, in an SVG laid over the plot,
    // from the same shape dicts the exported figures carry: moving a plotly shape makes plotly
    // re-derive and redraw the figure's every shape (tens of ms per figure); moving a line here is free
    const svg = svgEl("svg", { class: "geomlib-overlay" });
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
        const line = s.line || {};
        const look = { fill: s.fillcolor || "none", stroke: line.width === 0 ? "none" : (line.color || "#444"),
                       "stroke-width": line.width === undefined ? 2 : line.width, "data-type": s.type };
        const dash = { dot: "2,3", dash: "6,4" }[line.dash];
        if (dash) look["stroke-dasharray"] = dash;
        if (s.type === "line") svgEl("line", { x1: x0, x2: x1, y1: y0, y2: y1, ...look }, { parent: svg });
        else if (s.type === "circle") {
          svgEl("ellipse", { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, rx: Math.abs(x1 - x0) / 2, ry: Math.abs(y1 - y0) / 2,
                             ...look }, { parent: svg });
        } else {
          svgEl("rect", { x: Math.min(x0, x1), y: Math.min(y0, y1), width: Math.abs(x1 - x0), height: Math.abs(y1 - y0),
                          ...look }, { parent: svg });
        }
      }
      div.__overlays = model.get("overlays") || [];  // what the page shows, for tests and benchmarks
    };
    const cbars = svgEl("svg", { class: "geomlib-colorbars" });
    cbars.style.cssText = svg.style.cssText;
    const paintBars = () => {
      const fl = div._fullLayout, full = div._fullData;
      if (!fl || !full) return;
      cbars.setAttribute("width", fl.width);
      cbars.setAttribute("height", fl.height);
      cbars.replaceChildren();
      const size = fl._size, font = fl.font || {};
      bars.forEach((cb, i) => {
        const t = full[i];
        if (!cb || !t || t.visible !== true || !(Number.isFinite(t.zmin) && Number.isFinite(t.zmax))) return;
        // a page-wide id: url(#id) takes the document's first element of that id, which may be another view's
        globalThis.__geomlibGradients = (globalThis.__geomlibGradients || 0) + 1;
        cbars.appendChild(colorBar(cb, t, size, font, "geomlib-cb" + globalThis.__geomlibGradients));
      });
    };
    const legendBox = document.createElement("div");
    legendBox.className = "geomlib-legends";
    legendBox.style.cssText = "position:absolute;left:0;top:0;pointer-events:none";
    // a click hides or shows a trace, a double click shows it alone (or everything again), as plotly's legend
    let clickTimer = null;
    const tracesOf = (lid) => listed.flatMap((l, k) => (l === lid ? [k] : []));
    const toggle = (i, lid, isolate) => {
      const mine = tracesOf(lid);
      if (isolate) {
        const alone = mine.every((k) => (k === i) !== hidden.has(k));
        for (const k of mine) { if (alone || k === i) hidden.delete(k); else hidden.add(k); }
      } else if (hidden.has(i)) hidden.delete(i);
      else hidden.add(i);
      Plotly.restyle(div, { visible: mine.map((k) => (hidden.has(k) ? "legendonly" : true)) }, mine);
    };
    const paintLegends = () => {
      const fl = div._fullLayout, full = div._fullData, layout = model.get("figure").layout || {};
      if (!fl || !full) return;
      legendBox.replaceChildren();
      legendBox.style.width = `${fl.width}px`;  // the legends' right and bottom offsets are from its edges
      legendBox.style.height = `${fl.height}px`;
      const size = fl._size, font = fl.font || {};
      for (const lid of new Set(listed.filter(Boolean))) {
        const spec = layout[lid] || {};
        const items = tracesOf(lid).filter((i) => full[i]);
        if (!items.length) continue;
        legendBox.appendChild(legend(spec, items.map((i) => [i, full[i], hidden.has(i)]), size, fl, font, lid,
          (i, isolate) => {
            if (isolate) { clearTimeout(clickTimer); clickTimer = null; toggle(i, lid, true); return; }
            clearTimeout(clickTimer);
            clickTimer = setTimeout(() => { clickTimer = null; toggle(i, lid, false); }, 300);
          }));
      }
    };
    draw();
    div.appendChild(svg);
    div.appendChild(cbars);
    div.appendChild(legendBox);
    paintBars();
    paintLegends();
    paint();
    // the figure takes the page's width (no layout.width): follow the widget's width as the window, or
    // a view shown after being hidden (compare / training modes), changes it
    let lastWidth = el.clientWidth;
    new ResizeObserver(() => {
      const w = el.clientWidth;
      if (w > 0 && Math.abs(w - lastWidth) > 2 && autoWidth() && div._fullLayout) {
        lastWidth = w;
        Plotly.relayout(div, { width: w, autosize: false }).then(repaint);
      }
    }).observe(el);
    const repaint = () => { paintBars(); paintLegends(); paint(); };
    div.on("plotly_afterplot", repaint);
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
        for (const [i, raw] of Object.entries(traces)) {
          const t = typeof raw === "string" ? JSON.parse(raw) : raw;
          const old = data[+i];
          data[+i] = forPlotly(Object.assign({ xaxis: old.xaxis, yaxis: old.yaxis }, t), +i);
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
      if (near !== model.get("near")) { model.set("near", near); model.save_changes(); }
      if (near && pending) drawInTurn(apply);
    }, { rootMargin: "100% 0px" }).observe(el);  // "near": within a window's height of it
    // how much of the window the view fills (in twentieths): the kernel rebuilds the most prominent views first
    new IntersectionObserver((entries) => {
      const e = entries[entries.length - 1];
      const h = (e.rootBounds && e.rootBounds.height) || window.innerHeight || 1;
      const share = e.isIntersecting ? Math.round(20 * e.intersectionRect.height / h) / 20 : 0;
      if (share !== model.get("in_view")) { model.set("in_view", share); model.save_changes(); }
    }, { threshold: Array.from({ length: 11 }, (_, i) => i / 10) }).observe(el);
    model.on("change:figure", () => { pending = null; draw(); repaint(); });
    model.on("change:patch", () => {
      const p = model.get("patch") || {};
      globalThis.__geomlibLastPatch = performance.now();  // any view's: the page is still changing
      pending = pending || { traces: {}, relayout: {}, seq: 0 };
      Object.assign(pending.traces, p.traces || {});
      Object.assign(pending.relayout, p.relayout || {});
      pending.seq = p.seq || 0;
      if (near) drawInTurn(apply);
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
