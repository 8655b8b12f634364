"""Gauge-aware comparison of two layers: match MLP neurons and attention heads before comparing.

Comparing neuron i of layer L with neuron i of layer L' (and head h with head h)
assumes an order the network does not have.  Here layer b is first aligned to
layer a by the symmetry group of :mod:`geomlib.arch.symmetry`, using only
quantities invariant under that group, and the cosines are reported for the
optimal alignment (weight matching, Ainsworth et al. 2023, "Git Re-Basin").

MLP neurons
    Each family contributes a Frobenius cosine after permuting b's neurons;
    the assignment maximises their sum (``scipy.optimize.linear_sum_assignment``).

    * ``gate``     rows of gate_proj, compared directly (silu/gelu gates carry
      no scale freedom).
    * ``up_down``  (``scale="signed"``) the per-neuron rank-1 map ``K_i = d_i u_iᵀ``
      (``d_i`` column i of down_proj, ``u_i`` row i of up_proj), invariant under
      ``u_i → c u_i, d_i → d_i / c`` for every ``c ≠ 0``.  Its Frobenius products
      factor, ``⟨K_i, K'_j⟩ = (d_i·d'_j)(u_i·u'_j)``, so no hidden x hidden map is
      formed.  ``matched_cos`` is the cosine of the stacked maps
      ``Σ_i ⟨K_i, K'_π(i)⟩ / √(Σ‖K_i‖² Σ‖K'_j‖²)``: exactly invariant (each K_i
      is), 1 iff every matched map agrees up to one common positive factor, and
      weighted by neuron size like Git Re-Basin's objective (a per-neuron mean
      would let dead neurons vote as loudly as live ones).  The summed map
      ``down @ up`` is invariant too, but it is blind to the nonlinearity (it is
      permutation-invariant without any matching), so it is not used.
    * ``up``, ``down`` (``scale="positive"``) the canonical representative under
      positive scales: unit up rows, down columns times ``‖u_i‖``.
    * ``up``, ``down`` (``scale="none"``) raw rows / columns.

Heads
    ``cos[a, b]`` is the cosine of the residual-to-residual operators (QK:
    ``W_Qᵀ W_K``, OV: ``W_O W_V``) of head a of layer a and head b of layer b,
    invariant under every per-head GL(d) by construction.  Heads are assigned
    jointly for both operators (a head is one unit), maximising the sum of the
    per-head cosines; under GQA only kv groups and heads within a group move.

Everything is float64 unless stated; degenerate families (zero or non-finite)
give NaN with a :class:`~geomlib.errors.GeomlibWarning` and do not steer the
assignment.  Norm gains should be folded first (:func:`fold_norms`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..arch.families import RESIDUAL_AXIS
from ..errors import GeomlibWarning, InvalidArgumentError
from .operators import head_factors
from .similarity import aligned_cos, frob_cos

D64 = torch.float64
NEURON_SCALES = ("signed", "positive", "none")
#: entries of one similarity block (rows x columns); bounds the temporaries of :func:`neuron_similarity`
BLOCK_ENTRIES = 1 << 23


# ---------------------------------------------------------------------------------------------- norms
def fold_norm(w: torch.Tensor, gamma: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
    """``W diag(offset + γ)``: the matrix as it acts on the normalised (gain-free) input.

    Parameters
    ----------
    w : (n_out, hidden)
    gamma : (hidden,)
        The stored gain; ``offset`` is 1 for Gemma (``1 + w``), else 0.
    """
    if gamma.ndim != 1 or w.ndim != 2 or w.shape[1] != gamma.shape[0]:
        raise InvalidArgumentError(f"fold_norm needs W (n_out, n) and γ (n,), got {tuple(w.shape)} and "
                                   f"{tuple(gamma.shape)}; pass the gain of the norm that feeds W")
    return w * (offset + gamma).to(w.dtype)[None, :]


def fold_norms(weights: Mapping[str, torch.Tensor], folds, offset: float = 0.0) -> dict[str, torch.Tensor]:
    """A copy of one layer's weights with each foldable gain multiplied into the columns it feeds.

    Parameters
    ----------
    weights : dict
        Family -> tensor of one layer.
    folds : tuple of (norm family, tuple of matrix families)
        :attr:`SymmetryGroup.norm_folds <geomlib.arch.symmetry.SymmetryGroup>`.
    offset : float
        :attr:`SymmetryGroup.norm_offset`.

    Returns
    -------
    dict without the folded gains (they are now 1), other entries unchanged.
    """
    out = dict(weights)
    for norm, fams in folds:
        if norm not in out:
            continue
        gamma = out.pop(norm)
        for f in fams:
            if f in out:
                out[f] = fold_norm(out[f], gamma, offset)
    return out


# -------------------------------------------------------------------------------------------- neurons
@dataclass(frozen=True)
class NeuronMatch:
    """Result of :func:`match_neurons`.

    Attributes
    ----------
    perm : (I,) long tensor or None
        Neuron i of layer a is matched to neuron ``perm[i]`` of layer b
        (``b_gate[perm] ≈ a_gate``); None when no family was usable.
    matched_cos : dict
        Family -> cosine after matching, and ``"mean"``: their mean, the value
        the assignment maximised (divided by the number of families); NaN if
        any family is.
    same_index_cos : dict
        The same quantities for the identity pairing.
    frac_fixed : float
        Fraction of neurons matched to their own index.
    """

    perm: torch.Tensor | None
    matched_cos: dict[str, float]
    same_index_cos: dict[str, float]
    frac_fixed: float


def _warn(msg: str, stacklevel: int = 4) -> None:
    """Warn at the caller of the public function (``stacklevel`` counts this helper)."""
    warnings.warn(msg, GeomlibWarning, stacklevel=stacklevel)


def _views(w: Mapping[str, torch.Tensor], scale: str) -> dict[str, tuple[torch.Tensor, ...]]:
    """Family -> (I, hidden) float64 factors whose row products give the invariant Gram."""
    up, down_t = w["up_proj"].to(D64), w["down_proj"].to(D64).T  # (I, hidden) both
    views: dict[str, tuple[torch.Tensor, ...]] = {}
    if "gate_proj" in w:
        views["gate"] = (w["gate_proj"].to(D64),)
    if scale == "signed":
        views["up_down"] = (up, down_t)
    elif scale == "positive":
        n = up.norm(dim=1, keepdim=True)
        # a dead neuron (zero up row) has no direction: its canonical rows are 0 and it scores 0
        views["up"] = (torch.where(n > 0, up / n, torch.zeros_like(up)),)
        views["down"] = (down_t * n,)
    else:
        views["up"], views["down"] = (up,), (down_t,)
    return views


def _row_products(x: tuple[torch.Tensor, ...], y: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Per-row invariant inner product ⟨x_i, y_i⟩ (product over the factors of a rank-1 view)."""
    out = torch.ones(x[0].shape[0], dtype=D64, device=x[0].device)
    for xf, yf in zip(x, y):
        out = out * (xf * yf).sum(dim=1)
    return out


