"""The served dashboard: a real Voila server on loopback, driven by headless Chromium.

One Voila server and one page for the whole module (the tests run in order
and share the page's state): the page must draw all four views of the demo
model, every control must reach the linked figure, a click on an operator
heatmap cell must open that pair, exports must be real PNG/SVG/PDF files, and
switching the model must redraw everything.  What is drawn is read from the
plotly graph div itself (``gd.data`` / ``gd.layout`` / ``gd._fullLayout``) and
compared with what geomlib computes here from the same cached Dataset.

The Voila log, screenshots (full page and one per view) and the exported
files land in ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from geomlib.analyses.phases import phase_order
from geomlib.plot import views
from geomlib.plot.names import VIEW_NAMES
from tests.factories.heatmaps import close

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SMOL, MINI = "demo:smollm2-135m", "demo:minilm-l6"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
VIEW_ROWS = VIEW_NAMES  # the page's views, in order
#: the views with a layer axis: anchor lines and phase bands are drawn on them
DEPTH_ROWS = [v for v in VIEW_ROWS if any(p.depth for p in views.get(v).panels)]
#: the views with a heatmap panel: each shows a colour bar (drawn by the page)
HEATMAP_VIEWS = [v for v in VIEW_ROWS if any("heatmap" in p.traces for p in views.get(v).panels)]

pytestmark = pytest.mark.slow

def gd(view: str) -> str:
    """The graph div of one view (each view is its own plotly figure)."""
    return f"document.querySelector('.geomlib-plot[data-view=\"{view}\"]')"


# a JSON-able picture of what a view's graph div holds (typed arrays become lists)
SNAPSHOT_JS = """(view) => {
  const g = document.querySelector(`.geomlib-plot[data-view="${view}"]`);
  const arr = (v) => (v == null) ? null : (ArrayBuffer.isView(v) || Array.isArray(v))
      ? Array.from(v, (e) => (ArrayBuffer.isView(e) || Array.isArray(e)) ? Array.from(e) : e) : v;
  return {
    title: g.layout.title.text,
    annotations: (g.layout.annotations || []).map((a) => a.text),
    shapes: (g.__overlays || []).filter((s) => s.visible !== false)
      .map((s) => ({type: s.type, xref: s.xref, yref: s.yref, x0: s.x0, x1: s.x1,
                    y0: s.y0, y1: s.y1, fill: s.fillcolor || null})),
    data: g.data.map((d) => ({type: d.type || 'scatter', xaxis: d.xaxis || 'x', yaxis: d.yaxis || 'y',
                              x: arr(d.x), y: arr(d.y), z: arr(d.z),
                              color: d.marker ? arr(d.marker.color) : null,
                              opacity: d.marker ? arr(d.marker.opacity) : null})),
    subplots: Object.keys(g._fullLayout._plots || {}),
    drag: g.querySelectorAll('.nsewdrag').length,
  };
}"""


# -- server and browser ---------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_path() -> str:
    """Debian's chromium; never a browser downloaded by Playwright."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no system Chromium on PATH: install Debian's `chromium` package (make test does)")


def _stop(proc: subprocess.Popen) -> None:
    """Stop Voila and whatever kernels it started (children of this one process only)."""
    try:
        import psutil

        children = psutil.Process(proc.pid).children(recursive=True)
    except Exception:
        children = []
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    for child in children:
        try:
            if child.is_running():
                child.kill()
        except Exception:
            pass


@pytest.fixture(scope="module")
def voila_url():
    port = _free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "voila.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "voila", "notebooks/dashboard.ipynb", f"--port={port}", "--no-browser",
         "--Voila.ip=127.0.0.1"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:  # a static path: requesting the page itself would take the pre-heated kernel
            urllib.request.urlopen(url + "voila/static/", timeout=5).close()
            break
        except urllib.error.HTTPError:
            break  # the server answered
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                log.close()
                pytest.fail(f"voila did not start; see {log.name}")
            time.sleep(0.25)
    yield url
    _stop(proc)
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Dash:
    """The page, the JavaScript errors seen on it, and helpers to read and wait on the plot."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def snapshot(self, view: str = "cos") -> dict:
        return self.page.evaluate(SNAPSHOT_JS, view)

    def wait(self, predicate: str, view: str = "cos", timeout: float = 60_000) -> None:
        """Wait until ``predicate`` (JavaScript over ``g``, the view's graph div) holds, then for the next frame."""
        self.page.wait_for_function(
            f"() => {{ const g = {gd(view)}; return !!(g && g.data && g.layout && g._fullLayout && ({predicate})); }}",
            timeout=timeout,
        )
        self.page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")

    def dropdown(self, label: str):
        """The <select> of the ipywidgets Dropdown described by ``label``."""
        box = self.page.locator(".widget-dropdown").filter(
            has=self.page.locator("label.widget-label", has_text=re.compile(rf"^{re.escape(label)}$")))
        return box.locator("select")

    def choose(self, select, startswith: str) -> str:
        values = select.evaluate("s => Array.from(s.options, (o) => o.value)")
        value = next(v for v in values if v.startswith(startswith))
        select.select_option(value)
        return value

    def fit(self) -> None:
        """Make the viewport as tall as the page: Voila scrolls an inner panel, not the document, so a
        full-page screenshot is only the viewport otherwise."""
        height = self.page.evaluate("""() => Math.max(document.documentElement.scrollHeight,
            ...Array.from(document.querySelectorAll('.lm-BoxPanel-child, .jp-Notebook'), (e) => e.scrollHeight))""")
        size = self.page.viewport_size
        if height > size["height"]:
            self.page.set_viewport_size({"width": size["width"], "height": int(height) + 20})

    def screenshots(self, stem: str, n_rows: int = len(VIEW_ROWS)) -> None:
        """The full page, then one picture per view (each view is its own figure)."""
        page = self.page
        self.fit()
        page.mouse.move(0, 0)  # no hover label in the pictures
        page.screenshot(path=str(ARTIFACTS / f"{stem}-full.png"), full_page=True)
        for r in range(n_rows):
            page.locator(f'.geomlib-plot[data-view="{VIEW_ROWS[r]}"]').screenshot(
                path=str(ARTIFACTS / f"{stem}-view{r + 1}-{VIEW_ROWS[r]}.png"))


@pytest.fixture(scope="module")
def dash(voila_url, browser):
    page = browser.new_page(viewport={"width": 1700, "height": 1100})
    d = Dash(page)
    page.goto(voila_url, timeout=120_000)
    for view in VIEW_ROWS:
        d.wait("g.data.length > 0 && g.querySelectorAll('.nsewdrag').length > 0", view, timeout=120_000)
    d.fit()
    yield d
    page.close()


@pytest.fixture(scope="module")
def smol():
    """What the page should draw, computed here from the same cached Dataset."""
    from geomlib.dashboard.data import open_model_data
    from geomlib.plot.layout import build_figure
    from geomlib.plot.views import Selection

    ds = open_model_data(SMOL)
    figs, index = {}, {}
    for v in VIEW_ROWS:
        figs[v], idx = build_figure(ds, Selection(), (v,), info=True)
        index[v] = idx[0]
    return ds, figs, index


def _grid(z) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in z], dtype=float)


