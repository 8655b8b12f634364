"""Per-head bilinear operators in factored form: QK = W_Qᵀ W_K and OV = W_O W_V.

Each head's operator is ``M = P Qᵀ`` with thin factors ``P, Q : (hidden, d)``
(QK: ``P = W_Q^hᵀ``, ``Q = W_K^{g(h)}ᵀ``; OV: ``P = W_O^h``, ``Q = W_V^{g(h)}ᵀ``).
M is ``hidden x hidden`` with rank ≤ d and is never formed:

* ⟨M₁, M₂⟩_F = Σ (P₁ᵀP₂) ∘ (Q₁ᵀQ₂)                       — two d x d products
* thin QR ``[P Q] = U R`` gives ``M = U (R_P R_Qᵀ) Uᵀ``: the singular values of
  M are those of the 2d x 2d core, and the symmetric part ``(M + Mᵀ)/2`` has
  the eigenvalues of ``(core + coreᵀ)/2`` with eigenvectors ``U V``.

Cost O(hidden d²) per head instead of O(hidden² d).  Everything is batched
over heads: leading dimension H.  Every result depends on M only, so a GL(d)
gauge ``W_Q → A W_Q, W_K → A⁻ᵀ W_K`` leaves it unchanged.
"""

from __future__ import annotations

import math

import torch

from ..arch.base import kv_head
from .linalg import svd_flip


