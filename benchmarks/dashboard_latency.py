"""Latency of the Voila dashboard, measured in a real browser.

Starts Voila on the dashboard notebook (loopback, a free port), opens the page
in headless Chromium (Debian's /usr/bin/chromium, never a Playwright download)
and measures

* cold start: from spawning Voila to the first full render of the figure
  (every subplot drawn), and from navigating a new page to its first render
  once the pre-heated kernel pool has refilled;
* widget change -> linked figure updated: for N changes (a mix of anchor
  slider, family, phase and operator), from the input event in the page
  (keydown on the slider handle, change on a <select>, click on a toggle
  button) to the first animation frame at which the page shows the change.
  Each change waits for the page and kernel to go quiet first, so these are
  per-change latencies, not queueing under rapid input.  Each one is split
  into input -> message sent (browser widgets), sent -> figure update received
  (kernel: refresh, serialization, ZMQ, websocket) and received -> shown
  (browser: deserialization, Plotly.react, the redraw and its frame).

render_ms, the Dashboard's own refresh() timing, is not synced to the page;
it is obtained by replaying the same changes on a Dashboard in this process
(same code and data, no frontend attached).

    .venv/bin/python benchmarks/dashboard_latency.py [--changes 30] [--strict]

Prints p50/p95/max against the target (p95 <= 150 ms) and writes everything
to test-artifacts/dashboard_latency.json.  Exits 0 unless --strict and FAIL.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from geomlib.plot.names import VIEW_NAMES as VIEWS  # the page's views, in order

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
KINDS = ("anchor", "family", "phase", "operator")
#: compare mode (model B, the variable) and the training view (its layer slider, its metric), measured after the
#: one-model kinds, each in its own mode
MODE_KINDS = {"compare": ("compare_b", "compare_var"), "training": ("training_layer", "training_metric")}
ALL_KINDS = KINDS + tuple(k for ks in MODE_KINDS.values() for k in ks)

# Installed before any page script: timestamps every websocket frame (direction, size, what it carries),
# every plotly_afterplot of the graph div, and the first input event of an armed kind.
INIT_JS = r"""
(() => {
  const dec = new TextDecoder();
  window.__nViews = __N_VIEWS__;
  window.__frames = []; window.__lastFrame = performance.now(); window.__aps = []; window.__t0 = null;
  const text = (d) => { try { if (typeof d === 'string') return d.slice(0, 4096);
      const u = d instanceof ArrayBuffer ? new Uint8Array(d) : new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
      return dec.decode(u.subarray(0, 4096)); } catch (e) { return ''; } };
  const size = (d) => typeof d === 'string' ? d.length : (d.byteLength || d.size || 0);
  const kind = (s) => { const m = /"msg_type":\s*"(\w+)"/.exec(s); const k = /"(_py2js_\w+|_js2py_\w+|patch|figure|click|drawn)"/.exec(s);
      return (m ? m[1] : '?') + (k ? ':' + k[1] : ''); };
  const note = (dir, d) => { const t = performance.now(); window.__lastFrame = t;
      if (window.__frames.length < 20000) window.__frames.push([dir, t, size(d), kind(text(d))]); };
  const Orig = window.WebSocket;
  const send = Orig.prototype.send;
  Orig.prototype.send = function (d) { note('out', d); return send.call(this, d); };
  function Patched(...a) { const ws = new Orig(...a); ws.addEventListener('message', (e) => note('in', e.data)); return ws; }
  Patched.prototype = Orig.prototype;
  for (const k of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) Patched[k] = Orig[k];
  window.WebSocket = Patched;
  window.__arm = (type) => { window.__t0 = null; window.__armed = type; };
  for (const type of ['keydown', 'change', 'click']) {
    window.addEventListener(type, () => { if (window.__armed === type && window.__t0 === null) window.__t0 = performance.now(); }, true);
  }
  window.__hook = () => { const gs = Array.from(document.querySelectorAll('.geomlib-plot'));
    if (gs.length < window.__nViews || !gs.every((g) => g.on)) return false;
    for (const g of gs) { if (g.__hooked) continue; g.__hooked = true;
      g.on('plotly_afterplot', () => { const a = g.layout.annotations || [];
        window.__aps.push([performance.now(), g.layout.title.text, (a[0] || {}).text, (a[4] || {}).text]); }); }
    return true; };
})();
"""

GD = "document.querySelector('.geomlib-plot[data-view=\"cos\"]')"
# each view is its own plotly figure: a change is shown when every view it touches shows it
V = "((v) => document.querySelector(`.geomlib-plot[data-view=\"${v}\"]`))"
PHASE_SPANS: dict[str, tuple[int, int]] = {}  # phase -> (first layer, last layer), filled in main()
DEPTH_VIEWS: list[str] = []  # the views with a layer axis (anchor lines, phase bands), filled in main()
ANCHOR_VIEWS: list[str] = []  # the views with no layer axis whose data is the anchor layer's, filled in main()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_path() -> str:
    for cand in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if cand and Path(cand).exists():
            return cand
    sys.exit("no system Chromium found: install Debian's chromium")


def pct(values, q) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def stats(values) -> dict:
    v = [x for x in values if x is not None]
    return {"n": len(v), "p50": pct(v, 50), "p95": pct(v, 95), "max": float(max(v)) if v else None,
            "mean": float(np.mean(v)) if v else None}


class Voila:
    """Voila on the dashboard notebook, started from the repository root like `make dashboard`."""

    def __init__(self, log_path: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.t_spawn = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voila", "notebooks/dashboard.ipynb", f"--port={self.port}", "--no-browser",
             "--Voila.ip=127.0.0.1"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def wait_up(self, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while True:
            try:  # a static path: requesting the page would take the pre-heated kernel
                urllib.request.urlopen(self.url + "voila/static/", timeout=5).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    sys.exit(f"voila did not start; see {self.log_path}")
                time.sleep(0.05)
        return time.perf_counter() - self.t_spawn

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_preheated(self, fills: int, timeout: float = 180) -> float:
        """Wait until the pool has been refilled ``fills`` times and the kernels have gone idle (the pre-heated
        notebook has run).  Returns the seconds waited."""
        import psutil

        t = time.perf_counter()
        deadline = time.monotonic() + timeout
        while self.log_text().count("is filled with") < fills:
            if time.monotonic() > deadline:
                return time.perf_counter() - t
            time.sleep(0.1)
        me = psutil.Process(self.proc.pid)
        quiet = 0
        while quiet < 3 and time.monotonic() < deadline:
            kids = me.children(recursive=True)
            busy = 0.0
            for k in kids:
                try:
                    k.cpu_percent(None)
                except psutil.Error:
                    pass
            time.sleep(0.3)
            for k in kids:
                try:
                    busy += k.cpu_percent(None)
                except psutil.Error:
                    pass
            quiet = quiet + 1 if busy < 5 else 0
        return time.perf_counter() - t

    def stop(self) -> None:
        try:
            import psutil

            children = psutil.Process(self.proc.pid).children(recursive=True)
        except Exception:
            children = []
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for c in children:
            try:
                if c.is_running():
                    c.kill()
            except Exception:
                pass
        self.log.close()


def wait_rendered(page, n_panels: int, timeout: float = 180_000) -> None:
    """Every view drawn: ``n_panels`` subplots over the views' figures."""
    page.wait_for_function(
        "() => { const gs = Array.from(document.querySelectorAll('.geomlib-plot'));"
        f" return gs.length === {len(VIEWS)} && gs.every((g) => g.data && g.data.length && g._fullLayout) &&"
        f" gs.reduce((n, g) => n + g.querySelectorAll('.nsewdrag').length, 0) === {n_panels}; }}",
        timeout=timeout)
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")