def _check_mlp(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], scale: str) -> None:
    if scale not in NEURON_SCALES:
        raise InvalidArgumentError(f"scale must be one of {NEURON_SCALES}, got {scale!r}")
    for w, name in ((a, "a"), (b, "b")):
        if "up_proj" not in w or "down_proj" not in w:
            raise InvalidArgumentError(f"layer {name} needs up_proj and down_proj, got {sorted(w)}")
        I, h = w["up_proj"].shape
        if w["down_proj"].shape != (h, I) or ("gate_proj" in w and w["gate_proj"].shape != (I, h)):
            raise InvalidArgumentError(f"layer {name}'s MLP shapes are inconsistent: up {tuple(w['up_proj'].shape)},"
                                       f" down {tuple(w['down_proj'].shape)}; expected down (hidden, I)")
    if a["up_proj"].shape != b["up_proj"].shape or ("gate_proj" in a) != ("gate_proj" in b):
        raise InvalidArgumentError(f"layers a and b must have the same MLP families and shapes, got up "
                                   f"{tuple(a['up_proj'].shape)} and {tuple(b['up_proj'].shape)}")


def _usable_views(a, b, scale):
    """Views of both layers, the families that can be compared, and their norm products."""
    va, vb = _views(a, scale), _views(b, scale)
    norms: dict[str, float] = {}
    for fam in va:
        na = math.sqrt(float(_row_products(va[fam], va[fam]).sum()))
        nb = math.sqrt(float(_row_products(vb[fam], vb[fam]).sum()))
        if not (math.isfinite(na) and math.isfinite(nb) and na > 0 and nb > 0):
            _warn(f"the MLP family {fam!r} is zero or non-finite in one layer; its matched cosine is NaN "
                  "and it does not steer the neuron matching")
            continue
        norms[fam] = na * nb
    return va, vb, norms


