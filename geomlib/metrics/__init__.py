"""Pure tensor functions: take tensors, return tensors or floats; no names, no xarray, no plotting.

Names and coordinates are attached once, when :mod:`geomlib.analyses` builds
the Dataset.
"""

from .attention import attention_entropy, mean_entropy
from .linalg import gram_eigvals, spectral_entropy, svd_flip
from .operators import (
    head_factors,
    operator_gram,
    operator_spectrum,
    principal_cosines,
    rescale_fit,
    sign_agreement,
    spectrum_shape,
)
from .nulls import NULL_KINDS, gaussian_aligned_null, scrambled_aligned_null
from .pca import direction_pca, scale_track_pca
from .similarity import aligned_cos, cos_from_gram, frob_cos, nuclear_cross, residual_stats

__all__ = [
    "NULL_KINDS",
    "attention_entropy",
    "head_factors",
    "mean_entropy",
    "operator_gram",
    "operator_spectrum",
    "principal_cosines",
    "rescale_fit",
    "sign_agreement",
    "spectrum_shape",
    "aligned_cos",
    "cos_from_gram",
    "direction_pca",
    "frob_cos",
    "gaussian_aligned_null",
    "gram_eigvals",
    "nuclear_cross",
    "residual_stats",
    "scale_track_pca",
    "scrambled_aligned_null",
    "spectral_entropy",
    "svd_flip",
]
