"""Phase boundaries with an uncertainty: the automatic entropy phases refitted to bootstrap resamples of the
text windows the forward pass read (:func:`bootstrap_phases`), summarised per boundary (:class:`Bootstrap`).

Phases are fitted on head-order-invariant profiles (:func:`geomlib.analyses.phases.head_invariant`);
each replicate resamples the windows with replacement, takes their token-weighted mean, sorts heads and
segments exactly like the main fit.  Applied at load time with the phases, never cached.  Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import xarray as xr

from ..errors import InvalidArgumentError
from ..validate import positive_int
from .phases import (
    AUTO_K_MAX,
    AUTO_MIN_SIZE,
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_MIN_WINDOWS,
    BOOTSTRAP_REPLICATES,
    BOOTSTRAP_SEED,
    head_invariant,
)
from .segment import segment


def _pct(x: float) -> str:
    """A fraction as a percentage that never rounds a rare event to 0% or a near-certainty to 100%."""
    if 0 < x < 0.01:
        return "<1%"
    if 0.99 < x < 1:
        return ">99%"
    return f"{x:.0%}"


@dataclass(frozen=True)
class Bootstrap:
    """Phase boundaries refitted to window-resampled entropy profiles (:func:`bootstrap_phases`).

    Attributes
    ----------
    starts : tuple of tuple of int
        First layer of every phase (0 included) in each replicate that could
        be segmented.
    freq : ndarray, shape (n_layers,)
        Fraction of those replicates in which a phase starts at each layer
        (1 at layer 0 by definition).
    replicates : int
        Replicates drawn; ``len(starts)`` of them could be segmented.
    n_windows : int
    seed : int
    fixed_k : bool
        Whether every replicate was cut into the fitted number of phases
        (given by the user) rather than choosing its own by EBIC.
    """

    starts: tuple[tuple[int, ...], ...]
    freq: np.ndarray
    replicates: int
    n_windows: int
    seed: int
    fixed_k: bool

    def boundary(self, b: int, fitted: Sequence[int], level: float = BOOTSTRAP_LEVEL) -> tuple[float, float, int, int]:
        """How stable the fitted boundary ``b`` is.

        Each replicate boundary is attributed to the nearest fitted boundary
        (ties to the earlier); the replicate's boundary for ``b`` is the
        nearest of those attributed to it, if any.

        Returns
        -------
        exact : float
            Fraction of replicates with a phase starting at ``b`` itself.
        missing : float
            Fraction of replicates with no boundary attributed to ``b``.
        lo, hi : int
            Equal-tailed ``level`` interval of the replicates' boundary for
            ``b`` (inverted-CDF quantiles: it holds at least ``level`` of
            them); ``-1, -1`` when no replicate has one.
        """
        fitted = np.asarray(sorted(fitted), dtype=np.int64)
        pos = []
        for st in self.starts:
            r = np.asarray(st[1:], dtype=np.int64)
            if not len(r):
                continue
            owner = fitted[np.argmin(np.abs(r[:, None] - fitted[None, :]), axis=1)]
            mine = r[owner == b]
            if len(mine):
                pos.append(int(mine[np.argmin(np.abs(mine - b))]))
        m = len(self.starts)
        exact = float(self.freq[b]) if m else np.nan
        missing = 1.0 - len(pos) / m if m else np.nan
        if not pos:
            return exact, missing, -1, -1
        tail = (1.0 - level) / 2
        lo, hi = np.quantile(pos, [tail, 1.0 - tail], method="inverted_cdf")
        return exact, missing, int(lo), int(hi)

    def describe(self, fitted_starts: Sequence[int], level: float = BOOTSTRAP_LEVEL) -> str:
        """One line: what was resampled, how often each k came out, and each fitted boundary's stability."""
        m = len(self.starts)
        how = "k fixed to the fitted one" if self.fixed_k else "k chosen by EBIC in each"
        head = (f"bootstrap over {self.n_windows} text windows of the forward pass (resampled with replacement, "
                f"window means weighted by their tokens, heads sorted within layers, then segmented as the fit was; "
                f"{self.replicates} replicates, seed {self.seed}, {how}")
        if m < self.replicates:
            head += f", {self.replicates - m} could not be segmented"
        if not m:
            return head + ")"
        ks = np.bincount([len(st) for st in self.starts])
        kpart = ", ".join(f"k={k} in {_pct(c / m)}" for k, c in sorted(enumerate(ks), key=lambda t: (-t[1], t[0]))
                          if c)
        parts = []
        fitted = [int(b) for b in fitted_starts[1:]]
        for b in fitted:
            exact, missing, lo, hi = self.boundary(b, fitted, level)
            txt = f"boundary at {b} in {_pct(exact)} of {m} bootstrap replicates"
            if lo >= 0:
                txt += f" ({level:.0%} interval {lo}-{hi}"
                txt += f"; none nearest to it in {_pct(missing)})" if missing > 0 else ")"
            else:
                txt += " (none nearest to it in any)"
            parts.append(txt)
        if not fitted:
            other = self.freq.copy()
            other[0] = 0.0
            top = int(np.argmax(other))
            parts.append("no boundary fitted" + (f"; most frequent replicate boundary {top} in {_pct(other[top])}"
                                                 if other[top] > 0 else ""))
        return f"{head}): {kpart}; " + "; ".join(parts)


