"""Architecture adapters: one file per architecture, one registry.

See :mod:`geomlib.arch.base` for what an adapter declares and
:mod:`geomlib.arch.families` for the canonical family names.
"""

from .base import Adapter, ArchFacts, Src
from .families import FAMILIES, HEAD_AXIS, MATRIX_FAMILIES, NORM_FAMILIES, RESIDUAL_AXIS
from .registry import REGISTRY, get_adapter, supported_model_types

__all__ = [
    "Adapter",
    "ArchFacts",
    "Src",
    "FAMILIES",
    "MATRIX_FAMILIES",
    "NORM_FAMILIES",
    "RESIDUAL_AXIS",
    "HEAD_AXIS",
    "REGISTRY",
    "get_adapter",
    "supported_model_types",
]
