"""Gauge-aware neuron and head matching: planted symmetries, dense references, nulls, degenerate inputs."""

from __future__ import annotations

import functools
import itertools
import math
import time
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomlib.arch.symmetry import symmetry_group
from geomlib.errors import GeomlibWarning, InvalidArgumentError
from geomlib.metrics.gauge_nulls import permutation_null, random_orthogonal, residual_rotation_null, rotate_residual
from geomlib.metrics.head_matching import assign_heads, head_cos, match_heads
from geomlib.metrics.matching import fold_norm, fold_norms, match_neurons, neuron_similarity

D = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def mlp(I, h, seed, gated=True):
    g = gen(seed)
    w = {"up_proj": torch.randn(I, h, generator=g, dtype=D), "down_proj": torch.randn(h, I, generator=g, dtype=D)}
    if gated:
        w["gate_proj"] = torch.randn(I, h, generator=g, dtype=D)
    return w


def transform_mlp(w, sigma, c):
    """Layer b = layer a with neurons reordered (b's neuron j is a's neuron sigma[j]) and (up, down) scaled by c."""
    out = {"up_proj": w["up_proj"][sigma] * c[:, None], "down_proj": w["down_proj"][:, sigma] / c[None, :]}
    if "gate_proj" in w:
        out["gate_proj"] = w["gate_proj"][sigma]
    return out


def group_scales(I, scale, g):
    mag = torch.rand(I, generator=g, dtype=D) * 4 + 0.25
    if scale == "signed":
        return mag * (torch.randint(0, 2, (I,), generator=g) * 2 - 1)
    return mag if scale == "positive" else torch.ones(I, dtype=D)


# ------------------------------------------------------------------------------------------- neurons
@pytest.mark.parametrize("scale, gated", [("signed", True), ("positive", False), ("none", False), ("none", True)])
def test_similarity_matches_dense_per_neuron_reference(scale, gated):
    I, h = 7, 5
    a, b = mlp(I, h, 0, gated), mlp(I, h, 1, gated)
    S = torch.from_numpy(neuron_similarity(a, b, scale))

    def views(w):
        u, d = w["up_proj"], w["down_proj"].T
        fams = {"gate": [w["gate_proj"][i] for i in range(I)]} if gated else {}
        if scale == "signed":  # the rank-1 map of each neuron, formed explicitly (hidden x hidden)
            fams["up_down"] = [torch.outer(d[i], u[i]).flatten() for i in range(I)]
        elif scale == "positive":
            fams["up"] = [u[i] / u[i].norm() for i in range(I)]
            fams["down"] = [d[i] * u[i].norm() for i in range(I)]
        else:
            fams["up"], fams["down"] = list(u), list(d)
        return fams

    va, vb = views(a), views(b)
    ref = torch.zeros(I, I, dtype=D)
    for f in va:
        Xa, Xb = torch.stack(va[f]), torch.stack(vb[f])
        ref += Xa @ Xb.T / (Xa.norm() * Xb.norm())
    torch.testing.assert_close(S, ref, rtol=1e-12, atol=1e-13)
    # negate gives -S in the same buffer layout (the cost handed to linear_sum_assignment)
    torch.testing.assert_close(torch.from_numpy(neuron_similarity(a, b, scale, negate=True)), -ref,
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, D])
@pytest.mark.parametrize("scale, gated", [("signed", True), ("positive", True), ("none", False)])
def test_similarity_in_row_blocks_equals_one_block(monkeypatch, scale, gated, dtype):
    """Blocks written through reused buffers (a ragged last one included) give the one-block matrix.

    Not bit for bit: BLAS sums a block's products in an order that depends on its shape."""
    import geomlib.metrics.matching as mm

    I, h = 37, 6
    a, b = mlp(I, h, 2, gated), mlp(I, h, 3, gated)
    whole = neuron_similarity(a, b, scale, compute_dtype=dtype, negate=True)
    monkeypatch.setattr(mm, "BLOCK_ENTRIES", 5 * I)  # blocks of 5 rows: 7 full ones and a 2-row tail
    monkeypatch.setattr(mm, "ROW_ENTRIES", 3 * h)
    blocked = neuron_similarity(a, b, scale, compute_dtype=dtype, negate=True)
    tol = dict(rtol=0, atol=1e-12) if dtype == D else dict(rtol=0, atol=1e-6)  # entries are cosine terms, |S| <= 2
    np.testing.assert_allclose(blocked, whole, **tol)
    out = np.full((I, I), np.nan)
    assert neuron_similarity(a, b, scale, compute_dtype=dtype, negate=True, out=out) is out
    np.testing.assert_array_equal(out, blocked)
    m_whole = match_neurons(a, b, scale, compute_dtype=dtype)
    monkeypatch.setattr(mm, "BLOCK_ENTRIES", 1 << 21)
    m_block = match_neurons(a, b, scale, compute_dtype=dtype)
    assert torch.equal(m_whole.perm, m_block.perm)
    for k, v in m_whole.matched_cos.items():
        assert m_block.matched_cos[k] == pytest.approx(v, rel=1e-12, abs=1e-15)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), I=st.integers(2, 40), h=st.integers(6, 20),
       scale=st.sampled_from(["signed", "positive", "none"]))
