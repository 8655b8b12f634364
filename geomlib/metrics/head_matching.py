"""Gauge-aware head matching between two layers: operator cosines invariant to each head's GL(d), then
the best head assignment the model's head group allows (free, or GQA-consistent).

``cos[a, b]`` is the cosine of the residual-to-residual operators (QK:
``W_Qᵀ W_K``, OV: ``W_O W_V``) of head a of layer a and head b of layer b,
computed from d x d blocks only.  Heads are assigned jointly for both operators
(a head is one unit), maximising the sum of the per-head cosines; under GQA only
kv groups and heads within a group move.  See :mod:`geomlib.metrics.matching`
for the neurons.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidArgumentError
from .matching import D64, _warn
from .operators import head_factors


# ---------------------------------------------------------------------------------------------- heads
@dataclass(frozen=True)
class HeadMatch:
    """Result of :func:`match_heads`.

    Attributes
    ----------
    perm : (H,) long tensor
        Head h of layer a is matched to head ``perm[h]`` of layer b.
    group_perm : (KV,) long tensor or None
        kv group k of a is matched to group ``group_perm[k]`` of b (GQA only).
    cos : dict
        Operator -> (H, H) cosine matrix ``cos[h, h']`` between head h of a and
        head h' of b (NaN rows/columns for degenerate heads).
    matched : dict
        Operator -> (H,) ``cos[h, perm[h]]``.
    matched_cos : dict
        Operator -> mean of ``matched``, and ``"mean"`` over operators.
    same_index_cos : dict
        Operator -> mean of the diagonal (the head-by-index comparison).
    same_index, different_index : dict
        Operator -> diagonal (H,) and off-diagonal (H (H − 1),) entries of
        ``cos``: the same-index versus different-index distributions.
    """

    perm: torch.Tensor
    group_perm: torch.Tensor | None
    cos: dict[str, torch.Tensor]
    matched: dict[str, torch.Tensor]
    matched_cos: dict[str, float]
    same_index_cos: dict[str, float]
    same_index: dict[str, torch.Tensor]
    different_index: dict[str, torch.Tensor]


def _rope_weights(d: int, rotary_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """d x d weights on (P_aᵀP_b) ∘ (Q_aᵀQ_b) and on its J-twisted twin for the RoPE-resolved QK product.

    Pair p is ``(p, p + r/2)`` (HF ``rotate_half``).  Only same-pair entries
    survive the average over relative positions, with weight ½ (mean of cos² and
    sin²); the pass-through block ``r:`` is position-independent (weight 1).
    """
    if not (isinstance(rotary_dim, int) and 0 <= rotary_dim <= d and rotary_dim % 2 == 0):
        raise InvalidArgumentError(f"rotary_dim must be an even integer in [0, head_dim={d}], got {rotary_dim!r}")
    idx = torch.arange(d)
    pair = torch.where(idx < rotary_dim, idx % max(rotary_dim // 2, 1), -1)
    same = (pair[:, None] == pair[None, :]) & (pair[:, None] >= 0)
    rest = (idx[:, None] >= rotary_dim) & (idx[None, :] >= rotary_dim)
    return (0.5 * same + rest).to(D64), (0.5 * same).to(D64)


def _twist(Q: torch.Tensor, rotary_dim: int) -> torch.Tensor:
    """``Q Jᵀ`` on every rotary pair (the key factor of ``W_Qᵀ J W_K``), zero on the pass-through dims."""
    h = rotary_dim // 2
    out = torch.zeros_like(Q)
    out[..., :h], out[..., h:rotary_dim] = -Q[..., h:rotary_dim], Q[..., :h]
    return out


def head_cos(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], n_heads: int, n_kv_heads: int,
             head_dim: int, kind: str, rotary_dim: int | None = None,
             compute_dtype: torch.dtype = D64) -> torch.Tensor:
    """Cosine between the QK (or OV) operators of every head of layer a and every head of layer b.

    Parameters
    ----------
    a, b : dict
        Attention weights of one layer each (see :func:`~geomlib.metrics.operators.head_factors`).
    kind : {"qk", "ov", "qk_rope"}
        ``"qk_rope"`` compares the position-dependent logit operators
        ``M(δ) = W_Qᵀ R_δ W_K`` by their inner product averaged over relative
        positions δ: with distinct frequencies it is
        ``Σ_p ½ (⟨M_p, M'_p⟩ + ⟨N_p, N'_p⟩) + ⟨M_rest, M'_rest⟩`` where
        ``M_p = W_Qpᵀ W_Kp`` and ``N_p = W_Qpᵀ J W_Kp`` on rotary pair p and
        ``M_rest`` is the pass-through block.  It is invariant exactly under the
        RoPE group (a scaled rotation per pair, GL on the pass-through dims)
        and, unlike ``"qk"``, separates heads that differ by any other GL(d).
    rotary_dim : int, optional
        Rotary dims r of each head (``rotary_fraction * head_dim``); required for ``"qk_rope"``.
    compute_dtype : torch dtype
        Of the d x d block products (float32: each cosine within 1e-5 of
        float64, tested); the norms and the result are float64.

    Returns
    -------
    (H, H) float64: ``⟨M_a[h], M_b[h']⟩ / (‖M_a[h]‖ ‖M_b[h']‖)``, each product
    from d x d blocks ``Σ (P_aᵀ P_b) ∘ (Q_aᵀ Q_b)``, never a hidden x hidden
    matrix.  ``"qk"`` and ``"ov"`` are invariant under each head's GL(d) gauge
    in either layer.  Rows (columns) of heads whose operator is zero or
    non-finite are NaN, with a warning.
    """
    rope = kind == "qk_rope"
    base = "qk" if rope else kind
    if kind not in ("qk", "ov", "qk_rope"):
        raise InvalidArgumentError(f"kind must be 'qk', 'ov' or 'qk_rope', got {kind!r}")
    if n_kv_heads <= 0 or n_heads % n_kv_heads:
        raise InvalidArgumentError(f"n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}")
    fam, axis = ("q_proj", 0) if base == "qk" else ("o_proj", 1)
    for w, name in ((a, "a"), (b, "b")):
        if fam not in w or w[fam].ndim != 2 or w[fam].shape[axis] != n_heads * head_dim:
            got = tuple(w[fam].shape) if fam in w else "missing"
            raise InvalidArgumentError(f"layer {name}'s {fam} must have n_heads * head_dim = {n_heads * head_dim} "
                                       f"{'rows' if axis == 0 else 'columns'}, got {got}")
    Pa, Qa = (x.to(compute_dtype) for x in head_factors(dict(a), n_heads, n_kv_heads, head_dim, base))
    Pb, Qb = (x.to(compute_dtype) for x in head_factors(dict(b), n_heads, n_kv_heads, head_dim, base))
    H, hidden, d = Pa.shape
    if rope:
        if rotary_dim is None:
            raise InvalidArgumentError("kind='qk_rope' needs rotary_dim (rotary_fraction * head_dim)")
        W, Wt = (w.to(Pa.device, compute_dtype) for w in _rope_weights(d, rotary_dim))
        Ta, Tb = _twist(Qa, rotary_dim), _twist(Qb, rotary_dim)
    else:
        W, Wt, Ta, Tb = torch.ones(d, d, dtype=compute_dtype, device=Pa.device), None, None, None

    def combine(X, Y, Yt):  # X, Y, Yt: (..., d, d) Grams of P, Q and twisted Q
        out = X * (W * Y)
        return out if Yt is None else out + X * (Wt * Yt)

    def cat(x):  # heads side by side, (hidden, heads * d): one GEMM against all heads of b
        return x.permute(1, 0, 2).reshape(hidden, -1)

    # key/value factors are shared by the g query heads of a group: their products are formed once per group
    g = n_heads // n_kv_heads
    first, kv_b = torch.arange(n_kv_heads) * g, torch.arange(H) // g
    Pb_cat, Qb_kv = cat(Pb), cat(Qb[first])
    Tb_kv = cat(Tb[first]) if rope else None
    gram = torch.empty(H, H, dtype=D64, device=Pa.device)
    for k in range(n_kv_heads):
        Y = (Qa[first[k]].T @ Qb_kv).reshape(d, n_kv_heads, d)[:, kv_b].transpose(0, 1)  # (H_b, d, d)
        Yt = (Ta[first[k]].T @ Tb_kv).reshape(d, n_kv_heads, d)[:, kv_b].transpose(0, 1) if rope else None
        for h in range(k * g, (k + 1) * g):
            X = (Pa[h].T @ Pb_cat).reshape(d, H, d).transpose(0, 1)
            gram[h] = combine(X, Y, Yt).sum(dim=(1, 2), dtype=D64)

    def self_norm2(P, Q, T):
        t = lambda x: x.transpose(1, 2)
        return combine(t(P) @ P, t(Q) @ Q, None if T is None else t(T) @ T).sum(dim=(1, 2), dtype=D64)

    na, nb = self_norm2(Pa, Qa, Ta), self_norm2(Pb, Qb, Tb)
    bad_a, bad_b = ~(torch.isfinite(na) & (na > 0)), ~(torch.isfinite(nb) & (nb > 0))
    if bool(bad_a.any() or bad_b.any()):
        _warn(f"{base.upper()} operators of heads {bad_a.nonzero().flatten().tolist()} (layer a) / "
              f"{bad_b.nonzero().flatten().tolist()} (layer b) are zero or non-finite; their cosines are NaN", 3)
    cos = gram / (na.clamp_min(0).sqrt()[:, None] * nb.clamp_min(0).sqrt()[None, :])
    cos = cos.clamp(-1.0, 1.0)
    cos[bad_a] = math.nan
    cos[:, bad_b] = math.nan
    return cos


def _assign(score: torch.Tensor) -> tuple[np.ndarray, float]:
    """Maximum-score assignment of a square matrix: column of each row, and the total."""
    s = score.detach().cpu().numpy()
    from scipy.optimize import linear_sum_assignment  # 0.4 s to import: only runs that match pay it

    rows, cols = linear_sum_assignment(-s)
    return cols, float(s[rows, cols].sum())


def assign_heads(score: torch.Tensor, n_kv_heads: int, head_perm: str = "gqa-groups"
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The head permutation maximising ``Σ_h score[h, perm[h]]`` within the allowed group.

    Parameters
    ----------
    score : (H, H)
        Finite scores (the summed operator cosines).
    head_perm : {"free", "gqa-groups"}
        With ``"gqa-groups"`` (and ``n_kv_heads < H``) the consecutive query heads
        of a kv group move together: for every pair of groups the best
        within-group assignment is solved exactly (g x g), and those optimal
        block values are then assigned over groups (KV x KV).  The objective is
        separable given the group map, so this two-level solution is the exact
        optimum over GQA-consistent permutations.

    Returns
    -------
    perm : (H,) long
    group_perm : (KV,) long or None (``"free"``)
    """
    H = score.shape[0]
    if head_perm not in ("free", "gqa-groups"):
        raise InvalidArgumentError(f"head_perm must be 'free' or 'gqa-groups', got {head_perm!r}")
    if score.shape != (H, H) or not bool(torch.isfinite(score).all()) or n_kv_heads <= 0 or H % n_kv_heads:
        raise InvalidArgumentError(f"assign_heads needs a finite square score with n_heads a multiple of "
                                   f"n_kv_heads, got shape {tuple(score.shape)} and n_kv_heads={n_kv_heads}")
    if head_perm == "free" or n_kv_heads == H:
        cols, _ = _assign(score)
        return torch.from_numpy(cols).long(), None
    g = H // n_kv_heads
    inner, value = _group_blocks(score.detach().cpu().to(D64), n_kv_heads, g)
    gcols, _ = _assign(value)
    perm = torch.cat([inner[k, int(l)] + int(l) * g for k, l in enumerate(gcols)]).long()
    return perm, torch.from_numpy(gcols).long()


