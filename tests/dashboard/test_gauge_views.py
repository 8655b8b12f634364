"""The gauge-aware views in the dashboard: set a trait or click, assert the figure changed (no browser).

The dashboard opens the committed MiniLM demo cache (weights, heads and gauge, every pair matched).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from geomlib.dashboard import build_app
from geomlib.plot import views
from tests.factories.heatmaps import close

ROOT = Path(__file__).resolve().parents[2]
DEMO_CACHE = [ROOT / "cache"]
SOURCE = "demo:minilm-l6"


@pytest.fixture(scope="module")
def app():
    """The dashboard on the committed MiniLM demo cache, which holds the gauge analysis (all pairs)."""
    return build_app(SOURCE, roots=DEMO_CACHE)


def trace(app, view, c, k=0):
    return app.figures[view].data[app._index[view][c][k]]


def z(app, view, c, k=0):
    return np.array(trace(app, view, c, k).z, dtype=float)


def y(app, view, c, k=0):
    return np.array(trace(app, view, c, k).y, dtype=float)


def titles(app, view):
    return [a.text for a in app.figures[view].layout.annotations][: len(views.get(view).panels)]


def click(app, view, c, x, yv):
    app.views[view].click = {"seq": time.perf_counter(), "curve": app._index[view][c][0], "point": 0, "x": x,
                             "y": yv, "customdata": None}


def test_the_gauge_views_lead_and_show_the_data(app):
    ds = app.dataset
    assert list(app.views)[:2] == ["matched", "heads_matched"]
    assert not [a.text for v in ("matched", "heads_matched") for a in app.figures[v].layout.annotations
                if "not computed" in (a.text or "") or "not in the cached" in (a.text or "")]
    close(z(app, "matched", 0), ds.mlp_matched_cos.sel(mlp_view="mean").values)
    close(z(app, "matched", 1), ds.mlp_same_index_cos.sel(mlp_view="mean").values)
    close(z(app, "heads_matched", 0), ds.head_matched_cos.sel(operator="qk").values)
    close(z(app, "heads_matched", 2), ds.composition_mean.sel(composition="q").values)
    assert trace(app, "matched", 0).showscale and trace(app, "heads_matched", 3).showscale  # colour bars
    assert "index-paired (gauge-confounded)" in titles(app, "matched")[1]


def test_family_picks_the_mlp_view_and_the_composition_kind(app):
    ds = app.dataset
    before, comp = z(app, "matched", 0), z(app, "heads_matched", 2)
    seq = app.views["matched"].patch.get("seq")
    app.family = "down_proj"
    assert not np.allclose(z(app, "matched", 0), before, equal_nan=True)
    close(z(app, "matched", 0), ds.mlp_matched_cos.sel(mlp_view="down").values)
    close(y(app, "matched", 2, 2), [ds.mlp_matched_cos.sel(mlp_view="down", layer=L,
                                                                                layer_b=L + 1).item()
                                                          for L in range(ds.sizes["layer"] - 1)])
    assert "down" in titles(app, "matched")[0] and app.views["matched"].patch["seq"] != seq
    # QK with a family other than q_proj: K-composition
    assert not np.allclose(z(app, "heads_matched", 2), comp, equal_nan=True)
    close(z(app, "heads_matched", 2), ds.composition_mean.sel(composition="k").values)
    assert "K-composition" in titles(app, "heads_matched")[2]
    app.family = "k_proj"  # no MLP family: the mean the matching maximised
    close(z(app, "matched", 0), ds.mlp_matched_cos.sel(mlp_view="mean").values)
    seqs = {v: app.views[v].patch["seq"] for v in ("matched", "heads_matched")}
    app.family = "v_proj"  # the same mlp_view and composition kind: nothing is sent to the gauge views
    assert {v: app.views[v].patch["seq"] for v in seqs} == seqs
    app.family = "q_proj"


def test_operator_changes_the_matched_heads_and_the_composition(app):
    ds = app.dataset
    base, comp = z(app, "heads_matched", 0), z(app, "heads_matched", 2)
    matched_seq = app.views["matched"].patch.get("seq")
    app.operator = "ov"
    assert not np.allclose(z(app, "heads_matched", 0), base, equal_nan=True)
    close(z(app, "heads_matched", 0), ds.head_matched_cos.sel(operator="ov").values)
    close(z(app, "heads_matched", 2), ds.composition_mean.sel(composition="v").values)
    assert not np.allclose(z(app, "heads_matched", 2), comp, equal_nan=True)
    assert "OV" in titles(app, "heads_matched")[0] and "V-composition" in titles(app, "heads_matched")[2]
    assert app.views["matched"].patch.get("seq") == matched_seq  # the MLP view does not follow the operator
    app.operator = "qk"


def test_clicking_a_matched_cell_opens_that_pair_in_the_heads_view(app):
    ds = app.dataset
    bars, comp = y(app, "heads_matched", 1), z(app, "heads_matched", 3)
    click(app, "matched", 0, x=3, yv=1)
    assert app.pair == (1, 3) and app.anchor == 3
    np.testing.assert_allclose(y(app, "heads_matched", 1), ds.head_matched.sel(operator="qk", layer=1, layer_b=3))
    assert not np.allclose(y(app, "heads_matched", 1), bars)
    np.testing.assert_allclose(z(app, "heads_matched", 3),
                               ds.composition_score.sel(composition="q", layer=1, layer_b=3).values)
    assert not np.allclose(z(app, "heads_matched", 3), comp, equal_nan=True)
    assert "pair (1, 3)" in titles(app, "heads_matched")[1] and "1 → 3" in titles(app, "heads_matched")[3]
    boxes = [s for v in ("matched", "heads_matched") for s in app.figures[v].layout.shapes
             if s.type == "rect" and s.line.color == "black"]
    assert len(boxes) == 4 and {(s.x0, s.y0) for s in boxes} == {(2.5, 0.5)}  # every gauge L x L heatmap
    click(app, "heads_matched", 2, x=4, yv=2)  # the composition heatmap sets the pair too
    assert app.pair == (2, 4) and "2 → 4" in titles(app, "heads_matched")[3]


def test_head_highlights_its_bar_and_touches_only_the_pair_panel(app):
    seq = app.views["matched"].patch.get("seq")
    app.head = 2
    colors = list(trace(app, "heads_matched", 1).marker.color)
    assert colors[2] == "#ff7f0e" and colors.count("#ff7f0e") == 1
    assert app.views["matched"].patch.get("seq") == seq
    app.head = -1


def test_the_adjacent_line_sets_the_anchor(app):
    click(app, "matched", 2, x=2, yv=0.0)
    assert app.anchor == 2
    lines = [s for s in app.figures["matched"].layout.shapes if s.type == "line" and s.x0 == 2 and s.x1 == 2]
    assert len(lines) == 3  # both heatmaps and the line panel


def test_export_from_the_dashboard(app):
    csv = app.export_to_link("heads_matched", "csv")
    assert csv.startswith(b"# geomlib") and b"composition_score" in csv and b"view heads_matched" in csv