def wait_quiet(page, quiet_ms: float = 300, timeout: float = 30_000) -> None:
    page.wait_for_function(f"() => performance.now() - window.__lastFrame > {quiet_ms}", timeout=timeout,
                           polling=50)


def dropdown(page, label: str):
    box = page.locator(".widget-dropdown").filter(
        has=page.locator("label.widget-label", has_text=re.compile(rf"^{re.escape(label)}$")))
    return box.locator("select")


def plan_changes(n: int, seed: int, n_layers: int, families: list[str], phases: list[str]) -> list[tuple]:
    """(kind, value) pairs cycling over the kinds; each value differs from the current one."""
    rng = random.Random(seed)
    state = {"anchor": n_layers - 1, "family": families[0], "phase": "all", "operator": "qk"}
    steps = {"ArrowLeft": -1, "ArrowRight": 1, "PageDown": -5, "PageUp": 5}
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        if kind == "anchor":
            keys = [k for k, d in steps.items() if 0 <= state["anchor"] + d < n_layers]
            key = rng.choice(keys)
            state["anchor"] += steps[key]
            out.append(("anchor", key, state["anchor"]))
        elif kind == "family":
            state["family"] = rng.choice([f for f in families if f != state["family"]])
            out.append(("family", state["family"], state["family"]))
        elif kind == "phase":
            state["phase"] = rng.choice([p for p in phases if p != state["phase"]])
            out.append(("phase", state["phase"], state["phase"]))
        else:
            state["operator"] = "ov" if state["operator"] == "qk" else "qk"
            out.append(("operator", state["operator"], state["operator"]))
    return out


