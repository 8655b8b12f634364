"""Pure tensor functions: take tensors, return tensors or floats; no names, no xarray, no plotting.

Names and coordinates are attached once, when :mod:`geomlib.analyses` builds
the Dataset.
"""

from .attention import attention_entropy, mean_entropy
from .composition import composition_baseline, composition_null, composition_scores, factored_composition
from .gauge_nulls import NullBand, permutation_null, random_orthogonal, residual_rotation_null, rotate_residual
from .head_matching import HeadMatch, assign_heads, head_cos, match_heads
from .linalg import gram_eigvals, spectral_entropy, svd_flip
from .matching import NeuronMatch, fold_norm, fold_norms, fold_qk_norms, match_neurons, neuron_similarity
from .nulls import NULL_KINDS, gaussian_aligned_null, scrambled_aligned_null
from .operators import (
    head_factors,
    operator_gram,
    operator_spectrum,
    principal_cosines,
    rescale_fit,
    sign_agreement,
    spectrum_shape,
)
from .pca import direction_pca, scale_track_pca
from .similarity import aligned_cos, cos_from_gram, frob_cos, nuclear_cross, residual_stats

__all__ = [
    "HeadMatch",
    "NeuronMatch",
    "NullBand",
    "assign_heads",
    "composition_baseline",
    "composition_null",
    "composition_scores",
    "factored_composition",
    "fold_norm",
    "fold_norms",
    "fold_qk_norms",
    "head_cos",
    "match_heads",
    "match_neurons",
    "neuron_similarity",
    "permutation_null",
    "random_orthogonal",
    "residual_rotation_null",
    "rotate_residual",
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
