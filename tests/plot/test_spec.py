"""The view declarations: trace skeletons, generic placeholders, the registry, a view added at test time."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import plotly.graph_objects as go
import pytest

from geomlib.plot import export, views
from geomlib.plot.layout import build_figure, panels, standalone
from geomlib.plot.names import VIEW_NAMES
from geomlib.plot.spec import CLICKS, FIELDS, Panel, PanelSpec, Selection, ViewSpec, build_panel

SELECTIONS = [Selection(), Selection(anchor=3, family="input_ln", phase="A", operator="ov", head=2,
                                     op_metric="pa_mean", pair=(1, 2)), Selection(family="v_proj", head=5, pair=(0, 3))]


def _only(ds, analysis: str, prefixes: tuple[str, ...]):
    """``ds`` as if only ``analysis`` were cached: the other analysis' variables dropped."""
    out = ds[[v for v in ds.data_vars if not v.startswith(prefixes)]]
    return out.assign_attrs(ds.attrs, analyses=analysis)


@pytest.mark.parametrize("sel", SELECTIONS)
def test_every_panel_returns_its_declared_trace_skeleton(smol, minilm, sel):
    # the dashboard updates traces in place and the placeholder copies the skeleton: builders must keep it
    weights_only = _only(minilm, "weights", ("head_", "attn"))
    for ds in (smol, minilm, weights_only):
        for v in views.names():
            spec = views.get(v)
            s = spec.selection(ds, sel)
            for p in spec.panels:
                assert [t.type for t in build_panel(p, ds, s).traces] == list(p.traces), (v, p.title)


def test_declarations_are_consistent():
    assert views.names() == VIEW_NAMES
    for v in views.names():
        spec = views.get(v)
        assert spec.name == v and spec.title and "\n" not in spec.title
        for p in spec.panels:
            assert p.click in (None, *CLICKS) and set(p.depends) <= set(FIELDS)
            assert p.reads and p.requires  # every built-in panel shows cached variables
    for i, v in enumerate(VIEW_NAMES):  # numbered in page order
        assert views.title(v).startswith(f"{i + 1} · ")
    with pytest.raises(ValueError, match="bad declaration"):
        PanelSpec(lambda ds, sel: None, "x", ("pie",))
    with pytest.raises(ValueError, match="bad declaration"):
        PanelSpec(lambda ds, sel: None, "x", ("bar",), click="drag")


def test_placeholders_say_what_is_missing(minilm):
    weights_only = _only(minilm, "weights", ("head_", "attn"))
    grid = panels(weights_only, Selection())
    ops = grid[views.names().index("operator")]
    assert [p.note for p in ops] == ["heads analysis not computed"] * 4
    assert all(p.depth_x and p.depth_y for p in ops[:1]) and not ops[0].pair_box  # axes as declared, no box
    heads_only = _only(minilm, "heads", ("cos", "aligned", "delta", "gamma", "scale", "resid", "spectrum",
                                         "scalar", "improve"))
    cos = panels(heads_only, Selection(), ("cos",))[0]
    assert [p.note for p in cos] == ["weights analysis not computed"] * 4
    # an optional part the analysis left out: the reason recorded in provenance is the note
    no_entropy = minilm.assign(attn_entropy=minilm["attn_entropy"] * np.nan).assign_attrs(
        heads_not_computed="attn_entropy: forward_pass=False")
    ent = panels(no_entropy, Selection(), ("entropy",))[0]
    assert [p.note for p in ent] == ["attn_entropy not computed: forward_pass=False"] * 2
    assert all(p.boundaries for p in ent)
    # an operator the model does not have
    qk_only = minilm.sel(operator=["qk"])
    op = panels(qk_only, Selection(operator="ov"), ("operator",))[0]
    assert all(p.note == "no operator 'ov' in this model" for p in op)
    assert not [p.note for p in panels(qk_only, Selection(operator="qk"), ("operator",))[0] if p.note]


def test_names_need_no_plotly():
    # the CLI's parser lists the views: that must not import plotly
    code = "import sys\nsys.modules['plotly'] = None\nfrom geomlib.plot.names import VIEW_NAMES\nprint(VIEW_NAMES)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "cos" in r.stdout, r.stderr


def _toy_panel(ds, sel):
    e = ds["attn_entropy"]
    v = e.mean("layer").values if sel.head < 0 else e.sel(head=sel.head).values
    return Panel(f"toy · head {sel.head}", [go.Bar(x=np.arange(len(v)), y=v, showlegend=False)])


TOY = ViewSpec("toy", "a toy view", (PanelSpec(_toy_panel, "toy", ("bar",), reads=("attn_entropy",),
                                                requires=("heads",), depends=("head",), click="depth"),))


@pytest.fixture
def toy():
    views.register(TOY)
    try:
        yield TOY
    finally:
        views.unregister("toy")


def test_a_view_declared_here_is_drawn_and_exported(smol, toy, tmp_path):
    assert views.names()[-1] == "toy" and views.title("toy") == f"{len(VIEW_NAMES) + 1} · a toy view"
    fig, index = build_figure(smol, Selection(head=2), ("toy",))
    assert fig.data[index[0][0][0]].type == "bar" and "toy · head 2" in [a.text for a in fig.layout.annotations]
    assert "a toy view" in " ".join(a.text or "" for a in standalone(smol, "toy", Selection()).layout.annotations)
    data = export.view_data(smol, "toy", Selection(head=2), narrow_head=True)
    assert list(data.data_vars) == ["attn_entropy"] and "head" not in data.dims
    np.testing.assert_allclose(data.attn_entropy.values, smol.attn_entropy.sel(head=2).values)
    weights_only = _only(smol, "weights", ("head_", "attn"))
    assert panels(weights_only, Selection(), ("toy",))[0][0].note == "heads analysis not computed"


def test_unregistered_views_are_gone():
    assert "toy" not in views.names()
    with pytest.raises(Exception, match="view 'toy'"):
        export.render(None, "toy", Selection(), "csv")