def test_permuted_rescaled_copy_matches_with_cos_one(seed, I, h, scale):
    g = gen(seed + 7)
    a = mlp(I, h, seed, gated=scale == "signed")
    sigma = torch.randperm(I, generator=g)
    b = transform_mlp(a, sigma, group_scales(I, scale, g))
    m = match_neurons(a, b, scale)
    for fam, v in m.matched_cos.items():
        assert v == pytest.approx(1.0, rel=1e-9), fam
    assert torch.equal(sigma[m.perm], torch.arange(I))  # b[perm] is a: the planted permutation, inverted


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.sampled_from(["signed", "positive", "none"]))
def test_matched_cos_is_invariant_under_the_group_of_either_layer(seed, scale):
    I, h = 24, 10
    g = gen(seed + 3)
    a, b = mlp(I, h, seed, scale == "signed"), mlp(I, h, seed + 1, scale == "signed")
    base = match_neurons(a, b, scale)
    a2 = transform_mlp(a, torch.randperm(I, generator=g), group_scales(I, scale, g))
    b2 = transform_mlp(b, torch.randperm(I, generator=g), group_scales(I, scale, g))
    moved = match_neurons(a2, b2, scale)
    for fam in base.matched_cos:
        assert moved.matched_cos[fam] == pytest.approx(base.matched_cos[fam], rel=1e-9, abs=1e-12), fam


def test_same_index_cos_is_not_invariant_but_matched_is():
    a = mlp(32, 12, 0)
    b = transform_mlp(a, torch.randperm(32, generator=gen(1)), torch.ones(32, dtype=D))
    m = match_neurons(a, b)
    assert m.matched_cos["gate"] == pytest.approx(1.0, rel=1e-12)
    assert abs(m.same_index_cos["gate"]) < 0.5
    assert m.frac_fixed < 0.2


def test_independent_layers_fall_inside_the_rotation_null_band():
    a, b = mlp(48, 16, 0), mlp(48, 16, 1)
    m = match_neurons(a, b)
    band = residual_rotation_null(a, b, match_neurons, draws=12, seed=5)
    for fam in ("gate", "up_down", "mean"):
        assert abs(m.matched_cos[fam] - band.mean[fam]) < 4 * band.std[fam], (fam, m.matched_cos, band.mean)
        assert len(band.values[fam]) == 12
    # matching finds something even between unrelated layers: the band is far above 0
    assert band.mean["gate"] > 5 * band.std["gate"]


