"""Each float32 fast path against its float64 reference, within the tolerance its docstring states.

float32 nuclear norms (eig of the Gram, SVD fallback): relative 1e-5; float32 residual spectra: 1e-5 nats;
Cholesky QR for the per-head spectra: the Householder values to 1e-10 (it is float64); float32 head and
composition products: 1e-5 absolute on cosines; float32 neuron similarities: the same matching.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomlib.metrics import similarity
from geomlib.metrics.composition import composition_scores
from geomlib.metrics.head_matching import head_cos
from geomlib.metrics.matching import match_neurons
from geomlib.metrics.operators import operator_spectrum
from geomlib.metrics.similarity import aligned_cos, nuclear_cross, nuclear_norm, residual_spectrum

D64, F32 = torch.float64, torch.float32


def gen(seed):
    return torch.Generator().manual_seed(seed)


def spread(n, m, cond, seed):
    """An (n, m) matrix with singular values log-spaced over ``cond`` decades' worth of ratio."""
    g = gen(seed)
    u, _ = torch.linalg.qr(torch.randn(n, min(n, m), generator=g, dtype=D64))
    v, _ = torch.linalg.qr(torch.randn(m, min(n, m), generator=g, dtype=D64))
    s = torch.logspace(0, -math.log10(cond), min(n, m), dtype=D64)
    return u @ torch.diag(s) @ v.T


@settings(max_examples=60, deadline=None)
@given(m=st.integers(8, 160), n=st.integers(8, 96), seed=st.integers(0, 2**16), kind=st.sampled_from(
    ["gauss", "same", "rotated", "lowrank", "illcond"]))
def test_float32_nuclear_cross_is_within_1e5_of_float64(m, n, seed, kind):
    g = gen(seed)
    a = torch.randn(m, n, generator=g, dtype=D64)
    if kind == "gauss":
        b = torch.randn(m, n, generator=g, dtype=D64)
    elif kind == "same":
        b = a.clone()
    elif kind == "rotated":  # an exact rotation on the contracted-away side: ‖aᵀ a R‖_* = ‖a‖²
        R, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D64))
        b = a @ R
    elif kind == "lowrank":
        r = max(1, min(m, n) // 4)
        a = torch.randn(m, r, generator=g, dtype=D64) @ torch.randn(r, n, generator=g, dtype=D64)
        b = torch.randn(m, r, generator=g, dtype=D64) @ torch.randn(r, n, generator=g, dtype=D64)
    else:
        a, b = spread(m, n, 1e4, seed), spread(m, n, 1e4, seed + 1)
    ref = nuclear_cross(a, b)
    assert nuclear_cross(a, b, F32) == pytest.approx(ref, rel=1e-5)


def test_known_answers_hold_in_float32():
    g = gen(0)
    a = torch.randn(300, 64, generator=g, dtype=D64)
    R, _ = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=D64))
    assert aligned_cos(a, a, 1, F32) == pytest.approx(1.0, abs=1e-5)
    assert aligned_cos(a, a @ R, 1, F32) == pytest.approx(1.0, abs=1e-5)
    assert aligned_cos(a.T, (a @ R).T, 0, F32) == pytest.approx(1.0, abs=1e-5)


def test_float32_nuclear_norm_falls_back_to_an_svd_when_the_gram_cannot_hold_it(monkeypatch):
    calls = []
    real = torch.linalg.svdvals
    monkeypatch.setattr(torch.linalg, "svdvals", lambda x, *a, **k: calls.append(x.dtype) or real(x, *a, **k))
    core = spread(64, 64, 1e6, 3).to(F32)  # σ down to 1e-6 σ_max: √eig(CᵀC) cannot resolve them
    got = nuclear_norm(core)
    assert calls == [F32]
    assert got == pytest.approx(float(real(core.double()).sum()), rel=1e-5)
    calls.clear()
    nuclear_norm(torch.randn(64, 64, generator=gen(1)))  # well conditioned: the Gram path, no SVD
    assert calls == []


def test_degenerate_cores_stay_nan_or_zero_in_float32():
    assert nuclear_norm(torch.zeros(8, 8)) == 0.0
    bad = torch.randn(8, 8)
    bad[0, 0] = math.nan
    assert math.isnan(nuclear_norm(bad))
    a = torch.randn(20, 8, dtype=D64)
    a[3, 3] = math.inf
    assert math.isnan(aligned_cos(a, torch.randn(20, 8, dtype=D64), 1, F32))


@pytest.mark.parametrize("shape", [(300, 64), (64, 300), (64, 64)])
def test_float32_residual_spectrum_is_within_1e5_nats(shape):
    g = gen(2)
    for delta in (torch.randn(*shape, generator=g, dtype=D64), spread(*shape, 1e3, 5)):
        ent64, eff64, _ = residual_spectrum(delta)
        ent32, eff32, method = residual_spectrum(delta, compute_dtype=F32)
        assert method == "exact"
        assert ent32 == pytest.approx(ent64, abs=1e-5)
        assert eff32 == pytest.approx(eff64, rel=1e-5)


def _householder_spectrum(P, Q, k):
    """The reference operator_spectrum used before Cholesky QR: Householder QR of [P Q]."""
    H, hidden, d = P.shape
    X = torch.cat([P, Q], dim=2)
    U, R = torch.linalg.qr(X)
    core = R[:, :, :d] @ R[:, :, d:].transpose(1, 2)
    sv = torch.linalg.svdvals(core)[:, :d]
    lam, V = torch.linalg.eigh((core + core.transpose(1, 2)) / 2)
    order = lam.abs().argsort(dim=1, descending=True)
    lam = torch.gather(lam, 1, order)
    V = torch.gather(V, 2, order[:, None, :].expand_as(V))
    return sv, lam, (U @ V[:, :, :k]).transpose(1, 2)