def plan_mode_changes(n: int, seed: int, b_choices: list[tuple[str, str]], variables: list[tuple[str, str]],
                      n_sweep_layers: int, metrics: list[str]) -> list[tuple]:
    """(kind, input, value) for compare mode then the training view, n of each mode, alternating its two kinds.

    ``b_choices``/``variables``: (option label, key) pairs; the input of a dropdown is its option label.
    """
    rng = random.Random(seed + 1)
    out = []
    b, var = b_choices[0][1], variables[0][1]
    for i in range(n):
        if i % 2 == 0:
            label, b = rng.choice([c for c in b_choices if c[1] != b])
            out.append(("compare_b", label, b))
        else:
            label, var = rng.choice([c for c in variables if c[1] != var])
            out.append(("compare_var", label, var))
    layer, metric = n_sweep_layers - 1, metrics[0]
    steps = {"ArrowLeft": -1, "ArrowRight": 1}
    for i in range(n):
        if i % 2 == 0:
            key = rng.choice([k for k, d in steps.items() if 0 <= layer + d < n_sweep_layers])
            layer += steps[key]
            out.append(("training_layer", key, layer))
        else:
            metric = rng.choice([m for m in metrics if m != metric])
            out.append(("training_metric", metric.removeprefix("moved_"), metric))
    return out


def predicate(kind: str, value) -> str:
    """JavaScript over the graph div ``g``: the change is shown."""
    meta = {"compare_b": ("compare", "b"), "compare_var": ("compare", "var"), "training_layer": ("training", "layer"),
            "training_metric": ("training", "metric")}
    if kind in meta:  # the mode's figure says what it shows in layout.meta, and it is drawn
        view, key = meta[kind]
        return (f"(() => {{ const m = {V}('{view}'); return !!(m && m._fullLayout && m.layout.meta && "
                f"m.layout.meta.{key} === {json.dumps(value)} && m.querySelectorAll('.nsewdrag').length); }})()")
    # the views that draw overlays on a depth axis (a view of one layer's own data has none)
    every = lambda cond: "[" + ",".join(f"'{v}'" for v in DEPTH_VIEWS) + f"].every((v) => {{ const g = {V}(v); return {cond}; }})"  # noqa: E731,E501
    if kind == "anchor":  # an overlay on every depth view: the dotted anchor lines sit at the new layer; and the
        # views of the anchor layer's own data (the anchor spectra) have redrawn: their first title names it
        own = "".join(f" && /\\blayer {value}\\b/.test((({V}('{v}').layout.annotations || [])[0] || {{}}).text || '')"
                      for v in ANCHOR_VIEWS)
        return every(f"(g.__overlays || []).some((s) => s.type === 'line' && s.x0 === {value} && s.x1 === {value})"
                     f" && !(g.__overlays || []).some((s) => s.type === 'line' && s.x0 === s.x1 && s.x0 !== {value}"
                     f" && String(s.yref).endsWith('domain') && !s.fillcolor && s.line && s.line.dash === 'dot')") + own
    if kind == "family":
        return f"({V}('cos').layout.annotations[0].text || '').replace(' ℹ', '').endsWith(' · {value}')"
    if kind == "phase":  # an overlay: this phase's bands appear (or all disappear for 'all') on every view
        if value == "all":
            return every("!(g.__overlays || []).some((s) => s.type === 'rect' && !!s.fillcolor && s.visible !== false)")
        a, b = PHASE_SPANS[value]
        return every(f"(g.__overlays || []).some((s) => s.type === 'rect' && !!s.fillcolor && s.visible !== false"
                     f" && ((s.x0 === {a - 0.5} && s.x1 === {b + 0.5}) || (s.y0 === {a - 0.5} && s.y1 === {b + 0.5})))")
    return f"({V}('operator').layout.annotations[0].text || '').startsWith('{value.upper()} ')"