#: group sizes up to this have their within-group assignments enumerated (6! = 720 candidates per block)
ENUMERATE_MAX_GROUP = 6


def _group_blocks(score: torch.Tensor, kv: int, g: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best within-group assignment of every (group k of a, group l of b) block, and its value.

    Returns ``inner`` (kv, kv, g): the column of each row of block (k, l), and ``value`` (kv, kv).
    Small groups (GQA's usual 2-8 heads per kv head) are solved by scoring every permutation of
    the g columns at once, exactly: kv² separate ``linear_sum_assignment`` calls of a 2 x 2 block
    cost more in call overhead than the whole enumeration.
    """
    blocks = score.reshape(kv, g, kv, g).permute(0, 2, 1, 3)  # (k, l, row, column)
    if g <= ENUMERATE_MAX_GROUP:
        perms = torch.tensor(list(itertools.permutations(range(g))), dtype=torch.long)  # identity first
        rows = torch.arange(g)
        totals = blocks[:, :, rows[None, :], perms].sum(dim=-1)  # (k, l, permutation)
        value, best = totals.max(dim=-1)  # the first maximum: ties keep the earliest (identity) order
        return perms[best], value
    inner = torch.empty(kv, kv, g, dtype=torch.long)
    value = torch.empty(kv, kv, dtype=D64)
    for k in range(kv):
        for l in range(kv):
            cols, value[k, l] = _assign(blocks[k, l])
            inner[k, l] = torch.from_numpy(cols)
    return inner, value


def match_heads(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], n_heads: int, n_kv_heads: int,
                head_dim: int, head_perm: str = "gqa-groups", operators: tuple[str, ...] = ("qk", "ov"),
                rotary_dim: int | None = None, compute_dtype: torch.dtype = D64) -> HeadMatch:
    """Optimal head assignment of layer b onto layer a, jointly for the given operators.

    Parameters
    ----------
    a, b : dict
        ``q_proj``, ``k_proj`` (for "qk"), ``v_proj``, ``o_proj`` (for "ov") of one layer each.
    head_perm : {"free", "gqa-groups"}
        :attr:`SymmetryGroup.head_perm`.
    operators : tuple of {"qk", "ov", "qk_rope"}
        See :func:`head_cos`; ``"qk_rope"`` needs ``rotary_dim``.
    compute_dtype : torch dtype
        Of :func:`head_cos`' block products.

    Returns
    -------
    HeadMatch
        Invariant under each head's GL(d) on its QK and OV pairs and under any
        allowed head permutation of either layer; ``matched_cos`` is 1 for a
        copy of layer a transformed that way.  Degenerate heads score 0 in the
        assignment and NaN in every reported value.
    """
    cos = {op: head_cos(a, b, n_heads, n_kv_heads, head_dim, op, rotary_dim, compute_dtype) for op in operators}
    score = sum(torch.nan_to_num(c, nan=0.0) for c in cos.values())
    perm, gperm = assign_heads(score, n_kv_heads, head_perm)
    idx = torch.arange(n_heads)
    off = ~torch.eye(n_heads, dtype=torch.bool)
    matched = {op: c[idx, perm] for op, c in cos.items()}
    mc = {op: float(m.mean()) for op, m in matched.items()}
    mc["mean"] = sum(mc.values()) / len(operators)
    diag = {op: torch.diagonal(c).clone() for op, c in cos.items()}
    return HeadMatch(perm, gperm, cos, matched, mc, {op: float(v.mean()) for op, v in diag.items()}, diag,
                     {op: c[off] for op, c in cos.items()})