def test_residual_rotation_is_function_changing_for_the_pair():
    a = mlp(40, 16, 0)
    sigma = torch.randperm(40, generator=gen(2))
    b = transform_mlp(a, sigma, group_scales(40, "signed", gen(3)))
    rotated = rotate_residual(b, random_orthogonal(16, gen(4)))
    assert match_neurons(a, b).matched_cos["mean"] == pytest.approx(1.0, rel=1e-12)
    m = match_neurons(a, rotated)
    assert m.matched_cos["gate"] < 0.8 and m.matched_cos["up_down"] < 0.8
    # the rotated layer itself is intact: matched to its unrotated self through the same rotation it is 1
    R = random_orthogonal(16, gen(4))
    back = match_neurons(rotate_residual(a, R), rotated)
    assert back.matched_cos["mean"] == pytest.approx(1.0, rel=1e-12)


def test_random_orthogonal_is_orthogonal_and_seeded():
    R = random_orthogonal(9, gen(0))
    torch.testing.assert_close(R @ R.T, torch.eye(9, dtype=D), rtol=0, atol=1e-13)
    assert torch.equal(R, random_orthogonal(9, gen(0)))


def test_float32_products_find_the_same_permutation_and_report_float64():
    a = mlp(200, 64, 0)
    sigma = torch.randperm(200, generator=gen(1))
    b = transform_mlp(a, sigma, group_scales(200, "signed", gen(2)))
    b = {k: v + 0.3 * torch.randn(v.shape, generator=gen(3), dtype=D) * v.std() for k, v in b.items()}
    m64, m32 = match_neurons(a, b), match_neurons(a, b, compute_dtype=torch.float32)
    assert torch.equal(m64.perm, m32.perm)
    # recomputed for the same permutation with float64 sums of float32 products: relative 1e-7
    for k, v in m64.matched_cos.items():
        assert m32.matched_cos[k] == pytest.approx(v, rel=1e-6), k


def test_permutation_null_keeps_the_function_and_destroys_same_index_cos():
    a = mlp(64, 16, 0)
    band = permutation_null(a, a, "raw", draws=10, seed=1)
    assert set(band.mean) == {"gate_proj", "up_proj", "down_proj"}
    for f, mu in band.mean.items():
        assert abs(mu) < 0.15, f  # the same function in another neuron order: raw cos ≈ 0 instead of 1
    aligned = permutation_null(a, a, "aligned", draws=4, seed=1)
    assert all(0 < v < 1 for v in aligned.mean.values())
    assert permutation_null(a, a, "raw", draws=10, seed=1) == band  # seeded
    with pytest.raises(InvalidArgumentError):
        permutation_null(a, a, "matched")


def test_degenerate_families_give_nan_with_a_warning():
    a = mlp(10, 6, 0)
    b = dict(mlp(10, 6, 1), gate_proj=torch.zeros(10, 6, dtype=D))
    with pytest.warns(GeomlibWarning, match="gate"):
        m = match_neurons(a, b)
    assert math.isnan(m.matched_cos["gate"]) and math.isnan(m.matched_cos["mean"])
    assert math.isfinite(m.matched_cos["up_down"]) and m.perm is not None
    bad = dict(b, up_proj=torch.full((10, 6), math.nan, dtype=D))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = match_neurons(a, bad)
    msgs = [str(w.message) for w in caught if issubclass(w.category, GeomlibWarning)]
    assert any("'gate'" in x for x in msgs) and any("'up_down'" in x for x in msgs)
    assert any("no MLP family" in x for x in msgs)
    assert all(w.filename == __file__ for w in caught)  # attributed to the caller, not to geomlib
    assert m.perm is None and all(math.isnan(v) for v in m.matched_cos.values())


def test_bad_arguments_raise_one_sentence_errors():
    a = mlp(10, 6, 0)
    with pytest.raises(InvalidArgumentError, match="same MLP families"):
        match_neurons(a, mlp(11, 6, 0))
    with pytest.raises(InvalidArgumentError, match="scale"):
        match_neurons(a, a, "orthogonal")
    with pytest.raises(InvalidArgumentError, match="inconsistent"):
        match_neurons(a, dict(a, down_proj=a["down_proj"][:, :5]))
    with pytest.raises(InvalidArgumentError, match="same MLP families"):
        match_neurons(a, mlp(10, 6, 1, gated=False), "none")