def window_profile(ds: xr.Dataset) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """The per-window entropies to bootstrap, their weights, or None and why not.

    Returns
    -------
    windows : ndarray, shape (window, layer, head), or None
    weights : ndarray, shape (window,), or None
        ``window_tokens`` when the dataset has it, else equal weights.
    why : str
        Empty when usable, else the reason (begins with ``"no bootstrap: "``).
    """
    if "attn_entropy_windows" not in ds.data_vars:
        return None, None, ("no bootstrap: the dataset has no attn_entropy_windows (per-text-window entropies, "
                            "stored by the heads analysis from schema 3 on; recompute heads to get them)")
    da = ds["attn_entropy_windows"]
    want = {"window", "layer", "head"}
    if set(da.dims) != want or "attn_entropy" not in ds.data_vars or set(ds["attn_entropy"].dims) != want - {"window"}:
        return None, None, "no bootstrap: attn_entropy_windows is not (window, layer, head) beside attn_entropy"
    Wn = np.asarray(da.transpose("window", "layer", "head").values, dtype=np.float64)
    n_w = Wn.shape[0]
    if n_w < BOOTSTRAP_MIN_WINDOWS:
        return None, None, (f"no bootstrap: only {n_w} text window(s) (fewer than {BOOTSTRAP_MIN_WINDOWS}); "
                            "read a longer text (heads max_tokens) to get more")
    if "window_tokens" in da.coords:
        weights = np.asarray(da["window_tokens"].values, dtype=np.float64)
    else:
        weights = np.ones(n_w)
    if weights.shape != (n_w,) or not (np.isfinite(weights) & (weights > 0)).all():
        return None, None, "no bootstrap: window_tokens is not a positive count per window"
    # the windows must be the measurement the fit used: an edited attn_entropy (or windows) is not resampled
    mean = np.tensordot(weights / weights.sum(), Wn, axes=1)
    E = np.asarray(ds["attn_entropy"].transpose("layer", "head").values, dtype=np.float64)
    if not np.allclose(mean, E, rtol=1e-9, atol=1e-12, equal_nan=True):
        return None, None, "no bootstrap: attn_entropy_windows do not average to attn_entropy"
    return Wn, weights, ""


def bootstrap_phases(
    windows,
    weights=None,
    n_phases: int | None = None,
    *,
    k_max: int = AUTO_K_MAX,
    min_size: int = AUTO_MIN_SIZE,
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = BOOTSTRAP_SEED,
) -> Bootstrap:
    """Refit the entropy phases to profiles averaged over text windows drawn with replacement.

    Each replicate draws ``W`` of the ``W`` windows with replacement,
    averages them (weighted by ``weights``) into a (layer, head) profile,
    sorts each layer's heads (:func:`head_invariant`) and segments it exactly
    as :func:`auto_phases` segments the full profile.  The windows are
    contiguous stretches of one text read in one pass, so this measures how
    much the boundaries depend on which stretches of text were read; it does
    not measure the effect of another text genre or of the context length.

    Parameters
    ----------
    windows : array_like, shape (window, layer, head)
        Per-window mean entropies (``attn_entropy_windows``); NaN where not
        measured.
    weights : array_like, shape (window,), optional
        Tokens per window (default equal).
    n_phases : int, optional
        Cut every replicate into this many phases; default: EBIC chooses in each.
    k_max, min_size : int
        As for :func:`auto_phases`.
    replicates, seed : int
        Number of resamples and the seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    Bootstrap
    """
    Wn = np.asarray(windows, dtype=np.float64)
    if Wn.ndim != 3 or Wn.shape[0] < 1:
        raise InvalidArgumentError(
            f"windows of shape {Wn.shape} cannot be bootstrapped; pass an array of shape (window, layer, head)"
        )
    positive_int("replicates", replicates)
    n_w, n, H = Wn.shape
    w = np.ones(n_w) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n_w,) or not (np.isfinite(w) & (w > 0)).all():
        raise InvalidArgumentError(
            f"window weights of shape {w.shape} do not fit {n_w} windows; pass one positive weight (tokens) per window"
        )
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_w, size=(replicates, n_w))
    flat = Wn.reshape(n_w, -1)
    ok = np.isfinite(flat)
    zeroed = np.where(ok, flat, 0.0)
    starts, found = [], np.zeros(n)
    for d in draws:
        c = np.bincount(d, minlength=n_w) * w  # weight of each window in this replicate
        # an elementwise sum down the window axis, not a matrix product: every (layer, head) column is summed
        # in the same order wherever it sits, so relabelling heads cannot change a single bit
        total = (c[:, None] * zeroed).sum(axis=0)
        # NaN wherever a drawn window is NaN, as attn_entropy is where any of its queries is (a window not
        # drawn must not poison the mean through 0 · NaN)
        bad = ((c > 0)[:, None] & ~ok).any(axis=0)
        X = head_invariant(np.where(bad, np.nan, total / c.sum()).reshape(n, H))
        try:
            seg = segment(X, n_phases, k_max=k_max, min_size=min_size, standardize=False)
        except InvalidArgumentError:  # a resample with nothing to segment (no informative feature)
            continue
        starts.append(seg.starts)
        found[list(seg.starts)] += 1
    freq = found / len(starts) if starts else np.full(n, np.nan)
    return Bootstrap(starts=tuple(starts), freq=freq, replicates=int(replicates), n_windows=n_w, seed=int(seed),
                     fixed_k=n_phases is not None)


__all__ = ["Bootstrap", "bootstrap_phases", "window_profile"]
