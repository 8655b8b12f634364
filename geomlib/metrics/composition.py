"""Q-, K- and V-composition between the heads of an earlier and a later layer.

Elhage et al. (2021), "A Mathematical Framework for Transformer Circuits".  With
HF ``[out, in]`` weights, head h's circuits act on residual column vectors:

* ``W_QK = W_Qᵀ W_K`` (hidden x hidden): ``logit(i ← j) = x_iᵀ W_QK x_j``
  (x_i the destination/query token, x_j the source/key token);
* ``W_OV = W_O^h W_V`` (hidden x hidden): the head writes ``W_OV x_j``.

For head h1 of layer L and head h2 of a later layer L' (the paper's definitions):

* Q-composition ``‖W_QK^{h2ᵀ} W_OV^{h1}‖_F / (‖W_QK^{h2}‖_F ‖W_OV^{h1}‖_F)``: h1's output
  read on the query side, ``(W_OV z)ᵀ W_QK x_j = zᵀ (W_QKᵀ W_OV)ᵀ x_j``;
* K-composition ``‖W_QK^{h2} W_OV^{h1}‖_F / (…)``: read on the key side;
* V-composition ``‖W_OV^{h2} W_OV^{h1}‖_F / (‖W_OV^{h2}‖_F ‖W_OV^{h1}‖_F)``.

Each is computed from thin factors ``M = P Qᵀ`` (:func:`~geomlib.metrics.operators.head_factors`):
``‖A Bᵀ P₁ Q₁ᵀ‖_F² = tr(Cᵀ (AᵀA) C (Q₁ᵀQ₁))`` with ``C = Bᵀ P₁`` (d x d), so only
d x hidden and d x d products are formed.  Every score depends on the
operators only: invariant under each head's GL(d) gauge in both layers.

Baseline.  If one layer's residual basis is Haar-random relative to the other
(this includes independent Gaussian factors), ``E_R ‖X Rᵀ Y‖² = ‖X‖² ‖Y‖² / n``
exactly (``E[R G Rᵀ] = tr(G) I / n``), so ``E[score²] = 1/hidden`` for every kind
and any spectra: :func:`composition_baseline` returns ``hidden^{-1/2}``, the
RMS score of unrelated heads.  The mean score is a little below it (Jensen);
:func:`composition_null` estimates it by seeded Monte Carlo with its standard error.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import torch

from ..errors import GeomlibWarning, InvalidArgumentError
from .operators import head_factors, operator_gram

D64 = torch.float64
KINDS = ("q", "k", "v")
#: entries of the (chunk, H2, d, d) cross products held at once (1 MB in float32: temporaries this size
#: are recycled by the allocator, larger ones are mapped and faulted in afresh, see :mod:`geomlib.heap`)
CHUNK_ENTRIES = 1 << 18


def factored_composition(A: torch.Tensor, B: torch.Tensor, P1: torch.Tensor, Q1: torch.Tensor,
                         b_group: int = 1, compute_dtype: torch.dtype = D64) -> torch.Tensor:
    """``‖(A_b B_bᵀ)(P1_a Q1_aᵀ)‖_F`` for every pair (a, b), without forming hidden x hidden matrices.

    Parameters
    ----------
    A, B : (H2, hidden, d2)
        Factors of the later operator ``X_b = A_b B_bᵀ``.
    P1, Q1 : (H1, hidden, d1)
        Factors of the earlier operator ``Y_a = P1_a Q1_aᵀ``.
    b_group : int
        ``B`` repeats in consecutive groups of this size (GQA-shared key or
        value factors, as :func:`~geomlib.metrics.operators.head_factors`
        returns them): its products are formed once per group.
    compute_dtype : torch dtype
        Of the block products (float32: within 1e-5 of float64 relative to
        the norms' product, tested); the squared norms are summed in float64.

    Returns
    -------
    (H1, H2) float64 Frobenius norms of the products.
    """
    A, B, P1, Q1 = (x.to(compute_dtype) for x in (A, B, P1, Q1))
    H1, H2, d1, d2 = P1.shape[0], A.shape[0], P1.shape[2], A.shape[2]
    if b_group < 1 or H2 % b_group:
        raise InvalidArgumentError(f"b_group must divide the {H2} heads of B, got {b_group}")
    B_unique, b_index = B[::b_group], torch.arange(H2, device=B.device) // b_group
    GA = A.transpose(1, 2) @ A  # (H2, d2, d2)
    GQ = Q1.transpose(1, 2) @ Q1  # (H1, d1, d1)
    out = torch.empty(H1, H2, dtype=D64, device=A.device)
    step = max(1, CHUNK_ENTRIES // max(H2 * d1 * d2, 1))
    for a0 in range(0, H1, step):
        C = torch.einsum("bnx,any->abxy", B_unique, P1[a0:a0 + step])[:, b_index]  # Bᵀ P1: (chunk, H2, d2, d1)
        # tr(Cᵀ GA C GQ) = Σ (GA C) ∘ (C GQ), GA symmetric
        sq = ((GA[None] @ C) * (C @ GQ[a0:a0 + step, None])).sum(dim=(2, 3), dtype=D64)
        out[a0:a0 + step] = sq.clamp_min(0).sqrt()
    return out


def _norms(P: torch.Tensor, Q: torch.Tensor, what: str) -> torch.Tensor:
    """‖P_h Q_hᵀ‖_F per head, NaN (with a warning) where zero or non-finite."""
    n2 = operator_gram(P, Q, P, Q)
    bad = ~(torch.isfinite(n2) & (n2 > 0))
    if bool(bad.any()):
        warnings.warn(f"the {what} operators of heads {bad.nonzero().flatten().tolist()} are zero or non-finite; "
                      "their composition scores are NaN", GeomlibWarning, stacklevel=3)
    return torch.where(bad, torch.full_like(n2, math.nan), n2.clamp_min(0).sqrt())


def composition_scores(src: Mapping[str, torch.Tensor], dst: Mapping[str, torch.Tensor], n_heads: int,
                       n_kv_heads: int, head_dim: int, kinds: tuple[str, ...] = KINDS,
                       compute_dtype: torch.dtype = D64) -> dict[str, torch.Tensor]:
    """Q-, K- and V-composition of every head of an earlier layer into every head of a later one.

    Parameters
    ----------
    src : dict
        The earlier layer L: ``o_proj`` (hidden, H d), ``v_proj`` (KV d, hidden).
    dst : dict
        The later layer L' > L: ``q_proj``, ``k_proj`` (for "q", "k"), ``v_proj``,
        ``o_proj`` (for "v").  Fold its input norm gain first
        (:func:`~geomlib.metrics.matching.fold_norms`) to compose through it.
    kinds : tuple of {"q", "k", "v"}
    compute_dtype : torch dtype
        Of the block products (:func:`factored_composition`); norms are float64.

    Returns
    -------
    dict kind -> (H, H) float64, ``score[h1, h2]`` for head h1 of L (its OV
    circuit) into head h2 of L'; in [0, 1] (submultiplicativity of the
    Frobenius norm), NaN for degenerate heads.  Unrelated heads score about
    :func:`composition_baseline` ``(hidden)``.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise InvalidArgumentError(f"composition kinds must be among {KINDS}, got {sorted(unknown)}")
    if n_kv_heads <= 0 or n_heads % n_kv_heads:
        raise InvalidArgumentError(f"n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}")
    P1, Q1 = head_factors(dict(src), n_heads, n_kv_heads, head_dim, "ov")
    n1 = _norms(P1, Q1, "source OV")
    g = n_heads // n_kv_heads  # W_K and W_V factors repeat over the g query heads of a group
    out = {}
    if "q" in kinds or "k" in kinds:
        Pq, Qk = head_factors(dict(dst), n_heads, n_kv_heads, head_dim, "qk")
        n2 = _norms(Pq, Qk, "destination QK")
        if "q" in kinds:  # W_QKᵀ = Qk Pqᵀ
            out["q"] = factored_composition(Qk, Pq, P1, Q1, 1, compute_dtype) / (n1[:, None] * n2[None, :])
        if "k" in kinds:  # W_QK = Pq Qkᵀ
            out["k"] = factored_composition(Pq, Qk, P1, Q1, g, compute_dtype) / (n1[:, None] * n2[None, :])
    if "v" in kinds:
        Po, Qv = head_factors(dict(dst), n_heads, n_kv_heads, head_dim, "ov")
        n2 = _norms(Po, Qv, "destination OV")
        out["v"] = factored_composition(Po, Qv, P1, Q1, g, compute_dtype) / (n1[:, None] * n2[None, :])
    return {k: v.clamp(0.0, 1.0) for k, v in out.items()}  # NaN passes through clamp


