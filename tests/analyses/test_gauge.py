"""The gauge analysis: matched neurons and heads are invariant to the network's true symmetries.

Each function-preserving edit is applied to a checkpoint written in the test
(float64, so the edits are exact), a transformers forward pass proves the
outputs unchanged, and every gauge variable must stay put; a function-changing
edit (rotating one layer's residual side) must move them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geomlib
from geomlib.errors import GeomlibWarning
from geomlib.metrics.gauge_nulls import random_orthogonal
from tests.factories.hf import save_model, tiny_model

H, KV, D = 4, 2, 8
VARS = ("mlp_matched_cos", "mlp_matched_null_mean", "mlp_matched_null_std", "head_matched_cos",
        "head_unmatched_cos", "head_matched_null_mean", "head_matched_null_std", "composition_mean")
#: indexed by a layer's own heads: invariant as a multiset over the heads of each layer
PER_HEAD = ("head_matched", "composition_score")


def _model(seed=0, n_layers=3):
    return tiny_model("llama", n_layers, seed).double()


def _ids():
    return torch.arange(1, 17)[None] % 64


def _out(model):
    with torch.no_grad():
        return model(_ids()).last_hidden_state


EDITS = ("neurons", "heads", "ov", "qk_scale", "gamma")


def gauge_edit(layer, gen: torch.Generator, parts=EDITS) -> None:
    """A function-preserving edit of one llama layer, in place: neurons permuted with signed scales,
    heads permuted GQA-consistently, per-kv-head GL(d) on OV, a q/k scale trade, γ traded with columns."""
    mlp, att = layer.mlp, layer.self_attn
    with torch.no_grad():
        if "neurons" in parts:
            I = mlp.up_proj.weight.shape[0]
            p = torch.randperm(I, generator=gen)
            c = 2.0 ** torch.randint(-2, 3, (I,), generator=gen).double()
            c = c * torch.where(torch.rand(I, generator=gen) < 0.5, -1.0, 1.0).double()
            mlp.gate_proj.weight.copy_(mlp.gate_proj.weight[p])
            mlp.up_proj.weight.copy_(mlp.up_proj.weight[p] * c[:, None])
            mlp.down_proj.weight.copy_(mlp.down_proj.weight[:, p] / c[None, :])
        if "heads" in parts:  # kv groups swapped, the two query heads of each group swapped
            _permute_heads(layer)
        if "ov" in parts:  # W_V -> B W_V per kv head, W_O -> W_O B^-1 for the query heads reading it
            for k in range(KV):
                B = torch.randn(D, D, generator=gen, dtype=torch.float64) + 3 * torch.eye(D, dtype=torch.float64)
                att.v_proj.weight[k * D:(k + 1) * D] = B @ att.v_proj.weight[k * D:(k + 1) * D]
                for h in range(H):
                    if h // (H // KV) == k:
                        cols = slice(h * D, (h + 1) * D)
                        att.o_proj.weight[:, cols] = att.o_proj.weight[:, cols] @ torch.linalg.inv(B)
        if "qk_scale" in parts:  # QK under RoPE: a positive scale traded between W_Q and W_K
            att.q_proj.weight.mul_(2.0)
            att.k_proj.weight.mul_(0.5)
        if "gamma" in parts:  # γ against the columns it feeds
            s = 2.0 ** torch.randint(-1, 2, (layer.input_layernorm.weight.shape[0],), generator=gen).double()
            layer.input_layernorm.weight.mul_(s)
            for lin in (att.q_proj, att.k_proj, att.v_proj):
                lin.weight.div_(s[None, :])


def _compute(model, path, **gauge):
    save_model(model, path, torch.float64)
    # float64: the invariances are checked at 1e-9 (float32's tolerances are tests/analyses/test_precision.py's)
    return geomlib.compute(str(path), "gauge", path.parent / "cache", progress=False,
                           gauge={"null_draws": 3, "precision": "float64", **gauge})


@pytest.mark.parametrize("pairs", ["adjacent", "all"])
def test_function_preserving_edits_leave_every_gauge_variable_unchanged(tmp_path, pairs):
    model = _model()
    before_out = _out(model)
    before = _compute(model, tmp_path / "a", pairs=pairs)
    gauge_edit(model.layers[1], torch.Generator().manual_seed(1))
    torch.testing.assert_close(_out(model), before_out, rtol=1e-10, atol=1e-10)  # the same function
    after = _compute(model, tmp_path / "b", pairs=pairs)
    for v in VARS:
        np.testing.assert_allclose(after[v].values, before[v].values, rtol=1e-9, atol=1e-12, err_msg=v)
    for v in PER_HEAD:
        dims = [d for d in ("head", "head_b") if d in before[v].dims]
        flat = lambda ds: np.sort(ds[v].stack(h=dims).values, axis=-1)  # noqa: E731
        np.testing.assert_allclose(flat(after), flat(before), rtol=1e-9, atol=1e-12, err_msg=v)
    # the index-paired numbers (and how many neurons keep their index) are not invariant: that is the point
    assert not np.allclose(after.mlp_same_index_cos.values, before.mlp_same_index_cos.values, equal_nan=True)
    assert not np.allclose(after.head_same_index_cos.values, before.head_same_index_cos.values, equal_nan=True)
    assert np.isfinite(before.mlp_matched_cos.sel(layer=0, layer_b=1)).all()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer=st.integers(0, 2), seed=st.integers(0, 2**16),
       parts=st.sets(st.sampled_from(EDITS), min_size=1).map(sorted))
def test_any_composition_of_symmetries_on_any_layer_leaves_gauge_unchanged(layer, seed, parts):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        model = _model(seed=seed % 7)
        before = _compute(model, Path(tmp) / "a", pairs="all", null_draws=2)
        ref = _out(model)
        gauge_edit(model.layers[layer], torch.Generator().manual_seed(seed), parts)
        torch.testing.assert_close(_out(model), ref, rtol=1e-10, atol=1e-10)
        after = _compute(model, Path(tmp) / "b", pairs="all", null_draws=2)
        for v in VARS:
            np.testing.assert_allclose(after[v].values, before[v].values, rtol=1e-9, atol=1e-12, err_msg=v)


def test_a_gauge_transformed_copy_matches_with_cos_one(tmp_path):
    model = _model()
    with torch.no_grad():
        model.layers[1].load_state_dict(model.layers[0].state_dict())
    gauge_edit(model.layers[1], torch.Generator().manual_seed(2))
    ds = _compute(model, tmp_path / "m")
    np.testing.assert_allclose(ds.mlp_matched_cos.sel(layer=0, layer_b=1).values, 1.0, atol=1e-9)
    np.testing.assert_allclose(ds.head_matched_cos.sel(layer=0, layer_b=1).values, 1.0, atol=1e-9)
    assert (ds.mlp_same_index_cos.sel(layer=0, layer_b=1).values < 0.5).all()
    assert (ds.head_matched_cos.sel(layer=0, layer_b=1) > ds.head_matched_null_mean.sel(layer=0) + 0.5).all()
    # heads matched back to where they came from: query head j of layer 0 is head qperm^-1[j] of layer 1
    assert sorted(ds.head_assignment.sel(layer=0, layer_b=1).values.tolist()) == list(range(H))


def test_per_head_terms_and_composition_agree_with_the_metrics(tmp_path):
    from geomlib.metrics.composition import composition_scores
    from geomlib.metrics.matching import fold_norms

    model = _model(n_layers=3)
    ds = _compute(model, tmp_path / "p", pairs="all")
    assert ds.attrs["gauge_pairs"] == "all"
    # the per-head terms average to the matched cos, and the reverse pair holds the same terms, re-indexed
    np.testing.assert_allclose(ds.head_matched.mean("head").values, ds.head_matched_cos.values, rtol=1e-12)
    fwd = ds.head_matched.sel(layer=0, layer_b=2)
    back = ds.head_matched.sel(layer=2, layer_b=0)
    perm = ds.head_assignment.sel(layer=0, layer_b=2).values
    np.testing.assert_allclose(back.values[:, perm], fwd.values, rtol=1e-12)
    # composition: exactly the metric on the gain-folded layers, only for layer < layer_b
    sd = {k: v.double() for k, v in model.state_dict().items()}

    def layer(L):
        p = f"layers.{L}."
        w = {f: sd[p + m + ".weight"] for f, m in (("q_proj", "self_attn.q_proj"), ("k_proj", "self_attn.k_proj"),
                                                   ("v_proj", "self_attn.v_proj"), ("o_proj", "self_attn.o_proj"))}
        w["input_ln"] = sd[p + "input_layernorm.weight"]
        return fold_norms(w, (("input_ln", ("q_proj", "k_proj", "v_proj")),))

    want = composition_scores(layer(0), layer(2), H, KV, D)
    for k in ("q", "k", "v"):
        np.testing.assert_allclose(ds.composition_score.sel(composition=k, layer=0, layer_b=2).values,
                                   want[k].numpy(), rtol=1e-10)
    assert np.isnan(ds.composition_score.sel(layer=2, layer_b=0)).all()
    assert np.isnan(ds.composition_score.sel(layer=1, layer_b=1)).all()
    assert 0 < ds.attrs["composition_null_mean"] < ds.attrs["composition_baseline"] < 1


def test_auto_pairs_match_every_pair_when_affordable(tmp_path, monkeypatch):
    from geomlib.analyses.gauge import compute as gauge_compute

    model = _model(n_layers=3)
    assert _compute(model, tmp_path / "a").attrs["gauge_pairs"] == "all"
    monkeypatch.setattr(gauge_compute, "AUTO_ALL_PAIRS_WORK", 0.0)
    ds = _compute(model, tmp_path / "b", seed=1)  # a new key: the cached entry above is not reused
    assert ds.attrs["gauge_pairs"] == "adjacent" and "adjacent pairs only" in ds.attrs["gauge_pairs_note"]
    assert np.isnan(ds.mlp_matched_cos.sel(layer=0, layer_b=2)).all()
    assert np.isfinite(ds.mlp_matched_cos.sel(layer=0, layer_b=1)).all()


def test_qk_norm_gains_are_folded_into_the_qk_operator(tmp_path):
    """Qwen3: the QK operator compared is W_Qᵀ diag(γ_q γ_k) W_K, so the gains count (a q_norm change moves it)
    while a scale traded between q_norm and k_norm (a symmetry: q·k is unchanged) does not."""
    model = tiny_model("qwen3", 2, 0).double()
    ids = torch.arange(1, 17)[None] % 64
    with torch.no_grad():
        before_out = model(ids).last_hidden_state
    before = _compute(model, tmp_path / "a", pairs="all")
    assert before.attrs["gauge_qk_norm"] == "folded"
    s = torch.full((model.config.head_dim,), 2.0, dtype=torch.float64)
    with torch.no_grad():
        model.layers[1].self_attn.q_norm.weight.mul_(s)
        model.layers[1].self_attn.k_norm.weight.div_(s)
    with torch.no_grad():  # q·k over head_dim is unchanged: (2 q_i)(k_i / 2)
        torch.testing.assert_close(model(ids).last_hidden_state, before_out, rtol=1e-10, atol=1e-10)
    after = _compute(model, tmp_path / "b", pairs="all")
    np.testing.assert_allclose(after.head_matched_cos.values, before.head_matched_cos.values, rtol=1e-9)
    # W_Q itself is untouched here: only the folded gain can move the operator
    with torch.no_grad():
        model.layers[1].self_attn.q_norm.weight.copy_(torch.linspace(0.1, 3.0, model.config.head_dim))
    moved = _compute(model, tmp_path / "c", pairs="all")
    assert not np.allclose(moved.head_matched_cos.sel(operator="qk").values,
                           before.head_matched_cos.sel(operator="qk").values)


def rotate_residual(model, L: int, seed: int) -> None:
    """Rotate layer ``L``'s residual side by a Haar rotation, in place: its reads (q/k/v/gate/up) by Rᵀ, its
    writes (o/down) by R.  Not a symmetry (the residual basis is shared by every layer): the model changes."""
    R = random_orthogonal(model.config.hidden_size, torch.Generator().manual_seed(seed))
    lay = model.layers[L]
    with torch.no_grad():
        for lin in (lay.self_attn.q_proj, lay.self_attn.k_proj, lay.self_attn.v_proj, lay.mlp.gate_proj,
                    lay.mlp.up_proj):
            lin.weight.copy_(lin.weight @ R.T)
        for lin in (lay.self_attn.o_proj, lay.mlp.down_proj):
            lin.weight.copy_(R @ lin.weight)


def test_rotating_a_residual_side_changes_the_matching(tmp_path):
    model = _model()
    before_out = _out(model)
    before = _compute(model, tmp_path / "a")
    rotate_residual(model, 1, seed=3)
    assert not torch.allclose(_out(model), before_out)  # not a symmetry: the model changed
    after = _compute(model, tmp_path / "b")
    for v in ("mlp_matched_cos", "head_matched_cos"):
        assert not np.allclose(after[v].sel(layer=0, layer_b=1).values, before[v].sel(layer=0, layer_b=1).values)


def test_independent_layers_fall_inside_the_null_band(tmp_path):
    ds = _compute(_model(seed=5, n_layers=4), tmp_path / "r", pairs="adjacent")
    for v, stem in (("mlp_matched_cos", "mlp_matched"), ("head_matched_cos", "head_matched")):
        m, s = ds[f"{stem}_null_mean"].isel(layer=slice(0, -1)), ds[f"{stem}_null_std"].isel(layer=slice(0, -1))
        x = xr_adjacent(ds[v])
        assert (abs(x - m) < 4 * s + 0.05).all(), (v, x.values, m.values, s.values)


def xr_adjacent(da):
    from geomlib.analyses.phases import adjacent

    return adjacent(da)


def test_nan_weights_give_nan_and_a_warning_and_the_run_finishes(tmp_path):
    model = _model()
    with torch.no_grad():
        model.layers[2].mlp.up_proj.weight[0, 0] = float("nan")
    save_model(model, tmp_path / "n", torch.float64)
    with pytest.warns(GeomlibWarning, match="layer 2 has NaN or Inf"):
        ds = geomlib.compute(str(tmp_path / "n"), "gauge", tmp_path / "c", progress=False,
                             gauge={"null_draws": 2, "precision": "float64"})
    assert np.isnan(ds.mlp_matched_cos.sel(layer=1, layer_b=2)).all()
    assert np.isfinite(ds.mlp_matched_cos.sel(layer=0, layer_b=1)).all()
    assert "layer 2 has NaN" in ds.attrs["warnings"]


def test_gauge_is_labelled_and_reported(tmp_path):
    ds = _compute(_model(), tmp_path / "l")
    assert "rope" in ds.attrs["symmetry_group"] and "gqa-groups" in ds.attrs["symmetry_group"]
    from geomlib.analyses.report import render

    text = render(ds)
    assert "Do adjacent layers' MLPs share structure once neurons are matched?" in text
    assert "matching raises the adjacent operator cos" in text


def _permute_heads(layer) -> None:
    """Swap the kv groups and the two query heads inside each: a GQA-consistent relabelling, in place."""
    att, g = layer.self_attn, [1, 0]
    qperm = [g[j // 2] * 2 + (1 - j % 2) for j in range(H)]
    rows = lambda w, order: torch.cat([w[i * D:(i + 1) * D] for i in order])  # noqa: E731
    with torch.no_grad():
        att.q_proj.weight.copy_(rows(att.q_proj.weight, qperm))
        att.k_proj.weight.copy_(rows(att.k_proj.weight, g))
        att.v_proj.weight.copy_(rows(att.v_proj.weight, g))
        att.o_proj.weight.copy_(torch.cat([att.o_proj.weight[:, i * D:(i + 1) * D] for i in qperm], dim=1))


def test_matched_heads_variant_of_the_seed_tables_is_invariant_to_head_order(tmp_path):
    from geomlib.analyses.gauge.report import matched_rescale
    from geomlib.analyses.report import render

    def run(model, path):
        save_model(model, path, torch.float64)
        return geomlib.compute(str(path), ["heads", "gauge"], path.parent / f"c{path.name}", progress=False,
                               heads={"forward_pass": False, "null_draws": 2},
                               gauge={"null_draws": 2, "pairs": "all", "precision": "float64"})

    model = _model(n_layers=3)
    before = run(model, tmp_path / "a")
    ref = _out(model)
    _permute_heads(model.layers[1])
    torch.testing.assert_close(_out(model), ref, rtol=1e-10, atol=1e-10)
    after = run(model, tmp_path / "b")
    fit_b, fit_a = matched_rescale(before, anchor=2), matched_rescale(after, anchor=2)
    for op in ("qk", "ov"):
        assert fit_a[op][1] == pytest.approx(fit_b[op][1], rel=1e-9)  # matched: unchanged
        assert fit_a[op][0] != pytest.approx(fit_b[op][0], rel=1e-6)  # index-paired: moved by a relabelling
    np.testing.assert_allclose(after.head_matched_cos.sel(layer_b=2).values,
                               before.head_matched_cos.sel(layer_b=2).values, rtol=1e-9)
    text = render(after, anchor=2)
    assert "[seed 001, matched heads]" in text and "[seed 002, matched heads]" in text
    section = text[text.index("Which seed verdicts change"):]
    for tag in ("[001] qk", "[001] ov", "[002] qk", "[002] ov", "[003]", "[004]"):
        assert tag in section
    assert all(line.rstrip().endswith((": same", ": CHANGES", ": n/a"))
               for line in section.splitlines()[2:] if line.startswith(" [00") and not line.startswith(" [00" + "3")
               and not line.startswith(" [004]"))


@pytest.mark.slow
def test_real_minilm_weights_neuron_and_head_relabelling_is_invisible_to_gauge(tmp_path):
    """On the real all-MiniLM-L6-v2 weights: a neuron permutation and a head permutation with per-head GL(d)
    on OV, applied to one layer, leave the outputs (forward pass) and every matched variable unchanged."""
    from transformers import AutoModel

    from geomlib.io.demo import demo_path

    src = demo_path("demo:minilm-l6")
    model = AutoModel.from_pretrained(src, dtype=torch.float64, local_files_only=True, attn_implementation="eager")
    model.eval()
    ids = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 1997, 1996, 5080, 102]])
    with torch.no_grad():
        ref = model(ids).last_hidden_state
    model.save_pretrained(tmp_path / "a")
    before = geomlib.compute(str(tmp_path / "a"), "gauge", tmp_path / "c", progress=False,
                             gauge={"null_draws": 2, "precision": "float64"})
    layer, gen = model.encoder.layer[3], torch.Generator().manual_seed(7)
    Hh, d = model.config.num_attention_heads, model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        inter, out = layer.intermediate.dense, layer.output.dense
        p = torch.randperm(inter.weight.shape[0], generator=gen)
        inter.weight.copy_(inter.weight[p])
        inter.bias.copy_(inter.bias[p])
        out.weight.copy_(out.weight[:, p])
        att, o = layer.attention.self, layer.attention.output.dense
        hp = torch.randperm(Hh, generator=gen).tolist()
        rows = torch.cat([torch.arange(h * d, (h + 1) * d) for h in hp])
        for lin in (att.query, att.key, att.value):
            lin.weight.copy_(lin.weight[rows])
            lin.bias.copy_(lin.bias[rows])
        o.weight.copy_(o.weight[:, rows])
        for h in range(Hh):  # OV: W_V -> B W_V (and its bias), W_O -> W_O B^-1
            r = slice(h * d, (h + 1) * d)
            B = torch.randn(d, d, generator=gen, dtype=torch.float64) / d**0.5 + torch.eye(d, dtype=torch.float64)
            att.value.weight[r] = B @ att.value.weight[r]
            att.value.bias[r] = B @ att.value.bias[r]
            o.weight[:, r] = o.weight[:, r] @ torch.linalg.inv(B)
        torch.testing.assert_close(model(ids).last_hidden_state, ref, rtol=1e-9, atol=1e-9)
    model.save_pretrained(tmp_path / "b")
    after = geomlib.compute(str(tmp_path / "b"), "gauge", tmp_path / "c", progress=False,
                            gauge={"null_draws": 2, "precision": "float64"})
    for v in VARS:
        np.testing.assert_allclose(after[v].values, before[v].values, rtol=1e-9, atol=1e-12, err_msg=v)
    pair = dict(layer=2, layer_b=3)
    assert not np.allclose(after.mlp_same_index_cos.sel(pair).values, before.mlp_same_index_cos.sel(pair).values)
    # the real model's adjacent MLPs share structure beyond matching alone (the rotation null)
    adj = xr_adjacent(before.mlp_matched_cos.sel(mlp_view="mean")).values
    assert (adj > before.mlp_matched_null_mean.sel(mlp_view="mean").values[:-1] + 0.01).all(), adj


def test_every_cross_layer_variable_says_how_it_paired_units(tmp_path):
    save_model(_model(), tmp_path / "m", torch.float64)
    ds = geomlib.compute(str(tmp_path / "m"), ["weights", "heads", "gauge"], tmp_path / "c", progress=False,
                         weights={"null_draws": 0}, heads={"forward_pass": False, "null_draws": 0},
                         gauge={"null_draws": 0})
    for name, v in ds.data_vars.items():
        if "layer_b" not in v.dims:
            assert "pairing" not in v.attrs, name
        elif name.startswith(("mlp_matched", "head_matched", "head_unmatched", "composition", "mlp_frac",
                              "head_assignment")):
            assert v.attrs["pairing"].startswith("matched"), name
        else:
            assert v.attrs["pairing"].startswith("index-paired"), name
