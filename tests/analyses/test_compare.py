"""``geomlib.compare``: two checkpoints layer against layer, with known answers by construction.

A checkpoint compared with itself gives 1 on the diagonal; a copy relabelled by the network's true
symmetries (proved function-preserving by a forward pass, as in tests/analyses/test_gauge.py) matches with
cos 1 while its raw cos drops; a rotated residual basis (a real change) does not match; different depths
give L × L' results with depth-corresponding nulls; different sizes give a labelled depth profile.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geomlib
from geomlib.errors import GeomlibWarning, InvalidArgumentError
from tests.analyses.test_gauge import EDITS, _model, _out, gauge_edit, rotate_residual
from tests.factories import synthetic
from tests.factories.hf import make_checkpoint, save_model

MATCHED = ("mlp_matched_cos", "head_matched_cos", "head_unmatched_cos",
           "mlp_matched_null_mean", "mlp_matched_null_std", "head_matched_null_mean", "head_matched_null_std")


def _diag(da):
    return np.diagonal(da.transpose(..., "layer", "layer_b").values, axis1=-2, axis2=-1)


def _cmp(a, b, root, **params):
    return geomlib.compare(str(a), str(b), root, progress=False, **params)


def one_sentence(msg: str) -> bool:
    return "\n" not in msg and msg == msg.strip() and not re.search(r"[a-z)]\. [A-Z]", msg)


def test_a_checkpoint_compared_with_itself_is_one_on_the_diagonal(tmp_path):
    path, _ = synthetic.build(tmp_path / "m", 3, dtype=torch.float32)
    ds = _cmp(path, path, tmp_path / "c")  # default precision (float32 similarities)
    assert ds.attrs["comparison"] == "layer-to-layer" and ds.attrs["analysis"] == "compare"
    assert ds.attrs["identity_a"] == ds.attrs["identity_b"] and ds.attrs["source_b"] == str(path)
    for v in ("raw_cos", "mlp_matched_cos", "mlp_same_index_cos", "head_matched_cos", "head_same_index_cos",
              "gamma_cos", "mlp_frac_fixed"):
        np.testing.assert_allclose(_diag(ds[v]), 1.0, rtol=0, atol=1e-12, err_msg=v)
    np.testing.assert_allclose(np.diagonal(ds.head_matched.values, axis1=1, axis2=2), 1.0, rtol=0, atol=1e-12)
    assert (np.diagonal(ds.head_assignment.values, axis1=0, axis2=1).T == np.arange(4)).all()
    # off the diagonal: independent random layers, nowhere near 1, and the null band of each layer is finite
    off = ds.mlp_matched_cos.sel(mlp_view="mean", layer=0, layer_b=1)
    assert float(off) < 0.5
    assert np.isfinite(ds.mlp_matched_null_mean).all() and np.isfinite(ds.head_matched_null_std).all()
    assert ds.null_layer_b.values.tolist() == [0, 1, 2] and ds.attrs["compare_pairs"] == "all"
    for name, v in ds.data_vars.items():
        assert v.attrs.get("description"), name
        if "layer_b" in v.dims:
            assert v.attrs["pairing"].startswith(("matched", "index-paired")), name
    assert ds.raw_cos.attrs["pairing"].startswith("index-paired")
    assert ds.mlp_matched_cos.attrs["pairing"].startswith("matched")
    assert ds.raw_cos.dtype == np.float64 and set(ds.family.values) >= {"q_proj", "down_proj"}
    assert list(ds.norm.values) == ["input_ln", "post_attn_ln"]


def _relabelled(model, seed=1, layers=None, parts=EDITS):
    """A copy of ``model`` with every (or the given) layer edited by the true symmetries, outputs unchanged."""
    b = copy.deepcopy(model)
    for L in range(len(b.layers)) if layers is None else layers:
        gauge_edit(b.layers[L], torch.Generator().manual_seed(seed + L), parts)
    torch.testing.assert_close(_out(b), _out(model), rtol=1e-10, atol=1e-10)  # the same function
    return b


def test_a_copy_relabelled_by_its_symmetries_matches_with_cos_one(tmp_path):
    """B = A with neurons permuted (signed scales), heads permuted (GQA-consistent), per-head GL(d) on OV, a q/k
    scale trade and γ traded with the columns it feeds, in every layer: matched 1, raw cos < 1."""
    model = _model()
    save_model(model, tmp_path / "a", torch.float64)
    save_model(_relabelled(model), tmp_path / "b", torch.float64)
    ds = _cmp(tmp_path / "a", tmp_path / "b", tmp_path / "c", precision="float64", null_draws=2)
    np.testing.assert_allclose(_diag(ds.mlp_matched_cos), 1.0, atol=1e-9)
    np.testing.assert_allclose(_diag(ds.head_matched_cos), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.diagonal(ds.head_matched.values, axis1=1, axis2=2), 1.0, atol=1e-9)
    for f in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert (_diag(ds.raw_cos.sel(family=f)) < 0.99).all(), f
    assert (_diag(ds.mlp_same_index_cos) < 0.5).all()
    assert (_diag(ds.gamma_cos.sel(norm="input_ln")) < 0.999).all()  # the gains moved; their folds did not
    # and every matched value equals the comparison of A with itself, pair by pair
    ref = _cmp(tmp_path / "a", tmp_path / "a", tmp_path / "c", precision="float64", null_draws=2)
    for v in ("mlp_matched_cos", "head_matched_cos", "head_unmatched_cos"):
        np.testing.assert_allclose(ds[v].values, ref[v].values, rtol=1e-9, atol=1e-12, err_msg=v)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer=st.integers(0, 2), seed=st.integers(0, 2**16),
       parts=st.sets(st.sampled_from(EDITS), min_size=1).map(sorted))
def test_any_symmetry_of_b_leaves_every_matched_value_unchanged(layer, seed, parts):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = _model(seed=seed % 5)
        save_model(model, tmp / "a", torch.float64)
        save_model(_relabelled(model, seed, [layer], parts), tmp / "b", torch.float64)
        kw = dict(precision="float64", null_draws=2)
        ref, ds = _cmp(tmp / "a", tmp / "a", tmp / "c", **kw), _cmp(tmp / "a", tmp / "b", tmp / "c", **kw)
        for v in MATCHED:
            np.testing.assert_allclose(ds[v].values, ref[v].values, rtol=1e-9, atol=1e-12, err_msg=v)


def test_a_rotated_residual_basis_is_a_real_change(tmp_path):
    model = _model()
    b = copy.deepcopy(model)
    rotate_residual(b, 1, seed=3)
    assert not torch.allclose(_out(b), _out(model))  # not a symmetry: the model changed
    save_model(model, tmp_path / "a", torch.float64)
    save_model(b, tmp_path / "b", torch.float64)
    ds = _cmp(tmp_path / "a", tmp_path / "b", tmp_path / "c", precision="float64")
    for v in ("mlp_matched_cos", "head_matched_cos"):
        assert (ds[v].sel(layer=1, layer_b=1).values < 0.9).all(), v
        np.testing.assert_allclose(ds[v].sel(layer=0, layer_b=0).values, 1.0, atol=1e-12)
        np.testing.assert_allclose(ds[v].sel(layer=2, layer_b=2).values, 1.0, atol=1e-12)
    # the rotated layer looks like the null: it is the null's construction with one particular rotation
    mean, std = ds.mlp_matched_null_mean.sel(mlp_view="mean", layer=1), ds.mlp_matched_null_std.sel(mlp_view="mean")
    assert float(ds.mlp_matched_cos.sel(mlp_view="mean", layer=1, layer_b=1)) < float(mean) + 0.2
    assert np.isfinite(std).all()


def test_different_depths_give_l_by_l_prime_and_depth_corresponding_nulls(tmp_path):
    a, _ = synthetic.build(tmp_path / "a", 3, seed=0, dtype=torch.float32)
    b, _ = synthetic.build(tmp_path / "b", 5, seed=1, dtype=torch.float32)
    ds = _cmp(a, b, tmp_path / "c", pairs="all")
    assert ds.sizes["layer"] == 3 and ds.sizes["layer_b"] == 5
    assert ds.mlp_matched_cos.dims == ("mlp_view", "layer", "layer_b")
    assert ds.head_matched.dims == ("operator", "layer", "layer_b", "head")
    assert ds.null_layer_b.values.tolist() == [0, 2, 4]
    assert np.isfinite(ds.mlp_matched_cos).all() and np.isfinite(ds.raw_cos).all()
    assert np.isfinite(ds.head_matched_null_mean).all()
    corr = _cmp(a, b, tmp_path / "c", pairs="corresponding")
    assert corr.attrs["compare_pairs"] == "corresponding" and "NaN" in corr.attrs["compare_pairs_note"]
    for L, Lb in enumerate([0, 2, 4]):
        for v in ("mlp_matched_cos", "head_matched_cos", "raw_cos", "gamma_cos"):
            np.testing.assert_array_equal(corr[v].sel(layer=L, layer_b=Lb).values,
                                          ds[v].sel(layer=L, layer_b=Lb).values)
    assert np.isnan(corr.mlp_matched_cos.sel(layer=0, layer_b=1)).all()
    assert (corr.head_assignment.sel(layer=0, layer_b=1) == -1).all()
    np.testing.assert_array_equal(corr.mlp_matched_null_mean.values, ds.mlp_matched_null_mean.values)
    # B against A: the transposed shape; B's layers 1 and 3 sit half-way between A's layers (halves round up)
    back = _cmp(b, a, tmp_path / "c", pairs="all")
    assert back.sizes["layer"] == 5 and back.null_layer_b.values.tolist() == [0, 1, 1, 2, 2]
    np.testing.assert_allclose(back.raw_cos.transpose("family", "layer_b", "layer").values, ds.raw_cos.values,
                               rtol=1e-12)


def test_a_small_memory_budget_streams_the_same_numbers(tmp_path):
    """block_mib=1 holds one of A's 1.3 MB layers at a time and reads B past it for each: same numbers."""
    kw = dict(hidden=128, heads=4, kv=2, inter=256, dtype=torch.float32)
    a, _ = synthetic.build(tmp_path / "a", 3, seed=0, **kw)
    b, _ = synthetic.build(tmp_path / "b", 2, seed=1, **kw)
    big = _cmp(a, b, tmp_path / "c1", pairs="all", null_draws=0)
    small = _cmp(a, b, tmp_path / "c2", pairs="all", null_draws=0, block_mib=1)
    for v in ("raw_cos", "gamma_cos", "mlp_matched_cos", "head_matched", "head_assignment"):
        np.testing.assert_array_equal(small[v].values, big[v].values, err_msg=v)
    assert big.attrs["cache_key"] == small.attrs["cache_key"]  # a memory budget is not a parameter of the numbers