def _vals(v) -> np.ndarray:
    return np.array([np.nan if e is None else e for e in v], dtype=float)


def _trace_axes(snap) -> list[tuple[str, str, str]]:
    return [(d["type"], d["xaxis"], d["yaxis"]) for d in snap["data"]]


def _anchor_lines(snap) -> set:
    """x positions of the dotted anchor lines on depth x axes."""
    return {s["x0"] for s in snap["shapes"] if s["type"] == "line" and s["x0"] == s["x1"]
            and str(s["yref"]).endswith("domain") and s["fill"] is None and s["x0"] is not None}


def _anchor_rows(snap) -> set:
    """y positions of the dotted anchor rows on the L x L heatmaps."""
    # phase boundaries are lines too, between layers (at L - 0.5); anchors sit on a layer
    return {s["y0"] for s in snap["shapes"] if s["type"] == "line" and s["y0"] == s["y1"]
            and str(s["xref"]).endswith("domain") and s["fill"] is None and s["y0"] is not None
            and float(s["y0"]).is_integer()}


def _bands(snap) -> list[tuple]:
    return [(s["xref"], s["yref"], s["x0"], s["x1"], s["y0"], s["y1"]) for s in snap["shapes"]
            if s["type"] == "rect" and s["fill"]]


def _anchor_js(a: int) -> str:
    """A wait condition: the anchor overlays sit at layer ``a``."""
    return (f"(g.__overlays || []).some((s) => s.type === 'line' && s.x0 === {a} && s.x1 === {a}) && "
            f"!(g.__overlays || []).some((s) => s.type === 'line' && s.x0 === s.x1 && s.x0 !== {a} && "
            f"String(s.yref).endsWith('domain') && !s.fillcolor && s.line && s.line.dash === 'dot' && s.visible !== false)")


def button(page, text: str):
    """The ipywidgets Button whose label is ``text`` (its title attribute is its tooltip)."""
    return page.locator("button.widget-button").filter(has_text=re.compile(rf"^\s*{re.escape(text)}\s*$"))


# -- tests ------------------------------------------------------------------------------------------------------
def _all_shapes(dash) -> list[dict]:
    return [sh for v in VIEW_ROWS for sh in dash.snapshot(v)["shapes"]]


def test_page_draws_all_four_views_of_the_demo_model(dash, smol):
    ds, figs, index = smol
    page = dash.page
    for v in VIEW_ROWS:
        n_panels = len(index[v])
        dash.wait(f"g.data.length === {len(figs[v].data)} && g.querySelectorAll('.nsewdrag').length === {n_panels}", v)
        snap = dash.snapshot(v)
        # the same traces on the same subplots as the figure built here
        expected = [(t.type, t.xaxis or "x", t.yaxis or "y") for t in figs[v].data]
        assert _trace_axes(snap) == expected, v
        for c, traces in enumerate(index[v]):
            sub = "xy" if c == 0 else f"x{c + 1}y{c + 1}"
            assert sub in snap["subplots"], (v, c)
            assert traces and all(snap["data"][i]["xaxis"] + snap["data"][i]["yaxis"] == sub for i in traces)
        titles = [a.text for a in figs[v].layout.annotations if a.text][:n_panels]
        assert snap["annotations"][:n_panels] == titles
    assert [len(index[v]) for v in VIEW_ROWS] == [len(views.get(v).panels) for v in VIEW_ROWS]
    cos_snap, op_snap = dash.snapshot("cos"), dash.snapshot("operator")
    assert "raw cos-sim · q_proj" in cos_snap["annotations"][0] and "QK operator" in op_snap["annotations"][0]
    assert "γ PCA" in dash.snapshot("gamma")["annotations"][0]
    assert "attention entropy" in dash.snapshot("entropy")["annotations"][0]

    # real numbers: the cos heatmap is this model's q_proj cosine, the entropy heatmap is layers x heads
    cos = _grid(cos_snap["data"][index["cos"][0][0]]["z"])
    close(cos, ds["cos"].sel(family="q_proj").values, rtol=1e-12, equal_nan=True)
    assert cos.shape == (30, 30)
    ent = _grid(dash.snapshot("entropy")["data"][index["entropy"][0][0]]["z"])
    assert ent.shape == (30, ds.sizes["head"]) and np.isfinite(ent).all()
    heads = _vals(op_snap["data"][index["operator"][1][0]]["y"])
    assert heads.shape == (9,) and np.isfinite(heads).all()
    gamma = dash.snapshot("gamma")
    assert len(index["gamma"][0]) == 1 and len(gamma["data"][index["gamma"][0][0]]["x"]) == 30

    # overlays are drawn in an SVG over each plot: the anchor lines are really on the page
    n_lines = page.evaluate(f"() => {gd('cos')}.querySelectorAll('svg.geomlib-overlay line').length")
    assert n_lines == len([sh for sh in cos_snap["shapes"] if sh["type"] == "line"]) > 0
    # the quantization is said in the visible title, and in the facts table
    assert "Q4_1 quantized" in dash.snapshot(VIEW_ROWS[0])["title"]  # the first view carries the model line
    assert 29 in _anchor_lines(cos_snap) and 29 in _anchor_rows(cos_snap)
    title = page.locator(f'.geomlib-plot[data-view="{VIEW_ROWS[0]}"] .gtitle')
    assert title.is_visible() and "Q4_1 quantized" in title.text_content()
    assert page.locator(".geomlib-facts .geomlib-architecture").inner_text() == "llama"
    assert page.locator(".geomlib-facts .geomlib-layers").inner_text() == "30 layers"
    assert page.locator(".geomlib-facts .geomlib-quantization").inner_text() == "Q4_1"
    # no Python traceback or warning printed into the page
    assert page.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
    assert page.locator(".geomlib-error").count() == 0

    dash.screenshots("dashboard-smollm2")
    assert not dash.errors, dash.errors


