"""Exact change-point segmentation of a per-layer profile (piecewise-constant mean, least squares).

A profile ``X`` has one row per layer and one column per feature (an
attention head's entropy, a family's log-norm, ...).  A segmentation into
``k`` contiguous segments is scored by its total within-segment sum of squared
deviations from each segment's per-feature mean; :func:`segment` finds the
optimal one for every ``k`` up to ``k_max`` by dynamic programming (every
segment's cost from prefix sums, O(n² p) once; then O(k n²)), and chooses
``k`` by an extended BIC (:data:`EBIC_FORMULA`) unless it is given.  Exact,
deterministic, numpy only: no torch, no extra dependency.

Missing values are left out of the cost rather than filled in: every sum runs
over the finite entries only, so no value is invented for a layer or head
without data (see :func:`segment` for the consequences on boundaries and
minimum lengths).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgumentError
from ..validate import positive_int

#: the model-selection criterion, as written in docstrings and ``attrs``: N finite values,
#: p features, m layers with data, SSE_k the optimal within-segment sum of squares with k segments
EBIC_FORMULA = "EBIC(k) = N·ln(SSE_k/N) + (k·p + k − 1)·ln(N) + 2·ln C(m − 1, k − 1)"

#: SSE_k is floored at this fraction of SSE_1 before the logarithm: a noiseless
#: planted profile reaches SSE ≈ 0 (rounding), where ln would be -inf and every
#: larger k would tie; with the floor the penalty then prefers the smallest such k
SSE_FLOOR = 1e-12


@dataclass(frozen=True)
class Segmentation:
    """The result of :func:`segment`.

    Attributes
    ----------
    boundaries : tuple of int
        First row (layer index) of each segment after the first, increasing.
    k : int
        Number of segments chosen (``len(boundaries) + 1``).
    chosen_by : {"ebic", "user-k"}
        ``"ebic"``: ``k`` minimises :data:`EBIC_FORMULA` over ``1..k_max``;
        ``"user-k"``: ``k`` was given.
    sse : ndarray, shape (k_max,)
        ``sse[k-1]``: minimal total within-segment SSE with ``k`` segments
        (NaN where no admissible ``k``-segmentation exists).
    ebic : ndarray, shape (k_max,)
        The criterion for each ``k`` (NaN where infeasible); computed also
        when ``k`` was given, for reference.
    all_boundaries : tuple of tuple of int
        The optimal boundaries for each ``k = 1..k_max`` (empty where infeasible).
    n_values : int
        N, the number of finite values used.
    features : ndarray of int
        Columns of the input that were used (all-NaN and constant ones dropped).
    n_rows : int
        Number of rows (layers) of the input.
    n_observed : int
        Rows with at least one finite value among the used features.
    min_size : int
        Minimum number of observed rows per segment.
    standardized : bool
        Whether features were z-scored before segmenting.
    """

    boundaries: tuple[int, ...]
    k: int
    chosen_by: str
    sse: np.ndarray
    ebic: np.ndarray
    all_boundaries: tuple[tuple[int, ...], ...]
    n_values: int
    features: np.ndarray
    n_rows: int
    n_observed: int
    min_size: int
    standardized: bool

    @property
    def starts(self) -> tuple[int, ...]:
        """First row of every segment, 0 included."""
        return (0,) + self.boundaries

    @property
    def k_max(self) -> int:
        return len(self.sse)

    def describe(self) -> str:
        """One line stating the model, the criterion with its numbers, and the choice."""
        p = len(self.features)
        head = (f"exact least-squares segmentation (piecewise-constant mean, dynamic programming) of "
                f"{self.n_rows} layers × {p} features{' (z-scored)' if self.standardized else ''}, "
                f"N={self.n_values} finite values, {self.n_observed} layers with data, "
                f"min segment {self.min_size} layers with data; ")
        table = ", ".join(f"{k}:{b:.6g}" for k, b in enumerate(self.ebic, start=1) if np.isfinite(b))
        if self.chosen_by == "ebic":
            how = f"k chosen by {EBIC_FORMULA} minimised over k=1..{self.k_max}"
        else:
            how = f"k={self.k} given by the user ({EBIC_FORMULA} for reference)"
        return f"{head}{how}: k={self.k}, starts {list(self.starts)}; EBIC by k: {table}"


def _as_profile(X) -> np.ndarray:
    try:
        A = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):  # strings, ragged rows, objects
        raise InvalidArgumentError(
            f"a profile must be numbers, and this {type(X).__name__} cannot be read as a float array; pass an "
            "array of shape (layers, features)"
        ) from None
    if A.ndim == 1:
        A = A[:, None]
    if A.ndim != 2 or A.shape[0] == 0:
        raise InvalidArgumentError(
            f"a profile of shape {A.shape} cannot be segmented; pass an array of shape (layers, features)"
        )
    return np.where(np.isfinite(A), A, np.nan)


def informative(X) -> np.ndarray:
    """Which columns of a profile take at least two distinct finite values (the ones :func:`segment` uses).

    A column with no data or a single value everywhere cannot locate a
    change; kept, it would only add to N and to the penalty of every extra segment.
    """
    A = _as_profile(X)
    observed = np.isfinite(A)
    lo = np.where(observed, A, np.inf).min(axis=0)
    hi = np.where(observed, A, -np.inf).max(axis=0)
    return observed.any(axis=0) & (hi > lo)


def _prepare(X, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Finite-or-NaN float copy restricted to informative columns, centered (z-scored on request)."""
    A = _as_profile(X)
    cols = np.flatnonzero(informative(A))
    if not len(cols):
        raise InvalidArgumentError(
            f"no feature of the {A.shape[1]}-column profile takes two distinct finite values; "
            "nothing to segment (pass a profile that varies along the layers)"
        )
    A = A[:, cols]
    # centering keeps the prefix sums of squares small, so q - s²/m loses few digits to cancellation
    A = A - np.nanmean(A, axis=0)
    if standardize:
        A = A / np.nanstd(A, axis=0)
    return A, cols


