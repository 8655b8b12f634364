"""What keeps a change fast, without a browser: the per-model panel memo, the order views are sent in, the
panels built ahead while the kernel is idle, and figures that catch up when they are read."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from geomlib.dashboard import build_app, prefetch
from geomlib.dashboard import patches as patches_mod
from geomlib.dashboard.plotview import PlotView

ROOT = Path(__file__).resolve().parents[2]
DEMO_CACHE = [ROOT / "cache"]
SMOL = "demo:smollm2-135m"


@pytest.fixture
def app():
    return build_app(SMOL, roots=DEMO_CACHE)


@pytest.fixture
def built(monkeypatch):
    """Counts the panels actually built (memo misses): a list of (panel title, family) per build."""
    calls = []
    real = patches_mod.build_panel

    def counting(panel, ds, sel):
        calls.append((panel.title, sel.family))
        return real(panel, ds, sel)

    monkeypatch.setattr(patches_mod, "build_panel", counting)
    return calls


@pytest.fixture
def sent(monkeypatch):
    """The order the browser is sent things in: ("overlays" | "patch", view)."""
    log = []
    real_send, real_overlays = PlotView.send, PlotView.set_overlays

    def send(self, traces, relayout):
        if traces or relayout:
            log.append(("patch", self.name))
        return real_send(self, traces, relayout)

    def set_overlays(self, shapes):
        log.append(("overlays", self.name))
        return real_overlays(self, shapes)

    monkeypatch.setattr(PlotView, "send", send)
    monkeypatch.setattr(PlotView, "set_overlays", set_overlays)
    return log


def test_a_family_shown_before_is_not_rebuilt(app, built):
    app.family = "k_proj"
    first = len(built)
    assert first and {f for _, f in built} >= {"k_proj"}
    app.family = "q_proj"
    app.family = "k_proj"
    assert len(built) == first, built[first:]  # q_proj's and k_proj's panels came from the memo
    z = np.array(app.figures["cos"].data[app._index["cos"][0][0]].z, dtype=float)
    want = app.dataset["cos"].sel(family="k_proj").values
    np.testing.assert_allclose(z[np.isfinite(z)], want[np.isfinite(z)], rtol=1e-12)


def test_a_forced_refresh_rebuilds_and_the_memo_is_per_model(app, built):
    app.refresh(force=True)
    n = sum(len(spec.panels) for spec in app._specs.values())
    assert len(built) == n
    built.clear()
    app.source = "demo:minilm-l6"
    assert len(built) == n  # another model: nothing of the first one's memo is used
    assert all(key[0] in app._specs for key in app._memo)


def test_the_memo_is_bounded(app, monkeypatch):
    monkeypatch.setattr(patches_mod, "MEMO_PANELS", 6)
    for a in range(12):
        app.anchor = a
    assert len(app._memo) <= 6
    assert set(app._json) == {id(p) for p in app._memo.values()}  # no JSON kept for a panel forgotten


def test_overlay_only_views_go_first_then_the_most_visible(app, sent):
    app.views["spectra"].in_view = 1.0
    for v in app.views:
        if v != "spectra":
            app.views[v].in_view = 0.0
    app.family = "k_proj"
    patches = [v for kind, v in sent if kind == "patch"]
    assert patches[0] == "spectra" and "cos" in patches  # the view in the window is sent before cos above it
    sent.clear()
    app.anchor = 3  # the anchor lines move everywhere; only the anchor layer's own spectra are rebuilt
    order = [v for _, v in sent]
    assert order.index("anchor_spectra") > max(order.index(v) for v in ("cos", "matched", "spectra"))


def test_without_an_event_loop_nothing_is_built_ahead(app, built):
    app.family = "k_proj"
    n = len(built)
    assert app._prefetch_handle is None
    assert len(built) == n


def test_idle_kernel_builds_the_next_family_and_anchor_ahead(monkeypatch, built):
    monkeypatch.setattr(prefetch, "START_S", 0.0)
    monkeypatch.setattr(prefetch, "STEP_S", 0.0)

    async def session():
        app = build_app(SMOL, roots=DEMO_CACHE)  # built inside a running loop, as in a kernel
        app.anchor = 10
        for _ in range(5000):  # each turn of the loop builds one panel
            await asyncio.sleep(0)
            if app._prefetch_handle is None:
                return app
        raise AssertionError("prefetching did not finish")

    app = asyncio.run(session())
    # from (anchor 10, q_proj): the arrow and page keys' anchors, every other family, the other operator,
    # metric and every head were built while idle
    built.clear()
    app.anchor = 11
    app.operator = "ov"  # no panel of the operator views follows the anchor
    assert built == []
    # another family: its panels were built for anchor 10 and operator qk; only those that also follow the
    # anchor (the anchor layer's spectra) or read the operator (composition) are new
    app.family = "v_proj"
    assert built and {t for t, _ in built} <= {"ESD of the anchor layer", "singular values of the anchor layer",
                                               "composition (mean over head pairs)", "composition of the pair's heads"}
    assert len(app._memo) <= prefetch.MEMO_PANELS


def test_only_views_in_the_window_are_built_ahead(monkeypatch):
    monkeypatch.setattr(prefetch, "START_S", 0.0)
    monkeypatch.setattr(prefetch, "STEP_S", 0.0)

    monkeypatch.setattr(patches_mod, "DEFER_S", 0.0)

    async def session():
        app = build_app(SMOL, roots=DEMO_CACHE)
        for v in app.views:
            app.views[v].in_view = 0.6 if v == "cos" else 0.0  # as the browser reports them
        app.anchor = 10
        for _ in range(5000):
            await asyncio.sleep(0)
            if app._prefetch_handle is None and app._later_handle is None:
                return app
        raise AssertionError("prefetching did not finish")

    app = asyncio.run(session())
    views_built = {v for v, _, _ in app._memo}
    families = {key[0] for v, c, key in app._memo if v == "cos"}
    assert families == set(app._family.options)  # every family of the view in the window
    assert views_built == set(app._specs)  # the others hold only what is shown now
    # the anchor spectra are out of the window: only the anchors shown (the first, 29, then 10), no neighbours
    assert {key[1] for v, c, key in app._memo if v == "anchor_spectra"} == {29, 10}


def test_views_out_of_sight_are_rebuilt_a_moment_later(monkeypatch, sent):
    """In a kernel, a change rebuilds and sends the views near the window first; a view far from it waits
    (DEFER_S) unless its overlays move, and reading the figures catches them up at once."""
    monkeypatch.setattr(patches_mod, "DEFER_S", 0.0)

    async def session():
        app = build_app(SMOL, roots=DEMO_CACHE)
        for v in app.views:  # as the browser reports them: cos in the window, heads_matched just out of it
            app.views[v].in_view = 0.5 if v == "cos" else 0.0
            app.views[v].near = v in ("cos", "heads_matched")
        sent.clear()
        app.family = "k_proj"
        now = [v for kind, v in sent if kind == "patch"]
        waiting = set(app._later)
        assert app._later_handle is not None
        for _ in range(100):  # a few turns of the event loop
            await asyncio.sleep(0)
            if app._later_handle is None:
                break
        later = [v for kind, v in sent if kind == "patch"][len(now):]
        assert not app._later
        sent.clear()
        app.anchor = 3  # the anchor lines move at once in every view, in sight or not
        moved = [v for kind, v in sent if kind == "overlays"]
        put_off = set(app._later)
        app.family = "v_proj"
        assert "spectra" in app._later
        titles = {v: app.figures[v].layout.annotations[0].text for v in ("cos", "spectra")}  # caught up on read
        assert not app._later
        return now, waiting, later, moved, put_off, titles

    now, waiting, later, moved, put_off, titles = asyncio.run(session())
    assert now == ["cos", "heads_matched"]  # near views go at once, the one in the window first
    assert sorted(later) == sorted(waiting) and {"spectra", "anchor_spectra"} <= waiting
    assert {"cos", "matched", "spectra", "entropy"} <= set(moved)
    assert put_off == {"anchor_spectra"}  # its data follows the anchor; it has no anchor line to move
    assert all("v_proj" in t for t in titles.values()), titles


def test_view_selections_are_resolved_once_per_model(app, monkeypatch):
    spec = app._specs["spectra"]
    calls = []
    real = type(spec).selection

    def counting(self, ds, sel):
        calls.append(self.name)
        return real(self, ds, sel)

    monkeypatch.setattr(type(spec), "selection", counting)
    app.family = "k_proj"
    first = len(calls)
    assert first == len(app._specs)  # one per view: the refresh, the verdicts and prefetching share it
    app.family = "q_proj"
    app.family = "k_proj"
    assert len(calls) == first  # both were resolved before (q_proj when the figures were built)
    sel = app.selection()
    assert all(app._view_selection(v, sel) == real(s, app.dataset, sel) for v, s in app._specs.items())