def test_anchor_slider_moves_every_depth_overlay(dash, smol):
    ds, figs, index = smol
    page = dash.page
    before = {v: dash.snapshot(v) for v in VIEW_ROWS}
    assert 29 in _anchor_lines(before["cos"])

    # drag the slider's handle to layer ~12 (continuous_update=False: the value is sent on release)
    track = page.locator(".widget-slider .noUi-target").first
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.scroll_into_view_if_needed()
    tb, hb = track.bounding_box(), handle.bounding_box()
    page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
    page.mouse.down()
    page.mouse.move(tb["x"] + tb["width"] * 12 / 29, hb["y"] + hb["height"] / 2, steps=8)
    page.mouse.up()
    page.wait_for_function("() => document.querySelector('.widget-slider .widget-readout').textContent.trim() !== '29'")
    a = int(page.locator(".widget-slider .widget-readout").first.inner_text())
    assert 9 <= a <= 15, a
    for v in DEPTH_ROWS:  # views with a layer axis (the anchor-spectra view has none: it titles the layer)
        dash.wait(_anchor_js(a), v)
    for v in set(VIEW_ROWS) - set(DEPTH_ROWS):
        dash.wait(f"/\\blayer {a}\\b/.test(g.layout.annotations[0].text)", v)
    after = {v: dash.snapshot(v) for v in VIEW_ROWS}

    # the anchor lines on every depth axis, the anchor rows of the L x L heatmaps and the γ ring follow
    lines = set().union(*(_anchor_lines(after[v]) for v in VIEW_ROWS))
    assert a in lines and 29 not in lines
    assert _anchor_rows(after["cos"]) == {a} and _anchor_rows(after["operator"]) == {a}
    assert _anchor_rows(before["cos"]) == {29}
    ring = lambda snap: [(sh["x0"], sh["x1"]) for sh in snap["shapes"] if sh["type"] == "circle"]  # noqa: E731
    pc1 = float(ds["gamma_pca_scores"].sel(family="input_ln", layer=a).isel(pc=0))
    r_after, r_before = ring(after["gamma"]), ring(before["gamma"])
    assert len(r_after) == 1 and r_after != r_before and r_after[0][0] < pc1 < r_after[0][1]
    # the anchor is an overlay: no trace data is rewritten (that would make plotly redraw the figure), except in
    # views with a panel of the anchor layer's own data (the spectra view's ESD)
    for v in (v for v in VIEW_ROWS if "anchor" not in views.get(v).depends):
        assert [d["z"] for d in after[v]["data"]] == [d["z"] for d in before[v]["data"]], v
        assert [d["y"] for d in after[v]["data"]] == [d["y"] for d in before[v]["data"]], v
    assert not dash.errors, dash.errors


def test_family_dropdown_changes_the_weight_views(dash, smol):
    ds, figs, index = smol
    before = {v: dash.snapshot(v) for v in VIEW_ROWS}
    # a norm gain first: its delta panel carries a note, and every title of the weight view names it
    dash.dropdown("family").select_option("input_ln")
    dash.wait("g.layout.annotations[0].text.replace(' ℹ', '').endsWith(' · input_ln')")
    norm = dash.snapshot("cos")
    assert all(" · input_ln" in t for t in norm["annotations"][:4]), norm["annotations"][:4]
    assert any("no aligned cos-sim for input_ln" in (t or "") for t in norm["annotations"][4:])
    close(_grid(norm["data"][index["cos"][0][0]]["z"]), ds["cos"].sel(family="input_ln").values,
                               rtol=1e-12, equal_nan=True)
    # then a projection again: titles follow (they once stuck on the family before the note appeared)
    dash.dropdown("family").select_option("k_proj")
    dash.wait("g.layout.annotations[0].text.replace(' ℹ', '').endsWith(' · k_proj') && g.layout.annotations[3].text.replace(' ℹ', '').endsWith(' · k_proj')")
    after = dash.snapshot("cos")
    assert all(" · k_proj" in t for t in after["annotations"][:4]), after["annotations"][:4]
    assert len(after["annotations"]) == 4  # the note is gone

    cos = _grid(after["data"][index["cos"][0][0]]["z"])
    close(cos, ds["cos"].sel(family="k_proj").values, rtol=1e-12, equal_nan=True)
    b = before["cos"]
    assert after["data"][index["cos"][0][0]]["z"] != b["data"][index["cos"][0][0]]["z"]
    assert after["data"][index["cos"][1][0]]["z"] != b["data"][index["cos"][1][0]]["z"]  # delta heatmap
    raw = index["cos"][2][2]  # adjacent raw cos line
    assert after["data"][raw]["y"] != b["data"][raw]["y"]
    bars = index["cos"][3][0]  # per-phase mean delta
    assert after["data"][bars]["y"] != b["data"][bars]["y"]
    # the operator view does not depend on the weight family
    op = dash.snapshot("operator")
    assert op["data"][index["operator"][0][0]]["z"] == before["operator"]["data"][index["operator"][0][0]]["z"]
    assert not dash.errors, dash.errors


def test_phase_dropdown_shades_the_phase_everywhere(dash, smol):
    ds, figs, index = smol
    phases = phase_order(ds)
    first = phases[0]
    layers = [L for L, p in enumerate(str(p) for p in ds["phase"].values) if p == first]
    assert not [b for v in VIEW_ROWS for b in _bands(dash.snapshot(v))]
    dash.choose(dash.dropdown("phase"), first + ": layers")
    for v in DEPTH_ROWS:
        dash.wait("(g.__overlays || []).some((s) => s.type === 'rect' && !!s.fillcolor && s.visible !== false)", v)
    cos = dash.snapshot("cos")
    bands = _bands(cos)
    k = phases.index(first)
    bars_x = cos["data"][index["cos"][3][0]]["xaxis"]  # per-phase bars: a categorical axis, the chosen bar shaded
    assert [b for b in bands if b[0] == bars_x and (b[2], b[3]) == (k - 0.5, k + 0.5)]
    every = [b for v in VIEW_ROWS for b in _bands(dash.snapshot(v))]
    on_depth = [b for b in every if b[0] != bars_x and not str(b[0]).endswith("domain")]
    assert on_depth and {(b[2], b[3]) for b in on_depth} == {(min(layers) - 0.5, max(layers) + 0.5)}
    on_rows = [b for b in every if str(b[0]).endswith("domain")]  # the layer axis of heatmaps (y)
    assert on_rows and {(b[4], b[5]) for b in on_rows} == {(min(layers) - 0.5, max(layers) + 0.5)}
    assert not dash.errors, dash.errors