def neuron_similarity(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], scale: str = "signed", *,
                      compute_dtype: torch.dtype = D64, out: np.ndarray | None = None,
                      negate: bool = False) -> np.ndarray:
    """Neuron-to-neuron similarity ``S[i, j] = Σ_family ⟨view_i(a), view_j(b)⟩ / (‖view(a)‖ ‖view(b)‖)``.

    Parameters
    ----------
    a, b : dict
        One layer each: ``up_proj`` (I, hidden), ``down_proj`` (hidden, I),
        optionally ``gate_proj`` (I, hidden).
    scale : {"signed", "positive", "none"}
        The per-neuron scale group (see the module docstring for the views).
    compute_dtype : torch dtype
        Dtype of the block products.  float32 is ~1.3-2x faster; each entry
        then carries the rounding of a float32 dot product of length hidden
        (measured: 2e-6 of the entries' spread at 2048 x 1024), which can only
        swap assignments whose objectives differ by about that much.
    out : (I, I) float64 C-contiguous ndarray, optional
        Written in place (blockwise, so the only I x I allocation is this one).
    negate : bool
        Store ``-S`` (a cost for ``linear_sum_assignment`` without its copy).

    Returns
    -------
    (I, I) float64 ndarray; families that are zero or non-finite are left out.
    Invariant under the scale group of each layer; ``S[:, σ]`` for b permuted by σ.
    """
    _check_mlp(a, b, scale)
    va, vb, norms = _usable_views(a, b, scale)
    return _fill_similarity(va, vb, norms, a["up_proj"].shape[0], compute_dtype, out, negate)


