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

Heads: :mod:`geomlib.metrics.head_matching`; nulls: :mod:`geomlib.metrics.gauge_nulls`.

Everything is float64 unless stated; degenerate families (zero or non-finite)
give NaN with a :class:`~geomlib.errors.GeomlibWarning` and do not steer the
assignment.  Norm gains should be folded first (:func:`fold_norms`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import GeomlibWarning, InvalidArgumentError
from .similarity import row_chunks

D64 = torch.float64
NEURON_SCALES = ("signed", "positive", "none")
#: entries of one similarity block (rows x columns); bounds the temporaries of :func:`neuron_similarity`
BLOCK_ENTRIES = 1 << 21
#: entries of one row block of the per-row sums (1 MB in float32): small enough to be recycled by the
#: allocator rather than mapped and faulted in afresh (see :mod:`geomlib.heap`)
ROW_ENTRIES = 1 << 18


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


def _views(w: Mapping[str, torch.Tensor], scale: str, dtype: torch.dtype = D64) -> dict[str, tuple[torch.Tensor, ...]]:
    """Family -> (I, hidden) factors in ``dtype`` whose row products give the invariant Gram."""
    up, down_t = w["up_proj"].to(dtype), w["down_proj"].to(dtype).T  # (I, hidden) both
    views: dict[str, tuple[torch.Tensor, ...]] = {}
    if "gate_proj" in w:
        views["gate"] = (w["gate_proj"].to(dtype),)
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
    """Per-row invariant inner product ⟨x_i, y_i⟩ (product over the factors of a rank-1 view), summed in float64.

    Over row blocks of :data:`ROW_ENTRIES` entries: ``sum(dtype=float64)`` upcasts its whole input, and a
    layer-sized float64 temporary per call is what made these sums the run's most frequent large allocation.
    """
    out = torch.ones(x[0].shape[0], dtype=D64, device=x[0].device)
    for rows in row_chunks(x[0], ROW_ENTRIES):
        for xf, yf in zip(x, y):
            out[rows] *= (xf[rows] * yf[rows]).sum(dim=1, dtype=D64)
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


def _usable_views(a, b, scale, dtype=D64):
    """Views of both layers (in ``dtype``), the families that can be compared, and their norm products."""
    va, vb = _views(a, scale, dtype), _views(b, scale, dtype)
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
    va, vb, norms = _usable_views(a, b, scale, compute_dtype)
    return _fill_similarity(va, vb, norms, a["up_proj"].shape[0], out, negate)


def _fill_similarity(va, vb, norms, I, out, negate) -> np.ndarray:
    """``S`` (or ``-S``) written blockwise into a float64 (I, I) array; products in the views' dtype."""
    if out is not None and (out.shape != (I, I) or out.dtype != np.float64 or not out.flags.c_contiguous):
        raise InvalidArgumentError(f"out must be a C-contiguous float64 array of shape {(I, I)}, got "
                                   f"{out.dtype} {out.shape}")
    S = np.empty((I, I), dtype=np.float64) if out is None else out
    S_t = torch.from_numpy(S)  # shares memory: blocks are written straight into the ndarray
    step = max(1, BLOCK_ENTRIES // max(I, 1))
    sign = -1.0 if negate else 1.0
    if not norms:
        S_t.zero_()
        return S
    first = next(iter(va.values()))[0]
    dt, dev = first.dtype, first.device
    # the block products go into buffers made once: a fresh (step, I) tensor per product would be a
    # large allocation each time, which the allocator either keeps (RSS) or maps anew (page faults)
    direct = dt == torch.float64 and dev.type == "cpu"
    rows = min(step, I)
    acc_buf = None if direct else torch.empty(rows, I, dtype=dt, device=dev)
    fam_buf = torch.empty(rows, I, dtype=dt, device=dev) if len(norms) > 1 else None
    prod_buf = torch.empty(rows, I, dtype=dt, device=dev) if any(len(va[f]) > 1 for f in norms) else None
    for r0 in range(0, I, step):
        n = min(step, I - r0)
        acc = S_t[r0:r0 + n] if direct else acc_buf[:n]
        for k, (fam, nn) in enumerate(norms.items()):
            blk = acc if k == 0 else fam_buf[:n]
            for j, (xa, xb) in enumerate(zip(va[fam], vb[fam])):
                if j == 0:
                    torch.mm(xa[r0:r0 + n], xb.T, out=blk)
                else:
                    blk.mul_(torch.mm(xa[r0:r0 + n], xb.T, out=prod_buf[:n]))
            blk.mul_(sign / nn)
            if k:
                acc.add_(blk)
        if not direct:
            S_t[r0:r0 + n].copy_(acc)  # one cast per block into the float64 cost matrix
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
        Of the views and the similarity products; the reported cosines are
        recomputed for the permutation found with float64 sums (of float32
        products in float32: relative 1e-7).

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
    va, vb, norms = _usable_views(a, b, scale, compute_dtype)
    I = a["up_proj"].shape[0]
    fams = list(va)
    if not norms:
        _warn("no MLP family is usable in both layers; the neuron matching is undefined (NaN)", 3)
        nan = {f: math.nan for f in [*fams, "mean"]}
        return NeuronMatch(None, nan, dict(nan), math.nan)
    # -S as a float64 C-contiguous cost: linear_sum_assignment then copies nothing (maximize=True would)
    cost = _fill_similarity(va, vb, norms, I, None, negate=True)
    from scipy.optimize import linear_sum_assignment  # 0.4 s to import: only runs that match pay it

    _, cols = linear_sum_assignment(cost)
    del cost
    perm = torch.from_numpy(cols).to(torch.long)
    ident = torch.arange(I)

    def cosines(p: torch.Tensor | None) -> dict[str, float]:
        """Cosines with b's neurons in order ``p`` (None: their own order, no copy), summed in float64."""
        def total(f: str) -> float:
            s = 0.0
            for rows in row_chunks(va[f][0], ROW_ENTRIES):  # b's permuted rows are gathered a block at a time
                yb = tuple(x[rows] if p is None else x[p[rows]] for x in vb[f])
                s += float(_row_products(tuple(x[rows] for x in va[f]), yb).sum())
            return s

        c = {f: (total(f) / norms[f] if f in norms else math.nan) for f in fams}
        c = {f: max(-1.0, min(1.0, v)) if math.isfinite(v) else v for f, v in c.items()}
        c["mean"] = sum(c.values()) / len(fams)
        return c

    return NeuronMatch(perm, cosines(perm), cosines(None), float((perm == ident).double().mean()))


def fold_qk_norms(weights: Mapping[str, torch.Tensor], head_dim: int, offset: float = 0.0) -> dict[str, torch.Tensor]:
    """A copy of one layer's weights with the per-head q/k gains (Qwen3, Gemma3) folded into the rows they scale.

    ``q = γ_q ∘ RMSNorm(W_Q^h x)`` per head: up to the normalisation's scalar,
    the effective query map of head h is ``diag(γ_q) W_Q^h``, and likewise for
    keys, so the QK operator compared is ``W_Q^hᵀ diag(γ_q γ_k) W_K^h``.  The
    per-row scale the RMS norm divides out is not folded: it is a property of
    the input, not of the weights (see :mod:`geomlib.arch.symmetry`).

    Parameters
    ----------
    weights : dict
        One layer; ``q_norm``/``k_norm`` (head_dim,) are removed when folded
        into ``q_proj`` (H head_dim, hidden) / ``k_proj`` (KV head_dim, hidden).
    """
    out = dict(weights)
    for norm, fam in (("q_norm", "q_proj"), ("k_norm", "k_proj")):
        if norm not in out:
            continue
        gamma = out.pop(norm)
        if fam not in out:
            continue
        w = out[fam]
        if gamma.shape != (head_dim,) or w.ndim != 2 or w.shape[0] % head_dim:
            raise InvalidArgumentError(f"{norm} of shape {tuple(gamma.shape)} cannot scale the {head_dim}-dim heads "
                                       f"of {fam} {tuple(w.shape)}; expected a (head_dim,) gain")
        g = (offset + gamma).to(w.dtype)
        out[fam] = (w.reshape(-1, head_dim, w.shape[1]) * g[None, :, None]).reshape(w.shape)
    return out
