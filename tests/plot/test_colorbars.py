"""Every heatmap of every view has a titled colour bar, in a strip of its own panel's column (no overlap)."""

from __future__ import annotations

import pytest

from geomlib.plot import views
from geomlib.plot.layout import build_figure, panels
from geomlib.plot.spec import Selection

from .test_views_gauge import gauge_ds


def _heatmap_panels(ds):
    for name, row in zip(views.names(), panels(ds, Selection())):
        for c, p in enumerate(row):
            for t in p.traces:
                if t.type == "heatmap" and not p.note:
                    yield name, c, row, p, t


@pytest.mark.parametrize("which", ["smol", "gauge"])
def test_every_heatmap_has_a_titled_colour_bar_in_its_own_column(which, request):
    ds = request.getfixturevalue("smol") if which == "smol" else gauge_ds()
    seen = set()
    for name, c, row, p, t in _heatmap_panels(ds):
        seen.add(name)
        assert t.showscale, (name, p.title)
        assert t.colorbar.title.text, (name, p.title)
        x0, x1 = p.x["domain"]
        # right of its panel's plot area, left of the next panel (whose axis labels sit in the gap)
        assert x1 < t.colorbar.x < x1 + 0.2 * (x1 - x0), (name, p.title)
        if c + 1 < len(row):
            nxt = row[c + 1].x.get("domain")
            assert nxt is None or t.colorbar.x < nxt[0]
    want = {"cos", "operator", "entropy", "matched", "heads_matched"} if which == "smol" else {"matched",
                                                                                              "heads_matched"}
    assert want <= seen


def test_stacked_views_keep_each_colour_bar_in_its_row(smol):
    fig, index = build_figure(smol, Selection())
    for r, row in enumerate(index):
        for c, ids in enumerate(row):
            for i in ids:
                t = fig.data[i]
                if t.type == "heatmap" and t.showscale:
                    y0, y1 = fig.get_subplot(r + 1, c + 1).yaxis.domain
                    assert y0 <= t.colorbar.y <= y1 and t.colorbar.len <= y1 - y0
