"""Nulls of the weights analysis, with answers known by construction.

* the ``permutation`` null of aligned cos: true symmetries only (neurons shared by
  gate/up/down, GQA-consistent heads), proven function-preserving by a forward pass;
* the coordinate-shuffle null and the mean-removed variant of the γ direction PCA.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomlib.arch.base import kv_head
from geomlib.errors import GeomlibWarning, InvalidArgumentError
from geomlib.metrics.gauge_nulls import permutation_null, permute_layer, random_head_permutation
from geomlib.metrics.nulls import (
    NULL_KINDS,
    permutation_aligned_null,
    scrambled_aligned_null,
    signed_permutation,
)
from geomlib.metrics.pca import centered_gains, direction_pca, direction_pca_shuffle_null, shuffle_coordinates
from geomlib.metrics.similarity import aligned_cos

D = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=gen(seed), dtype=D)


def layer(hidden=12, inter=10, heads=4, kv=2, d=3, seed=0, mean_row=0.0) -> dict[str, torch.Tensor]:
    """One Llama-layout layer; ``mean_row`` adds a row (column) shared by every neuron/head output (input)."""
    g = gen(seed)
    shapes = {"q_proj": (heads * d, hidden), "k_proj": (kv * d, hidden), "v_proj": (kv * d, hidden),
              "o_proj": (hidden, heads * d), "gate_proj": (inter, hidden), "up_proj": (inter, hidden),
              "down_proj": (hidden, inter)}
    out = {}
    for f, s in shapes.items():
        w = torch.randn(s, generator=g, dtype=D)
        if mean_row:
            if f in ("o_proj", "down_proj"):
                w = w + mean_row * torch.randn(s[0], 1, generator=g, dtype=D)
            else:
                w = w + mean_row * torch.randn(1, s[1], generator=g, dtype=D)
        out[f] = w
    return out


def mlp_forward(w: dict, x: torch.Tensor) -> torch.Tensor:
    """SwiGLU: down (silu(gate x) ∘ up x); x (T, hidden)."""
    return (torch.nn.functional.silu(x @ w["gate_proj"].T) * (x @ w["up_proj"].T)) @ w["down_proj"].T


def attn_forward(w: dict, x: torch.Tensor, heads: int, kv: int, d: int) -> torch.Tensor:
    """Causal GQA attention without positions; query head h reads kv head kv_head(h)."""
    T = x.shape[0]
    q = (x @ w["q_proj"].T).reshape(T, heads, d)
    k = (x @ w["k_proj"].T).reshape(T, kv, d)
    v = (x @ w["v_proj"].T).reshape(T, kv, d)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    outs = []
    for h in range(heads):
        g = kv_head(h, heads, kv)
        s = (q[:, h] @ k[:, g].T / math.sqrt(d)).masked_fill(~mask, -math.inf)
        outs.append(torch.softmax(s, dim=-1) @ v[:, g])
    return torch.cat(outs, dim=1) @ w["o_proj"].T


# ------------------------------------------------------------------------------------ true symmetries
@settings(max_examples=40, deadline=None)
@given(kv=st.integers(1, 5), group=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_head_permutation_is_gqa_consistent(kv, group, seed):
    heads = kv * group
    hp, kp = random_head_permutation(heads, kv, gen(seed))
    assert sorted(hp.tolist()) == list(range(heads)) and sorted(kp.tolist()) == list(range(kv))
    # every new query head reads, through its new kv head, the kv head its old self read
    for h in range(heads):
        assert kv_head(int(hp[h]), heads, kv) == int(kp[kv_head(h, heads, kv)])


@settings(max_examples=25, deadline=None)
@given(kv=st.integers(1, 3), group=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_permuted_layer_computes_the_same_function(kv, group, seed):
    heads, d, inter = kv * group, 3, 7
    w = layer(hidden=8, inter=inter, heads=heads, kv=kv, d=d, seed=seed)
    g = gen(seed + 1)
    p = torch.randperm(inter, generator=g)
    hp, kp = random_head_permutation(heads, kv, g)
    wp = permute_layer(w, p, hp, kp, d)
    x = rand(5, 8, seed=seed + 2)
    torch.testing.assert_close(mlp_forward(wp, x), mlp_forward(w, x), rtol=0, atol=1e-11)
    torch.testing.assert_close(attn_forward(wp, x, heads, kv, d), attn_forward(w, x, heads, kv, d), rtol=0,
                               atol=1e-11)


def test_the_forward_check_can_fail():
    """What the symmetry test guards against: kv blocks moved apart from their query heads, sign flips of up."""
    heads, kv, d = 4, 2, 3
    w = layer(hidden=8, heads=heads, kv=kv, d=d)
    x = rand(5, 8, seed=2)
    hp = torch.tensor([2, 3, 0, 1])  # swaps the two groups: consistent only with kv_perm = [1, 0]
    good = permute_layer(w, head_perm=hp, kv_perm=torch.tensor([1, 0]), head_dim=d)
    bad = permute_layer(w, head_perm=hp, kv_perm=torch.tensor([0, 1]), head_dim=d)
    ref = attn_forward(w, x, heads, kv, d)
    torch.testing.assert_close(attn_forward(good, x, heads, kv, d), ref, rtol=0, atol=1e-11)
    assert (attn_forward(bad, x, heads, kv, d) - ref).abs().max() > 1e-3
    # the scrambled null's signed permutation of up rows alone is not a symmetry of a gated MLP
    flipped = dict(w, up_proj=signed_permutation(w["up_proj"], 0, gen(0)))
    assert (mlp_forward(flipped, x) - mlp_forward(w, x)).abs().max() > 1e-3


def test_permute_layer_rejects_mismatched_shapes_and_missing_head_dim():
    w = layer()
    with pytest.raises(InvalidArgumentError):
        permute_layer(w, neuron_perm=torch.arange(3))
    with pytest.raises(InvalidArgumentError):
        permute_layer(w, head_perm=torch.arange(4), kv_perm=torch.arange(2))


# ------------------------------------------------------------------------------------ permutation null
def test_null_kinds_order():
    assert NULL_KINDS == ("gaussian", "scrambled", "permutation")


def test_one_family_at_a_time_equals_the_joint_draw():
    """The streamed analysis calls one family at a time: its draws must be the whole layer's."""
    a, b = layer(seed=0), layer(seed=1)
    heads = dict(n_heads=4, n_kv_heads=2, head_dim=3)
    joint = permutation_null(a, b, "aligned", draws=5, seed=7, **heads)
    assert set(joint.mean) == set(a)
    for f in a:
        m, s = permutation_aligned_null(a[f], b[f], f, 5, 7, **heads)
        assert (m, s) == (joint.mean[f], joint.std[f]), f
        assert permutation_null({f: a[f]}, {f: b[f]}, "aligned", 5, 7, **heads).values[f] == joint.values[f]


