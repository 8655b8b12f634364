"""Attention entropy against answers known by construction and a plain softmax computation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomlib.errors import GeomlibError
from geomlib.metrics.attention import attention_entropy, mean_entropy


def scores(*shape, seed=0, scale=3.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def plain_entropy(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Entropy of softmax(logits) written out by hand: H = log Z - Σ p s, with Z = Σ exp(s).

    Masked keys are left out of the sums altogether (no zero probabilities), so
    this shares nothing with the implementation under test.
    """
    q, k = logits.shape[-2:]
    out = torch.empty(logits.shape[:-1], dtype=torch.float64)
    flat_logits = logits.reshape(-1, q, k)
    flat_out = out.reshape(-1, q)
    for b in range(flat_logits.shape[0]):
        for i in range(q):
            s = [float(flat_logits[b, i, j]) for j in range(k) if mask is None or bool(mask[i, j])]
            m = max(s)
            z = sum(math.exp(x - m) for x in s)
            p = [math.exp(x - m) / z for x in s]
            flat_out[b, i] = math.log(z) + m - sum(pj * x for pj, x in zip(p, s))
    return out


def causal(q: int, k: int | None = None) -> torch.Tensor:
    k = q if k is None else k
    return torch.ones(q, k, dtype=torch.bool).tril(diagonal=k - q)


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    # how eager attention masks: a large negative bias, so masked keys come out exactly 0
    biased = logits.masked_fill(~mask, torch.finfo(dtype).min)
    return torch.softmax(biased.to(dtype), dim=-1)


@pytest.mark.parametrize("n", [1, 2, 7, 64, 513])
def test_uniform_attention_over_n_keys_gives_log_n(n):
    p = torch.full((3, n), 1.0 / n, dtype=torch.float32)
    h = attention_entropy(p)
    assert h.dtype == torch.float64 and h.shape == (3,)
    torch.testing.assert_close(h, torch.full((3,), math.log(n), dtype=torch.float64), rtol=1e-6, atol=1e-6)