def shows(kind: str, value, ap) -> bool:
    """The same test on an afterplot record (time, title, annotation 0, annotation 4)."""
    _, title, a0, a4 = ap
    if kind in ("anchor", "phase"):
        return False  # overlays only: plotly draws shapes without a full 'afterplot'; the watcher times them
    if kind == "family":
        return (a0 or "").removesuffix(" ℹ").endswith(f" · {value}")
    return (a4 or "").startswith(f"{value.upper()} ")


def do_change(page, kind: str, arg) -> str:
    """Perform one input; returns the event type timed as the input."""
    if kind == "anchor":
        page.evaluate("() => window.__arm('keydown')")
        page.locator(".widget-slider .noUi-handle").first.press(arg)
        return "keydown"
    if kind in ("family", "phase"):
        page.evaluate("() => window.__arm('change')")
        dropdown(page, kind).select_option(arg)
        return "change"
    if kind in ("compare_b", "compare_var", "training_metric"):
        page.evaluate("() => window.__arm('change')")
        dropdown(page, {"compare_b": "B", "compare_var": "variable", "training_metric": "metric"}[kind]).select_option(arg)
        return "change"
    if kind == "training_layer":
        page.evaluate("() => window.__arm('keydown')")
        page.locator(".widget-slider", has=page.locator("label", has_text=re.compile("^layer$"))) \
            .locator(".noUi-handle").first.press(arg)
        return "keydown"
    page.evaluate("() => window.__arm('click')")
    page.locator(".widget-toggle-button", has_text=re.compile(rf"^{arg.upper()}$")).first.click()
    return "click"


#: the page's quiet spell before views out of sight catch up (geomlib.dashboard.plotview's CATCH_UP_MS)
CATCH_UP_S = 1.5


def in_view(kind: str) -> str | None:
    """The view scrolled into the window before a change of ``kind``: the one whose redraw the change is timed on.

    The page redraws the views in and near the window first, the others when they come near or after
    CATCH_UP_S without a change (see geomlib.dashboard.plotview); ``all_views_ms`` times those too.
    """
    if kind == "anchor":
        return ANCHOR_VIEWS[0] if ANCHOR_VIEWS else "cos"
    return {"family": "cos", "phase": "cos", "operator": "operator"}.get(kind)


