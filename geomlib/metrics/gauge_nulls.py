"""Nulls for matched cosines, drawn from the right group.

:func:`residual_rotation_null` keeps each layer's internal structure (and so its
symmetry group) and destroys only the shared residual basis;
:func:`permutation_null` applies a true symmetry (a neuron reorder, no sign
flips) to show what index-paired statistics give for the same function.
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
from .similarity import aligned_cos, frob_cos


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
