"""One NaN or ±Inf weight in any family of any layer: NaN where it reaches, a warning, the run finishes.

Every analysis of the default run (weights, heads, gauge; the forward pass off: the checkpoints have no
tokenizer) is compared with a clean run of the same checkpoint: the values the planted entry reaches are
NaN, with a GeomlibWarning that names the layer and family, and every other value is the clean one.
Statistics pooled over all pairs or layers of a family (the null bands' pooled std, the scale-track and
γ PCAs) are checked only where they are per pair or per layer.
"""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import xarray as xr

import geomlib
from geomlib.errors import GeomlibWarning
from tests.factories import synthetic
from tests.factories.hf import save_model, tiny_model

N = 4  # layers: first 0, middle 2 (both neighbours inside), last 3
POSITIONS = {"first": 0, "middle": 2, "last": N - 1}
VALUES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LLAMA_FAMILIES = (*ATTENTION, "gate_proj", "up_proj", "down_proj", "input_ln", "post_attn_ln")
OPERATOR = {"q_proj": "qk", "k_proj": "qk", "v_proj": "ov", "o_proj": "ov"}
HF_NAME = {"input_ln": "input_layernorm", "post_attn_ln": "post_attention_layernorm"}
#: the forward pass needs a tokenizer; few null draws keep each run about a second
OPTIONS = dict(heads={"forward_pass": False, "null_draws": 4}, weights={"null_draws": 2, "gamma_null_draws": 4},
               gauge={"null_draws": 2})

# how each variable is indexed by layers: "pair" (layer, layer_b), "layer", "adj" (pair (L, L+1) stored at L),
# "family" (one value set per family: all of it is reached); the leading dimension picks what a bad family
# reaches: weights' family, heads' operator, gauge's whole layer (a matching pairs every unit of a layer)
WEIGHTS = {
    "scale": "layer", "cos": "pair", "aligned_cos": "pair", "delta": "pair",
    **{v: "adj" for v in ("resid_norm", "scalar_fit", "improve_frac", "resid_eff_rank", "resid_spec_entropy")},
    "gamma_norm": "layer",
    **{v: "family" for v in ("gamma_pca_explained", "gamma_pca_scores", "gamma_proj_top1", "gamma_resid_top1",
                             "gamma_pca_null_mean", "gamma_pca_null_std", "gamma_abs_proj_top1_null_mean",
                             "gamma_abs_proj_top1_null_std", "gamma_centered_pca_explained",
                             "gamma_centered_proj_top1", "gamma_centered_pca_null_mean",
                             "gamma_centered_pca_null_std")},
}
HEADS = {
    **{f"head_{v}": "pair" for v in ("gram", "cos", "T", "resid", "pa_mean", "pa_min", "top1_overlap", "shape_cos",
                                     "rescale_T", "rescale_resid", "sign_agree")},
    **{f"head_{v}": "layer" for v in ("sym_eigs", "singvals", "frac_pos", "eigengap", "cross_head_shape_cos")},
    "head_null_mean": "none", "head_null_std": "none",
}
GAUGE = {
    **{v: "pair" for v in ("mlp_matched_cos", "mlp_same_index_cos", "mlp_frac_fixed", "head_matched_cos",
                           "head_same_index_cos", "head_different_index_cos", "head_unmatched_cos", "head_matched",
                           "head_assignment", "composition_score", "composition_mean")},
    "mlp_matched_null_mean": "adj", "head_matched_null_mean": "adj",
}
#: finite in a clean run wherever the bad layer does not reach, in the family (operator) it does (no vacuous test)
CORE = ("cos", "head_cos", "head_pa_mean", "head_sign_agree", "mlp_matched_cos", "head_matched_cos")


def _plant(t: torch.Tensor, value: float) -> None:
    t[(3,) if t.ndim == 1 else (2, 3)] = value


def _compute(path, cache) -> tuple[xr.Dataset, set[str]]:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = geomlib.compute(path, cache_dir=cache, progress=False, **OPTIONS)
    return ds, {str(w.message) for w in rec if issubclass(w.category, GeomlibWarning)}


