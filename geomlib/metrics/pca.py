"""PCA of per-layer profiles: the log-scale track (seed 003) and norm-gain directions (seed 004).

Signs are deterministic (:func:`~geomlib.metrics.linalg.svd_flip` on the
left singular vectors), so repeated runs and other machines agree.
"""

from __future__ import annotations

import torch

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
    """
    norm = torch.linalg.vector_norm(vectors, dim=1)
    unit = vectors / norm[:, None]
    centered = unit - unit.mean(dim=0, keepdim=True)
    u, s, vh = torch.linalg.svd(centered, full_matrices=False)
    u, vh = svd_flip(u, vh)
    total = (s**2).sum()
    explained = s**2 / total if total > 0 else torch.full_like(s, float("nan"))
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
