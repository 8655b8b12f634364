"""Per-panel legends (dashboard figure and exports), per-panel help behind the ℹ, the operator spectra's mean."""

from __future__ import annotations

import html

import numpy as np
import pytest

from geomlib.plot import legends, views
from geomlib.plot.layout import build_figure, panel_title, panels, standalone
from geomlib.plot.spec import Selection, build_panel
from geomlib.plot.views.operator import pair_spectra_panel, rescale_fit


def _legend_panels(fig, index):
    """(subplot number, trace ids) of every panel whose traces sit in a legend."""
    out = []
    for r, row in enumerate(index):
        for c, ids in enumerate(row):
            if any(fig.data[i].showlegend for i in ids):
                out.append((r * len(row) + c + 1, ids))
    return out


#: the views whose multi-trace panels must have a legend; any other registered view (added by another
#: module) is only checked for where the legends it has sit
OURS = ("matched", "heads_matched", "cos", "operator", "gamma", "entropy")


def _check_legends(fig, grid, require: bool = True):
    bars = [(t.colorbar.x, t.colorbar.y, t.colorbar.len) for t in fig.data if t.type == "heatmap" and t.showscale]
    seen = 0
    for k, panel in enumerate(p for row in grid for p in row):
        idx = k + 1
        sfx = "" if idx == 1 else str(idx)
        traces = [t for t in fig.data if (t.xaxis or "x") == "x" + sfx]
        named = [t for t in traces if t.showlegend]
        kinds = [t.type for t in panel.traces]
        if kinds.count("heatmap") == len(kinds):
            assert not named, panel.title  # heatmaps: colour bars, no legend
            continue
        if len(kinds) < 2:
            assert not named, panel.title  # a single trace needs no legend
            continue
        if panel.note or not (require or named):
            continue
        seen += 1
        assert len(named) >= 2, panel.title
        lid = legends.legend_for(idx)
        assert {t.legend for t in named} == {lid}, panel.title
        assert all(t.name and t.name.strip() for t in named), panel.title
        leg = fig.layout[lid]
        x0, x1 = fig.layout["xaxis" + sfx].domain
        y0, y1 = fig.layout["yaxis" + sfx].domain
        assert x0 <= leg.x <= x1 and y0 <= leg.y <= y1, (panel.title, leg.x, (x0, x1))
        # the legend grows away from the panel's edge it is anchored to: into the panel, never into a
        # colour bar (those sit in their own panels' strips, outside every x domain)
        assert (leg.xanchor == "right") == (leg.x > (x0 + x1) / 2)
        for bx, by, blen in bars:  # a colour bar in this panel's box (another row's may share its x range)
            assert not (x0 <= bx <= x1 and by - blen / 2 < y1 and by + blen / 2 > y0), panel.title
        assert leg.font.size <= 10 and "rgba" in leg.bgcolor
    return seen


def test_every_multi_trace_panel_of_every_view_has_its_own_legend(smol):
    total = 0
    for name in views.names():
        grid = panels(smol, Selection(), (name,))
        fig, _ = build_figure(smol, Selection(), (name,), grid=grid)
        total += _check_legends(fig, grid, name in OURS)
        assert fig.layout.showlegend is (bool(legends.ids(fig)))
    assert total >= 7  # adjacent vs null (2), per-phase bars, per-head bars (2), spectra, γ explained


def test_legend_names_say_what_each_trace_is(smol):
    names = {t.name for v in OURS for p in panels(smol, Selection(), (v,))[0] for t in p.traces
             if t.showlegend}
    assert {"adjacent matched cos", "null mean", "rotation null ± 2σ", "adjacent aligned cos",
            "random-head null ± 2σ", "explained variance", "mean over heads"} <= names


@pytest.mark.parametrize("width", [None, "column", "page"])
def test_exports_keep_the_legends_inside_their_panels(smol, width):
    for name in views.names():
        fig = standalone(smol, name, Selection(), width)
        row = panels(smol, Selection(), (name,))[0]
        cols = 2 if width == "column" and len(row) > 2 else len(row)
        grid = [row[k:k + cols] for k in range(0, len(row), cols)]
        _check_legends(fig, grid, name in OURS)
        if width:
            assert all(fig.layout[k].font.size < 8 for k in legends.ids(fig))