def _fill_similarity(va, vb, norms, I, compute_dtype, out, negate) -> np.ndarray:
    if out is not None and (out.shape != (I, I) or out.dtype != np.float64 or not out.flags.c_contiguous):
        raise InvalidArgumentError(f"out must be a C-contiguous float64 array of shape {(I, I)}, got "
                                   f"{out.dtype} {out.shape}")
    S = np.empty((I, I), dtype=np.float64) if out is None else out
    S_t = torch.from_numpy(S)  # shares memory: blocks are written straight into the ndarray
    S_t.zero_()
    step = max(1, BLOCK_ENTRIES // max(I, 1))
    sign = -1.0 if negate else 1.0
    cast_b = {f: tuple(x.to(compute_dtype) for x in vb[f]) for f in norms}
    for r0 in range(0, I, step):
        for fam, nn in norms.items():
            blk = None
            for xa, xb in zip(va[fam], cast_b[fam]):
                p = xa[r0:r0 + step].to(compute_dtype) @ xb.T
                blk = p if blk is None else blk * p
            S_t[r0:r0 + step] += blk.to(D64).cpu() * (sign / nn)
    return S


def match_neurons(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], scale: str = "signed", *,
                  compute_dtype: torch.dtype = D64) -> NeuronMatch:
    """Optimal neuron permutation of layer b onto layer a under ``scale``, and the cosines it achieves.

    Parameters
    ----------
    a, b : dict
        MLP weights of one layer each (see :func:`neuron_similarity`), norms folded.
    scale : {"signed", "positive", "none"}
        :attr:`SymmetryGroup.mlp_neuron_scale`.
    compute_dtype : torch dtype
        Of the similarity products only; the reported cosines are recomputed in
        float64 for the permutation found.

    Returns
    -------
    NeuronMatch
        ``matched_cos`` is invariant under any neuron permutation and any
        allowed per-neuron scale of either layer (exactly, up to float rounding
        and exact ties), and equals 1 for a permuted, rescaled copy.

    Notes
    -----
    Memory: one (I, I) float64 matrix (757 MB at I = 9728) plus blocks of
    ``BLOCK_ENTRIES`` entries; ``linear_sum_assignment`` works on it in place.
    """
    _check_mlp(a, b, scale)
    va, vb, norms = _usable_views(a, b, scale)
    I = a["up_proj"].shape[0]
    fams = list(va)
    if not norms:
        _warn("no MLP family is usable in both layers; the neuron matching is undefined (NaN)", 3)
        nan = {f: math.nan for f in [*fams, "mean"]}
        return NeuronMatch(None, nan, dict(nan), math.nan)
    # -S as a float64 C-contiguous cost: linear_sum_assignment then copies nothing (maximize=True would)
    cost = _fill_similarity(va, vb, norms, I, compute_dtype, None, negate=True)
    _, cols = linear_sum_assignment(cost)
    del cost
    perm = torch.from_numpy(cols).to(torch.long)
    ident = torch.arange(I)

    def cosines(p: torch.Tensor) -> dict[str, float]:
        c = {f: (float(_row_products(va[f], tuple(x[p] for x in vb[f])).sum()) / norms[f] if f in norms
                 else math.nan) for f in fams}
        c = {f: max(-1.0, min(1.0, v)) if math.isfinite(v) else v for f, v in c.items()}
        c["mean"] = sum(c.values()) / len(fams)
        return c

    return NeuronMatch(perm, cosines(perm), cosines(ident), float((perm == ident).double().mean()))


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
             head_dim: int, kind: str, rotary_dim: int | None = None) -> torch.Tensor:
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
    Pa, Qa = (x.to(D64) for x in head_factors(dict(a), n_heads, n_kv_heads, head_dim, base))
    Pb, Qb = (x.to(D64) for x in head_factors(dict(b), n_heads, n_kv_heads, head_dim, base))
    H, hidden, d = Pa.shape
    if rope:
        if rotary_dim is None:
            raise InvalidArgumentError("kind='qk_rope' needs rotary_dim (rotary_fraction * head_dim)")
        W, Wt = (w.to(Pa.device) for w in _rope_weights(d, rotary_dim))
        Ta, Tb = _twist(Qa, rotary_dim), _twist(Qb, rotary_dim)
    else:
        W, Wt, Ta, Tb = torch.ones(d, d, dtype=D64, device=Pa.device), None, None, None

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
            gram[h] = combine(X, Y, Yt).sum(dim=(1, 2))

    def self_norm2(P, Q, T):
        t = lambda x: x.transpose(1, 2)
        return combine(t(P) @ P, t(Q) @ Q, None if T is None else t(T) @ T).sum(dim=(1, 2))

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
    inner = {}
    value = torch.empty(n_kv_heads, n_kv_heads, dtype=D64)
    for k in range(n_kv_heads):
        for l in range(n_kv_heads):
            cols, value[k, l] = _assign(score[k * g:(k + 1) * g, l * g:(l + 1) * g])
            inner[k, l] = cols
    gcols, _ = _assign(value)
    perm = torch.cat([torch.from_numpy(inner[k, int(l)] + int(l) * g) for k, l in enumerate(gcols)]).long()
    return perm, torch.from_numpy(gcols).long()


def match_heads(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], n_heads: int, n_kv_heads: int,
                head_dim: int, head_perm: str = "gqa-groups", operators: tuple[str, ...] = ("qk", "ov"),
                rotary_dim: int | None = None) -> HeadMatch:
    """Optimal head assignment of layer b onto layer a, jointly for the given operators.

    Parameters
    ----------
    a, b : dict
        ``q_proj``, ``k_proj`` (for "qk"), ``v_proj``, ``o_proj`` (for "ov") of one layer each.
    head_perm : {"free", "gqa-groups"}
        :attr:`SymmetryGroup.head_perm`.
    operators : tuple of {"qk", "ov", "qk_rope"}
        See :func:`head_cos`; ``"qk_rope"`` needs ``rotary_dim``.

    Returns
    -------
    HeadMatch
        Invariant under each head's GL(d) on its QK and OV pairs and under any
        allowed head permutation of either layer; ``matched_cos`` is 1 for a
        copy of layer a transformed that way.  Degenerate heads score 0 in the
        assignment and NaN in every reported value.
    """
    cos = {op: head_cos(a, b, n_heads, n_kv_heads, head_dim, op, rotary_dim) for op in operators}
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


# ---------------------------------------------------------------------------------------------- nulls
@dataclass(frozen=True)
class NullBand:
    """Seeded null distribution of some per-key statistics.

    Attributes
    ----------
    mean, std : dict
        Key -> mean and sample std over draws (NaN where no draw was finite).
    values : dict
        Key -> the individual draws.
    """

    mean: dict[str, float]
    std: dict[str, float]
    values: dict[str, tuple[float, ...]]


