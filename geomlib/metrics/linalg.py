"""Small linear-algebra helpers shared by the metrics: deterministic signs, spectra.

All functions take and return torch tensors (any device); they never attach
names or coordinates.
"""

from __future__ import annotations

import math

import torch


def svd_flip(u: torch.Tensor, vh: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Deterministic signs for singular/eigen vectors (scikit-learn's ``svd_flip`` rule).

    Each column ``u[..., :, k]`` is flipped so that its entry of largest
    absolute value is positive; the matching row ``vh[..., k, :]`` is flipped
    with it so that ``u @ diag(s) @ vh`` is unchanged.  Leading dimensions are
    a batch (e.g. heads).

    Parameters
    ----------
    u : (..., m, k)
        Left singular vectors (or eigenvectors) as columns.
    vh : (..., k, n), optional
        Right singular vectors as rows.
    """
    idx = u.abs().argmax(dim=-2, keepdim=True)
    signs = torch.sign(torch.gather(u, -2, idx))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    u = u * signs
    if vh is not None:
        vh = vh * signs.transpose(-1, -2)
    return u, vh


def spectral_entropy(sq_singvals: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of the normalized squared spectrum ``p = σ² / Σσ²``.

    Zero entries contribute 0 (the limit of ``p log p``); an all-zero or
    non-finite spectrum gives NaN, never a silent 0.

    Parameters
    ----------
    sq_singvals : (..., r)
        Squared singular values (non-negative).
    """
    total = sq_singvals.sum(dim=-1, keepdim=True)
    p = sq_singvals / total
    terms = torch.where(p > 0, -p * torch.log(p), torch.zeros_like(p))
    ent = terms.sum(dim=-1)
    bad = ~torch.isfinite(total.squeeze(-1)) | (total.squeeze(-1) <= 0)
    return torch.where(bad, torch.full_like(ent, math.nan), ent)


def gram_eigvals(a: torch.Tensor) -> torch.Tensor:
    """Squared singular values of ``a`` via the smaller Gram matrix, descending.

    Parameters
    ----------
    a : (m, n)

    Returns
    -------
    (min(m, n),) tensor of σ², clamped at 0 (eigvalsh can return tiny negatives).

    Notes
    -----
    Forming ``aᵀa`` squares the condition number, so singular values below
    ``sqrt(eps) * σ_max`` lose relative accuracy; their squares stay accurate
    to ``eps * σ_max²`` in absolute terms, which is all an entropy of ``σ²``
    needs.  It is 3-5x cheaper than an SVD.
    """
    g = a.T @ a if a.shape[0] >= a.shape[1] else a @ a.T
    ev = torch.linalg.eigvalsh(g)
    return ev.flip(0).clamp_min(0)


def randomized_sq_singvals(a: torch.Tensor, rank: int, oversample: int = 10, n_iter: int = 4,
                           seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``rank`` squared singular values by randomized subspace iteration.

    Halko, Martinsson & Tropp (2011), Algorithm 4.4.

    Parameters
    ----------
    a : (m, n)
    rank : int
        Number of leading values wanted.

    Returns
    -------
    top : (rank,) descending σ² of the leading subspace
    tail : () the energy ``‖a‖_F² − Σ top`` left outside it (≥ 0)
    """
    m, n = a.shape
    k = min(rank + oversample, m, n)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn(n, k, generator=gen, dtype=a.dtype).to(a.device)
    q, _ = torch.linalg.qr(a @ omega)
    for _ in range(n_iter):
        q, _ = torch.linalg.qr(a.T @ q)
        q, _ = torch.linalg.qr(a @ q)
    s = torch.linalg.svdvals(q.T @ a)[:rank]
    top = s**2
    tail = (a.square().sum() - top.sum()).clamp_min(0)
    return top, tail