def _cost_matrix(A: np.ndarray, min_size: int) -> np.ndarray:
    """``C[i, j]``: SSE of rows ``i..j-1`` (finite entries only), ``inf`` where not admissible."""
    n = A.shape[0]
    obs = np.isfinite(A)
    Z = np.where(obs, A, 0.0)
    zero = np.zeros((1, A.shape[1]))
    cnt = np.concatenate([zero, np.cumsum(obs, axis=0)])
    s = np.concatenate([zero, np.cumsum(Z, axis=0)])
    q = np.concatenate([zero, np.cumsum(Z * Z, axis=0)])
    rows = np.concatenate([[0], np.cumsum(obs.any(axis=1))])
    C = np.full((n + 1, n + 1), np.inf)
    # one errstate for the whole loop: entering it once per row took ~30% of the phase bootstrap's time
    # (geomlib.analyses.phases segments 200 resampled profiles each time phases are applied)
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in range(n):
            m = cnt[i + 1:] - cnt[i]
            ss = s[i + 1:] - s[i]
            within = np.where(m > 0, (q[i + 1:] - q[i]) - ss * ss / m, 0.0)
            C[i, i + 1:] = np.maximum(within, 0.0).sum(axis=1)
            too_short = (rows[i + 1:] - rows[i]) < min_size
            C[i, i + 1:][too_short] = np.inf
        # one segment spanning everything is always a segmentation, however few layers have data
        m = cnt[n] - cnt[0]
        C[0, n] = float(np.maximum(np.where(m > 0, q[n] - s[n] ** 2 / m, 0.0), 0.0).sum())
    return C


