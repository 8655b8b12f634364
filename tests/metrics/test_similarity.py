"""Weight-level similarity metrics against answers known by construction."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomlib.metrics import aligned_cos, cos_from_gram, frob_cos, nuclear_cross, residual_stats
from geomlib.metrics.similarity import residual_spectrum

D = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


def orthogonal(n, seed=0):
    q, r = torch.linalg.qr(rand(n, n, seed=seed))
    return q * torch.sign(torch.diagonal(r))  # Haar-distributed


shapes = st.tuples(st.integers(2, 24), st.integers(2, 24))
seeds = st.integers(0, 10_000)


def test_identical_layers_have_cos_one_and_zero_delta():
    a = rand(12, 7)
    assert frob_cos(a, a) == pytest.approx(1.0, abs=1e-15)
    assert aligned_cos(a, a, 1) == pytest.approx(1.0, abs=1e-12)
    assert aligned_cos(a, a, 0) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=seeds, axis=st.sampled_from([0, 1]))
def test_residual_rotation_gives_aligned_one(shape, seed, axis):
    a = rand(*shape, seed=seed)
    R = orthogonal(shape[axis], seed + 1)
    b = a @ R if axis == 1 else R @ a
    assert aligned_cos(a, b, axis) == pytest.approx(1.0, abs=1e-10)


def test_rotation_makes_raw_small_but_aligned_one():
    a = rand(64, 48)
    b = a @ orthogonal(48, 3)
    assert abs(frob_cos(a, b)) < 0.2
    assert aligned_cos(a, b, 1) == pytest.approx(1.0, abs=1e-10)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=seeds, axis=st.sampled_from([0, 1]), s1=st.floats(0.01, 100), s2=st.floats(0.01, 100))
def test_aligned_cos_is_invariant_to_a_shared_residual_rotation_and_scales(shape, seed, axis, s1, s2):
    a, b = rand(*shape, seed=seed), rand(*shape, seed=seed + 7)
    R = orthogonal(shape[axis], seed + 3)
    rot = (lambda x: x @ R) if axis == 1 else (lambda x: R @ x)
    base = aligned_cos(a, b, axis)
    assert 0.0 <= base <= 1.0
    assert aligned_cos(s1 * rot(a), s2 * rot(b), axis) == pytest.approx(base, abs=1e-10)
    assert aligned_cos(b, a, axis) == pytest.approx(base, abs=1e-10)  # symmetric


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 30), n=st.integers(1, 30), seed=seeds)
def test_factored_nuclear_norm_equals_dense(m, n, seed):
    # both branches: m < n goes through two thin QRs and an (m, m) core
    a, b = rand(m, n, seed=seed), rand(m, n, seed=seed + 1)
    dense = float(torch.linalg.svdvals(a.T @ b).sum())
    assert nuclear_cross(a, b) == pytest.approx(dense, rel=1e-10, abs=1e-10)


def test_frob_cos_symmetry_scale_and_orthogonality():
    a, b = rand(9, 5), rand(9, 5, seed=1)
    assert frob_cos(a, b) == pytest.approx(frob_cos(b, a), abs=1e-15)
    assert frob_cos(3 * a, 0.5 * b) == pytest.approx(frob_cos(a, b), abs=1e-14)
    assert frob_cos(a, -a) == pytest.approx(-1.0, abs=1e-15)
    e1, e2 = torch.zeros(3, 3, dtype=D), torch.zeros(3, 3, dtype=D)
    e1[0, 0], e2[1, 2] = 1, 1
    assert frob_cos(e1, e2) == 0.0


@pytest.mark.parametrize("bad", ["zero", "nan", "inf"])
def test_degenerate_inputs_give_nan_not_zero(bad):
    a = rand(6, 4)
    b = {"zero": torch.zeros(6, 4, dtype=D), "nan": a.clone().fill_(math.nan),
         "inf": a.clone().index_fill_(0, torch.tensor([2]), math.inf)}[bad]
    assert math.isnan(frob_cos(a, b))
    assert math.isnan(aligned_cos(a, b, 1))
    stats = residual_stats(a, b)
    assert all(math.isnan(stats[k]) for k in ("cos", "resid_norm", "scalar_fit", "improve_frac", "resid_eff_rank"))


@pytest.mark.parametrize("scale", [2.5, 1e-3, 40.0])
def test_planted_scalar_rescale_has_zero_scalar_fit(scale):
    a = rand(30, 20)
    s = residual_stats(a, scale * a)
    assert s["cos"] == pytest.approx(1.0, abs=1e-14)
    assert s["scalar_fit"] < 1e-14
    assert s["resid_norm"] < 1e-14
    # the residual is rounding noise: its spectrum is undefined, reported as NaN (not 0)
    assert math.isnan(s["resid_eff_rank"]) and s["spectrum_method"] == "zero-residual"


def test_residual_stats_formulas():
    a, b = rand(30, 20), rand(30, 20, seed=5)
    s = residual_stats(a, b)
    c = frob_cos(a, b)
    assert s["cos"] == pytest.approx(c, abs=1e-14)
    assert s["resid_norm"] == pytest.approx(math.sqrt(2 - 2 * c), abs=1e-12)
    assert s["scalar_fit"] == pytest.approx(math.sqrt(1 - c * c), abs=1e-12)
    assert s["improve_frac"] == pytest.approx((s["resid_norm"] - s["scalar_fit"]) / s["resid_norm"], abs=1e-12)
    delta = b / b.norm() - a / a.norm()
    sv = torch.linalg.svdvals(delta)
    p = sv**2 / (sv**2).sum()
    ent = float(-(p * p.log()).sum())
    assert s["resid_spec_entropy"] == pytest.approx(ent, abs=1e-10)
    assert s["resid_eff_rank"] == pytest.approx(math.exp(ent), rel=1e-10)


@pytest.mark.parametrize("r", [1, 3, 7])
def test_planted_rank_r_update_has_residual_rank_r(r):
    a = rand(40, 25)
    u, _ = torch.linalg.qr(rand(40, r, seed=1))
    v, _ = torch.linalg.qr(rand(25, r, seed=2))
    d = u @ v.T  # r equal singular values
    # choose the step so that the norm is unchanged: then Δ is exactly a multiple of d
    s = -2 * float((a * d).sum()) / float((d * d).sum())
    b = a + s * d
    assert float(b.norm()) == pytest.approx(float(a.norm()), rel=1e-12)
    stats = residual_stats(a, b)
    assert stats["resid_eff_rank"] == pytest.approx(r, rel=1e-9)
    assert stats["resid_spec_entropy"] == pytest.approx(math.log(r), abs=1e-9)


def test_randomized_spectrum_matches_exact_for_low_rank_and_bounds_it_otherwise():
    u, _ = torch.linalg.qr(rand(300, 6, seed=1))
    v, _ = torch.linalg.qr(rand(200, 6, seed=2))
    low = u @ torch.diag(torch.tensor([5, 4, 3, 2, 1, 0.5], dtype=D)) @ v.T
    ent_exact, eff_exact, m1 = residual_spectrum(low)
    ent_rand, eff_rand, m2 = residual_spectrum(low, exact_max_dim=50, rank=20)
    assert (m1, m2) == ("exact", "randomized")
    assert ent_rand == pytest.approx(ent_exact, abs=1e-8)
    # maximum-entropy completion of the tail: always an upper bound (and at most log of the rank) ...
    full = rand(300, 200, seed=3)
    e_exact, _, _ = residual_spectrum(full)
    e_rand, _, _ = residual_spectrum(full, exact_max_dim=50, rank=20)
    assert e_exact - 1e-9 <= e_rand <= math.log(200) + 1e-12
    # ... and tight when the leading values hold most of the energy (a decaying spectrum, σ_k = 1/k)
    u, _ = torch.linalg.qr(rand(300, 200, seed=4))
    v, _ = torch.linalg.qr(rand(200, 200, seed=5))
    decay = u @ torch.diag(1 / torch.arange(1, 201, dtype=D)) @ v.T
    d_exact, _, _ = residual_spectrum(decay)
    d_rand, _, _ = residual_spectrum(decay, exact_max_dim=50, rank=20)
    assert d_exact - 1e-9 <= d_rand <= d_exact + 0.2


def test_cos_from_gram_diagonal_and_degenerate_rows():
    X = rand(5, 40)
    X[3] = 0.0
    X[4, 0] = math.nan
    cos = cos_from_gram(X @ X.T)
    assert torch.equal(torch.diagonal(cos)[:3], torch.ones(3, dtype=D))
    assert torch.isnan(cos[3]).all() and torch.isnan(cos[:, 4]).all()
    ref = (X[0] @ X[1]) / (X[0].norm() * X[1].norm())
    assert float(cos[0, 1]) == pytest.approx(float(ref), abs=1e-14)


def test_cos_from_gram_batched_equals_one_gram_at_a_time():
    X = rand(3, 5, 40)  # (heads, layers, features)
    X[1, 2] = 0.0
    G = X @ X.transpose(-1, -2)
    batched = cos_from_gram(G)
    assert batched.shape == (3, 5, 5)
    for h in range(3):
        torch.testing.assert_close(batched[h], cos_from_gram(G[h]), rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(batched[1, 2]).all() and torch.isfinite(batched[0]).all()


@pytest.mark.parametrize("shape", [(3000, 700), (700, 3000), (5000,)])
def test_chunked_float64_reductions_match_whole_float64(shape):
    """norm64 and residual_stats stream float32 rows through float64 chunks: equal to the whole-layer float64 math."""
    from geomlib.metrics.similarity import CHUNK_ENTRIES, norm64, row_chunks

    g = torch.Generator().manual_seed(3)
    a = torch.randn(*shape, generator=g).float()
    b = (0.7 * a + 0.3 * torch.randn(*shape, generator=g)).float()
    if len(shape) == 2:
        assert len(row_chunks(a)) == -(-a.numel() // (CHUNK_ENTRIES // shape[1] * shape[1]))
    a64, b64 = a.double(), b.double()
    na, nb = float(a64.norm()), float(b64.norm())
    assert norm64(a) == pytest.approx(na, rel=1e-13)
    s = residual_stats(a, b, spectrum=False)
    assert s["cos"] == pytest.approx(float((a64 * b64).sum()) / (na * nb), rel=1e-12)
    assert s["resid_norm"] == pytest.approx(float((b64 / nb - a64 / na).norm()), rel=1e-12)
    if len(shape) == 2:
        full = residual_stats(a, b, spectrum=True, compute_dtype=torch.float64)
        ref = residual_stats(a64, b64, spectrum=True)
        assert full["resid_eff_rank"] == pytest.approx(ref["resid_eff_rank"], rel=1e-10)


def test_norm64_keeps_nan_and_inf():
    from geomlib.metrics.similarity import norm64

    x = torch.randn(2000, 1000)
    x[1500, 3] = float("inf")
    assert norm64(x) == math.inf
    x[10, 3] = float("nan")
    assert math.isnan(norm64(x))