def composition_baseline(hidden: int) -> float:
    """``hidden^{-1/2}``: the exact RMS composition score of heads in independent random residual bases.

    ``E[score²] = 1/hidden`` for Q-, K- and V-composition alike, whatever the
    head dimension and the operators' spectra (see the module docstring).
    """
    if not isinstance(hidden, int) or hidden <= 0:
        raise InvalidArgumentError(f"hidden must be a positive integer, got {hidden!r}")
    return 1.0 / math.sqrt(hidden)


def composition_null(hidden: int, head_dim: int, draws: int = 256, seed: int = 0,
                     compute_dtype: torch.dtype = D64) -> tuple[float, float]:
    """Mean composition score of independent Gaussian heads of the given shape, by seeded Monte Carlo.

    Each draw scores ``‖(A Bᵀ)(P Qᵀ)‖ / (‖A Bᵀ‖ ‖P Qᵀ‖)`` for four independent
    (hidden, head_dim) standard Gaussian factors (the same law for Q, K and V
    composition).

    Returns
    -------
    mean : float
    stderr : float
        Standard error of the mean (sample std / √draws).
    """
    if draws < 2:
        raise InvalidArgumentError(f"composition_null needs at least 2 draws, got {draws}")
    gen = torch.Generator().manual_seed(seed)
    scores = []
    for i0 in range(0, draws, 16):  # chunks keep memory at 64 x hidden x head_dim
        A, B, P, Q = (torch.randn(min(16, draws - i0), hidden, head_dim, generator=gen, dtype=compute_dtype)
                      for _ in range(4))
        C = B.transpose(1, 2) @ P  # paired draws only
        sq = (((A.transpose(1, 2) @ A) @ C) * (C @ (Q.transpose(1, 2) @ Q))).sum(dim=(1, 2))
        scores.append(sq.sqrt() / (operator_gram(A, B, A, B) * operator_gram(P, Q, P, Q)).sqrt())
    s = torch.cat(scores).double()
    return float(s.mean()), float(s.std(unbiased=True)) / math.sqrt(draws)