def test_uniform_over_the_unmasked_keys_gives_log_of_their_count():
    q = 9
    p = causal(q).to(torch.float64)
    p = p / p.sum(-1, keepdim=True)  # query i attends uniformly to keys 0..i
    expected = torch.log(torch.arange(1, q + 1, dtype=torch.float64))
    torch.testing.assert_close(attention_entropy(p), expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(mean_entropy(p), expected.mean(), rtol=0, atol=1e-14)


def test_one_hot_gives_zero():
    p = torch.eye(6, dtype=torch.float64)[torch.tensor([3, 0, 5, 5])]
    assert torch.equal(attention_entropy(p), torch.zeros(4, dtype=torch.float64))
    assert attention_entropy(torch.eye(5, dtype=torch.bool)).eq(0).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_plain_softmax_computation(dtype):
    logits = scores(2, 3, 5, 11, seed=1)  # (batch, heads, q, k)
    p = torch.softmax(logits.to(dtype), dim=-1)
    expected = plain_entropy(logits)
    h = attention_entropy(p)
    assert h.shape == (2, 3, 5) and h.dtype == torch.float64
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(h, expected, rtol=tol, atol=tol)
    torch.testing.assert_close(mean_entropy(p), expected.mean(-1), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_causal_mask_matches_plain_computation_over_the_visible_keys(dtype):
    q = 12
    mask = causal(q)
    logits = scores(4, q, q, seed=2)
    p = masked_softmax(logits, mask, dtype)
    assert (p[..., ~mask] == 0).all()
    expected = plain_entropy(logits, mask)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(attention_entropy(p), expected, rtol=tol, atol=tol)
    # query 0 sees one key: entropy exactly 0; no query exceeds log(its key count)
    h = attention_entropy(p)
    assert (h[:, 0] == 0).all()
    assert (h <= torch.log(torch.arange(1, q + 1, dtype=torch.float64)) + 1e-12).all()


def test_rectangular_causal_and_sliding_window_masks():
    # 3 new queries over 8 keys (a KV cache), and a window of 3 keys
    mask = causal(3, 8)
    logits = scores(2, 3, 8, seed=3)
    torch.testing.assert_close(attention_entropy(masked_softmax(logits, mask)), plain_entropy(logits, mask))
    window = causal(10) & ~causal(10).tril(diagonal=-3)
    logits = scores(10, 10, seed=4)
    h = attention_entropy(masked_softmax(logits, window))
    torch.testing.assert_close(h, plain_entropy(logits, window))
    assert (h <= math.log(3) + 1e-12).all()


def test_nan_inf_negative_and_zero_rows_give_nan_never_zero():
    p = torch.tensor(
        [
            [0.5, 0.5, 0.0],
            [math.nan, 0.0, 0.0],  # a NaN next to zeros must not vanish into 0 * log 0
            [1.0, math.nan, 0.0],
            [0.0, 0.0, 0.0],
            [math.inf, 0.0, 0.0],
            [1.5, -0.5, 0.0],
        ],
        dtype=torch.float32,
    )
    h = attention_entropy(p)
    assert h[0] == pytest.approx(math.log(2))
    assert torch.isnan(h[1:]).all()
    # a degenerate query makes its head's mean NaN too
    assert torch.isnan(mean_entropy(p))
    # ... unless the query mask leaves it out
    keep = torch.tensor([True, False, False, False, False, False])
    assert mean_entropy(p, keep) == pytest.approx(math.log(2))


def test_rows_are_renormalized_against_low_precision_rounding():
    logits = scores(6, 40, seed=5)
    p16 = torch.softmax(logits, -1).to(torch.bfloat16)
    assert not torch.allclose(p16.double().sum(-1), torch.ones(6, dtype=torch.float64), atol=1e-4, rtol=0)
    h = attention_entropy(p16)
    q = p16.double() / p16.double().sum(-1, keepdim=True)
    torch.testing.assert_close(h, torch.special.entr(q).sum(-1))
    assert (h >= 0).all() and (h <= math.log(40)).all()


def test_mean_entropy_query_mask():
    logits = scores(3, 6, 6, seed=6)
    p = torch.softmax(logits, -1)
    h = attention_entropy(p)
    keep = torch.tensor([True, False, True, True, False, False])
    torch.testing.assert_close(mean_entropy(p, keep), h[:, keep].mean(-1))
    per_head = torch.zeros(3, 6, dtype=torch.bool)
    per_head[0, 1] = per_head[1] = True
    got = mean_entropy(p, per_head)
    torch.testing.assert_close(got[:2], torch.stack([h[0, 1], h[1].mean()]))
    assert torch.isnan(got[2])  # no query selected: NaN, not 0


def test_bad_arguments_raise_geomlib_errors():
    with pytest.raises(GeomlibError, match="torch.Tensor"):
        attention_entropy([[0.5, 0.5]])
    with pytest.raises(GeomlibError, match="floating"):
        attention_entropy(torch.ones(2, 2, dtype=torch.int64))
    with pytest.raises(GeomlibError, match="no key axis"):
        attention_entropy(torch.ones(3, 0))
    with pytest.raises(GeomlibError, match="bool tensor"):
        mean_entropy(torch.full((2, 2), 0.5), torch.ones(2))
    with pytest.raises(GeomlibError, match="broadcast"):
        mean_entropy(torch.full((2, 2), 0.5), torch.ones(3, dtype=torch.bool))


@settings(max_examples=40, deadline=None)
@given(
    heads=st.integers(1, 4),
    q=st.integers(1, 9),
    k=st.integers(1, 17),
    seed=st.integers(0, 10_000),
    temperature=st.floats(0.05, 20.0),
)
def test_invariant_to_key_permutation_and_bounded(heads, q, k, seed, temperature):
    logits = scores(heads, q, k, seed=seed, scale=temperature)
    p = torch.softmax(logits, -1)
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(seed + 1))
    h = attention_entropy(p)
    torch.testing.assert_close(attention_entropy(p[..., perm]), h, rtol=1e-12, atol=1e-12)
    # permuting queries permutes the per-query entropies and leaves their mean unchanged
    qperm = torch.randperm(q, generator=torch.Generator().manual_seed(seed + 2))
    torch.testing.assert_close(attention_entropy(p[..., qperm, :]), h[..., qperm], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mean_entropy(p[..., qperm, :]), mean_entropy(p), rtol=1e-12, atol=1e-12)
    assert (h >= 0).all() and (h <= math.log(k) + 1e-12).all()
