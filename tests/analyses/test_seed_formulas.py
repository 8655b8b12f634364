"""The numbers of seed 003's and seed 004's formulas, computed the plain slow way inside the test.

The seeds loaded the whole model with transformers and used numpy on the
parameters; here the same formulas run on a tiny transformers model's
parameters and must agree with what geomlib streams from its checkpoint.
(Nothing is imported from the seeds.)
"""

from __future__ import annotations

import numpy as np
import pytest

import geomlib
from geomlib.analyses.phases import adjacent, phase_direction_stats
from tests.factories.hf import make_checkpoint

FAMILIES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
            "input_ln", "post_attn_ln", "q_norm", "k_norm"]


def seed_layers(model) -> list[dict[str, np.ndarray]]:
    """What seed 003 pulled out of ``model.model.layers`` (float64 here instead of float32)."""
    out = []
    for layer in model.layers:
        a, m = layer.self_attn, layer.mlp
        entry = {f: getattr(a, f).weight for f in ("q_proj", "k_proj", "v_proj", "o_proj")}
        entry.update({f: getattr(m, f).weight for f in ("gate_proj", "up_proj", "down_proj")})
        entry.update(input_ln=layer.input_layernorm.weight, post_attn_ln=layer.post_attention_layernorm.weight,
                     q_norm=a.q_norm.weight, k_norm=a.k_norm.weight)
        out.append({k: v.detach().double().numpy() for k, v in entry.items()})
    return out


def spec_entropy(singvals, eps=1e-12):  # seed 003's function
    p = singvals**2
    p = p / max(p.sum(), eps)
    p = np.clip(p, eps, 1.0)
    return float(-(p * np.log(p)).sum())


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    path, model = make_checkpoint(tmp_path_factory.mktemp("q3"), "qwen3", n_layers=5)
    ds = geomlib.compute(path, cache_dir=tmp_path_factory.mktemp("c"), progress=False, analyses=["weights"],
                         weights={"null_draws": 0, "precision": "float64"})
    return ds, seed_layers(model)


def test_seed003_pairs_scales_and_residual_spectra(qwen3):
    ds, layers = qwen3
    for L in range(len(layers) - 1):
        for fam in FAMILIES:
            Wa, Wb = layers[L][fam], layers[L + 1][fam]
            fa, fb = np.linalg.norm(Wa), np.linalg.norm(Wb)
            cos = float((Wa * Wb).sum() / (fa * fb))
            assert float(adjacent(ds.cos).sel(family=fam, layer=L)) == pytest.approx(cos, abs=1e-12)
            resid = np.sqrt(max(2 - 2 * cos, 0))
            assert float(ds.resid_norm.sel(family=fam, layer=L)) == pytest.approx(resid, abs=1e-12)
            fit = np.sqrt(max(1 - cos**2, 0))
            assert float(ds.scalar_fit.sel(family=fam, layer=L)) == pytest.approx(fit, abs=1e-12)
            assert float(ds.improve_frac.sel(family=fam, layer=L)) == pytest.approx((resid - fit) / resid, abs=1e-12)
            if Wa.ndim == 2:
                # the step seed 003 skipped ("Skip residual SVD") and printed as a silent 0
                delta = Wb / fb - Wa / fa
                se = spec_entropy(np.linalg.svd(delta, compute_uv=False))
                assert float(ds.resid_spec_entropy.sel(family=fam, layer=L)) == pytest.approx(se, abs=1e-9)
                assert float(ds.resid_eff_rank.sel(family=fam, layer=L)) == pytest.approx(np.exp(se), rel=1e-9)
    for fam in FAMILIES:
        want = [np.linalg.norm(layers[L][fam]) for L in range(len(layers))]
        np.testing.assert_allclose(ds.scale.sel(family=fam).values, want, rtol=1e-13)