def test_click_on_an_operator_cell_opens_that_pair(dash, smol):
    ds, figs, index = smol
    page = dash.page
    L, Lb = 5, 17
    before = dash.snapshot("operator")
    assert not before["annotations"][1].startswith(f"pair ({L}, {Lb})")

    # the pixel of cell (layer L, layer_b Lb) from the subplot's axes: the operator heatmap is subplot xy
    drag = page.locator('.geomlib-plot[data-view="operator"] .nsewdrag[data-subplot="xy"]')
    drag.scroll_into_view_if_needed()
    rel = page.evaluate(f"([L, Lb]) => {{ const fl = {gd('operator')}._fullLayout; "
                        f"return [fl.xaxis.d2p(Lb), fl.yaxis.d2p(L)]; }}", [L, Lb])
    box = drag.bounding_box()
    x, y = box["x"] + rel[0], box["y"] + rel[1]
    assert box["x"] < x < box["x"] + box["width"] and box["y"] < y < box["y"] + box["height"]
    page.mouse.move(x, y)
    page.wait_for_function(f"() => !!{gd('operator')}.querySelector('.hoverlayer .hovertext')")
    page.mouse.click(x, y)
    dash.wait(f"g.layout.annotations[1].text.startsWith('pair ({L}, {Lb})')", "operator")
    after = dash.snapshot("operator")

    # per-head bars: title and values of the clicked pair; the spectra and sign panels follow
    assert after["annotations"][1].startswith(f"pair ({L}, {Lb}): head_cos (qk) per head")
    bars = index["operator"][1][0]
    np.testing.assert_allclose(_vals(after["data"][bars]["y"]),
                               ds["head_cos"].sel(operator="qk", layer=L, layer_b=Lb).values, rtol=1e-12)
    assert after["data"][bars]["y"] != before["data"][bars]["y"]
    assert f"σ_{L} vs T·σ_{Lb}" in after["annotations"][2] and after["annotations"][3].startswith(f"pair ({L}, {Lb})")
    box = [sh for sh in after["shapes"] if sh["type"] == "rect" and not sh["fill"]]  # the selected cell outlined
    assert [(sh["x0"], sh["y0"]) for sh in box] == [(Lb - 0.5, L - 0.5)]
    dash.wait(_anchor_js(Lb), "cos")  # a cell click also moves the anchor to its layer_b
    assert Lb in _anchor_lines(dash.snapshot("cos"))

    dash.screenshots("dashboard-smollm2-pair", n_rows=2)
    assert not dash.errors, dash.errors


@pytest.mark.parametrize("view,fmt,magic", [
    ("operator", "png", (b"\x89PNG\r\n\x1a\n",)),
    ("cos", "svg", (b"<svg", b"<?xml")),
    ("gamma", "pdf", (b"%PDF-",)),
])
def test_export_gives_a_valid_file(dash, view, fmt, magic):
    page = dash.page
    dash.dropdown("export").select_option(view)
    page.locator("select:has(option[value='pdf'])").select_option(fmt)
    button(page, "export").click()
    link = page.locator("a.geomlib-download")
    page.wait_for_function(
        f"() => {{ const a = document.querySelector('a.geomlib-download'); "
        f"return !!a && a.download.endsWith('-{view}.{fmt}'); }}", timeout=120_000)
    href = link.get_attribute("href")
    head, b64 = href.split(",", 1)
    assert head == {"png": "data:image/png;base64", "svg": "data:image/svg+xml;base64",
                    "pdf": "data:application/pdf;base64"}[fmt]
    data = base64.b64decode(b64, validate=True)
    assert data.lstrip().startswith(magic), data[:20]
    name = link.get_attribute("download")
    assert name.startswith("demo-smollm2-135m-")
    (ARTIFACTS / f"export-{name}").write_bytes(data)
    if fmt == "png":
        w, h = struct.unpack(">II", data[16:24])
        assert w >= 400 and h >= 300, (w, h)
    elif fmt == "svg":
        assert b"</svg>" in data[-200:]
    else:
        assert b"%%EOF" in data[-64:]
    assert not dash.errors, dash.errors


def test_model_dropdown_redraws_with_the_other_model(dash, smol):
    ds, figs, index = smol
    page = dash.page
    dash.choose(dash.dropdown("model"), MINI)
    dash.wait(f"g.layout.title.text.startsWith('{MINI}')", VIEW_ROWS[0], timeout=90_000)
    dash.wait(f"g.data[{index['cos'][0][0]}].z.length === 6", timeout=90_000)
    snap = dash.snapshot("cos")
    assert len(snap["data"]) == len(figs["cos"].data)
    cos = _grid(snap["data"][index["cos"][0][0]]["z"])
    assert cos.shape == (6, 6) and np.isfinite(cos[~np.eye(6, dtype=bool)]).all()  # the diagonal may be blanked
    dash.wait(f"g.data[{index['operator'][0][0]}].z.length === 6", "operator")
    assert _grid(dash.snapshot("operator")["data"][index["operator"][0][0]]["z"]).shape == (6, 6)
    dash.wait(f"g.data[{index['entropy'][0][0]}].z.length === 6", "entropy")
    assert _grid(dash.snapshot("entropy")["data"][index["entropy"][0][0]]["z"]).shape == (6, 12)
    assert len(snap["data"][index["cos"][2][2]]["x"]) == 5  # adjacent pairs of 6 layers
    top = dash.snapshot(VIEW_ROWS[0])["title"]
    assert "6 layers" in top and "quantized" not in top and _anchor_rows(snap) == {5}
    assert page.locator(".geomlib-facts .geomlib-architecture").inner_text() == "bert"
    assert page.locator(".geomlib-facts .geomlib-layers").inner_text() == "6 layers"
    assert page.locator(".widget-slider .widget-readout").first.inner_text().strip() == "5"
    dash.screenshots("dashboard-minilm")
    assert page.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
    assert not dash.errors, dash.errors