def test_draws_are_the_stated_symmetry_applied_to_b():
    a, b = layer(seed=0), layer(seed=1)
    band = permutation_null(a, b, "aligned", draws=4, seed=3, n_heads=4, n_kv_heads=2, head_dim=3)
    gn, gh = gen(3), gen(3)
    for i in range(4):
        p = torch.randperm(10, generator=gn)
        hp, kp = random_head_permutation(4, 2, gh)
        bp = permute_layer(b, p, hp, kp, 3)
        for f in ("q_proj", "k_proj", "up_proj", "down_proj"):
            ax = 0 if f in ("o_proj", "down_proj") else 1
            # the band reuses ‖b‖ of the unpermuted layer: equal up to summation order
            assert band.values[f][i] == pytest.approx(aligned_cos(a[f], bp[f], ax), rel=1e-13, abs=0), (f, i)


def test_exact_permutation_pair_is_a_draw_of_its_own_null():
    """b = P0 a: the null draws aligned_cos(a, P P0 a) range over {aligned_cos(a, Q a): Q ∈ S_I}, as does the observed."""
    inter = 3
    a = layer(inter=inter, seed=4)["up_proj"]
    support = {round(aligned_cos(a, a[list(q)], 1), 12) for q in itertools.permutations(range(inter))}
    assert len(support) > 1  # otherwise the test below could not fail
    p0 = torch.tensor([2, 0, 1])
    b = a[p0]
    observed = round(aligned_cos(a, b, 1), 12)
    assert observed in support
    band = permutation_null({"up_proj": a}, {"up_proj": b}, "aligned", draws=60, seed=0)
    drawn = [round(v, 12) for v in band.values["up_proj"]]
    assert set(drawn) == support  # 60 draws over 6 permutations: every one is seen (fixed seed)
    # and it is the same band as the unpermuted pair's: composing with P0 relabels a uniform draw
    ident = permutation_null({"up_proj": a}, {"up_proj": a}, "aligned", draws=600, seed=1)
    perm = permutation_null({"up_proj": a}, {"up_proj": b}, "aligned", draws=600, seed=2)
    assert perm.mean["up_proj"] == pytest.approx(ident.mean["up_proj"], abs=4 * ident.std["up_proj"] / 600**0.5 * 2)