def _nan_plant(L, fresh, prev, bad_layer=1):
    if L == bad_layer:
        fresh["up_proj"][3, 5] = float("nan")
    return fresh


def test_nan_weights_give_nan_where_they_reach_and_one_warning(tmp_path):
    a, _ = synthetic.build(tmp_path / "a", 3, seed=0, dtype=torch.float32)
    b, _ = synthetic.build(tmp_path / "b", 3, seed=0, plant=_nan_plant, dtype=torch.float32)
    with pytest.warns(GeomlibWarning, match=r"model B .* layer 1 has NaN or Inf weights in up_proj"):
        ds = _cmp(a, b, tmp_path / "c", null_draws=2)
    assert np.isnan(ds.mlp_matched_cos.sel(layer_b=1)).all() and np.isnan(ds.head_matched_cos.sel(layer_b=1)).all()
    assert np.isnan(ds.raw_cos.sel(family="up_proj", layer_b=1)).all()
    assert np.isfinite(ds.raw_cos.sel(family="q_proj", layer_b=1)).all()  # the other families are untouched
    assert np.isfinite(ds.gamma_cos).all()
    assert (ds.head_assignment.sel(layer_b=1) == -1).all()
    for L in (0, 2):
        np.testing.assert_allclose(ds.mlp_matched_cos.sel(layer=L, layer_b=L).values, 1.0, atol=1e-12)
    assert np.isnan(ds.mlp_matched_null_mean.sel(layer=1)).all()  # layer 1's null partner is B's bad layer
    assert np.isfinite(ds.mlp_matched_null_mean.sel(layer=0)).all()
    assert ds.attrs["warnings"].count("layer 1 has NaN") == 1