def optimal_costs(C: np.ndarray, k_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic programme over a segment-cost matrix.

    Parameters
    ----------
    C : ndarray, shape (n+1, n+1)
        ``C[i, j]``: cost of a segment covering rows ``i..j-1`` (``inf``: not allowed).
    k_max : int

    Returns
    -------
    D : ndarray, shape (k_max+1, n+1)
        ``D[k, j]``: minimal cost of ``k`` segments covering rows ``0..j-1``.
    arg : ndarray of int, shape (k_max+1, n+1)
        Start of the last segment in that optimum; among exact ties the
        earliest start wins (``argmin`` returns the first minimum).
    """
    C = np.asarray(C, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1] or C.shape[0] < 2:
        raise InvalidArgumentError(
            f"a segment-cost matrix of shape {C.shape} cannot be optimised; pass a square (n + 1, n + 1) matrix "
            "for n ≥ 1 rows"
        )
    k_max = positive_int("k_max", k_max)
    n = C.shape[0] - 1
    D = np.full((k_max + 1, n + 1), np.inf)
    arg = np.zeros((k_max + 1, n + 1), dtype=np.int64)
    D[0, 0] = 0.0
    for k in range(1, k_max + 1):
        total = D[k - 1][:, None] + C  # total[i, j]: best k-1 segments of 0..i-1, then segment i..j-1
        arg[k] = np.argmin(total, axis=0)
        D[k] = total[arg[k], np.arange(n + 1)]
    return D, arg


def _backtrack(arg: np.ndarray, k: int, n: int) -> tuple[int, ...]:
    starts, j = [], n
    for kk in range(k, 0, -1):
        j = int(arg[kk, j])
        starts.append(j)
    return tuple(sorted(starts[:-1]))  # the last start found is row 0


def ebic(sse: np.ndarray, n_values: int, n_features: int, n_observed: int) -> np.ndarray:
    """:data:`EBIC_FORMULA` for ``sse[k-1]``, ``k = 1..len(sse)`` (NaN where ``sse`` is NaN).

    The first two terms are the BIC of a Gaussian piecewise-constant mean
    with one common noise variance (its maximum-likelihood estimate SSE_k/N),
    ``k·p`` segment means and ``k − 1`` change points as free parameters (the
    variance is one parameter for every k and cancels).  That BIC alone
    over-segments: a change point is not a regular parameter but the best of
    about m positions, so noise alone buys extra segments (with one feature,
    about one noise profile of 30 layers in five gets a spurious change).
    The last term is the extended BIC of Chen & Chen (2008, Biometrika 95,
    759) with γ = 1: ``2·ln`` of the number of ways to place ``k − 1``
    boundaries between the ``m`` layers with data, which makes the choice
    consistent when the candidate models are this many.

    ``SSE_k`` is floored at :data:`SSE_FLOOR` × SSE_1 before the logarithm.
    """
    sse = np.asarray(sse, dtype=np.float64)
    if sse.ndim != 1 or not len(sse):
        raise InvalidArgumentError(
            f"sse of shape {sse.shape} is not one value per k = 1..k_max; pass a 1-D array with at least one entry"
        )
    N, p, m = float(n_values), float(n_features), int(n_observed)
    floor = SSE_FLOOR * sse[0] if sse[0] > 0 else np.finfo(float).tiny
    k = np.arange(1, len(sse) + 1)
    log_choose = np.array([math.lgamma(m) - math.lgamma(j) - math.lgamma(m - j + 1) if j <= m else np.nan
                           for j in k]) if m >= 1 else np.full(len(k), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):  # N = 0 (no data) gives NaN/inf, handled by the caller
        return N * np.log(np.maximum(sse, floor) / N) + (k * p + k - 1) * np.log(N) + 2 * log_choose


def segment(
    X,
    n_segments: int | None = None,
    *,
    k_max: int = 8,
    min_size: int = 2,
    standardize: bool = False,
) -> Segmentation:
    """Optimal segmentation of a per-layer profile into contiguous segments.

    Minimises the total within-segment sum of squared deviations from each
    segment's per-feature mean (the least-squares fit of a piecewise-constant
    profile), exactly, for every ``k = 1..k_max``; then takes ``n_segments``
    if given, else the ``k`` minimising

        EBIC(k) = N·ln(SSE_k/N) + (k·p + k − 1)·ln(N) + 2·ln C(m − 1, k − 1)

    (N finite values, p features, m layers with data; see :func:`ebic`).
    Ties go to the smaller k.

    Parameters
    ----------
    X : array_like, shape (n,) or (n, p)
        One row per layer.  NaN and ±inf mark missing values.
    n_segments : int, optional
        Number of segments wanted; default: chosen by EBIC.
    k_max : int
        Largest k tried by EBIC (raised to ``n_segments`` when that is larger).
    min_size : int
        Minimum number of layers *with data* (a finite value in some used
        feature) in each segment when ``k ≥ 2``.  2 by default: a one-layer
        segment fits its layer exactly, so any outlier layer would become a
        phase of its own.
    standardize : bool
        z-score each feature (over its finite values) first, so that
        features in different units weigh equally.  Off by default: features
        on one scale (the entropies of heads, in nats) should keep their
        natural weights, or flat, noisy heads would count as much as the ones
        that change.

    Returns
    -------
    Segmentation

    Notes
    -----
    Missing values: columns with no finite value, or a single distinct one,
    are dropped (they cannot locate a change).  Other missing entries are
    left out of every sum (means, SSE, N): nothing is interpolated.  A layer
    with no finite value therefore costs nothing wherever it goes; when a
    boundary falls inside a run of such layers every position in the run is
    an exact tie, and the earliest wins, i.e. the run joins the later segment.

    Raises
    ------
    InvalidArgumentError
        Bad shapes or arguments, no informative feature, or an ``n_segments``
        that cannot be met with ``min_size``.
    """
    positive_int("k_max", k_max)
    positive_int("min_size", min_size)
    A, cols = _prepare(X, standardize)
    n = A.shape[0]
    n_obs = int(np.isfinite(A).any(axis=1).sum())
    feasible = max(1, n_obs // min_size)
    if n_segments is not None:
        positive_int("n_segments", n_segments)
        if n_segments > feasible:
            raise InvalidArgumentError(
                f"{n_segments} segments of at least {min_size} layers with data do not fit in a profile with "
                f"{n_obs} such layers; ask for at most {feasible} or lower min_size"
            )
    K = max(int(k_max), int(n_segments or 0))
    C = _cost_matrix(A, min_size)
    D, arg = optimal_costs(C, min(K, feasible))
    sse = np.full(K, np.nan)
    all_b: list[tuple[int, ...]] = [()] * K
    for k in range(1, min(K, feasible) + 1):
        if np.isfinite(D[k, n]):
            sse[k - 1] = D[k, n]
            all_b[k - 1] = _backtrack(arg, k, n)
    N = int(np.isfinite(A).sum())
    crit = ebic(sse, N, A.shape[1], n_obs)
    if n_segments is None:
        k, how = int(np.nanargmin(crit)) + 1, "ebic"
    else:
        k, how = int(n_segments), "user-k"
    return Segmentation(
        boundaries=all_b[k - 1], k=k, chosen_by=how, sse=sse, ebic=crit, all_boundaries=tuple(all_b),
        n_values=N, features=cols, n_rows=n, n_observed=n_obs, min_size=int(min_size),
        standardized=bool(standardize),
    )
