"""Dashboard widgets without a browser: set a trait or simulate a click, assert the figure changed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from geomlib.analyses import registry
from geomlib.dashboard import Dashboard, build_app
from geomlib.errors import GeomlibError
from geomlib.plot import views
from geomlib.plot.layout import phase_spans
from geomlib.plot.spec import Panel, PanelSpec, ViewSpec
from geomlib.store import cache

ROOT = Path(__file__).resolve().parents[2]
DEMO_CACHE = [ROOT / "cache"]


@pytest.fixture(scope="module")
def app():
    return build_app(roots=DEMO_CACHE)


ROWS = list(views.names())  # view r of the page
TOP = 0  # the first view carries the model line as its title
COS, OP, GAMMA, ENT = (ROWS.index(v) for v in ("cos", "operator", "gamma", "entropy"))
GAUGE = [v for v in ROWS if "gauge" in {a for p in views.get(v).panels for a in p.requires}]


def copy_entry(src: Path, root: Path) -> Path:
    """Copy a cache entry and its checksum record into ``root`` (the same model directory name)."""
    dest = root / src.parent.name
    dest.mkdir(exist_ok=True)
    for p in (src, cache.record_path(src)):
        (dest / p.name).write_bytes(p.read_bytes())
    return dest / src.name


def flip(path: Path, offset: int = 200) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def fig(app, r):
    return app.figures[ROWS[r]]


def trace(app, r, c, k=0):
    return fig(app, r).data[app._index[ROWS[r]][c][k]]


def z(app, r, c, k=0):
    return np.array(trace(app, r, c, k).z, dtype=float)


def y(app, r, c, k=0):
    return np.array(trace(app, r, c, k).y, dtype=float)


def titles(app, r):
    return [a.text for a in fig(app, r).layout.annotations][: len(views.get(ROWS[r]).panels)]


def shapes(app, r=None):
    rows = range(len(ROWS)) if r is None else [r]
    return [s for i in rows for s in fig(app, i).layout.shapes]


def click(app, r, c, k, x, yv, ind=0):
    """What the browser sends on a plotly click (the view's ``click`` trait)."""
    app.views[ROWS[r]].click = {"seq": time.perf_counter(), "curve": app._index[ROWS[r]][c][k], "point": ind,
                                "x": x, "y": yv, "customdata": None}


def test_opens_the_demo_with_every_view(app):
    assert app.source == "demo:smollm2-135m"
    assert app.anchor == 29 and app._anchor.max == 29
    assert list(app.views) == ROWS and [len(app._index[v]) for v in ROWS] == [len(views.get(v).panels) for v in ROWS]
    assert z(app, COS, 0).shape == (30, 30) and z(app, OP, 0).shape == (30, 30) and z(app, ENT, 0).shape == (30, 9)
    title = fig(app, TOP).layout.title.text
    assert "Q4_1 quantized" in title and "quantization noise" in title  # labelled, not hidden
    # the demo caches may predate the gauge analysis: then only its views say so
    gauge = "gauge" in app.dataset.attrs["analyses"].split(",")
    for r, v in enumerate(ROWS):
        notes = [a.text for a in fig(app, r).layout.annotations if "not computed" in (a.text or "")]
        assert notes == ([] if gauge or v not in GAUGE else ["gauge analysis not computed"] * len(views.get(v).panels))
    assert all(len(pv.figure["data"]) == len(fig(app, r).data) for r, pv in enumerate(app.views.values()))
    assert "llama" in app._info.value


def test_family_changes_the_weight_views(app):
    before, line = z(app, COS, 0), y(app, COS, 2, 2)
    app.family = "v_proj"
    assert not np.allclose(z(app, COS, 0), before, equal_nan=True)
    assert not np.allclose(y(app, COS, 2, 2), line, equal_nan=True)
    assert "v_proj" in titles(app, COS)[0]
    app.family = "q_proj"


def test_anchor_moves_every_marker(app):
    app.anchor = 7
    anchor_lines = [s for s in shapes(app) if s.type == "line" and s.x0 == 7 and s.x1 == 7]
    # every depth x-axis: cos, delta, adjacent line, operator, ‖γ‖, entropy profile, the gauge views' five, and
    # any later view's (the spectra view's α and stable rank)
    depth_x = [(v, p.title) for v in ROWS for p in views.get(v).panels if "x" in p.depth]
    assert len(depth_x) >= 6 + 5 and len(anchor_lines) == len(depth_x)
    rows = [s for s in shapes(app) if s.type == "line" and s.y0 == 7 and s.y1 == 7]
    square = [p for v in ROWS for p in views.get(v).panels if p.depth == "xy"]
    assert len(square) >= 3 + 4 and len(rows) == len(square)  # the anchor row of each L x L heatmap
    ring = [s for s in shapes(app) if s.type == "circle" and s.visible is not False]
    sc = app.dataset["gamma_pca_scores"].sel(family="input_ln", layer=7)
    assert len(ring) == 1 and ring[0].x0 < float(sc.isel(pc=0)) < ring[0].x1
    assert app._anchor.value == 7  # the slider follows the state


def test_the_phase_selector_lists_each_phase_with_its_layers(app):
    spans = {}
    for name, a, b in phase_spans(app.dataset):
        spans.setdefault(name, []).append((a, b))
    labels = dict((v, label) for label, v in app._phase.options)
    assert labels.pop("all").startswith("all")
    assert set(labels) == set(spans)
    for name, label in labels.items():
        (a, b), = spans[name]  # the changepoint phases of the demo are contiguous
        assert label == f"{name}: layers {a}–{b}"


def test_phase_shades_its_layers_and_filters_the_phase_bars(app):
    phases = [v for _, v in app._phase.options][1:]
    assert len(phases) >= 2
    app.phase = phases[-1]
    bands = [s for s in shapes(app) if s.type == "rect" and s.fillcolor and s.visible is not False]
    assert len(bands) >= 9  # the depth axes of four views, both axes of the L x L heatmaps, the phase bars
    k = len(phases) - 1  # the chosen phase's bar is shaded on the per-phase axis (a categorical x axis)
    xa = trace(app, COS, 3).xaxis
    bands = [s for s in shapes(app, COS) if s.type == "rect" and s.fillcolor and s.visible is not False]
    assert [s for s in bands if s.xref == xa and s.x0 == k - 0.5 and s.x1 == k + 0.5]
    app.phase = "all"
    assert not [s for s in shapes(app) if s.type == "rect" and s.fillcolor and s.visible is not False]


def test_operator_head_and_metric_change_the_operator_view(app):
    base = z(app, OP, 0)
    app.operator = "ov"
    ov = z(app, OP, 0)
    assert not np.allclose(ov, base, equal_nan=True)
    app.head = 4
    assert not np.allclose(z(app, OP, 0), ov, equal_nan=True)
    app.op_metric = "pa_mean"
    assert "principal-angle" in titles(app, OP)[0]
    app.operator, app.head, app.op_metric = "qk", -1, "cos"


def test_clicking_an_operator_cell_opens_that_pairs_detail(app):
    bars = y(app, OP, 1)
    click(app, OP, 0, 0, x=12, yv=3)
    assert app.pair == (3, 12) and app.anchor == 12
    assert "pair (3, 12)" in titles(app, OP)[1]
    want = app.dataset["head_cos"].sel(operator="qk", layer=3, layer_b=12).values
    np.testing.assert_allclose(y(app, OP, 1), want)
    assert not np.allclose(y(app, OP, 1), bars)
    assert "pair (3, 12)" in titles(app, OP)[3]  # sign agreement follows
    box = [s for s in shapes(app) if s.type == "rect" and s.line.color == "black"]
    # the selected cell is outlined on every L x L heatmap that follows the pair: the operator heatmap and the
    # four gauge ones (MLPs matched and index-paired, heads matched, composition)
    assert len(box) == 5 and {(b.x0, b.y0) for b in box} == {(11.5, 2.5)}
    assert len([b for b in shapes(app, OP) if b.type == "rect" and b.line.color == "black"]) == 1


def test_clicking_depth_axes_and_gamma_points_sets_the_anchor(app):
    click(app, COS, 2, 2, x=9, yv=0.0)  # adjacent raw line
    assert app.anchor == 9
    click(app, ENT, 0, 0, x=2, yv=21)  # entropy heatmap row
    assert app.anchor == 21
    t = trace(app, GAMMA, 0, 0)  # the γ points, one per layer
    click(app, GAMMA, 0, 0, x=t.x[4], yv=t.y[4], ind=4)
    assert app.anchor == 4


def test_switching_model_redraws_everything(app):
    app.source = "demo:minilm-l6"
    assert z(app, COS, 0).shape == (6, 6) and z(app, ENT, 0).shape == (6, 12)
    assert app._anchor.max == 5 and app.anchor == 5
    assert "bert" in fig(app, TOP).layout.title.text and "quantized" not in fig(app, TOP).layout.title.text
    assert app.views[ROWS[TOP]].figure["layout"]["title"]["text"] == fig(app, TOP).layout.title.text  # sent whole
    assert "gate_proj" not in app._family.options  # BERT has no gate
    app.source = "demo:smollm2-135m"
    assert z(app, COS, 0).shape == (30, 30)


def test_update_touches_only_what_changed(app):
    import json

    from plotly.utils import PlotlyJSONEncoder

    def snapshot(r, c):
        return [json.dumps(fig(app, r).data[i].to_plotly_json(), cls=PlotlyJSONEncoder)
                for i in app._index[ROWS[r]][c]]

    app.refresh(force=True)
    entropy, cos = snapshot(ENT, 0), snapshot(COS, 0)
    before = [s.to_plotly_json() for s in shapes(app)]
    seqs = {v: app.views[v].patch.get("seq") for v in ROWS}
    drawn = {v: list(app.views[v].overlays) for v in ROWS}
    app.anchor = 3
    # the anchor is an overlay: no trace is rewritten (plotly would redraw the whole figure), shapes move
    assert snapshot(ENT, 0) == entropy and snapshot(COS, 0) == cos
    assert [s.to_plotly_json() for s in shapes(app)] != before
    for v in ROWS:  # what went to each view: its overlay list, and no figure patch unless a panel shows the anchor's data
        assert app.views[v].patch.get("seq") == seqs[v] or "anchor" in views.get(v).depends, v
        assert app.views[v].overlays != drawn[v] or not any(p.depth for p in views.get(v).panels), v
        assert app.views[v].overlays == [s.to_plotly_json() for s in fig(app, ROWS.index(v)).layout.shapes]
    op_seq = app.views["operator"].patch.get("seq")
    app.family = "up_proj"
    assert snapshot(COS, 0) != cos and snapshot(ENT, 0) == entropy
    sent = {int(i) for i in app.views["cos"].patch["traces"]}
    assert sent == {i for ids in app._index["cos"] for i in ids}
    assert app.views["operator"].patch.get("seq") == op_seq  # nothing was sent to the operator view
    app.family = "q_proj"
    assert app.render_ms < 1000


def test_missing_analyses_are_labelled(tmp_path):
    # a cache holding only the weights analysis of the demo: every panel that needs the heads says so
    src = next(e.path for e in cache.entries(ROOT / "cache") if e.source == "demo:minilm-l6"
               and e.analysis == "weights")
    copy_entry(src, tmp_path)
    app = build_app(roots=[tmp_path])
    notes = {v: [a.text for a in app.figures[v].layout.annotations if a.text and "not computed" in a.text]
             for v in ROWS}
    expected = {"matched": ["gauge analysis not computed"] * 3,
                "heads_matched": ["gauge analysis not computed"] * 4, "cos": [], "operator": ["heads analysis not computed"] * 4,
                "gamma": [], "entropy": ["heads analysis not computed"] * 2}
    for v in set(ROWS) - set(expected):  # views added later: each panel names the analysis it lacks
        expected[v] = [f"{views.get(v).panels[c].requires[0]} analysis not computed"
                       for c in range(len(views.get(v).panels)) if views.get(v).panels[c].requires
                       and views.get(v).panels[c].requires[0] != "weights"]
    assert notes == expected
    assert "not computed: heads" in fig(app, TOP).layout.title.text
    assert [e.analyses for e in app._entries] == [("weights",)] and "[weights]" in app._entries[0].label
    app.operator, app.family = "ov", "k_proj"  # placeholders follow the state without failing
    assert app.error == "" and "k_proj" in titles(app, COS)[0]


def test_a_model_without_the_weights_analysis_opens(tmp_path):
    src = next(e.path for e in cache.entries(ROOT / "cache") if e.source == "demo:minilm-l6"
               and e.analysis == "heads" and registry.is_current("heads", e.schema_version))
    copy_entry(src, tmp_path)
    app = build_app(roots=[tmp_path])
    assert [a.text for a in fig(app, COS).layout.annotations][4:] == ["weights analysis not computed"] * 4
    assert "not computed: weights" in fig(app, TOP).layout.title.text
    assert z(app, OP, 0).shape == (6, 6)
    click(app, OP, 0, 0, x=4, yv=1)
    assert app.pair == (1, 4) and "pair (1, 4)" in titles(app, OP)[1]


def test_no_cache_is_one_clear_error(tmp_path):
    with pytest.raises(GeomlibError, match="no cached datasets were found"):
        Dashboard(roots=[tmp_path])


def test_compute_box_reports_bad_sources_in_one_line(app):
    source, family = app.source, app.family
    app.export_to_link("gamma", "png")
    link = app._links.value
    app.compute("/no/such/model")
    msg = app._compute_msg.value
    assert "not an existing file" in msg and "geomlib-compute-error" in msg
    assert "\n" not in msg and "Traceback" not in msg and "nothing is cached" not in msg
    # the current model, its controls and the export's name stay as they were
    assert app.source == source and app._model.value == source and app.family == family
    assert app._links.value == link
    assert "download demo-smollm2-135m-gamma.png" in app._links.value
    assert not app.busy and not app._model.disabled and app._cancel.disabled  # unfrozen after the failure


def smollm2_only(root: Path) -> None:
    """A cache at ``root`` holding only the smollm2 demo's current entries (copied from the repository's)."""
    for e in cache.entries(ROOT / "cache"):
        if e.source == "demo:smollm2-135m" and registry.is_current(e.analysis, e.schema_version):
            copy_entry(e.path, root)


def _cache_files(root: Path) -> set:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_compute_can_be_cancelled_and_leaves_nothing_in_the_cache(tmp_path):
    smollm2_only(tmp_path)
    app = build_app(roots=[tmp_path])
    before = _cache_files(tmp_path)
    app.compute("demo:minilm-l6", wait=False)
    assert app.busy and app._model.disabled and not app._cancel.disabled
    time.sleep(4)  # well inside the compute (torch imported, the model being read)
    app.cancel()
    app._job.wait(60)
    assert not app._job.running()
    msg = app._compute_msg.value
    assert ">cancelled<" in msg and "\n" not in msg
    assert app.source == "demo:smollm2-135m" and not app.busy and not app._model.disabled
    assert _cache_files(tmp_path) == before  # nothing half-written, nothing of the cancelled model


def test_export_offers_a_download_link(app):
    data = app.export_to_link("gamma", "png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert "download" in app._links.value and "data:image/png;base64," in app._links.value
    csv = app.export_to_link("cos", "csv")
    assert csv.startswith(b"# geomlib") and b"identity" in csv


def test_viewing_cached_results_does_not_import_torch():
    code = ("import sys\nfrom pathlib import Path\nfrom geomlib.dashboard import build_app\n"
            f"app = build_app(roots=[Path({str(ROOT / 'cache')!r})])\napp.family = 'k_proj'\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.slow
def test_compute_box_computes_a_new_model_and_shows_it(tmp_path):
    # start from a cache holding only the smollm2 demo, then compute the MiniLM demo from its wheel
    smollm2_only(tmp_path)
    app = build_app(roots=[tmp_path])
    assert [v for _, v in app._model.options] == ["demo:smollm2-135m"]
    app.compute("demo:minilm-l6")
    assert app.error == "", app.error
    assert app.source == "demo:minilm-l6" and z(app, COS, 0).shape == (6, 6)
    assert "demo:minilm-l6" in [v for _, v in app._model.options]
    assert len(list(tmp_path.rglob("*.nc"))) == 2 * len(registry.defaults())  # every default analysis of both models


def _toy_panel(ds, sel):
    m = ds["attn_entropy"].mean("head").values if sel.head < 0 else ds["attn_entropy"].sel(head=sel.head).values
    return Panel(f"toy entropy · head {sel.head}", [go.Scatter(x=ds["layer"].values, y=m, showlegend=False)])


def test_a_view_registered_at_run_time_shows_in_the_dashboard():
    """A view is one declaration: nothing in the dashboard names it, yet it is drawn, follows, clicks, exports."""
    toy = ViewSpec("toy", "toy entropy by layer", (
        PanelSpec(_toy_panel, "toy", ("scatter",), reads=("attn_entropy",), requires=("heads",), depends=("head",),
                  click="depth", depth="x"),))
    views.register(toy)
    try:
        app = build_app(roots=DEMO_CACHE)
    finally:
        views.unregister("toy")
    assert list(app.views)[-1] == "toy" and app.figures["toy"].layout.title.text.endswith("toy entropy by layer")
    before = np.array(app.figures["toy"].data[0].y, dtype=float)
    seq = app.views["toy"].patch.get("seq")
    app.head = 4  # a declared dependency: rebuilt and patched
    assert not np.allclose(np.array(app.figures["toy"].data[0].y, dtype=float), before)
    assert app.views["toy"].patch["seq"] != seq and "head 4" in app.figures["toy"].layout.annotations[0].text
    seq = app.views["toy"].patch["seq"]
    app.family = "k_proj"  # not one: nothing sent to the toy view
    assert app.views["toy"].patch["seq"] == seq
    app.views["toy"].click = {"seq": 1.0, "curve": 0, "point": 2, "x": 11, "y": 0.5, "customdata": None}
    assert app.anchor == 11
    assert [s.x0 for s in app.figures["toy"].layout.shapes if s.type == "line"] == [11]  # the anchor line moved
    assert "toy" in app._view.options


def test_a_damaged_model_is_listed_but_does_not_stop_the_dashboard(tmp_path):
    """Every entry of one model flipped on disk: the dashboard starts on another model, lists the damaged one
    as damaged, and choosing it keeps the current model with a one-line error."""
    for e in cache.entries(ROOT / "cache"):
        copy_entry(e.path, tmp_path)
    for p in tmp_path.glob("demo-smollm2-135m-*/*.nc"):
        flip(p)
    app = build_app(roots=[tmp_path])
    assert app.source == "demo:minilm-l6" and app.error == ""
    labels = {e.source: e.label for e in app._entries}
    damaged = sorted({e.analysis for e in cache.entries(ROOT / "cache") if e.source == "demo:smollm2-135m"
                      and registry.is_current(e.analysis, e.schema_version)})
    assert len(damaged) >= 3
    assert labels["demo:smollm2-135m"] == f"demo:smollm2-135m — damaged: {', '.join(damaged)} (geomlib cache verify)"
    before = app.figures[ROWS[COS]].to_dict()
    app._model.value = "demo:smollm2-135m"
    assert app.source == "demo:minilm-l6" and app._model.value == "demo:minilm-l6"
    assert "is damaged" in app.error and "\n" not in app.error and "geomlib cache clean" in app.error
    assert app.figures[ROWS[COS]].to_dict() == before


def test_a_damaged_model_asked_for_by_name_opens_another_with_the_reason(tmp_path):
    for e in cache.entries(ROOT / "cache"):
        copy_entry(e.path, tmp_path)
    for p in tmp_path.glob("demo-smollm2-135m-*/*.nc"):
        flip(p)
    app = build_app("demo:smollm2-135m", roots=[tmp_path])
    assert app.source == "demo:minilm-l6"
    assert "is damaged" in app.error and "smollm2" in app.error
    for p in tmp_path.glob("demo-minilm-l6-*/*.nc"):
        flip(p)
    with pytest.raises(GeomlibError, match="no cached model could be opened .*geomlib cache verify"):
        build_app("demo:smollm2-135m", roots=[tmp_path])


def test_one_damaged_analysis_is_marked_where_it_would_show(tmp_path):
    for e in cache.entries(ROOT / "cache"):
        if e.source == "demo:minilm-l6":
            copy_entry(e.path, tmp_path)
    (gauge,) = tmp_path.glob("demo-minilm-l6-*/gauge-*.nc")
    flip(gauge)
    app = build_app(roots=[tmp_path])
    assert app.error == "" and "damaged: gauge (geomlib cache verify)" in app._entries[0].label
    assert "damaged cache entry: gauge" in fig(app, TOP).layout.title.text
    assert "not computed: gauge" not in fig(app, TOP).layout.title.text
    for v in GAUGE:
        notes = [a.text for a in app.figures[v].layout.annotations if a.text and "damaged" in a.text]
        assert notes and set(notes) == {"gauge cache entry damaged (geomlib cache verify)"}


def test_no_view_offers_cloud_sharing(app):
    for pv in app.views.values():
        cfg = pv.config
        assert cfg["displaylogo"] is False and cfg["showSendToCloud"] is False and cfg["showEditInChartStudio"] is False
        assert {"sendDataToCloud", "editInChartStudio"} <= set(cfg["modeBarButtonsToRemove"])
        assert "config" in pv.keys  # synced to the page, where plotly.js draws the modebar with it


def test_per_head_axis_follows_operator_and_metric(app):
    ya = "yaxis2"  # the per-head bars of the pair: the operator view's second panel
    assert fig(app, OP).layout[ya].title.text == "head_cos (qk)"
    app.operator = "ov"
    assert fig(app, OP).layout[ya].title.text == "head_cos (ov)"
    assert app.views["operator"].patch["relayout"][f"{ya}.title"] == {"text": "head_cos (ov)"}  # sent to the page
    app.op_metric = "pa_mean"
    assert fig(app, OP).layout[ya].title.text == "head_pa_mean (ov)"
    app.operator, app.op_metric = "qk", "cos"
    assert fig(app, OP).layout[ya].title.text == "head_cos (qk)"


def test_mean_over_heads_shows_the_mean_spectrum_and_says_so(app):
    app.head = -1
    label = dict((v, k) for k, v in app._head.options)[-1]
    assert label == "mean over heads"
    assert titles(app, OP)[2].startswith("mean over heads:")
    L, Lb = app.selection().resolved(app.dataset).pair
    sv = app.dataset["head_singvals"].sel(operator=app.operator, layer=L)
    np.testing.assert_allclose(y(app, OP, 2, 0), sv.mean("head").values, rtol=1e-9)  # layer L's mean spectrum
    app.head = 2
    assert titles(app, OP)[2].startswith("head 2:")


def test_model_change_clears_the_download_link(tmp_path):
    app = build_app(roots=DEMO_CACHE)
    app.export_to_link("gamma", "png")
    assert "demo-smollm2-135m-gamma.png" in app._links.value
    app.source = "demo:minilm-l6"
    assert app._links.value == ""
    app.export_to_link("gamma", "png")
    assert "demo-minilm-l6-gamma.png" in app._links.value


def test_busy_is_shown_while_a_change_is_applied_and_cleared_after(app):
    seen = []
    app.observe(lambda ch: seen.append((ch["new"], app._busy_label.value)), "busy")
    app.family = "k_proj"
    assert [b for b, _ in seen] == [True, False]
    assert "updating" in seen[0][1] and seen[1][1] == ""  # the page's label follows
    assert not app.busy and app._busy_label.value == ""
    seen.clear()
    app.source = "demo:minilm-l6"
    assert seen and seen[0][0] is True and seen[-1][0] is False and not app.busy
    app.source = "demo:smollm2-135m"
    app.family = "q_proj"


def _widgets(w):
    yield w
    for c in getattr(w, "children", ()):
        yield from _widgets(c)


def test_every_control_has_a_real_tooltip(app):
    import ipywidgets as W

    controls = [w for w in _widgets(app) if isinstance(w, (W.ValueWidget, W.Button))
                and not isinstance(w, (W.HTML, W.Label, W.Output)) and w is not app]
    assert len(controls) >= 13
    for w in controls:
        tip = w.tooltip
        assert tip and tip.strip() and tip != "null" and len(tip) > 15, (w.description, tip)
    # every widget with a label (ipywidgets writes an unset tooltip into the label's title as "null")
    for w in _widgets(app):
        if isinstance(w, (W.widgets.widget_description.DescriptionWidget, W.Button)):
            assert w.tooltip and w.tooltip != "null", w
        if isinstance(w, W.Dropdown) and w.description:  # shown on the label (ipywidgets 8 drops it otherwise)
            import html

            assert w.description_allow_html and f'title="{html.escape(w.tooltip)}"' in w.description
    for w in (app._operator, app._metric):  # each toggle button too
        assert len(w.tooltips) == len(w.options) and all(t and t != "null" for t in w.tooltips)
