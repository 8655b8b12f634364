"""Per-layer singular-value spectra of a whole checkpoint, streamed one layer at a time.

One pass over the file: each layer's matrix families are read (in the
narrowest dtype that holds them exactly), each matrix is reduced to its
singular values and scalars (:func:`geomlib.metrics.spectra.spectrum_summary`)
and dropped, so memory holds one layer plus the small per-layer results,
whatever the depth.  Then one seeded Gaussian matrix per family shape gives
the null.  The result is a dict of plain arrays; :func:`build_dataset`
attaches names and coordinates once.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from ...arch.families import FAMILIES, MATRIX_FAMILIES
from ...metrics.spectra import spectrum_summary
from ...model.checkpoint import Checkpoint
from ...store.provenance import provenance
from ..base import RunContext
from ..params import Params, compute_dtype, storage_dtype

# the storage-dtype rule is the weights analysis' own (bf16/f16/f32 and GGUF dequantized values are exact in float32)

#: per (family, layer) scalars: name -> key of spectrum_summary's result
SCALARS = {"esd_alpha": "alpha", "esd_alpha_xmin": "xmin", "esd_ks": "ks", "esd_n_tail": "n_tail",
           "stable_rank": "stable_rank", "spectral_norm": "spectral_norm"}
#: per family null statistics (seeded Gaussian matrices of the family's shape)
NULLS = ("esd_alpha_null_mean", "esd_alpha_null_std", "esd_alpha_null_min", "stable_rank_null_mean")


def _rank(ckpt: Checkpoint, fams: list[str]) -> int:
    """The common length of the spectra: the largest min(m, n) over the families."""
    return max((min(ckpt.block_axis(f)) for f in fams), default=0)


def compute_spectra_arrays(ckpt: Checkpoint, params: Params, ctx: RunContext) -> dict:
    """One pass over the layers; arrays indexed like :data:`FAMILIES` (norm families stay NaN)."""
    fams = [f for f in ckpt.families if f in MATRIX_FAMILIES]
    fi = {f: i for i, f in enumerate(FAMILIES)}
    F, n, R = len(FAMILIES), ckpt.n_layers, _rank(ckpt, fams)
    sigma = np.full((F, n, R), np.nan, dtype=np.float32)  # float32: the cache entry stays small
    out = {k: np.full((F, n), np.nan) for k in SCALARS}
    keep, cdt = storage_dtype(ckpt), compute_dtype(params)
    shapes: dict[str, tuple[int, int]] = {}
    ckpt.prefetch(0)
    with torch.no_grad():
        for L in ctx.bar(range(n), desc="spectra", unit="layer"):
            ckpt.prefetch(L + 1)  # the disk reads the next layer while this one is factorized
            got = ckpt.layer(L, fams, dtype=keep, device=ctx.device)
            for f in fams:
                w = got.pop(f, None)  # dropped as soon as it is reduced: one family's matrix alive at a time
                if w is None:
                    ctx.warn(f"layer {L} has no {f} although other layers do: its {f} spectrum is NaN")
                    continue
                shapes.setdefault(f, tuple(w.shape))
                i, k = fi[f], min(w.shape)
                # checked here, not in the metric: the warning names the layer and family
                if not bool(torch.isfinite(w).all()):
                    ctx.warn(f"layer {L} {f} has NaN or Inf weights: its spectrum is NaN")
                    continue
                if not bool(w.any()):
                    ctx.warn(f"layer {L} {f} is all zeros: its stable rank and esd_alpha are NaN")
                    sigma[i, L, :k] = 0.0
                    out["spectral_norm"][i, L] = 0.0
                    continue
                res = spectrum_summary(w, cdt, params.min_tail)
                sigma[i, L, :k] = res["sigma"]
                for name, key in SCALARS.items():
                    out[name][i, L] = res[key]
                del w
            del got
    out["sigma"] = sigma
    out.update(_gaussian_null(shapes, fi, params, ctx))
    return out


def _gaussian_null(shapes: dict[str, tuple[int, int]], fi: dict[str, int], params: Params, ctx: RunContext) -> dict:
    """α and stable rank of ``null_draws`` seeded standard Gaussian matrices per family shape: mean and std.

    Drawn on the CPU (the same matrices on every device), draw ``d`` of family index ``i`` seeded
    ``seed + 1000 i + d``.  Several draws, because the α of one Marchenko–Pastur sample is itself noisy
    (the KS search may settle on a short spurious tail of a small matrix).
    """
    out = {k: np.full(len(FAMILIES), np.nan) for k in NULLS}
    if not params.null_draws:
        return out
    with torch.no_grad():
        for f, shape in shapes.items():
            draws = {"alpha": [], "stable_rank": []}
            for d in range(params.null_draws):
                gen = torch.Generator().manual_seed(params.seed + 1000 * fi[f] + d)
                g = torch.randn(shape, generator=gen, dtype=torch.float64).to(ctx.device)
                res = spectrum_summary(g, compute_dtype(params), params.min_tail)
                for k in draws:
                    draws[k].append(res[k])
            a, sr = np.array(draws["alpha"]), np.array(draws["stable_rank"])
            out["esd_alpha_null_mean"][fi[f]] = np.nanmean(a) if np.isfinite(a).any() else np.nan
            out["esd_alpha_null_std"][fi[f]] = np.nanstd(a, ddof=1) if np.isfinite(a).sum() > 1 else np.nan
            out["esd_alpha_null_min"][fi[f]] = np.nanmin(a) if np.isfinite(a).any() else np.nan
            out["stable_rank_null_mean"][fi[f]] = np.nanmean(sr) if np.isfinite(sr).any() else np.nan
    return out


_DESCRIPTIONS = {
    "sigma": "singular values σ of W_L (family's [out, in] matrix), descending, padded with NaN to the largest "
             "min(out, in) of the model's families; computed in `precision`, stored float32",
    "spectral_norm": "‖W_L‖₂ = σ₁",
    "stable_rank": "‖W_L‖_F² / ‖W_L‖₂² = Σσ²/σ₁² (1 for rank one, min(out, in) for a flat spectrum)",
    "esd_alpha": "power-law exponent α of the tail of the empirical spectral density of λ = σ² (WeightWatcher's "
                 "alpha): Clauset–Shalizi–Newman continuous MLE, x_min minimising the KS distance; NaN when fewer "
                 "than min_tail eigenvalues (or a zero / non-finite matrix)",
    "esd_alpha_xmin": "the fitted tail's x_min (an eigenvalue λ = σ²)",
    "esd_ks": "Kolmogorov–Smirnov distance between the tail and the fitted power law (two-sided supremum)",
    "esd_n_tail": "eigenvalues in the fitted tail (λ ≥ x_min)",
    "esd_alpha_null_mean": "mean esd_alpha of null_draws seeded standard Gaussian matrices of the family's shape "
                           "(Marchenko–Pastur bulk, no heavy tail): the value with no learned structure",
    "esd_alpha_null_std": "sample std of those draws' esd_alpha (large: a Marchenko–Pastur bulk has no power-law "
                          "tail, and the KS search settles on short, steep edges of varying length)",
    "esd_alpha_null_min": "the smallest esd_alpha among those draws",
    "stable_rank_null_mean": "mean stable_rank of those Gaussian matrices (about mn/(√m+√n)² for m x n)",
}


def build_dataset(ckpt: Checkpoint, arrays: dict, params: Params, ctx: RunContext) -> xr.Dataset:
    """Attach names, coordinates and provenance to :func:`compute_spectra_arrays` output."""
    FL = ("family", "layer")
    data = {"sigma": (("family", "layer", "sv_rank"), arrays["sigma"]),
            **{k: (FL, arrays[k]) for k in SCALARS},
            **{k: (("family",), arrays[k]) for k in NULLS}}
    coords = {"family": list(FAMILIES), "layer": np.arange(ckpt.n_layers),
              # 1-based: rank 1 is the largest singular value (and a log axis has no 0)
              "sv_rank": np.arange(1, arrays["sigma"].shape[-1] + 1)}
    ds = xr.Dataset(data, coords=coords)
    for name, text in _DESCRIPTIONS.items():
        ds[name].attrs["description"] = text
    ds.attrs.update(provenance(ckpt, "spectra", params, ctx))
    return ds


def run(ckpt: Checkpoint, params: Params, ctx: RunContext) -> xr.Dataset:
    """The spectra analysis of ``ckpt`` as a Dataset."""
    return build_dataset(ckpt, compute_spectra_arrays(ckpt, params, ctx), params, ctx)


__all__ = ["NULLS", "SCALARS", "build_dataset", "compute_spectra_arrays", "run"]