def test_stacked_views_give_each_panel_its_own_legend(smol):
    fig, index = build_figure(smol, Selection())
    ids = [fig.data[i].legend for _, tr in _legend_panels(fig, index) for i in tr if fig.data[i].showlegend]
    per_panel = [{fig.data[i].legend for i in tr if fig.data[i].showlegend} for _, tr in _legend_panels(fig, index)]
    assert all(len(s) == 1 for s in per_panel) and len({next(iter(s)) for s in per_panel}) == len(per_panel)
    assert None not in ids


def test_every_panel_has_help_of_three_parts():
    for name in views.names():  # every registered view, those added by other modules too
        for p in views.get(name).panels:
            assert p.info.strip() and p.info.count(".") >= 2, (name, p.title)
    for name in ("matched", "heads_matched", "cos", "operator", "gamma", "entropy"):
        for p in views.get(name).panels:  # the third part: its null, or why there is none
            assert "null" in p.info.lower(), (name, p.title)


def test_info_titles_in_the_dashboard_figure_and_none_in_exports(smol):
    for name in views.names():
        grid = panels(smol, Selection(), (name,))
        fig, _ = build_figure(smol, Selection(), (name,), grid=grid, info=True)
        titles = [a for a in fig.layout.annotations if a.yanchor == "bottom" and a.xref == "paper"]
        assert len(titles) == len(grid[0])
        for a, p in zip(titles, grid[0]):
            assert a.text == p.title + " ℹ" and a.hovertext, (name, p.title)
            assert html.unescape(a.hovertext.replace("<br>", " ")) == p.info  # plain text, escaped
            assert all(len(html.unescape(line)) <= 90 for line in a.hovertext.split("<br>"))
            assert a.hoverlabel.bgcolor == "white" and a.hoverlabel.font.size == 12
        plain, _ = build_figure(smol, Selection(), (name,), grid=grid)
        assert not any(a.hovertext for a in plain.layout.annotations)
        for width in (None, "column"):
            exp = standalone(smol, name, Selection(), width)
            assert not any(a.hovertext or "ℹ" in (a.text or "") for a in exp.layout.annotations), name


def test_panel_title_helper(smol):
    p = panels(smol, Selection(), ("cos",))[0][0]
    assert panel_title(p) == {"text": p.title}
    on = panel_title(p, info=True)
    assert on["text"].endswith(" ℹ") and on["hovertext"].startswith("Frobenius cosine")
    assert set(on) == {"text", "hovertext", "hoverlabel"}


def test_operator_spectra_show_the_mean_over_heads(smol):
    spec = views.get("operator")
    sel = spec.selection(smol, Selection(pair=(3, 4)))
    mean = build_panel(spec.panels[2], smol, sel)
    sv = smol.head_singvals.sel(operator="qk")
    want_a, want_b = sv.sel(layer=3).mean("head").values, sv.sel(layer=4).mean("head").values
    np.testing.assert_allclose(np.asarray(mean.traces[0].y, dtype=float), want_a)
    T, r = rescale_fit(want_a, want_b)
    np.testing.assert_allclose(np.asarray(mean.traces[1].y, dtype=float), T * want_b)
    assert "mean over heads" in mean.title and f"T={T:.3g}" in mean.title and f"resid={r:.3f}" in mean.title
    assert not np.allclose(want_a, sv.sel(layer=3, head=0).values)  # not head 0 any more
    one = pair_spectra_panel(smol, spec.selection(smol, Selection(pair=(3, 4), head=2)))
    np.testing.assert_allclose(np.asarray(one.traces[0].y, dtype=float), sv.sel(layer=3, head=2).values)
    assert "head 2" in one.title and "mean" not in one.title
    assert f"T={float(smol.head_rescale_T.sel(operator='qk', layer=3, layer_b=4, head=2)):.3g}" in one.title


def test_rescale_fit_of_proportional_spectra():
    s = np.array([4.0, 2.0, 1.0])
    T, r = rescale_fit(2 * s, s)
    assert T == pytest.approx(2) and r == pytest.approx(0, abs=1e-12)
    assert np.isnan(rescale_fit(s, np.zeros(3))[0])


def test_symmetric_range_is_gone():
    from geomlib.plot import traces

    assert not hasattr(traces, "symmetric_range")