def test_overlays_are_drawn_where_their_data_coordinates_are(dash, smol):
    """The SVG overlay layer puts each shape at its axis position (categorical axes included)."""
    page = dash.page
    dash.choose(dash.dropdown("model"), SMOL)  # back to the demo with several phases
    dash.wait(f"g.layout.title.text.startsWith('{SMOL}')", VIEW_ROWS[0], timeout=90_000)
    phases = phase_order(smol[0])
    dash.choose(dash.dropdown("phase"), phases[-1] + ": layers")
    dash.wait("(g.__overlays || []).some((s) => s.type === 'rect' && !!s.fillcolor && s.visible !== false)")
    boxes = page.evaluate(f"""() => {{
      const g = {gd('cos')}; const fl = g._fullLayout;
      const rects = Array.from(g.querySelectorAll('svg.geomlib-overlay rect'));
      const plot = (ax) => [ax._offset, ax._offset + ax._length];
      return {{rects: rects.map((r) => [+r.getAttribute('x'), +r.getAttribute('width')]),
               bars: plot(fl.xaxis4)}};
    }}""")
    lo, hi = boxes["bars"]
    # the chosen phase's band on the per-phase bar axis lies inside that subplot, not beside it
    inside = [x for x, w in boxes["rects"] if lo - 1 <= x and x + w <= hi + 1 and w < (hi - lo)]
    assert inside, boxes
    assert not dash.errors, dash.errors


# -- issue 13: the compute box, the modebar, labels, the busy state, tooltips, the URL --------------------------
def test_a_bad_compute_source_is_one_line_and_keeps_the_model(dash):
    page = dash.page
    dash.wait(f"g.layout.title.text.startsWith('{SMOL}')", VIEW_ROWS[0], timeout=90_000)
    model = dash.dropdown("model").input_value()
    page.locator("input[placeholder^='path, .gguf']").fill("/no/such/model")
    button(page, "compute").click()
    page.wait_for_selector(".geomlib-compute-error", timeout=90_000)
    text = page.locator(".geomlib-compute-error").inner_text()
    assert "not an existing file" in text and "\n" not in text.strip() and "Traceback" not in text
    assert page.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
    assert page.locator(".geomlib-error").count() == 0  # no "nothing is cached" from adopting the bad path
    assert dash.dropdown("model").input_value() == model and model.startswith(SMOL)
    assert dash.snapshot(VIEW_ROWS[0])["title"].startswith(SMOL)
    assert not page.locator("button.widget-button").filter(has_text="compute").first.is_disabled()
    assert not dash.errors, dash.errors


def test_the_modebar_offers_no_cloud_sharing(dash):
    page = dash.page
    page.locator('.geomlib-plot[data-view="cos"]').hover()
    titles = page.evaluate("() => Array.from(document.querySelectorAll('.modebar-btn'), (b) => "
                           "b.getAttribute('data-title') || '')")
    assert titles and "download plot as a png" in [t.lower() for t in titles]  # the modebar is drawn, with its own buttons
    assert not [t for t in titles if re.search(r"cloud|chart studio|share|edit in", t, re.I)], titles
    assert page.locator(".modebar .plotlyjsicon, .modebar-btn--logo, a[href*='chart-studio']").count() == 0
    assert not dash.errors, dash.errors


def test_no_tooltip_reads_null_and_the_controls_explain_themselves(dash):
    page = dash.page
    assert page.locator("[title='null'], [title='undefined']").count() == 0
    from geomlib.dashboard.help import TIPS

    for key in ("model", "anchor", "family", "phase", "head", "go"):
        found = page.evaluate("(tip) => Array.from(document.querySelectorAll('[title]'))"
                              ".some((e) => e.getAttribute('title') === tip)", TIPS[key])
        assert found, key


def test_a_data_change_shows_busy_and_clears_it(dash):
    page = dash.page
    page.evaluate("""() => { window.__sawBusy = false;
      window.__busyObs = new MutationObserver(() => { if (document.querySelector('.geomlib-busy')) window.__sawBusy = true; });
      window.__busyObs.observe(document.body, {subtree: true, childList: true, characterData: true}); }""")
    current = dash.dropdown("family").input_value()
    dash.dropdown("family").select_option("v_proj" if current != "v_proj" else "k_proj")
    dash.wait("g.layout.annotations[0].text.replace(' ℹ', '').endsWith('_proj') && "
              f"!g.layout.annotations[0].text.replace(' ℹ', '').endsWith(' · {current}')")
    page.wait_for_function("() => !document.querySelector('.geomlib-busy')")
    assert page.evaluate("() => { window.__busyObs.disconnect(); return window.__sawBusy; }")
    assert not dash.errors, dash.errors


def test_the_url_carries_the_view_and_a_link_opens_it(dash, voila_url, browser):
    # the running page writes its state into the address bar
    page = dash.page
    page.wait_for_function("() => location.search.includes('model=demo:smollm2-135m')")
    family = dash.dropdown("family").input_value()
    assert f"family={family}" in page.url

    # a link opens that view: model, family, anchor, operator and metric
    other = browser.new_page(viewport={"width": 1700, "height": 1100})
    d = Dash(other)
    try:
        other.goto(voila_url + f"?model={MINI}&family=k_proj&anchor=3&operator=ov&metric=cos", timeout=120_000)
        d.wait("g.data.length > 0 && g.querySelectorAll('.nsewdrag').length > 0", "operator", timeout=120_000)
        d.wait(f"g.layout.title.text.startsWith('{MINI}')", VIEW_ROWS[0], timeout=90_000)
        assert d.dropdown("model").input_value().startswith(MINI)
        assert d.dropdown("family").input_value() == "k_proj"
        assert other.locator(".widget-slider .widget-readout").first.inner_text().strip() == "3"
        d.wait("g.layout.annotations[0].text.startsWith('OV')", "operator")
        # the per-head axis names the operator shown (it once kept "qk")
        assert other.evaluate(f"() => {gd('operator')}.layout.yaxis2.title.text") == "head_cos (ov)"
        other.locator("button.widget-toggle-button").filter(has_text=re.compile(r"^\s*QK\s*$")).click()
        d.wait("g.layout.yaxis2.title.text === 'head_cos (qk)'", "operator")
        other.wait_for_function("() => location.search.includes('operator=qk')")
        # a control changed: the URL follows
        d.dropdown("family").select_option("v_proj")
        other.wait_for_function("() => location.search.includes('family=v_proj')")
        assert "anchor=3" in other.url and f"model={MINI}" in other.url
        # a download offered for one model is withdrawn when the model changes
        button(other, "export").click()
        other.wait_for_selector("a.geomlib-download", timeout=120_000)
        d.choose(d.dropdown("model"), SMOL)
        d.wait(f"g.layout.title.text.startsWith('{SMOL}')", VIEW_ROWS[0], timeout=90_000)
        other.wait_for_function("() => !document.querySelector('a.geomlib-download')")
        other.wait_for_function("() => location.search.includes('model=demo:smollm2-135m')")
        assert other.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
        assert not d.errors, d.errors
    finally:
        other.close()