def _mask(da: xr.DataArray, kind: str, layer: int, lead: tuple[str, list] | None) -> np.ndarray:
    """Where the bad ``layer`` reaches in ``da``; ``lead``: (dimension, labels reached), None for nothing."""
    if lead is None or kind == "none":
        return np.zeros(da.shape, dtype=bool)
    hit = xr.DataArray(True)
    if kind == "pair":
        hit = (da.layer == layer) | (da.layer_b == layer)
    elif kind == "layer":
        hit = da.layer == layer
    elif kind == "adj":
        hit = (da.layer == layer) | (da.layer == layer - 1)
    dim, labels = lead
    if dim is not None:
        hit = hit & da[dim].isin(labels)
    return hit.broadcast_like(da).transpose(*da.dims).values


def _compare(bad: xr.Dataset, clean: xr.Dataset, table: dict, layer: int, lead, core=CORE) -> None:
    for name, kind in table.items():
        b, c = bad[name].values, clean[name].values
        m = _mask(bad[name], kind, layer, lead)
        missing = -1 if b.dtype.kind == "i" else None
        reached = b[m]
        assert (reached == missing).all() if missing is not None else np.isnan(reached).all(), (name, reached)
        if name in core and lead is not None:  # the other families (or operators) may be absent: NaN in both
            assert np.isfinite(c[_mask(bad[name], "all", layer, lead) & ~m]).all(), name
        np.testing.assert_allclose(b[~m], c[~m], rtol=1e-12, atol=1e-14, err_msg=name)


def _check(bad, said, clean, family: str, layer: int, gauge_reached: bool) -> None:
    weights_said = f"layer {layer} {family} has NaN or Inf weights: its metrics are NaN"
    assert weights_said in said, said
    _compare(bad, clean, WEIGHTS, layer, ("family", [family]))
    op = OPERATOR.get(family)
    if op:
        assert f"layer {layer} {family} has NaN or Inf weights: its per-head {op.upper()} values are NaN" in said, said
    _compare(bad, clean, HEADS, layer, ("operator", [op]) if op else None)
    if gauge_reached:
        assert f"layer {layer} has NaN or Inf weights in {family}: its matched values are NaN" in said, said
    _compare(bad, clean, GAUGE, layer, (None, None) if gauge_reached else None)
    # every warning of the run names the family; the per-layer ones name the layer
    for text in said:
        assert family in text, (text, said)
    assert weights_said in bad.attrs["warnings"]


@pytest.fixture(scope="module")
def llama_clean(tmp_path_factory):
    path, _ = synthetic.build(tmp_path_factory.mktemp("clean") / "m", N, dtype=torch.float32)
    ds, said = _compute(path, tmp_path_factory.mktemp("cache"))
    assert not said, said
    return ds


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("family", LLAMA_FAMILIES)
def test_one_bad_entry_gives_nan_where_it_reaches_and_clean_values_elsewhere(tmp_path, llama_clean, family, value,
                                                                              position):
    B = POSITIONS[position]

    def plant(L, fresh, prev):
        if L == B:
            _plant(fresh[family], VALUES[value])
        return fresh

    path, _ = synthetic.build(tmp_path / "m", N, plant, dtype=torch.float32)
    bad, said = _compute(path, tmp_path / "c")
    # the gauge folds both llama norms into the matrices they feed, so every family reaches it
    _check(bad, said, llama_clean, family, B, gauge_reached=True)


@pytest.fixture(scope="module")
def qwen3_clean(tmp_path_factory):
    path = save_model(tiny_model("qwen3", N), tmp_path_factory.mktemp("q3") / "m")
    ds, said = _compute(path, tmp_path_factory.mktemp("cache"))
    assert not said, said
    return ds


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("family", ["q_norm", "k_norm"])
def test_qwen3_qk_norm_gains(tmp_path, qwen3_clean, family, value, position):
    B = POSITIONS[position]
    model = tiny_model("qwen3", N)  # the clean run's weights (same seed)
    with torch.no_grad():
        _plant(getattr(model.layers[B].self_attn, family).weight, VALUES[value])
    bad, said = _compute(save_model(model, tmp_path / "m"), tmp_path / "c")
    # the heads analysis compares W_Qᵀ W_K without the q/k norms (untouched); the gauge folds them into W_Q, W_K
    _check(bad, said, qwen3_clean, family, B, gauge_reached=True)


