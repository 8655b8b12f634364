"""Singular-value spectra of weight matrices and the power-law tail of their eigenvalue density.

WeightWatcher's layer metrics (Martin & Mahoney 2021): the empirical spectral
density (ESD) of ``λ = σ²`` and the exponent ``α`` of a power law fitted to its
tail, ``p(λ) ∝ λ^(−α)`` for ``λ ≥ x_min``.  The fit is Clauset, Shalizi &
Newman (2009): the continuous maximum-likelihood ``α`` for every candidate
``x_min`` and the ``x_min`` whose fit is closest to the data in
Kolmogorov–Smirnov distance.  Written here, vectorised in numpy, instead of
depending on the ``powerlaw`` package (same estimator; its KS distance is the
one-sided step ``|P(x_j) − j/n|``, ours the two-sided supremum, so ours can be
larger by at most ``1/n_tail``).

Pure functions: tensors or arrays in, tensors, arrays or floats out;
deterministic; degenerate input gives NaN with a
:class:`~geomlib.errors.GeomlibWarning`, never a silent 0.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..errors import GeomlibWarning
from ..limits import MIN_TAIL

#: candidate x_min values scored at once: bounds each (candidates x eigenvalues) temporary of the KS search to 8 MiB
_KS_BLOCK = 2**20


def singular_values(w: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Singular values of ``w`` in ``dtype``, descending; NaN (with a warning) when ``w`` is not finite.

    Parameters
    ----------
    w : (m, n)
        A weight matrix (any float dtype, any device).
    dtype : torch.dtype
        Dtype of the factorization (float64: the reference).

    Returns
    -------
    (min(m, n),) tensor of ``dtype`` on ``w``'s device.
    """
    if w.ndim != 2:
        raise ValueError(f"singular_values needs a matrix, got shape {tuple(w.shape)}")
    k = min(w.shape)
    if not bool(torch.isfinite(w).all()):
        warnings.warn("matrix has NaN or Inf entries: its singular values are NaN", GeomlibWarning, stacklevel=2)
        return torch.full((k,), math.nan, dtype=dtype, device=w.device)
    return torch.linalg.svdvals(w.to(dtype))


def spectral_norm(s: torch.Tensor) -> float:
    """``‖W‖₂ = σ₁`` from descending singular values ``s`` of shape ``(k,)`` (NaN when ``s`` is)."""
    return float(s[0]) if s.numel() else math.nan


def stable_rank(s: torch.Tensor) -> float:
    """``‖W‖_F² / ‖W‖₂² = Σσ² / σ₁²`` from descending singular values ``s`` of shape ``(k,)``.

    Between 1 (rank one) and ``k``; invariant to rescaling.  A zero matrix gives NaN (0/0) with a warning.
    """
    top = spectral_norm(s)
    if not math.isfinite(top):
        return math.nan
    if top == 0:
        warnings.warn("zero matrix: its stable rank is NaN", GeomlibWarning, stacklevel=2)
        return math.nan
    s64 = s.to(torch.float64)
    return float((s64 * s64).sum()) / (float(s64[0]) ** 2)


def esd_eigenvalues(s: torch.Tensor, shape: tuple[int, int], dtype: torch.dtype = torch.float64) -> np.ndarray:
    """The ESD's eigenvalues ``λ = σ²`` above the numerical-rank threshold, ascending, float64.

    Singular values below ``σ₁ · max(m, n) · eps(dtype)`` (numpy's ``matrix_rank`` rule) are rounding
    noise of zero: their ``λ`` would put a spurious point decades below the rest, so they are left out.

    Parameters
    ----------
    s : (k,)
        Singular values (any order).
    shape : (m, n)
        The matrix's shape (for the threshold).
    dtype : torch.dtype
        Dtype the singular values were computed in.

    Returns
    -------
    (r,) ndarray, r ≤ k (empty when ``s`` is not finite or zero).
    """
    x = s.detach().to("cpu", torch.float64).numpy()
    if x.size == 0 or not np.isfinite(x).all():
        return np.zeros(0)
    tol = x.max() * max(shape) * torch.finfo(dtype).eps
    x = x[x > tol]
    return np.sort(x * x)


