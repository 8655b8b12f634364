"""Null baselines for the aligned cosine.

For unrelated random matrices the aligned cosine is far from 0 (0.57-0.92
depending on shape), because the rotation is optimised.  A "large delta"
(aligned − raw) means something only against these baselines:

``gaussian``   both matrices independent Gaussian with the given shape;
``scrambled``  the real pair, with the non-residual side of the second matrix
               scrambled by a random signed permutation: its spectrum and its
               residual-side Gram ``bᵀb`` are kept, the pairing with ``a`` is lost.
               The sign flips are NOT a symmetry of a gated (SiLU/GELU) MLP or of
               attention heads: a flipped layer computes another function, and
               any structure shared by the rows (e.g. a common mean row) is lost
               with them, so this band can sit below what the same layer in
               another labelling gives;
``permutation`` the real pair, with the second layer relabelled by a random TRUE
               symmetry: one neuron permutation shared by gate/up rows and down
               columns, or a GQA-consistent head permutation of q/k/v rows and
               o columns (:func:`~geomlib.metrics.gauge_nulls.permutation_null`).
               The relabelled layer computes the same function, so an aligned
               cosine above this band is structure beyond an arbitrary labelling
               of the same function.  Norm gains have no per-layer symmetry that
               keeps the shared residual basis (a permuted gain permutes the
               residual stream), so they get no permutation band.

Draws are seeded, so the same inputs always give the same band.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .gauge_nulls import permutation_null
from .similarity import aligned_cos, norm64

NULL_KINDS = ("gaussian", "scrambled", "permutation")
#: families whose permutation null relabels attention heads (the MLP families relabel neurons)
HEAD_FAMILIES = ("q_proj", "k_proj", "v_proj", "o_proj")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def signed_permutation(x: torch.Tensor, axis: int, gen: torch.Generator) -> torch.Tensor:
    """``x`` with its entries along ``axis`` randomly permuted and sign-flipped (an orthogonal map)."""
    n = x.shape[axis]
    perm = torch.randperm(n, generator=gen).to(x.device)
    signs = (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(x.device, x.dtype)
    if axis == 0:
        return x[perm] * signs[:, None]
    return x[:, perm] * signs[None, :]


def _mean_std(vals: list[float]) -> tuple[float, float]:
    finite = [v for v in vals if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    t = torch.tensor(finite, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=True)) if len(finite) > 1 else math.nan


def gaussian_aligned_null(shape: tuple[int, int], residual_axis: int, draws: int = 8, seed: int = 0,
                          device: torch.device | str = "cpu", compute_dtype: torch.dtype = torch.float64
                          ) -> tuple[float, float]:
    """Mean and std of the aligned cosine of two independent Gaussian matrices of ``shape``.

    ``compute_dtype`` is that of the draws and their cross products (float32:
    relative 1e-4, :func:`~geomlib.metrics.similarity.nuclear_norm`).
    """
    gen = _generator(seed)
    vals = []
    for _ in range(draws):
        a = torch.randn(shape, generator=gen, dtype=compute_dtype).to(device)
        b = torch.randn(shape, generator=gen, dtype=compute_dtype).to(device)
        vals.append(aligned_cos(a, b, residual_axis, norms=(norm64(a), norm64(b))))
    return _mean_std(vals)


def scrambled_aligned_null(a: torch.Tensor, b: torch.Tensor, residual_axis: int, draws: int = 8,
                           seed: int = 0, compute_dtype: torch.dtype | None = None) -> tuple[float, float]:
    """Mean and std of the aligned cosine of ``a`` with ``b`` scrambled on its non-residual side.

    ``compute_dtype`` is that of the cross products (default: the inputs'; float32
    holds a relative 1e-4 of float64, :func:`~geomlib.metrics.similarity.nuclear_norm`).
    """
    gen = _generator(seed)
    other = 1 - residual_axis
    norms = (norm64(a), norm64(b))  # a signed permutation keeps the norm
    dt = compute_dtype or a.dtype
    a, b = a.to(dt), b.to(dt)
    vals = [aligned_cos(a, signed_permutation(b, other, gen), residual_axis, norms=norms) for _ in range(draws)]
    return _mean_std(vals)



def permutation_aligned_null(a: torch.Tensor, b: torch.Tensor, family: str, draws: int = 8, seed: int = 0,
                             n_heads: int | None = None, n_kv_heads: int | None = None,
                             head_dim: int | None = None, compute_dtype: torch.dtype = torch.float64
                             ) -> tuple[float, float]:
    """Mean and std of the aligned cosine of ``a`` with ``b`` relabelled by a random true symmetry.

    Parameters
    ----------
    a, b : (n_out, n_in)
        One matrix family of two layers, HF ``[out, in]``.
    family : str
        An MLP family (neuron permutation) or q/k/v/o (head permutation; needs
        ``n_heads``, ``n_kv_heads`` and ``head_dim``).
    draws, seed : int
        As the other nulls; the draws are those of
        :func:`~geomlib.metrics.gauge_nulls.permutation_null` for the whole layer,
        so gate/up/down (q/k/v/o) called one at a time share each draw's permutation.

    Returns
    -------
    (mean, std) over the draws; NaN where no draw was finite (zero or
    non-finite matrices), std NaN for a single draw.
    """
    heads = dict(n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim) if family in HEAD_FAMILIES else {}
    band = permutation_null({family: a}, {family: b}, "aligned", draws, seed, **heads, compute_dtype=compute_dtype)
    return band.mean[family], band.std[family]


def pooled_std(std, mean=None, draws: int = 2):
    """The band width of per-pair nulls: one draw's standard deviation, pooled along the last (pair) axis.

    With few draws per pair one pair's std is a poor estimate; the draws of every pair estimate the
    same Monte-Carlo spread (pairs differ in their mean), so:

    * ``draws ≥ 2``: the root mean of the per-pair sample variances (pairs·(draws − 1) degrees of freedom);
    * ``draws == 1``: von Neumann's successive-difference estimate from the per-pair values ``mean``,
      ``s² = Σ (x_{i+1} − x_i)² / (2 (n − 1))``: unbiased when the null mean is the same for
      neighbouring pairs, and wider (conservative for a null band) when it drifts with depth.

    Pairs without a finite value stay NaN; fewer than two finite pairs give NaN.

    Parameters
    ----------
    std, mean : (..., pairs)
    """
    if draws >= 2:
        std = np.asarray(std, dtype=float)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(std)
            n = ok.sum(axis=-1, keepdims=True)
            pooled = np.sqrt(np.where(ok, std**2, 0.0).sum(axis=-1, keepdims=True) / np.maximum(n, 1))
        pooled = np.where(n >= 1, pooled, np.nan)
        return np.where(ok, np.broadcast_to(pooled, std.shape), np.nan)
    x = np.asarray(mean, dtype=float)
    out = np.full(x.shape, np.nan)
    for idx in np.ndindex(x.shape[:-1]):
        row = x[idx]
        d = np.diff(row)
        d = d[np.isfinite(d)]
        if d.size >= 1 and np.isfinite(row).sum() >= 2:
            out[idx] = np.where(np.isfinite(row), np.sqrt(np.sum(d**2) / (2 * d.size)), np.nan)
    return out