@pytest.mark.parametrize("cond", [1.0, 1e3, 1e8])
def test_cholesky_qr_spectra_equal_householder(cond):
    g = gen(4)
    H, hidden, d, k = 3, 96, 12, 5
    P = torch.randn(H, hidden, d, generator=g, dtype=D64)
    Q = torch.randn(H, hidden, d, generator=g, dtype=D64)
    if cond > 1:  # badly conditioned heads: Cholesky QR must notice and use Householder
        P = torch.stack([spread(hidden, d, cond, 10 + h) for h in range(H)])
    got = operator_spectrum(P, Q, k)
    sv, lam, vecs = _householder_spectrum(P, Q, k)
    scale = float(sv.max())
    torch.testing.assert_close(got["singvals"], sv, rtol=0, atol=1e-10 * scale)
    torch.testing.assert_close(got["sym_eigs"], lam, rtol=0, atol=1e-10 * scale)
    # eigenvectors up to sign (svd_flip fixes it in both; compare |entries|)
    torch.testing.assert_close(got["eigvecs"].abs(), vecs.abs(), rtol=0, atol=1e-7)


def _attention(seed, H=4, KV=2, d=8, hidden=48):
    g = gen(seed)
    w = lambda *s: torch.randn(*s, generator=g, dtype=D64) / hidden**0.5  # noqa: E731
    return {"q_proj": w(H * d, hidden), "k_proj": w(KV * d, hidden), "v_proj": w(KV * d, hidden),
            "o_proj": w(hidden, H * d)}


@pytest.mark.parametrize("kind", ["qk", "ov"])
def test_float32_head_cos_is_within_1e5(kind):
    a, b = _attention(0), _attention(1)
    ref = head_cos(a, b, 4, 2, 8, kind)
    got = head_cos(a, b, 4, 2, 8, kind, compute_dtype=F32)
    assert got.dtype == D64
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


def test_float32_composition_is_within_1e5():
    a, b = _attention(2), _attention(3)
    ref = composition_scores(a, b, 4, 2, 8)
    got = composition_scores(a, b, 4, 2, 8, compute_dtype=F32)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-5)


def test_float32_neuron_similarity_finds_the_float64_matching():
    g = gen(5)
    I, h = 64, 32
    a = {"gate_proj": torch.randn(I, h, generator=g, dtype=D64), "up_proj": torch.randn(I, h, generator=g, dtype=D64),
         "down_proj": torch.randn(h, I, generator=g, dtype=D64)}
    p = torch.randperm(I, generator=g)
    noise = lambda w: w + 0.3 * torch.randn(w.shape, generator=g, dtype=D64)  # noqa: E731
    b = {"gate_proj": noise(a["gate_proj"][p]), "up_proj": noise(a["up_proj"][p]),
         "down_proj": noise(a["down_proj"][:, p])}
    ref, got = match_neurons(a, b, "signed"), match_neurons(a, b, "signed", compute_dtype=F32)
    assert torch.equal(got.perm, ref.perm)
    for k, v in ref.matched_cos.items():  # recomputed for the matching found, float64 sums of float32 products
        assert got.matched_cos[k] == pytest.approx(v, rel=1e-6), k


def test_float32_is_what_the_default_similarity_module_documents():
    assert similarity.NUCLEAR_RTOL_32 == 1e-5
    assert np.finfo(np.float32).eps < similarity.NUCLEAR_RTOL_32


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 400), n=st.integers(1, 300), seed=st.integers(0, 2**16),
       mix=st.sampled_from([0.0, 0.3, 0.9, 0.99, 0.999999, 1.0]), scale=st.floats(1e-3, 1e3))
def test_float32_residual_stats_without_spectrum_are_within_1e6_of_float64(m, n, seed, mix, scale):
    """The fast path (float32 partial dots, ‖Δ‖ from the cosine while it is not small) against float64."""
    g = gen(seed)
    a = torch.randn(m, n, generator=g).float()
    b = (mix * a + (1 - mix) * torch.randn(m, n, generator=g)).float() * scale
    fast = similarity.residual_stats(a, b, spectrum=False, compute_dtype=F32)
    ref = similarity.residual_stats(a.double(), b.double(), spectrum=False)
    for k in ("cos", "resid_norm", "scalar_fit"):
        assert fast[k] == pytest.approx(ref[k], abs=1e-6), k
    if ref["resid_norm"] > 1e-3:
        assert fast["improve_frac"] == pytest.approx(ref["improve_frac"], abs=1e-5)
    assert similarity.frob_norm(b, F32) == pytest.approx(float(b.double().norm()), rel=1e-6)


def test_float32_fast_path_keeps_the_planted_rescale_at_zero():
    """b = 2.5 a: ‖Δ‖ is below FAST_RESID_MIN, so Δ is formed in float64 and the residual is rounding-level."""
    a = torch.randn(500, 300, generator=gen(4)).bfloat16().float()  # bf16 values: 2.5 a is exact in float32
    s = similarity.residual_stats(a, 2.5 * a, spectrum=False, compute_dtype=F32)
    assert s["resid_norm"] < 1e-12 and s["scalar_fit"] < 1e-12 and s["cos"] == pytest.approx(1.0, abs=1e-12)
    assert s["spectrum_method"] == "zero-residual"