def test_a_bad_link_value_is_one_line(voila_url, browser):
    page = browser.new_page(viewport={"width": 1700, "height": 1100})
    d = Dash(page)
    try:
        page.goto(voila_url + "?anchor=999&family=nope", timeout=120_000)
        d.wait("g.data.length > 0", VIEW_ROWS[0], timeout=120_000)
        note = page.locator(".geomlib-url-note").inner_text()
        assert "anchor='999' ignored" in note and "family='nope' ignored" in note and "\n" not in note.strip()
        assert page.locator(".widget-slider .widget-readout").first.inner_text().strip() == "29"
        assert page.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
        assert not d.errors, d.errors
    finally:
        page.close()


#: each colour bar the page drew for a view: whether its gradient is its own (ids are page-wide: url(#id) takes
#: the document's first element of that id) and has its trace's colours, and its number of tick labels
BARS_JS = """(view) => {
  const g = document.querySelector(`.geomlib-plot[data-view="${view}"]`);
  return Array.from(g.querySelectorAll('g.geomlib-colorbar'), (c) => {
    const id = /url\\(#(.+)\\)/.exec(c.querySelector('rect').getAttribute('fill'))[1];
    const own = document.querySelectorAll('#' + id).length === 1 && c.querySelector('#' + id) !== null;
    const t = g._fullData[+c.dataset.trace];
    const want = (t.reversescale ? t.colorscale.slice().reverse() : t.colorscale).map((s) => s[1]);
    const stops = Array.from(c.querySelectorAll('stop'), (e) => e.getAttribute('stop-color'));
    return {own, colours: JSON.stringify(stops) === JSON.stringify(want), ticks: c.querySelectorAll('.geomlib-cb-tick').length};
  });
}"""


# -- layout at laptop and desktop widths, compare mode, the training view ---------------------------------------
LAYOUT_JS = """() => {
  const vw = window.innerWidth;
  const plots = Array.from(document.querySelectorAll('.geomlib-plot')).filter((g) => g.offsetParent !== null);
  return {vw, scroll: Math.max(document.documentElement.scrollWidth,
            ...Array.from(document.querySelectorAll('.jp-Notebook, .lm-BoxPanel-child'), (e) => e.scrollWidth)),
          plots: plots.map((g) => {
            const r = g.getBoundingClientRect(); const fl = g._fullLayout;
            // the page draws the colour bars (plotly is told showscale: false): every heatmap with data needs one
            const heat = g.data.filter((t) => t.type === 'heatmap' && (t.z || []).flat().some(Number.isFinite));
            return {view: g.dataset.view, left: r.left, right: r.right, top: r.top, width: fl.width,
                    // every subplot's plot area and every colour bar lie inside the figure
                    axes: Object.keys(fl).filter((k) => /^xaxis\\d*$/.test(k)).map((k) => [fl[k]._offset, fl[k]._length]),
                    colorbars: g.querySelectorAll('g.geomlib-colorbar').length, heatmaps: heat.length,
                    bars: Array.from(g.querySelectorAll('g.geomlib-colorbar'), (c) => c.getBoundingClientRect().right - r.left),
                    ticks: Array.from(g.querySelectorAll('g.geomlib-colorbar'), (c) => c.querySelectorAll('.geomlib-cb-tick').length),
                    titles: Array.from(g.querySelectorAll('g.geomlib-colorbar .geomlib-cb-title'), (c) => c.textContent)};
          })};
}"""


@pytest.mark.parametrize("width,height", [(1366, 768), (1920, 1080)])
def test_every_panel_fits_the_window_with_its_colour_bars(voila_url, browser, width, height):
    page = browser.new_page(viewport={"width": width, "height": height})
    d = Dash(page)
    try:
        page.goto(voila_url, timeout=120_000)
        for view in VIEW_ROWS:
            d.wait("g.data.length > 0 && g.querySelectorAll('.nsewdrag').length > 0", view, timeout=120_000)
        # the first screen shows data: the first view starts within the window
        first = page.locator(f'.geomlib-plot[data-view="{VIEW_ROWS[0]}"]').bounding_box()
        assert first["y"] < 0.5 * height, first
        out = page.evaluate(LAYOUT_JS)
        assert out["scroll"] <= out["vw"] + 1, out["scroll"]  # no horizontal scrolling: nothing clipped
        assert len(out["plots"]) == len(VIEW_ROWS)
        for p in out["plots"]:
            assert p["left"] >= 0 and p["right"] <= out["vw"] + 1, p
            assert p["width"] <= p["right"] - p["left"] + 1, p  # the figure is as wide as its place, not wider
            assert all(o >= 0 and o + n <= p["width"] + 1 for o, n in p["axes"]), p
            assert p["colorbars"] >= p["heatmaps"] > 0 or p["view"] not in HEATMAP_VIEWS, p  # each heatmap's bar
            assert all(0 <= r <= p["width"] + 1 for r in p["bars"]), p
            assert all(n >= 3 for n in p["ticks"]) and len(p["titles"]) == p["colorbars"] and all(p["titles"]), p
            assert all(b["own"] and b["colours"] for b in page.evaluate(BARS_JS, p["view"])), p["view"]
        # views with few panels use the width too (no half-empty rows)
        widths = {p["view"]: p["width"] for p in out["plots"]}
        assert min(widths.values()) >= 0.9 * max(widths.values()), widths
        page.screenshot(path=str(ARTIFACTS / f"layout-{width}x{height}-first-screen.png"))
        d.fit()
        page.screenshot(path=str(ARTIFACTS / f"layout-{width}x{height}-full.png"), full_page=True)
        assert page.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
        assert not d.errors, d.errors
    finally:
        page.close()