def measure_change(page, kind: str, arg, value, settle_ms: float) -> dict:
    view = in_view(kind)
    if view is not None:  # the controls stay at the top of the window (sticky) while the views scroll
        page.evaluate(f"() => {V}('{view}').scrollIntoView({{block: 'center'}})")
        # two frames: the views report where they now are (intersection observers report at a frame), as they do
        # while a user scrolls; without, a change could go out before the kernel learns what the window shows
        page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    wait_quiet(page)
    page.evaluate("() => { window.__aps = []; window.__frames = []; }")
    # a frame-by-frame watcher: the first animation frame at which the change is on the page
    page.evaluate(f"() => {{ window.__seen = null; const g = {GD}; const f = () => {{ "
                  f"if ({predicate(kind, value)}) {{ window.__seen = performance.now(); }} "
                  f"else {{ requestAnimationFrame(f); }} }}; requestAnimationFrame(f); }}")
    event = do_change(page, kind, arg)
    page.wait_for_function(f"() => {{ const g = {GD}; return {predicate(kind, value)}; }}", timeout=30_000,
                           polling="raf")
    wait_quiet(page, settle_ms)
    # the views out of sight catch up after a quiet spell (geomlib.dashboard.plotview): wait for them, so that
    # every view the change touched is timed and the next change starts on a quiet page
    page.wait_for_function("() => !Array.from(document.querySelectorAll('.geomlib-plot'))"
                           ".some((g) => g.__pending && g.__pending())", timeout=30_000, polling=50)
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    aps, frames, t0, seen = page.evaluate("() => [window.__aps, window.__frames, window.__t0, window.__seen]")
    if t0 is None:
        raise RuntimeError(f"the {event} event of {kind}={value} was not seen")
    after = [a for a in aps if a[0] >= t0]
    hits = [a for a in after if shows(kind, value, a)]
    done = seen  # the frame at which every view shows the change
    first = hits[0][0] if hits else seen
    sent = next((f[1] for f in frames if f[0] == "out" and f[1] >= t0 and f[3].startswith("comm_msg")), None)
    # the one-model views get patches; compare mode and the training view a whole (small) figure
    fig_in = next((f[1] for f in frames if f[0] == "in" and f[1] >= t0 and (":patch" in f[3] or ":figure" in f[3])),
                  None)
    fig_msgs = [f for f in frames if f[0] == "in" and f[1] >= t0 and (done is None or f[1] <= done)
                and (":patch" in f[3] or ":figure" in f[3])]
    # every view the change touched, in sight or not, has redrawn: the last redraw after the input
    last = max([a[0] for a in after] + ([done] if done is not None else []), default=None)
    return {
        "kind": kind, "input": arg, "value": value, "event": event, "in_view": view,
        "latency_ms": None if done is None else done - t0,
        "all_views_ms": None if last is None else last - t0,
        "first_redraw_ms": None if first is None else first - t0,
        "redraws": len(after),
        "input_to_sent_ms": None if sent is None else sent - t0,
        "kernel_ms": None if (sent is None or fig_in is None) else fig_in - sent,
        "browser_ms": None if (fig_in is None or done is None) else done - fig_in,
        "figure_msgs": len(fig_msgs), "figure_bytes": sum(f[2] for f in fig_msgs),
        "frames_in": sum(1 for f in frames if f[0] == "in"), "bytes_back_to_kernel": sum(
            f[2] for f in frames if f[0] == "out" and f[1] >= (done or t0)),
    }