def test_shared_mean_row_permutation_null_above_scrambled():
    """The MiniLM up_proj story by construction: rows sharing a mean direction; layer 1 = layer 0 relabelled + noise.

    Sign flips destroy the shared row, so the scrambled band sits low and the pair looks 'beyond the null';
    against relabellings of the same function it is not.
    """
    a = layer(inter=64, hidden=16, seed=5, mean_row=3.0)
    p0 = torch.randperm(64, generator=gen(9))
    b = {f: w + 0.3 * rand(*w.shape, seed=11) for f, w in permute_layer(a, p0).items()}
    for f in ("gate_proj", "up_proj", "down_proj"):
        ax = 0 if f == "down_proj" else 1
        obs = aligned_cos(a[f], b[f], ax)
        pm, ps = permutation_aligned_null(a[f], b[f], f, 16, 0)
        sm, ss = scrambled_aligned_null(a[f], b[f], ax, 16, 0)
        assert pm > sm + 2 * ss, f  # the true-symmetry null is the higher bar
        assert obs > sm + 2 * ss, f  # "excess" against the scrambled null...
        assert abs(obs - pm) < 3 * ps + 1e-3, f  # ...none against the permutation null


def test_permutation_null_arguments():
    a = layer()
    with pytest.raises(InvalidArgumentError):
        permutation_null(a, a, "aligned", draws=0)
    with pytest.raises(InvalidArgumentError):
        permutation_null(a, a, "aligned", n_heads=4)  # partial head layout
    with pytest.raises(InvalidArgumentError):
        permutation_null({"q_proj": a["q_proj"]}, {"q_proj": a["q_proj"]})  # attention without a head layout
    # without a head layout only the MLP is relabelled, as before
    assert set(permutation_null(a, a, "raw", draws=2).mean) == {"gate_proj", "up_proj", "down_proj"}


def test_degenerate_matrix_gives_nan_not_zero():
    a = layer()["up_proj"]
    m, s = permutation_aligned_null(a, torch.zeros_like(a), "up_proj", 3, 0)
    assert math.isnan(m) and math.isnan(s)


# ------------------------------------------------------------------------------------ γ directions
def alternating(L=8, D_=24, seed=0):
    """Gains alternating between two directions with arbitrary scales: centered units are ±(u1 − u2)/2, rank 1."""
    u1, u2 = rand(D_, seed=seed).abs() + 0.5, rand(D_, seed=seed + 1).abs() + 0.5
    scales = torch.linspace(0.5, 2.0, L, dtype=D)
    return torch.stack([scales[i] * (u1 if i % 2 else u2) for i in range(L)])


def test_rank_one_variation_pc1_explains_one_and_beats_the_shuffle_null():
    X = alternating()
    res = direction_pca(X)
    assert float(res["explained"][0]) == pytest.approx(1.0, abs=1e-12)
    null = direction_pca_shuffle_null(X, draws=16, seed=0)
    m, s = float(null["explained_mean"][0]), float(null["explained_std"][0])
    assert m + 2 * s < 0.9  # independent shuffles spread the variation over several PCs
    assert null["explained"].shape == (16, 8) and null["abs_proj_top1"].shape == (16, 8)


def test_shuffle_null_is_seeded_and_deterministic():
    X = alternating()
    a, b = direction_pca_shuffle_null(X, 6, seed=3), direction_pca_shuffle_null(X.clone(), 6, seed=3)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    c = direction_pca_shuffle_null(X, 6, seed=4)
    assert not torch.equal(a["explained"], c["explained"])


