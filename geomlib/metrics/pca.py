"""PCA of per-layer profiles: the log-scale track (seed 003) and norm-gain directions (seed 004).

The γ directions come with a coordinate-shuffle null
(:func:`direction_pca_shuffle_null`) and a mean-removed variant
(:func:`centered_gains`).  Signs are deterministic (:func:`~geomlib.metrics.linalg.svd_flip` on the
left singular vectors), so repeated runs and other machines agree.
"""

from __future__ import annotations

import warnings

import torch

from ..errors import GeomlibWarning, InvalidArgumentError
from .linalg import svd_flip


def scale_track_pca(log_scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """PCA of the log Frobenius-norm track, families as variables and layers as samples.

    Parameters
    ----------
    log_scale : (F, L)
        ``log ‖W_{f,L}‖_F`` for families with a finite positive norm in every layer.

    Returns
    -------
    dict with
        ``explained`` (k,): fraction of variance per mode, k = min(F, L), near-zero modes kept;
        ``singvals`` (k,);
        ``loadings`` (F, k): U, one column per mode;
        ``scores`` (k, L): diag(S) Vh, as seed 003 saves them.
    """
    centered = log_scale - log_scale.mean(dim=1, keepdim=True)
    u, s, vh = torch.linalg.svd(centered, full_matrices=False)
    u, vh = svd_flip(u, vh)
    total = (s**2).sum()
    explained = s**2 / total if total > 0 else torch.full_like(s, float("nan"))
    return {"explained": explained, "singvals": s, "loadings": u, "scores": s[:, None] * vh}


#: per-layer RMS distance from the cross-layer mean below which unit directions count as identical:
#: far above float64 rounding of the mean (~1e-16), far below any real difference, even between
#: float32/bf16-stored gains (~1e-7), so the PCA is never fitted to rounding noise
NO_VARIATION = 1e-10


def _warn(message: str) -> None:
    warnings.warn(message, GeomlibWarning, stacklevel=3)


def direction_pca(vectors: torch.Tensor) -> dict[str, torch.Tensor]:
    """Norms, unit directions and their PCA across layers (seed 004's γ analysis).

    Parameters
    ----------
    vectors : (L, D)
        One gain vector per layer (effective gain: Gemma's +1 already applied).

    Returns
    -------
    dict with
        ``norm`` (L,) ‖γ_L‖;
        ``unit`` (L, D) γ_L / ‖γ_L‖;
        ``explained`` (k,) variance fraction of each PC of the centered units, k = min(L, D);
        ``singvals`` (k,);
        ``scores`` (L, k) coordinates of each centered unit vector on the PCs;
        ``components`` (k, D) the PCs;
        ``proj_top1`` (L,) unit_L · PC1 (uncentered, as seed 004);
        ``resid_top1`` (L,) √(1 − proj_top1²).

    Degenerate inputs give NaN with a :class:`~geomlib.errors.GeomlibWarning`,
    never 0: a non-finite or zero vector makes everything but ``norm`` NaN;
    directions that do not vary across layers (all γ_L parallel, or a single
    layer) have no principal component: ``explained``, ``components``,
    ``proj_top1`` and ``resid_top1`` are NaN, ``scores`` are 0 (every layer
    sits at the mean).
    """
    vectors = vectors.to(torch.float64)
    L, D = vectors.shape
    k = min(L, D)
    norm = torch.linalg.vector_norm(vectors, dim=1)
    nan = float("nan")
    if not bool(torch.isfinite(vectors).all()) or bool((norm == 0).any()):
        _warn("a gain vector is zero or has NaN/Inf entries: its direction PCA is NaN")
        return {"norm": norm, "unit": torch.full((L, D), nan, dtype=torch.float64),
                "explained": torch.full((k,), nan, dtype=torch.float64),
                "singvals": torch.full((k,), nan, dtype=torch.float64),
                "scores": torch.full((L, k), nan, dtype=torch.float64),
                "components": torch.full((k, D), nan, dtype=torch.float64),
                "proj_top1": torch.full((L,), nan, dtype=torch.float64),
                "resid_top1": torch.full((L,), nan, dtype=torch.float64)}
    unit = vectors / norm[:, None]
    centered = unit - unit.mean(dim=0, keepdim=True)
    u, s, vh = torch.linalg.svd(centered, full_matrices=False)
    u, vh = svd_flip(u, vh)
    total = (s**2).sum()
    if float(total) <= L * NO_VARIATION**2:
        # the centered units are rounding noise: their "PCs" would be arbitrary directions
        _warn("the unit gain vectors do not vary across layers: their PCA has no principal component (NaN)")
        return {"norm": norm, "unit": unit, "explained": torch.full_like(s, nan), "singvals": s,
                "scores": torch.zeros(L, s.numel(), dtype=torch.float64), "components": torch.full_like(vh, nan),
                "proj_top1": torch.full((L,), nan, dtype=torch.float64),
                "resid_top1": torch.full((L,), nan, dtype=torch.float64)}
    explained = s**2 / total
    proj = unit @ vh[0]
    return {
        "norm": norm,
        "unit": unit,
        "explained": explained,
        "singvals": s,
        "scores": u * s[None, :],
        "components": vh,
        "proj_top1": proj,
        "resid_top1": (1 - proj**2).clamp_min(0).sqrt(),
    }


def centered_gains(vectors: torch.Tensor) -> torch.Tensor:
    """``γ_L − mean_L γ``: each layer's gain minus the mean gain over layers.

    The unit gains of a trained model share one dominant direction (all
    entries positive, around a common level), so their PCA mostly describes
    how far each layer is from that shared direction.  Removing the
    cross-layer mean first leaves each layer's own deviation, whose direction
    (after :func:`direction_pca` normalises it) says where a layer departs from
    the average gain.

    Parameters
    ----------
    vectors : (L, D)

    Returns
    -------
    (L, D) float64
    """
    vectors = vectors.to(torch.float64)
    return vectors - vectors.mean(dim=0, keepdim=True)


def shuffle_coordinates(vectors: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each row of ``vectors`` with its entries in an independent uniformly random order.

    Keeps every layer's norm and value distribution, destroys which coordinate
    (residual dimension) carries which value, independently per layer.

    Parameters
    ----------
    vectors : (L, D)
    gen : torch.Generator (CPU)
        One ``rand(L, D)`` is drawn; its row-wise argsort gives the permutations.
    """
    L, D = vectors.shape
    idx = torch.rand(L, D, generator=gen, dtype=torch.float64).argsort(dim=1)
    return torch.gather(vectors, 1, idx.to(vectors.device))


def _mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and sample std over the draws (dim 0), over the finite draws only; NaN where none (std: fewer than 2)."""
    ok = torch.isfinite(x)
    n = ok.sum(dim=0).to(torch.float64)
    z = torch.where(ok, x, torch.zeros_like(x))
    mean = z.sum(dim=0) / n
    var = (torch.where(ok, x - mean, torch.zeros_like(x)) ** 2).sum(dim=0) / (n - 1)
    nan = torch.full_like(mean, float("nan"))
    return torch.where(n > 0, mean, nan), torch.where(n > 1, var.sqrt(), nan)


def direction_pca_shuffle_null(vectors: torch.Tensor, draws: int = 8, seed: int = 0,
                               centered: bool = False) -> dict[str, torch.Tensor]:
    """:func:`direction_pca` statistics after shuffling the coordinates of each layer's vector independently.

    The null of "the layers share direction structure": each draw applies
    :func:`shuffle_coordinates` (one seeded generator for all draws), then the
    same pipeline as the observed statistic (with ``centered``: subtract the
    cross-layer mean, :func:`centered_gains`, after the shuffle).  An observed
    PC1 above this band is shared, coordinate-aligned structure across layers;
    one inside it is what layers with the same value distributions and no
    common axis give.

    Parameters
    ----------
    vectors : (L, D)
    draws : int
        At least 1.
    seed : int
    centered : bool
        Null of the mean-removed directions instead of the raw unit gains.

    Returns
    -------
    dict with
        ``explained`` (draws, k): each draw's explained-variance fractions, k = min(L, D);
        ``explained_mean``, ``explained_std`` (k,);
        ``abs_proj_top1`` (draws, L): ``|unit_L · PC1|`` of each draw (PC1's sign is arbitrary in a null);
        ``abs_proj_top1_mean``, ``abs_proj_top1_std`` (L,).
    Means and stds are over finite draws; NaN where none is finite (a
    degenerate input, warned once by :func:`direction_pca`).

    Raises
    ------
    InvalidArgumentError
        ``draws < 1``.
    """
    if draws < 1:
        raise InvalidArgumentError(f"draws must be at least 1, got {draws}")
    vectors = vectors.to(torch.float64)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ex, proj = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("once", GeomlibWarning)  # one degenerate input would warn for every draw
        for _ in range(draws):
            x = shuffle_coordinates(vectors, gen)
            res = direction_pca(centered_gains(x) if centered else x)
            ex.append(res["explained"])
            proj.append(res["proj_top1"].abs())
    ex_t, proj_t = torch.stack(ex), torch.stack(proj)
    em, es = _mean_std(ex_t)
    pm, ps = _mean_std(proj_t)
    return {"explained": ex_t, "explained_mean": em, "explained_std": es,
            "abs_proj_top1": proj_t, "abs_proj_top1_mean": pm, "abs_proj_top1_std": ps}
