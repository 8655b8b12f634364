"""Nulls for matched cosines, drawn from the right group.

:func:`residual_rotation_null` keeps each layer's internal structure (and so its
symmetry group) and destroys only the shared residual basis;
:func:`permutation_null` applies a true symmetry (a neuron reorder, no sign
flips; MLP neurons and GQA-consistent attention heads) to show what
index-paired statistics give for the same function.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ..arch.families import RESIDUAL_AXIS
from ..errors import GeomlibWarning, InvalidArgumentError
from .head_matching import HeadMatch
from .matching import D64, NeuronMatch
from .similarity import aligned_cos, frob_cos, norm64


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


def random_orthogonal(n: int, gen: torch.Generator, dtype: torch.dtype = D64) -> torch.Tensor:
    """A Haar-random (n, n) orthogonal matrix (QR of a Gaussian, signs fixed by diag(R) > 0) in ``dtype``."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=dtype))
    return q * torch.sign(torch.diagonal(r))[None, :]


def rotate_residual(weights: Mapping[str, torch.Tensor], R: torch.Tensor,
                    dtype: torch.dtype = D64) -> dict[str, torch.Tensor]:
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
    dtype : torch dtype
        Of the rotated matrices (a null draw in float32 is as random as one in float64).
    """
    out = {}
    R = R.to(dtype)
    for fam, w in weights.items():
        if fam in RESIDUAL_AXIS:
            out[fam] = w.to(dtype) @ R.T if RESIDUAL_AXIS[fam] == 1 else R @ w.to(dtype)
    return out


def residual_rotation_null(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                           match: Callable[[Mapping, Mapping], NeuronMatch | HeadMatch], draws: int = 8,
                           seed: int = 0, dtype: torch.dtype = D64, quiet: bool = True) -> NullBand:
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
    dtype : torch dtype
        Of the rotated layer handed to ``match``.
    quiet : bool
        Silence the GeomlibWarnings of the draws (the unrotated comparison
        already warned).  ``catch_warnings`` is process-wide state, so a caller
        that runs draws in several threads passes False and filters them itself.
    """
    hidden = next(w.shape[RESIDUAL_AXIS[f]] for f, w in b.items() if f in RESIDUAL_AXIS)
    gen = torch.Generator().manual_seed(seed)

    def draw() -> dict:
        return match(a, rotate_residual(b, random_orthogonal(hidden, gen, dtype), dtype)).matched_cos

    if not quiet:
        return _band([draw() for _ in range(draws)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeomlibWarning)
        return _band([draw() for _ in range(draws)])


#: families a neuron permutation acts on, and on which axis (gate/up rows, down columns)
NEURON_AXIS: dict[str, int] = {"gate_proj": 0, "up_proj": 0, "down_proj": 1}
#: families a head permutation acts on, and on which axis (q/k/v rows, o columns), in head-dim blocks
HEAD_BLOCK_AXIS: dict[str, int] = {"q_proj": 0, "k_proj": 0, "v_proj": 0, "o_proj": 1}


def random_head_permutation(n_heads: int, n_kv_heads: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random head relabelling that grouped-query attention allows.

    The kv groups are permuted, and independently inside each group its query
    heads: query head h of the new layer is old head ``head_perm[h]``, whose kv
    head (:func:`geomlib.arch.base.kv_head`) is old kv head ``kv_perm[kv_head(h)]``,
    so every query head keeps reading the key/value head it read before.  With
    ``n_kv_heads == n_heads`` this is a uniform permutation of the heads.

    Parameters
    ----------
    n_heads, n_kv_heads : int
        ``n_heads`` a positive multiple of ``n_kv_heads``.
    gen : torch.Generator
        The draws: one ``randperm(n_kv_heads)`` then one ``randperm(group)`` per group.

    Returns
    -------
    head_perm : (n_heads,) long
    kv_perm : (n_kv_heads,) long
    """
    if n_kv_heads <= 0 or n_heads <= 0 or n_heads % n_kv_heads:
        raise InvalidArgumentError(f"n_heads={n_heads} must be a positive multiple of n_kv_heads={n_kv_heads}")
    group = n_heads // n_kv_heads
    kv_perm = torch.randperm(n_kv_heads, generator=gen)
    within = torch.stack([torch.randperm(group, generator=gen) for _ in range(n_kv_heads)])  # (KV, group)
    head_perm = (kv_perm[:, None] * group + within).reshape(-1)
    return head_perm, kv_perm


def _block_index(perm: torch.Tensor, block: int) -> torch.Tensor:
    """Row (column) index that moves whole blocks of ``block`` entries: block i <- block perm[i]."""
    return (perm[:, None] * block + torch.arange(block)[None, :]).reshape(-1)


def permute_layer(weights: Mapping[str, torch.Tensor], neuron_perm: torch.Tensor | None = None,
                  head_perm: torch.Tensor | None = None, kv_perm: torch.Tensor | None = None,
                  head_dim: int | None = None) -> dict[str, torch.Tensor]:
    """The layer with its MLP neurons and/or attention heads relabelled (a function-preserving edit).

    ``neuron_perm`` (I,) reorders the rows of gate/up and the columns of down
    with one permutation; ``head_perm`` (H,) reorders the ``head_dim``-row
    blocks of q and column blocks of o, ``kv_perm`` (KV,) the row blocks of k
    and v.  New index i holds old index ``perm[i]``.  Families the given
    permutations do not act on (norm gains, and MLP or attention matrices whose
    permutation is None) are returned unchanged.  The edit is a symmetry only
    when ``(head_perm, kv_perm)`` are GQA-consistent, as
    :func:`random_head_permutation` draws them.

    Parameters
    ----------
    weights : dict
        One layer, HF ``[out, in]`` matrices: gate/up (I, hidden), down (hidden, I),
        q (H head_dim, hidden), k/v (KV head_dim, hidden), o (hidden, H head_dim).
    head_dim : int
        Required with ``head_perm``/``kv_perm``.
    """
    if (head_perm is not None or kv_perm is not None) and not head_dim:
        raise InvalidArgumentError("permuting heads needs head_dim")
    out = {}
    for fam, w in weights.items():
        idx, axis = None, None
        if fam in NEURON_AXIS and neuron_perm is not None:
            idx, axis = neuron_perm, NEURON_AXIS[fam]
        elif fam in ("q_proj", "o_proj") and head_perm is not None:
            idx, axis = _block_index(head_perm, head_dim), HEAD_BLOCK_AXIS[fam]
        elif fam in ("k_proj", "v_proj") and kv_perm is not None:
            idx, axis = _block_index(kv_perm, head_dim), HEAD_BLOCK_AXIS[fam]
        if idx is None:
            out[fam] = w
            continue
        if w.shape[axis] != idx.numel():
            raise InvalidArgumentError(f"{fam} of shape {tuple(w.shape)} has {w.shape[axis]} entries on axis {axis}, "
                                       f"the permutation moves {idx.numel()}")
        out[fam] = w.index_select(axis, idx.to(w.device))
    return out


def permutation_null(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], statistic: str = "raw",
                     draws: int = 8, seed: int = 0, *, n_heads: int | None = None, n_kv_heads: int | None = None,
                     head_dim: int | None = None, compute_dtype: torch.dtype = D64) -> NullBand:
    """Per-family statistic of ``a`` against ``b`` relabelled by a random true symmetry (no sign flips).

    MLP: one neuron permutation shared by gate/up rows and down columns.
    Attention (only when ``n_heads``, ``n_kv_heads`` and ``head_dim`` are
    given): a GQA-consistent head relabelling (:func:`random_head_permutation`)
    of q/k/v rows and o columns in ``head_dim`` blocks.  Both leave the
    layer's function unchanged, so any matched cosine is exactly invariant
    under them; this band shows what the same-index statistics give for the
    same function in a random neuron/head order.  Compare with
    :func:`~geomlib.metrics.nulls.scrambled_aligned_null`, which flips signs of
    one matrix alone (not a symmetry of a gated MLP).

    The neuron and head permutations come from two generators seeded with
    ``seed``: the draws of a family do not depend on which other families
    are passed, so calling this one family at a time (as the streamed
    ``weights`` analysis does) gives the same values as one joint call, and
    every draw's gate/up/down share one permutation.

    Parameters
    ----------
    a, b : dict
        One layer each (family -> tensor); families present in both are compared.
    statistic : {"raw", "aligned"}
        ``"raw"``: :func:`~geomlib.metrics.similarity.frob_cos` per family;
        ``"aligned"``: :func:`~geomlib.metrics.similarity.aligned_cos` (what the
        scrambled null reports).
    n_heads, n_kv_heads, head_dim : int, optional
        Head layout; without it the attention families are not compared.
    compute_dtype : torch dtype
        Of the aligned statistic's cross products (float32: relative 1e-4,
        :func:`~geomlib.metrics.similarity.nuclear_norm`); norms and the raw
        statistic stay float64.

    Returns
    -------
    NullBand keyed by the families compared: the MLP families present
    (``gate_proj``, ``up_proj``, ``down_proj``), plus q/k/v/o when the head
    layout is given.  Zero or non-finite matrices give NaN draws (as
    :func:`~geomlib.metrics.similarity.frob_cos` / ``aligned_cos`` do).

    Raises
    ------
    InvalidArgumentError
        Unknown ``statistic``, ``draws < 1``, an incomplete head layout, or no family to compare.
    """
    if statistic not in ("raw", "aligned"):
        raise InvalidArgumentError(f"statistic must be 'raw' or 'aligned', got {statistic!r}")
    if draws < 1:
        raise InvalidArgumentError(f"draws must be at least 1, got {draws}")
    heads = (n_heads, n_kv_heads, head_dim)
    if any(x is not None for x in heads) and not all(x is not None for x in heads):
        raise InvalidArgumentError(f"give all of n_heads, n_kv_heads, head_dim or none, got {heads}")
    mlp = [f for f in NEURON_AXIS if f in a and f in b]
    attn = [f for f in HEAD_BLOCK_AXIS if f in a and f in b] if head_dim is not None else []
    fams = [f for f in (*HEAD_BLOCK_AXIS, *NEURON_AXIS) if f in mlp or f in attn]
    if not fams:
        raise InvalidArgumentError("no family to permute: pass MLP families, or attention families with the head "
                                   "layout (n_heads, n_kv_heads, head_dim)")
    n_neurons = b[mlp[0]].shape[NEURON_AXIS[mlp[0]]] if mlp else 0
    gen_neuron, gen_head = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    dt = D64 if statistic == "raw" else compute_dtype
    # converted once: a permutation moves entries, it does not change them, their dtype or the norms
    aa = {f: a[f].to(dt) for f in fams}
    bb = {f: b[f].to(dt) for f in fams}
    norms = {f: (norm64(a[f]), norm64(b[f])) for f in fams}
    out = []
    for _ in range(draws):
        p = torch.randperm(n_neurons, generator=gen_neuron) if mlp else None
        hp, kp = random_head_permutation(n_heads, n_kv_heads, gen_head) if attn else (None, None)
        bp = permute_layer(bb, p, hp, kp, head_dim)
        stats = {}
        for f in fams:
            x, y = aa[f], bp[f]
            stats[f] = (frob_cos(x, y) if statistic == "raw"
                        else aligned_cos(x, y, RESIDUAL_AXIS[f], norms=norms[f]))
        out.append(stats)
    return _band(out)