def replay_render_ms(source: str, changes: list[tuple]) -> dict:
    """render_ms of Dashboard.refresh() for the same changes, in this process (no frontend)."""
    import warnings

    warnings.simplefilter("ignore")
    from geomlib.dashboard import build_app

    app = build_app(source)
    out = []
    for kind, _, value in changes:
        setattr(app, "anchor" if kind == "anchor" else kind, value)
        out.append(app.render_ms)
    return {"per_change": out, **stats(out)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--changes", type=int, default=30, help="number of widget changes (default 30)")
    ap.add_argument("--target-ms", type=float, default=150.0, help="p95 target (default 150 ms)")
    ap.add_argument("--mode-changes", type=int, default=20,
                    help="changes in compare mode and in the training view, each (default 20; needs a cached sweep)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--settle-ms", type=float, default=400.0,
                    help="quiet time after a change before reading its timings (default 400)")
    ap.add_argument("--out", type=Path, default=ARTIFACTS / "dashboard_latency.json")
    ap.add_argument("--strict", action="store_true", help="exit 1 when p95 misses the target")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from geomlib.analyses.phases import phase_order
    from geomlib.dashboard.app import phase_options
    from geomlib.dashboard.data import (
        checkpoint_choices,
        families_with_data,
        open_any,
        open_model_data,
        open_sweep,
        sweep_entries,
    )
    from geomlib.plot import comparison, training, views

    ARTIFACTS.mkdir(exist_ok=True)
    source = "demo:smollm2-135m"
    ds = open_model_data(source)
    n_layers = ds.sizes["layer"]
    n_panels = sum(len(views.get(v).panels) for v in VIEWS)
    DEPTH_VIEWS[:] = [v for v in VIEWS if any(p.depth for p in views.get(v).panels)]
    ANCHOR_VIEWS[:] = [v for v in VIEWS if v not in DEPTH_VIEWS and "anchor" in views.get(v).depends]
    changes = plan_changes(args.changes, args.seed, n_layers, families_with_data(ds), ["all"] + phase_order(ds))
    # the phase dropdown's options are labelled with their layers: the input is the label
    phase_label = {v: label for label, v in phase_options(ds)}
    changes = [(k, phase_label[a], v) if k == "phase" else (k, a, v) for k, a, v in changes]
    # compare mode: the demo model against each checkpoint of the demo sweep and back; the training view of it
    sweep = next(iter(sweep_entries()), None)
    mode_changes = []
    if sweep is not None:
        b_choices = [(label, key) for label, key in checkpoint_choices()]
        sw = open_sweep(sweep)
        a_key = b_choices[-1][1]
        first = open_any(a_key)
        variables = [(comparison.VARIABLES[v][0], v) for v in comparison.variables(first, first)]
        mode_changes = plan_mode_changes(args.mode_changes, args.seed, [c for c in b_choices if c[1] != a_key],
                                         variables, sw.sizes["layer"], training.metrics(sw))
    labels = [str(p) for p in ds["phase"].values]
    for p in phase_order(ds):
        layers = [L for L, q in enumerate(labels) if q == p]
        PHASE_SPANS[p] = (min(layers), max(layers))

    result: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "model": source, "target_p95_ms": args.target_ms, "changes_requested": args.changes,
    }
    with sync_playwright() as pw:
        # the browser is up before Voila starts: a user's browser is already open
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        result["machine"]["chromium"] = browser.version
        context = browser.new_context(viewport={"width": 1700, "height": 1100})
        context.add_init_script(INIT_JS.replace("__N_VIEWS__", str(len(VIEWS))))
        errors: list[str] = []
        voila = Voila(ARTIFACTS / "dashboard_latency-voila.log")
        try:
            up = voila.wait_up()
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            t_nav = time.perf_counter()
            page.goto(voila.url, timeout=180_000)
            wait_rendered(page, n_panels)
            t_render = time.perf_counter()
            cold = {"voila_http_up_s": up, "spawn_to_first_render_s": t_render - voila.t_spawn,
                    "navigation_to_first_render_s": t_render - t_nav}
            print(f"cold start: voila answers after {up:.2f} s; first full render {cold['spawn_to_first_render_s']:.2f} s"
                  f" after spawning voila ({cold['navigation_to_first_render_s']:.2f} s after navigation)")

            # a second visit once the pool has a fresh pre-heated kernel
            waited = voila.wait_preheated(fills=2)
            page.close()
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            t_nav = time.perf_counter()
            page.goto(voila.url, timeout=180_000)
            wait_rendered(page, n_panels)
            cold["preheated_navigation_to_first_render_s"] = time.perf_counter() - t_nav
            cold["waited_for_preheat_s"] = waited
            cold["preheated_websocket_kib_in"] = page.evaluate(
                "() => window.__frames.filter((f) => f[0] === 'in').reduce((s, f) => s + f[2], 0) / 1024")
            print(f"pre-heated kernel: first full render {cold['preheated_navigation_to_first_render_s']:.2f} s after"
                  f" navigation ({cold['preheated_websocket_kib_in']:.0f} KiB over the websocket)")
            result["cold_start"] = cold

            page.wait_for_function("() => window.__hook()", timeout=30_000)
            wait_quiet(page, 1000, timeout=60_000)
            records = []
            for i, (kind, arg, value) in enumerate(changes):
                rec = measure_change(page, kind, arg, value, args.settle_ms)
                records.append(rec)
                lat = rec["latency_ms"]
                print(f"  {i + 1:3d} {kind:8s} -> {str(value):10s} "
                      f"{'?' if lat is None else f'{lat:7.1f}'} ms  (input->sent {rec['input_to_sent_ms'] or 0:5.1f}, "
                      f"kernel {rec['kernel_ms'] or 0:6.1f}, browser {rec['browser_ms'] or 0:6.1f}; "
                      f"{rec['redraws']} redraw(s), {rec['figure_bytes'] / 1024:.1f} KiB)")
            for mode in MODE_KINDS:
                todo = [c for c in mode_changes if c[0] in MODE_KINDS[mode]]
                if not todo:
                    continue
                page.locator(".widget-toggle-button", has_text=re.compile(rf"^\s*{mode}\s*$")).first.click()
                page.wait_for_function(f"() => {{ const g = {V}('{mode}'); return !!(g && g._fullLayout && "
                                       "g.querySelectorAll('.nsewdrag').length); }", timeout=60_000)
                if mode == "compare":  # A: the sweep's last checkpoint, so B's choices share its shape
                    dropdown(page, "A").select_option(b_choices[-1][0])
                    page.wait_for_function(f"() => ({V}('compare').layout.meta || {{}}).a === {json.dumps(a_key)}",
                                           timeout=60_000)
                wait_quiet(page, 1000, timeout=60_000)
                for kind, arg, value in todo:
                    rec = measure_change(page, kind, arg, value, args.settle_ms)
                    records.append(rec)
                    lat = rec["latency_ms"]
                    print(f"  {len(records):3d} {kind:15s} -> {str(value)[:28]:28s} "
                          f"{'?' if lat is None else f'{lat:7.1f}'} ms  (kernel {rec['kernel_ms'] or 0:6.1f}, "
                          f"browser {rec['browser_ms'] or 0:6.1f}; {rec['figure_bytes'] / 1024:.1f} KiB)")
                page.screenshot(path=str(ARTIFACTS / f"dashboard_latency-{mode}.png"))
            page.screenshot(path=str(ARTIFACTS / "dashboard_latency-last.png"))
        finally:
            voila.stop()
            browser.close()

    lat = [r["latency_ms"] for r in records]
    s = stats(lat)
    result["changes"] = records
    result["latency_ms"] = s
    result["latency_ms_by_kind"] = {k: stats([r["latency_ms"] for r in records if r["kind"] == k]) for k in ALL_KINDS}
    result["all_views_ms_by_kind"] = {k: stats([r["all_views_ms"] for r in records if r["kind"] == k])
                                      for k in ALL_KINDS}
    result["breakdown_ms"] = {k: stats([r[k] for r in records]) for k in ("input_to_sent_ms", "kernel_ms",
                                                                           "browser_ms")}
    result["page_errors"] = errors
    print("render_ms: replaying the same changes on a Dashboard in this process ...")
    result["render_ms_replayed"] = replay_render_ms(source, changes)
    by_kind = [v for v in result["latency_ms_by_kind"].values() if v["n"]]
    ok = (s["p95"] is not None and s["p95"] <= args.target_ms and s["n"] == len(records)
          and all(v["p95"] <= args.target_ms for v in by_kind))
    result["verdict"] = "PASS" if ok else "FAIL"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))

    b, r = result["breakdown_ms"], result["render_ms_replayed"]
    print()
    print(f"widget change -> figure updated, {s['n']} changes: p50 {s['p50']:.0f} ms, p95 {s['p95']:.0f} ms, "
          f"max {s['max']:.0f} ms")
    for k, v in result["latency_ms_by_kind"].items():
        if v["n"]:
            a = result["all_views_ms_by_kind"][k]
            print(f"  {k:15s} p50 {v['p50']:.0f} ms, p95 {v['p95']:.0f} ms, max {v['max']:.0f} ms ({v['n']}); "
                  f"views out of sight caught up (after {CATCH_UP_S:.1f} s quiet): p50 {a['p50']:.0f}, p95 {a['p95']:.0f} ms")
    print(f"where it goes (medians): input -> message sent {b['input_to_sent_ms']['p50']:.0f} ms; kernel (refresh + "
          f"serialization + transport) {b['kernel_ms']['p50']:.0f} ms, of which render_ms {r['p50']:.0f} ms "
          f"(p95 {r['p95']:.0f}); browser (deserialize + Plotly.update redraw) {b['browser_ms']['p50']:.0f} ms")
    if errors:
        print(f"page errors: {errors}")
    print(f"{result['verdict']}: p95 {s['p95']:.0f} ms vs target {args.target_ms:.0f} ms  -> {args.out}")
    return 1 if (args.strict and not ok) else 0


if __name__ == "__main__":
    sys.exit(main())
