"""The default ``precision="float32"`` of weights, heads and gauge against the float64 reference.

Documented tolerances (README, "Precision"): cosines, aligned cosines, matched cosines, composition
scores and the per-head Gram-derived values within 1e-5 (relative for norms and Grams); the scale track
(Frobenius norms) within 1e-6 relative; residual
spectral entropies within 1e-5 nats; the same neuron and head matchings; null bands within their
Monte-Carlo spread (the permutation and scrambled draws are the same seeded draws up to rounding; the
Gaussian band and the gauge's Haar rotations are drawn in float32, another sample of the same law).
"""

from __future__ import annotations

import numpy as np
import pytest

import geomlib
from tests.factories.hf import make_checkpoint

ABS = 1e-5
#: variables compared at ABS (absolute, values in [-1, 1] or nats)
WEIGHTS_TIGHT = ("cos", "aligned_cos", "delta", "resid_norm", "scalar_fit", "resid_spec_entropy", "gamma_norm",
                 "gamma_proj_top1", "gamma_pca_explained")
HEADS_TIGHT = ("head_cos", "head_resid", "head_pa_mean", "head_pa_min", "head_top1_overlap", "head_shape_cos",
               "head_rescale_resid", "head_frac_pos")
GAUGE_TIGHT = ("mlp_matched_cos", "mlp_same_index_cos", "mlp_frac_fixed", "head_matched_cos", "head_same_index_cos",
               "head_unmatched_cos", "head_different_index_cos", "head_matched", "composition_score",
               "composition_mean")


def _run(path, cache, precision):
    return geomlib.compute(str(path), ["weights", "heads", "gauge"], cache, progress=False,
                           weights={"precision": precision, "null_draws": 4, "scrambled_null": True},
                           heads={"precision": precision, "forward_pass": False, "null_draws": 8},
                           gauge={"precision": precision, "null_draws": 2, "pairs": "all"})


def _close(a, b, v, atol=ABS, rtol=0.0):
    np.testing.assert_allclose(a[v].values, b[v].values, atol=atol, rtol=rtol, equal_nan=True, err_msg=v)


def _compare(f32, f64):
    for v in WEIGHTS_TIGHT + HEADS_TIGHT + GAUGE_TIGHT:
        _close(f32, f64, v)
    _close(f32, f64, "resid_eff_rank", atol=0, rtol=ABS)
    _close(f32, f64, "scale", atol=0, rtol=1e-6)  # float32 partial sums of 65536 entries, added in float64
    for v in ("head_gram", "head_T", "head_rescale_T"):  # relative to the largest entry (a near-0 Gram cancels)
        _close(f32, f64, v, atol=ABS * float(np.nanmax(np.abs(f64[v].values))), rtol=ABS)
    np.testing.assert_array_equal(f32.head_assignment.values, f64.head_assignment.values)
    # per-pair nulls: the same seeded permutations and rotations, so the same draws up to rounding
    for kind in ("permutation", "scrambled"):
        np.testing.assert_allclose(f32.aligned_null_mean.sel(null=kind).values,
                                   f64.aligned_null_mean.sel(null=kind).values, atol=ABS, equal_nan=True)
    # the Gaussian band's draws and the gauge's Haar rotations are drawn in float32: another sample of the same
    # law, so the two bands agree within their Monte-Carlo spread
    for m, s in ((f32.aligned_null_mean.sel(null="gaussian"), f64.aligned_null_std.sel(null="gaussian")),
                 (f32.mlp_matched_null_mean, f64.mlp_matched_null_std),
                 (f32.head_matched_null_mean, f64.head_matched_null_std)):
        ref = f64[m.name].sel(null="gaussian") if "null" in m.coords else f64[m.name]
        assert bool((abs(m - ref) <= 4 * s + 1e-9).where(np.isfinite(s), True).all()), m.name


def test_float32_default_matches_float64_on_a_random_qwen3(tmp_path):
    path, _ = make_checkpoint(tmp_path, "qwen3", n_layers=4)
    f32, f64 = _run(path, tmp_path / "c32", "float32"), _run(path, tmp_path / "c64", "float64")
    assert f32.attrs["weights_params"] != f64.attrs["weights_params"]  # two cache entries, not one
    _compare(f32, f64)


def test_precision_is_a_checked_parameter(tmp_path):
    path, _ = make_checkpoint(tmp_path, "llama", n_layers=2)
    with pytest.raises(geomlib.GeomlibError, match="precision"):
        geomlib.compute(str(path), "weights", tmp_path / "c", progress=False, weights={"precision": "float16"})


@pytest.mark.slow
def test_float32_default_matches_float64_on_real_minilm(tmp_path):
    from geomlib.io.demo import demo_path

    src = demo_path("demo:minilm-l6")
    _compare(_run(src, tmp_path / "c32", "float32"), _run(src, tmp_path / "c64", "float64"))