def _band(draws: list[dict[str, float]]) -> NullBand:
    vals = {k: tuple(d[k] for d in draws) for k in draws[0]}
    mean, std = {}, {}
    for k, v in vals.items():
        f = np.array([x for x in v if math.isfinite(x)])
        mean[k] = float(f.mean()) if f.size else math.nan
        std[k] = float(f.std(ddof=1)) if f.size > 1 else math.nan
    return NullBand(mean, std, vals)


def random_orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    """A Haar-random (n, n) orthogonal float64 matrix (QR of a Gaussian, signs fixed by diag(R) > 0)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=D64))
    return q * torch.sign(torch.diagonal(r))[None, :]


def rotate_residual(weights: Mapping[str, torch.Tensor], R: torch.Tensor) -> dict[str, torch.Tensor]:
    """The layer with its residual-stream side rotated by ``R``: ``x → R x``.

    Input-side families (q, k, v, gate, up) become ``W Rᵀ``, output-side ones
    (o, down) ``R W``: the layer computes the same function of the rotated
    stream, so everything internal to it (neuron and head structure, operator
    spectra) is kept and only its basis relative to other layers is lost.
    Norm gains are dropped (fold them first: a rotated gain is not diagonal).

    Parameters
    ----------
    weights : dict of matrix families
    R : (hidden, hidden) orthogonal
    """
    out = {}
    for fam, w in weights.items():
        if fam in RESIDUAL_AXIS:
            out[fam] = w.to(D64) @ R.T if RESIDUAL_AXIS[fam] == 1 else R @ w.to(D64)
    return out


def residual_rotation_null(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                           match: Callable[[Mapping, Mapping], NeuronMatch | HeadMatch], draws: int = 8,
                           seed: int = 0) -> NullBand:
    """``match(a, rotate_residual(b, R)).matched_cos`` over seeded Haar rotations R.

    The right null for matched cosines: it keeps each layer's internal
    structure and symmetry group and destroys only the shared residual basis,
    so a matched cosine above this band says that the two layers use the
    residual stream in the same directions, beyond what matching alone finds
    between unrelated layers of the same make-up.

    Parameters
    ----------
    match : callable
        E.g. ``lambda a, b: match_neurons(a, b, "signed")`` or a
        :func:`functools.partial` of :func:`match_heads`.
    """
    hidden = next(w.shape[RESIDUAL_AXIS[f]] for f, w in b.items() if f in RESIDUAL_AXIS)
    gen = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeomlibWarning)  # the unrotated comparison already warned
        return _band([match(a, rotate_residual(b, random_orthogonal(hidden, gen))).matched_cos
                      for _ in range(draws)])


def permutation_null(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], statistic: str = "raw",
                     draws: int = 8, seed: int = 0) -> NullBand:
    """Per-family statistic of ``a`` against ``b`` with its MLP neurons randomly reordered (no sign flips).

    The reorder is one permutation shared by gate/up rows and down columns: a
    true symmetry, so the layer's function is unchanged.  Any matched cosine is
    exactly invariant under it; this band shows what the same-index statistics
    give for the same function in a random neuron order.  Compare with
    :func:`~geomlib.metrics.nulls.scrambled_aligned_null`, which flips signs of
    one matrix alone (not a symmetry of a gated MLP).

    Parameters
    ----------
    statistic : {"raw", "aligned"}
        ``"raw"``: :func:`~geomlib.metrics.similarity.frob_cos` per family;
        ``"aligned"``: :func:`~geomlib.metrics.similarity.aligned_cos` (what the
        scrambled null reports).

    Returns
    -------
    NullBand keyed by the MLP families present (``gate_proj``, ``up_proj``, ``down_proj``).
    """
    if statistic not in ("raw", "aligned"):
        raise InvalidArgumentError(f"statistic must be 'raw' or 'aligned', got {statistic!r}")
    fams = [f for f in ("gate_proj", "up_proj", "down_proj") if f in a and f in b]
    I = b["up_proj"].shape[0]
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(draws):
        p = torch.randperm(I, generator=gen)
        stats = {}
        for f in fams:
            bp = b[f][:, p] if f == "down_proj" else b[f][p]
            stats[f] = (frob_cos(a[f].to(D64), bp.to(D64)) if statistic == "raw"
                        else aligned_cos(a[f].to(D64), bp.to(D64), RESIDUAL_AXIS[f]))
        out.append(stats)
    return _band(out)