@settings(max_examples=30, deadline=None)
@given(L=st.integers(1, 6), D_=st.integers(2, 20), seed=st.integers(0, 10_000))
def test_shuffle_keeps_each_layers_values(L, D_, seed):
    X = rand(L, D_, seed=seed)
    Y = shuffle_coordinates(X, gen(seed))
    assert torch.equal(Y.sort(dim=1).values, X.sort(dim=1).values)
    assert torch.equal(Y, shuffle_coordinates(X, gen(seed)))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), flip=st.booleans())
def test_direction_pca_explained_is_invariant_under_a_shared_coordinate_relabelling(seed, flip):
    """A permutation (and sign change) of the residual coordinates applied to every layer is orthogonal: the
    explained variances do not move.  The shuffle null, by contrast, relabels each layer independently."""
    X = rand(6, 16, seed=seed).abs() + 0.3
    p = torch.randperm(16, generator=gen(seed + 1))
    Y = X[:, p] * (-1.0 if flip else 1.0)
    torch.testing.assert_close(direction_pca(Y)["explained"], direction_pca(X)["explained"], rtol=0, atol=1e-12)


def test_parallel_gains_have_no_principal_component():
    base = rand(16).abs() + 0.5
    X = torch.linspace(0.5, 3.0, 6, dtype=D)[:, None] * base[None, :]
    with pytest.warns(GeomlibWarning, match="do not vary across layers"):
        res = direction_pca(X)
    assert torch.isnan(res["explained"]).all() and torch.isnan(res["proj_top1"]).all()
    assert torch.equal(res["scores"], torch.zeros_like(res["scores"]))  # every layer at the mean, exactly


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.0])
def test_nan_or_zero_gain_gives_nan_and_a_warning_not_zero(bad):
    X = alternating()
    if bad == 0.0:
        X[3] = 0.0
    else:
        X[3, 5] = bad
    with pytest.warns(GeomlibWarning, match="zero or has NaN/Inf"):
        res = direction_pca(X)
    for k in ("explained", "proj_top1", "resid_top1", "scores", "components"):
        assert torch.isnan(res[k]).all(), k
    with pytest.warns(GeomlibWarning, match="zero or has NaN/Inf"):
        null = direction_pca_shuffle_null(X, 3, 0)
    assert torch.isnan(null["explained_mean"]).all() and torch.isnan(null["abs_proj_top1_std"]).all()


def test_mean_removed_directions():
    """γ_L = m + c_L v with c_L of both signs: the deviations are ±v, one direction; the raw units are not rank 1."""
    m, v = rand(20, seed=1).abs() + 1.0, rand(20, seed=2)
    c = torch.tensor([-2.0, 1.0, -0.5, 3.0, 0.7, -1.2], dtype=D)
    X = m[None, :] + c[:, None] * v[None, :]
    C = centered_gains(X)
    torch.testing.assert_close(C.mean(0), torch.zeros(20, dtype=D), rtol=0, atol=1e-14)
    cen = direction_pca(C)
    assert float(cen["explained"][0]) == pytest.approx(1.0, abs=1e-12)
    assert float(direction_pca(X)["explained"][0]) < 1 - 1e-6
    null = direction_pca_shuffle_null(X, 16, 0, centered=True)
    assert float(null["explained_mean"][0] + 2 * null["explained_std"][0]) < 0.9


def test_shuffle_null_draws_argument():
    with pytest.raises(InvalidArgumentError):
        direction_pca_shuffle_null(alternating(), draws=0)


def test_pooled_std_is_the_root_mean_variance_or_the_successive_difference_estimate():
    import numpy as np

    from geomlib.metrics.nulls import pooled_std

    std = np.array([[0.1, 0.3, np.nan, 0.2]])
    got = pooled_std(std, draws=2)
    want = np.sqrt((0.01 + 0.09 + 0.04) / 3)
    np.testing.assert_allclose(got, [[want, want, np.nan, want]])
    # one draw per pair: von Neumann's estimate from the per-pair values, NaN pairs left out and kept NaN
    mean = np.array([[1.0, 1.2, 0.9, np.nan, 1.1]])
    d = np.array([0.2, -0.3])
    np.testing.assert_allclose(pooled_std(None, mean, draws=1),
                               [[*[np.sqrt(np.sum(d**2) / (2 * d.size))] * 3, np.nan, np.sqrt(np.sum(d**2) / 4)]])
    assert np.isnan(pooled_std(None, np.array([[0.5, np.nan]]), draws=1)).all()  # one finite pair: no spread
