"""Null baselines for the aligned cosine.

For unrelated random matrices the aligned cosine is far from 0 (0.57-0.92
depending on shape), because the rotation is optimised.  A "large delta"
(aligned − raw) means something only against these baselines:

``gaussian``   both matrices independent Gaussian with the given shape;
``scrambled``  the real pair, with the non-residual side of the second matrix
               scrambled by a random signed permutation: its spectrum and its
               residual-side Gram ``bᵀb`` are kept, the pairing with ``a`` is lost.

Draws are seeded, so the same inputs always give the same band.
"""

from __future__ import annotations

import math

import torch

from .similarity import aligned_cos

NULL_KINDS = ("gaussian", "scrambled")


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
                          device: torch.device | str = "cpu") -> tuple[float, float]:
    """Mean and std of the aligned cosine of two independent Gaussian matrices of ``shape``."""
    gen = _generator(seed)
    vals = []
    for _ in range(draws):
        a = torch.randn(shape, generator=gen, dtype=torch.float64).to(device)
        b = torch.randn(shape, generator=gen, dtype=torch.float64).to(device)
        vals.append(aligned_cos(a, b, residual_axis))
    return _mean_std(vals)


def scrambled_aligned_null(a: torch.Tensor, b: torch.Tensor, residual_axis: int, draws: int = 8,
                           seed: int = 0) -> tuple[float, float]:
    """Mean and std of the aligned cosine of ``a`` with ``b`` scrambled on its non-residual side."""
    gen = _generator(seed)
    other = 1 - residual_axis
    vals = [aligned_cos(a, signed_permutation(b, other, gen), residual_axis) for _ in range(draws)]
    return _mean_std(vals)
