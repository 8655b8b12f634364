"""The run-time estimate (``geomlib.analyses.cost``): how it scales, what it prints, that it never blocks a run.

Shapes come from stand-in checkpoints (the estimate reads attributes only) and the kernel
speeds are fixed, so nothing here depends on the machine; no test times a run.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import geomlib
from geomlib.analyses import cost, registry
from geomlib.model import open_model
from tests.factories import synthetic

LLAMA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "input_ln", "post_attn_ln")
BERT = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "input_ln", "post_attn_ln")

#: fixed speeds, about one CPU core's
SPEEDS = cost.Rates("cpu", 1, matmul={"float32": 8e10, "float64": 5e10}, eig={"float32": 4e10, "float64": 3e10},
                    svd={"float32": 1e10, "float64": 9e9}, qr={"float32": 2e10, "float64": 1e10}, lsa=1.2e-9)


def fake(n_layers=16, hidden=1024, n_heads=16, n_kv_heads=8, head_dim=64, intermediate=2816, families=LLAMA,
         quantization=None):
    return SimpleNamespace(n_layers=n_layers, hidden=hidden, n_heads=n_heads, n_kv_heads=n_kv_heads,
                           head_dim=head_dim, intermediate=intermediate, families=families,
                           quantization=quantization, config={"vocab_size": 32000})


def est(ckpt, **analyses):
    params = {a: registry.get(a).make_params(p) for a, p in analyses.items()}
    return cost.estimate(ckpt, params, speeds=SPEEDS)


def work(e: cost.Estimate) -> float:
    """The counted steps, without the fixed per-analysis costs."""
    return sum(s.seconds for s in e.steps)


@pytest.mark.parametrize("analysis, params", [
    ("weights", {"aligned_pairs": "adjacent"}),
    ("gauge", {"pairs": "adjacent"}),
])
def test_adjacent_pairs_grow_linearly_with_depth(analysis, params):
    a, b = (work(est(fake(n_layers=n), **{analysis: params})) for n in (16, 32))
    assert 1.6 < b / a < 2.6, (a, b)


@pytest.mark.parametrize("analysis, params", [
    ("weights", {"aligned_pairs": "all", "null_draws": 0}),  # the null draws are adjacent pairs: linear
    ("gauge", {"pairs": "all", "null_draws": 0}),
])
def test_all_pairs_grow_quadratically_with_depth(analysis, params):
    a, b = (work(est(fake(n_layers=n), **{analysis: params})) for n in (16, 32))
    assert 3.3 < b / a < 4.6, (a, b)


def test_all_pairs_cost_more_than_adjacent():
    m = fake()
    assert est(m, gauge={"pairs": "all"}).seconds > est(m, gauge={"pairs": "adjacent"}).seconds
    assert est(m, weights={"aligned_pairs": "all"}).seconds > est(m, weights={"aligned_pairs": "adjacent"}).seconds


@pytest.mark.parametrize("ckpt", [
    fake(),
    fake(n_layers=6, hidden=384, n_heads=12, n_kv_heads=12, head_dim=32, intermediate=1536, families=BERT),
    fake(n_layers=30, hidden=576, n_heads=9, n_kv_heads=3, head_dim=64, intermediate=1536, quantization="Q4_1"),
    fake(n_layers=1),
    fake(families=("q_proj", "k_proj", "input_ln")),  # no MLP, no OV operator
])
def test_positive_and_finite(ckpt):
    e = est(ckpt, weights=None, heads=None, gauge=None)
    assert math.isfinite(e.seconds) and e.seconds > 0
    assert set(e.per_analysis) == {"weights", "heads", "gauge"}
    assert all(math.isfinite(v) and v > 0 for v in e.per_analysis.values())
    assert e.seconds == pytest.approx(sum(e.per_analysis.values()))
    assert all(s.seconds >= 0 for s in e.steps)


def test_parameters_are_read_by_name():
    m = fake()
    assert est(m, weights={"null_draws": 0}).seconds < est(m, weights={"null_draws": 8}).seconds
    assert est(m, heads={"forward_pass": False}).seconds < est(m, heads={"forward_pass": True}).seconds
    assert est(m, gauge={"null_draws": 0}).seconds < est(m, gauge={"null_draws": 4}).seconds
    # plain dicts work too (missing values: the defaults the counters know)
    plain = cost.estimate(m, {"weights": {"aligned_pairs": "none"}}, speeds=SPEEDS)
    assert plain.seconds < est(m, weights={"aligned_pairs": "adjacent"}).seconds


def test_the_dominant_step_is_named():
    e = est(fake(n_layers=28), gauge={"pairs": "all", "null_draws": 0})
    assert e.dominant == "gauge MLP matching, 378 pairs"
    big = max(e.steps, key=lambda s: s.seconds)
    assert big.describe() == e.dominant


def test_an_analysis_without_a_counter_costs_only_its_fixed_part():
    e = cost.estimate(fake(), {"toy": None}, speeds=SPEEDS)
    assert e.per_analysis == {"toy": cost.FIXED_S} and e.dominant == "" and e.steps == ()


def test_the_message():
    e = cost.Estimate(240.0, {"weights": 10.0, "heads": 30.0, "gauge": 200.0}, "gauge MLP matching, 27 pairs",
                      device="cpu", threads=2)
    assert e.message() == ("geomlib: estimated 4 min for weights+heads+gauge on 2 CPU threads "
                           "(largest step: gauge MLP matching, 27 pairs)")
    one = cost.Estimate(45.2, {"weights": 45.2}, "weights all-pairs Gram, 30 layers", device="cpu", threads=1)
    assert one.message().startswith("geomlib: estimated 45 s for weights on 1 CPU thread (")
    gpu = cost.Estimate(9000.0, {"gauge": 9000.0}, "x", device="cuda:0", threads=16)
    assert "2.5 h for gauge on cuda:0" in gpu.message()


@pytest.mark.parametrize("s, text", [(0.2, "1 s"), (45, "45 s"), (89, "89 s"), (240, "4 min"), (5399, "90 min"),
                                     (9000, "2.5 h")])
def test_format_seconds(s, text):
    assert cost.format_seconds(s) == text


def test_announce_only_above_the_threshold(capsys, monkeypatch):
    e = cost.Estimate(40.0, {"weights": 40.0}, "weights residual spectra, 29 pairs")
    monkeypatch.setattr(cost, "THRESHOLD_S", 60.0)
    assert not cost.announce(e) and capsys.readouterr().err == ""
    monkeypatch.setattr(cost, "THRESHOLD_S", 30.0)
    assert cost.announce(e)
    assert capsys.readouterr().err == e.message() + "\n"


def test_calibration_is_measured_once(monkeypatch):
    monkeypatch.setattr(cost, "_RATES", {})
    r1 = cost.rates("cpu", 1)
    assert r1.threads == 1 and r1.device == "cpu"
    for table in (r1.matmul, r1.eig, r1.svd, r1.qr):
        assert set(table) == {"float32", "float64"} and all(math.isfinite(v) and v > 0 for v in table.values())
    assert cost.rates("cpu", 1) is r1  # cached: no second measurement
    assert 0 < cost.lsa_rate() < 1e-6


# -- on a real tiny checkpoint, through geomlib.compute -----------------------------------------------------------
@pytest.fixture
def model(tmp_path):
    path, _ = synthetic.build(tmp_path / "tiny-llama", 3, dtype=torch.float32)
    return path


def test_a_tiny_model_is_estimated_tiny(model, capsys):
    with open_model(model) as ckpt:
        e = cost.estimate(ckpt, {a: registry.get(a).make_params(None) for a in registry.defaults()}, "cpu", 1)
    assert 0 < e.seconds < cost.THRESHOLD_S
    assert not cost.announce(e) and capsys.readouterr().err == ""


def test_compute_prints_the_estimate_above_the_threshold(model, tmp_path, capsys, monkeypatch):
    kw = {"cache_dir": tmp_path / "c", "threads": 1, "weights": {"null_draws": 0}, "force": True}
    geomlib.compute(model, ["weights"], progress=True, **kw)
    assert "estimated" not in capsys.readouterr().err  # a tiny model: below the threshold, silent
    monkeypatch.setattr(cost, "THRESHOLD_S", 0.0)
    geomlib.compute(model, ["weights"], progress=True, **kw)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("geomlib: estimated")]
    assert len(lines) == 1 and " for weights on 1 CPU thread (largest step: weights " in lines[0]
    geomlib.compute(model, ["weights"], progress=False, **kw)  # quiet: nothing
    assert "estimated" not in capsys.readouterr().err


def test_a_failing_estimate_does_not_stop_the_run(model, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a shape the counters do not know")

    monkeypatch.setattr(cost, "estimate", broken)
    ds = geomlib.compute(model, ["weights"], cache_dir=tmp_path / "c", threads=1, progress=True,
                         weights={"null_draws": 0})
    assert "weights" in ds.attrs["analyses"]
