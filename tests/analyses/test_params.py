"""Declarative parameters: one validation for every analysis, its CLI flags and its cache key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geomlib.analyses import Param, Params, registry
from geomlib.errors import InvalidArgumentError
from geomlib.validate import positive_int

SPECS = (
    Param("n", 3, int, "a count", min=1),
    Param("draws", 8, int, "draws", min=0, forbid={1: "one draw gives no standard deviation"}),
    Param("mode", "a", str, "a mode", choices=("a", "b")),
    Param("flag", True, bool, "a switch"),
    Param("budget", None, int, "bytes", min=1, in_key=False),
)


def test_defaults_and_attribute_access():
    p = Params("toy", SPECS)
    assert (p.n, p.draws, p.mode, p.flag, p.budget) == (3, 8, "a", True, None)
    assert p.as_dict() == {"n": 3, "draws": 8, "mode": "a", "flag": True, "budget": None}
    with pytest.raises(AttributeError):
        p.nope  # noqa: B018


def test_out_of_key_parameters_do_not_change_the_cache_key():
    a, b = Params("toy", SPECS), Params("toy", SPECS, {"budget": 1 << 30})
    assert a.key_dict() == b.key_dict()
    assert "budget" not in a.key_dict()
    assert Params("toy", SPECS, {"n": 4}).key_dict() != a.key_dict()


@pytest.mark.parametrize("given_, words", [
    ({"n": 0}, ["toy parameter n=0", "at least 1"]),
    ({"n": 2.5}, ["n=2.5", "integer"]),
    ({"n": True}, ["n=True", "integer"]),
    ({"draws": 1}, ["draws=1", "no standard deviation"]),
    ({"mode": "c"}, ["mode='c'", "'a', 'b'"]),
    ({"flag": "yes"}, ["flag='yes'", "True or False"]),
    ({"nope": 1}, ["unknown parameter(s) nope", "toy"]),
    ({"n": None}, ["n=None", "int"]),
])
def test_bad_values_fail_with_one_sentence(given_, words):
    with pytest.raises(InvalidArgumentError) as e:
        Params("toy", SPECS, given_)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


@given(st.integers(min_value=-5, max_value=50))
def test_integer_bounds_are_exact(v):
    ok = v >= 1
    try:
        Params("toy", SPECS, {"n": v})
    except InvalidArgumentError:
        assert not ok
    else:
        assert ok


def test_path_parameters_enter_the_key_by_content(tmp_path):
    spec = (Param("text", None, str, "a file", path=True),)
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("same words")
    b.write_text("same words")
    ka, kb = (Params("toy", spec, {"text": str(p)}).key_dict() for p in (a, b))
    assert ka == kb and ka["text"].startswith("sha256:")
    with pytest.raises(InvalidArgumentError, match="no such file"):
        Params("toy", spec, {"text": str(tmp_path / "missing.txt")})


def test_params_are_immutable_and_replace_validates():
    p = Params("toy", SPECS)
    with pytest.raises(AttributeError):
        p.n = 5
    assert p.replace(n=5).n == 5 and p.n == 3
    with pytest.raises(InvalidArgumentError):
        p.replace(n=0)


def test_each_analysis_has_its_own_namespace():
    w, h = registry.get("weights"), registry.get("heads")
    assert w.make_params().null_draws == 1 and h.make_params().null_draws == 32
    assert w.make_params({"null_draws": 0}).null_draws == 0
    # one draw per pair is allowed where the band's std is pooled over pairs (weights, gauge), not for heads
    with pytest.raises(InvalidArgumentError, match="heads parameter null_draws=1"):
        h.make_params({"null_draws": 1})
    with pytest.raises(InvalidArgumentError, match="for the weights analysis"):
        w.make_params({"forward_pass": False})
    with pytest.raises(InvalidArgumentError, match="must be a dict"):
        h.make_params([("k", 8)])


def test_max_memory_is_a_heads_parameter_outside_the_key():
    h = registry.get("heads")
    assert h.make_params({"max_memory": 1 << 30}).key_dict() == h.make_params().key_dict()
    with pytest.raises(InvalidArgumentError, match="max_memory=0"):
        h.make_params({"max_memory": 0})


@pytest.mark.parametrize("v", [0, -1, True, 1.0, "3"])
def test_positive_int_refuses(v):
    with pytest.raises(InvalidArgumentError, match="at least 1"):
        positive_int("x", v)