def fit_power_law(x, min_tail: int = MIN_TAIL) -> dict[str, float]:
    """Clauset–Shalizi–Newman continuous power-law fit of the tail of a positive sample.

    For each candidate ``x_min`` (every distinct sample value leaving at least ``min_tail`` points at or
    above it) the maximum-likelihood exponent is ``α = 1 + n / Σ ln(x_i / x_min)`` over the ``n`` tail
    points, and the fit's Kolmogorov–Smirnov distance is ``D = sup |S(x) − P(x)|`` between the tail's
    empirical CDF ``S`` and ``P(x) = 1 − (x / x_min)^(1 − α)``; the candidate with the smallest ``D`` wins
    (the smallest ``x_min`` on ties).  ``α`` and ``D`` are invariant to rescaling the sample.

    Parameters
    ----------
    x : (n,) array or tensor
        Positive values (eigenvalues); non-positive or non-finite ones are an error of the caller and make
        the result NaN.
    min_tail : int
        Fewest points in the fitted tail.

    Returns
    -------
    dict with float ``alpha``, ``xmin``, ``ks`` (NaN when fewer than ``min_tail`` points or no candidate
    has a finite fit) and int ``n_tail``.
    """
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64).ravel()
    nan = {"alpha": math.nan, "xmin": math.nan, "ks": math.nan, "n_tail": 0}
    if x.size < max(min_tail, 2) or not (np.isfinite(x).all() and (x > 0).all()):
        return nan
    x = np.sort(x)
    n = x.size
    lx = np.log(x)
    # candidates: first occurrence of each distinct value with at least min_tail points from it on
    first = np.r_[True, x[1:] != x[:-1]]
    cand = np.flatnonzero(first[: n - min_tail + 1])
    m = (n - cand).astype(np.float64)  # tail sizes
    suffix = np.cumsum(lx[::-1])[::-1]  # Σ_{j ≥ i} ln x_j
    s_log = suffix[cand] - m * lx[cand]  # Σ ln(x_j / x_min) over the tail
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(s_log > 0, 1.0 + m / s_log, np.nan)
    ks = np.full(cand.size, np.inf)
    j = np.arange(n)
    rows = max(1, _KS_BLOCK // n)
    for a in range(0, cand.size, rows):
        i, al, mm = cand[a:a + rows, None], alpha[a:a + rows, None], m[a:a + rows, None]
        tail = j[None, :] >= i
        with np.errstate(invalid="ignore", over="ignore"):
            p = 1.0 - np.exp((1.0 - al) * (lx[None, :] - lx[i]))
        k = (j[None, :] - i).astype(np.float64)  # points of the tail below x_j
        # the empirical CDF steps from k/m to (k+1)/m at x_j: the supremum is at one of the two sides
        d = np.maximum(np.abs(p - k / mm), np.abs((k + 1) / mm - p))
        d = np.where(tail, d, 0.0).max(axis=1)
        ks[a:a + rows] = np.where(np.isfinite(al[:, 0]), d, np.inf)
    if not np.isfinite(ks).any():
        return nan
    best = int(np.argmin(ks))  # the first minimum: the smallest x_min on ties
    return {"alpha": float(alpha[best]), "xmin": float(x[cand[best]]), "ks": float(ks[best]),
            "n_tail": int(m[best])}


def spectrum_summary(w: torch.Tensor, dtype: torch.dtype = torch.float64, min_tail: int = MIN_TAIL) -> dict:
    """Everything of one matrix: singular values, spectral norm, stable rank and the ESD's power-law tail.

    Parameters
    ----------
    w : (m, n)
        A weight matrix.
    dtype : torch.dtype
        Dtype of the factorization.
    min_tail : int
        Fewest eigenvalues in the fitted tail (:func:`fit_power_law`).

    Returns
    -------
    dict
        ``sigma`` (min(m, n),) float64 ndarray, descending; floats ``spectral_norm``, ``stable_rank``,
        ``alpha``, ``xmin``, ``ks``; int ``n_tail``.  NaN (with a warning) for a non-finite matrix;
        a zero matrix has σ = 0 and NaN stable rank and fit.
    """
    s = singular_values(w, dtype)
    out = {"sigma": s.detach().to("cpu", torch.float64).numpy(), "spectral_norm": spectral_norm(s),
           "stable_rank": stable_rank(s)}
    out.update(fit_power_law(esd_eigenvalues(s, tuple(w.shape), dtype), min_tail))
    return out


__all__ = ["MIN_TAIL", "esd_eigenvalues", "fit_power_law", "singular_values", "spectral_norm",
           "spectrum_summary", "stable_rank"]
