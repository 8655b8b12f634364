"""Factored per-head operators against the dense hidden x hidden computation and known answers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomlib.metrics.operators import (
    head_factors,
    operator_gram,
    operator_spectrum,
    principal_cosines,
    rescale_fit,
    sign_agreement,
    spectrum_shape,
)

D = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


def dense_qk(Wq, Wk, H, KV, d):
    """g_h = W_Q^hᵀ W_K^{h // (H/KV)} formed explicitly (hidden x hidden)."""
    return [Wq[h * d:(h + 1) * d].T @ Wk[(h // (H // KV)) * d:(h // (H // KV) + 1) * d] for h in range(H)]


@pytest.mark.parametrize("H, KV, d, hidden", [(4, 2, 6, 40), (3, 3, 5, 24), (6, 1, 4, 30), (2, 2, 8, 12)])
def test_factored_equals_dense(H, KV, d, hidden):
    # includes GQA and heads*d != hidden (and hidden < 2d: the span of [P Q] is all of R^hidden)
    Wq, Wk = rand(H * d, hidden), rand(KV * d, hidden, seed=1)
    Wq2, Wk2 = rand(H * d, hidden, seed=2), rand(KV * d, hidden, seed=3)
    P, Q = head_factors({"q_proj": Wq, "k_proj": Wk}, H, KV, d, "qk")
    P2, Q2 = head_factors({"q_proj": Wq2, "k_proj": Wk2}, H, KV, d, "qk")
    g, g2 = dense_qk(Wq, Wk, H, KV, d), dense_qk(Wq2, Wk2, H, KV, d)
    gram = operator_gram(P, Q, P2, Q2)
    spec = operator_spectrum(P, Q, k=3)
    for h in range(H):
        assert float(gram[h]) == pytest.approx(float((g[h] * g2[h]).sum()), rel=1e-10, abs=1e-10)
        sv = torch.linalg.svdvals(g[h])[:d]
        torch.testing.assert_close(spec["singvals"][h], sv, rtol=1e-10, atol=1e-10)
        S = (g[h] + g[h].T) / 2
        ev, evec = torch.linalg.eigh(S)
        order = ev.abs().argsort(descending=True)
        r = min(hidden, 2 * d)
        torch.testing.assert_close(spec["sym_eigs"][h, :r], ev[order][:r], rtol=1e-10, atol=1e-10)
        # top-3 eigenvectors span the same subspace as the dense ones (signs may differ)
        dense_top = evec[:, order[:3]].T
        cosines = principal_cosines(spec["eigvecs"][h][None], dense_top[None])[0]
        torch.testing.assert_close(cosines, torch.ones(3, dtype=D), rtol=0, atol=1e-8)


def test_ov_factors_match_dense():
    H, KV, d, hidden = 4, 2, 3, 10
    Wo, Wv = rand(hidden, H * d), rand(KV * d, hidden, seed=1)
    P, Q = head_factors({"o_proj": Wo, "v_proj": Wv}, H, KV, d, "ov")
    for h in range(H):
        kv = h // 2
        dense = Wo[:, h * d:(h + 1) * d] @ Wv[kv * d:(kv + 1) * d]
        torch.testing.assert_close(P[h] @ Q[h].T, dense)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 6), hidden=st.integers(14, 30))
def test_gl_d_gauge_leaves_every_qk_quantity_unchanged(seed, d, hidden):
    Wq, Wk = rand(d, hidden, seed=seed), rand(d, hidden, seed=seed + 1)
    A = rand(d, d, seed=seed + 2) + 3 * torch.eye(d, dtype=D)  # well conditioned, invertible
    Wq_g, Wk_g = A @ Wq, torch.linalg.inv(A).T @ Wk
    base = head_factors({"q_proj": Wq, "k_proj": Wk}, 1, 1, d, "qk")
    gauge = head_factors({"q_proj": Wq_g, "k_proj": Wk_g}, 1, 1, d, "qk")
    other = head_factors({"q_proj": rand(d, hidden, seed=seed + 5), "k_proj": rand(d, hidden, seed=seed + 6)},
                         1, 1, d, "qk")
    assert float(operator_gram(*base, *other)) == pytest.approx(float(operator_gram(*gauge, *other)),
                                                                rel=1e-8, abs=1e-8)
    assert float(operator_gram(*base, *base)) == pytest.approx(float(operator_gram(*gauge, *gauge)), rel=1e-8)
    s1, s2 = operator_spectrum(*base, k=2), operator_spectrum(*gauge, k=2)
    torch.testing.assert_close(s1["singvals"], s2["singvals"], rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(s1["sym_eigs"], s2["sym_eigs"], rtol=1e-7, atol=1e-8)
    assert torch.equal(sign_agreement(s1["sym_eigs"], s2["sym_eigs"], 2 * d), torch.ones(1, dtype=D)) or \
        bool((s1["sym_eigs"].abs() < 1e-8).any())  # a zero eigenvalue's sign is not defined
    gap = s1["eigengap"]
    if bool(gap > 1e-6):  # a subspace cut inside a degenerate block is not well defined
        pc = principal_cosines(s1["eigvecs"], s2["eigvecs"])
        torch.testing.assert_close(pc, torch.ones_like(pc), rtol=0, atol=1e-6)


def test_wk_equal_wq_gives_psd_symmetric_part_and_full_sign_agreement():
    W = rand(8, 32)
    P, Q = head_factors({"q_proj": W, "k_proj": W}, 1, 1, 8, "qk")
    s = operator_spectrum(P, Q, k=4)
    lam = s["sym_eigs"][0]
    assert bool((lam[:8] > 1e-10).all()) and bool((lam[8:].abs() < 1e-9).all())  # rank d, PSD
    assert float(sign_agreement(s["sym_eigs"], s["sym_eigs"], 8)) == 1.0


def test_frac_pos_is_one_half_by_construction():
    P, Q = head_factors({"q_proj": rand(4 * 6, 40), "k_proj": rand(2 * 6, 40, seed=1)}, 4, 2, 6, "qk")
    assert torch.equal(operator_spectrum(P, Q)["frac_pos"], torch.full((4,), 0.5, dtype=D))


def test_scalar_multiple_layer():
    Wq, Wk = rand(6, 30), rand(6, 30, seed=1)
    a = head_factors({"q_proj": Wq, "k_proj": Wk}, 1, 1, 6, "qk")
    b = head_factors({"q_proj": 2.5 * Wq, "k_proj": Wk}, 1, 1, 6, "qk")
    gram_ab, gram_aa, gram_bb = operator_gram(*b, *a), operator_gram(*a, *a), operator_gram(*b, *b)
    assert float(gram_ab / (gram_aa * gram_bb).sqrt()) == pytest.approx(1.0, abs=1e-12)
    assert float(gram_ab / gram_aa) == pytest.approx(2.5, rel=1e-12)  # T of b onto a
    sa, sb = operator_spectrum(*a)["singvals"], operator_spectrum(*b)["singvals"]
    T, resid = rescale_fit(sb, sa)
    assert float(T) == pytest.approx(2.5, rel=1e-12) and float(resid) < 1e-12
    torch.testing.assert_close(spectrum_shape(sa), spectrum_shape(sb))


def test_identical_subspaces_have_unit_principal_cosines():
    E, _ = torch.linalg.qr(rand(20, 5))
    R, _ = torch.linalg.qr(rand(5, 5, seed=1))
    pc = principal_cosines(E.T[None], (E @ R).T[None])  # same span, other basis
    torch.testing.assert_close(pc, torch.ones(1, 5, dtype=D), rtol=0, atol=1e-12)


def test_degenerate_spectra_give_nan_not_silent_values():
    z = torch.zeros(1, 5, dtype=D)
    T, resid = rescale_fit(torch.ones(1, 5, dtype=D), z)
    assert math.isnan(float(T)) and math.isnan(float(resid))
    assert torch.isnan(spectrum_shape(z)).all()
