"""Known answers of geomlib.metrics.spectra: by construction, planted power laws, invariances, degenerate input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomlib.errors import GeomlibWarning
from geomlib.metrics.spectra import (
    esd_eigenvalues,
    fit_power_law,
    singular_values,
    spectrum_summary,
    stable_rank,
)


def _orthonormal(m: int, k: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(m, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def _pareto(alpha: float, n: int, xmin: float, seed: int) -> np.ndarray:
    u = np.random.default_rng(seed).random(n)
    return xmin * (1 - u) ** (-1 / (alpha - 1))  # inverse CDF of p(x) ∝ x^-alpha, x ≥ xmin


@pytest.mark.parametrize("shape", [(40, 25), (25, 40), (30, 30)])
def test_singular_values_of_u_diag_s_vt_are_s(shape):
    m, n = shape
    k = min(m, n)
    s = torch.linspace(5.0, 0.1, k, dtype=torch.float64)
    w = _orthonormal(m, k, 0) @ torch.diag(s) @ _orthonormal(n, k, 1).T
    got = singular_values(w)
    assert got.dtype == torch.float64 and got.shape == (k,)
    np.testing.assert_allclose(got.numpy(), s.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.5])
def test_a_planted_power_law_gives_its_exponent(alpha):
    x = _pareto(alpha, 4000, 1.5, seed=int(alpha * 10))
    fit = fit_power_law(x)
    # CSN's standard error is (α − 1)/√n ≈ 0.03–0.06 here
    assert fit["alpha"] == pytest.approx(alpha, abs=0.2)
    assert fit["xmin"] >= 1.5 and fit["ks"] < 0.05 and fit["n_tail"] > 1000


def test_a_power_law_tail_above_a_bulk_is_found_with_its_xmin():
    tail = _pareto(2.5, 3000, 10.0, seed=3)
    bulk = np.random.default_rng(4).uniform(0.5, 10.0, 3000)
    fit = fit_power_law(np.r_[bulk, tail])
    assert fit["alpha"] == pytest.approx(2.5, abs=0.2)
    assert fit["xmin"] == pytest.approx(10.0, rel=0.3)


def test_fit_is_deterministic_and_order_free():
    x = _pareto(3.0, 500, 1.0, seed=5)
    a, b = fit_power_law(x), fit_power_law(np.random.default_rng(6).permutation(x))
    assert a == b


def test_too_few_points_or_bad_values_give_nan_not_zero():
    assert math.isnan(fit_power_law(np.arange(1.0, 6.0))["alpha"])  # 5 < MIN_TAIL
    assert math.isnan(fit_power_law(np.r_[np.arange(1.0, 30.0), np.nan])["alpha"])
    assert math.isnan(fit_power_law(np.r_[np.arange(1.0, 30.0), 0.0])["alpha"])
    assert math.isnan(fit_power_law(np.ones(50))["alpha"])  # all equal: no tail to fit


def test_a_rescale_scales_sigma_and_leaves_alpha_and_stable_rank():
    w = torch.randn(60, 90, generator=torch.Generator().manual_seed(7), dtype=torch.float64) ** 3  # heavy-ish tail
    base = spectrum_summary(w)
    for c in (-3.0, 0.01, 250.0):
        got = spectrum_summary(c * w)
        np.testing.assert_allclose(got["sigma"], abs(c) * base["sigma"], rtol=1e-12)
        assert got["spectral_norm"] == pytest.approx(abs(c) * base["spectral_norm"], rel=1e-12)
        assert got["stable_rank"] == pytest.approx(base["stable_rank"], rel=1e-10)
        assert got["alpha"] == pytest.approx(base["alpha"], rel=1e-8)
        assert got["ks"] == pytest.approx(base["ks"], rel=1e-8)
        assert got["xmin"] == pytest.approx(c * c * base["xmin"], rel=1e-10)


def test_stable_rank_of_rank_one_is_one_and_of_orthogonal_is_n():
    u, v = torch.randn(20, 1, dtype=torch.float64), torch.randn(1, 30, dtype=torch.float64)
    assert stable_rank(singular_values(u @ v)) == pytest.approx(1.0, abs=1e-12)
    assert stable_rank(singular_values(_orthonormal(16, 16, 2))) == pytest.approx(16.0, rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(12, 40), n=st.integers(12, 40), seed=st.integers(0, 2**16))
def test_spectrum_is_invariant_under_orthogonal_transforms(m, n, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, n, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3.0, n, dtype=torch.float64) ** 2
    base = spectrum_summary(w, min_tail=5)
    q_left, q_right = _orthonormal(m, m, seed + 1), _orthonormal(n, n, seed + 2)
    for t in (q_left @ w, w @ q_right, q_left @ w @ q_right):
        got = spectrum_summary(t, min_tail=5)
        np.testing.assert_allclose(got["sigma"], base["sigma"], rtol=1e-9, atol=1e-12 * base["spectral_norm"])
        assert got["stable_rank"] == pytest.approx(base["stable_rank"], rel=1e-9)
        # the same eigenvalues up to rounding: the same x_min candidate wins, unless two tie within rounding
        if abs(got["ks"] - base["ks"]) < 1e-9:
            assert got["alpha"] == pytest.approx(base["alpha"], rel=1e-6)


def test_nan_or_inf_weights_give_nan_and_a_warning():
    w = torch.randn(20, 30, dtype=torch.float64)
    for bad in (math.nan, math.inf, -math.inf):
        w2 = w.clone()
        w2[3, 4] = bad
        with pytest.warns(GeomlibWarning, match="NaN or Inf"):
            got = spectrum_summary(w2)
        assert np.isnan(got["sigma"]).all() and got["sigma"].shape == (20,)
        assert all(math.isnan(got[k]) for k in ("spectral_norm", "stable_rank", "alpha", "xmin", "ks"))


def test_a_zero_matrix_gives_zero_sigma_and_nan_stable_rank_with_a_warning():
    with pytest.warns(GeomlibWarning, match="zero matrix"):
        got = spectrum_summary(torch.zeros(10, 12, dtype=torch.float64))
    assert (got["sigma"] == 0).all() and got["spectral_norm"] == 0
    assert math.isnan(got["stable_rank"]) and math.isnan(got["alpha"])


def test_numerically_zero_singular_values_are_left_out_of_the_esd():
    w = torch.randn(30, 5, dtype=torch.float64) @ torch.randn(5, 40, dtype=torch.float64)  # rank 5 of 30
    s = singular_values(w)
    lam = esd_eigenvalues(s, tuple(w.shape))
    assert lam.size == 5 and np.all(np.diff(lam) >= 0)


def test_float32_spectra_are_within_the_documented_tolerance():
    w = torch.randn(64, 96, generator=torch.Generator().manual_seed(9), dtype=torch.float64) ** 3
    f64, f32 = spectrum_summary(w, torch.float64), spectrum_summary(w.float(), torch.float32)
    np.testing.assert_allclose(f32["sigma"], f64["sigma"], atol=1e-5 * f64["spectral_norm"], rtol=0)
    if f32["xmin"] == pytest.approx(f64["xmin"], rel=1e-4):
        assert f32["alpha"] == pytest.approx(f64["alpha"], abs=1e-3)


def test_metric_emits_no_warning_on_clean_input():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spectrum_summary(torch.randn(8, 8, dtype=torch.float64))  # too small to fit: NaN α, silently
