"""Compare mode and the training-dynamics view, without a browser: set a trait, assert the figure followed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from geomlib.dashboard import build_app
from geomlib.dashboard.data import CHECKPOINT_SEP, checkpoint_choices, open_any, open_sweep, sweep_entries
from geomlib.dashboard.modes import CompareMode, TrainingMode
from geomlib.errors import GeomlibError
from geomlib.plot import training

ROOT = Path(__file__).resolve().parents[2]
DEMO = [ROOT / "cache"]
SWEEP = "demo-tiny-llama"
S200, S400 = (f"sweep:{SWEEP}{CHECKPOINT_SEP}step {k}" for k in (200, 400))


def heat(pv, k: int) -> np.ndarray:
    """Trace ``k`` of what a PlotView sent to the page, as numbers (None -> NaN)."""
    return np.array([[np.nan if v is None else v for v in row] for row in pv.figure["data"][k]["z"]], dtype=float)


@pytest.fixture(scope="module")
def choices():
    from geomlib.dashboard.data import catalog

    return [(e.label, e.source) for e in catalog(DEMO) if e.analyses] + checkpoint_choices(DEMO)


def test_the_demo_sweep_is_offered_checkpoint_by_checkpoint(choices):
    assert SWEEP in sweep_entries(DEMO)
    keys = [k for _, k in choices]
    steps = [int(s) for s in open_sweep(SWEEP, DEMO)["step"].values]
    assert [k for k in keys if k.startswith("sweep:")] == [f"sweep:{SWEEP}{CHECKPOINT_SEP}step {s}" for s in steps]
    one = open_any(S400, DEMO)
    full = open_sweep(SWEEP, DEMO)
    np.testing.assert_array_equal(one["mlp_matched_cos"].values,
                                  full["mlp_matched_cos"].sel(checkpoint="step 400").values)
    assert one.attrs["source"] == S400 and "checkpoint" not in one.dims
    with pytest.raises(GeomlibError, match="no checkpoint 'step 7'"):
        open_any(f"sweep:{SWEEP}{CHECKPOINT_SEP}step 7", DEMO)


def test_compare_shows_a_b_and_their_difference(choices):
    c = CompareMode(choices, DEMO, a=S200, b=S400)
    assert (c.var, c.pick) == ("mlp_matched_cos", "mean")
    A, B = (open_any(k, DEMO)["mlp_matched_cos"].sel(mlp_view="mean").values for k in (S200, S400))
    np.testing.assert_allclose(heat(c.plot, 0), A, equal_nan=True)
    np.testing.assert_allclose(heat(c.plot, 1), B, equal_nan=True)
    np.testing.assert_allclose(heat(c.plot, 2), A - B, atol=1e-12, equal_nan=True)
    assert "differ by mean |A − B|" in c.verdict.value
    # another variable and its picked coordinate: the figure follows
    c.var = "cos"
    assert c.pick == "q_proj" and "q_proj" in c._pick.options and "pre_ffn_ln" not in c._pick.options
    c.pick = "down_proj"
    D = open_any(S400, DEMO)["cos"].sel(family="down_proj").values
    np.testing.assert_allclose(heat(c.plot, 1), D, equal_nan=True)
    assert c.render_ms > 0 and c.error == ""


def test_a_checkpoint_against_itself_is_identical(choices):
    c = CompareMode(choices, DEMO, a=S400, b=S400)
    assert c.b != c.a  # B never defaults to A
    c.b = S400
    assert np.nanmax(np.abs(heat(c.plot, 2))) == 0
    assert "identical in A and B" in c.verdict.value


def test_different_depths_show_side_by_side_without_a_difference(choices):
    c = CompareMode(choices, DEMO, a="demo:smollm2-135m", b=S400)
    assert heat(c.plot, 0).shape == (30, 30) and heat(c.plot, 1).shape == (6, 6)
    assert np.isnan(heat(c.plot, 2)).all()
    assert "A has 30 layers, B 6" in c.verdict.value and "no cell-by-cell difference" in c.verdict.value
    assert c.cross.layout.display == "none" and "training view" in c.cross_note.value


def test_compare_needs_two_models():
    with pytest.raises(GeomlibError, match="needs two cached models"):
        CompareMode([("only", "demo:smollm2-135m")], DEMO)


def test_training_view_of_the_demo_sweep():
    t = TrainingMode(DEMO)
    ds = open_sweep(SWEEP, DEMO)
    assert t.sweep == SWEEP and t.metric in training.metrics(ds) and t.layer == ds.sizes["layer"] - 1
    z, _ = training.movement(ds, t.metric)
    np.testing.assert_allclose(heat(t.plot, 0), z.values.T, equal_nan=True)
    np.testing.assert_allclose(np.array(t.plot.figure["data"][1]["y"], dtype=float), z.values[:, t.layer],
                               equal_nan=True)
    assert "moved most" in t.verdict.value and "training loss" in t.verdict.value
    # a click on a heatmap cell picks that layer's trajectory
    t.plot.click = {"seq": time.perf_counter(), "curve": 0, "point": 0, "x": "step 12", "y": 2, "customdata": None}
    assert t.layer == 2
    np.testing.assert_allclose(np.array(t.plot.figure["data"][1]["y"], dtype=float), z.values[:, 2], equal_nan=True)
    assert "layer 2 over training" in str(t.plot.figure["layout"]["annotations"])
    t.metric = "moved_head_matched_cos"
    z2, _ = training.movement(ds, t.metric)
    np.testing.assert_allclose(heat(t.plot, 0), z2.values.T, equal_nan=True)


def test_no_sweep_cached_is_one_line(tmp_path):
    with pytest.raises(GeomlibError, match="no sweep is cached"):
        TrainingMode([tmp_path])


@pytest.fixture(scope="module")
def app():
    return build_app(roots=DEMO)


def test_the_mode_switch_shows_one_thing_at_a_time(app):
    assert app.mode == "model" and app._model_box.layout.display is None and app._mode_box.children == ()
    app.mode = "compare"
    assert app._model_box.layout.display == "none" and app._mode_box.children == (app.compare_mode(),)
    assert app.compare_mode().a == app.source
    assert "mode=compare" in app._url.query and f"a={app.source}" in app._url.query
    app.mode = "training"
    assert app._mode_box.children == (app.training_mode(),)
    assert "mode=training" in app._url.query and f"sweep={SWEEP}" in app._url.query
    app.training_mode().layer = 3
    assert "tlayer=3" in app._url.query
    app.mode = "model"
    assert app._model_box.layout.display is None and app._mode_box.layout.display == "none"
    assert "mode=" not in app._url.query


def test_a_link_opens_compare_mode_and_the_training_view():
    q = f"mode=compare&a={S200}&b={S400}&cvar=cos&cpick=k_proj"
    app = build_app(roots=DEMO, query=q)
    c = app.compare_mode()
    assert app.mode == "compare" and (c.a, c.b, c.var, c.pick) == (S200, S400, "cos", "k_proj")
    for key in ("mode=compare", "cvar=cos", "cpick=k_proj"):
        assert key in app._url.query
    app2 = build_app(roots=DEMO)
    notes = app2.apply_query(f"mode=training&sweep={SWEEP}&tmetric=moved_raw_cos&tlayer=1")
    t = app2.training_mode()
    assert notes == [] and app2.mode == "training" and (t.metric, t.layer) == ("moved_raw_cos", 1)
    notes = app2.apply_query("mode=nope&tlayer=99")
    assert notes[0] == "mode='nope' ignored: one of model, compare, training"
    assert notes[1] == "tlayer='99' ignored: a layer 0–5" and app2.mode == "training"


def test_training_mode_without_a_sweep_says_so_in_place(tmp_path):
    from tests.dashboard.test_app import smollm2_only

    smollm2_only(tmp_path)
    app = build_app(roots=[tmp_path])
    app.mode = "training"
    assert "no sweep is cached" in app._mode_box.children[0].value and "no sweep is cached" in app.error


def test_compare_mode_shows_a_cached_cross_model_compare(tmp_path):
    torch = pytest.importorskip("torch")
    import geomlib
    from tests.factories import synthetic

    a, _ = synthetic.build(tmp_path / "tiny-a", 3, seed=0, dtype=torch.float32)
    b, _ = synthetic.build(tmp_path / "tiny-b", 3, seed=1, dtype=torch.float32)
    root = tmp_path / "cache"
    for src in (a, b):
        geomlib.compute(src, analyses=("gauge",), cache_dir=root, progress=False)
    cmp = geomlib.compare(a, b, root, progress=False, null_draws=0)
    app = build_app(roots=[root])
    app.mode = "compare"
    c = app.compare_mode()
    c.a, c.b = str(a), str(b)
    assert c.cross.layout.display is None and "cross geometry" in c.cross_note.value
    want = cmp["mlp_matched_cos"].sel(mlp_view="mean").values
    np.testing.assert_allclose(heat(c.cross, 0), want, equal_nan=True)
    c.a, c.b = str(b), str(a)  # only A-with-B is cached: the other order says how to make it
    assert c.cross.layout.display == "none" and f"geomlib compare {b} {a}" in c.cross_note.value


def test_a_sweep_written_later_is_found(tmp_path):
    """The sweep list is remembered between redraws, but not past a change of the cache."""
    import shutil

    src = next((ROOT / "cache").glob("sweep-*"))
    assert sweep_entries([tmp_path]) == {}
    shutil.copytree(src, tmp_path / src.name)
    assert list(sweep_entries([tmp_path])) == [SWEEP]
    shutil.rmtree(tmp_path / src.name)
    assert sweep_entries([tmp_path]) == {}
