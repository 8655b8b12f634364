"""Shannon entropy of attention distributions: pure tensor functions.

An attention map ``A[..., q, k]`` holds, for every query position ``q``, a
probability distribution over key positions ``k`` (a softmax row).  Its entropy
``H_q = -Σ_k A[q, k] log A[q, k]`` (nats) is ``log n`` for uniform attention
over ``n`` keys and 0 when a query attends to a single key.  Keys hidden by a
causal, sliding-window or padding mask are exact zeros after the softmax and
contribute ``0 · log 0 = 0``, so a masked row needs no mask argument here.

Everything is computed in float64 whatever the input dtype: a float32 softmax
row over a few hundred keys has entries near 1e-8 whose ``p log p`` terms must
not be lost.
"""

from __future__ import annotations

import math

import torch

from ..errors import InvalidArgumentError


def _check_probs(probs: object) -> torch.Tensor:
    if not isinstance(probs, torch.Tensor):
        raise InvalidArgumentError(
            f"attention probabilities must be a torch.Tensor, not {type(probs).__name__}; pass the (..., q, k) "
            "softmax output of an attention layer"
        )
    if probs.ndim < 1 or probs.shape[-1] == 0:
        raise InvalidArgumentError(
            f"attention probabilities of shape {list(probs.shape)} have no key axis; expected (..., q, k) with k >= 1"
        )
    if probs.is_complex() or not (probs.is_floating_point() or probs.dtype == torch.bool):
        # integer one-hot maps are fine as probabilities only once made floating; say so instead of guessing
        raise InvalidArgumentError(
            f"attention probabilities have dtype {probs.dtype}; pass a floating tensor (float32/float64/bfloat16)"
        )
    return probs


def attention_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of every attention row.

    Parameters
    ----------
    probs : (..., q, k) tensor
        Attention probabilities: row ``probs[..., i, :]`` is query ``i``'s
        distribution over the ``k`` keys, non-negative and summing to 1.
        Masked keys are exact zeros (``0 · log 0 = 0``).  Any floating dtype
        and device; the last axis is the key axis, so a single row ``(k,)``
        works too.

    Returns
    -------
    (..., q) float64 tensor
        ``H = -Σ_k p_k log p_k`` with ``p = row / row.sum()``, on the input's
        device.  ``0 <= H <= log(number of non-zero keys)``.

    Notes
    -----
    Each row is divided by its sum before the entropy is taken: a float32 or
    bfloat16 softmax sums to 1 only up to rounding (~1e-7 resp. ~1e-2), and the
    entropy of a distribution is what is asked for.  A row with a NaN, an
    infinite or a negative entry, or whose entries are all zero, is not a
    distribution: its entropy is NaN, never a silent 0.
    """
    p = _check_probs(probs).to(torch.float64)
    total = p.sum(dim=-1, keepdim=True)
    # a NaN entry fails every comparison, so `p > 0` alone would quietly drop it: test validity explicitly
    valid = (torch.isfinite(p) & (p >= 0)).all(dim=-1) & (total.squeeze(-1) > 0) & torch.isfinite(total.squeeze(-1))
    safe_total = torch.where(total > 0, total, torch.ones_like(total))
    q = p / safe_total
    positive = q > 0
    # log only where q > 0 (log 0 = -inf would make 0 * -inf = NaN)
    terms = torch.where(positive, -q * torch.log(torch.where(positive, q, torch.ones_like(q))), torch.zeros_like(q))
    ent = terms.sum(dim=-1)
    return torch.where(valid, ent, torch.full_like(ent, math.nan))


def mean_entropy(probs: torch.Tensor, query_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over query positions of the attention entropy (nats).

    Parameters
    ----------
    probs : (..., q, k) tensor
        Attention probabilities, as for :func:`attention_entropy`; typically
        one layer's ``(heads, q, k)`` map, giving one value per head.
    query_mask : (q,) or (..., q) bool tensor, optional
        Query positions to average over (broadcast against ``probs.shape[:-1]``);
        default all of them.  Use it to leave out padding queries, whose rows
        are meaningless.

    Returns
    -------
    (...) float64 tensor
        ``mean_q H_q`` over the selected queries.  NaN where a selected row is
        degenerate (see :func:`attention_entropy`) or where no query is
        selected.
    """
    ent = attention_entropy(probs)
    if query_mask is None:
        return ent.mean(dim=-1)
    if not isinstance(query_mask, torch.Tensor) or query_mask.dtype != torch.bool:
        raise InvalidArgumentError(
            f"query_mask must be a bool tensor of shape (q,) or (..., q), not {type(query_mask).__name__}"
            + (f" of dtype {query_mask.dtype}" if isinstance(query_mask, torch.Tensor) else "")
        )
    try:
        mask = torch.broadcast_to(query_mask.to(ent.device), ent.shape)
    except RuntimeError:
        raise InvalidArgumentError(
            f"query_mask of shape {list(query_mask.shape)} does not broadcast to the query shape {list(ent.shape)}; "
            "pass one flag per query position"
        ) from None
    m = mask.to(torch.float64)
    count = m.sum(dim=-1)
    # ent * 0 would be NaN for a degenerate row outside the mask: zero those rows before weighting
    total = torch.where(mask, ent, torch.zeros_like(ent)).sum(dim=-1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, math.nan))


__all__ = ["attention_entropy", "mean_entropy"]
