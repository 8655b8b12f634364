"""Q/K/V-composition scores: dense reference, known answers, gauge invariance, the random baseline."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomlib.errors import GeomlibWarning, InvalidArgumentError
from geomlib.metrics.composition import (
    composition_baseline,
    composition_null,
    composition_scores,
    factored_composition,
)
from geomlib.metrics.gauge_nulls import random_orthogonal, rotate_residual

D = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


def layer(H, KV, d, hidden, seed):
    return {"q_proj": rand(H * d, hidden, seed=seed), "k_proj": rand(KV * d, hidden, seed=seed + 1),
            "v_proj": rand(KV * d, hidden, seed=seed + 2), "o_proj": rand(hidden, H * d, seed=seed + 3)}


def dense(w, H, KV, d):
    """W_QK = W_Qᵀ W_K and W_OV = W_O W_V per head, hidden x hidden, HF [out, in] weights."""
    g = H // KV
    q, k = w["q_proj"].reshape(H, d, -1), w["k_proj"].reshape(KV, d, -1)
    v, o = w["v_proj"].reshape(KV, d, -1), w["o_proj"].reshape(-1, H, d)
    return [q[h].T @ k[h // g] for h in range(H)], [o[:, h] @ v[h // g] for h in range(H)]


@pytest.mark.parametrize("H, KV, d, hidden", [(4, 2, 3, 13), (3, 3, 4, 10), (4, 1, 2, 6)])
def test_scores_match_the_dense_definitions(H, KV, d, hidden):
    src, dst = layer(H, KV, d, hidden, 0), layer(H, KV, d, hidden, 10)
    _, ov1 = dense(src, H, KV, d)
    qk2, ov2 = dense(dst, H, KV, d)
    got = composition_scores(src, dst, H, KV, d)

    def score(X, Y):
        return float((X @ Y).norm() / (X.norm() * Y.norm()))

    for h1 in range(H):
        for h2 in range(H):
            assert float(got["q"][h1, h2]) == pytest.approx(score(qk2[h2].T, ov1[h1]), rel=1e-10)
            assert float(got["k"][h1, h2]) == pytest.approx(score(qk2[h2], ov1[h1]), rel=1e-10)
            assert float(got["v"][h1, h2]) == pytest.approx(score(ov2[h2], ov1[h1]), rel=1e-10)
    assert set(composition_scores(src, dst, H, KV, d, kinds=("v",))) == {"v"}


def test_known_answers_on_basis_vectors():
    # hidden 4, one head of dim 1: h1 reads e2 and writes e1; h2's key reads e1, its query e3
    e = torch.eye(4, dtype=D)
    src = {"o_proj": e[:, [0]], "v_proj": e[[1]]}
    dst = {"q_proj": e[[2]], "k_proj": e[[0]], "v_proj": e[[0]], "o_proj": e[:, [3]]}
    s = composition_scores(src, dst, 1, 1, 1)
    assert float(s["k"]) == 1.0  # W_QK W_OV = e3 e2ᵀ: everything h1 writes is what h2's keys read
    assert float(s["q"]) == 0.0  # W_QKᵀ W_OV = e1 e3ᵀ e1 e2ᵀ = 0: queries read e3, h1 writes e1
    assert float(s["v"]) == 1.0  # W_OV² W_OV¹ = e4 e2ᵀ


def test_factored_composition_against_dense_products():
    A, P, Q = (rand(4, 9, 2, seed=s) for s in range(3))
    B = rand(2, 9, 2, seed=3).repeat_interleave(2, dim=0)  # shared in pairs, as GQA key factors are
    for b_group in (1, 2):
        got = factored_composition(A, B, P, Q, b_group)
        for a in range(4):
            for b in range(4):
                ref = (A[b] @ B[b].T @ P[a] @ Q[a].T).norm()
                assert float(got[a, b]) == pytest.approx(float(ref), rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), shape=st.sampled_from([(4, 2, 3), (2, 2, 2), (3, 1, 2)]))
def test_scores_are_invariant_under_every_heads_gl_d_gauge(seed, shape):
    H, KV, d = shape
    hidden = 9
    src, dst = layer(H, KV, d, hidden, seed), layer(H, KV, d, hidden, seed + 10)
    g = H // KV

    def gauge(w, s):
        A = [rand(d, d, seed=s + i) + 3 * torch.eye(d, dtype=D) for i in range(KV)]
        B = [rand(d, d, seed=s + 50 + i) + 3 * torch.eye(d, dtype=D) for i in range(KV)]
        q, k = w["q_proj"].reshape(H, d, -1), w["k_proj"].reshape(KV, d, -1)
        v, o = w["v_proj"].reshape(KV, d, -1), w["o_proj"].reshape(-1, H, d)
        return {"q_proj": torch.cat([A[h // g] @ q[h] for h in range(H)]),
                "k_proj": torch.cat([torch.linalg.inv(A[j]).T @ k[j] for j in range(KV)]),
                "v_proj": torch.cat([B[j] @ v[j] for j in range(KV)]),
                "o_proj": torch.cat([o[:, h] @ torch.linalg.inv(B[h // g]) for h in range(H)], dim=1)}

    base = composition_scores(src, dst, H, KV, d)
    moved = composition_scores(gauge(src, seed + 100), gauge(dst, seed + 200), H, KV, d)
    for kind in base:
        torch.testing.assert_close(moved[kind], base[kind], rtol=1e-9, atol=1e-12)


def test_baseline_is_the_exact_rms_under_random_residual_rotations():
    # fixed, structured heads; only the relative residual basis is random: E[score²] = 1/hidden exactly
    H, KV, d, hidden, draws = 2, 1, 3, 12, 400
    src, dst = layer(H, KV, d, hidden, 0), layer(H, KV, d, hidden, 10)
    dst["q_proj"] = dst["q_proj"] * torch.linspace(0.1, 3, hidden, dtype=D)  # anisotropic spectra
    gen = torch.Generator().manual_seed(0)
    sq = {k: [] for k in "qkv"}
    for _ in range(draws):
        s = composition_scores(src, rotate_residual(dst, random_orthogonal(hidden, gen)), H, KV, d)
        for k, acc in sq.items():
            acc.append(s[k].flatten() ** 2)
    target = composition_baseline(hidden) ** 2
    for k, v in sq.items():
        v = torch.cat(v)
        stderr = float(v.std()) / math.sqrt(v.numel() / H)  # heads share a rotation: be conservative
        assert abs(float(v.mean()) - target) < 4 * stderr, (k, float(v.mean()), target, stderr)


def test_gaussian_null_mean_sits_just_below_the_rms_baseline():
    mean, stderr = composition_null(64, 8, draws=200, seed=1)
    rms = composition_baseline(64)
    assert 0 < stderr < 0.01 * rms
    assert 0.85 * rms < mean < rms + 3 * stderr  # Jensen: the mean is at most the root mean square
    assert composition_null(64, 8, draws=200, seed=1) == (mean, stderr)  # seeded
    with pytest.raises(InvalidArgumentError):
        composition_null(64, 8, draws=1)
    with pytest.raises(InvalidArgumentError):
        composition_baseline(0)


def test_degenerate_heads_give_nan_with_a_warning():
    H, KV, d, hidden = 2, 2, 2, 6
    src, dst = layer(H, KV, d, hidden, 0), layer(H, KV, d, hidden, 10)
    src["o_proj"][:, :d] = 0
    with pytest.warns(GeomlibWarning, match="source OV"):
        s = composition_scores(src, dst, H, KV, d)
    for k in "qkv":
        assert torch.isnan(s[k][0]).all() and torch.isfinite(s[k][1]).all()
    with pytest.raises(InvalidArgumentError, match="kinds"):
        composition_scores(src, dst, H, KV, d, kinds=("x",))
    with pytest.raises(InvalidArgumentError, match="multiple"):
        composition_scores(src, dst, 3, 2, d)
    with pytest.raises(InvalidArgumentError, match="b_group"):
        factored_composition(*(rand(4, 6, 2, seed=s) for s in range(4)), b_group=3)