def test_scale_3072_by_1024_runs():
    # unrelated layers: the hard case for the assignment (a near-copy solves in milliseconds)
    I, h = 3072, 1024
    a, b = mlp(I, h, 0), mlp(I, h, 1)
    t = time.perf_counter()
    m = match_neurons(a, b)
    elapsed = time.perf_counter() - t
    assert torch.equal(m.perm.sort().values, torch.arange(I))
    assert m.matched_cos["mean"] > m.same_index_cos["mean"]
    assert 0 < m.matched_cos["gate"] < 0.3  # about √(2 ln I / h) for random rows
    assert elapsed < 60, elapsed


# ------------------------------------------------------------------------------------------- norms
def test_fold_norms_uses_the_invariant_representative():
    g = gen(0)
    w = dict(mlp(6, 4, 0), q_proj=torch.randn(8, 4, generator=g, dtype=D),
             input_ln=torch.randn(4, generator=g, dtype=D), post_attn_ln=torch.randn(4, generator=g, dtype=D))
    folds = symmetry_group("llama").norm_folds
    out = fold_norms(w, folds)
    assert "input_ln" not in out and "post_attn_ln" not in out
    torch.testing.assert_close(out["q_proj"], w["q_proj"] @ torch.diag(w["input_ln"]))
    torch.testing.assert_close(out["gate_proj"], w["gate_proj"] @ torch.diag(w["post_attn_ln"]))
    torch.testing.assert_close(out["down_proj"], w["down_proj"])  # down reads no norm
    # the gain/column trade γ → γ s, W → W diag(1/s) leaves the folded matrices unchanged
    s = torch.rand(4, generator=g, dtype=D) + 0.5
    moved = dict(w, input_ln=w["input_ln"] * s, q_proj=w["q_proj"] / s)
    torch.testing.assert_close(fold_norms(moved, folds)["q_proj"], out["q_proj"], rtol=1e-13, atol=1e-13)
    # Gemma stores w and applies 1 + w
    torch.testing.assert_close(fold_norm(w["q_proj"], w["input_ln"], 1.0), w["q_proj"] * (1 + w["input_ln"]))
    with pytest.raises(InvalidArgumentError):
        fold_norm(w["q_proj"], w["post_attn_ln"][:3])


# ------------------------------------------------------------------------------------------- heads
def attn(H, KV, d, hidden, seed):
    g = gen(seed)
    return {"q_proj": torch.randn(H * d, hidden, generator=g, dtype=D),
            "k_proj": torch.randn(KV * d, hidden, generator=g, dtype=D),
            "v_proj": torch.randn(KV * d, hidden, generator=g, dtype=D),
            "o_proj": torch.randn(hidden, H * d, generator=g, dtype=D)}


