"""Change-point segmentation: the dynamic programme against brute force, planted profiles, NaN, the criterion."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from geomlib.analyses.segment import EBIC_FORMULA, segment
from geomlib.errors import InvalidArgumentError


def direct_cost(X, starts):
    """Within-segment SSE summed directly (two-pass, finite entries only): no prefix sums."""
    X = np.atleast_2d(np.asarray(X, float).T).T
    edges = list(starts) + [len(X)]
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        for col in X[a:b].T:
            v = col[np.isfinite(col)]
            if len(v):
                total += float(((v - v.mean()) ** 2).sum())
    return total


def brute_force(X, k, min_size):
    """Minimal cost over every admissible segmentation into k segments, and all the minimisers."""
    n = len(X)
    rows_with_data = np.isfinite(np.atleast_2d(np.asarray(X, float).T).T).any(axis=1)
    best, arg = np.inf, []
    for cut in itertools.combinations(range(1, n), k - 1):
        edges = (0,) + cut + (n,)
        if k > 1 and any(rows_with_data[a:b].sum() < min_size for a, b in zip(edges[:-1], edges[1:])):
            continue
        c = direct_cost(X, (0,) + cut)
        if c < best - 1e-9:
            best, arg = c, [cut]
        elif abs(c - best) <= 1e-9:
            arg.append(cut)
    return best, arg


def planted(starts, n, p, noise, seed, step=1.0):
    """Piecewise-constant profile: every segment gets new per-feature levels at least ``step`` apart."""
    rng = np.random.default_rng(seed)
    X = np.empty((n, p))
    level = rng.normal(size=p)
    edges = list(starts) + [n]
    for a, b in zip(edges[:-1], edges[1:]):
        level = level + step * rng.choice([-1.0, 1.0], size=p) * (1 + rng.random(p))
        X[a:b] = level
    return X + noise * rng.standard_normal((n, p))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("min_size", [1, 2, 3])
def test_dp_equals_brute_force(seed, min_size):
    rng = np.random.default_rng(seed)
    n, p = int(rng.integers(4, 11)), int(rng.integers(1, 4))
    X = rng.standard_normal((n, p))
    res = segment(X, k_max=n, min_size=min_size)
    for k in range(1, n + 1):
        best, arg = brute_force(X, k, min_size)
        if not np.isfinite(best):
            assert np.isnan(res.sse[k - 1]), k
            continue
        assert res.sse[k - 1] == pytest.approx(best, rel=1e-10, abs=1e-12), k
        assert res.all_boundaries[k - 1] in arg  # continuous random data: the optimum is unique
        assert direct_cost(X, (0,) + res.all_boundaries[k - 1]) == pytest.approx(best, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_dp_equals_brute_force_with_missing_values(seed):
    rng = np.random.default_rng(100 + seed)
    n = 9
    X = rng.standard_normal((n, 3))
    X[rng.random((n, 3)) < 0.25] = np.nan
    X[int(rng.integers(n))] = np.nan  # a whole layer without data
    X = np.column_stack([X, np.full(n, np.nan), np.full(n, 2.5)])  # an empty and a constant column
    res = segment(X, k_max=n, min_size=2)
    assert list(res.features) == [0, 1, 2]
    for k in range(1, n + 1):
        # the dropped columns add nothing to any cost, and "layers with data" counts the used ones only
        best, arg = brute_force(X[:, :3], k, 2)
        if np.isfinite(best):
            assert res.sse[k - 1] == pytest.approx(best, rel=1e-10, abs=1e-12), k
            assert res.all_boundaries[k - 1] in arg
        else:
            assert np.isnan(res.sse[k - 1])


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("starts, n, p", [((0, 5, 9, 17), 24, 6), ((0, 7, 10, 32, 47, 59), 64, 8), ((0, 12), 30, 1)])
def test_planted_boundaries_and_k_are_recovered(seed, starts, n, p):
    X = planted(starts, n, p, noise=0.15, seed=seed)
    res = segment(X)
    assert res.chosen_by == "ebic"
    assert res.k == len(starts) and res.starts == starts
    assert int(np.nanargmin(res.ebic)) + 1 == res.k


def test_noiseless_plant_picks_the_planted_k_not_more():
    # SSE is ~0 for every k ≥ 3 here; the floor makes ln finite and the penalty then prefers 3
    X = planted((0, 4, 11), 16, 3, noise=0.0, seed=0)
    res = segment(X)
    assert res.starts == (0, 4, 11)
    assert np.isfinite(res.ebic).all()


@pytest.mark.parametrize("seed", range(5))
def test_pure_noise_is_one_segment(seed):
    X = np.random.default_rng(seed).standard_normal((40, 4))
    res = segment(X)
    assert res.k == 1 and res.boundaries == ()


def test_criterion_is_the_stated_formula():
    X = planted((0, 6, 13), 20, 3, noise=0.2, seed=3)
    X[4] = np.nan  # m counts layers with data
    res = segment(X)
    N, p, m = res.n_values, len(res.features), res.n_observed
    assert (N, p, m) == (57, 3, 19)
    k = np.arange(1, res.k_max + 1)
    choose = np.array([math.comb(m - 1, j - 1) for j in k], dtype=float)
    want = N * np.log(res.sse / N) + (k * p + k - 1) * np.log(N) + 2 * np.log(choose)
    np.testing.assert_allclose(res.ebic, want, rtol=1e-12)
    assert EBIC_FORMULA in res.describe() and "k=3" in res.describe()


def test_the_location_term_stops_noise_from_buying_segments():
    # one feature: the plain BIC (without 2·ln C(m−1, k−1)) takes a spurious change in about one
    # noise profile of 30 layers in five; the extended criterion in none of these
    plain_k, ext_k = [], []
    for seed in range(40):
        res = segment(np.random.default_rng(seed).standard_normal(30))
        k = np.arange(1, res.k_max + 1)
        plain = 30 * np.log(res.sse / 30) + (2 * k - 1) * np.log(30)
        plain_k.append(int(np.argmin(plain)) + 1)
        ext_k.append(res.k)
    assert ext_k == [1] * 40
    assert sum(k > 1 for k in plain_k) >= 4


def test_user_k_is_honoured():
    X = planted((0, 8, 16), 24, 2, noise=0.1, seed=1)
    res = segment(X, n_segments=5)
    assert res.chosen_by == "user-k" and res.k == 5 and len(res.boundaries) == 4
    best, arg = brute_force(X[:, :1], 1, 2)  # sanity of the helper on a trivial case
    assert best == pytest.approx(direct_cost(X[:, :1], (0,)))
    assert direct_cost(X, res.starts) == pytest.approx(res.sse[4])
    # every planted change survives when more segments are asked for than planted
    assert {8, 16} <= set(res.boundaries)
    # k above the default k_max: the table grows to it
    assert segment(X, n_segments=10).sse.shape == (10,)


@pytest.mark.parametrize("min_size", [2, 3, 4])
def test_min_size_is_respected_for_every_k(min_size):
    X = planted((0, 6, 13), 20, 2, noise=0.1, seed=2)
    X[9] += 25.0  # a one-layer outlier: with min_size 1 it would be a segment of its own
    res = segment(X, k_max=20, min_size=min_size)
    for k, b in enumerate(res.all_boundaries, start=1):
        if np.isnan(res.sse[k - 1]):
            assert b == () and k > 20 // min_size
            continue
        lengths = np.diff((0,) + b + (20,))
        assert len(lengths) == k and lengths.min() >= min_size
    assert segment(X, k_max=20, min_size=1).all_boundaries[2] == (9, 10)  # the outlier alone


def test_min_size_counts_layers_with_data():
    X = planted((0, 6, 12), 18, 2, noise=0.05, seed=4)
    X[3:5] = np.nan  # segment 0..5 keeps 4 layers with data
    res = segment(X, k_max=18, min_size=2)
    rows = np.isfinite(X).any(axis=1)
    for k, b in enumerate(res.all_boundaries, start=1):
        if b:
            edges = (0,) + b + (18,)
            assert all(rows[a:c].sum() >= 2 for a, c in zip(edges[:-1], edges[1:]))
    assert res.n_observed == 16
    assert np.isnan(res.sse[8]) and np.isfinite(res.sse[7])  # 9 segments of 2 need 18 layers with data


def test_missing_values_are_left_out_not_invented():
    X = planted((0, 7, 10, 20), 28, 4, noise=0.1, seed=5)
    full = segment(X)
    Y = X.copy()
    Y[14:16] = np.nan  # inside a segment: the boundaries do not move
    Y[2, 1] = np.inf  # ±inf counts as missing
    Y = np.column_stack([Y, np.full(28, np.nan)])  # a head never measured
    res = segment(Y)
    assert res.starts == full.starts == (0, 7, 10, 20)
    assert list(res.features) == [0, 1, 2, 3]
    assert res.n_values == 28 * 4 - 2 * 4 - 1
    # a run of empty layers straddling a change: every position in it ties, the earliest wins
    Z = X.copy()
    Z[18:22] = np.nan
    assert segment(Z, n_segments=4).boundaries == (7, 10, 18)


def test_one_dimensional_input_and_k1():
    x = np.r_[np.zeros(10), np.ones(10)] + 0.1 * np.random.default_rng(0).standard_normal(20)
    assert segment(x).starts == (0, 10)
    one = segment(x, n_segments=1)
    assert one.boundaries == () and one.sse[0] == pytest.approx(direct_cost(x, (0,)))
    # fewer layers than min_size: the whole profile is still one segment
    assert segment([1.0, 2.0], min_size=3).k == 1


@pytest.mark.parametrize(
    "args, kw, words",
    [
        (np.zeros((3, 2, 2)), {}, "shape"),
        (np.ones((6, 2)), {}, "two distinct"),
        (np.full((6, 2), np.nan), {}, "two distinct"),
        (np.arange(6.0), {"n_segments": 4}, "at most 3"),
        (np.arange(6.0), {"n_segments": 0}, "n_segments"),
        (np.arange(6.0), {"min_size": 0}, "min_size"),
        (np.arange(6.0), {"k_max": 0}, "k_max"),
    ],
)
def test_bad_input_fails_with_one_sentence(args, kw, words):
    with pytest.raises(InvalidArgumentError) as err:
        segment(args, **kw)
    assert words in str(err.value) and "\n" not in str(err.value)


profiles = hnp.arrays(np.float64, st.tuples(st.integers(2, 14), st.integers(1, 4)),
                      elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False))


@settings(max_examples=60, deadline=None)
@given(X=profiles)
def test_cost_is_non_increasing_in_k_without_a_minimum_length(X):
    # with min_size 1 every k-segmentation refines into a (k+1)-segmentation of no larger cost
    try:
        res = segment(X, k_max=len(X), min_size=1)
    except InvalidArgumentError:
        return  # a constant profile: nothing to segment
    sse = res.sse
    assert np.isfinite(sse).all()
    scale = max(direct_cost(X, (0,)), 1.0)
    assert (np.diff(sse) <= 1e-9 * scale).all()
    assert sse[-1] == pytest.approx(0.0, abs=1e-9 * scale)  # one layer per segment fits exactly


@settings(max_examples=40, deadline=None)
@given(X=profiles, min_size=st.integers(2, 4))
def test_a_minimum_length_never_lowers_the_cost(X, min_size):
    # with min_size > 1 the cost need not fall with k ([0,0,0,1,1,1]: k=2 costs 0, k=3 costs 0.5),
    # but it can never beat the unconstrained optimum
    try:
        free = segment(X, k_max=len(X), min_size=1).sse
    except InvalidArgumentError:
        return
    held = segment(X, k_max=len(X), min_size=min_size).sse
    ok = np.isfinite(held)
    scale = max(direct_cost(X, (0,)), 1.0)
    assert (held[ok] >= free[ok] - 1e-9 * scale).all()
    assert ok.sum() == max(1, int(np.isfinite(X).any(axis=1).sum()) // min_size)


def test_min_size_makes_cost_non_monotone():
    res = segment([0.0, 0, 0, 1, 1, 1], k_max=3)
    np.testing.assert_allclose(res.sse, [1.5, 0.0, 0.5])
    assert res.k == 2 and res.starts == (0, 3)


def test_importable_without_torch():
    code = ("import sys\nimport geomlib.analyses.segment as s\nprint(s.segment([0.0, 0, 1, 1]).starts)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(0, 2)"
