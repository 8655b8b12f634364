"""The spectra view on the committed demo datasets: it builds, follows the anchor and family, clicks set the
anchor, placeholders when the analysis is missing, the verdict sentence."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from geomlib.arch.families import MATRIX_FAMILIES
from geomlib.plot import views
from geomlib.plot.layout import build_figure
from geomlib.plot.names import VIEW_NAMES
from geomlib.plot.spec import Selection, build_panel
from geomlib.plot.views.spectra import DEPTH_GROUPS

VIEW = views.get("spectra")
ANCHOR = views.get("anchor_spectra")


def _panels(ds, sel, view=VIEW):
    s = view.selection(ds, sel)
    return [build_panel(p, ds, s) for p in view.panels]


def test_the_view_is_registered_after_entropy():
    assert VIEW_NAMES[VIEW_NAMES.index("entropy") + 1:] == ("spectra", "anchor_spectra")
    assert all(p.info for v in (VIEW, ANCHOR) for p in v.panels) and VIEW.verdict and ANCHOR.verdict
    assert [p.click for p in VIEW.panels] == [None, "depth", "depth"]
    # only the anchor view's data follows the anchor (a small figure): the all-layers view does not
    assert "anchor" not in VIEW.depends and [p.depends for p in ANCHOR.panels] == [("family", "anchor")] * 2


@pytest.mark.parametrize("name", ["smol", "minilm"])
def test_it_builds_on_the_demo_caches(request, name):
    ds = request.getfixturevalue(name)
    assert "spectra" in ds.attrs["analyses"].split(",")
    n = ds.sizes["layer"]
    ps = _panels(ds, Selection(anchor=2, family="q_proj"))
    assert [p.note for p in ps] == ["", "", ""]
    for p, spec in zip(ps, VIEW.panels):
        assert len(p.traces) == len(spec.traces) and all(isinstance(t, go.Scatter) for t in p.traces)
    # one line trace per depth group, together every layer once, each at most ~49 log-spaced ranks
    groups = ps[0].traces
    assert len(groups) == DEPTH_GROUPS and all(t.mode == "lines" for t in groups)
    seen = np.concatenate([np.unique(np.asarray(t.customdata, dtype=float)) for t in groups if len(t.x)])
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))
    assert sum(len(t.x) for t in groups) <= n * 49
    assert groups[0].name.startswith(("layers 0–", "layer 0")) and groups[-1].name.endswith((f"–{n - 1}", f" {n - 1}"))
    # each layer's points are its singular values at those ranks
    s = ds["sigma"].sel(family="q_proj", layer=2).values
    t = next(t for t in groups if 2 in np.asarray(t.customdata))
    x, y, c = (np.asarray(v, dtype=float) for v in (t.x, t.y, t.customdata))
    mine = (c == 2) & np.isfinite(x) & np.isfinite(y)
    assert mine.sum() >= 10
    np.testing.assert_allclose(y[mine], s[x[mine].astype(int) - 1])
    # the anchor view: each family's whole spectrum of layer 2, and the ESD of q_proj with its fit
    fams = [f for f in MATRIX_FAMILIES if np.isfinite(ds["esd_alpha"].sel(family=f)).any()]
    lines, esd = _panels(ds, Selection(anchor=2, family="q_proj"), ANCHOR)
    assert lines.note == "" and esd.note == ""
    for t, f in zip(lines.traces, MATRIX_FAMILIES):
        want = ds["sigma"].sel(family=f, layer=2).values if f in fams else np.zeros(0)
        want = want[np.isfinite(want) & (want > 0)]
        x = np.asarray(t.x, dtype=int)  # log-spaced ranks (1-based) from the first to the last
        assert len(x) <= 49 and (not want.size or (x[0], x[-1]) == (1, want.size))
        np.testing.assert_allclose(t.y, want[x - 1], rtol=1e-6)
        assert t.line.width == (3 if f == "q_proj" else 1.2)
    hist, fit = esd.traces
    assert np.isfinite(hist.y).any() and len(fit.x) and esd.title.startswith("ESD of layer 2 q_proj: α = ")
    # α and stable rank: one trace per canonical family (empty where the model lacks it), then the null
    for p, var in ((ps[1], "esd_alpha"), (ps[2], "stable_rank")):
        by_name = {t.name: t for t in p.traces}
        for f in MATRIX_FAMILIES:
            t = by_name[f]
            if f in fams:
                np.testing.assert_allclose(t.y, ds[var].sel(family=f).values)
                assert t.showlegend
            else:
                assert len(t.y) == 0
        assert p.traces[-1].name == "Gaussian null · q_proj" and len(p.traces[-1].y) == 2


def test_anchor_and_family_rebuild_what_depends_on_them(smol):
    a = _panels(smol, Selection(anchor=3, family="k_proj"), ANCHOR)
    b = _panels(smol, Selection(anchor=7, family="k_proj"), ANCHOR)
    assert not np.array_equal(a[1].traces[0].y, b[1].traces[0].y)  # the ESD is the anchor layer's
    assert "layer 7" in b[1].title and "k_proj" in b[1].title and "layer 7" in b[0].title
    # the all-layers view does not follow the anchor: its cloud is not re-sent on every anchor move
    assert [p.depends for p in VIEW.panels] == [("family",), ("family",), ("family",)]
    a, b = (_panels(smol, Selection(anchor=k, family="k_proj")) for k in (3, 7))
    for ta, tb in zip(a[0].traces, b[0].traces):
        np.testing.assert_array_equal(ta.y, tb.y)


def test_a_norm_gain_selection_shows_a_matrix_family(smol):
    s = VIEW.selection(smol, Selection(family="input_ln"))
    assert s.family == "q_proj"
    assert all(p.note == "" for p in _panels(smol, Selection(family="input_ln")))


def test_placeholders_when_the_analysis_is_missing(smol):
    ds = smol.drop_vars([v for v in smol.data_vars if smol[v].dims and "sv_rank" in smol[v].dims or
                         v.startswith(("esd_", "stable_rank", "spectral_norm"))])
    ds.attrs["analyses"] = ",".join(a for a in smol.attrs["analyses"].split(",") if a != "spectra")
    ps = _panels(ds, Selection())
    assert [p.note for p in ps] == ["spectra analysis not computed"] * 3
    assert [p.note for p in _panels(ds, Selection(), ANCHOR)] == ["spectra analysis not computed"] * 2
    assert ANCHOR.verdict(ds, ANCHOR.selection(ds, Selection())) == ""
    assert [len(p.traces) for p in ps] == [len(s.traces) for s in VIEW.panels]
    assert VIEW.verdict(ds, VIEW.selection(ds, Selection())) == ""
    fig, _ = build_figure(ds, Selection(), ("spectra",))
    assert len(fig.data) == sum(len(s.traces) for s in VIEW.panels)


def test_the_verdict_is_one_true_sentence(smol):
    sel = VIEW.selection(smol, Selection(family="q_proj"))
    v = VIEW.verdict(smol, sel)
    a = smol["esd_alpha"].sel(family="q_proj").values
    lo, hi = int(np.nanargmin(a)), int(np.nanargmax(a))
    assert v.startswith(f"q_proj: α from {a[lo]:.1f} (layer {lo}) to {a[hi]:.1f} (layer {hi}) over depth")
    assert f"{int((a < 6).sum())} of {len(a)} layers heavy-tailed (α < 6)" in v and v.count(".") >= 1
    phase = str(smol["phase"].values[-1])
    pv = VIEW.verdict(smol, VIEW.selection(smol, Selection(family="q_proj", phase=phase)))
    assert pv.startswith(f"q_proj, phase {phase} (layers ")


def test_the_figure_builds_with_the_anchor_on_the_depth_panels(minilm):
    fig, index = build_figure(minilm, Selection(anchor=1, family="v_proj"), ("spectra",))
    assert [len(i) for i in index[0]] == [len(s.traces) for s in VIEW.panels]
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"


def test_the_anchor_verdict_is_the_anchor_layers(smol):
    v = ANCHOR.verdict_for(smol, Selection(anchor=5, family="k_proj"))
    al = smol["esd_alpha"].sel(layer=5)
    assert v.startswith(f"layer 5: k_proj α = {float(al.sel(family='k_proj')):.2f} against ")
    fams = [f for f in MATRIX_FAMILIES if np.isfinite(float(al.sel(family=f)))]
    heavy = [f for f in fams if float(al.sel(family=f)) < 6]
    assert f"heavy-tailed (α < 6) in {len(heavy)} of {len(fams)} families" in v
    assert ANCHOR.verdict_for(smol, Selection(anchor=6, family="k_proj")) != v or len(set(fams)) == 0
