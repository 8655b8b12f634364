"""Dashboard widgets without a browser: set a trait or simulate a click, assert the figure changed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from plotly.callbacks import InputDeviceState, Points

from geomlib.dashboard import Dashboard, build_app
from geomlib.dataset import cache
from geomlib.errors import GeomlibError

ROOT = Path(__file__).resolve().parents[2]
DEMO_CACHE = [ROOT / "cache"]


@pytest.fixture(scope="module")
def app():
    return build_app(roots=DEMO_CACHE)


def z(app, r, c, k=0):
    return np.array(app.figure.data[app._index[r][c][k]].z, dtype=float)


def y(app, r, c, k=0):
    return np.array(app.figure.data[app._index[r][c][k]].y, dtype=float)


def click(app, r, c, k, x, yv, ind=0):
    trace = app.figure.data[app._index[r][c][k]]
    trace._dispatch_on_click(Points(point_inds=[ind], xs=[x], ys=[yv], trace_name=trace.name,
                                    trace_index=app._index[r][c][k]), InputDeviceState())


def test_opens_the_demo_with_every_view(app):
    assert app.source == "demo:smollm2-135m"
    assert app.anchor == 29 and app._anchor.max == 29
    assert len(app._index) == 4 and [len(r) for r in app._index] == [4, 4, 3, 2]
    assert z(app, 0, 0).shape == (30, 30) and z(app, 1, 0).shape == (30, 30) and z(app, 3, 0).shape == (30, 9)
    title = app.figure.layout.title.text
    assert "Q4_1 quantized" in title and "quantization noise" in title  # labelled, not hidden
    assert not [a for a in app.figure.layout.annotations if "not computed" in (a.text or "")]
    assert "llama" in app._info.value


def test_family_changes_the_weight_views(app):
    before, line = z(app, 0, 0), y(app, 0, 2, 2)
    app.family = "v_proj"
    assert not np.allclose(z(app, 0, 0), before, equal_nan=True)
    assert not np.allclose(y(app, 0, 2, 2), line, equal_nan=True)
    assert "v_proj" in app.figure.layout.annotations[0].text
    app.family = "q_proj"


def test_anchor_moves_every_marker(app):
    app.anchor = 7
    anchor_lines = [s for s in app.figure.layout.shapes if s.type == "line" and s.x0 == 7 and s.x1 == 7]
    assert len(anchor_lines) == 6  # every depth x-axis: cos, delta, adjacent line, operator, ‖γ‖, entropy profile
    rows = [s for s in app.figure.layout.shapes if s.type == "line" and s.y0 == 7 and s.y1 == 7]
    assert len(rows) == 3  # the anchor row of the three L x L heatmaps
    ring = [s for s in app.figure.layout.shapes if s.type == "circle" and s.visible is not False]
    sc = app.dataset["gamma_pca_scores"].sel(family="input_ln", layer=7)
    assert len(ring) == 1 and ring[0].x0 < float(sc.isel(pc=0)) < ring[0].x1
    assert app._anchor.value == 7  # the slider follows the state


def test_phase_shades_its_layers_and_filters_the_phase_bars(app):
    phases = app._phase.options[1:]
    assert len(phases) >= 2
    app.phase = phases[-1]
    bands = [s for s in app.figure.layout.shapes if s.type == "rect" and s.fillcolor and s.visible is not False]
    assert len(bands) >= 9  # the depth axes of four views, both axes of the L x L heatmaps, the phase bars
    k = len(phases) - 1  # the chosen phase's bar is shaded on the per-phase axis (a categorical x axis)
    xa = app.figure.data[app._index[0][3][0]].xaxis
    assert [s for s in bands if s.xref == xa and s.x0 == k - 0.5 and s.x1 == k + 0.5]
    app.phase = "all"
    assert not [s for s in app.figure.layout.shapes if s.type == "rect" and s.fillcolor and s.visible is not False]


def test_operator_head_and_metric_change_the_operator_view(app):
    base = z(app, 1, 0)
    app.operator = "ov"
    ov = z(app, 1, 0)
    assert not np.allclose(ov, base, equal_nan=True)
    app.head = 4
    assert not np.allclose(z(app, 1, 0), ov, equal_nan=True)
    app.op_metric = "pa_mean"
    assert "principal-angle" in app.figure.layout.annotations[4].text
    app.operator, app.head, app.op_metric = "qk", -1, "cos"


def test_clicking_an_operator_cell_opens_that_pairs_detail(app):
    bars = y(app, 1, 1)
    click(app, 1, 0, 0, x=12, yv=3)
    assert app.pair == (3, 12) and app.anchor == 12
    assert "pair (3, 12)" in app.figure.layout.annotations[5].text
    want = app.dataset["qk_cos"].sel(layer=3, layer_b=12).values
    np.testing.assert_allclose(y(app, 1, 1), want)
    assert not np.allclose(y(app, 1, 1), bars)
    assert "pair (3, 12)" in app.figure.layout.annotations[7].text  # sign agreement follows
    box = [s for s in app.figure.layout.shapes if s.type == "rect" and s.line.color == "black"]
    assert len(box) == 1 and (box[0].x0, box[0].y0) == (11.5, 2.5)  # the selected cell is outlined


def test_clicking_depth_axes_and_gamma_points_sets_the_anchor(app):
    click(app, 0, 2, 2, x=9, yv=0.0)  # adjacent raw line
    assert app.anchor == 9
    click(app, 3, 0, 0, x=2, yv=21)  # entropy heatmap row
    assert app.anchor == 21
    trace = app.figure.data[app._index[2][0][0]]  # first phase's γ points
    layer = int(trace.customdata[0])
    click(app, 2, 0, 0, x=trace.x[0], yv=trace.y[0], ind=0)
    assert app.anchor == layer


def test_switching_model_redraws_everything(app):
    app.source = "demo:minilm-l6"
    assert z(app, 0, 0).shape == (6, 6) and z(app, 3, 0).shape == (6, 12)
    assert app._anchor.max == 5 and app.anchor == 5
    assert "bert" in app.figure.layout.title.text and "quantized" not in app.figure.layout.title.text
    assert "gate_proj" not in app._family.options  # BERT has no gate
    app.source = "demo:smollm2-135m"
    assert z(app, 0, 0).shape == (30, 30)


def test_update_touches_only_what_changed(app):
    import json

    from plotly.utils import PlotlyJSONEncoder

    def snapshot(r, c):
        return [json.dumps(app.figure.data[i].to_plotly_json(), cls=PlotlyJSONEncoder) for i in app._index[r][c]]

    app.refresh(force=True)
    entropy, cos = snapshot(3, 0), snapshot(0, 0)
    shapes = [s.to_plotly_json() for s in app.figure.layout.shapes]
    app.anchor = 3
    # the anchor is an overlay: no trace is rewritten (plotly would redraw the whole figure), shapes move
    assert snapshot(3, 0) == entropy and snapshot(0, 0) == cos
    assert [s.to_plotly_json() for s in app.figure.layout.shapes] != shapes
    app.family = "up_proj"
    assert snapshot(0, 0) != cos and snapshot(3, 0) == entropy
    app.family = "q_proj"
    assert app.render_ms < 1000


def test_missing_analyses_are_labelled(tmp_path):
    # a cache holding only the weights analysis of the demo
    src = next(e.path for e in cache.entries(ROOT / "cache") if e.source == "demo:minilm-l6"
               and e.analysis == "weights")
    dest = tmp_path / src.parent.name
    dest.mkdir()
    (dest / src.name).write_bytes(src.read_bytes())
    app = build_app(roots=[tmp_path])
    notes = [a.text for a in app.figure.layout.annotations if a.text and "not computed" in a.text]
    assert any("heads analysis not computed" in n for n in notes)
    assert any("entropy not computed" in n for n in notes)
    assert "not computed: heads" in app.figure.layout.title.text


def test_no_cache_is_one_clear_error(tmp_path):
    with pytest.raises(GeomlibError, match="no cached datasets were found"):
        Dashboard(roots=[tmp_path])


def test_compute_box_reports_bad_sources_in_one_line(app):
    app.compute("/no/such/model")
    assert "not an existing file" in app.error and "\n" not in app.error
    assert not app.busy and not app._model.disabled  # controls unfrozen after the failure


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
    for e in cache.entries(ROOT / "cache"):
        if e.source == "demo:smollm2-135m":
            (tmp_path / e.path.parent.name).mkdir(exist_ok=True)
            (tmp_path / e.path.parent.name / e.path.name).write_bytes(e.path.read_bytes())
    app = build_app(roots=[tmp_path])
    assert [v for _, v in app._model.options] == ["demo:smollm2-135m"]
    app.compute("demo:minilm-l6")
    assert app.error == "", app.error
    assert app.source == "demo:minilm-l6" and z(app, 0, 0).shape == (6, 6)
    assert "demo:minilm-l6" in [v for _, v in app._model.options]
    assert len(list(tmp_path.rglob("*.nc"))) == 4