def test_different_model_types_are_refused_in_one_sentence(tmp_path):
    a, _ = synthetic.build(tmp_path / "a", 2, dtype=torch.float32)
    b, _ = make_checkpoint(tmp_path, "gpt2", n_layers=2)
    with pytest.raises(InvalidArgumentError) as exc:
        _cmp(a, b, tmp_path / "c")
    msg = str(exc.value)
    assert one_sentence(msg) and "llama" in msg and "gpt2" in msg and "one model_type" in msg
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").rglob("*.nc"))


def test_different_sizes_give_a_labelled_depth_profile(tmp_path):
    a, _ = synthetic.build(tmp_path / "a", 4, seed=0, dtype=torch.float32)
    b, _ = synthetic.build(tmp_path / "b", 3, seed=1, hidden=48, inter=64, dtype=torch.float32)
    root = tmp_path / "c"
    ds = _cmp(a, b, root)
    assert ds.attrs["comparison"] == "depth-normalized profile" and "cannot be paired" in ds.attrs["comparison_note"]
    assert "hidden 32 vs 48" in ds.attrs["comparison_note"]
    assert "layer" not in ds.dims and "layer_b" not in ds.dims
    assert list(ds.model.values) == ["a", "b"] and ds.n_layers.values.tolist() == [4, 3]
    assert ((ds.depth >= 0) & (ds.depth <= 1)).all() and ds.sizes["depth"] == 3  # A's three adjacent pairs
    for name, v in ds.data_vars.items():
        assert "not a layer-to-layer comparison" in v.attrs["description"], name
    # A has the most pairs: the grid is its pair midpoints, so its values are its own gauge's adjacent ones
    ga = geomlib.load(str(a), "gauge", root)
    own = np.array([ga.mlp_matched_cos.sel(mlp_view="mean", layer=L, layer_b=L + 1).item() for L in range(3)])
    np.testing.assert_allclose(ds.mlp_adjacent_matched_cos.sel(model="a", mlp_view="mean").values, own, rtol=1e-12)
    # B's two pairs (depths 1/4, 3/4) interpolated onto 1/6, 1/2, 5/6: the middle one is their mean
    gb = geomlib.load(str(b), "gauge", root)
    pb = [gb.head_matched_cos.sel(operator="ov", layer=L, layer_b=L + 1).item() for L in range(2)]
    got = ds.head_adjacent_matched_cos.sel(model="b", operator="ov").values
    np.testing.assert_allclose(got[1], np.mean(pb), rtol=1e-12)
    np.testing.assert_allclose(got[[0, 2]], pb, rtol=1e-12)  # constant beyond the first and last pair
    assert np.isfinite(ds.mlp_adjacent_z).all()


def test_parameters_are_validated_before_any_file_is_read(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(InvalidArgumentError, match="its parameters are pairs, null_draws, seed") as exc:
        geomlib.compare(missing, missing, tmp_path / "c", gauge={"null_draws": 0})
    assert one_sentence(str(exc.value))
    with pytest.raises(InvalidArgumentError, match="pairs='adjacent' is not a choice"):
        geomlib.compare(missing, missing, tmp_path / "c", pairs="adjacent")
    with pytest.raises(InvalidArgumentError, match="null_draws"):
        geomlib.compare(missing, missing, tmp_path / "c", null_draws=-1)
    with pytest.raises(InvalidArgumentError, match="threads"):
        geomlib.compare(missing, missing, tmp_path / "c", threads=0)
    with pytest.raises(InvalidArgumentError, match="force"):
        geomlib.compare(missing, missing, tmp_path / "c", force="yes")
    with pytest.raises(InvalidArgumentError, match="progress"):
        geomlib.compare(missing, missing, tmp_path / "c", progress=1)
    assert not (tmp_path / "c").exists()