def transform_heads(w, H, KV, d, src, A, B):
    """Layer b: its head h' is a's head src[h'] (GQA-consistent), with per-kv-group gauges A (QK) and B (OV)."""
    g = H // KV
    q = w["q_proj"].reshape(H, d, -1)
    k, v = w["k_proj"].reshape(KV, d, -1), w["v_proj"].reshape(KV, d, -1)
    o = w["o_proj"].reshape(-1, H, d)
    ksrc = [src[kk * g] // g for kk in range(KV)]
    out_q = torch.stack([A[ksrc[h // g]] @ q[src[h]] for h in range(H)])
    out_k = torch.stack([torch.linalg.inv(A[ksrc[kk]]).T @ k[ksrc[kk]] for kk in range(KV)])
    out_v = torch.stack([B[ksrc[kk]] @ v[ksrc[kk]] for kk in range(KV)])
    out_o = torch.stack([o[:, src[h]] @ torch.linalg.inv(B[ksrc[h // g]]) for h in range(H)], dim=1)
    return {"q_proj": out_q.reshape(H * d, -1), "k_proj": out_k.reshape(KV * d, -1),
            "v_proj": out_v.reshape(KV * d, -1), "o_proj": out_o.reshape(-1, H * d)}


def gqa_source(H, KV, g_):
    """A random GQA-consistent head order: permute the kv groups, then heads inside each group."""
    grp = H // KV
    gperm = torch.randperm(KV, generator=g_)
    inner = [torch.randperm(grp, generator=g_) for _ in range(KV)]
    return [int(gperm[h // grp]) * grp + int(inner[h // grp][h % grp]) for h in range(H)]


def test_head_cos_matches_dense_operators():
    H, KV, d, hidden = 4, 2, 3, 11
    a, b = attn(H, KV, d, hidden, 0), attn(H, KV, d, hidden, 1)

    def dense(w, kind):
        q, k = w["q_proj"].reshape(H, d, -1), w["k_proj"].reshape(KV, d, -1)
        v, o = w["v_proj"].reshape(KV, d, -1), w["o_proj"].reshape(-1, H, d)
        if kind == "qk":
            return [q[h].T @ k[h // 2] for h in range(H)]
        return [o[:, h] @ v[h // 2] for h in range(H)]

    for kind in ("qk", "ov"):
        Ma, Mb = dense(a, kind), dense(b, kind)
        ref = torch.tensor([[float((x * y).sum() / (x.norm() * y.norm())) for y in Mb] for x in Ma], dtype=D)
        torch.testing.assert_close(head_cos(a, b, H, KV, d, kind), ref, rtol=1e-12, atol=1e-13)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), shape=st.sampled_from([(4, 2, 3), (6, 2, 2), (4, 4, 3), (6, 1, 2), (8, 4, 2)]))
def test_gqa_permutation_and_gl_d_gauge_copy_has_head_matched_cos_one(seed, shape):
    H, KV, d = shape
    hidden = 12
    g_ = gen(seed + 1)
    a = attn(H, KV, d, hidden, seed)
    src = gqa_source(H, KV, g_)
    A = [torch.randn(d, d, generator=g_, dtype=D) + 3 * torch.eye(d, dtype=D) for _ in range(KV)]
    B = [torch.randn(d, d, generator=g_, dtype=D) + 3 * torch.eye(d, dtype=D) for _ in range(KV)]
    b = transform_heads(a, H, KV, d, src, A, B)
    m = match_heads(a, b, H, KV, d, "gqa-groups")
    for op, v in m.matched_cos.items():
        assert v == pytest.approx(1.0, rel=1e-9), op
    # a's head h is b's head perm[h], and b's head h' came from a's head src[h']
    assert [src[int(p)] for p in m.perm] == list(range(H))
    assert m.same_index["qk"].shape == (H,) and m.different_index["ov"].shape == (H * (H - 1),)


@pytest.mark.parametrize("enumerate_max", [6, 1])  # within-group optimum by enumeration, and by linear_sum_assignment
def test_gqa_assignment_is_the_exact_optimum_over_consistent_permutations(monkeypatch, enumerate_max):
    import geomlib.metrics.head_matching as hm

    monkeypatch.setattr(hm, "ENUMERATE_MAX_GROUP", enumerate_max)
    H, KV = 6, 2
    grp = H // KV
    score = torch.randn(H, H, generator=gen(0), dtype=D)
    perm, gperm = assign_heads(score, KV, "gqa-groups")
    best = -math.inf
    for gp in itertools.permutations(range(KV)):
        for inner in itertools.product(itertools.permutations(range(grp)), repeat=KV):
            p = [gp[k] * grp + inner[k][i] for k in range(KV) for i in range(grp)]
            best = max(best, float(score[torch.arange(H), torch.tensor(p)].sum()))
    assert float(score[torch.arange(H), perm].sum()) == pytest.approx(best, rel=1e-12)
    assert all(int(perm[h]) // grp == int(gperm[h // grp]) for h in range(H))
    free, none = assign_heads(score, KV, "free")
    assert none is None and float(score[torch.arange(H), free].sum()) >= best - 1e-12
    with pytest.raises(InvalidArgumentError):
        assign_heads(score, KV, "any")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), shape=st.sampled_from([(4, 2), (8, 4), (9, 3), (12, 2), (16, 8), (12, 3)]),
       ties=st.booleans())
def test_gqa_assignment_by_enumeration_equals_the_assignment_solver(seed, shape, ties):
    """Within-group optima enumerated over all g! orders pick what linear_sum_assignment picks (ties too)."""
    import geomlib.metrics.head_matching as hm

    H, KV = shape
    score = torch.randn(H, H, generator=gen(seed), dtype=D)
    if ties:  # identical heads: many optima, the identity order among them
        score = score.round(decimals=0)
    fast = assign_heads(score, KV)
    old = hm.ENUMERATE_MAX_GROUP
    try:
        hm.ENUMERATE_MAX_GROUP = 0
        slow = assign_heads(score, KV)
    finally:
        hm.ENUMERATE_MAX_GROUP = old
    idx = torch.arange(H)
    assert float(score[idx, fast[0]].sum()) == pytest.approx(float(score[idx, slow[0]].sum()), abs=1e-12)
    if not ties:  # continuous scores: the optimum is unique
        assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])


def test_heads_of_independent_layers_sit_in_the_rotation_null_band_and_rotation_breaks_a_copy():
    H, KV, d, hidden = 4, 2, 3, 16
    a, b = attn(H, KV, d, hidden, 0), attn(H, KV, d, hidden, 1)
    match = functools.partial(match_heads, n_heads=H, n_kv_heads=KV, head_dim=d)
    band = residual_rotation_null(a, b, match, draws=12, seed=0)
    m = match(a, b)
    for op in ("qk", "ov"):
        assert abs(m.matched_cos[op] - band.mean[op]) < 4 * band.std[op]
    rotated = match(a, rotate_residual(a, random_orthogonal(hidden, gen(9))))
    assert rotated.matched_cos["mean"] < 0.7


def test_degenerate_head_gives_nan_and_a_warning():
    H, KV, d, hidden = 4, 2, 2, 8
    a, b = attn(H, KV, d, hidden, 0), attn(H, KV, d, hidden, 1)
    b["o_proj"][:, :d] = 0  # head 0 of b writes nothing
    with pytest.warns(GeomlibWarning, match="OV"):
        m = match_heads(a, b, H, KV, d)
    assert torch.isnan(m.cos["ov"][:, 0]).all() and not torch.isnan(m.cos["qk"]).any()
    assert math.isnan(m.matched_cos["ov"]) and math.isfinite(m.matched_cos["qk"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        match_heads(a, a, H, KV, d)  # nothing degenerate: no warning


# ------------------------------------------------------------------------------------ RoPE-resolved QK
def rope_block(d, r, pair, scale, angle):
    A = torch.eye(d, dtype=D)
    i, j = pair, pair + r // 2
    c, s = math.cos(angle), math.sin(angle)
    A[i, i], A[i, j], A[j, i], A[j, j] = scale * c, -scale * s, scale * s, scale * c
    return A


def dense_rope_products(wa, wb, d, r):
    """Σ_p ½(⟨M_p, M'_p⟩ + ⟨N_p, N'_p⟩) + ⟨M_rest, M'_rest⟩ for one head each, hidden x hidden matrices formed."""
    J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=D)
    qa, ka, qb, kb = wa["q_proj"], wa["k_proj"], wb["q_proj"], wb["k_proj"]
    total = 0.0
    for p in range(r // 2):
        ix = [p, p + r // 2]
        Ma, Mb = qa[ix].T @ ka[ix], qb[ix].T @ kb[ix]
        Na, Nb = qa[ix].T @ J @ ka[ix], qb[ix].T @ J @ kb[ix]
        total += 0.5 * float((Ma * Mb).sum() + (Na * Nb).sum())
    if r < d:
        total += float((qa[r:].T @ ka[r:] * (qb[r:].T @ kb[r:])).sum())
    return total


@pytest.mark.parametrize("d, r", [(4, 4), (6, 2), (6, 4), (4, 0)])
def test_qk_rope_cos_matches_the_dense_pair_decomposition(d, r):
    a, b = attn(1, 1, d, 9, 0), attn(1, 1, d, 9, 1)
    norm2 = dense_rope_products(a, a, d, r) * dense_rope_products(b, b, d, r)
    ref = dense_rope_products(a, b, d, r) / math.sqrt(norm2)
    assert float(head_cos(a, b, 1, 1, d, "qk_rope", rotary_dim=r)) == pytest.approx(ref, rel=1e-12)


def test_qk_rope_product_is_the_average_over_relative_positions():
    # ⟨W_Qᵀ R_δ W_K, W'_Qᵀ R_δ W'_K⟩ averaged over δ = 0..T-1; frequencies 2π k / T with distinct k make the
    # discrete average of every cos/sin product exact, so the identity holds to rounding
    d, r, T = 6, 4, 64
    a, b = attn(1, 1, d, 7, 0), attn(1, 1, d, 7, 1)
    theta = [2 * math.pi * 5 / T, 2 * math.pi * 11 / T]
    acc = 0.0
    for delta in range(T):
        R = rope_block(d, r, 0, 1.0, theta[0] * delta) @ rope_block(d, r, 1, 1.0, theta[1] * delta)
        Ma, Mb = a["q_proj"].T @ R @ a["k_proj"], b["q_proj"].T @ R @ b["k_proj"]
        acc += float((Ma * Mb).sum())
    assert acc / T == pytest.approx(dense_rope_products(a, b, d, r), rel=1e-10)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.2, 5.0), angle=st.floats(-3.0, 3.0))
def test_qk_rope_cos_is_invariant_under_the_rope_group_only(seed, scale, angle):
    H, KV, d, r, hidden = 4, 2, 6, 4, 10
    a = attn(H, KV, d, hidden, seed)
    A = rope_block(d, r, 1, scale, angle) @ rope_block(d, r, 0, 1 / scale, -angle / 2)
    A[r:, r:] += torch.randn(d - r, d - r, generator=gen(seed), dtype=D)  # GL on the pass-through dims
    A[r:, r:] += 3 * torch.eye(d - r, dtype=D)
    b = transform_heads(a, H, KV, d, list(range(H)), [A] * KV, [torch.eye(d, dtype=D)] * KV)
    m = match_heads(a, b, H, KV, d, operators=("qk_rope", "qk"), rotary_dim=r)
    assert m.matched_cos["qk_rope"] == pytest.approx(1.0, rel=1e-9)
    # a generic GL(d) keeps the plain operator (cos 1) but changes the function, which qk_rope sees
    G = torch.randn(d, d, generator=gen(seed + 1), dtype=D) + 3 * torch.eye(d, dtype=D)
    c = transform_heads(a, H, KV, d, list(range(H)), [G] * KV, [torch.eye(d, dtype=D)] * KV)
    assert torch.diagonal(head_cos(a, c, H, KV, d, "qk")).sub(1).abs().max() < 1e-9
    assert torch.diagonal(head_cos(a, c, H, KV, d, "qk_rope", rotary_dim=r)).max() < 1 - 1e-6


def test_qk_rope_needs_a_valid_rotary_dim():
    a = attn(2, 2, 4, 8, 0)
    with pytest.raises(InvalidArgumentError, match="rotary_dim"):
        head_cos(a, a, 2, 2, 4, "qk_rope")
    with pytest.raises(InvalidArgumentError, match="rotary_dim"):
        head_cos(a, a, 2, 2, 4, "qk_rope", rotary_dim=3)


def test_head_arguments_are_validated():
    a = attn(4, 2, 3, 8, 0)
    with pytest.raises(InvalidArgumentError, match="kind"):
        head_cos(a, a, 4, 2, 3, "vo")
    with pytest.raises(InvalidArgumentError, match="multiple"):
        head_cos(a, a, 4, 3, 3, "qk")
    with pytest.raises(InvalidArgumentError, match="q_proj"):
        head_cos(a, a, 4, 2, 2, "qk")
    with pytest.raises(InvalidArgumentError, match="finite"):
        assign_heads(torch.full((4, 4), math.nan, dtype=D), 2)
    with pytest.raises(InvalidArgumentError, match="C-contiguous"):
        import numpy as np
        neuron_similarity(mlp(5, 3, 0), mlp(5, 3, 1), out=np.empty((5, 5), dtype=np.float32))