def test_seed003_scale_track_pca(qwen3):
    ds, layers = qwen3
    scale_matrix = np.array([np.log([np.linalg.norm(layers[L][f]) for L in range(len(layers))]) for f in FAMILIES])
    sm_c = scale_matrix - scale_matrix.mean(axis=1, keepdims=True)
    U, S, Vh = np.linalg.svd(sm_c, full_matrices=False)
    k = len(S)
    assert ds.sizes["mode"] == k == min(len(FAMILIES), len(layers))
    np.testing.assert_allclose(ds.scale_pca_explained.values, S**2 / (S**2).sum(), atol=1e-12)
    loadings = ds.scale_pca_loadings.sel(family=FAMILIES).values
    scores = ds.scale_pca_scores.values
    for i in range(k - 1):  # the last mode is numerically zero (centering): its direction is arbitrary
        sign = np.sign(loadings[:, i] @ U[:, i])
        np.testing.assert_allclose(sign * loadings[:, i], U[:, i], atol=1e-9)
        np.testing.assert_allclose(sign * scores[i], (np.diag(S) @ Vh)[i], atol=1e-9)


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    # 64 layers: seed 004 hard-codes the Qwen3-32B phase boundaries, which geomlib's preset reproduces
    path, model = make_checkpoint(tmp_path_factory.mktemp("deep"), "qwen3", n_layers=64)
    ds = geomlib.compute(path, cache_dir=tmp_path_factory.mktemp("c"), progress=False, analyses=["weights"],
                         weights={"null_draws": 0}, phases="seed")
    gammas = np.stack([layer.input_layernorm.weight.detach().double().numpy() for layer in model.layers])
    return ds, gammas


def seed004_phase(L):
    if L <= 6: return "A"  # noqa: E701
    if L <= 9: return "B"  # noqa: E701
    if L <= 31: return "C"  # noqa: E701
    if L <= 46: return "D"  # noqa: E701
    if L <= 58: return "E"  # noqa: E701
    return "tail"


def test_seed004_gamma_directions(deep):
    ds, gammas = deep
    n = len(gammas)
    norms = np.linalg.norm(gammas, axis=1)
    units = gammas / norms[:, None]
    cos_mat = units @ units.T
    centered = units - units.mean(axis=0, keepdims=True)
    _, S, Vt = np.linalg.svd(centered, full_matrices=False)
    explained = S**2 / (S**2).sum()
    proj_top1 = units @ Vt[0]
    resid = np.sqrt(np.maximum(1 - proj_top1**2, 0))

    np.testing.assert_allclose(ds.gamma_norm.sel(family="input_ln").values, norms, rtol=1e-13)
    np.testing.assert_allclose(ds.cos.sel(family="input_ln").values, cos_mat, atol=1e-12)
    got_ex = ds.gamma_pca_explained.sel(family="input_ln").values
    np.testing.assert_allclose(got_ex[: len(S)], explained, atol=1e-12)
    assert np.isnan(got_ex[len(S):]).all()  # n_layers components kept, beyond the rank: NaN
    # PC1's sign is arbitrary in numpy, deterministic in geomlib
    got_proj = ds.gamma_proj_top1.sel(family="input_ln").values
    np.testing.assert_allclose(np.sign(got_proj @ proj_top1) * got_proj, proj_top1, atol=1e-10)
    np.testing.assert_allclose(ds.gamma_resid_top1.sel(family="input_ln").values, resid, atol=1e-10)

    assert [str(p) for p in ds.phase.values] == [seed004_phase(L) for L in range(n)]
    stats = phase_direction_stats(ds, "input_ln")
    for ph in ["A", "B", "C", "D", "E", "tail"]:
        Ls = [L for L in range(n) if seed004_phase(L) == ph]
        u = units[Ls]
        intra = (u @ u.T)[np.triu_indices(len(Ls), k=1)]
        other = units[[L for L in range(n) if L not in Ls]]
        s = stats.sel(phase=ph)
        assert int(s.n) == len(Ls)
        assert float(s.norm_mean) == pytest.approx(norms[Ls].mean(), rel=1e-13)
        assert float(s.norm_std) == pytest.approx(norms[Ls].std(), rel=1e-10)
        assert float(s.intra_cos) == pytest.approx(intra.mean(), abs=1e-12)
        assert float(s.vs_other_cos) == pytest.approx((u @ other.T).mean(), abs=1e-12)
    adj = adjacent(ds.cos.sel(family="input_ln")).values
    np.testing.assert_allclose(adj, [cos_mat[L, L + 1] for L in range(n - 1)], atol=1e-12)
