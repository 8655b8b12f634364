"""The spectra analysis on tiny checkpoints written at test time: the file's own singular values, NaN layers,
the Gaussian null, the registry's defaults, memory that does not grow with depth."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import geomlib
from geomlib.analyses import registry
from geomlib.analyses.spectra.report import layer_runs, sections, verdict
from geomlib.arch.families import MATRIX_FAMILIES
from geomlib.errors import GeomlibWarning
from tests.factories import synthetic
from tests.factories.memory import growth_with_depth

N = 3


def _compute(path, cache, **params):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = geomlib.compute(str(path), ["spectra"], cache, progress=False, spectra=params or None)
    return ds, {str(w.message) for w in rec if issubclass(w.category, GeomlibWarning)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path, _ = synthetic.build(tmp_path_factory.mktemp("m") / "m", N, dtype=torch.bfloat16, hidden=48, inter=80)
    ds, said = _compute(path, tmp_path_factory.mktemp("c"))
    return path, ds, said


def test_spectra_are_the_svdvals_of_the_files_tensors(tiny):
    path, ds, said = tiny
    assert not said, said
    tensors = load_file(str(path / "model.safetensors"))
    assert ds.sizes["sv_rank"] == 48 and ds["sigma"].dtype == np.float32
    for L in range(N):
        for f in MATRIX_FAMILIES:
            w = tensors[f"model.layers.{L}.{synthetic.NAMES[f]}.weight"].to(torch.float64)
            want = torch.linalg.svdvals(w).numpy()
            got = ds["sigma"].sel(family=f, layer=L).values
            k = len(want)
            np.testing.assert_allclose(got[:k], want, rtol=1e-6)  # float32 storage of float64 values
            assert np.isnan(got[k:]).all()  # padded to the common rank
            assert float(ds["spectral_norm"].sel(family=f, layer=L)) == pytest.approx(want[0], rel=1e-12)
            assert float(ds["stable_rank"].sel(family=f, layer=L)) == pytest.approx((want**2).sum() / want[0] ** 2,
                                                                                     rel=1e-10)
    # norm gains have no spectrum
    assert np.isnan(ds["sigma"].sel(family="input_ln").values).all()


def test_alpha_is_fitted_where_there_are_enough_eigenvalues_and_the_null_is_large(tiny):
    _, ds, _ = tiny
    a = ds["esd_alpha"].sel(family=list(MATRIX_FAMILIES)).values
    assert np.isfinite(a).all() and (a > 1).all()
    assert (ds["esd_n_tail"].sel(family="q_proj").values >= 10).all()
    null = ds["esd_alpha_null_mean"].sel(family=list(MATRIX_FAMILIES)).values
    assert np.isfinite(null).all() and (ds["esd_alpha_null_std"].sel(family="q_proj") > 0)
    assert ds.attrs["spectra_schema_version"] == 1 and json.loads(ds.attrs["spectra_params"])["null_draws"] == 8
    assert "sigma" in ds and ds["sigma"].attrs["description"].startswith("singular values")


def test_a_nan_layer_gives_nan_there_a_warning_naming_it_and_clean_values_elsewhere(tmp_path, tiny):
    _, clean, _ = tiny

    def plant(L, fresh, prev):
        if L == 1:
            fresh["v_proj"][2, 3] = math.nan
        return fresh

    path, _ = synthetic.build(tmp_path / "m", N, plant=plant, dtype=torch.bfloat16, hidden=48, inter=80)
    ds, said = _compute(path, tmp_path / "c")
    assert said == {"layer 1 v_proj has NaN or Inf weights: its spectrum is NaN"}
    assert said <= set(ds.attrs["warnings"].splitlines())
    for v in ("sigma", "esd_alpha", "stable_rank", "spectral_norm"):
        bad = ds[v].sel(family="v_proj", layer=1).values
        assert np.isnan(bad).all(), v
        rest = ds[v].where(~((ds.family == "v_proj") & (ds.layer == 1)))
        np.testing.assert_array_equal(rest.values, clean[v].where(~((clean.family == "v_proj") & (clean.layer == 1)))
                                      .values, err_msg=v)


def test_a_zero_layer_warns_and_keeps_its_true_zero_norm(tmp_path):
    def plant(L, fresh, prev):
        if L == 2:
            fresh["o_proj"] = torch.zeros_like(fresh["o_proj"])
        return fresh

    path, _ = synthetic.build(tmp_path / "m", N, plant=plant, dtype=torch.float32)
    ds, said = _compute(path, tmp_path / "c", null_draws=0)
    assert said == {"layer 2 o_proj is all zeros: its stable rank and esd_alpha are NaN"}
    assert float(ds["spectral_norm"].sel(family="o_proj", layer=2)) == 0.0
    assert math.isnan(float(ds["stable_rank"].sel(family="o_proj", layer=2)))
    assert np.isnan(ds["esd_alpha_null_mean"].values).all()  # null_draws=0 skips the null


def test_float32_precision_is_within_the_documented_tolerance(tmp_path, tiny):
    path, f64, _ = tiny
    f32, _ = _compute(path, tmp_path / "c", precision="float32")
    fams = list(MATRIX_FAMILIES)  # norm gains are all NaN
    s64, s32 = f64["sigma"].sel(family=fams).values, f32["sigma"].sel(family=fams).values
    top = s64[..., :1]  # σ₁ of each matrix
    assert np.nanmax(np.abs(s32 - s64) / top) < 1e-5
    same = np.isclose(f32["esd_alpha_xmin"].values, f64["esd_alpha_xmin"].values, rtol=1e-4)
    np.testing.assert_allclose(f32["esd_alpha"].values[same], f64["esd_alpha"].values[same], atol=1e-3)


def test_report_and_verdict(tiny):
    _, ds, _ = tiny
    text = "\n".join(sections(ds))
    assert "Power-law α" in text and "q_proj" in text and "Verdicts:" in text
    v = verdict(ds, "q_proj")
    assert v.startswith("q_proj: α from ") and v.endswith(".") and "Gaussian matrices of this shape" in v
    assert verdict(ds, "input_ln") == "" and verdict(ds.drop_vars("esd_alpha"), "q_proj") == ""
    assert layer_runs([0, 3, 4, 5, 9]) == "0, 3–5, 9"


def test_spectra_is_a_default_analysis_but_not_a_default_of_sweeps():
    assert "spectra" in registry.defaults() and "spectra" in registry.names()
    assert "spectra" not in registry.defaults(sweep=True)
    assert registry.defaults(sweep=True) == tuple(a for a in registry.defaults() if a != "spectra")
    assert registry.resolve(None, sweep=True) == registry.defaults(sweep=True)


def test_cost_counter_counts_the_svds():
    from geomlib.analyses import cost

    class Shape:
        n_layers, hidden, n_heads, n_kv_heads, head_dim, intermediate = 30, 576, 9, 3, 64, 1536
        families = MATRIX_FAMILIES

    rates = cost.Rates("cpu", 1, {"float32": 1e10, "float64": 5e9}, {"float32": 1e9, "float64": 1e9},
                       {"float32": 1e9, "float64": 1e9}, {"float32": 1e9, "float64": 1e9}, lsa=1e-9)
    est = cost.estimate(Shape(), {"spectra": None}, speeds=rates)
    assert 0 < est.per_analysis["spectra"] < 600 and any(s.what == "per-layer SVDs" for s in est.steps)


def test_peak_memory_does_not_grow_with_depth(tmp_path):
    g4, g16, layer_f64_mib = growth_with_depth(tmp_path, "spectra", "threads=1, spectra={'null_draws': 0}",
                                               hidden=384, heads=6, kv=3, inter=1024)
    # holding every layer would add 12 layers (~160 MiB in float64) between the two runs
    assert g16 - g4 < 2 * layer_f64_mib, (g4, g16, layer_f64_mib)