def test_every_panel_title_has_an_info_tooltip(dash):
    for v in VIEW_ROWS:
        snap = dash.page.evaluate(f"() => ({gd(v)}.layout.annotations || []).map((a) => [a.text, a.hovertext])")
        infos = [(t, h) for t, h in snap if t and "ℹ" in t]
        assert len(infos) == len(views.get(v).panels), (v, snap)
        assert all(h and len(h) > 40 for _, h in infos), (v, infos)
    # hovering the first ℹ shows its text
    page = dash.page
    box = page.evaluate(f"""() => {{ const g = {gd(VIEW_ROWS[0])};
        const t = Array.from(g.querySelectorAll('.annotation-text')).find((e) => e.textContent.includes('ℹ'));
        const r = t.getBoundingClientRect(); return [r.right - 6, r.top + r.height / 2]; }}""")
    page.mouse.move(*box)
    page.wait_for_function(f"() => {gd(VIEW_ROWS[0])}.querySelector('.hoverlayer .hovertext') !== null",
                           timeout=10_000)
    page.mouse.move(0, 0)


def test_panel_legends_list_their_traces_and_a_click_hides_one(dash, smol):
    """The page draws each panel's legend (plotly's were a quarter of a redraw of the spectra views): the panel's
    named traces, in their own colours; a click hides a trace, which stays hidden when its data changes; a double
    click shows it alone, and another shows them all again."""
    _, figs, _ = smol
    v, page = "anchor_spectra", dash.page
    want = [t.name for t in figs[v].data if t.showlegend and t.legend == "legend2"]
    legend = f"{gd(v)}.querySelector('.geomlib-legend[data-legend=\"legend2\"]')"
    items = page.evaluate(f"""() => Array.from({legend}.querySelectorAll('.geomlib-legend-item'), (e) => {{
        const g = {gd(v)}, i = +e.dataset.trace, stroke = e.querySelector('line').getAttribute('stroke');
        return [i, e.textContent, stroke === g._fullData[i].line.color]; }})""")
    assert [name for _, name, _ in items] == want and len(want) >= 2, (items, want)
    assert all(same for _, _, same in items), items  # each swatch in its trace's colour
    i = items[1][0]
    item = page.locator(f'.geomlib-plot[data-view="{v}"] .geomlib-legend-item[data-trace="{i}"]')
    item.click()
    dash.wait(f"g._fullData[{i}].visible === 'legendonly'", v, timeout=10_000)
    assert item.evaluate("(e) => e.style.opacity") == "0.45"
    anchor = page.locator(".widget-slider .widget-readout").first.inner_text().strip()
    page.locator(".widget-slider .noUi-handle").first.press("ArrowLeft")  # the anchor layer's spectra change
    dash.wait(f"!/\\blayer {anchor}\\b/.test(g.layout.annotations[0].text)", v)
    assert page.evaluate(f"() => {gd(v)}._fullData[{i}].visible") == "legendonly"  # still hidden
    item.click()
    dash.wait(f"g._fullData[{i}].visible === true", v, timeout=10_000)
    first = page.locator(f'.geomlib-plot[data-view="{v}"] .geomlib-legend-item[data-trace="{items[0][0]}"]')
    first.dblclick()
    alone = "[" + ",".join(str(k) for k, _, _ in items) + f"].every((k) => (g._fullData[k].visible === true) === (k === {items[0][0]}))"
    dash.wait(alone, v, timeout=10_000)
    first.dblclick()
    dash.wait("[" + ",".join(str(k) for k, _, _ in items) + "].every((k) => g._fullData[k].visible === true)", v,
              timeout=10_000)
    page.locator(".widget-slider .noUi-handle").first.press("ArrowRight")
    assert not dash.errors, dash.errors


def test_views_redraw_one_per_frame_the_one_sent_first_first(dash):
    """A change that touches several views redraws them one per frame: the browser paints the first (the kernel
    sends the most visible first) before it redraws the next, instead of painting them all at once at the end."""
    page = dash.page
    page.evaluate("""() => {
        window.__events = [];
        window.__ticking = true;
        const tick = () => { window.__events.push(['frame']); if (window.__ticking) requestAnimationFrame(tick); };
        requestAnimationFrame(tick);
        for (const g of document.querySelectorAll('.geomlib-plot'))
          if (!g.__logged) { g.__logged = true; g.on('plotly_afterplot', () => (window.__events || []).push(['draw', g.dataset.view])); }
    }""")
    dash.dropdown("family").select_option("o_proj")
    followers = [v for v in VIEW_ROWS if "family" in views.get(v).depends]
    for v in followers:
        dash.wait("!g.__pending()", v, timeout=30_000)
    page.wait_for_timeout(500)
    events = page.evaluate("() => { window.__ticking = false; return window.__events; }")
    draws = [(k, e[1]) for k, e in enumerate(events) if e[0] == "draw"]
    assert len({v for _, v in draws}) >= 3, draws  # several views redrew
    for (a, va), (b, vb) in zip(draws, draws[1:]):
        if va != vb:
            assert any(e[0] == "frame" for e in events[a + 1:b]), (va, vb, events[a:b + 1])
    dash.dropdown("family").select_option("q_proj")
    assert not dash.errors, dash.errors


def test_a_redraw_that_fails_does_not_stop_the_other_views(dash):
    """Views redraw in turn, one per frame: one view's redraw throwing (a plotly error) must not hold up the
    others, then or at the next change."""
    page = dash.page
    page.evaluate(f"""() => {{
        const g = {gd('cos')}, real = Plotly.react;
        window.__realReact = real;
        Plotly.react = function (gd, ...rest) {{
          if (gd === g && !window.__thrown) {{ window.__thrown = true; throw new Error('geomlib-test: a failing redraw'); }}
          return real.call(this, gd, ...rest);
        }};
    }}""")
    try:
        dash.dropdown("family").select_option("v_proj")
        others = [v for v in VIEW_ROWS if v != "cos" and "family" in views.get(v).depends]
        for v in others:
            dash.wait("!g.__pending()", v, timeout=30_000)
        assert page.evaluate("() => window.__thrown === true")
        dash.dropdown("family").select_option("k_proj")  # the next change redraws every view, cos included
        dash.wait("g.layout.annotations[0].text.replace(' ℹ', '').endsWith(' · k_proj')", "cos", timeout=30_000)
        for v in others:
            dash.wait("!g.__pending()", v, timeout=30_000)
    finally:
        page.evaluate("() => { Plotly.react = window.__realReact; }")
        dash.errors[:] = [e for e in dash.errors if "geomlib-test: a failing redraw" not in e]
    dash.dropdown("family").select_option("q_proj")
    assert not dash.errors, dash.errors