def head_factors(weights: dict[str, torch.Tensor], n_heads: int, n_kv_heads: int, head_dim: int,
                 kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head factors of the QK or OV operator of one layer.

    Parameters
    ----------
    weights : dict
        ``q_proj`` (H d, hidden), ``k_proj`` (KV d, hidden) for ``kind="qk"``;
        ``o_proj`` (hidden, H d), ``v_proj`` (KV d, hidden) for ``kind="ov"``.
    kind : {"qk", "ov"}

    Returns
    -------
    P, Q : (H, hidden, d)
        ``M_h = P[h] @ Q[h].T``; key/value factors are repeated over the
        ``n_heads // n_kv_heads`` query heads that share them (GQA).
    """
    d = head_dim
    kv_of = kv_head(torch.arange(n_heads, device=next(iter(weights.values())).device), n_heads, n_kv_heads)
    if kind == "qk":
        P = weights["q_proj"].reshape(n_heads, d, -1).transpose(1, 2)
        Q = weights["k_proj"].reshape(n_kv_heads, d, -1).transpose(1, 2)[kv_of]
    elif kind == "ov":
        hidden = weights["o_proj"].shape[0]
        P = weights["o_proj"].reshape(hidden, n_heads, d).permute(1, 0, 2)
        Q = weights["v_proj"].reshape(n_kv_heads, d, -1).transpose(1, 2)[kv_of]
    else:
        raise ValueError(f"kind must be 'qk' or 'ov', got {kind!r}")
    return P, Q


def operator_gram(P1: torch.Tensor, Q1: torch.Tensor, P2: torch.Tensor, Q2: torch.Tensor) -> torch.Tensor:
    """⟨P₁Q₁ᵀ, P₂Q₂ᵀ⟩_F per head.

    Parameters
    ----------
    P1, Q1, P2, Q2 : (H, hidden, d)

    Returns
    -------
    (H,) tensor
    """
    return ((P1.transpose(1, 2) @ P2) * (Q1.transpose(1, 2) @ Q2)).sum(dim=(1, 2))


def operator_spectrum(P: torch.Tensor, Q: torch.Tensor, k: int = 8) -> dict[str, torch.Tensor]:
    """Singular values of M and the eigen-structure of its symmetric part, per head.

    Parameters
    ----------
    P, Q : (H, hidden, d)
    k : int
        Eigenvectors kept (by |λ|), as an orthonormal basis.

    Returns
    -------
    dict with
        ``singvals`` (H, d): singular values of M, descending;
        ``sym_eigs`` (H, 2d): eigenvalues of (M + Mᵀ)/2 on span[P Q], signed,
        sorted by |λ| descending (NaN-padded if hidden < 2d);
        ``eigvecs`` (H, k, hidden): orthonormal top-k eigenvectors, largest
        entry of each positive;
        ``eigengap`` (H,): (|λ_k| − |λ_{k+1}|) / |λ_k|, small when the top-k
        subspace cuts through a near-degenerate block;
        ``frac_pos`` (H,): fraction of the 2d eigenvalues that are positive.

    P and Q must be finite (the Cholesky, eigh and SVD raise on NaN or Inf); the heads analysis checks
    each layer's families once before calling this.
    """
    H, hidden, d = P.shape
    X = torch.cat([P, Q], dim=2).to(torch.float64)  # (H, hidden, 2d)
    U, R, G = None, None, None
    if hidden >= 2 * d:
        # Cholesky QR: X = U R with Rᵀ R = XᵀX.  A (2d, 2d) Gram and its Cholesky cost a fifth of
        # Householder QR on (hidden, 2d); in float64 it is accurate while cond(X) ≲ 1e6
        G = X.transpose(1, 2) @ X
        L, info = torch.linalg.cholesky_ex(G)
        if not bool(info.any()):
            R = L.transpose(1, 2)
            piv = torch.diagonal(L, dim1=1, dim2=2)
            if float((piv.amin(dim=1) / piv.amax(dim=1)).min()) < 1e-6:
                R = None  # a pivot ratio under 1e-6 (cond(X) ≳ 1e6): the Gram lost it; Householder below
    if R is None:
        U, R = torch.linalg.qr(X)  # U (H, hidden, r), r = min(hidden, 2d)
    core = R[:, :, :d] @ R[:, :, d:].transpose(1, 2)  # M = U core Uᵀ
    sv = _singvals(G[:, d:, d:], R, core, d) if U is None else torch.linalg.svdvals(core)[:, :d]
    lam, V = torch.linalg.eigh((core + core.transpose(1, 2)) / 2)
    order = lam.abs().argsort(dim=1, descending=True)
    lam = torch.gather(lam, 1, order)
    V = torch.gather(V, 2, order[:, None, :].expand_as(V))
    r = lam.shape[1]
    kk = min(k, r)
    Vk = V[:, :, :kk]
    # U Vk without forming U: U = X R⁻¹, so U Vk = X (R⁻¹ Vk), a triangular solve on k columns
    UV = U @ Vk if U is not None else X @ torch.linalg.solve_triangular(R, Vk, upper=True)
    vecs = svd_flip(UV)[0].transpose(1, 2)
    if r < 2 * d:
        lam = torch.cat([lam, lam.new_full((H, 2 * d - r), math.nan)], dim=1)
    a = lam.abs()
    gap = (a[:, kk - 1] - a[:, kk]) / a[:, kk - 1] if kk < 2 * d else torch.full((H,), math.nan, dtype=lam.dtype)
    frac_pos = (lam > 0).sum(dim=1).to(lam.dtype) / (2 * d)
    if sv.shape[1] < d:
        sv = torch.cat([sv, sv.new_zeros(H, d - sv.shape[1])], dim=1)
    return {"singvals": sv, "sym_eigs": lam, "eigvecs": vecs, "eigengap": gap, "frac_pos": frac_pos}


def _singvals(GQ: torch.Tensor, R: torch.Tensor, core: torch.Tensor, d: int) -> torch.Tensor:
    """σ(P Qᵀ) from a (d, d) core: with P = U_P R_P, Q = U_Q R_Q, σ(P Qᵀ) = σ(R_P R_Qᵀ).

    R_P is R's leading block (a Cholesky factor's leading block is the factor of the leading Gram
    block); R_Q comes from the Cholesky of ``GQ = QᵀQ``, the trailing block of the Gram already
    formed.  A (d, d) SVD instead of one of the (2d, 2d) ``core``, which is the fallback.
    """
    Lq, info = torch.linalg.cholesky_ex(GQ)
    if bool(info.any()):
        return torch.linalg.svdvals(core)[:, :d]
    return torch.linalg.svdvals(R[:, :d, :d] @ Lq)


def principal_cosines(E1: torch.Tensor, E2: torch.Tensor) -> torch.Tensor:
    """Cosines of the principal angles between row spaces, per head.

    Parameters
    ----------
    E1, E2 : (..., k, hidden)
        Orthonormal rows.

    Returns
    -------
    (..., k) cosines in [0, 1], descending.

    Notes
    -----
    The rows must be finite: LAPACK's SVD raises on NaN or Inf.  Callers leave out the layers without
    eigenvectors (a non-finite weight) once per layer rather than scanning every batch here.
    """
    return torch.linalg.svdvals(E1 @ E2.transpose(-1, -2)).clamp(0.0, 1.0)


def sign_agreement(lam1: torch.Tensor, lam2: torch.Tensor, topk: int) -> torch.Tensor:
    """Fraction of the top-``topk`` eigenvalues (ranked by |λ|) whose signs agree, pairing by rank.

    Pairing the i-th largest |λ| of one layer with the i-th of another is
    seed 001's choice; it is arbitrary (nothing ties the two eigenvectors).  A NaN eigenvalue compares
    unequal (counted as disagreement): callers set the pairs of a layer without a spectrum to NaN.
    """
    return (torch.sign(lam1[..., :topk]) == torch.sign(lam2[..., :topk])).to(lam1.dtype).mean(dim=-1)


def spectrum_shape(sv: torch.Tensor) -> torch.Tensor:
    """σ / σ_max along the last axis (NaN for an all-zero spectrum)."""
    mx = sv.amax(dim=-1, keepdim=True)
    return torch.where(mx > 0, sv / mx, torch.full_like(sv, math.nan))


def vector_cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine along the last axis (NaN where a vector is zero)."""
    nx, ny = x.norm(dim=-1), y.norm(dim=-1)
    c = (x * y).sum(dim=-1) / (nx * ny)
    return torch.where((nx > 0) & (ny > 0), c, torch.full_like(c, math.nan))


def rescale_fit(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best scalar T with x ≈ T y (seed 002) and the residual fraction ‖x − T y‖ / ‖x‖, along the last axis.

    Degenerate inputs give NaN (seed 002 returned T = 0, residual 1 or 0 silently).
    """
    yy = (y * y).sum(dim=-1)
    T = (x * y).sum(dim=-1) / yy
    T = torch.where(yy > 0, T, torch.full_like(T, math.nan))
    xn = x.norm(dim=-1)
    resid = (x - T[..., None] * y).norm(dim=-1) / xn
    return T, torch.where(xn > 0, resid, torch.full_like(resid, math.nan))