@pytest.mark.parametrize("family", ["q_proj", "v_proj", "up_proj", "down_proj"])
@pytest.mark.parametrize("value", ["nan", "-inf"])
def test_non_default_passes(tmp_path, family, value):
    """The passes the default run skips: aligned cos of every pair, the scrambled null, adjacent-only cos and
    gauge pairs, float64 precision."""
    B = 1
    opts = dict(heads={"forward_pass": False, "null_draws": 2, "precision": "float64"},
                weights={"null_draws": 2, "aligned_pairs": "all", "cos_pairs": "adjacent", "scrambled_null": True,
                         "precision": "float64", "exact_spectrum_max_dim": 4},
                gauge={"null_draws": 2, "pairs": "adjacent", "precision": "float64"})

    def plant(L, fresh, prev):
        if L == B:
            _plant(fresh[family], VALUES[value])
        return fresh

    runs = {}
    for name, p in (("clean", None), ("bad", plant)):
        path, _ = synthetic.build(tmp_path / name, N, p, dtype=torch.float32)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            runs[name] = geomlib.compute(path, cache_dir=tmp_path / f"c{name}", progress=False, **opts)
        runs[f"{name}_said"] = {str(w.message) for w in rec if issubclass(w.category, GeomlibWarning)}
    assert not runs["clean_said"], runs["clean_said"]
    bad, clean, said = runs["bad"], runs["clean"], runs["bad_said"]
    assert f"layer {B} {family} has NaN or Inf weights: its metrics are NaN" in said
    _compare(bad, clean, {"aligned_cos": "pair", "cos": "pair", "resid_eff_rank": "adj"}, B, ("family", [family]),
             core=("aligned_cos",))  # every pair's aligned cos; cos only of adjacent pairs
    null = bad.aligned_null_mean.sel(family=family)
    assert np.isnan(null.sel(null=["scrambled", "permutation"], layer=[B - 1, B])).all()
    np.testing.assert_allclose(null.sel(null=["scrambled", "permutation"], layer=B + 1),
                               clean.aligned_null_mean.sel(family=family, null=["scrambled", "permutation"],
                                                           layer=B + 1), rtol=1e-12)
    # the Gaussian band depends on the shape only: kept although its first pair holds the bad layer
    np.testing.assert_array_equal(null.sel(null="gaussian"), clean.aligned_null_mean.sel(family=family,
                                                                                       null="gaussian"))
    assert np.isfinite(null.sel(null="gaussian", layer=slice(0, N - 2))).all()
    op = OPERATOR.get(family)
    _compare(bad, clean, HEADS, B, ("operator", [op]) if op else None)
    gauge = {k: v for k, v in GAUGE.items() if k != "composition_score"}
    # adjacent pairs only: the others are NaN in both runs
    _compare(bad, clean, gauge, B, (None, None), core=())


def test_cli_default_run_finishes_with_the_warnings(tmp_path):
    def plant(L, fresh, prev):
        if L == 1:
            fresh["q_proj"][0, 0] = math.nan
        if L == N - 1:
            fresh["k_proj"][1, 2] = math.inf
        return fresh

    path, _ = synthetic.build(tmp_path / "m", N, plant, dtype=torch.float32)
    res = subprocess.run([sys.executable, "-m", "geomlib", "compute", str(path), "--cache", str(tmp_path / "c"),
                          "--no-heads.forward-pass", "-q"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    for text in ("layer 1 q_proj has NaN or Inf weights: its per-head QK values are NaN",
                 f"layer {N - 1} k_proj has NaN or Inf weights: its per-head QK values are NaN",
                 "layer 1 q_proj has NaN or Inf weights: its metrics are NaN",
                 "layer 1 has NaN or Inf weights in q_proj: its matched values are NaN"):
        assert text in res.stderr, res.stderr