def test_each_view_states_its_verdict(dash):
    texts = dash.page.evaluate("() => Array.from(document.querySelectorAll('.geomlib-verdict'), "
                               "(e) => [e.dataset.view, e.textContent])")
    said = {v: t for v, t in texts if v}
    assert said.get(VIEW_ROWS[0]) and len(said[VIEW_ROWS[0]]) > 30, said
    assert any("null" in t for t in said.values()), said


def test_compare_mode_and_the_training_view_render_the_demo_sweep(dash):
    from geomlib.dashboard.data import CHECKPOINT_SEP, open_any, open_sweep
    from geomlib.plot import training

    page = dash.page
    sweep = "demo-tiny-llama"
    a, b = (f"sweep:{sweep}{CHECKPOINT_SEP}step {k}" for k in (200, 400))
    page.locator("button.widget-toggle-button").filter(has_text=re.compile(r"^\s*compare\s*$")).click()
    d = dash
    d.wait("g.data.length === 3 && g.querySelectorAll('.nsewdrag').length === 3", "compare", timeout=90_000)
    assert not page.locator(f'.geomlib-plot[data-view="{VIEW_ROWS[0]}"]').is_visible()
    d.choose(d.dropdown("A"), a)
    d.choose(d.dropdown("B"), b)
    d.wait("g.data[0].z.length === 6 && g.data[1].z.length === 6", "compare", timeout=60_000)
    # the address bar says so (B's key, URL-encoded, ends in "step 400")
    page.wait_for_function("() => /mode=compare.*&b=sweep[^&]*400/.test(location.search)")
    snap = d.snapshot("compare")
    A, B = (open_any(k)["mlp_matched_cos"].sel(mlp_view="mean").values for k in (a, b))
    close(_grid(snap["data"][0]["z"]), A, rtol=1e-12, equal_nan=True)
    close(_grid(snap["data"][2]["z"]), A - B, atol=1e-12, equal_nan=True)
    assert page.locator(".geomlib-compare-verdict").inner_text().count("differ by mean") == 1
    page.screenshot(path=str(ARTIFACTS / "mode-compare.png"))
    page.locator(".geomlib-plot[data-view='compare']").screenshot(path=str(ARTIFACTS / "view-compare.png"))

    page.locator("button.widget-toggle-button").filter(has_text=re.compile(r"^\s*training\s*$")).click()
    d.wait("g.data.length >= 2 && g.querySelectorAll('.nsewdrag').length >= 2", "training", timeout=90_000)
    ds = open_sweep(sweep)
    z, _ = training.movement(ds, "moved_mlp_matched_cos")
    snap = d.snapshot("training")
    close(_grid(snap["data"][0]["z"]), z.values.T, rtol=1e-12, equal_nan=True)
    assert "moved most" in page.locator(".geomlib-training-verdict").inner_text()
    bars = page.evaluate(BARS_JS, "training")  # drawn by the page, in a view shown after the others
    assert len(bars) == 1 and bars[0]["own"] and bars[0]["colours"] and bars[0]["ticks"] >= 3, bars
    page.wait_for_function("() => location.search.includes('mode=training')")
    page.locator(".geomlib-plot[data-view='training']").screenshot(path=str(ARTIFACTS / "view-training.png"))
    page.locator("button.widget-toggle-button").filter(has_text=re.compile(r"^\s*one model\s*$")).click()
    d.wait("g.data.length > 0", VIEW_ROWS[0])
    page.wait_for_function(f"() => {gd(VIEW_ROWS[0])}.offsetParent !== null")
    assert page.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
    assert not dash.errors, dash.errors


def test_views_out_of_sight_wait_until_near_and_the_controls_stay_in_reach(voila_url, browser):
    """At 1366x768 a change redraws the views in and near the window; a view far below keeps its patch until
    it is scrolled near (or the page has been quiet a while); the controls stay on screen (sticky)."""
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    d = Dash(page)
    far = VIEW_ROWS[-1]
    title = lambda v: page.evaluate(f"() => ({gd(v)}.layout.annotations[0] || {{}}).text || ''")  # noqa: E731
    try:
        page.goto(voila_url, timeout=120_000)
        for view in VIEW_ROWS:
            d.wait("g.data.length > 0 && g.querySelectorAll('.nsewdrag').length > 0", view, timeout=120_000)
        page.evaluate("() => { globalThis.__geomlibCatchUpMs = 1e9; }")  # only coming near redraws it
        page.evaluate(f"() => {gd('cos')}.scrollIntoView({{block: 'center'}})")
        controls = page.locator(".geomlib-controls")
        stuck = controls.bounding_box()["y"]
        assert 0 <= stuck <= 30  # stuck at the top of the window (below the page's own padding)
        before = title(far)
        d.dropdown("family").select_option("k_proj")  # reachable without scrolling back up
        d.wait("g.layout.annotations[0].text.replace(' ℹ', '').endsWith(' · k_proj')", "cos")
        d.wait("g.__pending && g.__pending()", far)  # its patch came, and waits
        assert title(far) == before and "k_proj" not in before
        page.evaluate(f"() => {gd(far)}.scrollIntoView({{block: 'center'}})")
        d.wait("!g.__pending() && g.layout.annotations[0].text.includes('k_proj')", far, timeout=10_000)
        assert abs(controls.bounding_box()["y"] - stuck) < 1
        # a quiet page lets views out of sight catch up on their own
        page.evaluate("() => { globalThis.__geomlibCatchUpMs = 100; }")
        page.evaluate(f"() => {gd(VIEW_ROWS[0])}.scrollIntoView({{block: 'start'}})")
        d.dropdown("family").select_option("v_proj")
        d.wait("!g.__pending() && g.layout.annotations[0].text.includes('v_proj')", far, timeout=30_000)
        assert not d.errors, d.errors
    finally:
        page.close()
