"""The dashboard's state in the page URL: parse/serialize, validation, and a Dashboard opened from a link."""

from __future__ import annotations

import html
from pathlib import Path

import pytest

from geomlib.dashboard import build_app
from geomlib.dashboard.app import Dashboard
from geomlib.dashboard.urlstate import KEYS, parse, serialize, state_of, validate

ROOT = Path(__file__).resolve().parents[2]
DEMO_CACHE = [ROOT / "cache"]


def test_parse_and_serialize_round_trip():
    state = {"model": "demo:minilm-l6", "family": "k_proj", "anchor": 3, "pair": "1,4", "head": "mean",
             "operator": "ov", "metric": "pa_mean", "phase": "all"}
    q = serialize(state)
    assert q.startswith("model=demo:minilm-l6&family=k_proj&anchor=3&pair=1,4&")
    assert parse(q) == {k: str(v) for k, v in state.items()}
    assert parse("?" + q) == parse(q)
    assert serialize(parse(q)) == q
    odd = {"model": "org/name@v1.0", "phase": "early & late", "family": "q_proj"}
    assert parse(serialize(odd)) == odd  # reserved characters survive


def test_parse_keeps_only_known_non_empty_keys():
    assert parse("model=demo:x&foo=1&anchor=&family=v_proj&family=k_proj") == {"model": "demo:x", "family": "k_proj"}
    assert parse("") == {} and parse(None) == {} and set(KEYS) >= set(parse("head=2&pair=1,2"))


def test_validate_drops_bad_values_with_one_line_each():
    params = {"family": "nope", "anchor": "99", "head": "x", "pair": "1,2,3", "operator": "OV", "metric": "angles",
              "phase": "all"}
    values, bad = validate(params, n_layers=6, families=["q_proj", "k_proj"], phases=["all", "A"], heads=12,
                           operators=("qk", "ov"))
    assert values == {"operator": "ov", "op_metric": "pa_mean", "phase": "all"}
    assert len(bad) == 4 and all("\n" not in b and "ignored" in b for b in bad)
    values, bad = validate({"anchor": "3", "head": "mean", "pair": "1,4"}, n_layers=6, families=[], phases=[],
                           heads=12, operators=("qk",))
    assert values == {"anchor": 3, "head": -1, "pair": (1, 4)} and bad == []


def test_a_link_opens_the_same_view():
    app = Dashboard(roots=DEMO_CACHE, query="model=demo:minilm-l6&family=k_proj&anchor=3&pair=1,4&head=2"
                                             "&operator=ov&metric=angles")
    assert (app.source, app.family, app.anchor, tuple(app.pair), app.head, app.operator, app.op_metric) == (
        "demo:minilm-l6", "k_proj", 3, (1, 4), 2, "ov", "pa_mean")
    assert app._model.value == "demo:minilm-l6" and app._anchor.value == 3 and app._family.value == "k_proj"
    assert "k_proj" in app.figures["cos"].layout.annotations[0].text
    assert app._url.query == "model=demo:minilm-l6&family=k_proj&anchor=3&pair=1,4&head=2&operator=ov" \
                             "&metric=pa_mean&phase=all"
    assert "geomlib-url-note" not in app._info.value
    app.anchor = 5  # a change is written back to the address bar's widget
    assert "anchor=5" in app._url.query and parse(app._url.query) == {
        k: str(v) for k, v in state_of(app).items() if v is not None}


@pytest.mark.parametrize("query,note", [
    ("model=demo:nope&anchor=2", "model='demo:nope' ignored"),
    ("model=demo:smollm2-135m&anchor=400", "anchor='400' ignored"),
    ("family=zzz", "family='zzz' ignored"),
])
def test_a_bad_link_value_is_one_line_not_a_crash(query, note):
    app = Dashboard(roots=DEMO_CACHE, query=query)
    assert app.source == "demo:smollm2-135m"
    assert "geomlib-url-note" in app._info.value and html.escape(note) in app._info.value
    assert app.error == ""


def test_no_query_means_the_default_view(monkeypatch):
    monkeypatch.delenv("QUERY_STRING", raising=False)
    app = build_app(roots=DEMO_CACHE)
    assert app.source == "demo:smollm2-135m" and app.anchor == 29
    assert "model=demo:smollm2-135m" in app._url.query


def test_apply_query_after_the_dashboard_is_built(monkeypatch):
    """A pre-heated Voila kernel builds the default view first, then learns the page's query string."""
    from geomlib.dashboard.urlstate import request_query

    monkeypatch.delenv("VOILA_PREHEAT", raising=False)
    monkeypatch.setenv("QUERY_STRING", "model=demo:minilm-l6&anchor=2&head=11&phase=zz")
    app = build_app(roots=DEMO_CACHE)
    assert app.source == "demo:smollm2-135m"  # the constructor does not read the environment
    notes = app.apply_query(request_query())
    assert app.source == "demo:minilm-l6" and app.anchor == 2 and app.head == 11 and app._anchor.value == 2
    assert app.figures["cos"].data[0].z is not None and len(app.figures["cos"].data[0].z) == 6
    assert notes == ["phase='zz' ignored: this model's phases are " + ", ".join(v for _, v in app._phase.options)]
    assert "anchor=2" in app._url.query and "model=demo:minilm-l6" in app._url.query
    app.apply_query("operator=ov")
    # the figure the page draws when it first renders says so (not only a patch sent before it rendered)
    assert app.views["operator"].figure["layout"]["annotations"][0]["text"].startswith("OV")


def test_the_range_and_mask_controls_drive_the_figures_and_the_link():
    app = Dashboard(roots=DEMO_CACHE, query="model=demo:minilm-l6&family=k_proj&scale=robust&mask=0")
    assert (app.scale, app.mask_diagonal) == ("robust", False)
    assert (app._scale.value, app._mask.value) == ("robust", False)
    assert "scale=robust" in app._url.query and "mask=0" in app._url.query
    cos = lambda: next(t for t in app.figures["cos"].data if t.type == "heatmap")  # noqa: E731
    unmasked = [row[:] for row in cos().z]
    assert all(unmasked[i][i] is not None for i in range(len(unmasked)))  # the diagonal is shown
    app._mask.value = True  # the control writes the trait, the figure follows
    assert app.mask_diagonal and all(cos().z[i][i] is None for i in range(len(unmasked)))
    robust = (cos().zmin, cos().zmax)
    app._scale.value = "symmetric"
    assert cos().zmin == -cos().zmax and (cos().zmin, cos().zmax) != robust
    assert "scale=" not in app._url.query and "mask=" not in app._url.query  # the defaults stay out of the link
    _, bad = validate({"scale": "loud", "mask": "maybe"}, n_layers=6, families=[], phases=[], heads=12,
                      operators=("qk",))
    assert len(bad) == 2
