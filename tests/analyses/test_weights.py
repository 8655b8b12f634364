"""The weights analysis end to end on checkpoints with planted structure (known answers)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import geomlib
from geomlib.analyses.phases import adjacent
from geomlib.analyses.weights.report import seed000, seed004
from geomlib.arch.families import MATRIX_FAMILIES, RESIDUAL_AXIS
from geomlib.errors import GeomlibWarning
from geomlib.metrics.gauge_nulls import permute_layer
from geomlib.metrics.nulls import permutation_aligned_null
from tests.factories import synthetic

MAT = list(MATRIX_FAMILIES)
GAMMA_NULL_DIMS = {
    "gamma_pca_null_mean": ("family", "pc"),
    "gamma_pca_null_std": ("family", "pc"),
    "gamma_abs_proj_top1_null_mean": ("family", "layer"),
    "gamma_abs_proj_top1_null_std": ("family", "layer"),
    "gamma_centered_pca_explained": ("family", "pc"),
    "gamma_centered_proj_top1": ("family", "layer"),
    "gamma_centered_pca_null_mean": ("family", "pc"),
    "gamma_centered_pca_null_std": ("family", "pc"),
}


def rotate(layer: dict, seed: int) -> dict:
    """The same layer with every matrix rotated on its residual-stream side (a gauge change)."""
    R = synthetic.orthogonal(layer["q_proj"].shape[1], seed)
    out = {}
    for fam, w in layer.items():
        if fam in RESIDUAL_AXIS:
            out[fam] = w @ R if RESIDUAL_AXIS[fam] == 1 else R.T @ w
        else:
            out[fam] = w.clone()
    return out


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """6 layers: 0 random, 1 = 0, 2 = 1 rotated, 3 = 2.5 x 2, 4 random, 5 = 4 + rank-3 norm-preserving update."""

    def plant(L, fresh, prev):
        if L == 1:
            return {k: v.clone() for k, v in prev[0].items()}
        if L == 2:
            return rotate(prev[1], seed=11)
        if L == 3:
            return {k: 2.5 * v for k, v in prev[2].items()}
        if L == 5:
            out = {}
            g = torch.Generator().manual_seed(5)
            for fam, w in prev[4].items():
                if w.ndim == 1:
                    out[fam] = w * 1.5
                    continue
                u, _ = torch.linalg.qr(torch.randn(w.shape[0], 3, generator=g, dtype=torch.float64))
                v, _ = torch.linalg.qr(torch.randn(w.shape[1], 3, generator=g, dtype=torch.float64))
                d = u @ v.T
                out[fam] = w - 2 * float((w * d).sum()) / float((d * d).sum()) * d
            return out
        return fresh

    path, layers = synthetic.build(tmp_path_factory.mktemp("planted") / "m", 6, plant, dtype=torch.float64)
    with pytest.warns(GeomlibWarning, match="identical up to scale"):
        ds = geomlib.compute(path, analyses=["weights"], cache_dir=tmp_path_factory.mktemp("cache"), progress=False,
                             weights={"null_draws": 16, "aligned_pairs": "all", "precision": "float64",
                                      "scrambled_null": True})
    return ds, layers


def adj(ds, var, fam, L):
    """Value of ``var`` for the pair (L, L+1): pairwise variables hold it at [L, L+1], adjacent ones at [L]."""
    da = adjacent(ds[var]) if "layer_b" in ds[var].dims else ds[var]
    return float(da.sel(family=fam, layer=L))


def test_identical_layers_cos_one_delta_zero(planted):
    ds, _ = planted
    for fam in MAT + ["input_ln", "post_attn_ln"]:
        assert adj(ds, "cos", fam, 0) == pytest.approx(1.0, abs=1e-12)
    for fam in MAT:
        assert adj(ds, "aligned_cos", fam, 0) == pytest.approx(1.0, abs=1e-10)
        assert adj(ds, "delta", fam, 0) == pytest.approx(0.0, abs=1e-10)


def test_residual_rotation_aligned_one_raw_small(planted):
    ds, _ = planted
    for fam in MAT:
        assert abs(adj(ds, "cos", fam, 1)) < 0.35, fam
        assert adj(ds, "aligned_cos", fam, 1) == pytest.approx(1.0, abs=1e-10), fam
        assert adj(ds, "delta", fam, 1) > 0.6


def test_planted_rescale_scalar_fit_zero_and_scale_track(planted):
    ds, layers = planted
    for fam in MAT:
        assert adj(ds, "scalar_fit", fam, 2) < 1e-12
        assert math.isnan(adj(ds, "resid_eff_rank", fam, 2))  # zero residual: NaN, not 0
        s2, s3 = float(ds.scale.sel(family=fam, layer=2)), float(ds.scale.sel(family=fam, layer=3))
        assert s3 / s2 == pytest.approx(2.5, rel=1e-12)
        assert s2 == pytest.approx(float(layers[2][fam].norm()), rel=1e-12)
    assert "identical up to scale" in ds.attrs["warnings"]


def test_independent_gaussians_cos_zero_aligned_inside_gaussian_null(planted):
    ds, _ = planted
    for fam in MAT:
        assert abs(adj(ds, "cos", fam, 3)) < 0.3
        a = adj(ds, "aligned_cos", fam, 3)
        m = float(ds.aligned_null_mean.sel(null="gaussian", family=fam, layer=3))
        s = float(ds.aligned_null_std.sel(null="gaussian", family=fam, layer=3))
        assert abs(a - m) < 4 * s + 1e-3, (fam, a, m, s)


def test_planted_rank_r_update_residual_rank_r(planted):
    ds, _ = planted
    for fam in MAT:
        assert adj(ds, "resid_eff_rank", fam, 4) == pytest.approx(3.0, rel=1e-6), fam


def test_all_pairs_cos_equals_direct_computation(planted):
    ds, layers = planted
    for fam in MAT + ["input_ln"]:
        flat = torch.stack([layers[L][fam].reshape(-1) for L in range(6)])
        nrm = flat.norm(dim=1)
        want = (flat @ flat.T) / (nrm[:, None] * nrm[None, :])
        np.testing.assert_allclose(ds.cos.sel(family=fam).values, want.numpy(), atol=1e-12)


def test_all_pairs_aligned_is_symmetric_and_matches_adjacent(planted):
    ds, _ = planted
    a = ds.aligned_cos.sel(family="q_proj").values
    assert np.isfinite(a).all()
    np.testing.assert_allclose(a, a.T, atol=1e-12)
    # layers 0, 1 and 2 are one matrix up to a gauge rotation: every pair among them aligns to 1
    np.testing.assert_allclose(a[:3, :4], 1.0, atol=1e-10)


def test_dataset_schema(planted):
    ds, _ = planted
    assert set(ds.dims) >= {"family", "layer", "layer_b", "null", "mode", "pc"}
    assert list(ds.layer.values) == list(range(6)) and list(ds.layer_b.values) == list(range(6))
    assert list(ds.null.values) == ["gaussian", "scrambled", "permutation"]
    assert ds.sizes["mode"] == min(9, 6) and ds.sizes["pc"] == 6
    for v in ds.data_vars:
        if ds[v].dtype.kind == "f":
            assert ds[v].dtype == np.float64, v
    assert np.isnan(ds.cos.sel(family="q_norm")).all()  # absent family: NaN, not dropped
    assert np.isnan(ds.aligned_cos.sel(family="input_ln")).all()  # a rotation aligns any two vectors
    for key in ("source", "identity", "geomlib_version", "weights_params", "weights_created",
                "weights_schema_version", "quantization", "phase_method"):
        assert key in ds.attrs, key
    assert ds.phase.dims == ("layer",)
    for v, dims in GAMMA_NULL_DIMS.items():
        assert ds[v].dims == dims and ds[v].dtype == np.float64, v
        assert ds[v].attrs["description"], v
    assert "permutation" in ds.aligned_null_mean.attrs["description"]
    assert int(ds.attrs["weights_schema_version"]) == 3


def _write_degenerate(tmp_path, kind):
    def plant(L, fresh, prev):
        if L == 2:
            if kind == "zero":
                fresh["up_proj"] = torch.zeros_like(fresh["up_proj"])
            elif kind == "nan":
                fresh["up_proj"][3, 4] = math.nan
            else:
                del fresh["up_proj"]
        return fresh

    path, _ = synthetic.build(tmp_path / kind, 5, plant, dtype=torch.float32)
    return path


@pytest.mark.parametrize("kind, said", [("zero", "all zeros"), ("nan", "NaN or Inf"), ("missing", "has no up_proj")])
def test_degenerate_layers_give_nan_and_a_recorded_warning(tmp_path, kind, said):
    path = _write_degenerate(tmp_path, kind)
    with pytest.warns(GeomlibWarning, match=said):
        ds = geomlib.compute(path, analyses=["weights"], cache_dir=tmp_path / "c", progress=False,
                             weights={"null_draws": 0, "precision": "float64"})
    assert said in ds.attrs["warnings"]
    up = ds.cos.sel(family="up_proj")
    assert np.isnan(up.sel(layer=2)).all() and np.isnan(up.sel(layer_b=2)).all()
    assert np.isfinite(up.sel(layer=0, layer_b=1))
    for var in ("resid_norm", "aligned_cos"):
        assert np.isnan(adjacent(ds[var]).sel(family="up_proj", layer=[1, 2]) if var == "aligned_cos"
                        else ds[var].sel(family="up_proj", layer=[1, 2])).all()
    # other families are untouched
    assert np.isfinite(ds.cos.sel(family="gate_proj")).all()


def test_null_draws_zero_skips_baselines(tmp_path):
    path, _ = synthetic.build(tmp_path / "m", 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeomlibWarning)
        ds = geomlib.compute(path, analyses=["weights"], cache_dir=tmp_path / "c", progress=False,
                             weights={"null_draws": 0, "precision": "float64"})
    assert np.isnan(ds.aligned_null_mean).all()
    assert np.isfinite(adjacent(ds.aligned_cos).sel(family="q_proj")).all()


def test_bf16_checkpoint_is_computed_in_float64(tmp_path):
    path, layers = synthetic.build(tmp_path / "bf", 3, dtype=torch.bfloat16)
    ds = geomlib.compute(path, analyses=["weights"], cache_dir=tmp_path / "c", progress=False,
                         weights={"null_draws": 0, "precision": "float64"})
    w = [layers[L]["k_proj"].to(torch.bfloat16).double() for L in range(3)]
    want = float((w[0] * w[1]).sum() / (w[0].norm() * w[1].norm()))
    assert float(ds.cos.sel(family="k_proj", layer=0, layer_b=1)) == pytest.approx(want, abs=1e-13)


# --------------------------------------------------------------------------- gauge-aware nulls, end to end
def _shared_mean(layer: dict, g: torch.Generator) -> dict:
    """Every neuron/head row (output column for o, down) shares one direction, as trained MLP rows often do."""
    out = {}
    for fam, w in layer.items():
        if w.ndim == 1:
            out[fam] = w
        elif RESIDUAL_AXIS[fam] == 0:
            out[fam] = w + 3.0 * torch.randn(w.shape[0], 1, generator=g, dtype=torch.float64)
        else:
            out[fam] = w + 3.0 * torch.randn(1, w.shape[1], generator=g, dtype=torch.float64)
    return out


@pytest.fixture(scope="module")
def relabelled(tmp_path_factory):
    """4 layers: 0 random with shared mean rows, 1 = 0 relabelled by a true symmetry (neurons and GQA heads),
    2 and 3 random; input_ln gains alternate between two directions (their centered units are rank 1)."""
    g = torch.Generator().manual_seed(3)
    u = [torch.rand(32, generator=g, dtype=torch.float64) + 0.5 for _ in range(2)]

    def plant(L, fresh, prev):
        if L == 0:
            out = _shared_mean(fresh, g)
        elif L == 1:
            p = torch.randperm(48, generator=g)
            # the kv groups swapped and each group's query heads reversed: GQA-consistent, and no family unmoved
            hp, kp = torch.tensor([3, 2, 1, 0]), torch.tensor([1, 0])
            out = permute_layer(prev[0], p, hp, kp, head_dim=8)
            out["post_attn_ln"] = fresh["post_attn_ln"]  # random gains (permute_layer returns norms as they are)
        else:
            out = fresh
        out["input_ln"] = (1 + 0.5 * L) * u[L % 2]
        return out

    path, layers = synthetic.build(tmp_path_factory.mktemp("relabelled") / "m", 4, plant, dtype=torch.float64)
    ds = geomlib.compute(path, analyses=["weights"], cache_dir=tmp_path_factory.mktemp("cache"), progress=False,
                         weights={"null_draws": 16, "precision": "float64", "scrambled_null": True})
    return ds, layers


def _band(ds, null, fam, L):
    return (float(ds.aligned_null_mean.sel(null=null, family=fam, layer=L)),
            float(ds.aligned_null_std.sel(null=null, family=fam, layer=L)))


def test_relabelled_layer_sits_in_its_permutation_band_not_above_it(relabelled):
    ds, _ = relabelled
    for fam in MAT:
        a = adj(ds, "aligned_cos", fam, 0)
        pm, ps = _band(ds, "permutation", fam, 0)
        sm, ss = _band(ds, "scrambled", fam, 0)
        # layer 1 is the same function as layer 0: its aligned cos is one draw of the permutation null
        assert abs(a - pm) < 3 * ps + 1e-3, (fam, a, pm, ps)
        # the sign flips of the scrambled null destroy the shared rows: it reports an "excess" that is not there
        assert a > sm + 2 * ss and pm > sm + 2 * ss, (fam, a, sm, ss)
    text = "\n".join(seed000(ds))
    assert "verdict against the permutation null" in text
    rows = {ln.split()[0]: ln for ln in text.splitlines() if ln.strip().split(" ")[0].endswith("_proj") and "±" in ln}
    assert set(rows) == set(MAT)
    assert "null-corrected (aligned − permutation null mean)" in text


def test_permutation_band_is_the_metric_seeded_with_seed_plus_L(relabelled):
    ds, layers = relabelled
    for fam in ("q_proj", "v_proj", "o_proj", "up_proj", "down_proj"):
        bands = [permutation_aligned_null(layers[L][fam], layers[L + 1][fam], fam, 16, 0 + L + 1, n_heads=4,
                                          n_kv_heads=2, head_dim=8) for L in range(3)]
        for L, (m, _) in enumerate(bands):
            assert _band(ds, "permutation", fam, L)[0] == pytest.approx(m, rel=1e-12, abs=1e-14), (fam, L)
        # the band width is one draw's std pooled over the pairs: the root mean of their variances
        pooled = float(np.sqrt(np.mean([s**2 for _, s in bands])))
        for L in range(3):
            assert _band(ds, "permutation", fam, L)[1] == pytest.approx(pooled, rel=1e-12), (fam, L)


def test_norm_gains_have_no_permutation_band(relabelled):
    ds, _ = relabelled
    for fam in ("input_ln", "post_attn_ln"):
        assert np.isnan(ds.aligned_null_mean.sel(null="permutation", family=fam)).all()
    assert "no per-layer symmetry" in ds.aligned_null_mean.attrs["description"]


def test_gamma_pc1_against_the_coordinate_shuffle_null(relabelled):
    ds, _ = relabelled
    ex = ds.gamma_pca_explained.sel(family="input_ln")
    m, s = (float(ds[v].sel(family="input_ln", pc=0)) for v in ("gamma_pca_null_mean", "gamma_pca_null_std"))
    assert float(ex.isel(pc=0)) == pytest.approx(1.0, abs=1e-12)
    assert m + 2 * s < 0.95
    # random post_attn_ln gains: PC1 is what shuffled gains give
    pe = float(ds.gamma_pca_explained.sel(family="post_attn_ln", pc=0))
    pm, ps = (float(ds[v].sel(family="post_attn_ln", pc=0)) for v in ("gamma_pca_null_mean", "gamma_pca_null_std"))
    assert abs(pe - pm) < 3 * ps
    text = "\n".join(seed004(ds))
    assert "PC1 1.0000 exceeds the shuffle null" in text
    assert "mean-removed γ" in text
    assert np.isfinite(ds.gamma_centered_proj_top1.sel(family="input_ln")).all()
    assert np.isfinite(ds.gamma_abs_proj_top1_null_mean.sel(family="input_ln")).all()


def test_nan_gain_gives_nan_gamma_nulls_and_a_warning(tmp_path):
    def plant(L, fresh, prev):
        if L == 2:
            fresh["input_ln"][5] = math.nan
        return fresh

    path, _ = synthetic.build(tmp_path / "m", 4, plant, dtype=torch.float32)
    with pytest.warns(GeomlibWarning) as record:
        ds = geomlib.compute(path, analyses=["weights"], cache_dir=tmp_path / "c", progress=False,
                             weights={"null_draws": 4, "precision": "float64"})
    said = {str(w.message) for w in record if issubclass(w.category, GeomlibWarning)}
    assert said == {"layer 2 input_ln has NaN or Inf weights: its metrics are NaN",
                    "input_ln has a zero or non-finite gain vector: its γ PCA is NaN"}, said
    for v in ["gamma_pca_explained", "gamma_proj_top1", *GAMMA_NULL_DIMS]:
        assert np.isnan(ds[v].sel(family="input_ln")).all(), v
        assert np.isfinite(ds[v].sel(family="post_attn_ln")).any(), v
    assert "not available" in "\n".join(seed004(ds))


def test_nulls_are_deterministic_by_seed(tmp_path):
    path, _ = synthetic.build(tmp_path / "m", 3)
    run = lambda seed, c: geomlib.compute(path, analyses=["weights"], cache_dir=tmp_path / c,  # noqa: E731
                                          progress=False, weights={"null_draws": 3, "seed": seed})
    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    for v in ("aligned_null_mean", "aligned_null_std", *GAMMA_NULL_DIMS):
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
    assert not np.array_equal(a.aligned_null_mean.sel(null="permutation").values,
                              c.aligned_null_mean.sel(null="permutation").values, equal_nan=True)
    assert not np.array_equal(a.gamma_pca_null_mean.values, c.gamma_pca_null_mean.values, equal_nan=True)


def test_gamma_view_draws_the_shuffle_null_beside_the_bars(relabelled):
    from geomlib.plot.spec import Selection, build_panel
    from geomlib.plot.views.gamma import VIEW

    ds, _ = relabelled
    spec = next(p for p in VIEW.panels if p.title == "γ explained variance")
    sel = VIEW.selection(ds, Selection(family="input_ln"))
    panel = build_panel(spec, ds, sel)
    assert [t.type for t in panel.traces] == list(spec.traces) == ["bar", "scatter"]
    bar, null = panel.traces
    m = ds.gamma_pca_null_mean.sel(family="input_ln").values
    np.testing.assert_allclose(np.asarray(null.y), m[: len(bar.y)])
    # without the null (older caches, null_draws=0) the bars stay and the null trace is empty: same skeleton
    bare = build_panel(spec, ds.drop_vars(["gamma_pca_null_mean", "gamma_pca_null_std"]), sel)
    assert [t.type for t in bare.traces] == ["bar", "scatter"] and len(bare.traces[1].x) == 0
    assert not bare.note


def test_cos_pairs_adjacent_is_one_pass_with_the_same_adjacent_numbers(planted, tmp_path):
    """cos_pairs="adjacent" skips the Gram pass: adjacent cosines equal the all-pairs run's, the rest is NaN."""
    ds_all, _ = planted
    path = ds_all.attrs["source"]
    with pytest.warns(GeomlibWarning, match="identical up to scale"):
        ds = geomlib.compute(path, analyses=["weights"], cache_dir=tmp_path, progress=False,
                             weights={"cos_pairs": "adjacent", "aligned_pairs": "none", "null_draws": 0,
                                      "precision": "float64"})
    for fam in MAT:
        c = ds.cos.sel(family=fam).values
        ref = ds_all.cos.sel(family=fam).values
        n = c.shape[0]
        band = np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= 1
        np.testing.assert_allclose(c[band], ref[band], atol=1e-12)
        assert np.isnan(c[~band]).all(), fam
        for var in ("resid_norm", "scalar_fit", "scale"):
            np.testing.assert_allclose(ds[var].sel(family=fam).values, ds_all[var].sel(family=fam).values,
                                       atol=1e-12, equal_nan=True)
    # the norm gains are in memory after the one pass: their all-pairs cos is kept
    np.testing.assert_allclose(ds.cos.sel(family="input_ln").values, ds_all.cos.sel(family="input_ln").values,
                               atol=1e-12)


def test_gemma_gain_residuals_compare_effective_gains(tmp_path):
    """Gemma stores w and applies 1 + w: the adjacent residual of a gain is that of the effective gains 1 + w."""
    from tests.factories.hf import make_checkpoint

    path, model = make_checkpoint(tmp_path, "gemma", n_layers=3)
    ds = geomlib.compute(str(path), "weights", tmp_path / "c", progress=False,
                         weights={"null_draws": 0, "precision": "float64"})
    for L in range(2):
        a = 1 + model.layers[L].input_layernorm.weight.detach().double()
        b = 1 + model.layers[L + 1].input_layernorm.weight.detach().double()
        want = float((b / b.norm() - a / a.norm()).norm())
        assert adj(ds, "resid_norm", "input_ln", L) == pytest.approx(want, rel=1e-12)
        cos = float((a * b).sum() / (a.norm() * b.norm()))
        assert adj(ds, "cos", "input_ln", L) == pytest.approx(cos, rel=1e-12)
